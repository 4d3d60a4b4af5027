"""Shared tolerances and comparison helpers for the reference tests."""
import math

import pytest

RTOL = 1e-9
ATOL = 1e-12  # only matters for values near 0, where a relative tolerance means nothing


@pytest.fixture
def torch():
    """PyTorch with float64 defaults, or a skip (e.g. under PyPy, which has no torch)."""
    return pytest.importorskip("torch")


def close(got, expected, rtol=RTOL, atol=ATOL):
    """``got`` equals ``expected`` within tolerance; nan matches nan, an infinity only itself."""
    got, expected = float(got), float(expected)
    if math.isnan(expected) or math.isnan(got):
        return math.isnan(expected) and math.isnan(got)
    if math.isinf(expected) or math.isinf(got):
        return got == expected
    return abs(got - expected) <= atol + rtol * abs(expected)


def assert_close(got, expected, what="", rtol=RTOL, atol=ATOL):
    assert close(got, expected, rtol, atol), f"{what}: got {got!r}, expected {expected!r}"


def assert_all_close(got, expected, what="", rtol=RTOL, atol=ATOL):
    got, expected = list(got), list(expected)
    assert len(got) == len(expected), f"{what}: got {len(got)} numbers, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        assert_close(g, e, f"{what}[{i}]", rtol, atol)
