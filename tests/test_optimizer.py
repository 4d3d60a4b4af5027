"""SGD, Adam and the learning-rate schedules against torch.optim (float64), state round trips,
and argument checks."""
import copy
import json
import math

import pytest

from minigrad import Value
from minigrad.optimizer import SGD, Adam, Optimizer, lr_at, optimizer_from_state

START = [0.5, -1.25, 0.0, 3.0, -0.003, 1e-3]
STEPS = 8
TOL = dict(rel_tol=1e-12, abs_tol=1e-14)


def gradient(values, step):
    """Varied gradients that depend on the parameters (so errors would compound) and on the step;
    parameter 2 gets a zero gradient on even steps."""
    return [0.0 if i == 2 and step % 2 == 0 else
            math.cos((i + 1) * x) * (1.5 - i % 3) + 0.1 * (step - 3) * (-1) ** i
            for i, x in enumerate(values)]


def run_minigrad(make, steps=STEPS, lrs=None):
    params = [Value(x) for x in START]
    opt = make(params)
    history = []
    for k in range(steps):
        for p, g in zip(params, gradient([p.v for p in params], k)):
            p.grad = g
        if lrs:
            opt.lr = lrs[k]
        opt.step()
        history.append(([p.v for p in params], copy.deepcopy(opt.state_dict()["state"])))
    return history


def run_torch(torch, make, state_names, steps=STEPS, lrs=None):
    t = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    opt = make([t])
    history = []
    for k in range(steps):
        t.grad = torch.tensor(gradient(t.detach().tolist(), k), dtype=torch.float64)
        if lrs:
            opt.param_groups[0]["lr"] = lrs[k]
        opt.step()
        state = {name: opt.state[t][name].tolist() for name in state_names}
        history.append((t.detach().tolist(), state))
    return history


def assert_close_lists(got, want, what):
    for i, (a, b) in enumerate(zip(got, want)):
        assert math.isclose(a, b, **TOL), f"{what}[{i}]: minigrad {a!r}, torch {b!r}"
    assert len(got) == len(want)


def assert_same_trajectory(mine, theirs):
    for k, ((params, state), (t_params, t_state)) in enumerate(zip(mine, theirs)):
        assert_close_lists(params, t_params, f"step {k} parameter")
        for name, values in t_state.items():
            assert_close_lists(state[name], values, f"step {k} {name}")


SGD_CASES = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "momentum_dampening": dict(lr=0.05, momentum=0.8, dampening=0.3),
    "nesterov": dict(lr=0.1, momentum=0.9, nesterov=True),
    "weight_decay": dict(lr=0.1, weight_decay=0.05),
    "all_but_dampening": dict(lr=0.02, momentum=0.5, weight_decay=0.1, nesterov=True),
    "momentum_weight_decay_dampening": dict(lr=0.3, momentum=0.95, weight_decay=0.01, dampening=0.5),
}


@pytest.mark.parametrize("kwargs", SGD_CASES.values(), ids=SGD_CASES.keys())
def test_sgd_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    mine = run_minigrad(lambda ps: SGD(ps, **kwargs))
    names = ["momentum_buffer"] if kwargs.get("momentum") else []
    theirs = run_torch(torch, lambda ts: torch.optim.SGD(ts, foreach=False, **kwargs), names)
    assert_same_trajectory(mine, theirs)
    assert mine[-1][0] != START


