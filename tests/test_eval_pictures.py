"""evaluate.py --pictures: which digits count as mistakes, their scores, and the two PNGs."""
import importlib.util
import json
import os

import pytest

import minigrad
from helpers_parallel import ROOT, run_script
from minigrad import nn
from minigrad.core import flatten
from minigrad.data import load_mnist
from minigrad.data.idx import read_idx_images, read_idx_labels, write_idx
from parallel import DataParallelTrainer
from parallel.run import plots
from minigrad.data.mnist_task import model_fn_from_checkpoint, pm1_mse_loss

PNG = b"\x89PNG\r\n\x1a\n"
N_DIGITS = 100


@pytest.mark.parametrize("predictions, labels, limit, expected", [
    ([1, 2, 3, 4], [1, 0, 3, 0], 64, [1, 3]),
    ([0, 0, 0, 0, 0], [1, 1, 1, 1, 1], 3, [0, 1, 2]),
    ([5, 6], [5, 6], 64, []),
    ([9, 8, 7], [0, 8, 0], 0, []),
    ([], [], 5, []),
])
def test_first_mistakes(predictions, labels, limit, expected):
    assert plots.first_mistakes(predictions, labels, limit) == expected


@pytest.mark.parametrize("args, message", [
    (([1, 2], [1]), r"Expected as many predictions as labels \(1\), got 2"),
    (([1], [1], -1), "Expected limit to be an integer >= 0, got -1"),
    (([1], [1], 2.5), "Expected limit to be an integer >= 0, got 2.5"),
])
def test_first_mistakes_checks_its_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        plots.first_mistakes(*args)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A folder of t10k IDX files holding the first 100 shipped digits, and an untrained checkpoint
    (an untrained CNN gets most of them wrong: more mistakes than the 64 drawn)."""
    folder = tmp_path_factory.mktemp("digits")
    data = os.path.join(ROOT, "minigrad", "data")
    images = read_idx_images(os.path.join(data, "mnist5k-images-idx3-ubyte.gz"))[:N_DIGITS]
    labels = read_idx_labels(os.path.join(data, "mnist5k-labels-idx1-ubyte.gz"))[:N_DIGITS]
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    nn.CNN.reference(seed=3).save(folder / "model.json")
    return folder


def load_evaluate_script():
    spec = importlib.util.spec_from_file_location("evaluate_script", os.path.join(ROOT, "scripts", "evaluate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mistakes_are_the_misclassified_digits_with_the_models_outputs(digits, monkeypatch, tmp_path):
    model = nn.module_from_checkpoint(str(digits / "model.json"))
    dataset = load_mnist(str(digits), "test")
    with minigrad.no_grad():
        outputs = [[o.v for o in flatten(model(x.tolist()))] for x in dataset.images]
    predicted = [max(range(10), key=out.__getitem__) for out in outputs]
    wrong = [i for i in range(N_DIGITS) if predicted[i] != dataset.labels[i]]
    assert len(wrong) > 64

    with DataParallelTrainer(model_fn_from_checkpoint({"model": model.config()}), pm1_mse_loss, workers=0) as trainer:
        minigrad.checkpoint.load_into(trainer.model, minigrad.checkpoint.read(str(digits / "model.json")))
        evaluation = trainer.evaluate(dataset)
    assert plots.first_mistakes(evaluation.predictions, evaluation.labels) == wrong[:64]

    drawn = {}
    monkeypatch.setattr(plots, "plot_mistakes", lambda *args, **kwargs: drawn.update(args=args, kwargs=kwargs))
    monkeypatch.setattr(plots, "plot_confusion", lambda *args, **kwargs: None)
    plots.plot_evaluation(str(tmp_path), trainer.model, dataset, evaluation)
    images, labels, predictions, scores, path = drawn["args"]
    assert [img.tolist() for img in images] == [dataset.images[i].tolist() for i in wrong[:64]]
    assert labels == [dataset.labels[i] for i in wrong[:64]]
    assert predictions == [predicted[i] for i in wrong[:64]]
    assert scores == [outputs[i][predicted[i]] for i in wrong[:64]]
    assert path == str(tmp_path / "mistakes.png") and drawn["kwargs"]["total"] == len(wrong)


def test_evaluate_pictures_writes_both_pngs(digits, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "pictures" / "new"
    done = run_script("evaluate.py", digits / "model.json", "--data", "mnist", "--data-dir", digits,
                      "--workers", "0", "--pictures", out, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["pictures"] == [str(out / "mistakes.png"), str(out / "confusion.png")]
    assert sorted(os.listdir(out)) == ["confusion.png", "mistakes.png"]  # no temp files left
    for name in ("mistakes.png", "confusion.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000


def test_drawing_functions_write_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    images = [[[0.0, 1.0], [1.0, 0.0]], [[[0.5, 0.5], [0.0, 1.0]]]]  # 2-D, and 1xHxW as the model sees it
    assert plots.plot_mistakes(images, [1, 7], [7, 1], [0.25, -0.5], tmp_path / "m.png", total=9)
    assert plots.plot_confusion([[5, 1], [0, 7]], tmp_path / "c.png")
    for name in ("m.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert sorted(os.listdir(tmp_path)) == ["c.png", "m.png"]


@pytest.mark.parametrize("call, message", [
    (lambda p: plots.plot_mistakes([[[0.0]]], [1, 2], [3], [0.1], p), r"Expected 1 labels, predictions and scores"),
    (lambda p: plots.plot_confusion([[1, 2], [3]], p), r"Expected a square confusion matrix, got rows of lengths"),
])
def test_drawing_functions_check_their_arguments(tmp_path, call, message):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match=message):
        call(tmp_path / "x.png")
    assert os.listdir(tmp_path) == []


def test_without_matplotlib(digits, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots, "_pyplot", lambda: None)
    assert plots.plot_confusion([[1]], tmp_path / "c.png") is False
    assert plots.plot_mistakes([], [], [], [], tmp_path / "m.png") is False
    assert os.listdir(tmp_path) == []

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else
                        find_spec(name, *a))
    code = load_evaluate_script().main([str(digits / "model.json"), "--data", "mnist", "--data-dir", str(digits),
                                        "--workers", "0", "--pictures", str(tmp_path / "p")])
    assert code == 2
    err = capsys.readouterr().err
    assert err == 'error: --pictures needs matplotlib; matplotlib is not installed: pip install "minigrad[plots]"\n'
    assert not (tmp_path / "p").exists()
