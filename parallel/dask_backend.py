"""DaskBackend: the same per-sample work on Dask's distributed scheduler, for more than one machine.

::

    parent (DataParallelTrainer)                        |  Dask worker (one process each)
                                                        |
    start: Client(scheduler, security) or a LocalCluster|
           register_plugin(payload) -------------------+--> plugin: kept on the worker,
    add_dataset: register_plugin(dataset) -------------+--> also on workers that join later
                                                        |
    each step:                                          |
      workers the scheduler lists; one ReplicaActor     |
      on each new one (submit(..., actor=True)) -------+--> ReplicaActor: the replica, built
                                                        |    once from the plugins, stays here
      indices cut into contiguous chunks, one per actor |
      actor.compute(params bytes, chunk) --------------+--> sets parameters, computes the chunk
      (straight to the worker, not via the scheduler)   |
      results kept in batch order <--------------------+---- [(index, loss, prediction, grad, s)]

An actor call goes from the client to the worker and back without a scheduler round
trip, and the replica with its data stays in the worker, so a step costs one message
each way per worker: the parameters (8 bytes each) out, one gradient per sample back.

What goes wrong, and what happens:

- a worker dies (its call fails): its actor is dropped, and its chunk is computed again,
  one sample per call, by the actors left (or one made on a worker that joined). The
  parameters are the same, so are the results: the same bits as an undisturbed step.
- a call overruns its deadline (``sample_timeout`` per sample, see ``call_deadline``):
  its worker is taken for hung. The nanny, if any, kills the worker process (SIGKILL,
  which also ends a stopped process) and the scheduler removes the worker; its samples
  are recomputed as above.
- a sample alone in a call fails ``max_crashes`` times in a row: ``SampleCrashError`` (or
  ``SampleTimeoutError``) names it.
- the user's code raises: ``WorkerError`` with the worker's traceback.
"""
import asyncio
import os
import signal
import time
import traceback
import uuid


import minigrad

from . import pickling
from .backend import Backend, SampleCrashes, SampleTimeout
from .errors import LossTypeError, SampleCrashError, SampleTimeoutError, WorkerError
from .replica import Replica, SampleResult
from .rss import rss_bytes

CONNECT_SECONDS = 10
ACTOR_START_SECONDS = 60
NO_WORKER_SECONDS = 60
REFRESH_SECONDS = 1.0
# A Dask worker samples every thread's stack each 10 ms for its dashboard, taking the GIL
# from the pure-Python engine each time; the trainer has no use for those profiles.
WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


def _plugin_base():
    from distributed.diagnostics.plugin import WorkerPlugin
    return WorkerPlugin


def _make_plugin(name, blob):
    """A WorkerPlugin that keeps ``blob`` (cloudpickled bytes) on every worker, new ones too."""
    class BlobPlugin(_plugin_base()):
        def __init__(self):
            self.name = name
            self.blob = blob

    return BlobPlugin()


class VersionSkewError(WorkerError):
    """A Dask worker runs another minigrad version than the trainer."""


class ReplicaActor:
    """Lives in one Dask worker: a replica built from the token's plugins, datasets added on first use."""

    def __init__(self, token, version):
        from distributed import get_worker
        if version != minigrad.__version__:  # checked before anything of the trainer is unpickled
            raise VersionSkewError(f"Dask worker {get_worker().address} runs minigrad {minigrad.__version__}, "
                                   f"the trainer minigrad {version}: install the same version on every host")
        self.token = token
        self.plugins = get_worker().plugins
        self.replica = Replica(pickling.loads(self.plugins[f"minigrad-{token}"].blob))

    async def compute(self, mode, params, key, indices, worker, epoch):
        """The results of ``indices`` as plain tuples, in order.

        A coroutine, so Dask runs it on the worker's event loop rather than handing it to a
        thread and back (the worker's heartbeats wait for the chunk, well under a second at
        usual batch sizes). An exception carries the worker's traceback as ``remote_traceback``.
        """
        replica = self.replica
        try:
            if key not in replica.datasets:
                blob = self.plugins[f"minigrad-{self.token}-data-{key}"].blob
                replica.add_dataset(key, pickling.loads(blob))
            replica.set_parameters(params)
            return [replica.compute(mode, key, i, worker=worker, epoch=epoch).as_tuple() for i in indices]
        except Exception as e:
            e.remote_traceback = traceback.format_exc()  # pickled with the exception's __dict__
            raise


