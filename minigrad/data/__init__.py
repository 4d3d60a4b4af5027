"""MNIST data for minigrad: the shipped MNIST-5k set, the full IDX files,
their download, and the preprocessing the models expect.

This package uses numpy; the core engine does not import it.

    from minigrad.data import load_mnist5k
    train = load_mnist5k("train")   # 4,000 digits, images float64 (N, 1, 15, 15)
    test = load_mnist5k("test")     # 1,000 digits
"""

from .dataset import Dataset
from .idx import DataError, read_idx_images, read_idx_labels, write_idx
from .mnist import (
    DEFAULT_MIRRORS,
    IMAGE_SIZE,
    MNIST_CHECKSUMS,
    MNIST_MEAN,
    MNIST_STD,
    download_mnist,
    load_mnist,
    load_mnist5k,
    preprocess,
)
from .resize import resize_bilinear_aa

__all__ = [
    "DEFAULT_MIRRORS",
    "DataError",
    "Dataset",
    "IMAGE_SIZE",
    "MNIST_CHECKSUMS",
    "MNIST_MEAN",
    "MNIST_STD",
    "download_mnist",
    "load_mnist",
    "load_mnist5k",
    "preprocess",
    "read_idx_images",
    "read_idx_labels",
    "resize_bilinear_aa",
    "write_idx",
]
