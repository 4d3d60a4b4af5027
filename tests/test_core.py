"""The engine against PyTorch (float64) and against central differences.

Every op is run on a table of inputs in minigrad and in torch; forward values and the
gradients of every Value reached (with ``retain_grad`` on torch's intermediates) must agree
to a relative 1e-9. nan and infinities must match exactly: undefined math follows torch.
The gradcheck tests at the end need no torch, so they are what PyPy runs.
"""
import math
import os
import random
import subprocess
import sys
import warnings

import pytest
from conftest import assert_all_close, assert_close

import minigrad
from minigrad import GradFunction, Value, no_grad, value_max, value_sum, weighted_sum
from minigrad.gradcheck import GradcheckError, gradcheck

UPSTREAM = 1.7  # d(loss)/d(out): not 1, so a dropped factor shows


def as_tensors(torch, floats):
    return [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in floats]


def minigrad_run(fn, args):
    """``fn`` on fresh leaves, backward from ``out * UPSTREAM``: (out value, out grad, leaf grads)."""
    leaves = [Value(a) for a in args]
    out = fn(*leaves)
    (out * UPSTREAM).backward()
    return out.v, out.grad, [x.grad for x in leaves]


def torch_run(torch, fn, args):
    leaves = as_tensors(torch, args)
    out = fn(*leaves)
    out.retain_grad()
    (out * UPSTREAM).backward()
    return out.item(), out.grad.item(), [x.grad.item() for x in leaves]


def assert_runs_match(got, expected):
    (v, g, leaf_grads), (tv, tg, t_leaf_grads) = got, expected
    assert_close(v, tv, "value")
    assert_close(g, tg, "output grad")
    assert_all_close(leaf_grads, t_leaf_grads, "leaf grads")


# ---- 1. every op on a table of inputs ----

# negatives, both zeros, tiny, large, and exp's overflow point
VALUES = [-1e3, -30.0, -3.5, -1.0, -1e-8, -0.0, 0.0, 1e-300, 1e-8, 0.5, 1.0, 2.0, 30.0, 1e3]

UNARY = {
    "neg": lambda x: -x,
    "abs": lambda x: abs(x),
    "abs_method": lambda x: x.abs(),
    "relu": lambda x: x.relu(),
    "tanh": lambda x: x.tanh(),
    "sigmoid": lambda x: x.sigmoid(),
    "exp": lambda x: x.exp(),
    "log": lambda x: x.log(),
    "square": lambda x: x ** 2,
    "cube": lambda x: x ** 3,
    "sqrt": lambda x: x ** 0.5,
    "cbrt": lambda x: x ** (1 / 3),
    "reciprocal": lambda x: x ** -1,
    "inverse_square": lambda x: x ** -2,
    "pow_zero": lambda x: x ** 0,
    "pow_one_and_half": lambda x: x ** 1.5,
    "add_const": lambda x: x + 3.0,
    "radd_const": lambda x: 3.0 + x,
    "add_int": lambda x: x + 2,
    "sub_const": lambda x: x - 3.0,
    "rsub_const": lambda x: 3.0 - x,
    "mul_const": lambda x: x * -2.5,
    "rmul_const": lambda x: -2.5 * x,
    "div_const": lambda x: x / 3.0,
    "div_zero": lambda x: x / 0.0,
    "rdiv_const": lambda x: 3.0 / x,
    "rdiv_zero": lambda x: 0.0 / x,
    "rpow_two": lambda x: 2.0 ** x,
    "rpow_half": lambda x: 0.5 ** x,
}


# minigrad's ``c / x`` is ``Value(c) / x``; torch computes ``c / tensor`` as ``c * x.reciprocal()``,
# whose gradient at x = 1e-300 is ``0 * -inf = nan``. The reference is torch's tensor division.
TORCH_UNARY = {
    "rdiv_const": lambda torch, x: torch.tensor(3.0, dtype=torch.float64) / x,
    "rdiv_zero": lambda torch, x: torch.tensor(0.0, dtype=torch.float64) / x,
}


def _is_negative_zero(x):
    return x == 0.0 and math.copysign(1.0, x) < 0


# torch computes x ** -0.5 as rsqrt(x) = 1 / sqrt(x), which is -inf at x = -0.0 where IEEE 754 pow
# (C, Python, minigrad) gives +inf. Those cases are checked by hand in test_pow_of_negative_zero.
UNARY_CASES = [(name, x) for name in sorted(UNARY) for x in VALUES
               if not (name == "sqrt" and _is_negative_zero(x))]


@pytest.mark.parametrize("name,x", UNARY_CASES)
def test_unary_op_matches_torch(torch, name, x):
    fn = UNARY[name]
    t_fn = TORCH_UNARY.get(name, lambda torch, t: fn(t))
    assert_runs_match(minigrad_run(fn, [x]), torch_run(torch, lambda t: t_fn(torch, t), [x]))


PAIRS = [(a, b) for a in [-2.5, -1.0, -0.0, 0.0, 1e-300, 0.5, 2.0, 30.0]
         for b in [-2.0, -0.5, 0.0, 1e-8, 0.5, 1.0, 3.0, 30.0]]
POW_PAIRS = [(a, b) for a, b in PAIRS if not (_is_negative_zero(a) and b == -0.5)]  # torch's rsqrt

BINARY = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y,
}


@pytest.mark.parametrize("a,b", PAIRS)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_op_matches_torch(torch, name, a, b):
    fn = BINARY[name]
    assert_runs_match(minigrad_run(fn, [a, b]), torch_run(torch, fn, [a, b]))


