"""Bilinear resizing with antialiasing, equal to PyTorch's
``interpolate(x, size, mode="bilinear", antialias=True, align_corners=False)``.

Each output pixel is a weighted mean of input pixels under a triangle
("tent") filter centred where the output pixel's centre falls in the input.
When shrinking by a factor s = in/out the tent is stretched to half-width s,
so every input pixel contributes; plain bilinear would sample only the two
nearest pixels and alias thin strokes away. When enlarging, the half-width
is 1, which is ordinary bilinear interpolation. Each row of weights is
normalised to sum to 1, so a constant image stays constant, including at
the borders where the tent is cut off.

The filter is separable, so a resize is two matrix products,
``Wh @ x @ Ww.T``, with one small weight matrix per (in, out) size pair. They are
computed as folds over the input pixels, in order, one elementwise multiply and add
per pixel: a BLAS product's last bits depend on the CPU's kernel, these do not.
"""

import functools
import numbers

import numpy as np

from ..portable_math import fold_sum


def resize_bilinear_aa(array, size):
    """Resize the last two axes of ``array`` to ``size`` with antialiasing.

    ``array`` has shape (..., rows, columns), e.g. (N, 1, 28, 28); ``size`` is
    an int for a square output or a (rows, columns) pair. Returns float64
    with shape (..., *size).
    """
    out_rows, out_cols = _check_size(size)
    x = np.asarray(array, dtype=np.float64)
    if x.ndim < 2 or x.shape[-2] == 0 or x.shape[-1] == 0:
        raise ValueError(f"expected an array shaped (..., rows, columns), got shape {x.shape}")
    w_rows = bilinear_aa_weights(x.shape[-2], out_rows)
    w_cols = bilinear_aa_weights(x.shape[-1], out_cols)
    by_rows = _fold(w_rows[:, :, None], x[..., None, :, :], axis=-2)     # Wh @ x
    return _fold(w_cols, by_rows[..., None, :], axis=-1)                 # (Wh @ x) @ Ww.T


def _fold(weights, x, axis):
    """``sum(weights * x, axis)`` (broadcast), the terms added in order along ``axis``, from 0.0."""
    weights, x = np.moveaxis(weights, axis, 0), np.moveaxis(x, axis, 0)
    total = np.zeros(np.broadcast_shapes(weights.shape[1:], x.shape[1:]))
    for w, column in zip(weights, x):
        total += w * column
    return total


@functools.cache
def bilinear_aa_weights(in_size, out_size):
    """Return the (out_size, in_size) matrix mapping a 1-D signal to its resize.

    The matrix is cached and read-only.
    """
    scale = in_size / out_size
    # Shrinking widens the tent (and flattens it by 1/scale) to cover `scale` pixels.
    support, inv_scale = (scale, 1.0 / scale) if scale >= 1.0 else (1.0, 1.0)
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        # int() truncates toward zero like PyTorch's cast; max() clips the left edge.
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        row = [max(0.0, 1.0 - abs((j - center + 0.5) * inv_scale)) for j in range(lo, hi)]
        weights[i, lo:hi] = np.array(row) / fold_sum(row)
    weights.flags.writeable = False
    return weights


def _check_size(size):
    if isinstance(size, numbers.Integral):
        pair = (size, size)
    else:
        try:
            pair = tuple(size)
        except TypeError:
            pair = ()
    if len(pair) != 2 or not all(_is_positive_int(n) for n in pair):
        raise ValueError(f"expected a positive int or a (rows, columns) pair, got {size!r}")
    return int(pair[0]), int(pair[1])


def _is_positive_int(n):
    return isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0
