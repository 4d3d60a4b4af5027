"""The Dask backend: same bits as the process pool, a killed worker survived, the payload sent once."""
import os
import re
import signal

import pytest

pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'minigrad[distributed]')")

from distributed import Client  # noqa: E402

import minigrad  # noqa: E402
from minigrad import nn  # noqa: E402
from minigrad.data import Dataset  # noqa: E402
from minigrad.losses import mse_loss, one_hot_pm1  # noqa: E402
from parallel import DataParallelTrainer  # noqa: E402
from parallel.dask_backend import DaskBackend, local_cluster, split_contiguous  # noqa: E402

pytestmark = pytest.mark.slow


def small_model():
    return nn.CNN(6, 6, 1, [nn.CNNLayerConfig(3, 3, 1, "tanh")], hidden_dim=5, n_classes=3, seed=1)


def small_data(n=24):
    import numpy as np
    rng = np.random.default_rng(0)
    return Dataset(rng.standard_normal((n, 1, 6, 6)), rng.integers(0, 3, n), "random")


def loss(outputs, label):
    return mse_loss(outputs, one_hot_pm1(label, 3))


def train(backend, workers, steps=4, loss_fn=loss, model_fn=small_model):
    trainer = DataParallelTrainer(model_fn=model_fn, loss_fn=loss_fn, optimizer="sgd", lr=0.05,
                                  momentum=0.9, workers=workers, backend=backend, seed=3)
    with trainer:
        trainer.fit(small_data(), epochs=2, batch_size=6, max_steps=steps)
        return trainer.parameters_sha256()


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(2) as c:
        yield c


@pytest.mark.parametrize("n,parts,sizes", [(8, 2, [4, 4]), (5, 3, [2, 2, 1]), (2, 8, [1, 1, 0, 0, 0, 0, 0, 0])])
def test_a_batch_is_cut_into_contiguous_calls_of_near_equal_size(n, parts, sizes):
    chunks = split_contiguous(n, parts)
    assert [len(c) for c in chunks] == sizes
    assert [i for c in chunks for i in c] == list(range(n))


def test_dask_matches_the_process_pool_bit_for_bit(cluster):
    expected = train("process", 2)
    assert train(DaskBackend(scheduler=cluster.scheduler_address), 2) == expected
    assert train("process", 0) == expected


def test_dask_with_a_client_and_with_its_own_local_cluster(cluster):
    expected = train("process", 0)
    with Client(cluster) as client:
        assert train(DaskBackend(client=client), 2) == expected
        assert not client.status == "closed"  # a client the user passed stays open
    assert train(DaskBackend(workers=2), 2) == expected


def test_model_and_data_reach_each_worker_once(cluster, tmp_path):
    calls = tmp_path / "model_fn_calls"

    def counted_model():
        with open(calls, "a") as f:  # the test's own observation, not the trainer's
            f.write(f"{os.getpid()}\n")
        return small_model()

    train(DaskBackend(scheduler=cluster.scheduler_address), 2, steps=6, model_fn=counted_model)
    pids = calls.read_text().split()
    worker_pids = [p for p in pids if int(p) != os.getpid()]
    assert len(worker_pids) == len(set(worker_pids)) <= 2  # once per worker, not per step


def test_a_worker_killed_mid_step_is_survived_with_identical_results(tmp_path):
    expected = train("process", 2)
    marker = tmp_path / "killed-once"

    def killing_loss(outputs, label, _marker=str(marker)):
        if not os.path.exists(_marker):
            with open(_marker, "w"):
                pass
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-step
        return loss(outputs, label)

    assert train(DaskBackend(workers=2), 2, loss_fn=killing_loss) == expected
    assert marker.exists()


def test_an_exception_in_a_dask_worker_stops_training_with_its_message(cluster):
    from parallel import WorkerError

    def broken_loss(outputs, label):
        raise ZeroDivisionError("a bug in the user's loss")

    with pytest.raises(WorkerError, match="a bug in the user's loss") as error:
        train(DaskBackend(scheduler=cluster.scheduler_address), 2, loss_fn=broken_loss)
    assert "broken_loss" in error.value.remote_traceback  # the worker's own traceback

    def missing_file_loss(outputs, label):
        open("/nonexistent/minigrad-test")  # an OSError of the user's: no worker is retired for it

    backend = DaskBackend(scheduler=cluster.scheduler_address)
    with pytest.raises(WorkerError, match="FileNotFoundError"):
        train(backend, 2, loss_fn=missing_file_loss)
    assert not backend.retired


