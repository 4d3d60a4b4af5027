"""A full disk while a checkpoint, a log or a picture is written: one line naming the file and the last good
checkpoint, which stays whole, no temp file, whole log rows. Injected, and on a real 600 kB tmpfs."""
import contextlib
import errno
import json
import os

import pytest

from helpers_parallel import MLP_FIT, MLP_N, mlp_trainer, points, rows, run_script
from minigrad import checkpoint
from minigrad.atomic_file import atomic_write as real_atomic_write
from parallel.run import RunWriteError, files, plots


# ---- injected into the one atomic writer and into the logs ----

def failing_atomic_write(name, after):
    """atomic_write, except that writing ``name`` fails with ENOSPC after ``after`` good writes."""
    calls = {"n": 0}

    @contextlib.contextmanager
    def write(path):
        with real_atomic_write(path) as f:
            if os.path.basename(path) == name:
                calls["n"] += 1
                if calls["n"] > after:
                    f.write(b'{"format": "minigrad-chec')  # part of the file reaches the temp file
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            yield f
    return write


def run_until_write_error(out, **fit):
    with mlp_trainer(0) as t, pytest.raises(RunWriteError) as info:
        t.fit(points(MLP_N), **MLP_FIT, test=points(6, 0.5), out=str(out), checkpoint_every=4, **fit)
    return info.value, t


def assert_whole_and_alone(out, step):
    ckpt = checkpoint.read(os.path.join(out, "model.json"))
    assert ckpt["step"] == step
    assert [f for f in os.listdir(out) if f.startswith(".")] == []
    for name in ("train_stats.csv", "test_stats.csv"):
        with open(os.path.join(out, name)) as f:
            lines = f.read().split("\n")
        assert lines[-1] == "" and len({len(x.split(",")) for x in lines[:-1]}) == 1


def test_full_disk_at_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    monkeypatch.setattr("minigrad.atomic_file.atomic_write", failing_atomic_write("model.json", after=1))
    error, t = run_until_write_error(tmp_path)
    assert error.errno == errno.ENOSPC and "model.json: No space left on device" in str(error)
    assert t.last_checkpoint == (str(tmp_path / "model.json"), 4) and "\n" not in str(error)
    assert_whole_and_alone(tmp_path, 4)


def test_full_disk_while_logging_keeps_whole_rows(tmp_path, monkeypatch):
    real_open = open
    state = {"appends": 0}

    class HalfWritten:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if mode == "ab" and os.path.basename(path) == "train_stats.csv":
            state["appends"] += 1
            if state["appends"] > 1:
                return HalfWritten(f)
        return f
    monkeypatch.setattr(files, "open", fake_open, raising=False)
    error, t = run_until_write_error(tmp_path)
    assert "train_stats.csv" in str(error) and error.errno == errno.EDQUOT
    assert_whole_and_alone(tmp_path, 4)
    assert len(rows(tmp_path / "train_stats.csv")) == 4


def test_full_disk_while_drawing(tmp_path, monkeypatch):
    if plots._pyplot() is None:
        pytest.skip("matplotlib is not installed")
    monkeypatch.setattr(plots, "atomic_write", failing_atomic_write("training.png", after=0))
    error, _ = run_until_write_error(tmp_path)
    assert "training.png" in str(error)
    assert_whole_and_alone(tmp_path, 15)
    assert not os.path.exists(tmp_path / "training.png")


# ---- a real one: a small tmpfs as --out ----

def test_full_disk_stops_with_one_line_and_keeps_the_last_checkpoint(tmpfs):
    out = tmpfs("600k") / "run"  # room for one checkpoint of the reference CNN with Adam (about 390 kB), not two
    done = run_script("train_parallel.py", "--workers", "0", "--batch-size", "4", "--max-steps", "12",
                      "--checkpoint-every", "5", "--quiet", "--out", out)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: cannot write {out / 'model.json'}: No space left on device; "
                                  f"the last checkpoint ({out / 'model.json'}, step 5) is unchanged")
    with open(out / "model.json") as f:
        assert json.load(f)["step"] == 5
    assert sorted(os.listdir(out)) == ["model.json", "test_stats.csv", "train_stats.csv"]  # no temp file
    assert [int(r.split(",")[0]) for r in rows(out / "train_stats.csv")] == list(range(1, 11))
