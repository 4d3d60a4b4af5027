"""DaskBackend: the same per-sample work on Dask's distributed scheduler, for more than one machine.

::

    parent (DataParallelTrainer)                        |  Dask worker (one process each)
                                                        |
    start: Client(scheduler) or a LocalCluster          |
           register_plugin(payload) -------------------+--> plugin.setup: kept on the worker,
                                                        |    also on workers that join later
    add_dataset: register_plugin(dataset) -------------+--> kept beside it
                                                        |
    each step:                                          |
      indices cut into contiguous chunks, one per worker|
      submit(run_chunk, params bytes, chunk, pure=False)+--> replica (built once from the plugin)
                                                        |    sets parameters, computes the chunk
      gather in chunk order <--------------------------+---- [(index, loss, prediction, grad, s)]
                                                        |
    a worker dies mid-step: the scheduler reruns its task on another worker (a nanny
    restarts the dead one, and the plugins reach it again). The chunk is recomputed
    from the same parameters, so the results are the same bits.

The model, loss and data travel once per worker, inside plugins; each step sends only the
parameter buffer (8 bytes per parameter) with each chunk and brings back one gradient
buffer per sample. Tasks are submitted with ``pure=False``: Dask would otherwise treat two
steps with equal arguments as one task and return the first result again.
"""
import uuid

import cloudpickle

from .backend import Backend
from .errors import SampleCrashError, WorkerError
from .process_pool import split_contiguous
from .replica import Replica, SampleResult
from .rss import rss_bytes


CONNECT_SECONDS = 10


def _plugin_base():
    from distributed.diagnostics.plugin import WorkerPlugin
    return WorkerPlugin


def _make_plugin(name, blob):
    """A WorkerPlugin that keeps ``blob`` (cloudpickled bytes) on every worker, new ones too."""
    class BlobPlugin(_plugin_base()):
        def __init__(self):
            self.name = name
            self.blob = blob

        def setup(self, worker):
            self.replica = None

    return BlobPlugin()


def run_chunk(token, mode, params, key, indices, chunk=0, epoch=0):
    """Runs on a Dask worker: the results of ``indices`` as plain tuples, in order."""
    from distributed import get_worker
    plugins = get_worker().plugins
    plugin = plugins[f"minigrad-{token}"]
    replica = getattr(plugin, "replica", None)
    if replica is None:  # first task of this trainer on this worker
        replica = plugin.replica = Replica(cloudpickle.loads(plugin.blob))
    if key not in replica.datasets:
        replica.add_dataset(key, cloudpickle.loads(plugins[f"minigrad-{token}-data-{key}"].blob))
    replica.set_parameters(params)
    return [replica.compute(mode, key, i, worker=chunk, epoch=epoch).as_tuple() for i in indices]


class DaskBackend(Backend):
    """Per-sample work on a Dask cluster: ``scheduler`` ("tcp://host:port"), a ``client``, or
    neither, which starts a LocalCluster of ``workers`` processes on 127.0.0.1."""

    def __init__(self, workers=2, scheduler=None, client=None, log=None, sample_timeout=None):
        if client is not None and scheduler is not None:
            raise ValueError("Expected a scheduler address or a client, got both")
        if scheduler is not None and not isinstance(scheduler, str):
            scheduler, client = None, scheduler  # a distributed.Client given as the scheduler
        self.requested_workers = workers
        self.scheduler, self.client, self.log = scheduler, client, log
        self.sample_timeout = sample_timeout
        self.cluster = None
        self.own_client = client is None
        self.token = uuid.uuid4().hex
        self.plugins = []

    @property
    def workers(self):
        return len(self.client.scheduler_info()["workers"]) if self.client is not None else 0

    def start(self, payload):
        from distributed import Client
        if self.client is None and self.scheduler is None:
            self.cluster = local_cluster(self.requested_workers)
            self.client = Client(self.cluster)
        elif self.client is None:
            try:
                self.client = Client(self.scheduler, timeout=CONNECT_SECONDS)
            except OSError as e:  # refused, unreachable, timed out
                raise ConnectionError(f"cannot reach the Dask scheduler at {self.scheduler}: {e}") from None
        self._register(f"minigrad-{self.token}", cloudpickle.dumps(payload))

    def add_dataset(self, key, dataset):
        self._register(f"minigrad-{self.token}-data-{key}", cloudpickle.dumps(dataset))

    def _register(self, name, blob):
        self.client.register_plugin(_make_plugin(name, blob), name=name)
        self.plugins.append(name)

    def run(self, mode, params, key, indices, epoch=0):
        from distributed import KilledWorker
        indices = list(indices)
        parts = max(1, min(self.workers, len(indices)))
        chunks = [[indices[i] for i in r] for r in split_contiguous(len(indices), parts) if len(r)]
        futures = [self.client.submit(run_chunk, self.token, mode, params, key, chunk, n, epoch, pure=False)
                   for n, chunk in enumerate(chunks)]
        results = []
        try:
            for chunk, future in zip(chunks, futures):
                try:
                    rows = future.result()
                except KilledWorker:
                    raise _killed(chunk) from None
                except Exception as e:
                    raise WorkerError(f"a Dask worker failed on samples {chunk[0]}..{chunk[-1]}: "
                                      f"{type(e).__name__}: {e}", _remote_traceback(future)) from None
                results.extend(SampleResult(*row) for row in rows)
        finally:
            for future in futures:
                future.release()
        return results

    def memory(self):
        rss = self.client.run(rss_bytes)
        return [rss[address] for address in sorted(rss)]

    def close(self):
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if self.cluster is None:
                for name in self.plugins:
                    client.unregister_worker_plugin(name)
            if self.own_client:
                client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
                self.cluster = None


def local_cluster(workers):
    """A LocalCluster of ``workers`` single-threaded processes on 127.0.0.1, no dashboard.

    Its HTTP endpoint (health checks) takes a free port rather than 8787, so several
    clusters can run side by side.
    """
    from distributed import LocalCluster
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})


def _killed(chunk):
    """The error for a task the scheduler gave up on after ``allowed-failures`` dead workers."""
    import dask
    tries = dask.config.get("distributed.scheduler.allowed-failures") + 1
    if len(chunk) == 1:
        return SampleCrashError(chunk[0], tries, None)
    return WorkerError(f"Samples {chunk[0]}..{chunk[-1]} killed a Dask worker {tries} times in a row; stopping")


def _remote_traceback(future):
    import traceback
    try:
        tb = future.traceback()
    except Exception:
        return ""
    return "".join(traceback.format_tb(tb)) if tb is not None else ""
