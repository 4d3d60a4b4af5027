"""Ctrl-C and SIGTERM: a signal inside a deferred block waits for its end; the script saves the last completed
step with its log rows, leaves no child and exits 130 or 143, even at random moments under load."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers_parallel import (descendants, rows, start_script, tiny_dataset, tiny_loss, tiny_model, train_args,
                              wait_for_rows, wait_gone)
from parallel import DataParallelTrainer, TrainingInterrupted
from parallel.signals import deferred_signals, stop_on_signals

pytestmark = pytest.mark.filterwarnings("ignore:.*workers on .* CPUs:RuntimeWarning")


def test_signal_inside_a_deferred_block_waits_for_its_end():
    order = []
    with stop_on_signals():
        with pytest.raises(TrainingInterrupted) as info:
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler has run by now, and only took note
                order.append("block finished")
        order.append("raised after")
    assert order == ["block finished", "raised after"]
    assert info.value.exit_code == 143


@pytest.mark.parametrize("signals,code", [
    ([signal.SIGINT], 130),
    ([signal.SIGTERM], 143),
    ([signal.SIGINT, signal.SIGINT, signal.SIGINT], 130),  # impatient Ctrl-C's while it saves
])
def test_signal_saves_the_last_step_and_exits(signals, code, tmp_path):
    proc = start_script("train_parallel.py", *train_args(tmp_path, "--max-steps", "100000"))
    try:
        wait_for_rows(proc, tmp_path / "train_stats.csv", 6)
        children = descendants(proc.pid)
        assert len(children) >= 2
        start = time.monotonic()
        for signum in signals:
            proc.send_signal(signum)
            time.sleep(0.02)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert time.monotonic() - start < 5
    assert proc.returncode == code, err
    with open(tmp_path / "model.json") as f:
        ckpt = json.load(f)
    assert ckpt["step"] == ckpt["trainer"]["step"] == len(rows(tmp_path / "train_stats.csv"))
    assert f"saved step {ckpt['step']}" in err and "Traceback" not in err
    assert wait_gone(children, 3) == []
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_a_log_flush_cut_by_a_signal_writes_each_row_once(tmp_path, monkeypatch):
    """The race behind a checkpoint at step 10 beside 15 logged rows: a signal that cut a flush short
    left the rows on disk and in memory, and the final flush wrote them again."""
    from parallel.run.files import CsvLog
    log = CsvLog(str(tmp_path / "log.csv"), ["step", "loss"])
    for step in range(1, 6):
        log.write(step, 0.5)
    log.flush()
    for step in range(6, 11):
        log.write(step, 0.25)
    real_fsync = os.fsync

    def interrupted(fd):
        real_fsync(fd)
        raise TrainingInterrupted(signal.SIGINT)  # as the handler raises it, after the bytes went out
    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(TrainingInterrupted):
        log.flush()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert len(rows(tmp_path / "log.csv")) == 5  # cut back to the whole rows flushed before
    log.close()
    assert [int(r.split(",")[0]) for r in rows(tmp_path / "log.csv")] == list(range(1, 11))


def test_a_signal_during_the_parameter_update_keeps_the_steps_row(tmp_path):
    """A stop signal that arrives while a step's update is applied waits for the update to end; that
    step is then done, so it has its row in train_stats.csv before the checkpoint names it."""
    from minigrad.optimizer import SGD

    class SignallingSGD(SGD):
        def step(self):
            super().step()
            if self.step_count == 4:
                os.kill(os.getpid(), signal.SIGINT)  # inside the trainer's deferred block

    trainer = DataParallelTrainer(lambda: tiny_model(), tiny_loss, optimizer=lambda p: SignallingSGD(p, lr=0.05),
                                  workers=0)
    with trainer, pytest.raises(TrainingInterrupted):
        trainer.fit(tiny_dataset(), epochs=10, batch_size=5, out=str(tmp_path), checkpoint_every=100)
    with open(tmp_path / "model.json") as f:
        ckpt = json.load(f)
    assert ckpt["step"] == 4 == len(rows(tmp_path / "train_stats.csv"))


@pytest.mark.parametrize("runs", [pytest.param(6, id="6 runs"), pytest.param(30, id="30 runs", marks=pytest.mark.slow)])
def test_signals_at_random_moments_under_load_keep_checkpoint_and_logs_together(runs, tmp_path):
    """SIGINT/SIGTERM, one to three of them, at random moments of runs that checkpoint every step,
    while two other processes load both cores: every time the run exits 130/143 with the last
    completed step in model.json, one row per step up to it and none past it, and no traceback."""
    import random
    rng = random.Random(1)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for run in range(runs):
            out = tmp_path / f"run{run}"
            proc = start_script("train_parallel.py", *train_args(out, "--max-steps", "100000", "--checkpoint-every",
                                                                 str(rng.choice([1, 2, 3]))))
            try:
                wait_for_rows(proc, out / "train_stats.csv", rng.randint(1, 6), timeout=60)
                time.sleep(rng.uniform(0, 0.05))
                signums = [rng.choice([signal.SIGINT, signal.SIGTERM])] * rng.randint(1, 3)
                for signum in signums:
                    proc.send_signal(signum)
                    time.sleep(rng.uniform(0, 0.03))
                _, err = proc.communicate(timeout=30)
            finally:
                proc.kill()
            assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[signums[0]], err
            with open(out / "model.json") as f:
                ckpt = json.load(f)
            steps = [int(r.split(",")[0]) for r in rows(out / "train_stats.csv")]
            assert steps == list(range(1, ckpt["step"] + 1)), (run, ckpt["step"], steps)
            assert f"saved step {ckpt['step']}" in err and "Traceback" not in err, err
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
