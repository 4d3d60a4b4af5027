"""The flat (numpy) SGD and Adam against minigrad.optimizer (the same bits, the same state_dict)
and against torch.optim (float64, 1e-12), on a model whose parameter order differs from its
tensor order."""
import json
import math

import numpy as np
import pytest
from test_optimizer import ADAM_CASES, SGD_CASES

from minigrad import nn
from minigrad.checkpoint import parameters_sha256
from minigrad.optimizer import SGD, Adam, lr_at, optimizer_from_state
from parallel.flat_optimizer import FlatAdam, FlatSGD, flat_optimizer_from_state, parameter_order
from parallel.replica import tensor_order_parameters

STEPS = 50
CASES = {**{f"sgd_{k}": (SGD, FlatSGD, "SGD", v) for k, v in SGD_CASES.items()},
         **{f"adam_{k}": (Adam, FlatAdam, "Adam", v) for k, v in ADAM_CASES.items()}}


def small_model():
    """An MLP of 38 parameters: get_parameters() goes neuron by neuron, tensor order weight then bias."""
    return nn.Sequential(nn.Linear(3, 5, "tanh", seed=1), nn.Linear(5, 3, seed=2))


def gradient(values, step):
    """Deterministic gradients in tensor order that depend on the parameters (so a difference
    carries on, without chaos growing it past torch's rounding); every seventh is zero on even steps."""
    return [0.0 if i % 7 == 3 and step % 2 == 0 else
            math.tanh(x) * (1.5 - i % 3) + 0.2 * x + 0.05 * (step - 25) * (-1) ** i
            for i, x in enumerate(values)]


def lr_of(kwargs, step):
    return lr_at("cosine", kwargs.get("lr", 1e-3), step, STEPS)


def run_reference(make, kwargs, steps=STEPS):
    model = small_model()
    params = tensor_order_parameters(model)
    opt = make(model.parameters(), **kwargs)
    for k in range(steps):
        for p, g in zip(params, gradient([p.v for p in params], k)):
            p.grad = g
        opt.lr = lr_of(kwargs, k)
        opt.step()
    return model, opt


def run_flat(make, kwargs, steps=STEPS, start=None):
    model = small_model()
    flat = np.array([p.v for p in tensor_order_parameters(model)])
    opt = start(flat, parameter_order(model)) if start else make(flat, order=parameter_order(model), **kwargs)
    for k in range(opt.step_count, steps):
        opt.lr = lr_of(kwargs, k)
        opt.step(np.array(gradient(flat.tolist(), k)))
    return model, flat, opt


