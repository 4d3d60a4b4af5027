"""Tiny models, datasets and fault injectors for the trainer's tests, and the helpers that run
and read the training script.

The model is a CNN on 8x8 inputs with 240 parameters, the dataset 40 random images
of 3 classes: a step takes a millisecond, so tests can afford many runs. A small MLP
fitting a smooth function shows the run API on a model that is not the CNN. Everything
here is sent to workers by value (cloudpickle), so a worker never needs to import
this module; where cloudpickle cannot send code (PyPy 3.11), the functions travel by
reference and the workers, which share the tests' ``sys.path``, import it.
"""
import functools
import hashlib
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import cloudpickle
import numpy as np

from minigrad import nn
from minigrad.data import Dataset
from minigrad.losses import mse_loss, one_hot_pm1

N_CLASSES = 3
SLEEP_SECONDS = 4.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")


def tiny_model(seed=0):
    return nn.CNN(8, 8, 1, [nn.CNNLayerConfig(3, 4, 2, "tanh")], hidden_dim=6, n_classes=N_CLASSES, seed=seed)


def tiny_model_fn(seed=0):
    return functools.partial(tiny_model, seed)  # by reference: it travels with the standard pickle too


def tiny_loss(outputs, label):
    return mse_loss(outputs, one_hot_pm1(label, N_CLASSES))


def tiny_dataset(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return Dataset(rng.normal(size=(n, 1, 8, 8)), rng.integers(0, N_CLASSES, size=n), "tiny")


def tiny_trainer(workers, **kwargs):
    from parallel import DataParallelTrainer
    options = dict(lr=0.05, momentum=0.9, lr_schedule="cosine", seed=0, log=lambda line: None)
    options.update(kwargs)
    return DataParallelTrainer(tiny_model_fn(), tiny_loss, workers=workers, **options)


def train_sha(workers, dataset=None, steps=6, batch_size=5, **kwargs):
    """parameters_sha256 after ``steps`` steps (and the trainer's restart count)."""
    dataset = tiny_dataset() if dataset is None else dataset
    with tiny_trainer(workers, **kwargs) as trainer:
        trainer.fit(dataset, epochs=100, batch_size=batch_size, max_steps=steps)
        return trainer.parameters_sha256(), getattr(trainer.backend, "restarts", 0)


def sample_at(step, position, batch_size=5):
    """The index of the sample at ``position`` in the batch of ``step`` (1-based), first epoch of tiny_dataset()."""
    from parallel.data_order import epoch_order
    return epoch_order(len(tiny_dataset()), 0, 0)[(step - 1) * batch_size + position]


# ---- a model that is not the CNN: a small MLP fitting y = sin(x0) * x1 ----

MLP_FIT = {"epochs": 3, "batch_size": 4, "max_steps": None}
MLP_N = 18  # 5 steps per epoch, the last of 2 samples; 15 steps


def mlp():
    return nn.Sequential(nn.Linear(2, 6, activation="tanh", seed=0), nn.Linear(6, 1, seed=1))


def squared_error(outputs, target):
    return (outputs[0] - target) ** 2


def predict(outputs):
    return outputs[0].v


def points(n, shift=0.0):
    """(x, y) pairs of y = sin(x0) * x1, on a fixed grid."""
    xs = [(math.sin(1.7 * k + shift), math.cos(0.9 * k + shift)) for k in range(n)]
    return [([a, b], math.sin(a) * b) for a, b in xs]


def mlp_trainer(workers):
    from parallel import DataParallelTrainer
    return DataParallelTrainer(mlp, squared_error, optimizer="adam", lr=0.02, lr_schedule="cosine",
                               workers=workers, seed=3, predict_fn=predict, log=lambda line: None)


# ---- fault injection: the test owns the counter file; normal workers write nothing ----

def _count(folder):
    """How many events were recorded in ``folder`` (one file each, so that processes never race)."""
    try:
        return len(os.listdir(folder))
    except FileNotFoundError:
        return 0


def _bump(folder):
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, f"{os.getpid()}-{time.monotonic_ns()}"), os.O_CREAT | os.O_EXCL)
    os.close(fd)
    return _count(folder)


def count_events(folder):
    return _count(folder)


