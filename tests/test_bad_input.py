"""Bad input through the library: every argument is checked up front, one error naming it, expected vs got, and
nothing left behind (no traceback, hang, process or /dev/shm block); more workers than CPUs only warns."""
import math
import os

import numpy as np
import pytest

from helpers_parallel import children, leftovers, tiny_dataset, tiny_loss, tiny_model, tiny_model_fn, wait_gone
from minigrad.checkpoint import CheckpointError
from minigrad.data import Dataset
from minigrad.losses import mse_loss
from parallel import DataParallelTrainer
from parallel.process_pool import ProcessBackend
from parallel.run.files import RunFolderError

pytestmark = pytest.mark.filterwarnings("ignore:.*workers on .* CPUs:RuntimeWarning")


def trainer(workers=0, model_fn=None, loss_fn=None, **kwargs):
    options = dict(lr=0.05, momentum=0.9, seed=0, log=lambda line: None)
    options.update(kwargs)
    return DataParallelTrainer(tiny_model_fn() if model_fn is None else model_fn,
                               tiny_loss if loss_fn is None else loss_fn, workers=workers, **options)


def raising_model_fn():
    raise RuntimeError("no model today")


class Mismatched:
    """images and labels of different lengths."""
    images = np.zeros((5, 1, 8, 8))
    labels = np.zeros(4, dtype=np.int64)

    def __len__(self):
        return 5


def nan_pixels():
    data = tiny_dataset(n=10)
    images = data.images.copy()
    images[3, 0, 2, 2] = math.nan
    return Dataset(images, data.labels, "nan")


def empty():
    return Dataset(np.zeros((0, 1, 8, 8)), np.zeros(0, dtype=np.int64), "empty")


CONSTRUCTOR = [
    ({"workers": -1}, "Expected workers to be an integer >= 0, got -1"),
    ({"workers": "2"}, "Expected workers to be an integer >= 0, got '2'"),
    ({"workers": 2.0}, "Expected workers to be an integer >= 0, got 2.0"),
    ({"workers": 1.5}, "Expected workers to be an integer >= 0, got 1.5"),
    ({"backend": "threads", "workers": 1}, r"Expected a backend in \['dask', 'process'\], got 'threads'"),
    ({"lr": math.nan}, "Expected lr to be a finite number >= 0, got nan"),
    ({"lr": -0.1}, "Expected lr to be a finite number >= 0, got -0.1"),
    ({"lr": "0.1"}, "Expected lr to be a finite number >= 0, got '0.1'"),
    ({"model_fn": raising_model_fn}, r"Expected model_fn\(\) to build a model, got RuntimeError: no model today"),
    ({"model_fn": lambda: 3}, r"Expected model_fn\(\) to return a minigrad.nn.Module, got int"),
    ({"model_fn": tiny_model()}, r"Expected model_fn to be callable as model_fn\(\), got CNN"),
    ({"loss_fn": lambda outputs: outputs[0]}, r"Expected loss_fn to be callable as loss_fn\(outputs, target\), "
                                              r"got lambda\(outputs\)"),
    ({"loss_fn": "mse"}, r"Expected loss_fn to be callable as loss_fn\(outputs, target\), got str"),
    ({"predict_fn": lambda a, b: 0},
     r"Expected predict_fn to be callable as predict_fn\(outputs\), got lambda\(a, b\)"),
    ({"augment_fn": lambda x: x}, r"Expected augment_fn to be callable as augment_fn\(input, rng\), got lambda\(x\)"),
    ({"seed": 1.5}, "Expected seed to be an integer, got 1.5"),
    ({"seed": "0"}, "Expected seed to be an integer, got '0'"),
    ({"optimizer": "rmsprop"}, "Expected optimizer 'sgd', 'adam' or a function, got 'rmsprop'"),
    ({"momentum": -1}, "Expected momentum >= 0, got -1"),
    ({"lr_schedule": "linear"},
     r"Expected lr_schedule in \['constant', 'cosine', 'step'\] or a function, got 'linear'"),
    ({"max_crashes": 0, "workers": 2}, "Expected max_crashes to be a positive integer, got 0"),
    ({"sample_timeout": -1, "workers": 2}, "Expected sample_timeout to be seconds >= 0 or None, finite, got -1"),
]