ADAM_CASES = {
    "defaults": dict(),
    "large_lr": dict(lr=0.05),
    "betas_eps": dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    "beta1_below_half": dict(lr=0.01, betas=(0.3, 0.9)),  # the other branch of torch's lerp
    "beta1_zero": dict(lr=0.01, betas=(0.0, 0.5)),
    "weight_decay": dict(lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("kwargs", ADAM_CASES.values(), ids=ADAM_CASES.keys())
def test_adam_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    mine = run_minigrad(lambda ps: Adam(ps, **kwargs))
    theirs = run_torch(torch, lambda ts: torch.optim.Adam(ts, foreach=False, **kwargs),
                       ["exp_avg", "exp_avg_sq"])
    assert_same_trajectory(mine, theirs)
    assert mine[-1][0] != START


@pytest.mark.parametrize("name,make,torch_make", [
    ("sgd", lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda torch, ts: torch.optim.SGD(ts, lr=0.1, momentum=0.9)),
    ("adam", lambda ps: Adam(ps, lr=0.1), lambda torch, ts: torch.optim.Adam(ts, lr=0.1, foreach=False)),
])
def test_lr_changed_between_steps_is_used(name, make, torch_make):
    torch = pytest.importorskip("torch")
    lrs = [lr_at("cosine", 0.1, k, STEPS) for k in range(STEPS)]
    mine = run_minigrad(make, lrs=lrs)
    theirs = run_torch(torch, lambda ts: torch_make(torch, ts), [], lrs=lrs)
    assert_same_trajectory(mine, theirs)
    constant = run_minigrad(make)
    assert mine[-1][0] != constant[-1][0]


def test_value_gradient_from_create_graph_is_read_as_its_float():
    a, b = [Value(0.5)], [Value(0.5)]
    a[0].grad, b[0].grad = Value(0.25), 0.25
    for params in (a, b):
        Adam(params, lr=0.1).step()
    assert isinstance(a[0].v, float) and a[0].v == b[0].v != 0.5


def test_zero_grad_and_step_count():
    params = [Value(1.0), Value(2.0)]
    opt = SGD(params, lr=0.5)
    for p in params:
        p.grad = 1.0
    opt.step()
    opt.zero_grad()
    assert [p.grad for p in params] == [0.0, 0.0]
    assert [p.v for p in params] == [0.5, 1.5]
    assert opt.step_count == 1


def test_optimizer_is_abstract():
    with pytest.raises(TypeError):
        Optimizer([Value(1.0)], lr=0.1)


# ---- state_dict ----

RESUME_CASES = {
    "sgd_nesterov_wd": lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "sgd_dampening": lambda ps: SGD(ps, lr=0.05, momentum=0.7, dampening=0.2),
    "sgd_plain": lambda ps: SGD(ps, lr=0.05),
    "adam": lambda ps: Adam(ps, lr=0.02, weight_decay=0.01),
}


@pytest.mark.parametrize("make", RESUME_CASES.values(), ids=RESUME_CASES.keys())
def test_resume_from_state_dict_is_bit_identical(make):
    whole = run_minigrad(make, steps=10)

    params = [Value(x) for x in START]
    opt = make(params)
    for k in range(4):
        for p, g in zip(params, gradient([p.v for p in params], k)):
            p.grad = g
        opt.step()
    saved = json.loads(json.dumps(opt.state_dict(), allow_nan=False))
    values = [p.v for p in params]
    del opt, params

    params = [Value(x) for x in values]
    opt = optimizer_from_state(params, saved)
    assert opt.step_count == 4
    for k in range(4, 10):
        for p, g in zip(params, gradient([p.v for p in params], k)):
            p.grad = g
        opt.step()
    assert [p.v for p in params] == whole[-1][0]
    assert opt.state_dict()["state"] == whole[-1][1]


def test_load_state_dict_restores_hyperparameters():
    params = [Value(x) for x in START]
    source = Adam(params, lr=0.02, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.5)
    target = Adam([Value(x) for x in START])
    target.load_state_dict(source.state_dict())
    assert target.hyperparameters() == source.hyperparameters()
    assert (target.lr, target.betas, target.eps) == (0.02, (0.8, 0.95), 1e-7)


def test_state_dict_layout():
    params = [Value(x) for x in START]
    opt = SGD(params, lr=0.1, momentum=0.9)
    assert opt.state_dict() == {
        "type": "SGD", "step": 0, "state": {"momentum_buffer": None},
        "hyperparameters": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False,
                            "dampening": 0.0}}
    for p in params:
        p.grad = 1.0
    opt.step()
    saved = opt.state_dict()
    assert saved["step"] == 1 and saved["state"]["momentum_buffer"] == [1.0] * len(START)
    opt.step()
    assert saved["state"]["momentum_buffer"] == [1.0] * len(START), "a snapshot must not change"
    adam = Adam(params)
    assert adam.state_dict()["state"] == {"exp_avg": None, "exp_avg_sq": None}
    assert adam.state_dict()["hyperparameters"]["betas"] == [0.9, 0.999]


def _trained_sgd():
    params = [Value(x) for x in START]
    opt = SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = 0.5
    opt.step()
    return opt


def _edit(**changes):
    def make(sd):
        for path, value in changes.items():
            d = sd
            keys = path.split("__")
            for k in keys[:-1]:
                d = d[k]
            if value is _DELETE:
                del d[keys[-1]]
            else:
                d[keys[-1]] = value
        return sd
    return make


_DELETE = object()

BAD_STATES = {
    "not_a_dict": (lambda sd: [sd], r"Expected an optimizer state dict, got list"),
    "other_type": (_edit(type="Adam"), r"Expected optimizer state of type 'SGD', got 'Adam'"),
    "negative_step": (_edit(step=-1), r"Expected step to be an integer >= 0, got -1"),
    "bool_step": (_edit(step=True), r"Expected step to be an integer >= 0, got True"),
    "extra_key": (_edit(extra=1), r"Expected optimizer state keys .*, got .*'extra'"),
    "missing_hyperparameter": (_edit(hyperparameters__nesterov=_DELETE), r"Expected hyperparameters keys"),
    "bad_lr": (_edit(hyperparameters__lr=-0.1), r"Expected lr >= 0, got -0.1"),
    "bad_nesterov": (_edit(hyperparameters__nesterov="yes"), r"Expected nesterov to be True or False"),
    "short_buffer": (_edit(state__momentum_buffer=[0.0]), r"Expected state momentum_buffer to hold 6 values, got 1"),
    "nan_in_buffer": (_edit(state__momentum_buffer=[0.0] * 5 + [float("nan")]),
                      r"momentum_buffer\[5\] to be a finite number, got nan"),
    "string_in_buffer": (_edit(state__momentum_buffer=["1"] + [0.0] * 5),
                         r"momentum_buffer\[0\] to be a finite number, got '1'"),
    "missing_buffer": (_edit(state__momentum_buffer=None), r"Expected a momentum_buffer .* got none"),
    "buffer_not_list": (_edit(state__momentum_buffer={"a": 1}), r"to hold 6 values, got dict"),
}


@pytest.mark.parametrize("corrupt,message", BAD_STATES.values(), ids=BAD_STATES.keys())
def test_load_state_dict_rejects_bad_state_and_changes_nothing(corrupt, message):
    opt = _trained_sgd()
    before = copy.deepcopy(opt.state_dict())
    changed = copy.deepcopy(before)  # valid changes that a partial load would adopt
    changed["hyperparameters"]["lr"] = 0.5
    changed["state"]["momentum_buffer"] = [9.0] * len(START)
    bad = corrupt(changed)
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(bad)
    assert opt.state_dict() == before


def test_adam_state_must_match_step():
    opt = Adam([Value(1.0)])
    sd = opt.state_dict()
    sd["step"] = 3
    with pytest.raises(ValueError, match=r"Expected a list for exp_avg after 3 steps, got null"):
        opt.load_state_dict(sd)


def test_optimizer_from_state_rejects_unknown_type():
    with pytest.raises(ValueError,
                       match=r"Expected an optimizer state with a type in \['Adam', 'SGD'\], got 'RMSprop'"):
        optimizer_from_state([Value(1.0)], {"type": "RMSprop"})


# ---- argument checks ----

BAD_ARGUMENTS = {
    "sgd_negative_lr": (SGD, dict(lr=-1.0), r"Expected lr >= 0, got -1.0"),
    "sgd_nan_lr": (SGD, dict(lr=float("nan")), r"Expected lr to be a finite number, got nan"),
    "sgd_string_lr": (SGD, dict(lr="0.1"), r"Expected lr to be a finite number, got '0.1'"),
    "sgd_bool_lr": (SGD, dict(lr=True), r"Expected lr to be a finite number, got True"),
    "sgd_negative_momentum": (SGD, dict(lr=0.1, momentum=-0.5), r"Expected momentum >= 0, got -0.5"),
    "sgd_negative_weight_decay": (SGD, dict(lr=0.1, weight_decay=-1), r"Expected weight_decay >= 0, got -1"),
    "sgd_dampening_above_one": (SGD, dict(lr=0.1, momentum=0.9, dampening=1.5),
                                r"Expected dampening <= 1.0, got 1.5"),
    "nesterov_without_momentum": (SGD, dict(lr=0.1, nesterov=True),
                                  r"Expected momentum > 0 and dampening == 0 with nesterov, got momentum=0"),
    "nesterov_with_dampening": (SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
                                r"got momentum=0.9, dampening=0.1"),
    "nesterov_not_bool": (SGD, dict(lr=0.1, momentum=0.9, nesterov=1), r"Expected nesterov to be True or False, got 1"),
    "adam_negative_lr": (Adam, dict(lr=-1e-3), r"Expected lr >= 0, got -0.001"),
    "adam_beta1_one": (Adam, dict(betas=(1.0, 0.999)), r"Expected betas\[0\] < 1.0, got 1.0"),
    "adam_beta2_negative": (Adam, dict(betas=(0.9, -0.1)), r"Expected betas\[1\] >= 0, got -0.1"),
    "adam_beta2_inf": (Adam, dict(betas=(0.9, float("inf"))), r"Expected betas\[1\] to be a finite number, got inf"),
    "adam_one_beta": (Adam, dict(betas=(0.9,)), r"Expected betas to be a pair of numbers, got \(0.9,\)"),
    "adam_negative_eps": (Adam, dict(eps=-1e-8), r"Expected eps >= 0, got -1e-08"),
    "adam_negative_weight_decay": (Adam, dict(weight_decay=-0.1), r"Expected weight_decay >= 0, got -0.1"),
}


@pytest.mark.parametrize("cls,kwargs,message", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_hyperparameters(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls([Value(1.0)], **kwargs)


class _FakeModule:
    def forward(self, x):
        return x


@pytest.mark.parametrize("parameters,message", [
    ([], r"Expected at least one parameter, got none"),
    ([Value(1.0), 2.0], r"Expected parameter 1 to be a Value, got float"),
    (_FakeModule(), r"Expected a list of parameter Values \(model.parameters\(\)\), got the module _FakeModule"),
], ids=["empty", "float", "module"])
def test_bad_parameter_lists(parameters, message):
    with pytest.raises(ValueError, match=message):
        SGD(parameters, lr=0.1)


def test_duplicate_parameters_are_refused():
    p = Value(1.0)
    with pytest.raises(ValueError, match="Expected each parameter once, got duplicates"):
        Adam([p, Value(2.0), p])


def test_bad_lr_set_between_steps_is_refused_before_any_update():
    p = Value(1.0)
    opt = SGD([p], lr=0.1)
    p.grad = 1.0
    opt.lr = -0.1
    with pytest.raises(ValueError, match=r"Expected lr >= 0, got -0.1"):
        opt.step()
    assert p.v == 1.0 and opt.step_count == 0


# ---- learning-rate schedules ----

def _torch_lrs(torch, make_scheduler, base_lr, steps):
    t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([t], lr=base_lr)
    scheduler = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.get_last_lr()[0])
        opt.step()
        scheduler.step()
    return lrs


SCHEDULE_CASES = {
    "cosine": (dict(schedule="cosine"), lambda s, o, n: s.CosineAnnealingLR(o, T_max=n)),
    "cosine_eta_min": (dict(schedule="cosine", eta_min=0.01),
                       lambda s, o, n: s.CosineAnnealingLR(o, T_max=n, eta_min=0.01)),
    "step": (dict(schedule="step", step_size=3), lambda s, o, n: s.StepLR(o, step_size=3)),
    "step_gamma": (dict(schedule="step", step_size=4, gamma=0.5),
                   lambda s, o, n: s.StepLR(o, step_size=4, gamma=0.5)),
    "constant": (dict(schedule="constant"), lambda s, o, n: s.ConstantLR(o, factor=1.0)),
}


@pytest.mark.parametrize("options,make", SCHEDULE_CASES.values(), ids=SCHEDULE_CASES.keys())
def test_schedules_match_torch(options, make):
    torch = pytest.importorskip("torch")
    total, base_lr = 20, 0.3
    options = dict(options)
    schedule = options.pop("schedule")
    want = _torch_lrs(torch, lambda o: make(torch.optim.lr_scheduler, o, total), base_lr, total + 1)
    got = [lr_at(schedule, base_lr, k, total, **options) for k in range(total + 1)]
    for k, (a, b) in enumerate(zip(got, want)):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15), f"step {k}: {a!r} vs torch {b!r}"
    assert len(set(got)) > 1 or schedule == "constant"


def test_cosine_end_points():
    assert lr_at("cosine", 0.1, 0, 10) == 0.1
    assert lr_at("cosine", 0.1, 10, 10) == 0.0
    assert lr_at("cosine", 0.1, 5, 10) == pytest.approx(0.05, rel=1e-15)


@pytest.mark.parametrize("args,kwargs,message", [
    (("linear", 0.1, 0, 10), {}, r"Expected a schedule in \['constant', 'cosine', 'step'\], got 'linear'"),
    (("cosine", 0.1, 0, 10), dict(gamma=0.5),
     r"Expected options of the 'cosine' schedule among \['eta_min'\], got \['gamma'\]"),
    (("cosine", 0.1, 11, 10), {}, r"Expected step <= total_steps \(10\), got 11"),
    (("cosine", 0.1, 0, None), {}, r"Expected total_steps to be an integer >= 1, got None"),
    (("cosine", -0.1, 0, 10), {}, r"Expected base_lr to be a finite number >= 0, got -0.1"),
    (("step", 0.1, 0), {}, r"Expected step_size to be an integer >= 1, got None"),
    (("step", 0.1, -1), dict(step_size=2), r"Expected step to be an integer >= 0, got -1"),
    (("step", 0.1, 1.5), dict(step_size=2), r"Expected step to be an integer >= 0, got 1.5"),
], ids=["unknown", "unknown_option", "past_end", "no_total", "negative_lr", "no_step_size",
        "negative_step", "float_step"])
def test_bad_schedule_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        lr_at(*args, **kwargs)
