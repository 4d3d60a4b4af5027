"""Second and third derivatives through ``create_graph=True``, against PyTorch (float64) and finite differences.

Derivatives of order k are compared as flat lists: for inputs ``x_1..x_n`` order 1 is the n
first partials, order 2 the n*n second partials d/dx_j (d/dx_i f) in row-major order, and so on.
The finite-difference tests at the bottom need no torch, so PyPy checks second derivatives too.
"""
import math
import random

import pytest

import minigrad
import minigrad.nn
from minigrad import Value
from minigrad.gradcheck import gradcheck

TOL = 1e-9

# torch warns that backward(create_graph=True) ties a leaf to its grad; the tests do that on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")


def close(a, b, tol=TOL):
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def assert_all_close(got, expected, what, tol=TOL):
    assert len(got) == len(expected), what
    for i, (g, e) in enumerate(zip(got, expected)):
        assert close(g, e, tol), f"{what}[{i}]: minigrad {g!r}, expected {e!r}"


def as_float(x):
    return x.v if isinstance(x, Value) else float(x)


def scalar(x):
    """A float from a minigrad grad (float or Value) or a torch tensor."""
    return float(x.detach()) if hasattr(x, "detach") else float(x)


def minigrad_derivatives(fn, point, order):
    """Lists of partial derivatives of orders 1..order of ``fn`` at ``point``, via minigrad.grad."""
    xs = [Value(p) for p in point]
    outs, levels = [fn(*xs)], []
    for _ in range(order):
        nxt = []
        for out in outs:
            if isinstance(out, Value):
                nxt.extend(minigrad.grad(out, xs, create_graph=True))
            else:  # a float gradient is a constant: its derivatives are zero
                nxt.extend([0.0] * len(xs))
        levels.append([as_float(d) for d in nxt])
        outs = nxt
    return levels


def torch_derivatives(fn, point, order):
    torch = pytest.importorskip("torch")
    xs = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in point]
    zero = torch.zeros((), dtype=torch.float64)
    outs, levels = [fn(*xs)], []
    for _ in range(order):
        nxt = []
        for out in outs:
            if out.requires_grad:
                grads = torch.autograd.grad(out, xs, create_graph=True, allow_unused=True)
                nxt.extend(zero if g is None else g for g in grads)
            else:
                nxt.extend([zero] * len(xs))
        levels.append([float(d.detach()) for d in nxt])
        outs = nxt
    return levels


def assert_derivatives_match(fn, torch_fn, point, order=3, tol=TOL):
    got = minigrad_derivatives(fn, point, order)
    expected = torch_derivatives(torch_fn, point, order)
    for k in range(order):
        assert_all_close(got[k], expected[k], f"order {k + 1} at {point}", tol)


# ---- every op, table-driven ----

NEG_AND_POS = (-1.7, -0.3, 0.4, 2.2)
POSITIVE = (0.3, 1.1, 2.5)
AWAY_FROM_ZERO = (-1.7, -0.3, 0.4, 2.2)  # abs and relu have a kink at 0

