"""The pool's transport: parameters, gradients and data in shared memory, the payload sent to each worker once,
one sample at a time; no process and no /dev/shm block is left after any way out, even the parent's SIGKILL."""
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers_parallel import (PARENT, ROOT, CountingDataset, FaultyDataset, alive, count_events, counting_model_fn,
                              leftovers, tiny_dataset, tiny_loss, tiny_model_fn, tiny_trainer, train_sha, wait_gone)
from parallel import DataParallelTrainer, Payload, ProcessBackend, WorkerError
from parallel.replica import pack, tensor_order_parameters

pytestmark = [pytest.mark.filterwarnings("ignore:.*workers on .* CPUs:RuntimeWarning"),
              pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm to inspect")]


def wait_no_leftovers(pid, timeout):
    deadline = time.monotonic() + timeout
    while leftovers(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return leftovers(pid)


def test_a_slow_sample_does_not_hold_up_the_other_worker():
    data = tiny_dataset(n=8)
    slow = SlowDataset(data, index=0, seconds=0.5)
    model = tiny_model_fn()()
    params = pack([p.v for p in tensor_order_parameters(model)])
    with ProcessBackend(2) as backend:
        backend.start(Payload(tiny_model_fn(), tiny_loss))
        backend.add_dataset("d", slow)
        backend.run("train", params, "d", [1, 2])  # both workers are up and warm
        results = backend.run("train", params, "d", list(range(8)))
    slow_worker = results[0].worker
    assert {r.worker for r in results[1:]} == {1 - slow_worker}  # the other one took all seven


class SlowDataset:
    def __init__(self, base, index, seconds):
        self.base, self.index, self.seconds = base, index, seconds

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if i == self.index:
            time.sleep(self.seconds)
        return self.base.images[i], self.base.labels[i]


def test_gradients_land_in_the_rows_of_their_batch_positions():
    data = tiny_dataset()
    model = tiny_model_fn()()
    params = pack([p.v for p in tensor_order_parameters(model)])
    indices = [7, 3, 3, 30, 11]
    with ProcessBackend(2) as backend:
        backend.start(Payload(tiny_model_fn(), tiny_loss))
        backend.add_dataset("d", data)
        pooled = [(r.index, r.loss, np.array(r.grad)) for r in backend.run("train", params, "d", indices)]
    from parallel import InProcessBackend
    with InProcessBackend() as local:
        local.start(Payload(tiny_model_fn(), tiny_loss))
        local.add_dataset("d", data)
        expected = [(r.index, r.loss, np.frombuffer(r.grad)) for r in local.run("train", params, "d", indices)]
    for (i, loss, grad), (j, loss_ref, grad_ref) in zip(pooled, expected):
        assert (i, loss) == (j, loss_ref)
        assert grad.tobytes() == grad_ref.tobytes()


def test_a_dataset_is_placed_in_shared_memory_once():
    data = tiny_dataset(n=400)
    with tiny_trainer(2) as trainer:
        trainer.start(data)
        sizes = sorted(os.path.getsize(os.path.join("/dev/shm", f)) for f in leftovers())
        assert any(size >= data.images.nbytes for size in sizes)
        trainer.fit(data, epochs=1, batch_size=8, max_steps=3)
    assert leftovers() == []


def test_model_loss_and_data_reach_each_worker_once(tmp_path):
    model_counter, data_counter = str(tmp_path / "model"), str(tmp_path / "data")
    data = CountingDataset(tiny_dataset(), data_counter)
    with DataParallelTrainer(counting_model_fn(model_counter), tiny_loss, lr=0.05, workers=2,
                             log=lambda line: None) as trainer:
        trainer.fit(data, epochs=3, batch_size=4, max_steps=12)
        trainer.evaluate(data)
    assert count_events(model_counter) == 2  # one replica per worker, not one per step
    assert count_events(data_counter) == 2


def test_nothing_is_left_after_a_normal_end_an_exception_or_a_dead_worker(tmp_path):
    train_sha(2, steps=3)
    assert leftovers() == []
    raising = FaultyDataset(tiny_dataset(), 3, "raise", str(tmp_path / "raise"), times=1)
    with pytest.raises(WorkerError):
        with tiny_trainer(2) as trainer:
            trainer.fit(raising, epochs=1, batch_size=8)
    assert leftovers() == []
    dying = FaultyDataset(tiny_dataset(), 3, "sigkill", str(tmp_path / "kill"), times=1)
    with tiny_trainer(2) as trainer:
        trainer.fit(dying, epochs=1, batch_size=8)
        assert trainer.backend.restarts == 1
    assert leftovers() == []


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["SIGKILL", "SIGINT", "SIGTERM"])
def test_nothing_is_left_when_the_parent_is_killed_or_stopped(how, tmp_path):
    """Killed, the parent leaves its workers to see their pipe close and exit on their own; stopped by
    a signal, it ends them itself. Either way no worker and no block of the run is left."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(tests=os.path.join(ROOT, "tests")))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert select.select([proc.stdout], [], [], 60)[0], "the trainer printed no pids within 60s"
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and alive(pids) == pids
        assert leftovers(proc.pid), "the run has no shared memory to clean up"
        proc.send_signal(how)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait(10)
    assert wait_gone(pids, 5) == []
    assert wait_no_leftovers(proc.pid, 10) == []