def crash(mode):
    """End this process (or raise) the way ``mode`` says."""
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "exit":
        os._exit(3)
    elif mode == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)  # dies as a segfault would (PyPy's ctypes reads address 0 safely)
    elif mode == "memory":
        raise MemoryError("injected")
    elif mode == "raise":
        raise ValueError("injected fault in a user's dataset")
    elif mode == "hang":
        while True:  # an endless loop in user code
            pass
    elif mode == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)  # stopped, as by a debugger or Ctrl-Z
        return
    elif mode == "sleep":
        time.sleep(SLEEP_SECONDS)  # slow once, then answers
        return
    time.sleep(0.5)  # SIGKILL is asynchronous: never return from a kill


class FaultyDataset:
    """``base``'s samples, but reading sample ``index`` in a worker crashes it (``times`` times in all)."""

    def __init__(self, base, index, mode, counter, times=1):
        self.base, self.index, self.mode, self.counter, self.times = base, index, mode, counter, times
        self.parent = os.getpid()

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if i == self.index and os.getpid() != self.parent and _count(self.counter) < self.times:
            _bump(self.counter)
            crash(self.mode)
        return self.base.images[i], self.base.labels[i]

    @property
    def labels(self):  # evaluation reads labels in the parent
        return self.base.labels


def counting_model_fn(counter, seed=0):
    """A model factory that counts its calls in a file (to show it runs once per worker)."""
    def model_fn():
        if os.getpid() != parent:
            _bump(counter)
        return tiny_model(seed)
    parent = os.getpid()
    return model_fn


class CountingDataset:
    """A dataset that counts, in a file, how often it is unpickled (once per worker)."""

    def __init__(self, base, counter):
        self.base, self.counter = base, counter

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base.images[i], self.base.labels[i]

    @property
    def labels(self):
        return self.base.labels

    def __getstate__(self):
        return (self.base, self.counter)

    def __setstate__(self, state):
        self.base, self.counter = state
        _bump(self.counter)


# ---- processes ----

# A script that trains the tiny model in 2 workers forever and prints the workers' pids at step 3.
PARENT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from helpers_parallel import tiny_dataset, tiny_trainer
    if __name__ == "__main__":
        with tiny_trainer(2) as trainer:
            for report in trainer.train_steps(tiny_dataset(), epochs=10**6, batch_size=5):
                if report.step == 3:
                    print(*trainer.backend.pids(), flush=True)
""")


def alive(pids):
    """The pids among ``pids`` still running (zombies count as gone)."""
    import psutil
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


def children(before=()):
    """This process's children (recursively), but those in ``before`` and multiprocessing's own helpers."""
    import psutil
    out = []
    for p in psutil.Process().children(recursive=True):
        if p.pid in before:
            continue
        try:
            command = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "forkserver" not in command and "resource_tracker" not in command:
            out.append(p.pid)
    return out


def descendants(pid):
    import psutil
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def leftovers(pid=None):
    """The shared memory blocks of the run in process ``pid`` (this one by default) still in /dev/shm."""
    return [f for f in os.listdir("/dev/shm") if f.startswith(f"minigrad-{pid or os.getpid()}-")]


# ---- the training script ----

def train_args(out, *extra):
    """train_parallel.py for 30 steps of 4 samples in 2 workers, a checkpoint every 5 steps."""
    return ["--workers", "2", "--batch-size", "4", "--max-steps", "30", "--checkpoint-every", "5",
            "--out", str(out), "--quiet"] + list(extra)


def run_script(name, *args, timeout=120, cwd=None):
    """Run ``scripts/<name>`` to completion; return the CompletedProcess (text)."""
    return subprocess.run([sys.executable, os.path.join(SCRIPTS, name)] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT)


def start_script(name, *args, cwd=None):
    return subprocess.Popen([sys.executable, os.path.join(SCRIPTS, name)] + [str(a) for a in args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd or ROOT)


def sha_line(stdout):
    """The parameters' sha256 that the script printed."""
    return [line.split()[-1] for line in stdout.splitlines() if line.startswith("parameters sha256")][0]


def rows(path):
    """The rows of a CSV log, without its header."""
    with open(path) as f:
        return f.read().splitlines()[1:]


def wait_for_rows(proc, path, n, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and len(rows(path)) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"{path}: fewer than {n} rows after {timeout}s")


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


cloudpickle.register_pickle_by_value(sys.modules[__name__])