UNARY = [
    # name, minigrad, torch, points
    ("neg", lambda x: -x, lambda x: -x, NEG_AND_POS),
    ("add_const", lambda x: x + 1.5, lambda x: x + 1.5, NEG_AND_POS),
    ("radd_const", lambda x: 1.5 + x, lambda x: 1.5 + x, NEG_AND_POS),
    ("sub_const", lambda x: x - 0.5, lambda x: x - 0.5, NEG_AND_POS),
    ("rsub_const", lambda x: 0.5 - x, lambda x: 0.5 - x, NEG_AND_POS),
    ("mul_const", lambda x: x * -2.5, lambda x: x * -2.5, NEG_AND_POS),
    ("rmul_const", lambda x: 3.0 * x, lambda x: 3.0 * x, NEG_AND_POS),
    ("div_const", lambda x: x / 0.7, lambda x: x / 0.7, NEG_AND_POS),
    ("rdiv_const", lambda x: 2.0 / x, lambda x: 2.0 / x, NEG_AND_POS),
    ("square", lambda x: x ** 2, lambda x: x ** 2, NEG_AND_POS),
    ("cube", lambda x: x ** 3, lambda x: x ** 3, NEG_AND_POS),
    ("pow_1", lambda x: x ** 1, lambda x: x ** 1, NEG_AND_POS),
    ("pow_0", lambda x: x ** 0, lambda x: x ** 0, NEG_AND_POS),
    ("pow_neg_int", lambda x: x ** -2, lambda x: x ** -2, NEG_AND_POS),
    ("sqrt", lambda x: x ** 0.5, lambda x: x ** 0.5, POSITIVE),
    ("pow_neg_frac", lambda x: x ** -1.5, lambda x: x ** -1.5, POSITIVE),
    ("rpow", lambda x: 2.0 ** x, lambda x: 2.0 ** x, NEG_AND_POS),
    ("x_times_x", lambda x: x * x, lambda x: x * x, NEG_AND_POS),
    ("x_over_x_squared", lambda x: x / (x * x), lambda x: x / (x * x), NEG_AND_POS),
    ("abs", lambda x: abs(x), lambda x: abs(x), AWAY_FROM_ZERO),
    ("abs_method", lambda x: x.abs() * x, lambda x: x.abs() * x, AWAY_FROM_ZERO),
    ("relu", lambda x: x.relu(), lambda x: x.relu(), AWAY_FROM_ZERO),
    ("relu_squared", lambda x: x.relu() * x.relu(), lambda x: x.relu() * x.relu(), AWAY_FROM_ZERO),
    ("tanh", lambda x: x.tanh(), lambda x: x.tanh(), NEG_AND_POS),
    ("sigmoid", lambda x: x.sigmoid(), lambda x: x.sigmoid(), NEG_AND_POS),
    ("exp", lambda x: x.exp(), lambda x: x.exp(), NEG_AND_POS),
    ("log", lambda x: x.log(), lambda x: x.log(), POSITIVE),
    ("functional_tanh", minigrad.tanh, lambda x: x.tanh(), NEG_AND_POS),
    ("functional_sigmoid", minigrad.sigmoid, lambda x: x.sigmoid(), NEG_AND_POS),
    ("functional_relu", minigrad.relu, lambda x: x.relu(), AWAY_FROM_ZERO),
]

BINARY = [
    ("add", lambda x, y: x + y, lambda x, y: x + y, (-1.3, 0.8)),
    ("sub", lambda x, y: x - y, lambda x, y: x - y, (-1.3, 0.8)),
    ("mul", lambda x, y: x * y, lambda x, y: x * y, (-1.3, 0.8)),
    ("mul_neg", lambda x, y: x * y, lambda x, y: x * y, (2.1, -0.6)),
    ("div", lambda x, y: x / y, lambda x, y: x / y, (-1.3, 0.8)),
    ("div_neg", lambda x, y: x / y, lambda x, y: x / y, (0.9, -1.7)),
    ("pow", lambda x, y: x ** y, lambda x, y: x ** y, (1.3, 0.8)),
    ("pow_neg_exponent", lambda x, y: x ** y, lambda x, y: x ** y, (0.6, -1.4)),
    ("pow_of_tanh", lambda x, y: x ** y.tanh(), lambda x, y: x ** y.tanh(), (2.4, -0.9)),
    ("mul_tanh", lambda x, y: (x * y).tanh(), lambda x, y: (x * y).tanh(), (-0.7, 1.2)),
    ("exp_div", lambda x, y: (x / y).exp(), lambda x, y: (x / y).exp(), (0.5, -1.1)),
    ("log_sigmoid_mix", lambda x, y: (x.sigmoid() + y * y).log(), lambda x, y: (x.sigmoid() + y * y).log(),
     (-2.0, 0.3)),
    ("relu_mul", lambda x, y: (x * y).relu() * y, lambda x, y: (x * y).relu() * y, (1.5, 0.7)),
    ("abs_sub", lambda x, y: abs(x - y) * x, lambda x, y: abs(x - y) * x, (-0.4, 1.1)),
]


def unary_cases():
    return [pytest.param(mg, th, x, id=f"{name}-{x}") for name, mg, th, points in UNARY for x in points]


