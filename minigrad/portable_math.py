"""Float arithmetic with the same bits on every interpreter and CPU.

Two things give other bits on another machine while the code reads the same:

- the builtin ``sum`` of floats is a plain left-to-right fold on CPython <= 3.11 and PyPy, but
  compensated (Neumaier) from CPython 3.12 on;
- the C library's ``exp``, ``log``, ``tanh``, ``sin``, ``cos`` and ``pow`` (and numpy's) pick
  code for the CPU they run on: glibc's FMA and non-FMA paths differ in the last bit for about one
  input in 3,000.

So every float reduction that reaches a parameter, a gradient, a loss or a pixel is ``fold_sum``
(a left-to-right fold, which is the builtin ``sum`` where a probe shows that ``sum`` is one), and the
functions here compute ``exp``, ``log``, ``tanh``, ``sin``, ``cos`` and ``power`` from ``+ - * /``,
``sqrt`` and the exact ``frexp``, ``ldexp``, ``abs`` and ``int``: IEEE 754 rounds each of those
correctly, so they give the same bits everywhere. The methods and coefficients are fdlibm's (Sun's
freely distributable libm: exp, log, the sin/cos kernels and their argument reduction) and Cephes'
(tanh below 0.625). Each is within one unit in the last place of glibc's, two for tanh and sigmoid
(``tests/test_same_bits.py`` measures it).
"""
import math
from functools import reduce
from operator import add

__all__ = ["fold_sum", "exp", "log", "tanh", "sigmoid", "sin", "cos", "power"]

INF = math.inf
_frexp, _ldexp, _sqrt = math.frexp, math.ldexp, math.sqrt


# ---- sums ----

def _builtin_sum_is_a_plain_fold():
    """Whether ``sum`` adds floats one after another, rounding each time (no compensation)."""
    return sum([1.0, 1e100, 1.0, -1e100]) == 0.0 and sum([0.1] * 10) == 0.9999999999999999


if _builtin_sum_is_a_plain_fold():
    fold_sum = sum
else:
    def fold_sum(iterable, start=0.0):
        """``start + x0 + x1 + ...``, left to right, each addition rounded: a plain fold."""
        return reduce(add, iterable, start)


# ---- exp and log (fdlibm's e_exp.c and e_log.c) ----

_LN2_HI = 6.93147180369123816490e-01  # ln 2's leading 32 bits: k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10  # ln 2 - _LN2_HI
_INV_LN2 = 1.44269504088896338700e+00
_EXP_MAX = 7.09782712893383973096e+02  # above: exp overflows
_EXP_MIN = -7.45133219101941108420e+02  # below: exp underflows to 0
_P1, _P2, _P3 = 1.66666666666666019037e-01, -2.77777777770155933842e-03, 6.61375632143793436117e-05
_P4, _P5 = -1.65339022054652515390e-06, 4.13813679705723846039e-08


def exp(x):
    """e ** x: x = k ln2 + r with |r| <= ln2 / 2, exp(r) from a rational approximation, times 2 ** k."""
    if not _EXP_MIN <= x <= _EXP_MAX:
        return x if x != x else INF if x > 0.0 else 0.0
    k = int(x * _INV_LN2 + (0.5 if x > 0.0 else -0.5))
    hi = x - k * _LN2_HI
    lo = k * _LN2_LO
    r = hi - lo
    t = r * r
    c = r - t * (_P1 + t * (_P2 + t * (_P3 + t * (_P4 + t * _P5))))
    return _ldexp(1.0 - ((lo - (r * c) / (2.0 - c)) - hi), k)


_LG1, _LG2, _LG3 = 6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01
_LG4, _LG5, _LG6 = 2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_SQRT_HALF = 0.7071067811865476


