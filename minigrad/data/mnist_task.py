"""The MNIST task of the scripts: the reference CNN on 15x15 digits, MSE against +-1 targets, the data.

Module-level functions, so they reach the workers by reference (cloudpickle sends their
names, not their code).
"""
import functools

from minigrad import nn
from minigrad.losses import mse_loss, one_hot_pm1

N_CLASSES = 10
DATA_SOURCES = ("mnist5k", "mnist")

# Named settings of scripts/train_parallel.py (--recipe NAME); a flag given beside one wins.
RECIPES = {
    # the shipped 4,000 digits: the scripts' own defaults
    "mnist5k": {},
    # the original minigrad's mnist_sgd.ipynb: its CNN and initialisation (nn.CNN.reference), SGD
    # at lr 2e-3 without momentum, batch 2, 2 epochs of all 60,000 digits, no augmentation
    "original": {"data": "mnist", "epochs": 2, "batch_size": 2, "optimizer": "sgd", "lr": 2e-3, "momentum": 0.0,
                 "weight_decay": 0.0, "lr_schedule": "constant", "augment": "none"},
    # the full 60,000 digits: Adam, chosen on the validation split (the last 10,000 training digits) by
    # scripts/tune_recipe.py; 98.03% in 11-14 minutes on 2 cores, --epochs 2 fits 10 (README, Results)
    "full": {"data": "mnist", "epochs": 3, "batch_size": 8, "optimizer": "adam", "lr": 3e-3, "momentum": 0.0,
             "weight_decay": 3e-4, "lr_schedule": "cosine", "augment": "none"},
}


def reference_model_fn(seed):
    """A picklable factory of ``nn.CNN.reference(seed)``."""
    return functools.partial(nn.CNN.reference, seed=seed)


def model_fn_from_checkpoint(ckpt):
    """A picklable factory of an untrained model with the architecture of ``ckpt`` (from
    ``minigrad.checkpoint.read``); the original flat checkpoints are the reference CNN."""
    from minigrad.checkpoint import FLAT
    if ckpt.get("format") == FLAT:
        return functools.partial(nn.CNN.reference, seed=0)
    return functools.partial(nn.module_from_config, ckpt.get("model"), 0)


def pm1_mse_loss(outputs, label):
    """The original project's loss: mean squared error against +1 at the label, -1 elsewhere."""
    return mse_loss(outputs, one_hot_pm1(label, N_CLASSES))


def load_data(source, split, data_dir=None, download=False):
    """The "train" or "test" split of MNIST-5k (shipped) or of full MNIST (IDX files in data_dir)."""
    from minigrad.data import download_mnist, load_mnist, load_mnist5k
    if source == "mnist5k":
        return load_mnist5k(split)
    if source != "mnist":
        raise ValueError(f"Expected data in {list(DATA_SOURCES)}, got {source!r}")
    if not data_dir:
        raise ValueError("Expected --data-dir with --data mnist, got none")
    if download:
        download_mnist(data_dir, splits=split)
    return load_mnist(data_dir, split)