@pytest.mark.parametrize("fn, torch_fn, x", unary_cases())
def test_unary_derivatives_up_to_third_match_torch(fn, torch_fn, x):
    assert_derivatives_match(fn, torch_fn, (x,))


@pytest.mark.parametrize("fn, torch_fn, point", [pytest.param(mg, th, p, id=name) for name, mg, th, p in BINARY])
def test_binary_derivatives_up_to_third_match_torch(fn, torch_fn, point):
    assert_derivatives_match(fn, torch_fn, point)


def torch_stack_max(xs):
    torch = pytest.importorskip("torch")
    return torch.stack(list(xs)).max()


NARY = [
    ("value_sum", lambda x, y, z: minigrad.value_sum([x, y * z, z.tanh(), 2.0]).tanh(),
     lambda x, y, z: (x + y * z + z.tanh() + 2.0).tanh(), (0.3, -0.8, 1.4)),
    ("value_max", lambda x, y, z: minigrad.value_max([x * y, z.exp(), y]) ** 3,
     lambda x, y, z: torch_stack_max([x * y, z.exp(), y]) ** 3, (0.9, -1.2, 0.2)),
    ("value_max_first_wins", lambda x, y, z: minigrad.value_max([x.tanh(), y * z]) * x,
     lambda x, y, z: torch_stack_max([x.tanh(), y * z]) * x, (1.1, 0.4, -0.6)),
    ("softmax", lambda x, y, z: minigrad.softmax([x, y, z])[1] * x,
     lambda x, y, z: torch_softmax([x, y, z])[1] * x, (0.5, -1.0, 2.0)),
    ("log_softmax", lambda x, y, z: minigrad.log_softmax([x, y * x, z])[2],
     lambda x, y, z: torch_log_softmax([x, y * x, z])[2], (0.5, -1.0, 2.0)),
    ("cross_entropy", lambda x, y, z: minigrad.cross_entropy([x, y, z.tanh()], 0),
     lambda x, y, z: torch_cross_entropy([x, y, z.tanh()], 0), (-0.2, 1.3, 0.7)),
    ("mse_loss", lambda x, y, z: minigrad.mse_loss([x.tanh(), y * z], [1.0, -1.0]),
     lambda x, y, z: ((x.tanh() - 1.0) ** 2 + (y * z + 1.0) ** 2) / 2, (-0.2, 1.3, 0.7)),
]


def torch_softmax(xs):
    torch = pytest.importorskip("torch")
    return torch.softmax(torch.stack(xs), 0)


def torch_log_softmax(xs):
    torch = pytest.importorskip("torch")
    return torch.log_softmax(torch.stack(xs), 0)


def torch_cross_entropy(xs, target):
    torch = pytest.importorskip("torch")
    return torch.nn.functional.cross_entropy(torch.stack(xs)[None], torch.tensor([target]))


@pytest.mark.parametrize("fn, torch_fn, point", [pytest.param(mg, th, p, id=name) for name, mg, th, p in NARY])
def test_nary_and_composite_derivatives_up_to_third_match_torch(fn, torch_fn, point):
    assert_derivatives_match(fn, torch_fn, point)


# ---- the fused weighted sum ----

def fused_neuron(n):
    """tanh of one weighted_sum node over n Value weights and inputs, the derivatives taken over all."""
    def fn(*args):
        w, x, b = list(args[:n]), list(args[n:2 * n]), args[2 * n]
        return minigrad.weighted_sum(w, x, b).tanh()
    return fn


def op_by_op_neuron(n):
    def fn(*args):
        w, x, s = args[:n], args[n:2 * n], args[2 * n]
        for wi, xi in zip(w, x):
            s = s + wi * xi
        return s.tanh()
    return fn


NEURON_POINT = (0.4, -1.1, 0.7, 1.5, -0.3, 0.9, 0.2)  # w0..w2, x0..x2, b


def test_weighted_sum_second_and_third_derivatives_match_torch():
    assert_derivatives_match(fused_neuron(3), op_by_op_neuron(3), NEURON_POINT)