def exponent_gradient_undefined(base, exponent):
    """Where d(base ** p)/dp = base ** p * log(base) has no value (torch says nan)."""
    return base < 0 or (base == 0 and exponent < 0)


@pytest.mark.parametrize("a,b", POW_PAIRS)
def test_value_exponent_matches_torch(torch, a, b):
    def fn(x, y):
        return x ** y

    if not exponent_gradient_undefined(a, b):
        assert_runs_match(minigrad_run(fn, [a, b]), torch_run(torch, fn, [a, b]))
        return
    # the forward still works and agrees with torch; only the backward refuses
    x, y = Value(a), Value(b)
    out = x ** y
    assert_close(out.v, torch.tensor(a, dtype=torch.float64) ** b, "value")
    with pytest.raises(ValueError, match="positive base"):
        out.backward()


def test_pow_of_negative_zero():
    x = Value(-0.0)
    out = x ** 0.5
    out.backward()
    assert out.v == 0.0 and x.grad == math.inf  # 0.5 * (-0.0) ** -0.5 = 0.5 * +inf
    out = x ** Value(-0.5)
    assert out.v == math.inf
    with pytest.raises(ValueError):
        out.backward()


@pytest.mark.parametrize("base", [2.0, 0.5, 0.0, -2.0])
@pytest.mark.parametrize("x", [-2.0, -1.0, -0.0, 0.0, 0.5, 3.0])
def test_number_base_value_exponent(torch, base, x):
    def fn(t):
        return base ** t

    if not exponent_gradient_undefined(base, x):
        assert_runs_match(minigrad_run(fn, [x]), torch_run(torch, fn, [x]))
        return
    out = fn(Value(x))
    assert_close(out.v, fn(torch.tensor(x, dtype=torch.float64)), "value")
    with pytest.raises(ValueError):
        out.backward()


def test_zero_base_value_exponent_has_zero_exponent_grad(torch):
    for p in [0.0, 0.5, 2.0, 3.0]:
        got = minigrad_run(lambda x, y: x ** y, [0.0, p])
        assert got[2][1] == 0.0, f"d(0 ** p)/dp at p={p}: {got[2][1]!r}"
        assert_runs_match(got, torch_run(torch, lambda x, y: x ** y, [0.0, p]))


UNDEFINED = [
    # (fn, x, value, gradient): IEEE 754 results, as torch gives them (checked in the tables above)
    (lambda x: x.log(), 0.0, -math.inf, math.inf),
    (lambda x: x.log(), -1.0, math.nan, -1.0),
    (lambda x: 1.0 / x, 0.0, math.inf, -math.inf),
    (lambda x: x / 0.0, 0.0, math.nan, math.inf),
    (lambda x: x / x, 0.0, math.nan, math.nan),
    (lambda x: x.exp(), 1000.0, math.inf, math.inf),
    (lambda x: x ** (1 / 3), -8.0, math.nan, math.nan),
]


@pytest.mark.parametrize("fn,x,value,gradient", UNDEFINED)
def test_undefined_math_gives_ieee_results(fn, x, value, gradient):
    leaf = Value(x)
    out = fn(leaf)
    out.backward()
    assert_close(out.v, value, "value")
    assert_close(leaf.grad, gradient, "gradient")


def test_undefined_math_values():
    assert Value(0.0).log().v == -math.inf
    assert math.isnan(Value(-1.0).log().v)
    assert (Value(1.0) / Value(0.0)).v == math.inf
    assert (Value(-1.0) / Value(0.0)).v == -math.inf
    assert math.isnan((Value(0.0) / Value(0.0)).v)
    assert Value(1000.0).exp().v == math.inf
    assert Value(-1000.0).exp().v == 0.0
    assert math.isnan((Value(-8.0) ** (1 / 3)).v)


@pytest.mark.parametrize("x", [-3.0, -0.5, 2.0])
def test_integer_powers_of_negative_numbers(torch, x):
    for p in [2, 3, 2.0, 3.0, -1, -2]:
        def fn(t, p=p):
            return t ** p

        got = minigrad_run(fn, [x])
        assert not math.isnan(got[0]) and not math.isnan(got[2][0]), f"x={x} p={p}"
        assert_runs_match(got, torch_run(torch, fn, [x]))


def test_kinks_follow_torch(torch):
    assert minigrad_run(lambda x: x.relu(), [0.0])[2] == [0.0]
    assert minigrad_run(lambda x: abs(x), [0.0])[2] == [0.0]
    assert torch_run(torch, lambda x: x.relu(), [0.0])[2] == [0.0]
    assert torch_run(torch, lambda x: abs(x), [0.0])[2] == [0.0]


# ---- n-ary ops ----

SUM_CASES = [
    [1.0, 2.0, 3.0],
    [-30.0, 1e-300, 30.0, 0.5],
    [1e3, -1e3, 1e-8],
    [0.0],
    [2.5, 4, -1.5, 0.25, 7.0],  # numbers mixed in: folded into the constant
]


@pytest.mark.parametrize("xs", SUM_CASES)
def test_value_sum_matches_torch(torch, xs):
    # even positions are Values, odd positions plain numbers
    def mg(*leaves):
        it = iter(leaves)
        return value_sum([next(it) if i % 2 == 0 else c for i, c in enumerate(xs)])

    def tt(*leaves):
        return torch.stack(list(leaves)).sum() + sum(c for i, c in enumerate(xs) if i % 2)

    args = [c for i, c in enumerate(xs) if i % 2 == 0]
    assert_runs_match(minigrad_run(mg, args), torch_run(torch, tt, args))