@pytest.mark.parametrize("kwargs,message", CONSTRUCTOR, ids=[str(sorted(k)) + m[:30] for k, m in CONSTRUCTOR])
def test_bad_trainer_arguments_are_one_clear_error(kwargs, message):
    before = children()
    with pytest.raises(ValueError, match=message) as info:
        trainer(**kwargs)
    assert "\n" not in str(info.value)
    assert children(before) == []


def test_more_workers_than_cpus_warns_but_runs():
    from parallel import available_cpus
    with pytest.warns(RuntimeWarning, match="CPUs"):
        backend = ProcessBackend(available_cpus() + 1)
    assert backend.workers == available_cpus() + 1
    backend.close()


def _fit(**kwargs):
    def run(t, tmp_path):
        options = dict(epochs=1, batch_size=5, max_steps=2)
        options.update(kwargs)
        data = options.pop("train", tiny_dataset())
        return t.fit(data, **options)
    return run


def _resume(make_file):
    def run(t, tmp_path):
        return t.resume(make_file(tmp_path))
    return run


def another_models_checkpoint(tmp_path):
    other = DataParallelTrainer(lambda: tiny_model_with_hidden(9), tiny_loss, workers=0)
    other.fit(tiny_dataset(), epochs=1, batch_size=5, max_steps=1, out=str(tmp_path / "other"))
    return str(tmp_path / "other" / "model.json")


def tiny_model_with_hidden(hidden):
    from minigrad import nn
    return nn.CNN(8, 8, 1, [nn.CNNLayerConfig(3, 4, 2, "tanh")], hidden_dim=hidden, n_classes=3, seed=0)