def test_a_loss_that_returns_a_number_is_one_line_from_dask_too(cluster):
    from parallel import LossTypeError
    with pytest.raises(LossTypeError, match="Expected loss_fn.outputs, target. to return a minigrad Value, "
                                            "got float 0.5") as error:
        train(DaskBackend(scheduler=cluster.scheduler_address), 2, loss_fn=lambda outputs, label: 0.5)
    assert "\n" not in str(error.value)


def test_script_with_the_dask_backend_matches_the_process_pool(tmp_path):
    from helpers_parallel import run_script
    args = ["--batch-size", "4", "--max-steps", "6", "--quiet"]
    shas = []
    for extra in (["--backend", "dask", "--workers", "2"], ["--workers", "0"]):
        done = run_script("train_parallel.py", *args, *extra, "--out", tmp_path / extra[-1])
        assert done.returncode == 0, done.stderr
        shas.append([line for line in done.stdout.splitlines() if line.startswith("parameters sha256")])
    assert shas[0] == shas[1] and shas[0]


@pytest.mark.parametrize("args,message", [
    (["--backend", "dask", "--scheduler", "tcp://127.0.0.1:9"], "error: cannot reach the Dask scheduler at "
                                                                "tcp://127.0.0.1:9"),
    (["--scheduler", "tcp://127.0.0.1:9"], "error: --scheduler goes with --backend dask, got --backend process"),
    (["--backend", "dask", "--scheduler", "tls://127.0.0.1:9"], "error: --scheduler tls://127.0.0.1:9 is a TLS "
                                                                "scheduler: expected --tls-ca-file, --tls-cert and "
                                                                "--tls-key, got none of them"),
])
def test_script_scheduler_errors_are_one_line(tmp_path, args, message):
    from helpers_parallel import run_script
    done = run_script("train_parallel.py", *args, "--max-steps", "1", "--quiet", "--out", tmp_path / "run")
    assert done.returncode == 2
    assert done.stderr.startswith(message) and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "model.json").exists()


# ---- a hung worker: the watchdog ----

def test_a_stopped_worker_is_retired_and_its_samples_recomputed_with_identical_results(tmp_path):
    """SIGSTOP freezes a worker mid-step; past the 2 s timeout its nanny kills it, the other worker
    recomputes its samples, and the run ends with the process pool's bits, soon after the timeout."""
    import time
    expected = train("process", 2)
    stopped = tmp_path / "stopped-pid"

    def stopping_loss(outputs, label, _stopped=str(stopped)):
        if not os.path.exists(_stopped):
            with open(_stopped, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGSTOP)  # the worker process freezes mid-step
        return loss(outputs, label)

    try:
        start = time.monotonic()
        assert train(DaskBackend(workers=2, sample_timeout=2), 2, loss_fn=stopping_loss) == expected
        assert time.monotonic() - start < 2 + 60  # the timeout, cluster start-up and 4 steps on a busy machine
        assert stopped.exists()
        assert not _alive(int(stopped.read_text()))  # killed, not left stopped
    finally:
        _end(stopped)


def test_a_sample_that_always_hangs_stops_the_run_naming_it_and_the_timeout(cluster):
    import time

    from parallel import SampleTimeoutError

    data = small_data()  # one batch of all 24 samples, in the first step, so at the initial parameters
    marked = small_model()(data.images[4].tolist())[0].v

    def hanging_loss(outputs, label, _marked=marked):
        if outputs[0].v == _marked:  # only sample 4
            time.sleep(3600)
        return loss(outputs, label)

    trainer = DataParallelTrainer(model_fn=small_model, loss_fn=hanging_loss, optimizer="sgd", lr=0.05,
                                  workers=2, backend=DaskBackend(workers=2, sample_timeout=1, max_crashes=2),
                                  seed=3)
    start = time.monotonic()
    with trainer, pytest.raises(SampleTimeoutError, match=r"Sample 4 ran past the 1 s sample timeout 2 "
                                                          r"times in a row"):
        trainer.fit(data, epochs=1, batch_size=24, max_steps=1)
    assert time.monotonic() - start < 3 * 1 + 90  # three timeouts, two worker restarts, on a busy machine


def test_the_sample_timeout_is_checked():
    for bad in (-1, "5", True):
        with pytest.raises(ValueError, match="Expected sample_timeout to be seconds >= 0 or None"):
            DaskBackend(sample_timeout=bad)
    with pytest.raises(ValueError, match="Expected max_crashes to be a positive integer, got 0"):
        DaskBackend(max_crashes=0)