MAX_CASES = [
    [1.0, 3.0, 2.0],
    [1.0, 3.0, 3.0, 2.0],      # tie: the first maximum gets the gradient
    [-1.0, -1.0],
    [0.0, -0.0],
    [-1e3, -30.0, -1e-300],
    [5.0],
    [1.0, math.nan, 2.0, math.nan],  # nan wins, the first one
]


@pytest.mark.parametrize("xs", MAX_CASES)
def test_value_max_matches_torch(torch, xs):
    got = minigrad_run(lambda *leaves: value_max(list(leaves)), xs)
    expected = torch_run(torch, lambda *leaves: torch.stack(list(leaves)).max(dim=0)[0], xs)
    assert_runs_match(got, expected)


def test_value_max_of_nothing_raises():
    with pytest.raises(ValueError):
        value_max([])


SOFTMAX_CASES = [
    [1.0, 2.0, 3.0],
    [1000.0, -1000.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
    [30.0, -30.0, 1.0, 2.0, -0.5],
    [1e-300, -1e-300],
    [7.0],
]
SOFTMAX_WEIGHTS = [0.3, -1.2, 2.0, 0.7, -0.1]  # loss = sum(w * out), so the gradient is not 0


@pytest.mark.parametrize("xs", SOFTMAX_CASES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_matches_torch(torch, name, xs):
    w = SOFTMAX_WEIGHTS[:len(xs)]
    leaves = [Value(x) for x in xs]
    outs = getattr(minigrad, name)(leaves)
    value_sum([o * c for o, c in zip(outs, w)]).backward()

    t = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    t_out = getattr(torch, name)(t, dim=0)
    (t_out * torch.tensor(w, dtype=torch.float64)).sum().backward()

    assert_all_close([o.v for o in outs], t_out.tolist(), "outputs")
    assert all(math.isfinite(o.v) for o in outs) or name == "log_softmax"
    assert_all_close([x.grad for x in leaves], t.grad.tolist(), "input grads")


# ---- 2. the README example ----

def test_readme_example_matches_torch(torch):
    a = Value(1.0)
    b = a * 2
    c = (b - 3) / (a + 1.5).relu() + 5
    d = a - (b - 7.1).abs() + c ** 2
    d.backward()

    ta = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    tb = ta * 2
    tc = (tb - 3) / (ta + 1.5).relu() + 5
    td = ta - (tb - 7.1).abs() + tc ** 2
    for t in (tb, tc, td):
        t.retain_grad()
    td.backward()

    for name, got, ref in [("a", a, ta), ("b", b, tb), ("c", c, tc), ("d", d, td)]:
        assert_close(got.v, ref.item(), f"{name}.v")
        assert_close(got.grad, ref.grad.item(), f"{name}.grad")
    assert d.grad == 1.0 and a.grad != 0.0


# ---- 3. random composite graphs ----

def _ok(v, limit=1e3):
    return math.isfinite(v) and abs(v) < limit


# name -> (arity, minigrad fn, torch fn or None when the same code works, domain check on payloads)
RANDOM_OPS = {
    "add": (2, lambda x, y: x + y, None, lambda x, y: True),
    "sub": (2, lambda x, y: x - y, None, lambda x, y: True),
    "mul": (2, lambda x, y: x * y, None, lambda x, y: True),
    "div": (2, lambda x, y: x / y, None, lambda x, y: abs(y) > 0.2),
    "pow": (2, lambda x, y: x ** y, None, lambda x, y: x > 0.2 and abs(y) < 3),
    "neg": (1, lambda x: -x, None, lambda x: True),
    "abs": (1, lambda x: abs(x), None, lambda x: abs(x) > 1e-3),
    "relu": (1, lambda x: x.relu(), None, lambda x: abs(x) > 1e-3),
    "tanh": (1, lambda x: x.tanh(), None, lambda x: True),
    "sigmoid": (1, lambda x: x.sigmoid(), None, lambda x: True),
    "exp": (1, lambda x: x.exp(), None, lambda x: x < 5),
    "log": (1, lambda x: x.log(), None, lambda x: x > 0.2),
    "square": (1, lambda x: x ** 2, None, lambda x: True),
    "cube": (1, lambda x: x ** 3, None, lambda x: True),
    "sqrt": (1, lambda x: x ** 0.5, None, lambda x: x > 0.2),
    "reciprocal": (1, lambda x: x ** -1, None, lambda x: abs(x) > 0.2),
    "add_const": (1, lambda x: x + 1.25, None, lambda x: True),
    "rsub_const": (1, lambda x: 0.75 - x, None, lambda x: True),
    "mul_const": (1, lambda x: x * -1.5, None, lambda x: True),
    "rdiv_const": (1, lambda x: 2.0 / x, None, lambda x: abs(x) > 0.2),
    "rpow_const": (1, lambda x: 1.5 ** x, None, lambda x: abs(x) < 5),
    "sum3": (3, lambda *xs: value_sum(xs), "sum", lambda *xs: True),
    "max3": (3, lambda *xs: value_max(xs), "max",
             lambda *xs: min(abs(a - b) for i, a in enumerate(xs) for b in xs[i + 1:]) > 1e-6),
}
RANDOM_OP_NAMES = sorted(RANDOM_OPS)


def _pick(rng, n_nodes):
    """A node index: mostly a recent node, for depth; sometimes any, for fan-out."""
    if rng.random() < 0.7:
        return max(0, n_nodes - 1 - int(rng.expovariate(0.4)))
    return rng.randrange(n_nodes)


def random_program(seed):
    """Leaf values and a list of ``(op, operand indices)``; node i >= n_leaves is op i - n_leaves."""
    rng = random.Random(seed)
    leaves = [rng.uniform(-2.0, 2.0) for _ in range(rng.randint(3, 6))]
    payloads = list(leaves)
    program = []
    n_ops = rng.randint(20, 60)
    while len(program) < n_ops:
        name = rng.choice(RANDOM_OP_NAMES)
        arity, fn, _, domain = RANDOM_OPS[name]
        args = [_pick(rng, len(payloads)) for _ in range(arity)]
        xs = [payloads[i] for i in args]
        if not domain(*xs):
            continue
        with no_grad():
            v = fn(*[Value(x) for x in xs]).v
        if not _ok(v):
            continue
        program.append((name, args))
        payloads.append(v)
    return leaves, program


def _consumed(n_nodes, program):
    used = [False] * n_nodes
    for _, args in program:
        for i in args:
            used[i] = True
    return used


def _sum_of_unconsumed(nodes, program):
    """The root: every node no op consumed, added up (works for Values and tensors alike)."""
    root = nodes[0] * 0.0
    for node, used in zip(nodes, _consumed(len(nodes), program)):
        if not used:
            root = root + node
    return root


def run_program_minigrad(leaves, program, requires=None):
    nodes = [Value(x, requires_grad=r) for x, r in zip(leaves, requires or [True] * len(leaves))]
    for name, args in program:
        nodes.append(RANDOM_OPS[name][1](*[nodes[i] for i in args]))
    root = _sum_of_unconsumed(nodes, program)
    root.backward()
    return nodes, root


def run_program_torch(torch, leaves, program, requires=None):
    nodes = [torch.tensor(x, dtype=torch.float64, requires_grad=r)
             for x, r in zip(leaves, requires or [True] * len(leaves))]
    for name, args in program:
        _, fn, special, _ = RANDOM_OPS[name]
        xs = [nodes[i] for i in args]
        if special == "sum":
            out = torch.stack(xs).sum()
        elif special == "max":
            out = torch.stack(xs).max(dim=0)[0]
        else:
            out = fn(*xs)
        if out.requires_grad:
            out.retain_grad()
        nodes.append(out)
    root = _sum_of_unconsumed(nodes, program)
    root.backward()
    return nodes, root


@pytest.mark.parametrize("seed", range(60))
def test_random_graph_matches_torch(torch, seed):
    leaves, program = random_program(seed)
    nodes, root = run_program_minigrad(leaves, program)
    t_nodes, t_root = run_program_torch(torch, leaves, program)
    assert_close(root.v, t_root.item(), "root")
    for i, (node, t) in enumerate(zip(nodes, t_nodes)):
        what = f"node {i} ({'leaf' if i < len(leaves) else program[i - len(leaves)][0]})"
        assert_close(node.v, t.item(), what + " value")
        assert_close(node.grad, t.grad.item(), what + " grad")


@pytest.mark.parametrize("seed", range(40))
def test_random_graph_with_constants_matches_torch(torch, seed):
    leaves, program = random_program(seed)
    rng = random.Random(1000 + seed)
    requires = [rng.random() < 0.5 for _ in leaves]
    requires[rng.randrange(len(leaves))] = True
    nodes, root = run_program_minigrad(leaves, program, requires)
    t_nodes, t_root = run_program_torch(torch, leaves, program, requires)
    assert_close(root.v, t_root.item(), "root")
    for i, (node, t) in enumerate(zip(nodes, t_nodes)):
        what = f"node {i} ({'leaf' if i < len(leaves) else program[i - len(leaves)][0]})"
        assert node.requires_grad == t.requires_grad, what + " requires_grad"
        assert_close(node.v, t.item(), what + " value")
        if t.requires_grad:
            assert_close(node.grad, t.grad.item(), what + " grad")
        else:
            assert node.grad is None and node.grad_fn is None, what + " is a constant"


def test_constants_build_no_graph_and_get_no_gradient():
    c, x = Value(3.0, requires_grad=False), Value(2.0)
    assert not c.requires_grad and c.grad is None and x.requires_grad
    only_constants = (c * 2.0 + c.tanh()) / c ** 2 - value_sum([c, 1.0]) + value_max([c, c.exp()]).log().abs()
    assert only_constants.grad_fn is None and not only_constants.requires_grad
    y = x * c + c / x + x ** c
    y.backward()
    assert c.grad is None
    assert_close(x.grad, 3.0 - 3.0 / 4.0 + 3.0 * 4.0, "x.grad")
    with pytest.raises(ValueError, match=r"Expected outputs that require grad, got 1 constant\(s\)"):
        only_constants.backward()
    with pytest.raises(ValueError, match="Expected inputs that require grad, got a constant at index 1"):
        minigrad.grad(y, [x, c])
    with pytest.raises(ValueError, match="Expected a leaf Value"):
        y.requires_grad = False
    x.requires_grad = False
    assert x.grad is None and (x * 2.0).grad_fn is None
    x.requires_grad = True
    assert x.grad == 0.0
    image = minigrad.as_value_array([[0.5, 1.0], [2.0, -1.0]], requires_grad=False)
    assert all(v.grad is None for v in minigrad.flatten(image))


def test_second_derivative_through_constants_matches_torch(torch):
    def f(x, c):
        return (x * c).tanh() * c + x ** c + c / x

    x, c = Value(0.7), Value(1.3, requires_grad=False)
    d1 = minigrad.grad(f(x, c), x, create_graph=True)
    d2 = minigrad.grad(d1, x)
    assert c.grad is None
    tx = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    tc = torch.tensor(1.3, dtype=torch.float64)
    (t1,) = torch.autograd.grad(f(tx, tc), tx, create_graph=True)
    (t2,) = torch.autograd.grad(t1, tx)
    assert_close(d1.v, t1.item(), "first derivative")
    assert_close(d2, t2.item(), "second derivative")


def test_random_programs_are_big_enough():
    sizes = [random_program(seed) for seed in range(60)]
    assert all(3 <= len(leaves) <= 6 and 20 <= len(program) <= 60 for leaves, program in sizes)
    used_ops = {name for _, program in sizes for name, _ in program}
    assert used_ops == set(RANDOM_OPS), f"never generated: {sorted(set(RANDOM_OPS) - used_ops)}"


# ---- 4. engine behaviour ----

def test_leaves_accumulate_across_graphs(torch):
    x = Value(0.7)
    (x * x).backward()
    (x.tanh() * 3.0).backward()

    tx = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    (tx * tx).backward()
    (tx.tanh() * 3.0).backward()
    assert_close(x.grad, tx.grad.item(), "accumulated grad")
    assert_close(x.grad, 2 * 0.7 + 3.0 * (1 - math.tanh(0.7) ** 2), "by hand")


def test_second_backward_through_the_same_graph(torch):
    """Leaves get the same gradient added again; a non-leaf holds the latest pass only."""
    x, y = Value(1.5), Value(-0.5)
    h = x * y + x.exp()
    out = h.tanh() * h
    out.backward()
    first = (x.grad, y.grad, h.grad, out.grad)
    out.backward()

    tx, ty = as_tensors(torch, [1.5, -0.5])
    th = tx * ty + tx.exp()
    th.retain_grad()
    t_out = th.tanh() * th
    t_out.backward(retain_graph=True)
    t_h_first = th.grad.item()
    t_out.backward()

    assert_close(x.grad, 2 * first[0], "x.grad after two passes")
    assert_close(y.grad, 2 * first[1], "y.grad after two passes")
    assert_close(x.grad, tx.grad.item(), "x.grad after two passes")
    assert_close(y.grad, ty.grad.item(), "y.grad after two passes")
    # torch accumulates into retained non-leaf grads too; minigrad restarts them each pass
    assert h.grad == first[2] and out.grad == first[3] == 1.0
    assert_close(h.grad, t_h_first, "h.grad")
    assert_close(th.grad.item(), 2 * t_h_first, "torch's h.grad (documents the difference)")


def _chain_backward(n):
    x = Value(1.0)
    y = x
    for _ in range(n):
        y = y * 1.0000001
    y.backward()
    return x, y


def test_deep_chain_beyond_recursion_limit():
    x, y = _chain_backward(50_000)
    # the backward multiplies by the same constant in the same order as the forward
    assert x.grad == y.v
    assert_close(x.grad, 1.0000001 ** 50_000, rtol=1e-10)


@pytest.mark.slow
def test_chain_of_a_million_ops():
    limit = sys.getrecursionlimit()
    x, y = _chain_backward(1_000_000)
    assert sys.getrecursionlimit() == limit
    assert x.grad == y.v
    assert_close(x.grad, 1.0000001 ** 1_000_000, rtol=1e-9)


def test_gradients_are_identical_across_runs():
    def grads(seed):
        leaves, program = random_program(seed)
        nodes, _ = run_program_minigrad(leaves, program)
        return [repr(n.grad) for n in nodes]

    for seed in range(5):
        assert grads(seed) == grads(seed)


HASHSEED_SCRIPT = r"""
import random
import minigrad
from minigrad import nn, Value
model = nn.Sequential(nn.Conv2D(6, 6, 3, 1, 2, 3, "tanh", seed=1), nn.MaxPool2D(2), nn.Flatten(),
                      nn.Linear(12, 4, "sigmoid", seed=2))
rng = random.Random(3)
x = [[[Value(rng.uniform(-1, 1)) for _ in range(6)] for _ in range(6)] for _ in range(2)]
loss = minigrad.mse_loss(model(x), [1.0, -1.0, 0.5, 0.0])
loss = loss + minigrad.cross_entropy(model(x), 2) * 0.5
loss.backward()
print(repr(loss.v))
print(repr([p.grad for p in model.parameters()]))
print(repr([v.grad for v in minigrad.flatten(x)]))
"""


def test_gradients_do_not_depend_on_hash_seed():
    outputs = []
    for hash_seed in ["0", "12345"]:
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run([sys.executable, "-c", HASHSEED_SCRIPT], env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    param_grads = [float(g) for g in outputs[0].splitlines()[1].strip("[]").split(", ")]
    assert len(param_grads) == 2 * 3 * 3 * 3 + 3 + 12 * 4 + 4 and any(param_grads)


def test_no_grad_builds_no_graph():
    x, y = Value(2.0), Value(3.0)
    with no_grad():
        outs = [x * y, x + 1, -x, x / y, x ** y, x ** 2, 2 ** x, abs(x), x.relu(), x.tanh(), x.sigmoid(),
                x.exp(), x.log(), value_sum([x, y]), value_max([x, y]), weighted_sum([x], [y], x)]
        outs += minigrad.softmax([x, y]) + minigrad.log_softmax([x, y])
        assert not minigrad.is_grad_enabled()
    assert minigrad.is_grad_enabled()
    assert all(o.grad_fn is None for o in outs)
    assert (x * y).grad_fn is not None
    assert [o.v for o in outs[:2]] == [6.0, 3.0]


def test_no_grad_nests_restores_and_decorates():
    x = Value(1.0)
    with no_grad():
        with no_grad():
            assert (x * 2).grad_fn is None
        assert (x * 2).grad_fn is None
        with minigrad.enable_grad():
            assert (x * 2).grad_fn is not None
        assert (x * 2).grad_fn is None
    assert (x * 2).grad_fn is not None

    with pytest.raises(RuntimeError), no_grad():
        raise RuntimeError("boom")
    assert minigrad.is_grad_enabled()

    @no_grad()
    def double(v):
        """Doubles."""
        return v * 2

    assert double(x).grad_fn is None and double(x).v == 2.0
    assert double.__name__ == "double" and double.__doc__ == "Doubles."
    assert minigrad.is_grad_enabled() and (x * 2).grad_fn is not None


@pytest.mark.parametrize("bad,type_name", [("x", "str"), (None, "NoneType"), ([1], "list"),
                                           (1j, "complex"), ({}, "dict")])
def test_value_rejects_non_numbers(bad, type_name):
    with pytest.raises(TypeError, match=type_name):
        Value(bad)


@pytest.mark.parametrize("op", [
    lambda: Value(1.0) + "a",
    lambda: "a" + Value(1.0),
    lambda: Value(1.0) * None,
    lambda: Value(1.0) - [1],
    lambda: Value(1.0) / "2",
    lambda: Value(1.0) ** "2",
    lambda: "2" ** Value(1.0),
    lambda: value_sum([Value(1.0), "a"]),
])
def test_operations_with_non_numbers_raise_type_error(op):
    with pytest.raises(TypeError):
        op()


def test_numpy_scalars_on_either_side(torch):
    np = pytest.importorskip("numpy")
    x = Value(3.0)
    outs = [np.float64(2) * x, x * np.float64(2), np.int64(2) + x, x - np.float32(0.5),
            np.float64(6) / x, x / np.int32(4), np.float64(2) ** x, x ** np.int64(2)]
    expected = [6.0, 6.0, 5.0, 2.5, 2.0, 0.75, 8.0, 9.0]
    for out, e in zip(outs, expected):
        assert isinstance(out, Value), type(out)
        assert_close(out.v, e, "numpy scalar op")
    value_sum(outs).backward()
    tx = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    (2 * tx + tx * 2 + (2 + tx) + (tx - 0.5) + 6 / tx + tx / 4 + 2 ** tx + tx ** 2).backward()
    assert_close(x.grad, tx.grad.item(), "x.grad")
    assert Value(np.float64(2.5)).v == 2.5 and Value(np.int64(7)).v == 7.0


def test_numpy_scalar_payloads_are_plain_floats():
    np = pytest.importorskip("numpy")
    assert type(Value(np.float64(2.5)).v) is float
    assert type((np.float64(2.0) * Value(3.0)).v) is float
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # IEEE results, silently, as for plain floats
        assert (Value(1.0) / Value(np.float64(0.0))).v == math.inf
        assert math.isnan((Value(np.float64(-8.0)) ** (1 / 3)).v)


def test_grad_leaves_dot_grad_untouched(torch):
    x, y = Value(0.3), Value(-1.2)
    x.grad, y.grad = 5.0, -7.0
    h = x * y
    h.grad = 11.0
    out = (h.sigmoid() + y.exp()) * x
    gx, gy = minigrad.grad(out, [x, y])
    assert (x.grad, y.grad, h.grad, out.grad) == (5.0, -7.0, 11.0, 0.0)

    tx, ty = as_tensors(torch, [0.3, -1.2])
    t_out = ((tx * ty).sigmoid() + ty.exp()) * tx
    tgx, tgy = torch.autograd.grad(t_out, [tx, ty])
    assert_close(gx, tgx.item(), "dx")
    assert_close(gy, tgy.item(), "dy")
    assert minigrad.grad(out, x) == gx
    assert_close(minigrad.grad(out, x, grad_outputs=[2.0]), 2 * gx, "with grad_outputs")


def test_grad_with_create_graph_gives_second_derivatives(torch):
    x, y = Value(0.4), Value(1.3)
    out = (x * y).tanh() * x.exp() + (x / y) ** 2
    gx, gy = minigrad.grad(out, [x, y], create_graph=True)
    gxx, gxy = minigrad.grad(gx, [x, y])

    tx, ty = as_tensors(torch, [0.4, 1.3])
    t_out = (tx * ty).tanh() * tx.exp() + (tx / ty) ** 2
    tgx, tgy = torch.autograd.grad(t_out, [tx, ty], create_graph=True)
    tgxx, tgxy = torch.autograd.grad(tgx, [tx, ty])
    assert_all_close([gx.v, gy.v, gxx, gxy], [tgx.item(), tgy.item(), tgxx.item(), tgxy.item()], "grads")


def test_backward_of_several_roots(torch):
    x, y = Value(0.8), Value(-0.3)
    r1, r2 = x * y + y.sigmoid(), (x - y).tanh() * x
    minigrad.backward([r1, r2], [2.0, -0.5])

    tx, ty = as_tensors(torch, [0.8, -0.3])
    tr1, tr2 = tx * ty + ty.sigmoid(), (tx - ty).tanh() * tx
    torch.autograd.backward([tr1, tr2], [torch.tensor(2.0, dtype=torch.float64),
                                         torch.tensor(-0.5, dtype=torch.float64)])
    assert_close(x.grad, tx.grad.item(), "x.grad")
    assert_close(y.grad, ty.grad.item(), "y.grad")
    with pytest.raises(ValueError):
        minigrad.backward([r1, r2], [1.0])


# second derivatives through every op's gradient_graph
HESSIAN_CASES = {
    "mul_div": (lambda x, y: x * y / (y + 3.0), [0.7, -1.1]),
    "pow_value": (lambda x, y: x ** y, [1.7, 2.3]),
    "pow_const": (lambda x, y: x ** 3 + y ** -2 + x ** 0.5, [1.2, 0.9]),
    "rpow": (lambda x, y: 2.0 ** (x * y), [0.4, -1.5]),
    "tanh_sigmoid": (lambda x, y: (x * y).tanh() + (x - y).sigmoid(), [0.3, 0.8]),
    "exp_log": (lambda x, y: (x * y).exp() + (x + y * y).log(), [0.5, 1.5]),
    "abs_relu_neg": (lambda x, y: abs(x * y) * (x - y).relu() - (-x) * y, [-1.2, -2.0]),
}


@pytest.mark.parametrize("name", sorted(HESSIAN_CASES))
def test_hessian_matches_torch(torch, name):
    fn, point = HESSIAN_CASES[name]
    got = minigrad.hessian(fn, point)
    expected = torch.autograd.functional.hessian(
        fn, tuple(torch.tensor(p, dtype=torch.float64) for p in point))
    for i in range(len(point)):
        assert_all_close(got[i], [expected[i][j].item() for j in range(len(point))], f"{name} row {i}")


def test_hessian_through_nary_nodes(torch):
    def fn(x, y, z):
        return value_sum([x * y, z ** 2]) * value_max([x, y * z]) + weighted_sum([x, y], [y, z], z) ** 2

    def t_fn(x, y, z):
        return (x * y + z ** 2) * torch.maximum(x, y * z) + (z + x * y + y * z) ** 2

    point = [0.6, -1.4, 0.9]
    got = minigrad.hessian(fn, point)
    expected = torch.autograd.functional.hessian(
        t_fn, tuple(torch.tensor(p, dtype=torch.float64) for p in point))
    for i in range(3):
        assert_all_close(got[i], [expected[i][j].item() for j in range(3)], f"row {i}")


# ---- 5. the fused weighted sum ----

def _op_by_op(weights, inputs, bias):
    s = bias
    for w, x in zip(weights, inputs):
        s = s + w * x
    return s


@pytest.mark.parametrize("n", [1, 2, 7, 100])
@pytest.mark.parametrize("value_inputs", [True, False])
def test_weighted_sum_equals_op_by_op_and_torch(torch, n, value_inputs):
    rng = random.Random(n)
    w0 = [rng.uniform(-1, 1) for _ in range(n)]
    x0 = [rng.uniform(-2, 2) for _ in range(n)]
    b0 = rng.uniform(-1, 1)

    results = []
    for build in (weighted_sum, _op_by_op):
        ws, b = [Value(w) for w in w0], Value(b0)
        xs = [Value(x) for x in x0] if value_inputs else list(x0)
        out = build(ws, xs, b)
        (out.tanh() * UPSTREAM).backward()
        x_grads = [x.grad for x in xs] if value_inputs else []
        results.append((out.v, out.grad, [w.grad for w in ws], b.grad, x_grads))
    fused, plain = results
    assert fused == plain  # same additions in the same order: bit for bit

    tw, tx = torch.tensor(w0, dtype=torch.float64, requires_grad=True), \
        torch.tensor(x0, dtype=torch.float64, requires_grad=value_inputs)
    tb = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    t_out = tb + (tw * tx).sum()
    (t_out.tanh() * UPSTREAM).backward()
    assert_close(fused[0], t_out.item(), "value")
    assert_all_close(fused[2], tw.grad.tolist(), "weight grads")
    assert_close(fused[3], tb.grad.item(), "bias grad")
    if value_inputs:
        assert_all_close(fused[4], tx.grad.tolist(), "input grads")


def test_weighted_sum_is_one_node():
    ws, xs, b = [Value(0.5), Value(-1.0)], [Value(2.0), Value(3.0)], Value(0.25)
    out = weighted_sum(ws, xs, b)
    assert type(out.grad_fn).__name__ == "WeightedSumBackward"
    assert out.v == 0.25 + 0.5 * 2.0 + -1.0 * 3.0


def test_weighted_sum_second_order_equals_op_by_op():
    point = [0.3, -0.7, 1.1, 0.4, -0.2]

    def fused(w0, w1, x0, x1, b):
        return weighted_sum([w0, w1], [x0, x1], b).tanh() * x0

    def plain(w0, w1, x0, x1, b):
        return _op_by_op([w0, w1], [x0, x1], b).tanh() * x0

    h_fused, h_plain = minigrad.hessian(fused, point), minigrad.hessian(plain, point)
    for i in range(len(point)):
        assert_all_close(h_fused[i], h_plain[i], f"row {i}")
    assert any(abs(h) > 1e-3 for row in h_fused for h in row)


class FailingBackward(GradFunction):
    """Passes its gradient on, or raises while ``fail`` is set."""

    __slots__ = ("a", "fail")

    def __init__(self, a):
        self.a = a
        self.fail = True

    def inputs(self):
        return (self.a,)

    def compute_and_add_gradient(self, grad):
        if self.fail:
            raise RuntimeError("boom")
        self.a.grad += grad

    def gradient_graph(self, grad):
        return (grad,)


def test_a_backward_stopped_midway_leaves_no_layer_gradient_pending():
    layer, x = minigrad.nn.Linear(1, 2, "tanh", seed=0), Value(0.8)
    leaves = layer.get_parameters() + [x]
    s0, s1 = layer([x])
    failing = FailingBackward(s1)
    # backward runs out, s0 (which records its gradient in the layer's node), then the failing node
    out = Value(s1.v, failing) + s0
    with pytest.raises(RuntimeError, match="boom"):
        out.backward()
    assert [p.grad for p in leaves] == [0.0] * len(leaves)
    failing.fail = False
    out.backward()
    after_failure = [p.grad for p in leaves]
    for p in leaves:
        p.grad = 0.0
    out.backward()
    assert after_failure == [p.grad for p in leaves]


# ---- 6. gradcheck ----

class SquareBackward(GradFunction):
    """d(x*x)/dx, with a factor to make it wrong on purpose."""

    __slots__ = ("a", "factor")

    def __init__(self, a, factor):
        self.a = a
        self.factor = factor

    def inputs(self):
        return (self.a,)

    def compute_and_add_gradient(self, grad):
        self.a.grad += grad * self.factor * self.a.v

    def gradient_graph(self, grad):
        return (grad * self.factor * self.a,)


def square(x, factor=2.0):
    return Value(x.v * x.v, SquareBackward(x, factor))


def test_gradcheck_accepts_a_correct_custom_op():
    assert gradcheck(lambda x, y: square(x) * y, [1.3, -0.4]) is True


def test_gradcheck_rejects_a_wrong_derivative():
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(lambda x, y: square(x, factor=3.0) * y, [1.3, -0.4])
    assert gradcheck(lambda x, y: square(x, factor=3.0) * y, [1.3, -0.4], raise_exception=False) is False
    # the error is in the op, not in how it is used: the correct factor passes at the same point
    assert gradcheck(lambda x, y: square(x, factor=2.0) * y, [1.3, -0.4], raise_exception=False) is True


# functions of one to three Values, at points away from kinks and undefined regions
GRADCHECK_CASES = {
    "add": (lambda x, y: x + y, [0.3, -1.2]),
    "sub": (lambda x, y: x - y, [0.3, -1.2]),
    "mul": (lambda x, y: x * y, [0.3, -1.2]),
    "div": (lambda x, y: x / y, [0.3, -1.2]),
    "pow_value": (lambda x, y: x ** y, [1.4, -0.6]),
    "pow_square_negative": (lambda x: x ** 2, [-1.3]),
    "pow_cube_negative": (lambda x: x ** 3, [-1.3]),
    "pow_fraction": (lambda x: x ** 0.75, [0.9]),
    "pow_negative": (lambda x: x ** -2, [0.8]),
    "rpow": (lambda x: 3.0 ** x, [0.7]),
    "zero_base": (lambda x, y: x * y + 0.0 ** y, [1.5, 2.0]),
    "const_ops": (lambda x: (2.0 - x) * 3.0 + 1.0 / x - x / 4.0 + 5.0, [0.6]),
    "neg": (lambda x: -x, [0.4]),
    "abs_positive": (lambda x: abs(x), [0.4]),
    "abs_negative": (lambda x: x.abs(), [-0.4]),
    "relu_positive": (lambda x: x.relu(), [0.4]),
    "relu_negative": (lambda x: x.relu() + x, [-0.4]),
    "tanh": (lambda x: x.tanh(), [0.6]),
    "sigmoid": (lambda x: x.sigmoid(), [-0.6]),
    "exp": (lambda x: x.exp(), [1.1]),
    "log": (lambda x: x.log(), [0.7]),
    "value_sum": (lambda x, y, z: value_sum([x, y * y, z, 2.0]) * x, [0.5, -1.5, 2.0]),
    "value_max": (lambda x, y, z: value_max([x, y, z]) * y, [0.5, -1.5, 2.0]),
    "weighted_sum": (lambda x, y, z: weighted_sum([x, y], [y, z], z), [0.5, -1.5, 2.0]),
    "weighted_sum_const": (lambda x, y, z: weighted_sum([x, y], [0.5, -2.0], z) * x, [0.5, -1.5, 2.0]),
    "softmax": (lambda x, y, z: minigrad.softmax([x, y, z])[1], [0.5, -1.5, 2.0]),
    "log_softmax": (lambda x, y, z: minigrad.log_softmax([x, y, z])[0], [0.5, -1.5, 2.0]),
    "composite": (lambda x, y: ((x * y).tanh() + (x - y).exp().log()) ** 2 / (y.sigmoid() + 1), [0.2, 0.9]),
}


@pytest.mark.parametrize("name", sorted(GRADCHECK_CASES))
def test_gradcheck_ops(name):
    fn, point = GRADCHECK_CASES[name]
    assert gradcheck(fn, point)


def test_gradcheck_ops_are_not_trivial():
    """Every checked function has some non-zero gradient, so a check that drops it would fail."""
    for name, (fn, point) in sorted(GRADCHECK_CASES.items()):
        values = [Value(p) for p in point]
        grads = minigrad.grad(fn(*values), values)
        assert any(g != 0.0 for g in grads), name


@pytest.mark.parametrize("seed", range(12))
def test_random_graph_with_constants_passes_gradcheck(seed):
    """Without torch (PyPy): gradients of the leaves that require them, constants held fixed."""
    leaves, program = random_program(seed)
    rng = random.Random(2000 + seed)
    requires = [rng.random() < 0.5 for _ in leaves]
    requires[rng.randrange(len(leaves))] = True
    free = [i for i, r in enumerate(requires) if r]

    def fn(*xs):
        values = [Value(x, requires_grad=False) for x in leaves]
        for i, x in zip(free, xs):
            values[i] = x
        nodes = list(values)
        for name, args in program:
            nodes.append(RANDOM_OPS[name][1](*[nodes[i] for i in args]))
        return _sum_of_unconsumed(nodes, program)

    assert gradcheck(fn, [leaves[i] for i in free], atol=1e-4, rtol=1e-3)
    nodes, _ = run_program_minigrad(leaves, program, requires)
    assert [node.grad is None for node in nodes[:len(leaves)]] == [not r for r in requires]
