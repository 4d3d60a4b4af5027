"""The same bits on every interpreter and CPU: the portable functions against the C library, and the
whole arithmetic (``same_bits_probe.py``) pinned, and unchanged by a compensated ``sum``, two BLAS
kernels and glibc's non-FMA code path.

The knobs are the ones that changed bits before: CPython 3.12's compensated ``sum``, OpenBLAS's
kernel (``OPENBLAS_CORETYPE``) under a matrix product, glibc's FMA code in ``tanh``, ``exp``, ``cos``
and ``pow`` (``GLIBC_TUNABLES``). Each variant first shows that its knob does change the bits of the
C library or of numpy on this machine, and skips where it does not (nothing would be tested).
"""
import json
import math
import os
import random
import re
import subprocess
import sys

import pytest

from minigrad import portable_math as pm

PROBE = os.path.join(os.path.dirname(__file__), "same_bits_probe.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# tests/same_bits_probe.py's output, the same on CPython 3.11, 3.13, 3.14 and PyPy, on any x86-64
PINNED = {
    "portable_math": "d1d3622bca579c3794b476b7e52c85eb24f13700573a5e352a2bd7a45940f33e",
    "pixels": "1a844ee4f33fac160886637c8ecd70f77cc53a7686605cbc74f747fb9ff8615b",
    "augment": "30dee0218657953de3386787679aeb9f47ac46be45f80ed90ff18680a0523e11",
    "gradients, fused": "3a47f93a835210b0aeb977defa47a44e6e950b4ab9db53609e0cfa0f1a63a74d",
    "gradients, op by op": "2666bac2c38cef68b25e4e8b29e751024f8bea445ac79fb7c6a0c83639897c25",
    "training, adam, cosine": "f904b074131569a1e417596402afd7f24fdf4e461cd6c52697fd63acd9fa203f",
    "evaluation, adam, cosine": "d4c4ccf426319bbef6547dd74454b6f6aee1f175a9b5e4ec80b54f8e60220c9b",
    "training, sgd, step": "207b33c9c3e4d8aa7de8f941deb86a05e9672e69a45dc66b8e15ecdbbe095237",
    "evaluation, sgd, step": "3f6da465d0463976bd81e3ac586cc6eb552cf1fa54d3113fa8873c8184928ada",
}

NON_FMA = ("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX2,-FMA")


def _environment(variable=None, value=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if variable is not None:
        env[variable] = value
    return env


def run_probe(*args, variable=None, value=None):
    done = subprocess.run([sys.executable, PROBE, *args], capture_output=True, text=True, timeout=300,
                          env=_environment(variable, value), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_same_bits(got, expected, how):
    changed = [name for name in expected if got.get(name) != expected[name]]
    assert not changed, f"{how}: other bits in {changed}"


@pytest.fixture(scope="module")
def plain():
    return run_probe()


def test_the_bits_are_the_pinned_ones(plain):
    assert_same_bits(plain, PINNED, f"{sys.implementation.name} {sys.version.split()[0]}")


def test_a_compensated_builtin_sum_changes_no_bit(plain):
    assert_same_bits(run_probe("--compensated-sum"), plain, "with a compensated builtin sum")


# what each knob changes in the C library or numpy, where it bites: a digest of its results
LIBM_BITS = ("import math, random, hashlib; rng = random.Random(0); xs = [rng.uniform(-3, 3) for _ in range(30000)];"
             "print(hashlib.sha256(repr([(math.tanh(x), math.exp(x), math.cos(x), x ** 1.7 if x > 0 else 0)"
             " for x in xs]).encode()).hexdigest())")
BLAS_BITS = ("import numpy as np, hashlib; r = np.random.RandomState(0); w = r.rand(15, 28); x = r.rand(50, 28, 28);"
             "print(hashlib.sha256((w @ x @ w.T).tobytes()).hexdigest())")


def _bits_of(code, variable=None, value=None):
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=_environment(variable, value))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("variable, value, knob_bits, baseline", [
    ("OPENBLAS_CORETYPE", "Prescott", BLAS_BITS, ("OPENBLAS_CORETYPE", "Haswell")),
    ("OPENBLAS_CORETYPE", "Haswell", BLAS_BITS, ("OPENBLAS_CORETYPE", "Prescott")),
    (*NON_FMA, LIBM_BITS, (None, None)),
], ids=["openblas-prescott", "openblas-haswell", "glibc-without-fma"])
def test_another_cpu_code_path_changes_no_bit(plain, variable, value, knob_bits, baseline):
    if _bits_of(knob_bits, variable, value) == _bits_of(knob_bits, *baseline):
        pytest.skip(f"{variable}={value} changes no bit of the C library or numpy here: nothing to test")
    assert_same_bits(run_probe(variable=variable, value=value), plain, f"with {variable}={value}")


# ---- the portable functions, against the C library ----

def ulps(got, expected):
    if got == expected or (got != got and expected != expected):
        return 0.0
    if math.isinf(got) or math.isinf(expected):
        return math.inf
    return abs(got - expected) / math.ulp(expected)


def _uniform(lo, hi):
    rng = random.Random(f"{lo}:{hi}")
    return [rng.uniform(lo, hi) for _ in range(20000)]


ACCURACY = [  # (name, portable, C library, inputs, most units in the last place apart)
    ("exp", pm.exp, math.exp, _uniform(-745.0, 709.0) + _uniform(-1.0, 1.0), 1),
    ("log", pm.log, math.log, [math.exp(x) for x in _uniform(-700.0, 700.0)] + _uniform(0.5, 2.0) + [5e-324, 1e-300],
     1),
    ("tanh", pm.tanh, math.tanh, _uniform(-25.0, 25.0) + _uniform(-1.0, 1.0) + _uniform(-1e-6, 1e-6), 2),
    ("sigmoid", pm.sigmoid, lambda x: 1.0 / (1.0 + math.exp(-x)) if x >= 0.0 else math.exp(x) / (1.0 + math.exp(x)),
     _uniform(-30.0, 30.0), 2),
    ("sin", pm.sin, math.sin, _uniform(-10.0, 10.0) + _uniform(-8e5, 8e5), 1),
    ("cos", pm.cos, math.cos, _uniform(-10.0, 10.0) + _uniform(-8e5, 8e5), 1),
    ("x ** 1.7", lambda x: pm.power(x, 1.7), lambda x: x ** 1.7, _uniform(0.0, 100.0), 1),
    ("x ** -0.3", lambda x: pm.power(x, -0.3), lambda x: x ** -0.3, _uniform(1e-3, 100.0), 1),
    ("x ** 123.456", lambda x: pm.power(x, 123.456), lambda x: x ** 123.456, _uniform(0.01, 300.0), 3),
    ("x ** 7", lambda x: pm.power(x, 7), lambda x: x ** 7, _uniform(-3.0, 3.0), 1),
    ("x ** 0.5", lambda x: pm.power(x, 0.5), math.sqrt, _uniform(0.0, 10.0), 0),
]


@pytest.mark.parametrize("name, portable, libm, inputs, most", ACCURACY, ids=[a[0] for a in ACCURACY])
def test_portable_functions_are_within_units_in_the_last_place_of_the_c_library(name, portable, libm, inputs, most):
    worst = max(inputs, key=lambda x: ulps(portable(x), libm(x)))
    assert ulps(portable(worst), libm(worst)) <= most, f"{name} at {worst!r}: {portable(worst)!r} vs {libm(worst)!r}"


SPECIAL = [  # (function, input, expected): C99's values at the edges
    (pm.exp, math.inf, math.inf), (pm.exp, -math.inf, 0.0), (pm.exp, 710.0, math.inf), (pm.exp, -746.0, 0.0),
    (pm.exp, 0.0, 1.0), (pm.log, 0.0, -math.inf), (pm.log, -1.0, math.nan), (pm.log, math.inf, math.inf),
    (pm.log, 1.0, 0.0), (pm.tanh, -0.0, -0.0), (pm.tanh, math.inf, 1.0),
    (pm.tanh, -math.inf, -1.0), (pm.tanh, 30.0, 1.0), (pm.tanh, 1e-300, 1e-300), (pm.sigmoid, -1000.0, 0.0),
    (pm.sigmoid, 1000.0, 1.0), (pm.sin, 0.0, 0.0), (pm.cos, 0.0, 1.0),
    (lambda x: pm.power(x, 3.0), -2.0, -8.0), (lambda x: pm.power(x, 1 / 3), -8.0, math.nan),
    (lambda x: pm.power(x, -1.0), -0.0, None), (lambda x: pm.power(x, 2000.0), 10.0, math.inf),
    (lambda x: pm.power(x, 0.0), math.nan, 1.0), (lambda x: pm.power(x, -2.0), math.inf, 0.0),
] + [(f, math.nan, math.nan) for f in (pm.exp, pm.log, pm.tanh, pm.sigmoid)]


@pytest.mark.parametrize("function, x, expected", SPECIAL)
def test_portable_functions_at_the_edges(function, x, expected):
    if expected is None:
        with pytest.raises(ZeroDivisionError):
            function(x)
        return
    got = function(x)
    assert got == expected or (got != got and expected != expected), f"{got!r} != {expected!r}"
    assert math.copysign(1.0, got) == math.copysign(1.0, expected) or got != got


def test_trigonometry_refuses_arguments_it_cannot_reduce_exactly():
    with pytest.raises(ValueError, match=re.escape("Expected |x| <=")):
        pm.cos(1e7)


def test_fold_sum_adds_left_to_right_where_the_builtin_compensates():
    terms = [1.0, 1e100, 1.0, -1e100] + [0.1] * 10
    total = 0.0
    for t in terms:
        total += t
    assert pm.fold_sum(terms) == total == 0.9999999999999999
    from_start = 1.5
    for t in terms:
        from_start += t
    assert pm.fold_sum(terms, 1.5) == from_start
    assert pm.fold_sum([]) == 0.0
    compensates = sum([1.0, 1e100, 1.0, -1e100]) != 0.0
    assert (pm.fold_sum is not sum) == compensates


# the main job's first 30 steps: python scripts/train_parallel.py --workers 2 --max-steps 30
MAIN_JOB_30_STEPS = "85134195f16a8a8a9205c142d6d321d1ba3c1b1c672dc3e370207f688b349c27"


def test_the_main_job_begins_with_the_pinned_bits(tmp_path):
    from helpers_parallel import run_script, sha_line
    done = run_script("train_parallel.py", "--workers", "2", "--max-steps", "30", "--quiet", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert sha_line(done.stdout) == MAIN_JOB_30_STEPS
