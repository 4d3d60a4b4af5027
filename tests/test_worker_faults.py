"""A worker that dies (SIGKILL, os._exit, segfault, MemoryError) is replaced and only its samples recomputed, same
bits; a sample that keeps killing workers, or an exception in one, stops the run naming the sample or the traceback."""
import os
import signal
import time

import pytest

from helpers_parallel import (FaultyDataset, sample_at, tiny_dataset, tiny_loss, tiny_model, tiny_model_fn,
                              tiny_trainer, train_sha, wait_gone)
from parallel import DataParallelTrainer, SampleCrashError, WorkerError

pytestmark = pytest.mark.filterwarnings("ignore:.*workers on .* CPUs:RuntimeWarning")

STEPS, BATCH = 6, 5


# ---- a worker dies mid-step ----

@pytest.mark.parametrize("mode", ["sigkill", "exit", "segfault", "memory"])
def test_dead_worker_is_replaced_and_only_its_samples_recomputed(mode, tmp_path):
    undisturbed, _ = train_sha(0, steps=STEPS, batch_size=BATCH)
    # position 1 of step 2: a worker takes one sample at a time, so it owes only the one it dies on
    data = FaultyDataset(tiny_dataset(), sample_at(2, 1), mode, str(tmp_path / "faults"), times=1)
    lines = []
    start = time.monotonic()
    with tiny_trainer(2, log=lines.append) as trainer:
        reports = list(trainer.train_steps(data, epochs=10, batch_size=BATCH, max_steps=STEPS))
        sha = trainer.parameters_sha256()
        restarts = trainer.backend.restarts
    assert time.monotonic() - start < 20
    assert sha == undisturbed
    assert restarts == 1
    assert reports[1].seconds < 5  # noticed at once, not after a timeout
    assert len(lines) == 1 and f"at sample {sample_at(2, 1)}" in lines[0] and "recomputing that sample" in lines[0]


def test_worker_killed_between_steps_is_replaced():
    undisturbed, _ = train_sha(0, steps=STEPS, batch_size=BATCH)
    with tiny_trainer(2) as trainer:
        for report in trainer.train_steps(tiny_dataset(), epochs=10, batch_size=BATCH, max_steps=STEPS):
            if report.step == 2:
                victim = trainer.backend.pids()[1]
                os.kill(victim, signal.SIGKILL)
                assert wait_gone([victim], 5) == []
        assert trainer.parameters_sha256() == undisturbed
        assert trainer.backend.restarts == 1


def test_sample_that_keeps_killing_workers_stops_training(tmp_path):
    index = sample_at(2, 3)
    data = FaultyDataset(tiny_dataset(), index, "sigkill", str(tmp_path / "faults"), times=100)
    start = time.monotonic()
    with tiny_trainer(2) as trainer:
        steps = []
        with pytest.raises(SampleCrashError, match=f"Sample {index} killed a worker 3 times in a row") as info:
            for report in trainer.train_steps(data, epochs=10, batch_size=BATCH, max_steps=STEPS):
                steps.append(report.step)
                pids = trainer.backend.pids()
        assert steps == [1] and trainer.step == 1  # the model stays at the last good step
        assert info.value.index == index
    assert time.monotonic() - start < 20
    assert wait_gone(pids, 5) == []


# ---- an exception in a worker ----

@pytest.mark.parametrize("case", ["dataset", "loss"])
def test_exception_in_worker_raises_with_its_traceback(case, tmp_path):
    if case == "dataset":
        data = FaultyDataset(tiny_dataset(), sample_at(1, 4), "raise", str(tmp_path / "faults"), times=1)
        loss_fn, expected = tiny_loss, ["ValueError: injected fault in a user's dataset", "in crash"]
    else:
        data = tiny_dataset()
        loss_fn = lambda outputs, label: tiny_loss(outputs[:2], label)  # noqa: E731  a shape bug
        expected = ["ValueError: Expected 2 targets, got 3", "in mse_loss"]
    start = time.monotonic()
    trainer = DataParallelTrainer(tiny_model_fn(), loss_fn, workers=2, log=lambda line: None)
    trainer.start(data)
    pids = trainer.backend.pids()
    with pytest.raises(WorkerError) as info:
        trainer.fit(data, epochs=1, batch_size=BATCH)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "raised an exception at sample" in message and "Worker traceback" in message
    for text in expected:
        assert text in message
    assert wait_gone(pids, 3) == []  # no orphans
    trainer.close()


def test_model_fn_failing_in_the_worker_is_reported():
    parent = os.getpid()

    def model_fn():
        if os.getpid() != parent:
            raise RuntimeError("no model in workers")
        return tiny_model()
    with DataParallelTrainer(model_fn, tiny_loss, workers=1) as trainer:
        with pytest.raises(WorkerError, match="while loading the payload") as info:
            trainer.evaluate(tiny_dataset(n=2))
    assert "RuntimeError: no model in workers" in str(info.value)


def test_training_continues_after_a_worker_error(tmp_path):
    """The pool stops on an error; the next call starts a fresh one and the run ends as usual."""
    undisturbed, _ = train_sha(0, steps=STEPS, batch_size=BATCH)
    data = FaultyDataset(tiny_dataset(), sample_at(3, 0), "raise", str(tmp_path / "faults"), times=1)
    with tiny_trainer(2) as trainer:
        with pytest.raises(WorkerError):
            trainer.fit(data, epochs=10, batch_size=BATCH, max_steps=STEPS)
        assert trainer.step == 2 and trainer.backend.pids() == []
        trainer.fit(data, epochs=10, batch_size=BATCH, max_steps=STEPS)
        assert trainer.parameters_sha256() == undisturbed
