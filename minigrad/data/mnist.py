"""MNIST as the trainer sees it: loaders, preprocessing and download.

Two sources give the same kind of Dataset:

- MNIST-5k, shipped in this package: 5,000 genuine MNIST training digits,
  500 per class (see MNIST5K_PROVENANCE.md). Per class, in file order, the
  first 400 form the "train" split and the last 100 the "test" split.
- The full MNIST IDX files in a folder (``load_mnist``), which
  ``download_mnist`` fetches from public mirrors.

Preprocessing is torchvision's
``Compose([ToTensor(), Normalize((0.1307,), (0.3081,)), Resize((15, 15))])``
in float64: scale to [0, 1], normalise, then antialiased bilinear resize.
"""

import os

import numpy as np

from .dataset import Dataset
from .download import fetch_verified
from .idx import DataError, read_idx_images, read_idx_labels
from .resize import resize_bilinear_aa

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIZE = 15
NUM_CLASSES = 10

_HERE = os.path.dirname(os.path.abspath(__file__))
MNIST5K_IMAGES = os.path.join(_HERE, "mnist5k-images-idx3-ubyte.gz")
MNIST5K_LABELS = os.path.join(_HERE, "mnist5k-labels-idx1-ubyte.gz")
_MNIST5K_PER_CLASS = 500
_MNIST5K_TRAIN_PER_CLASS = 400

DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

# MD5 of the gzipped files the mirrors serve; the values torchvision checks.
# A re-compressed copy holds the same data in other bytes and is fetched again.
MNIST_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
}

_FILE_PREFIX = {"train": "train", "test": "t10k"}


def load_mnist5k(split, preprocess=True, size=IMAGE_SIZE):
    """Load the "train" (4,000) or "test" (1,000) split of the shipped MNIST-5k.

    Returns a Dataset named "mnist5k-<split>" whose labels are int64 (N,) and
    whose images are float64 (N, 1, size, size) preprocessed, or the raw
    uint8 (N, 28, 28) pixels when ``preprocess`` is False. Examples keep file
    order (grouped by class); shuffling is the trainer's job.
    """
    _check_split(split)
    images, labels = _read_pair(MNIST5K_IMAGES, MNIST5K_LABELS)
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    if len(labels) != NUM_CLASSES * _MNIST5K_PER_CLASS or counts.min() != _MNIST5K_PER_CLASS:
        raise DataError(
            f"{MNIST5K_LABELS}: expected {_MNIST5K_PER_CLASS} images per class, got {counts.tolist()}"
        )
    in_train = _first_per_class(labels, _MNIST5K_TRAIN_PER_CLASS)
    keep = in_train if split == "train" else ~in_train
    return _make_dataset(images[keep], labels[keep], f"mnist5k-{split}", preprocess, size)


def load_mnist(directory, split, preprocess=True, size=IMAGE_SIZE):
    """Load the full MNIST "train" (60,000) or "test" (10,000) split from IDX files.

    Looks in ``directory`` for ``<prefix>-images-idx3-ubyte`` and
    ``<prefix>-labels-idx1-ubyte``, gzipped (".gz") or not, where the prefix
    is "train" or "t10k". Returns a Dataset named "mnist-<split>", shaped as
    in ``load_mnist5k``. Raises DataError for missing or malformed files.
    """
    _check_split(split)
    prefix = _FILE_PREFIX[split]
    images_path = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    images, labels = _read_pair(images_path, labels_path)
    return _make_dataset(images, labels, f"mnist-{split}", preprocess, size)


def download_mnist(directory, splits=("train", "test"), base_urls=DEFAULT_MIRRORS,
                   checksums=MNIST_CHECKSUMS, timeout=60.0):
    """Download the gzipped MNIST files of ``splits`` into ``directory``.

    Each file is fetched from the first of ``base_urls`` that serves it with
    the checksum in ``checksums`` ("algorithm:hex" per file name) and written
    atomically; files already present with the right checksum are kept.
    Evaluation needs only ``splits="test"``. Returns the file paths.
    """
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    for split in splits:
        _check_split(split)
    names = [
        f"{_FILE_PREFIX[split]}-{kind}.gz"
        for split in splits
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    ]
    return fetch_verified(directory, names, base_urls, checksums, timeout)


def preprocess(images, size=IMAGE_SIZE):
    """Turn uint8 images (N, rows, columns) into float64 (N, 1, size, size).

    Scales pixels to [0, 1], normalises with MNIST_MEAN and MNIST_STD, then
    resizes with ``resize_bilinear_aa`` (the order torchvision applies
    ToTensor, Normalize, Resize). ``size`` is an int or a (rows, columns) pair.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    if images.ndim != 3:
        raise ValueError(f"expected images shaped (N, rows, columns), got shape {images.shape}")
    normalised = (images[:, None].astype(np.float64) / 255.0 - MNIST_MEAN) / MNIST_STD
    return resize_bilinear_aa(normalised, size)


def _make_dataset(images, labels, name, preprocess_images, size):
    if preprocess_images:
        images = preprocess(images, size)
    return Dataset(images, labels.astype(np.int64), name)


def _read_pair(images_path, labels_path):
    images, labels = read_idx_images(images_path), read_idx_labels(labels_path)
    if images.shape[1:] != (28, 28):
        rows, cols = images.shape[1:]
        raise DataError(f"{images_path}: expected 28x28 images, got {rows}x{cols}")
    if len(labels) != len(images):
        raise DataError(
            f"{labels_path}: expected {len(images)} labels to match {os.path.basename(images_path)}, "
            f"got {len(labels)}"
        )
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise DataError(
            f"{labels_path}: expected labels in 0..{NUM_CLASSES - 1}, got {labels[bad[0]]} at index {bad[0]}"
        )
    return images, labels


def _first_per_class(labels, count):
    """Mask of the first ``count`` examples of each class, in file order."""
    rank = np.empty(len(labels), dtype=np.int64)
    for label in range(NUM_CLASSES):
        where = np.flatnonzero(labels == label)
        rank[where] = np.arange(len(where))
    return rank < count


def _find_idx(directory, name):
    candidates = [os.path.join(directory, name + ".gz"), os.path.join(directory, name)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise DataError(f"{name}: file not found, looked for " + " and ".join(candidates))


def _check_split(split):
    if split not in _FILE_PREFIX:
        raise ValueError(f"expected split 'train' or 'test', got {split!r}")