def test_weighted_sum_matches_the_op_by_op_graph_it_replaces():
    fused = minigrad_derivatives(fused_neuron(3), NEURON_POINT, 3)
    op_by_op = minigrad_derivatives(op_by_op_neuron(3), NEURON_POINT, 3)
    for k in range(3):
        assert_all_close(fused[k], op_by_op[k], f"order {k + 1}", 1e-12)


def test_weighted_sum_with_constant_inputs_differentiates_weights_twice():
    xs = [1.5, -0.3, 0.9]

    def fused(w0, w1, w2, b):
        return minigrad.weighted_sum([w0, w1, w2], xs, b).tanh() ** 2

    def torch_fn(w0, w1, w2, b):
        return (b + w0 * xs[0] + w1 * xs[1] + w2 * xs[2]).tanh() ** 2

    assert_derivatives_match(fused, torch_fn, (0.4, -1.1, 0.7, 0.2))


def test_weighted_sum_inputs_shared_by_two_neurons():
    """A conv layer reads each input in several weighted sums; their second derivatives add up."""
    def fn(x0, x1, w0, w1, v0, v1, b):
        h0 = minigrad.weighted_sum([w0, w1], [x0, x1], b).tanh()
        h1 = minigrad.weighted_sum([v0, v1], [x0, x1], b).sigmoid()
        return h0 * h1

    def torch_fn(x0, x1, w0, w1, v0, v1, b):
        return (b + w0 * x0 + w1 * x1).tanh() * (b + v0 * x0 + v1 * x1).sigmoid()

    assert_derivatives_match(fn, torch_fn, (0.8, -0.5, 0.3, 1.2, -0.7, 0.4, 0.1), order=2)


# ---- random composite graphs ----

UNARY_OPS = ["tanh", "sigmoid", "neg", "square", "cube", "exp_tanh", "log_square", "abs", "relu", "rdiv"]
BINARY_OPS = ["add", "sub", "mul", "div", "pow", "sum", "max"]


def random_program(seed, n_inputs=3, n_ops=10):
    """A list of (op, argument indices) steps; the same seed gives the same program.

    The first argument is one of the three newest nodes, so the graph grows deep; the second
    of a binary op is any node, so inputs mix.
    """
    rng = random.Random(seed)
    steps, width = [], n_inputs
    for _ in range(n_ops):
        recent = rng.randrange(max(0, width - 3), width)
        if rng.random() < 0.5:
            steps.append((rng.choice(UNARY_OPS), (recent,)))
        else:
            steps.append((rng.choice(BINARY_OPS), (recent, rng.randrange(width))))
        width += 1
    return steps


def run_program(steps, xs, lib):
    """Evaluate ``steps`` with minigrad (lib="minigrad") or torch (lib="torch"); the sum of the last 3 nodes."""
    nodes = list(xs)
    for op, args in steps:
        a = nodes[args[0]]
        b = nodes[args[-1]]
        nodes.append(_apply(op, a, b, lib))
    return nodes[-1] + nodes[-2] + nodes[-3]


def _apply(op, a, b, lib):
    unary = {
        "tanh": lambda: a.tanh(),
        "sigmoid": lambda: a.sigmoid(),
        "neg": lambda: -a,
        "square": lambda: a ** 2,
        "cube": lambda: a ** 3,
        "exp_tanh": lambda: a.tanh().exp(),
        "log_square": lambda: (a * a + 0.5).log(),
        "abs": lambda: abs(a),
        "relu": lambda: a.relu(),
        "rdiv": lambda: 1.0 / (a * a + 1.0),
    }
    if op in unary:
        return unary[op]()
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        return a / (b * b + 1.0)
    if op == "pow":
        return (a * a + 0.5) ** b.tanh()
    if op == "sum":
        return minigrad.value_sum([a, b, a * b]) if lib == "minigrad" else a + b + a * b
    if op == "max":  # b + 0.25 keeps max(a, a) from being a tie, where torch splits the gradient
        c = b + 0.25
        return minigrad.value_max([a, c]) if lib == "minigrad" else torch_stack_max([a, c])
    raise ValueError(f"Expected a known op, got {op!r}")