def truncated_checkpoint(tmp_path):
    t = DataParallelTrainer(tiny_model_fn(), tiny_loss, workers=0)
    t.fit(tiny_dataset(), epochs=1, batch_size=5, max_steps=1, out=str(tmp_path / "whole"))
    text = (tmp_path / "whole" / "model.json").read_text()
    (tmp_path / "cut.json").write_text(text[: len(text) // 2])
    return str(tmp_path / "cut.json")


def a_file(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    return str(tmp_path / "a-file")


def unwritable_folder(tmp_path):
    if os.geteuid() == 0:
        return "/proc/minigrad-run"  # root writes through permission bits, but not into /proc
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return str(folder / "run")


def float_loss(outputs, target):
    return 0.5


CALLS = [
    ("batch_size 0", _fit(batch_size=0), ValueError, "Expected batch_size to be a positive integer, got 0"),
    ("batch_size 2.5", _fit(batch_size=2.5), ValueError, "Expected batch_size to be a positive integer, got 2.5"),
    ("batch_size '8'", _fit(batch_size="8"), ValueError, "Expected batch_size to be a positive integer, got '8'"),
    ("epochs 0", _fit(epochs=0), ValueError, "Expected epochs to be a positive integer, got 0"),
    ("max_steps 0", _fit(max_steps=0), ValueError, "Expected max_steps to be a positive integer, got 0"),
    ("lengths", _fit(train=Mismatched()), ValueError,
     "Expected train to have as many labels as images, got 5 images and 4 labels"),
    ("NaN pixels", _fit(train=nan_pixels()), ValueError,
     "Expected train to have finite pixels, got NaN or infinity in sample 3"),
    ("NaN test pixels", _fit(test=nan_pixels()), ValueError,
     "Expected test to have finite pixels, got NaN or infinity in sample 3"),
    ("empty", _fit(train=empty()), ValueError, "Expected train to hold at least one sample, got an empty dataset"),
    ("not a dataset", _fit(train=42), ValueError, "Expected train to be a dataset"),
    ("on_step arity", _fit(on_step=lambda: None), ValueError, r"Expected on_step to be callable as on_step\(report\)"),
    ("progress", _fit(progress="yes"), ValueError, "Expected progress to be True or False, got 'yes'"),
    ("config", _fit(config={"x": object()}), ValueError, "Expected config to be JSON-able"),
    ("config type", _fit(config=[1]), ValueError, "Expected config to be a dict"),
    ("out type", _fit(out=3), ValueError, "Expected out to be a path or None, got int"),
    ("checkpoint_every", _fit(out="unused", checkpoint_every=0), ValueError,
     "Expected checkpoint_every to be a positive integer, got 0"),
    ("out a file", lambda t, p: t.fit(tiny_dataset(), epochs=1, batch_size=5, out=a_file(p)), RunFolderError,
     "cannot write the run folder"),
    ("out unwritable", lambda t, p: t.fit(tiny_dataset(), epochs=1, batch_size=5, out=unwritable_folder(p)),
     RunFolderError, "cannot write the run folder"),
    ("train_steps batch", lambda t, p: next(t.train_steps(tiny_dataset(), 1, 0)), ValueError,
     "Expected batch_size to be a positive integer, got 0"),
    ("evaluate empty", lambda t, p: t.evaluate(empty()), ValueError,
     "Expected dataset to hold at least one sample, got an empty dataset"),
    ("resume another model", _resume(another_models_checkpoint), CheckpointError, "model.json"),
    ("resume truncated", _resume(truncated_checkpoint), CheckpointError, "cut.json"),
    ("resume missing", _resume(lambda p: str(p / "nothing.json")), CheckpointError, "nothing.json"),
]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("name,call,error,message", CALLS, ids=[c[0] for c in CALLS])
def test_bad_calls_are_one_clear_error_and_leave_nothing(name, call, error, message, workers, tmp_path):
    before = children()
    t = trainer(workers)
    try:
        with pytest.raises(error, match=message) as info:
            call(t, tmp_path)
        assert "Worker traceback" not in str(info.value) and "\n" not in str(info.value)
    finally:
        t.close()
    assert wait_gone(children(before), 5) == []
    assert leftovers() == []


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loss_that_returns_a_number_is_one_line_at_the_first_step(workers):
    t = trainer(workers, loss_fn=float_loss)
    with t, pytest.raises(ValueError, match="Expected loss_fn.outputs, target. to return a minigrad Value, "
                                            "got float 0.5") as info:
        t.fit(tiny_dataset(), epochs=1, batch_size=5)
    assert t.step == 0
    assert "\n" not in str(info.value)


def test_the_loss_runs_only_in_the_workers(tmp_path):
    """User code with side effects (a loss that kills its process, say) never runs in the parent."""
    calls = tmp_path / "pids"

    def recording_loss(outputs, label, _calls=str(calls)):
        with open(_calls, "a") as f:
            f.write(f"{os.getpid()}\n")
        return tiny_loss(outputs, label)

    with trainer(2, loss_fn=recording_loss) as t:
        t.fit(tiny_dataset(), epochs=1, batch_size=5, max_steps=2)
    pids = set(calls.read_text().split())
    assert pids and str(os.getpid()) not in pids


def test_a_loss_that_raises_is_still_reported_by_the_worker_with_its_traceback():
    from parallel import WorkerError
    t = trainer(2, loss_fn=lambda outputs, label: mse_loss(outputs[:2], [1.0, 1.0, 1.0]))
    with t, pytest.raises(WorkerError, match="Worker traceback"):
        t.fit(tiny_dataset(), epochs=1, batch_size=5)


def test_fit_after_close_starts_a_fresh_pool_and_continues():
    straight = trainer(2)
    with straight:
        straight.fit(tiny_dataset(), epochs=1, batch_size=5, max_steps=6)
        expected = straight.parameters_sha256()
    t = trainer(2)
    t.fit(tiny_dataset(), epochs=1, batch_size=5, max_steps=3)
    pids = t.backend.pids()
    t.close()
    assert wait_gone(pids, 5) == []
    t.fit(tiny_dataset(), epochs=1, batch_size=5, max_steps=6)  # the same trainer, a new pool
    assert t.parameters_sha256() == expected
    t.close()
    assert leftovers() == []