def split_contiguous(n, parts):
    """``range(n)`` cut into ``parts`` contiguous ranges whose sizes differ by at most one."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        out.append(range(start, start + size))
        start += size
    return out


class _Call:
    """One actor call: which positions of the batch it computes (``indices`` the samples), on
    which worker (its ``n``-th actor), until when."""

    __slots__ = ("address", "actor", "n", "positions", "indices", "deadline")

    def __init__(self, address, actor, n, positions, indices, deadline):
        self.address, self.actor, self.n, self.positions = address, actor, n, positions
        self.indices, self.deadline = indices, deadline


def security_from_tls(tls, roles=("client",)):
    """``(ca_file, cert_file, key_file)`` -> a ``distributed.security.Security`` with mutual TLS,
    the certificate and key used for each of ``roles`` ("client", "scheduler", "worker")."""
    if tls is None:
        return None
    if not isinstance(tls, (tuple, list)) or len(tls) != 3:
        raise ValueError(f"Expected tls=(ca_file, cert_file, key_file), got {tls!r}")
    for what, path in zip(("CA file", "certificate", "key"), tls):
        if not os.path.isfile(path):
            raise ValueError(f"Expected the TLS {what} to be a readable file, got {path!r}")
    from distributed.security import Security
    ca, cert, key = (os.fspath(p) for p in tls)
    files = {}
    for role in roles:
        files[f"tls_{role}_cert"], files[f"tls_{role}_key"] = cert, key
    return Security(require_encryption=True, tls_ca_file=ca, **files)


class DaskBackend(Backend):
    """Per-sample work on a Dask cluster: ``scheduler`` ("tcp://host:port" or "tls://host:port"),
    a ``client``, or neither, which starts a LocalCluster of ``workers`` processes on 127.0.0.1.

    ``tls=(ca_file, cert_file, key_file)``: connect with mutual TLS (and start the LocalCluster
    with it). ``sample_timeout``: seconds a sample may run (None: the larger of 30 s and 100x
    the median sample; 0: never time out).
    """

    def __init__(self, workers=2, scheduler=None, client=None, log=None, sample_timeout=None, max_crashes=3,
                 tls=None):
        if client is not None and scheduler is not None:
            raise ValueError("Expected a scheduler address or a client, got both")
        if scheduler is not None and not isinstance(scheduler, str):
            scheduler, client = None, scheduler  # a distributed.Client given as the scheduler
        if scheduler is not None and scheduler.startswith("tls://") and tls is None:
            raise ValueError(f"Expected tls=(ca_file, cert_file, key_file) for the TLS scheduler at {scheduler}, "
                             f"got none")
        self.watchdog = SampleTimeout(sample_timeout)
        self.crashes = SampleCrashes(max_crashes)  # checks max_crashes
        self.requested_workers = workers
        self.scheduler, self.client, self.log = scheduler, client, log
        self.max_crashes = max_crashes
        self.tls, self.security = tls, security_from_tls(tls)
        self.cluster = None
        self.own_client = client is None
        self.token = uuid.uuid4().hex
        self.plugins = []
        self.actors = {}  # worker address -> (actor future, actor), in the order they were made
        self.retired = set()  # addresses taken for dead or hung: never used again
        self.next_refresh = 0.0

    @property
    def workers(self):
        return len(self.actors)

    def start(self, payload):
        from distributed import Client
        if self.client is None and self.scheduler is None:
            self.cluster = local_cluster(self.requested_workers,
                                         security_from_tls(self.tls, ("client", "scheduler", "worker")))
            self.client = Client(self.cluster, security=self.security)
        elif self.client is None:
            try:
                self.client = Client(self.scheduler, timeout=CONNECT_SECONDS, security=self.security)
            except (OSError, ValueError) as e:  # refused, unreachable, timed out, TLS refused
                raise ConnectionError(f"cannot reach the Dask scheduler at {self.scheduler}: {e}") from None
        self._register(f"minigrad-{self.token}", pickling.dumps(payload))

    def add_dataset(self, key, dataset):
        self._register(f"minigrad-{self.token}-data-{key}", pickling.dumps(dataset, "the dataset"))

    def _register(self, name, blob):
        self.client.register_plugin(_make_plugin(name, blob), name=name)
        self.plugins.append(name)

    # ---- the actors: one per live worker ----

    def _scheduler_workers(self):
        """``{address: info}`` of every worker the scheduler knows."""
        try:
            return self.client.scheduler_info(n_workers=-1)["workers"]
        except TypeError:  # an older distributed: no n_workers argument, and every worker listed
            return self.client.scheduler_info()["workers"]

    def _live_workers(self):
        return [a for a in sorted(self._scheduler_workers()) if a not in self.retired]

    def _refresh_actors(self, force=False):
        """Drop actors of workers the scheduler no longer lists; make one on each new worker.

        The scheduler is asked at most once per ``REFRESH_SECONDS`` unless ``force``: a worker
        that joins takes work from the next step after that.
        """
        lost = [a for a, (future, _) in self.actors.items() if future.status != "finished"]
        for address in lost:
            self._retire(address, f"its replica was {self.actors[address][0].status}")
        if not (force or lost or not self.actors or time.monotonic() >= self.next_refresh):
            return
        self.next_refresh = time.monotonic() + REFRESH_SECONDS
        live = self._live_workers()
        for address in [a for a in self.actors if a not in live]:
            self.actors.pop(address)[0].release()
        new = [a for a in live if a not in self.actors]
        futures = {a: self.client.submit(ReplicaActor, self.token, minigrad.__version__, actor=True, workers=[a],
                                         allow_other_workers=False, pure=False) for a in new}
        for address, future in futures.items():
            try:  # bounded: a task restricted to a worker that has left waits for it forever
                self.actors[address] = (future, future.result(timeout=ACTOR_START_SECONDS))
            except VersionSkewError:
                raise
            except Exception as e:  # the worker left while its actor was being made
                future.release()
                self._retire(address, f"could not start a replica there ({type(e).__name__}: {e})")

    def _wait_for_actors(self, force=False):
        deadline = time.monotonic() + NO_WORKER_SECONDS
        self._refresh_actors(force)
        while not self.actors:
            if time.monotonic() > deadline:
                raise WorkerError(f"No live Dask worker for {NO_WORKER_SECONDS} s; stopping")
            time.sleep(0.2)
            self._refresh_actors(force=True)

    def _retire(self, address, why):
        """Never use ``address`` again: kill its process through its nanny and remove it from the scheduler."""
        self.retired.add(address)
        entry = self.actors.pop(address, None)
        if entry is not None:
            entry[0].release()
        if self.log:
            self.log(f"Dask worker {address} retired: {why}")
        try:
            if self._scheduler_workers().get(address, {}).get("nanny"):
                self.client.run(_kill_worker_process, workers=[address], nanny=True, on_error="ignore")
            self.client.run_on_scheduler(_remove_worker, address=address)
        except Exception:  # already gone: nothing left to retire
            pass

    # ---- one step ----

    def timeout(self, mode="train"):
        """Seconds a ``mode`` sample may run (``SampleTimeout``); None when off."""
        return self.watchdog.limit(mode)

    def call_deadline(self, samples, start, mode="train"):
        """A call of ``samples`` samples may take the timeout plus one median per sample."""
        timeout = self.timeout(mode)
        if timeout is None:
            return None
        return start + timeout + samples * self.watchdog.median(mode)

    def run(self, mode, params, key, indices, epoch=0):
        indices = list(indices)
        results = [None] * len(indices)
        self._wait_for_actors()
        chunks = [list(r) for r in split_contiguous(len(indices), max(1, min(len(self.actors), len(indices))))]
        pending = [c for c in chunks if c]
        while pending:
            calls = self._plan(pending[:len(self.actors)], indices, mode)
            pending = pending[len(calls):]
            for call, outcome in zip(calls, self.client.sync(_outcomes, calls, mode, params, key, epoch)):
                failed = self._collect(call, outcome, results, indices, key, mode)
                pending.extend([p] for p in failed)  # one sample per call: a culprit is named
            if pending:
                self._wait_for_actors(force=True)
        for r in results:
            self.watchdog.record(mode, r.seconds)
        return results

    def _plan(self, chunks, indices, mode):
        start = time.monotonic()
        return [_Call(address, actor, n, positions, [indices[p] for p in positions],
                      self.call_deadline(len(positions), start, mode))
                for n, ((address, (_, actor)), positions) in enumerate(zip(self.actors.items(), chunks))]

    def _collect(self, call, outcome, results, indices, key, mode):
        """Store a call's results; the positions to compute again when its worker died or hung."""
        lost = isinstance(outcome, OSError) and not hasattr(outcome, "remote_traceback")  # not the user's
        if lost:  # the worker is gone (CommClosedError) or hung (TimeoutError)
            hung = isinstance(outcome, TimeoutError)
            self._retire(call.address, "a call ran past its deadline" if hung else
                         f"{type(outcome).__name__}: {outcome}")
            if len(call.positions) == 1:  # alone in its call, the sample is to blame
                index = indices[call.positions[0]]
                crashes = self.crashes.crashed(key, index)
                if self.crashes.limit_reached(crashes):
                    if hung:
                        raise SampleTimeoutError(index, crashes, self.timeout(mode))
                    raise SampleCrashError(index, crashes, None)
            return call.positions
        if isinstance(outcome, LossTypeError):
            raise LossTypeError(str(outcome)) from None
        if isinstance(outcome, BaseException):
            chunk = [indices[p] for p in call.positions]
            raise WorkerError(f"a Dask worker failed on samples {chunk[0]}..{chunk[-1]}: "
                              f"{type(outcome).__name__}: {outcome}", getattr(outcome, "remote_traceback", ""))
        for position, row in zip(call.positions, outcome):
            results[position] = SampleResult(*row)
        self.crashes.completed(key, call.indices)
        return []

    def memory(self):
        rss = self.client.run(rss_bytes)
        return [rss[address] for address in sorted(rss)]

    def close(self):
        client, self.client = self.client, None
        if client is None:
            return
        try:
            for future, _ in self.actors.values():
                future.release()
            self.actors = {}
            if self.cluster is None:
                for name in self.plugins:
                    client.unregister_worker_plugin(name)
            if self.own_client:
                client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
                self.cluster = None