def _log_parts(x):
    """(k, f, s, r) for a finite x > 0: x = 2 ** k (1 + f) with sqrt(2)/2 <= 1 + f < sqrt(2) (f exact),
    s = f / (2 + f), and log(1 + f) = 2s + s * r."""
    m, k = _frexp(x)
    if m < _SQRT_HALF:
        m, k = m + m, k - 1
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    return k, f, s, z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7))) + w * (_LG2 + w * (_LG4 + w * _LG6))


def log(x):
    """The natural logarithm, from ``_log_parts``. -inf at 0, nan below."""
    if not 0.0 < x < INF:
        return -INF if x == 0.0 else x if x == INF else math.nan
    k, f, s, r = _log_parts(x)
    hfsq = 0.5 * f * f
    return k * _LN2_HI - ((hfsq - (s * (hfsq + r) + k * _LN2_LO)) - f)


# ---- tanh (Cephes' tanh.c) and sigmoid ----

_TP0, _TP1, _TP2 = -9.64399179425052238628e-01, -9.92877231001918586564e+01, -1.61468768441708447952e+03
_TQ0, _TQ1, _TQ2 = 1.12811678491632931402e+02, 2.23548839060100448583e+03, 4.84406305325125486048e+03


def tanh(x):
    """tanh x: a rational function of x * x below 0.625, else 1 - 2 / (exp(2|x|) + 1), sign restored."""
    a = abs(x)
    if a < 0.625:
        if x == 0.0:
            return x  # keeps the sign of -0.0
        z = x * x
        return x + x * z * (((_TP0 * z + _TP1) * z + _TP2) / (((z + _TQ0) * z + _TQ1) * z + _TQ2))
    if a >= 22.0:  # 1 - tanh(22) < 2 ** -62: tanh rounds to +-1
        return 1.0 if x > 0.0 else -1.0
    if a != a:
        return x
    t = 1.0 - 2.0 / (exp(a + a) + 1.0)
    return t if x > 0.0 else -t


def sigmoid(x):
    """1 / (1 + e ** -x), computed without overflow on either side."""
    if x >= 0.0:
        return 1.0 / (1.0 + exp(-x))
    e = exp(x)
    return e / (1.0 + e)


# ---- sin and cos (fdlibm's k_sin.c, k_cos.c and the medium case of e_rem_pio2.c) ----

_S1, _S2, _S3 = -1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04
_S4, _S5, _S6 = 2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10
_C1, _C2, _C3 = 4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05
_C4, _C5, _C6 = -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11
_INV_PIO2 = 6.36619772367581382433e-01
_PIO2_1, _PIO2_1T = 1.57079632673412561417e+00, 6.07710050650619224932e-11  # pi/2's first 33 bits, the rest
_PIO2_2, _PIO2_2T = 6.07710050630396597660e-11, 2.02226624879595063154e-21  # the next 33 bits, the rest
_PIO2_3, _PIO2_3T = 2.02226624871116645580e-21, 8.47842766036889956997e-32
_TRIG_MAX = 2.0 ** 19 * math.pi / 2  # the reduction below is exact up to here


def _sin_kernel(x, y):
    """sin(x + y) for |x| <= pi/4, y a tail much smaller than x."""
    z = x * x
    v = z * x
    r = _S2 + z * (_S3 + z * (_S4 + z * (_S5 + z * _S6)))
    return x - ((z * (0.5 * y - v * r) - y) - v * _S1)


def _cos_kernel(x, y):
    """cos(x + y) for |x| <= pi/4, y a tail much smaller than x."""
    z = x * x
    r = z * (_C1 + z * (_C2 + z * (_C3 + z * (_C4 + z * (_C5 + z * _C6)))))
    hz = 0.5 * z
    w = 1.0 - hz
    return w + (((1.0 - w) - hz) + (z * r - x * y))


