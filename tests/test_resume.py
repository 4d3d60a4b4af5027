"""Resume continues bit for bit with another worker count: from a trainer's state, from a run folder, from the
script's checkpoint after Ctrl-C or a killed parent; and it keeps the run's batch size and folder."""
import json
import os
import signal

import pytest

from helpers_parallel import (MLP_FIT, MLP_N, descendants, mlp_trainer, points, rows, run_script, sha_line,
                              start_script, tiny_dataset, tiny_trainer, train_args, train_sha, wait_for_rows, wait_gone)
from minigrad import checkpoint
from minigrad.data.augment import AUGMENTATIONS
from parallel import TrainingInterrupted

pytestmark = pytest.mark.filterwarnings("ignore:.*workers on .* CPUs:RuntimeWarning")


# ---- from a trainer's state ----

@pytest.mark.parametrize("straight,before,after,stop,steps,augment", [
    pytest.param(2, 1, 3, 5, 12, "none", id="mid-epoch"),
    pytest.param(0, 8, 0, 9, 16, "shift", id="second epoch, augmented"),  # the same shifts as the straight run
])
def test_resume_from_state_is_bit_identical_with_another_worker_count(straight, before, after, stop, steps, augment):
    data, augment_fn = tiny_dataset(), AUGMENTATIONS[augment]
    expected, _ = train_sha(straight, data, steps=steps, batch_size=6, augment_fn=augment_fn)
    with tiny_trainer(before, augment_fn=augment_fn) as first:
        for report in first.train_steps(data, epochs=100, batch_size=6, max_steps=steps):
            if report.step == stop:
                break
        state, params = first.state_dict(), first.model.state_dict()
    state = json.loads(json.dumps(state))  # through JSON, as in a checkpoint
    with tiny_trainer(after, augment_fn=augment_fn) as second:
        second.model.load_state_dict(params)
        second.load_state_dict(state)
        second.fit(data, epochs=100, batch_size=6, max_steps=steps)
        assert second.step == steps
        assert second.parameters_sha256() == expected


# ---- from a run folder (fit(out=...) and resume) ----

def stop_at(step):
    def hook(report):
        if report.step == step:
            raise TrainingInterrupted(signal.SIGINT)
    return hook


@pytest.mark.parametrize("stop,workers", [(7, 2), (10, 1)])  # mid-epoch; right after an epoch's end
def test_interrupted_run_resumes_bit_for_bit_with_other_workers(mlp_run, tmp_path, stop, workers):
    sha, _, _ = mlp_run
    out = str(tmp_path)
    with mlp_trainer(workers) as t, pytest.raises(TrainingInterrupted):
        t.fit(points(MLP_N), **MLP_FIT, test=points(6, 0.5), out=out, checkpoint_every=4, on_step=stop_at(stop))
    assert checkpoint.read(os.path.join(out, "model.json"))["step"] == stop
    with mlp_trainer(3 - workers) as t:
        t.resume(os.path.join(out, "model.json"))
        assert t.step == stop
        t.fit(points(MLP_N), **MLP_FIT, test=points(6, 0.5), out=out, checkpoint_every=4)
        assert t.parameters_sha256() == sha
    assert [int(r.split(",")[0]) for r in rows(tmp_path / "train_stats.csv")] == list(range(1, 16))
    assert [r.split(",")[1] for r in rows(tmp_path / "test_stats.csv")] == ["5", "10", "15"]


def test_resume_keeps_the_runs_batch_size_and_folder(mlp_run, tmp_path):
    _, out, _ = mlp_run
    with mlp_trainer(0) as t:
        t.resume(os.path.join(out, "model.json"))
        with pytest.raises(ValueError, match="model.json: Expected data order batch_size 5, got 4"):
            t.fit(points(MLP_N), epochs=3, batch_size=5, out=out)
        (tmp_path / "model.json").write_text("{}")  # another run's folder
        with pytest.raises(ValueError, match="already exists"):
            t.fit(points(MLP_N), **MLP_FIT, out=str(tmp_path))


# ---- the script: --resume after Ctrl-C or a killed parent ----

@pytest.mark.slow
def test_interrupted_and_resumed_run_is_bit_identical(straight_run, tmp_path):
    sha, _ = straight_run
    proc = start_script("train_parallel.py", *train_args(tmp_path))
    try:
        wait_for_rows(proc, tmp_path / "train_stats.csv", 8)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130
    with open(tmp_path / "model.json") as f:
        assert 8 <= json.load(f)["step"] < 30
    done = run_script("train_parallel.py", "--resume", tmp_path / "model.json", "--workers", "3", "--quiet")
    assert done.returncode == 0, done.stderr
    assert sha_line(done.stdout) == sha
    steps = [int(r.split(",")[0]) for r in rows(tmp_path / "train_stats.csv")]
    assert steps == list(range(1, 31))


@pytest.mark.slow
def test_resume_after_the_parent_was_killed_is_bit_identical(straight_run, tmp_path):
    """SIGKILL leaves only the periodic checkpoint; resuming from it (in-process) still matches."""
    sha, _ = straight_run
    proc = start_script("train_parallel.py", *train_args(tmp_path))
    try:
        wait_for_rows(proc, tmp_path / "train_stats.csv", 12)
        children = descendants(proc.pid)
        proc.kill()
        proc.wait(10)
    finally:
        proc.kill()
    assert wait_gone(children, 5) == []
    with open(tmp_path / "model.json") as f:
        assert json.load(f)["step"] % 5 == 0
    done = run_script("train_parallel.py", "--resume", tmp_path / "model.json", "--workers", "0", "--quiet")
    assert done.returncode == 0, done.stderr
    assert sha_line(done.stdout) == sha
    steps = [int(r.split(",")[0]) for r in rows(tmp_path / "train_stats.csv")]
    assert steps == list(range(1, 31))