RANDOM_SEEDS = list(range(24))


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_graphs_second_and_third_derivatives_match_torch(seed):
    steps = random_program(seed)
    rng = random.Random(1000 + seed)
    point = [round(rng.uniform(-1.5, 1.5), 3) for _ in range(3)]
    assert_derivatives_match(lambda *xs: run_program(steps, xs, "minigrad"),
                             lambda *xs: run_program(steps, xs, "torch"), point, tol=1e-8)


def test_random_programs_use_every_op():
    used = {op for seed in RANDOM_SEEDS for op, _ in random_program(seed)}
    assert used == set(UNARY_OPS) | set(BINARY_OPS)


# ---- a small MLP: Hessian-vector products ----

def mlp(fused):
    model = minigrad.nn.Sequential(minigrad.nn.Linear(3, 4, activation="tanh", seed=1),
                                   minigrad.nn.Linear(4, 2, activation="tanh", seed=2))
    return model.set_fused(fused)


MLP_INPUT = [0.5, -1.2, 0.8]
MLP_TARGET = [1.0, -1.0]


def tensor_order(model):
    """Parameters grouped by tensor (all of a layer's weights, then its biases), torch's flat layout."""
    return [p for _, _, values in model.named_tensors() for p in values]


def minigrad_mlp_hvp(model, vector, loss_name):
    params = tensor_order(model)
    out = model(MLP_INPUT)
    if loss_name == "mse":
        loss = minigrad.mse_loss(out, MLP_TARGET)
    else:
        loss = minigrad.cross_entropy(out, 1)
    grads = minigrad.grad(loss, params, create_graph=True)
    dot = minigrad.value_sum([g * v for g, v in zip(grads, vector)])
    return [as_float(g) for g in grads], [as_float(h) for h in minigrad.grad(dot, params)]


def torch_mlp_hvp(model, vector, loss_name):
    torch = pytest.importorskip("torch")
    state = model.state_dict()
    names = [name for name, _, _ in model.named_tensors()]
    tensors = [torch.tensor(state[name], dtype=torch.float64, requires_grad=True) for name in names]
    w1, b1, w2, b2 = tensors
    x = torch.tensor(MLP_INPUT, dtype=torch.float64)
    out = torch.tanh(w2 @ torch.tanh(w1 @ x + b1) + b2)
    if loss_name == "mse":
        loss = ((out - torch.tensor(MLP_TARGET, dtype=torch.float64)) ** 2).mean()
    else:
        loss = torch.nn.functional.cross_entropy(out[None], torch.tensor([1]))
    grads = torch.autograd.grad(loss, tensors, create_graph=True)
    flat_grads = torch.cat([g.reshape(-1) for g in grads])
    v = torch.tensor(vector, dtype=torch.float64)
    hvp = torch.autograd.grad(flat_grads @ v, tensors)
    return flat_grads.tolist(), torch.cat([h.reshape(-1) for h in hvp]).tolist()


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "op_by_op"])
@pytest.mark.parametrize("loss_name", ["mse", "cross_entropy"])
def test_mlp_hessian_vector_product_matches_torch(fused, loss_name):
    model = mlp(fused)
    names = [name for name, _, _ in model.named_tensors()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]  # the layout torch_mlp_hvp assumes
    rng = random.Random(7)
    vector = [rng.uniform(-1.0, 1.0) for _ in model.parameters()]
    grads, hvp = minigrad_mlp_hvp(model, vector, loss_name)
    torch_grads, torch_hvp = torch_mlp_hvp(model, vector, loss_name)
    assert_all_close(grads, torch_grads, "gradient")
    assert_all_close(hvp, torch_hvp, "Hessian-vector product")
    assert max(abs(h) for h in hvp) > 1e-3  # the check compares something


def test_mlp_leaves_parameter_grads_untouched_by_grad():
    model = mlp(True)
    for p in model.parameters():
        p.grad = 0.25
    minigrad_mlp_hvp(model, [1.0] * len(model.parameters()), "mse")
    assert all(p.grad == 0.25 for p in model.parameters())


