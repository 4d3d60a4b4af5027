"""The full MNIST (60,000 training digits): the original's recipe as a command, resumed mid-epoch bit
for bit, and the recipe search's validation split. Skipped where ../shared/data/mnist has no
training files."""
import glob
import json
import os

import pytest

from helpers_parallel import ROOT, run_script, sha_line
from minigrad import checkpoint

MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")
pytestmark = pytest.mark.skipif(not glob.glob(os.path.join(MNIST, "train-*")),
                                reason=f"no full MNIST training files in {MNIST}")
ORIGINAL = ["--recipe", "original", "--data-dir", MNIST, "--workers", "2", "--quiet"]


def run_ok(*args):
    done = run_script("train_parallel.py", *args, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("original")
    return out, sha_line(run_ok(*ORIGINAL, "--max-steps", "8", "--out", out).stdout)


def test_the_original_recipe_is_the_notebooks_settings_over_all_60000_digits(straight):
    out, _ = straight
    ckpt = checkpoint.read(os.path.join(out, "model.json"))
    config = ckpt["config"]
    assert {k: config[k] for k in ("recipe", "data", "epochs", "batch_size", "optimizer", "lr", "momentum",
                                   "weight_decay", "lr_schedule", "augment")} == {
        "recipe": "original", "data": "mnist", "epochs": 2, "batch_size": 2, "optimizer": "sgd", "lr": 0.002,
        "momentum": 0.0, "weight_decay": 0.0, "lr_schedule": "constant", "augment": "none"}
    order = ckpt["trainer"]["data_order"]
    assert order["position"] == 16 and sorted(order["order"]) == list(range(60_000))
    assert ckpt["trainer"]["optimizer"]["type"] == "SGD"
    with open(os.path.join(out, "test_stats.csv")) as f:
        assert f.readline().strip()  # the run evaluated the official test set at its end


def test_a_run_resumed_mid_epoch_has_the_same_bits(straight, tmp_path):
    _, expected = straight
    first = tmp_path / "first"  # a run stopped at step 3 (as by Ctrl-C), then continued to step 8
    run_ok(*ORIGINAL, "--max-steps", "3", "--out", first)
    with open(first / "model.json") as f:
        saved = json.load(f)
    assert saved["trainer"]["data_order"]["position"] == 6  # mid-epoch: 6 of 60,000
    saved["config"]["max_steps"] = 8
    (first / "model.json").write_text(json.dumps(saved))
    resumed = run_ok("--resume", first / "model.json", "--workers", "1", "--quiet")
    assert sha_line(resumed.stdout) == expected


def test_a_flag_beside_the_recipe_wins(tmp_path):
    run_ok(*ORIGINAL, "--lr", "0.01", "--max-steps", "1", "--out", tmp_path)
    config = checkpoint.read(os.path.join(tmp_path, "model.json"))["config"]
    assert config["lr"] == 0.01 and config["batch_size"] == 2 and config["recipe"] == "original"


def test_the_recipe_search_scores_on_the_last_training_digits_never_the_test_set():
    pytest.importorskip("torch", reason="scripts/tune_recipe.py needs torch")
    import importlib.util
    spec = importlib.util.spec_from_file_location("tune_recipe", os.path.join(ROOT, "scripts", "tune_recipe.py"))
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    from minigrad.data import load_mnist
    train, held_out = tune.splits(MNIST, 10_000, final=False)
    full = load_mnist(MNIST, "train")
    assert len(train) == 50_000 and len(held_out) == 10_000
    assert (held_out.images == full.images[50_000:]).all() and (held_out.labels == full.labels[50_000:]).all()
    assert (train.images == full.images[:50_000]).all()
    final_train, test = tune.splits(MNIST, 10_000, final=True)
    assert len(final_train) == 60_000 and test.name == "mnist-test"
