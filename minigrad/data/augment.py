"""Random augmentations of one training input, as a worker sees it.

An input is nested lists of floats, ``[channel][row][column]`` (``[1][15][15]`` for the
shipped digits). Each augmentation is a function ``(x, rng) -> new input of the same shape``
that draws only from ``rng``, a ``random.Random`` (the trainer passes
``parallel.replica.sample_rng(seed, epoch, index)``), so an augmented sample is the same
in every worker, with any number of workers, and after a resume. They run in the worker
once per training sample, beside ~4 ms of engine work, so they are plain Python loops
over 225 pixels: no numpy, no copies beyond the output.

Pixels that come from outside the image take ``BACKGROUND``, the value a blank (0) MNIST
pixel has after ``minigrad.data.preprocess``.

    trainer = DataParallelTrainer(..., augment_fn=AUGMENTATIONS["shift"])
"""
import math

from ..checks import positive_int
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
    dx = rng.randint(-pixels, pixels)
    dy = rng.randint(-pixels, pixels)
    return translate(x, dx, dy)


def warp(x, source, fill=BACKGROUND):
    """Bilinear resampling: output pixel ``(r, c)`` reads ``x`` at ``source(r, c) -> (row, column)``
    (fractional), with ``fill`` outside the image."""
    rows, cols = len(x[0]), len(x[0][0])
    points = [_bilinear_point(*source(r, c), rows, cols) for r in range(rows) for c in range(cols)]
    out = []
    for channel in x:
        blank = [fill] * (cols + 3)
        padded = [blank] + [[fill] + list(row) + [fill, fill] for row in channel] + [blank, blank]
        flat = [_interpolate(padded, point, fill) for point in points]
        out.append([flat[r * cols:(r + 1) * cols] for r in range(rows)])
    return out


def _bilinear_point(y, x, rows, cols):
    """``(row, column, row weight, column weight)`` in the image padded with fill (one pixel before,
    two after, so that a point on the last padding pixel weighs it exactly), or None when all four
    neighbours are fill."""
    y, x = y + 1.0, x + 1.0
    if not (0.0 <= y <= rows + 1 and 0.0 <= x <= cols + 1):
        return None
    r, c = int(y), int(x)
    return r, c, y - r, x - c


def _interpolate(padded, point, fill):
    if point is None:
        return fill
    r, c, fy, fx = point
    top, bottom = padded[r], padded[r + 1]
    upper = top[c] + fx * (top[c + 1] - top[c])
    lower = bottom[c] + fx * (bottom[c + 1] - bottom[c])
    return upper + fy * (lower - upper)


def rotation(x, degrees, dx=0.0, dy=0.0):
    """``x`` turned ``degrees`` counter-clockwise about its centre, then moved ``dx``, ``dy``."""
    rows, cols = len(x[0]), len(x[0][0])
    cy, cx = (rows - 1) / 2, (cols - 1) / 2
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))

    def source(r, c):
        v, u = r - dy - cy, c - dx - cx  # the inverse map: undo the move, then the turn
        return cy + cos * v + sin * u, cx - sin * v + cos * u
    return warp(x, source)


def rotate(x, rng, degrees=10.0):
    """A random rotation, uniform in -degrees..degrees."""
    return rotation(x, rng.uniform(-degrees, degrees))


def shift_rotate(x, rng, pixels=1, degrees=10.0):
    """``shift``'s translation and ``rotate``'s rotation, resampled once."""
    dx = rng.randint(-pixels, pixels)
    dy = rng.randint(-pixels, pixels)
    return rotation(x, rng.uniform(-degrees, degrees), dx, dy)


def elastic(x, rng, pixels=1.0, grid=3):
    """A smooth random distortion: each point of a ``grid`` x ``grid`` lattice over the image moves
    by up to ``pixels`` each way (uniform), and every pixel by the bilinear blend of its lattice."""
    positive_int("grid", grid)
    if grid < 2:
        raise ValueError(f"Expected grid to be at least 2, got {grid}")
    rows, cols = len(x[0]), len(x[0][0])
    moves = [[(rng.uniform(-pixels, pixels), rng.uniform(-pixels, pixels)) for _ in range(grid)]
             for _ in range(grid)]

    def source(r, c):
        gy, gx = r * (grid - 1) / max(rows - 1, 1), c * (grid - 1) / max(cols - 1, 1)
        i, j = min(int(gy), grid - 2), min(int(gx), grid - 2)
        fy, fx = gy - i, gx - j
        (a, b), (p, q) = moves[i][j], moves[i][j + 1]
        (e, f), (g, h) = moves[i + 1][j], moves[i + 1][j + 1]
        wa, wb, wc, wd = (1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx
        return r + wa * a + wb * p + wc * e + wd * g, c + wa * b + wb * q + wc * f + wd * h
    return warp(x, source)


AUGMENTATIONS = {
    "none": None,
    "shift": shift,
    "rotate": rotate,
    "shift_rotate": shift_rotate,
    "elastic": elastic,
}
