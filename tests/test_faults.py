"""Faults injected on purpose: dying workers, exceptions in workers, bad input files. Each asserts
the outcome within a time limit; script-level faults run the real script in a subprocess with a
timeout."""
import importlib.util
import json
import os
import signal
import threading
import time

import pytest

from helpers_parallel import (FaultyDataset, file_digest, run_script,
                              sample_at, tiny_dataset, tiny_loss, tiny_model, tiny_model_fn,
                              tiny_trainer, train_args, train_sha, wait_gone)
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


# ---- the script: bad input ----

def test_checkpoint_file_is_always_whole(tmp_path):
    """A reader polling model.json during a run that saves every step never sees a partial file."""
    path = tmp_path / "model.json"
    reads, problems, stop = [], [], threading.Event()

    def poll():
        while not stop.is_set():
            try:
                with open(path) as f:
                    reads.append(json.load(f)["step"])
            except FileNotFoundError:
                pass
            except ValueError as e:
                problems.append(e)
    reader = threading.Thread(target=poll)
    reader.start()
    try:
        done = run_script("train_parallel.py", *train_args(tmp_path, "--checkpoint-every", "1",
                                                           "--max-steps", "20"))
    finally:
        stop.set()
        reader.join()
    assert done.returncode == 0, done.stderr
    assert problems == [] and len(set(reads)) > 5
    pictures = (["training.png", "timeline.png", "filters.png", "mistakes.png", "confusion.png"]
                if importlib.util.find_spec("matplotlib") else [])
    assert sorted(os.listdir(tmp_path)) == sorted(["model.json", "train_stats.csv", "test_stats.csv"] + pictures)


def bad_inputs(good_checkpoint, tmp):
    """(name, extra arguments, text the error line must contain) for each kind of bad input."""
    text = open(good_checkpoint).read()
    ckpt = json.loads(text)
    (tmp / "truncated.json").write_text(text[: len(text) // 2])
    (tmp / "notjson.json").write_text("this is not a checkpoint\n")
    short = json.loads(text)
    short["parameters"]["hidden.bias"] = short["parameters"]["hidden.bias"][:-1]
    (tmp / "shape.json").write_text(json.dumps(short))
    other = dict(ckpt, model=tiny_model().config(), parameters=tiny_model().state_dict())
    (tmp / "other.json").write_text(json.dumps(other))
    edited = json.loads(text)
    edited["config"]["epochs"] = -1
    (tmp / "edited.json").write_text(json.dumps(edited))
    reordered = json.loads(text)
    reordered["trainer"]["data_order"]["order"][0] = reordered["trainer"]["data_order"]["order"][1]
    (tmp / "reordered.json").write_text(json.dumps(reordered))
    model_only = {k: ckpt[k] for k in ("format", "version", "model", "parameters")}
    (tmp / "model_only.json").write_text(json.dumps(model_only))
    idx = tmp / "idx"
    idx.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (idx / name).write_bytes(b"\x00\x00\x08\x03garbage")
    (tmp / "a_file").write_text("")
    (tmp / "copy").mkdir()
    (tmp / "copy" / "model.json").write_text(text)
    return [
        ("truncated checkpoint", ["--resume", tmp / "truncated.json"], "truncated.json: not valid JSON"),
        ("not JSON", ["--resume", tmp / "notjson.json"], "notjson.json: not valid JSON"),
        ("wrong shape", ["--resume", tmp / "shape.json"], "hidden.bias"),
        ("other architecture", ["--resume", tmp / "other.json"], "different architecture"),
        ("model-only checkpoint", ["--resume", tmp / "model_only.json"], "expected a training checkpoint"),
        ("edited config", ["--resume", tmp / "edited.json"], "config epochs = -1 is not a valid --epochs"),
        ("broken data order", ["--resume", tmp / "reordered.json"], "data order to be a permutation"),
        ("missing checkpoint", ["--resume", tmp / "missing.json"], "missing.json: no such file"),
        ("corrupt IDX", ["--data", "mnist", "--data-dir", idx, "--out", tmp / "o1"], "train-images-idx3-ubyte"),
        ("missing data dir", ["--data", "mnist", "--data-dir", tmp / "nowhere", "--out", tmp / "o2"],
         "file not found"),
        ("unwritable out", ["--out", tmp / "a_file" / "run"], "cannot write the run folder"),
        ("existing run", ["--out", os.path.dirname(good_checkpoint)], "already exists"),
        ("resume over another run",
         ["--resume", tmp / "copy" / "model.json", "--out", os.path.dirname(good_checkpoint)], "already exists"),
        ("changed config on resume", ["--resume", good_checkpoint, "--lr", "0.5"], "differs from the checkpoint"),
        ("momentum with Adam", ["--momentum", "0.5", "--out", tmp / "o3"], "Adam has no momentum"),
    ]


def test_bad_input_is_one_line_exit_2_and_changes_nothing(straight_run, tmp_path):
    _, run = straight_run
    good = os.path.join(run, "model.json")
    before = {name: file_digest(os.path.join(run, name)) for name in sorted(os.listdir(run))}
    failures = []
    for name, args, expected in bad_inputs(good, tmp_path):
        done = run_script("train_parallel.py", *args, "--quiet", timeout=60)
        lines = done.stderr.strip().splitlines()
        if not (done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:")
                and expected in lines[0]):
            failures.append((name, done.returncode, done.stderr[-500:]))
    assert failures == []
    assert {name: file_digest(os.path.join(run, name)) for name in sorted(os.listdir(run))} == before
    # the refused resumes would have continued in tmp_path: no logs were started there
    assert not os.path.exists(tmp_path / "train_stats.csv") and not os.path.exists(tmp_path / "model.json")


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
