"""Shared tolerances and comparison helpers for the reference tests, and the runs that several of the
trainer's test files read."""
import math
import os
import shutil
import subprocess

import pytest

RTOL = 1e-9
ATOL = 1e-12  # only matters for values near 0, where a relative tolerance means nothing


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test that sends a lambda or a closure to the workers skips where cloudpickle cannot send code
    (PyPy 3.11: cloudpipe/cloudpickle#557); ``parallel.pickling`` raises that error only there."""
    try:
        return (yield)
    except Exception as e:  # the error itself, or pytest.raises' report of it
        if "cloudpickle cannot send code by value" in str(e):
            pytest.skip(f"cloudpickle cannot send code by value on this interpreter: {e}")
        raise


@pytest.fixture
def torch():
    """PyTorch with float64 defaults, or a skip (e.g. under PyPy, which has no torch)."""
    return pytest.importorskip("torch")


def close(got, expected, rtol=RTOL, atol=ATOL):
    """``got`` equals ``expected`` within tolerance; nan matches nan, an infinity only itself."""
    got, expected = float(got), float(expected)
    if math.isnan(expected) or math.isnan(got):
        return math.isnan(expected) and math.isnan(got)
    if math.isinf(expected) or math.isinf(got):
        return got == expected
    return abs(got - expected) <= atol + rtol * abs(expected)


def assert_close(got, expected, what="", rtol=RTOL, atol=ATOL):
    assert close(got, expected, rtol, atol), f"{what}: got {got!r}, expected {expected!r}"


def assert_all_close(got, expected, what="", rtol=RTOL, atol=ATOL):
    got, expected = list(got), list(expected)
    assert len(got) == len(expected), f"{what}: got {len(got)} numbers, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        assert_close(g, e, f"{what}[{i}]", rtol, atol)


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory):
    """An uninterrupted 30-step run of train_parallel.py: its final parameters fingerprint and its folder.
    One run for the whole session: it takes seconds, and its users only read it."""
    from helpers_parallel import run_script, sha_line, train_args
    out = tmp_path_factory.mktemp("straight")
    done = run_script("train_parallel.py", *train_args(out))
    assert done.returncode == 0, done.stderr
    return sha_line(done.stdout), out


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """An uninterrupted fit(out=...) of the MLP, a checkpoint every 4 steps: (fingerprint, folder, history)."""
    from helpers_parallel import MLP_FIT, MLP_N, mlp_trainer, points
    out = str(tmp_path_factory.mktemp("straight"))
    with mlp_trainer(0) as t:
        history = t.fit(points(MLP_N), **MLP_FIT, test=points(6, 0.5), out=out, checkpoint_every=4,
                        config={"note": "mlp"})
        return t.parameters_sha256(), out, history


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size)`` mounts a tmpfs of ``size`` (as mount reads it: "64k") in tmp_path and returns its
    folder, or skips the test where none can be mounted (it needs root); unmounted at the end."""
    mounted = []

    def mount(size):
        folder = tmp_path / f"tmpfs-{size}-{len(mounted)}"
        folder.mkdir()
        command = shutil.which("mount")
        if os.name != "posix" or command is None:
            pytest.skip("mounting a tmpfs needs a POSIX system with mount")
        try:
            done = subprocess.run([command, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                  capture_output=True, text=True, timeout=30)
        except OSError as e:
            pytest.skip(f"cannot run mount: {e}")
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip() or done.returncode}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True, timeout=30)