# ---- minigrad.hessian ----

HESSIAN_CASES = [
    ("rosenbrock", lambda x, y: (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2, (-1.2, 1.0)),
    ("mixed", lambda x, y, z: x * y * z.tanh() + (x / y).exp() + z ** 3, (0.7, -1.3, 0.4)),
    ("log_sum_exp", lambda x, y, z: (x.exp() + y.exp() + z.exp()).log(), (0.1, -0.5, 1.2)),
    ("linear", lambda x, y: 3.0 * x - y, (0.5, 2.0)),
    ("unused_input", lambda x, y: x.sigmoid() * x, (0.5, 2.0)),
]


@pytest.mark.parametrize("fn, point", [pytest.param(f, p, id=name) for name, f, p in HESSIAN_CASES])
def test_hessian_matches_torch_functional_hessian(fn, point):
    torch = pytest.importorskip("torch")
    got = minigrad.hessian(fn, point)

    def torch_fn(t):
        return fn(*[t[i] for i in range(len(point))])

    expected = torch.autograd.functional.hessian(torch_fn, torch.tensor(point, dtype=torch.float64)).tolist()
    assert len(got) == len(point) and all(len(row) == len(point) for row in got)
    for i in range(len(point)):
        assert_all_close(got[i], expected[i], f"hessian row {i}")


def test_hessian_is_symmetric_and_plain_floats():
    h = minigrad.hessian(HESSIAN_CASES[1][1], HESSIAN_CASES[1][2])
    assert all(type(x) is float for row in h for x in row)
    for i in range(3):
        for j in range(3):
            assert close(h[i][j], h[j][i], 1e-12)


# ---- backward(create_graph=True) and .grad accumulation, step by step against torch ----

def f_xw(x, w):
    return (x * w).tanh() * x + w.exp() / x


def run_sequence(lib, zero_between):
    """backward(create_graph=True), then backward of x.grad; returns every grad seen along the way."""
    if lib == "torch":
        torch = pytest.importorskip("torch")
        x = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
        w = torch.tensor(-0.9, dtype=torch.float64, requires_grad=True)
    else:
        x, w = Value(0.6), Value(-0.9)
    f_xw(x, w).backward(create_graph=True)
    seen = [scalar(x.grad), scalar(w.grad)]
    gx = x.grad
    if zero_between:
        x.grad = None if lib == "torch" else 0.0
        w.grad = None if lib == "torch" else 0.0
    gx.backward()
    seen += [scalar(x.grad), scalar(w.grad)]
    return seen


@pytest.mark.parametrize("zero_between", [True, False], ids=["zeroed", "accumulated"])
def test_backward_of_a_create_graph_gradient_matches_torch(zero_between):
    got = run_sequence("minigrad", zero_between)
    expected = run_sequence("torch", zero_between)
    assert_all_close(got, expected, "grads")


def test_create_graph_gradient_is_a_value_with_a_graph():
    x, w = Value(0.6), Value(-0.9)
    f_xw(x, w).backward(create_graph=True)
    assert isinstance(x.grad, Value) and x.grad.grad_fn is not None
    assert isinstance(w.grad, Value) and w.grad.grad_fn is not None
    gx = x.grad
    x.grad, w.grad = 0.0, 0.0
    gx.backward()
    assert type(x.grad) is float and type(w.grad) is float
    # d2f/dx2 and d2f/dxdw by finite differences of the float first derivative
    eps = 1e-6
    assert close(x.grad, _fd(lambda a, b: _first(a, b, 0), 0.6, -0.9, 0, eps), 1e-6)
    assert close(w.grad, _fd(lambda a, b: _first(a, b, 0), 0.6, -0.9, 1, eps), 1e-6)


def _first(a, b, i):
    x, w = Value(a), Value(b)
    return minigrad.grad(f_xw(x, w), [x, w])[i]


def _fd(g, a, b, i, eps):
    up = (a + eps, b) if i == 0 else (a, b + eps)
    down = (a - eps, b) if i == 0 else (a, b - eps)
    return (g(*up) - g(*down)) / (2 * eps)


def test_two_create_graph_backwards_accumulate_like_torch():
    torch = pytest.importorskip("torch")
    x = Value(1.3)
    tx = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    for _ in range(2):
        (x.sigmoid() * x).backward(create_graph=True)
        (tx.sigmoid() * tx).backward(create_graph=True)
    assert isinstance(x.grad, Value)
    assert close(x.grad.v, scalar(tx.grad))
    # the accumulated gradient is itself differentiable: d/dx (2 f'(x)) = 2 f''(x)
    gx, tgx = x.grad, tx.grad
    x.grad, tx.grad = 0.0, None
    gx.backward()
    tgx.backward()
    assert close(x.grad, scalar(tx.grad))


# ---- the float path is unchanged ----

def test_backward_without_create_graph_gives_float_grads_equal_to_the_graph_path():
    def build():
        x, w = Value(0.6), Value(-0.9)
        return x, w, f_xw(x, w)

    x, w, y = build()
    y.backward()
    assert type(x.grad) is float and type(w.grad) is float
    x2, w2, y2 = build()
    y2.backward(create_graph=True)
    assert close(x.grad, x2.grad.v, 1e-14) and close(w.grad, w2.grad.v, 1e-14)
    # after a create_graph pass, zeroed leaves get floats again from a plain backward
    x2.grad, w2.grad = 0.0, 0.0
    y2.backward()
    assert type(x2.grad) is float and x2.grad == x.grad and w2.grad == w.grad


def test_grad_without_create_graph_returns_floats():
    x = Value(0.4)
    g = minigrad.grad(x.tanh() ** 3, x)
    assert type(g) is float


# ---- finite differences of the first derivative: second derivatives without torch ----

def derivative_of(fn, i):
    """x -> d fn / d x_i as a Value with a graph, for gradcheck to differentiate once more."""
    def d(*xs):
        return minigrad.grad(fn(*xs), xs[i], create_graph=True)
    return d


FD_CASES = [(name, mg, (x,)) for name, mg, _, points in UNARY for x in points[:2]
            if name not in ("neg", "add_const", "radd_const", "sub_const", "rsub_const", "mul_const",
                            "rmul_const", "div_const", "pow_1", "pow_0", "abs", "relu", "functional_relu")]
FD_CASES += [(name, mg, p) for name, mg, _, p in BINARY if name not in ("add", "sub")]
FD_CASES += [("weighted_sum", fused_neuron(3), NEURON_POINT)]


@pytest.mark.parametrize("fn, point", [pytest.param(f, p, id=f"{name}-{p}") for name, f, p in FD_CASES])
def test_second_derivatives_match_finite_differences(fn, point):
    for i in range(len(point)):
        assert gradcheck(derivative_of(fn, i), point, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "log", "cube", "rdiv_const"])