def run_torch(torch, kind, kwargs, state_names):
    model = small_model()
    t = torch.tensor([p.v for p in tensor_order_parameters(model)], dtype=torch.float64, requires_grad=True)
    opt = getattr(torch.optim, kind)([t], foreach=False, **kwargs)
    for k in range(STEPS):
        t.grad = torch.tensor(gradient(t.detach().tolist(), k), dtype=torch.float64)
        opt.param_groups[0]["lr"] = lr_of(kwargs, k)
        opt.step()
    return t.detach().numpy(), {name: opt.state[t][name].numpy() for name in state_names}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_flat_matches_minigrad_bit_for_bit(case):
    make, make_flat, _, kwargs = case
    model, opt = run_reference(make, kwargs)
    flat_model, flat, flat_opt = run_flat(make_flat, kwargs)
    order = parameter_order(flat_model)
    assert parameters_sha256(flat[order]) == parameters_sha256(model)
    assert parameters_sha256(flat[order]) != parameters_sha256(small_model())
    assert flat_opt.state_dict() == opt.state_dict()
    assert json.dumps(flat_opt.state_dict()) == json.dumps(opt.state_dict())


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_flat_matches_torch(case, torch):
    _, make_flat, kind, kwargs = case
    names = FlatSGD.state_names if kind == "SGD" and kwargs.get("momentum") else ()
    names = FlatAdam.state_names if kind == "Adam" else names
    _, flat, opt = run_flat(make_flat, kwargs)
    want, want_state = run_torch(torch, kind, kwargs, names)
    np.testing.assert_allclose(flat, want, rtol=1e-12, atol=1e-14)
    for name in names:
        np.testing.assert_allclose(getattr(opt, name), want_state[name], rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_resume_from_a_minigrad_state_dict_is_bit_identical(case):
    make, make_flat, _, kwargs = case
    _, whole, whole_opt = run_flat(make_flat, kwargs)
    model, opt = run_reference(make, kwargs, steps=20)
    saved = json.loads(json.dumps(opt.state_dict()))
    values = [p.v for p in tensor_order_parameters(model)]

    def resume(flat, order):
        flat[:] = values
        return flat_optimizer_from_state(flat, saved, order)
    _, flat, resumed = run_flat(make_flat, kwargs, start=resume)
    assert flat.tobytes() == whole.tobytes()
    assert resumed.state_dict() == whole_opt.state_dict()


def test_minigrad_resumes_from_a_flat_state_dict():
    kwargs = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    model, opt = run_reference(SGD, kwargs, steps=30)
    flat_model, flat, flat_opt = run_flat(FlatSGD, kwargs, steps=30)
    again = optimizer_from_state(flat_model.parameters(), flat_opt.state_dict())
    assert again.state_dict() == opt.state_dict()


def test_state_dict_before_any_step():
    flat = np.zeros(4)
    assert FlatSGD(flat, lr=0.1, momentum=0.9).state_dict() == SGD(
        [nn.Value(0.0) for _ in range(4)], lr=0.1, momentum=0.9).state_dict()
    assert FlatAdam(flat).state_dict()["state"] == {"exp_avg": None, "exp_avg_sq": None}


def test_momentum_buffer_does_not_alias_the_gradient():
    flat, grad = np.zeros(3), np.ones(3)
    opt = FlatSGD(flat, lr=0.1, momentum=0.5)
    opt.step(grad)
    grad[:] = 100.0
    assert opt.momentum_buffer.tolist() == [1.0, 1.0, 1.0]


def test_parameter_order_maps_tensor_order_to_get_parameters_order():
    model = small_model()
    flat = [p.v for p in tensor_order_parameters(model)]
    assert np.array(flat)[parameter_order(model)].tolist() == [p.v for p in model.parameters()]
    assert parameter_order(model).tolist() != list(range(len(flat)))


@pytest.mark.parametrize("make,error", [
    (lambda: FlatSGD([0.0, 1.0], lr=0.1), "Expected params to be a 1-D float64 numpy array, got list"),
    (lambda: FlatSGD(np.zeros(2, dtype=np.float32), lr=0.1), "got float32 array of shape (2,)"),
    (lambda: FlatSGD(np.zeros(3), lr=0.1, order=[0, 0, 1]), "Expected order to be a permutation of range(3)"),
    (lambda: FlatSGD(np.zeros(3), lr=0.1, nesterov=True), "Expected momentum > 0 and dampening == 0"),
    (lambda: FlatAdam(np.zeros(3), betas=(1.0, 0.9)), "Expected betas[0] < 1.0, got 1.0"),
    (lambda: FlatSGD(np.zeros(3), lr=0.1).step(np.zeros(4)), "Expected a gradient of shape (3,), got (4,)"),
    (lambda: flat_optimizer_from_state(np.zeros(3), {"type": "LBFGS"}), "with a type in ['Adam', 'SGD']"),
])
def test_arguments_are_checked(make, error):
    with pytest.raises(ValueError) as e:
        make()
    assert error in str(e.value)


def test_a_bad_lr_set_between_steps_is_refused():
    opt = FlatSGD(np.zeros(2), lr=0.1)
    opt.lr = float("nan")
    with pytest.raises(ValueError, match="Expected lr to be a finite number"):
        opt.step(np.zeros(2))
    assert opt.step_count == 0


def test_load_state_dict_is_all_or_nothing():
    opt = FlatAdam(np.zeros(3), lr=0.01)
    opt.step(np.ones(3))
    before = opt.state_dict()
    bad = FlatAdam(np.zeros(3), lr=0.5)
    bad.step(np.ones(3))
    broken = bad.state_dict()
    broken["state"]["exp_avg"] = [1.0, 2.0]
    with pytest.raises(ValueError, match="Expected state exp_avg to hold 3 values, got 2 values"):
        opt.load_state_dict(broken)
    assert opt.state_dict() == before