async def _outcomes(calls, mode, params, key, epoch):
    """Runs on the client's event loop: makes the calls, then returns each one's rows, or the
    exception it ended with (``TimeoutError`` past its deadline), in the order of ``calls``."""
    futures = []
    for call in calls:
        try:
            futures.append(call.actor.compute(mode, params, key, call.indices, call.n, epoch))
        except RuntimeError as e:  # "Worker holding Actor was lost": the scheduler saw it go first
            futures.append(ConnectionError(str(e)))
    outcomes = []
    for call, future in zip(calls, futures):
        if isinstance(future, ConnectionError):
            outcomes.append(future)
            continue
        wait = None if call.deadline is None else max(0.0, call.deadline - time.monotonic())
        try:
            outcomes.append(await asyncio.wait_for(future, wait))
        except asyncio.TimeoutError:
            outcomes.append(TimeoutError(f"no answer within {wait:.3g} s"))
        except Exception as e:
            outcomes.append(e)
    return outcomes


def _kill_worker_process(dask_worker):
    """Runs in a nanny: SIGKILL its worker process (a stopped one too); the nanny starts another."""
    process = getattr(getattr(dask_worker, "process", None), "process", None)
    if process is not None and process.pid:
        os.kill(process.pid, signal.SIGKILL)


async def _remove_worker(dask_scheduler, address):
    """Runs on the scheduler: forget a worker that no longer answers."""
    return await dask_scheduler.remove_worker(address, stimulus_id=f"minigrad-retire-{time.time()}", close=True)


def local_cluster(workers, security=None):
    """A LocalCluster of ``workers`` single-threaded processes on 127.0.0.1, no dashboard.

    Its HTTP endpoint (health checks) takes a free port rather than 8787, so several
    clusters can run side by side. With ``security`` it speaks TLS only. The workers' statistical
    profiler is off (``WORKER_CONFIG``).
    """
    import dask
    from distributed import LocalCluster
    options = {"security": security, "protocol": "tls://"} if security is not None else {}
    with dask.config.set(WORKER_CONFIG):  # the nannies hand their config to the workers they start
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                            **options)