def test_third_derivatives_match_finite_differences(name):
    fn = next(mg for n, mg, _, _ in UNARY if n == name)
    second = derivative_of(derivative_of(fn, 0), 0)
    assert gradcheck(second, (0.8,), eps=1e-5, atol=1e-5, rtol=1e-4)


def test_finite_difference_check_can_fail():
    """A wrong second derivative (tanh's first derivative detached from x) is caught."""
    def wrong_first_derivative(x):
        t = x.tanh()
        return 1.0 - Value(t.v) * t  # half of d/dx (1 - t*t) is lost
    with pytest.raises(AssertionError):
        gradcheck(wrong_first_derivative, (0.8,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_hessian_matches_finite_differences_without_torch():
    fn, point = HESSIAN_CASES[1][1], HESSIAN_CASES[1][2]
    h = minigrad.hessian(fn, point)
    eps = 1e-6
    for i in range(3):
        for j in range(3):
            up, down = list(point), list(point)
            up[j] += eps
            down[j] -= eps
            fd = (_grad_at(fn, up)[i] - _grad_at(fn, down)[i]) / (2 * eps)
            assert close(h[i][j], fd, 1e-6), (i, j, h[i][j], fd)


def _grad_at(fn, point):
    xs = [Value(p) for p in point]
    return minigrad.grad(fn(*xs), xs)
