"""Random augmentations of one training input, as a worker sees it.

An input is nested lists of floats, ``[channel][row][column]`` (``[1][15][15]`` for the
shipped digits). Each augmentation is a function ``(x, rng) -> new input of the same shape``
that draws only from ``rng``, a ``random.Random`` (the trainer passes
``parallel.replica.sample_rng(seed, epoch, index)``), so an augmented sample is the same
in every worker, with any number of workers, and after a resume. They run in the worker
once per training sample, beside a few milliseconds of engine work, so they are plain
Python loops over the pixels, without numpy: next to a sample of the reference CNN, ``shift``
costs about 1%, ``rotate`` 2-4% and ``elastic`` 6-8% (``scripts/tune_recipe.py --cost``).

Pixels that come from outside the image take ``BACKGROUND``, the value a blank (0) MNIST
pixel has after ``minigrad.data.preprocess``.

    trainer = DataParallelTrainer(..., augment_fn=AUGMENTATIONS["shift"])
"""
import math

from ..checks import int_at_least
from ..portable_math import cos, sin
from .mnist import MNIST_MEAN, MNIST_STD

BACKGROUND = (0.0 - MNIST_MEAN) / MNIST_STD


def translate(x, dx, dy, fill=BACKGROUND):
    """``x`` moved ``dx`` columns right and ``dy`` rows down (integers); the uncovered edge is ``fill``."""
    out = []
    for channel in x:
        rows, cols = len(channel), len(channel[0])
        blank = [fill] * cols
        moved = []
        for r in range(rows):
            src = r - dy
            if not 0 <= src < rows:
                moved.append(list(blank))
            elif dx >= 0:
                moved.append([fill] * min(dx, cols) + channel[src][:max(cols - dx, 0)])
            else:
                moved.append(channel[src][-dx:] + [fill] * min(-dx, cols))
        out.append(moved)
    return out


def shift(x, rng, pixels=1):
    """A random translation of up to ``pixels`` each way (each offset uniform in -pixels..pixels)."""
    int_at_least("pixels", pixels, 0)
    dx = rng.randint(-pixels, pixels)
    dy = rng.randint(-pixels, pixels)
    return translate(x, dx, dy)


def warp(x, points, fill=BACKGROUND):
    """Bilinear resampling: output pixel ``(r, c)`` reads ``x`` at ``points[r * columns + c]``, a
    fractional ``(row, column)``, with ``fill`` outside the image."""
    rows, cols = len(x[0]), len(x[0][0])
    out = []
    for channel in x:
        # one pixel of fill before, two after: a point on the last fill pixel weighs it exactly
        blank = [fill] * (cols + 3)
        padded = [blank] + [[fill] + list(row) + [fill, fill] for row in channel] + [blank, blank]
        flat = []
        for y, z in points:
            y, z = y + 1.0, z + 1.0  # row and column in the padded image
            if not (0.0 <= y <= rows + 1 and 0.0 <= z <= cols + 1):
                flat.append(fill)
                continue
            r, c = int(y), int(z)
            fy, fx = y - r, z - c
            top, bottom = padded[r], padded[r + 1]
            a, b = top[c], bottom[c]
            upper, lower = a + fx * (top[c + 1] - a), b + fx * (bottom[c + 1] - b)
            flat.append(upper + fy * (lower - upper))
        out.append([flat[r * cols:(r + 1) * cols] for r in range(rows)])
    return out


def rotation(x, degrees, dx=0.0, dy=0.0):
    """``x`` turned ``degrees`` counter-clockwise about its centre, then moved ``dx``, ``dy``."""
    rows, cols = len(x[0]), len(x[0][0])
    cy, cx = (rows - 1) / 2, (cols - 1) / 2
    turn = math.radians(degrees)
    cos_t, sin_t = cos(turn), sin(turn)
    # the inverse map: undo the move, then the turn
    vs, us = [r - dy - cy for r in range(rows)], [c - dx - cx for c in range(cols)]
    return warp(x, [(cy + cos_t * v + sin_t * u, cx - sin_t * v + cos_t * u) for v in vs for u in us])


def rotate(x, rng, degrees=10.0):
    """A random rotation, uniform in -degrees..degrees."""
    return rotation(x, rng.uniform(-degrees, degrees))


def shift_rotate(x, rng, pixels=1, degrees=10.0):
    """``shift``'s translation and ``rotate``'s rotation, resampled once."""
    int_at_least("pixels", pixels, 0)
    dx = rng.randint(-pixels, pixels)
    dy = rng.randint(-pixels, pixels)
    return rotation(x, rng.uniform(-degrees, degrees), dx, dy)


def elastic(x, rng, pixels=1.0, grid=3):
    """A smooth random distortion: each point of a ``grid`` x ``grid`` lattice over the image moves
    by up to ``pixels`` each way (uniform), and every pixel by the bilinear blend of its lattice."""
    int_at_least("grid", grid, 2)
    rows, cols = len(x[0]), len(x[0][0])
    dys, dxs = [_stretch_2d([[rng.uniform(-pixels, pixels) for _ in range(grid)] for _ in range(grid)], rows, cols)
                for _ in range(2)]
    return warp(x, [(r + dys[r][c], c + dxs[r][c]) for r in range(rows) for c in range(cols)])


def _stretch_2d(table, rows, cols):
    """``table`` bilinearly interpolated to ``rows`` x ``cols`` points, corners on corners."""
    across = [_stretch(row, cols) for row in table]
    return list(zip(*[_stretch(column, rows) for column in zip(*across)]))


def _stretch(values, size):
    """``values`` linearly interpolated to ``size`` evenly spread points, ends on ends."""
    last = len(values) - 1
    out = []
    for k in range(size):
        g = k * last / max(size - 1, 1)
        j = min(int(g), last - 1)
        out.append(values[j] + (g - j) * (values[j + 1] - values[j]))
    return out


AUGMENTATIONS = {
    "none": None,
    "shift": shift,
    "rotate": rotate,
    "shift_rotate": shift_rotate,
    "elastic": elastic,
}