def test_the_default_timeout_is_30_s_or_100_medians():
    backend = DaskBackend()
    assert backend.timeout() == 30.0
    for seconds in (0.2, 0.5, 0.4):
        backend.watchdog.record("train", seconds)
    assert backend.timeout() == pytest.approx(40.0)
    assert DaskBackend(sample_timeout=0).timeout() is None
    assert DaskBackend(sample_timeout=5).timeout() == 5


def _alive(pid):
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _end(pid_file):
    """Wake and kill the process named in ``pid_file``, if it is still there."""
    if pid_file.exists():
        pid = int(pid_file.read_text())
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


# ---- TLS with mutual authentication ----

@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    from helpers_tls import make_certificates
    folder = tmp_path_factory.mktemp("certificates")
    return make_certificates(folder), make_certificates(folder, "stranger", ca_name="other-ca")


@pytest.fixture(scope="module")
def tls_cluster(certificates):
    from parallel.dask_backend import security_from_tls
    with local_cluster(2, security_from_tls(certificates[0], ("client", "scheduler", "worker"))) as c:
        yield c


def test_training_over_tls_matches_the_process_pool(certificates, tls_cluster):
    tls = certificates[0]
    assert tls_cluster.scheduler_address.startswith("tls://")
    expected = train("process", 2)
    trainer = DataParallelTrainer(model_fn=small_model, loss_fn=loss, optimizer="sgd", lr=0.05, momentum=0.9,
                                  workers=2, backend="dask", scheduler=tls_cluster.scheduler_address, tls=tls,
                                  seed=3)
    with trainer:
        trainer.fit(small_data(), epochs=2, batch_size=6, max_steps=4)
        assert trainer.parameters_sha256() == expected
    assert train(DaskBackend(workers=2, tls=tls), 2) == expected  # its own LocalCluster, over TLS too


def test_a_client_without_the_certificate_is_refused(certificates, tls_cluster):
    import socket
    import ssl

    from distributed.comm import CommClosedError

    (ca, _, _), stranger = certificates
    host, port = tls_cluster.scheduler_address[len("tls://"):].rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca)  # trusts the scheduler, shows no certificate
    context.check_hostname = False
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with context.wrap_socket(raw) as tls_socket:
                tls_socket.sendall(b"hello")
                assert tls_socket.recv(1) == b"", "the scheduler answered a client without a certificate"
    with pytest.raises((OSError, CommClosedError)):  # plain TCP
        Client(tls_cluster.scheduler_address.replace("tls://", "tcp://"), timeout=5)
    backend = DaskBackend(scheduler=tls_cluster.scheduler_address, tls=(ca, *stranger[1:]))
    with pytest.raises(ConnectionError, match="cannot reach the Dask scheduler at tls://"):
        backend.start(None)  # a certificate from another authority
    with pytest.raises(ValueError, match=r"Expected tls=\(ca_file, cert_file, key_file\) for the TLS scheduler "
                                         r"at tls://.*, got none"):
        DaskBackend(scheduler=tls_cluster.scheduler_address)  # no certificate at all: said before connecting
    trainer_args = dict(model_fn=small_model, loss_fn=loss, workers=2, backend="dask")
    with pytest.raises(ValueError, match="for the TLS scheduler"):
        DataParallelTrainer(scheduler=tls_cluster.scheduler_address, **trainer_args)


def test_tls_files_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"Expected tls=\(ca_file, cert_file, key_file\), got 'ca.pem'"):
        DaskBackend(tls="ca.pem")
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="Expected the TLS CA file to be a readable file, got .*missing.pem"):
        DaskBackend(tls=(missing, missing, missing))
    with pytest.raises(ValueError, match="Expected backend 'dask' with tls, got 'process'"):
        DataParallelTrainer(model_fn=small_model, loss_fn=loss, workers=2, tls=(missing, missing, missing))


def test_a_worker_with_another_minigrad_version_is_one_clear_error_before_any_step():
    from parallel.dask_backend import VersionSkewError

    def set_version(version):
        import minigrad
        minigrad.__version__ = version

    with local_cluster(1) as other, Client(other) as client:
        client.run(set_version, "0.0.1")
        trainer = DataParallelTrainer(model_fn=small_model, loss_fn=loss, optimizer="sgd", lr=0.05,
                                      workers=1, backend=DaskBackend(client=client), seed=3)
        with trainer, pytest.raises(VersionSkewError, match=r"runs minigrad 0\.0\.1, the trainer minigrad "
                                                            + re.escape(minigrad.__version__)):
            trainer.fit(small_data(), epochs=1, batch_size=4, max_steps=1)
        assert trainer.step == 0
