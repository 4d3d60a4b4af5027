"""The run API alone, on a model that is not the CNN: a small MLP fitting a smooth function.

fit(out=...) checkpoints, and a file that cannot be written stops the run with the previous
checkpoint whole and nothing half-written beside it. Also: installing is enough, and a missing
optional package is one line naming the extra.
"""
import contextlib
import errno
import os
import subprocess
import sys

import pytest

from helpers_parallel import MLP_FIT, MLP_N, ROOT, mlp_trainer, points, rows
from minigrad import checkpoint
from minigrad.atomic_file import atomic_write as real_atomic_write
from parallel.run import RunWriteError, files, plots


def test_fit_with_out_keeps_a_resumable_run(mlp_run):
    sha, out, history = mlp_run
    ckpt = checkpoint.read(os.path.join(out, "model.json"))
    assert ckpt["step"] == ckpt["trainer"]["step"] == 15 and ckpt["config"] == {"note": "mlp"}
    assert ckpt["parameters_sha256"] == sha
    assert ckpt["trainer"]["optimizer"]["type"] == "Adam"
    assert checkpoint.parameters_sha256(checkpoint.build_model(ckpt)) == sha
    assert [int(r.split(",")[0]) for r in rows(os.path.join(out, "train_stats.csv"))] == list(range(1, 16))
    assert [r.split(",")[:2] for r in rows(os.path.join(out, "test_stats.csv"))] == [
        ["1.0", "5"], ["2.0", "10"], ["3.0", "15"]]
    assert [s for s, _ in history["train"]] == list(range(1, 16)) and len(history["test"]) == 3
    assert history["out"] == out and history["memory"].startswith("memory")
    assert history["test"][0][1].confusion is None  # regression targets
    # no conv.0.weight: no filters.png; regression targets: no mistakes.png
    expected = ["training.png", "timeline.png"] if plots._pyplot() is not None else []
    assert history["pictures"] == expected
    assert sorted(os.listdir(out)) == sorted(["model.json", "train_stats.csv", "test_stats.csv"] + expected)


def test_fit_without_out_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with mlp_trainer(0) as t:
        history = t.fit(points(MLP_N), **MLP_FIT, test=points(6, 0.5))
    assert os.listdir(tmp_path) == [] and sorted(history) == ["test", "train"]


# ---- a full disk, injected into the one atomic writer and into the logs ----

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
        lines = open(os.path.join(out, name)).read().split("\n")
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


# ---- installing is enough; optional packages are named ----

def python(code, *blocked):
    """Run ``code`` in a fresh interpreter where the ``blocked`` packages cannot be imported."""
    block = "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run([sys.executable, "-c", f"import sys\n{block}{code}"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})


def test_import_minigrad_needs_no_third_party_package():
    done = python("import minigrad, minigrad.nn, minigrad.checkpoint, minigrad.optimizer\n"
                  "print(minigrad.Value(2.0) * 3)", "numpy", "torch", "psutil", "tqdm", "cloudpickle", "matplotlib")
    assert done.returncode == 0, done.stderr
    assert "Value" in done.stdout or "6.0" in done.stdout


def script(*args):
    return ("import runpy\nsys.argv = ['train_parallel.py', " + ", ".join(repr(str(a)) for a in args) + "]\n"
            "sys.exit(runpy.run_path('scripts/train_parallel.py', run_name='__main__'))")


def test_missing_dask_is_one_line_naming_the_extra(tmp_path):
    done = python(script("--backend", "dask", "--workers", "1", "--max-steps", "1", "--quiet", "--out", tmp_path),
                  "dask", "distributed")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ('error: dask.distributed is not installed; '
                                   'install it with: pip install "minigrad[distributed]"')


def test_missing_matplotlib_is_one_line_and_the_run_finishes(tmp_path):
    done = python(script("--workers", "0", "--max-steps", "2", "--quiet", "--out", tmp_path), "matplotlib")
    assert done.returncode == 0, done.stderr
    assert 'pictures: none (matplotlib is not installed: pip install "minigrad[plots]")' in done.stdout
    assert "Traceback" not in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["model.json", "test_stats.csv", "train_stats.csv"]


def test_setup_cfg_installs_what_the_trainer_needs():
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    required = [line.split(";")[0].split("<")[0].strip() for line in cfg["options"]["install_requires"].split("\n")]
    assert {"numpy", "cloudpickle", "psutil", "tqdm"} <= set(required)