def _reduce_pio2(x):
    """(n, y0, y1) with x = n pi/2 + y0 + y1 and |y0 + y1| <= pi/4, pi/2 carried to 118 bits."""
    if not -_TRIG_MAX <= x <= _TRIG_MAX:
        raise ValueError(f"Expected |x| <= {_TRIG_MAX} for a portable sin or cos, got {x!r}")
    n = int(x * _INV_PIO2 + (0.5 if x > 0.0 else -0.5))
    r = x - n * _PIO2_1
    for part, tail in ((_PIO2_2, _PIO2_2T), (_PIO2_3, _PIO2_3T)):  # two more rounds against cancellation
        t = r
        w = n * part
        r = t - w
        w = n * tail - ((t - r) - w)
    y0 = r - w
    return n, y0, (r - y0) - w


def _sin_quadrant(n, y0, y1):
    """sin(n pi/2 + y0 + y1) for |y0 + y1| <= pi/4."""
    n &= 3
    s = _sin_kernel(y0, y1) if n in (0, 2) else _cos_kernel(y0, y1)
    return s if n < 2 else -s


def sin(x):
    """sin x, for |x| <= 2 ** 19 pi/2."""
    return _sin_quadrant(*_reduce_pio2(x))


def cos(x):
    """cos x = sin(x + pi/2), for |x| <= 2 ** 19 pi/2."""
    n, y0, y1 = _reduce_pio2(x)
    return _sin_quadrant(n + 1, y0, y1)


# ---- powers ----

_SPLIT = 134217729.0  # 2 ** 27 + 1: splits a double into two halves whose products are exact


def _two_product(a, b):
    """(p, e) with p = fl(a * b) and p + e = a * b exactly (Dekker)."""
    p = a * b
    t = _SPLIT * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLIT * b
    bh = t - (t - b)
    bl = b - bh
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _two_sum(a, b):
    """(s, e) with s = fl(a + b) and s + e = a + b exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _log_double(x):
    """log x for a finite x > 0 as an unevaluated sum hi + lo, to about 2 ** -57 relative."""
    k, f, s, r = _log_parts(x)
    d = 2.0 + f
    d_lo = f - (d - 2.0)  # d + d_lo = 2 + f exactly
    p, e = _two_product(s, d)
    s_lo = (((f - p) - e) - s * d_lo) / d  # s + s_lo = f / (2 + f) to twice the precision
    hi, lo = _two_sum(k * _LN2_HI, s + s)  # k * _LN2_HI is exact
    return _two_sum(hi, lo + (s_lo + s_lo + s * r + k * _LN2_LO))


def power(x, p):
    """x ** p for floats, the same bits everywhere; C99's values at zeros, infinities and nans.

    p = 1, 2, 3 and their negatives as torch computes them (x * x, x * x * x, 1 / (x * x), ...),
    p = +-0.5 by ``sqrt``, the rest as exp(p log x) with log x carried to twice the precision: within
    one unit in the last place while |p log x| < 16, within three up to overflow. A negative x with a
    fractional p gives nan; ``0.0 ** -1`` raises ZeroDivisionError, as Python's ``**`` does.
    """
    if p == 2.0:
        return x * x
    if x != x or p != p or x == 0.0 or x in (INF, -INF) or p in (INF, -INF) or p == 0.0 or x == 1.0:
        return x ** p  # exactly 0, 1, +-inf or nan on every C library (C99 Annex F)
    integral = p == int(p)
    if x < 0.0:
        if not integral:
            return math.nan
        r = power(-x, p)
        return -r if int(p) & 1 else r
    if integral and abs(p) <= 3.0:
        r = x if abs(p) == 1.0 else x * x if abs(p) == 2.0 else x * x * x
        return r if p > 0.0 else 1.0 / r
    if p == 0.5:
        return _sqrt(x)
    if p == -0.5:
        return 1.0 / _sqrt(x)
    hi, lo = _log_double(x)
    y, y_lo = _two_product(p, hi)
    y_lo += p * lo
    if y > _EXP_MAX:
        return INF
    e = exp(y)
    return e + e * y_lo
