"""The Dask backend: same bits as the process pool, a killed worker survived, the payload sent once."""
import os
import signal

import pytest

pytest.importorskip("distributed", reason="dask.distributed is not installed (pip install 'minigrad[distributed]')")

from distributed import Client  # noqa: E402

from minigrad import nn  # noqa: E402
from minigrad.data import Dataset  # noqa: E402
from minigrad.losses import mse_loss, one_hot_pm1  # noqa: E402
from parallel import DataParallelTrainer  # noqa: E402
from parallel.dask_backend import DaskBackend, local_cluster  # noqa: E402

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

    with pytest.raises(WorkerError, match="a bug in the user's loss"):
        train(DaskBackend(scheduler=cluster.scheduler_address), 2, loss_fn=broken_loss)


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
])
def test_script_scheduler_errors_are_one_line(tmp_path, args, message):
    from helpers_parallel import run_script
    done = run_script("train_parallel.py", *args, "--max-steps", "1", "--quiet", "--out", tmp_path / "run")
    assert done.returncode == 2
    assert done.stderr.startswith(message) and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "model.json").exists()
