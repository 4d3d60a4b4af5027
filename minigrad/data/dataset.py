"""The container every loader returns: images, labels and a name."""

import numpy as np


class Dataset:
    """Images and their integer labels, aligned along the first axis.

    ``images`` is any array whose first axis counts examples (float64
    (N, 1, 15, 15) after preprocessing, uint8 (N, 28, 28) raw); ``labels`` is
    int64 (N,). It holds nothing but the two arrays and the name, so pickling
    it to a worker process costs little more than the array bytes.
    """

    __slots__ = ("images", "labels", "name")

    def __init__(self, images, labels, name):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim < 1:
            raise ValueError(f"expected images with a leading example axis, got shape {images.shape}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(f"expected 1-D integer labels, got {labels.dtype} shape {labels.shape}")
        if len(images) != len(labels):
            raise ValueError(f"expected as many labels as images ({len(images)}), got {len(labels)}")
        if not isinstance(name, str):
            raise ValueError(f"expected a str name, got {type(name).__name__}")
        self.images, self.labels, self.name = images, labels, name

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        return f"Dataset({self.name!r}, images {self.images.dtype} {self.images.shape}, {len(self)} labels)"

    def subset(self, indices):
        """Return a new Dataset of the examples at ``indices`` (integers), in that order."""
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
            raise ValueError(f"expected 1-D integer indices, got {indices.dtype} shape {indices.shape}")
        indices = indices.astype(np.int64, copy=False)
        return Dataset(self.images[indices], self.labels[indices], self.name)
