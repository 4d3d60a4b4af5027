"""Layers against PyTorch (float64) with the same weights, and the Module API.

Weights travel to torch through ``state_dict()``, whose keys and shapes are torch's layout;
so every comparison here also checks that layout. The API tests at the end need no torch.
"""
import json
import math
import random

import pytest
from conftest import assert_all_close

import minigrad
from minigrad import Value, as_value_array, flatten, nn
from minigrad.losses import cross_entropy, mse_loss, one_hot_pm1

TORCH_ACTIVATIONS = {"identity": lambda t: t, "tanh": lambda t: t.tanh(), "relu": lambda t: t.relu(),
                     "sigmoid": lambda t: t.sigmoid()}


def random_map(rng, channels, height, width, low=-1.0, high=1.0):
    return [[[rng.uniform(low, high) for _ in range(width)] for _ in range(height)] for _ in range(channels)]


def torch_parameters(torch, model):
    """The model's parameters as torch tensors that require grad, keyed like ``state_dict()``."""
    return {name: torch.tensor(values, dtype=torch.float64, requires_grad=True)
            for name, values in model.state_dict().items()}


def assert_parameter_grads_match(model, t_params):
    for name, shape, values in model.named_tensors():
        t = t_params[name]
        assert tuple(t.shape) == tuple(shape), name
        assert_all_close([p.grad for p in values], t.grad.flatten().tolist(), f"{name}.grad")


def backward_with(outputs, upstream):
    """Backpropagate ``sum(outputs * upstream)`` from nested lists of Values and floats."""
    minigrad.backward(flatten(outputs), flatten(upstream))


# ---- Neuron and Linear ----

@pytest.mark.parametrize("activation", ["identity", "tanh", "relu", "sigmoid"])
def test_linear_matches_torch(torch, activation):
    rng = random.Random(7)
    layer = nn.Linear(7, 4, activation, seed=3)
    layer.neurons[2].b.v = 0.3  # a non-zero bias, so a dropped bias shows
    x0 = [rng.uniform(-2, 2) for _ in range(7)]
    upstream = [rng.uniform(-1, 1) for _ in range(4)]
    x = [Value(v) for v in x0]
    out = layer(x)
    backward_with(out, upstream)

    t = torch_parameters(torch, layer)
    assert set(t) == {"weight", "bias"} and tuple(t["weight"].shape) == (4, 7)
    tx = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    t_out = TORCH_ACTIVATIONS[activation](torch.nn.functional.linear(tx, t["weight"], t["bias"]))
    t_out.backward(torch.tensor(upstream, dtype=torch.float64))

    assert_all_close([o.v for o in out], t_out.tolist(), "outputs")
    assert_all_close([v.grad for v in x], tx.grad.tolist(), "input grads")
    assert_parameter_grads_match(layer, t)


def test_neuron_matches_torch(torch):
    neuron = nn.Neuron(5, "tanh", seed=1)
    neuron.b.v = -0.2
    x0 = [0.5, -1.0, 2.0, 0.25, -0.75]
    x = [Value(v) for v in x0]
    out = neuron(x)
    out.backward(1.3)

    t = torch_parameters(torch, neuron)
    tx = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    t_out = (t["weight"] @ tx + t["bias"][0]).tanh()
    t_out.backward(torch.tensor(1.3, dtype=torch.float64))
    assert_all_close([out.v], [t_out.item()], "output")
    assert_all_close([v.grad for v in x], tx.grad.tolist(), "input grads")
    assert_parameter_grads_match(neuron, t)


# ---- Conv2D ----

CONV_CASES = [
    # (width, height, kernel, stride, in_channels, out_channels, activation)
    (5, 5, 1, 1, 1, 1, "identity"),
    (4, 6, 2, 2, 1, 2, "tanh"),
    (7, 5, 3, 2, 2, 3, "relu"),
    (9, 6, 3, 3, 3, 2, "sigmoid"),
    (8, 10, 4, 2, 1, 4, "tanh"),
    (6, 9, 5, 1, 2, 2, "identity"),
    (5, 5, 5, 1, 3, 1, "tanh"),       # kernel as big as the input: one output
    (3, 5, 1, 2, 3, 4, "relu"),
    (11, 8, 2, 3, 2, 3, "sigmoid"),
    (15, 15, 5, 2, 1, 15, "tanh"),    # the reference net's first layer
    (6, 6, 4, 2, 15, 12, "tanh"),     # and its second
]


def _conv_case(case, seed):
    width, height, k, stride, cin, cout, act = case
    conv = nn.Conv2D(width, height, k, stride, cin, cout, act, seed=seed)
    for i, n in enumerate(conv.neurons):
        n.b.v = 0.1 * (i + 1) * (-1) ** i
    rng = random.Random(seed)
    image = random_map(rng, cin, height, width)
    upstream = random_map(rng, cout, conv.out_height, conv.out_width)
    return conv, image, upstream


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "w{}h{}k{}s{}i{}o{}-{}".format(*c))
def test_conv2d_matches_torch(torch, case):
    conv, image, upstream = _conv_case(case, seed=CONV_CASES.index(case))
    x = as_value_array(image)
    out = conv(x)
    backward_with(out, upstream)

    t = torch_parameters(torch, conv)
    tx = torch.tensor([image], dtype=torch.float64, requires_grad=True)
    t_out = TORCH_ACTIVATIONS[case[6]](
        torch.nn.functional.conv2d(tx, t["weight"], t["bias"], stride=case[3]))
    t_out.backward(torch.tensor([upstream], dtype=torch.float64))

    assert minigrad.core.shape_of(out) == tuple(t_out.shape[1:]) == conv.output_shape()
    assert_all_close([o.v for o in flatten(out)], t_out.flatten().tolist(), "outputs")
    assert_all_close([v.grad for v in flatten(x)], tx.grad.flatten().tolist(), "input grads")
    assert_parameter_grads_match(conv, t)


@pytest.mark.parametrize("case", [CONV_CASES[2], CONV_CASES[4], CONV_CASES[9]],
                         ids=["k3s2", "k4s2", "reference"])
def test_conv2d_float_inputs_match_value_inputs(case):
    np = pytest.importorskip("numpy")
    runs = []
    for kind in ["values", "lists", "numpy"]:
        conv, image, upstream = _conv_case(case, seed=11)
        x = {"values": as_value_array(image), "lists": image, "numpy": np.array(image)}[kind]
        out = conv(x)
        backward_with(out, upstream)
        runs.append(([o.v for o in flatten(out)], [p.grad for p in conv.parameters()]))
    assert runs[0] == runs[1] == runs[2]
    assert any(runs[0][1])



# ---- requires_grad: constants among a layer's inputs ----

def _torch_layer(torch, layer, t_params):
    F = torch.nn.functional
    if isinstance(layer, nn.Linear):
        return lambda tx: TORCH_ACTIVATIONS[layer.activation](F.linear(tx, t_params["weight"], t_params["bias"]))
    if isinstance(layer, nn.Conv2D):
        return lambda tx: TORCH_ACTIVATIONS[layer.activation](
            F.conv2d(tx[None], t_params["weight"], t_params["bias"], stride=layer.stride)[0])
    pool = F.max_pool2d if isinstance(layer, nn.MaxPool2D) else F.avg_pool2d
    return lambda tx: pool(tx[None], layer.kernel_size, layer.stride)[0]


CONSTANT_INPUT_CASES = {
    "linear": (lambda: nn.Linear(7, 4, "tanh", seed=3), (7,)),
    "conv": (lambda: nn.Conv2D(7, 5, 3, 2, 2, 3, "relu", seed=2), (2, 5, 7)),
    "conv_reference_second": (lambda: nn.Conv2D(6, 6, 4, 2, 15, 12, "tanh", seed=4), (15, 6, 6)),
    "conv_sigmoid": (lambda: nn.Conv2D(9, 6, 3, 3, 3, 2, "sigmoid", seed=5), (3, 6, 9)),
    "max_pool": (lambda: nn.MaxPool2D(2, 1), (2, 4, 5)),
    "avg_pool": (lambda: nn.AvgPool2D(3, 2), (1, 7, 7)),
}


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", sorted(CONSTANT_INPUT_CASES))
def test_layers_with_constant_inputs_match_torch(torch, name, fused):
    build, in_shape = CONSTANT_INPUT_CASES[name]
    layer = build().set_fused(fused)
    rng = random.Random(len(name))
    flat = [rng.uniform(-1, 1) for _ in range(math.prod(in_shape))]
    requires = [rng.random() < 0.5 for _ in flat]
    x = minigrad.reshape([Value(v, requires_grad=r) for v, r in zip(flat, requires)], in_shape)
    out = layer(x)
    upstream = [rng.uniform(-1, 1) for _ in flatten(out)]
    minigrad.backward(flatten(out), upstream)

    t_params = torch_parameters(torch, layer)
    tx = torch.tensor(flat, dtype=torch.float64).reshape(in_shape).requires_grad_()
    t_out = _torch_layer(torch, layer, t_params)(tx)
    t_out.backward(torch.tensor(upstream, dtype=torch.float64).reshape(t_out.shape))

    assert_all_close([o.v for o in flatten(out)], t_out.flatten().tolist(), "outputs")
    t_grads = tx.grad.flatten().tolist()
    for i, (v, r) in enumerate(zip(flatten(x), requires)):
        if r:
            assert_all_close([v.grad], [t_grads[i]], f"input {i} grad")
        else:
            assert v.grad is None, f"constant input {i} got a gradient"
    if t_params:
        assert_parameter_grads_match(layer, t_params)


@pytest.mark.parametrize("fused", [True, False])
def test_reference_cnn_with_constant_image_gives_the_same_parameter_gradients(fused):
    rng = random.Random(5)
    image = random_map(rng, 1, 15, 15)
    runs = []
    for x in [image, as_value_array(image, requires_grad=False), as_value_array(image)]:
        model = nn.CNN.reference(seed=1, fused=fused)
        loss = mse_loss(model(x), one_hot_pm1(4, 10))
        loss.backward()
        runs.append((loss.v, [p.grad for p in model.parameters()]))
        if isinstance(x[0][0][0], Value):
            assert all((v.grad is None) != v.requires_grad for v in flatten(x))
    assert runs[0] == runs[1]
    assert runs[0][0] == runs[2][0]
    assert_all_close(runs[2][1], runs[0][1], "parameter grads with and without input gradients")


def test_fused_layer_is_one_node_per_output_with_its_activation():
    layer = nn.Linear(3, 2, "tanh", seed=0)
    out = layer([Value(1.0), Value(2.0), Value(3.0)])
    assert [type(o.grad_fn).__name__ for o in out] == ["WeightedSumBackward"] * 2
    plain = layer.set_fused(False)([Value(1.0), Value(2.0), Value(3.0)])
    assert [type(o.grad_fn).__name__ for o in plain] == ["TanhBackward"] * 2
    assert [o.v for o in out] == [o.v for o in plain]

# ---- pooling and flatten ----

POOL_CASES = [
    # (channels, height, width, kernel, stride)
    (1, 4, 4, 2, None),
    (2, 5, 6, 2, None),   # floor mode: the last row is dropped
    (1, 7, 7, 3, 2),
    (3, 4, 5, 2, 1),      # overlapping windows
    (1, 6, 4, 3, 3),
    (2, 3, 3, 3, None),   # one window
]


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "c{}h{}w{}k{}s{}".format(*c))
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_matches_torch(torch, kind, case):
    channels, height, width, k, stride = case
    rng = random.Random(sum(case[:4]))
    # small integers: many ties, where torch's max_pool2d gives the gradient to the first maximum
    image = [[[float(rng.randint(-2, 2)) for _ in range(width)] for _ in range(height)] for _ in range(channels)]
    layer = (nn.MaxPool2D if kind == "max" else nn.AvgPool2D)(k, stride)
    x = as_value_array(image)
    out = layer(x)
    upstream = random_map(rng, *minigrad.core.shape_of(out))
    backward_with(out, upstream)

    tx = torch.tensor([image], dtype=torch.float64, requires_grad=True)
    pool = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
    t_out = pool(tx, k, stride)
    t_out.backward(torch.tensor([upstream], dtype=torch.float64))

    assert minigrad.core.shape_of(out) == tuple(t_out.shape[1:])
    assert_all_close([o.v for o in flatten(out)], t_out.flatten().tolist(), "outputs")
    assert_all_close([v.grad for v in flatten(x)], tx.grad.flatten().tolist(), "input grads")


def test_max_pool_gives_a_tie_to_the_first_maximum():
    x = as_value_array([[[1.0, 3.0], [3.0, 3.0]]])
    out = nn.MaxPool2D(2)(x)
    out[0][0][0].backward()
    assert [v.grad for v in flatten(x)] == [0.0, 1.0, 0.0, 0.0]


def test_pooling_rejects_small_maps():
    with pytest.raises(ValueError):
        nn.MaxPool2D(3)([[[1.0, 2.0], [3.0, 4.0]]])
    with pytest.raises(ValueError):
        nn.AvgPool2D(2, 0)


def test_flatten_runs_channel_row_column(torch):
    numbered = [[[100 * c + 10 * r + col for col in range(4)] for r in range(3)] for c in range(2)]
    flat = nn.Flatten()(numbered)
    assert flat == sorted(flat) and len(flat) == 24
    assert flat == torch.tensor(numbered).flatten().tolist()
    x = as_value_array(numbered)
    assert all(a is b for a, b in zip(nn.Flatten()(x), [v for ch in x for row in ch for v in row]))


# ---- Sequential ----

def _sequential():
    return nn.Sequential(
        nn.Conv2D(7, 7, 3, 2, 2, 3, "relu", seed=1),   # 3 x 3 x 3
        nn.MaxPool2D(2, 1),                           # 3 x 2 x 2
        nn.Flatten(),                                 # 12
        nn.Linear(12, 5, "sigmoid", seed=2),
        nn.Tanh(),
        nn.Linear(5, 2, None, seed=3),
    )


def test_sequential_matches_torch(torch):
    model = _sequential()
    rng = random.Random(5)
    image = random_map(rng, 2, 7, 7)
    x = as_value_array(image)
    out = model(x)
    backward_with(out, [0.7, -1.3])

    t = torch_parameters(torch, model)
    assert list(t) == ["0.weight", "0.bias", "3.weight", "3.bias", "5.weight", "5.bias"]
    F = torch.nn.functional
    tx = torch.tensor([image], dtype=torch.float64, requires_grad=True)
    h = F.max_pool2d(F.conv2d(tx, t["0.weight"], t["0.bias"], stride=2).relu(), 2, 1).flatten()
    h = F.linear(h, t["3.weight"], t["3.bias"]).sigmoid().tanh()
    t_out = F.linear(h, t["5.weight"], t["5.bias"])
    t_out.backward(torch.tensor([0.7, -1.3], dtype=torch.float64))

    assert_all_close([o.v for o in out], t_out.tolist(), "outputs")
    assert_all_close([v.grad for v in flatten(x)], tx.grad.flatten().tolist(), "input grads")
    assert_parameter_grads_match(model, t)
    assert len(model) == 6 and model[3] is model.layers[3]


# ---- fused and op by op ----

def _run(model, image, upstream):
    x = as_value_array(image)
    out = model(x)
    backward_with(out, upstream)
    return [o.v for o in flatten(out)], [v.grad for v in flatten(x)], [p.grad for p in model.parameters()]


FUSED_CASES = {
    "linear": (lambda: nn.Linear(9, 4, "tanh", seed=1), (9,), (4,)),
    "conv": (lambda: nn.Conv2D(7, 5, 3, 2, 2, 3, "sigmoid", seed=2), (2, 5, 7), (3, 2, 3)),
    "sequential": (_sequential, (2, 7, 7), (2,)),
    "reference_cnn": (lambda: nn.CNN.reference(seed=0), (1, 15, 15), (10,)),
}


def _fused_and_plain(name):
    build, in_shape, out_shape = FUSED_CASES[name]
    rng = random.Random(3)
    image = minigrad.reshape([rng.uniform(-1, 1) for _ in range(math.prod(in_shape))], in_shape)
    upstream = minigrad.reshape([rng.uniform(-1, 1) for _ in range(math.prod(out_shape))], out_shape)
    model = build()
    fused = _run(model, image, upstream)
    model.zero_grad()
    model.set_fused(False)
    plain = _run(model, image, upstream)
    assert any(fused[2]) and any(fused[1])
    return fused, plain


@pytest.mark.parametrize("name", sorted(FUSED_CASES))
def test_fused_and_op_by_op_agree(name):
    fused, plain = _fused_and_plain(name)
    assert fused[0] == plain[0], "outputs"  # the same additions in the same order
    assert_all_close(fused[1], plain[1], "input grads")
    assert_all_close(fused[2], plain[2], "parameter grads")


def test_op_by_op_builds_one_node_per_multiply_and_add():
    layer = nn.Linear(3, 1, seed=0)
    out = layer([Value(1.0), Value(2.0), Value(3.0)])[0]
    assert type(out.grad_fn).__name__ == "WeightedSumBackward"
    out = layer.set_fused(False)([Value(1.0), Value(2.0), Value(3.0)])[0]
    assert type(out.grad_fn).__name__ == "AddBackward"


# ---- the reference CNN ----

def torch_reference_cnn(torch, model):
    """Conv2d(1,15,5,2)+tanh, Conv2d(15,12,4,2)+tanh, flatten, Linear(48,35)+tanh, Linear(35,10)+tanh."""
    tnn = torch.nn
    net = tnn.Sequential(tnn.Conv2d(1, 15, 5, 2), tnn.Tanh(), tnn.Conv2d(15, 12, 4, 2), tnn.Tanh(),
                         tnn.Flatten(0), tnn.Linear(48, 35), tnn.Tanh(), tnn.Linear(35, 10), tnn.Tanh()).double()
    names = {"conv.0": "0", "conv.1": "2", "hidden": "5", "output": "7"}
    state = {}
    for key, values in model.state_dict().items():
        layer, tensor = key.rsplit(".", 1)
        state[f"{names[layer]}.{tensor}"] = torch.tensor(values, dtype=torch.float64)
    net.load_state_dict(state)  # strict: names and shapes must all match torch's
    return net, {key: net.get_parameter(f"{names[key.rsplit('.', 1)[0]]}.{key.rsplit('.', 1)[1]}")
                 for key in model.state_dict()}


def _digit(seed):
    rng = random.Random(seed)
    return random_map(rng, 1, 15, 15, -1.0, 2.0)


@pytest.mark.parametrize("value_inputs", [False, True])
def test_reference_cnn_mse_matches_torch(torch, value_inputs):
    model = nn.CNN.reference(seed=0)
    for i, p in enumerate(model.parameters()[::97]):  # the init has zero biases; make some not
        p.v += 0.01 * (i % 7 - 3)
    image, label = _digit(1), 3
    x = as_value_array(image) if value_inputs else image
    out = model(x)
    loss = mse_loss(out, one_hot_pm1(label, 10))
    loss.backward()

    net, t_params = torch_reference_cnn(torch, model)
    tx = torch.tensor([image], dtype=torch.float64, requires_grad=value_inputs)
    t_out = net(tx)
    t_loss = torch.nn.functional.mse_loss(t_out, torch.tensor(one_hot_pm1(label, 10), dtype=torch.float64))
    t_loss.backward()

    assert_all_close([o.v for o in out], t_out.tolist(), "outputs")
    assert_all_close([loss.v], [t_loss.item()], "loss")
    assert_parameter_grads_match(model, t_params)
    if value_inputs:
        assert_all_close([v.grad for v in flatten(x)], tx.grad.flatten().tolist(), "input grads")


def test_reference_cnn_cross_entropy_matches_torch(torch):
    model = nn.reference_cnn(seed=4)
    image, label = _digit(2), 7
    out = model(image)
    loss = cross_entropy(out, label)
    loss.backward()

    net, t_params = torch_reference_cnn(torch, model)
    t_out = net(torch.tensor([image], dtype=torch.float64))
    t_loss = torch.nn.functional.cross_entropy(t_out[None], torch.tensor([label]))
    t_loss.backward()
    assert_all_close([o.v for o in out], t_out.tolist(), "outputs")
    assert_all_close([loss.v], [t_loss.item()], "loss")
    assert_parameter_grads_match(model, t_params)


def test_parameter_order_follows_torch_layout(torch):
    """Layer by layer, neuron by neuron: a neuron's weights (in_channel, kh, kw) then its bias."""
    model = nn.CNN.reference(seed=2)
    for i, p in enumerate(model.parameters()):
        p.v += 1e-6 * i  # distinct biases too
    _, t_params = torch_reference_cnn(torch, model)
    expected = []
    for layer in ["conv.0", "conv.1", "hidden", "output"]:
        w, b = t_params[f"{layer}.weight"], t_params[f"{layer}.bias"]
        for o in range(w.shape[0]):
            expected += w[o].flatten().tolist() + [b[o].item()]
    assert model.parameter_values() == expected
    assert [p.v for p in model.get_parameters()] == expected


# ---- the Module API (no torch) ----

def test_reference_cnn_has_5357_parameters():
    model = nn.CNN.reference(seed=0)
    assert len(model.parameters()) == len(model.get_parameters()) == 5357
    sizes = {name: math.prod(shape) for name, shape, _ in model.named_tensors()}
    assert sizes == {"conv.0.weight": 375, "conv.0.bias": 15, "conv.1.weight": 2880, "conv.1.bias": 12,
                     "hidden.weight": 1680, "hidden.bias": 35, "output.weight": 350, "output.bias": 10}
    assert len(nn.reference_cnn(0).parameters()) == 5357
    assert len({id(p) for p in model.parameters()}) == 5357


def _index(nested, indices):
    for i in indices:
        nested = nested[i]
    return nested


def test_named_parameters_are_unique_stable_and_in_parameter_order():
    model = nn.CNN.reference(seed=0)
    named = model.named_parameters()
    names = [name for name, _ in named]
    assert len(set(names)) == len(names) == 5357
    assert [p for _, p in named] == model.parameters()
    assert names == [name for name, _ in nn.CNN.reference(seed=9).named_parameters()]
    state = model.state_dict()
    for name, p in named:
        tensor = next(t for t in state if name.startswith(t + "."))
        indices = [int(i) for i in name[len(tensor) + 1:].split(".")]
        assert _index(state[tensor], indices) == p.v, name
    by_name = dict(named)
    assert by_name["hidden.weight.3.17"].v == state["hidden.weight"][3][17]
    assert by_name["conv.0.weight.2.0.4.1"].v == state["conv.0.weight"][2][0][4][1]
    assert by_name["conv.0.bias.2"] is model.convs[0].neurons[2].b


def test_state_dict_round_trip():
    source, target = nn.CNN.reference(seed=0), nn.CNN.reference(seed=1)
    state = json.loads(json.dumps(source.state_dict()))  # plain JSON-able nested lists
    assert minigrad.core.shape_of(state["conv.1.weight"]) == (12, 15, 4, 4)
    assert minigrad.core.shape_of(state["output.bias"]) == (10,)
    assert target.parameter_values() != source.parameter_values()
    target.load_state_dict(state)
    assert target.parameter_values() == source.parameter_values()
    assert target.state_dict() == source.state_dict()


def _corrupt(state, how):
    state = json.loads(json.dumps(state))
    if how == "missing":
        del state["hidden.bias"]
    elif how == "extra":
        state["extra.weight"] = [1.0]
    elif how == "short_rows":
        state["output.weight"] = state["output.weight"][:-1]
    elif how == "short_row":
        state["output.weight"][4] = state["output.weight"][4][:-1]
    elif how == "too_deep":
        state["output.bias"] = [[b] for b in state["output.bias"]]
    elif how == "nan":
        state["output.bias"][9] = math.nan
    elif how == "inf":
        state["output.weight"][0][0] = -math.inf
    elif how == "string":
        state["output.bias"][9] = "0.5"
    elif how == "none":
        state["output.bias"][0] = None
    elif how == "not_a_dict":
        state = list(state.items())
    return state


@pytest.mark.parametrize("how", ["missing", "extra", "short_rows", "short_row", "too_deep", "nan", "inf",
                                 "string", "none", "not_a_dict"])
def test_load_state_dict_rejects_bad_states_and_changes_nothing(how):
    model = nn.CNN.reference(seed=0)
    before = model.parameter_values()
    # every other tensor is valid and different, so a partial load would show
    bad = _corrupt(nn.CNN.reference(seed=1).state_dict(), how)
    with pytest.raises(ValueError):
        model.load_state_dict(bad)
    assert model.parameter_values() == before


def test_load_state_dict_names_the_mismatch():
    model = nn.Linear(3, 2, seed=0)
    state = model.state_dict()
    del state["bias"]
    with pytest.raises(ValueError, match="bias"):
        model.load_state_dict(state)


@pytest.mark.parametrize("args", [
    # (width, height, kernel, stride)
    (5, 5, 2, 2),    # (5 - 2) % 2 != 0
    (6, 5, 2, 2),    # fits the width, not the height
    (5, 6, 2, 2),    # fits the height, not the width
    (3, 5, 4, 1),    # kernel wider than the input
    (5, 3, 4, 1),    # kernel taller than the input
    (15, 15, 4, 2),  # (15 - 4) % 2 != 0
    (5, 5, 0, 1),
    (5, 5, 1, 0),
])
def test_conv2d_rejects_geometries_that_do_not_fit(args):
    width, height, k, stride = args
    with pytest.raises(ValueError):
        nn.Conv2D(width, height, k, stride, 1, 1)


def test_layers_reject_wrong_input_shapes():
    conv = nn.Conv2D(5, 4, 2, 1, 2, 3, seed=0)
    with pytest.raises(ValueError, match="Expected 2 input channels, got 1"):
        conv(random_map(random.Random(0), 1, 4, 5))
    with pytest.raises(ValueError, match="Expected 2 input channels, got 3"):
        conv(random_map(random.Random(0), 3, 4, 5))
    with pytest.raises(ValueError):
        conv(random_map(random.Random(0), 2, 5, 4))  # height and width swapped
    with pytest.raises(ValueError):
        conv(random_map(random.Random(0), 2, 4, 6))
    with pytest.raises(ValueError, match="Expected 7 inputs, got 6"):
        nn.Linear(7, 2, seed=0)([0.0] * 6)
    with pytest.raises(ValueError):
        nn.CNN.reference(seed=0)(random_map(random.Random(0), 1, 14, 15))
    assert conv(random_map(random.Random(0), 2, 4, 5))  # the right shape works


SEEDED_BUILDERS = {
    "linear": lambda seed: nn.Linear(6, 3, "tanh", seed=seed),
    "conv": lambda seed: nn.Conv2D(5, 5, 3, 1, 2, 4, seed=seed),
    "reference_cnn": lambda seed: nn.CNN.reference(seed=seed),
}


@pytest.mark.parametrize("name", sorted(SEEDED_BUILDERS))
def test_seeds_make_weights_reproducible(name):
    build = SEEDED_BUILDERS[name]
    assert build(0).parameter_values() == build(0).parameter_values()
    assert build(0).parameter_values() != build(1).parameter_values()


def test_init_is_lecun_uniform_with_zero_bias():
    model = nn.CNN.reference(seed=0)
    fan_ins = {"conv.0": 25, "conv.1": 240, "hidden": 48, "output": 35}
    for name, _, values in model.named_tensors():
        layer, tensor = name.rsplit(".", 1)
        floats = [p.v for p in values]
        if tensor == "bias":
            assert floats == [0.0] * len(floats), name
            continue
        bound = 2.89 / math.sqrt(fan_ins[layer])
        assert max(abs(w) for w in floats) <= bound, name
        # uniform over the whole range: both ends are reached, it is not a smaller scale
        assert max(floats) > 0.8 * bound and min(floats) < -0.8 * bound, name


CONFIG_BUILDERS = {
    "neuron": lambda: nn.Neuron(4, "sigmoid", seed=0),
    "linear": lambda: nn.Linear(6, 3, "relu", seed=0),
    "conv": lambda: nn.Conv2D(7, 5, 3, 2, 2, 4, "tanh", seed=0),
    "max_pool": lambda: nn.MaxPool2D(3, 2),
    "avg_pool": lambda: nn.AvgPool2D(2),
    "sequential": _sequential,
    "reference_cnn": lambda: nn.CNN.reference(seed=0),
    "cnn": lambda: nn.CNN(12, 9, 2, [nn.CNNLayerConfig(4, 3, 3, "relu"), nn.CNNLayerConfig(5, 2, 1, None)],
                          hidden_dim=6, n_classes=3, seed=0),
}


@pytest.mark.parametrize("name", sorted(CONFIG_BUILDERS))
def test_module_from_config_rebuilds_the_architecture(name):
    model = CONFIG_BUILDERS[name]()
    config = json.loads(json.dumps(model.config()))
    rebuilt = nn.module_from_config(config, seed=5)
    assert type(rebuilt) is type(model)
    assert rebuilt.config() == model.config()
    assert [(n, tuple(s)) for n, s, _ in rebuilt.named_tensors()] == \
        [(n, tuple(s)) for n, s, _ in model.named_tensors()]
    assert [n for n, _ in rebuilt.named_parameters()] == [n for n, _ in model.named_parameters()]


def test_module_from_config_with_the_same_seed_gives_the_same_cnn():
    model = nn.CNN.reference(seed=3)
    assert nn.module_from_config(model.config(), seed=3).parameter_values() == model.parameter_values()


@pytest.mark.parametrize("name", sorted(CONFIG_BUILDERS))
def test_build_size_counts_what_the_config_builds(name):
    """The size read from a config alone (checked against a checkpoint before anything is built)
    is every parameter plus every convolution's window indices."""
    model = CONFIG_BUILDERS[name]()
    layers = [model] + [m for _, m in _descendants(model)]
    built = len(model.parameters()) + sum(len(w) for m in layers for w in getattr(m, "_windows", ()))
    assert nn.config_size(json.loads(json.dumps(model.config()))) == built


def _descendants(module):
    for name, child in module.children():
        yield name, child
        yield from _descendants(child)


def test_a_new_layer_is_one_class(tmp_path):
    """A Module subclass with config, from_config and build_size is built from configs and
    checkpoints like a library layer, and its size is checked before it is built."""
    class Scale(nn.Module):
        def __init__(self, n, seed=None):
            self.n, self.weight = n, [Value(1.0 + i) for i in range(n)]

        def forward(self, x):
            return [w * xi for w, xi in zip(self.weight, x)]

        def own_parameters(self):
            return [(f"weight.{i}", w) for i, w in enumerate(self.weight)]

        def own_tensors(self):
            return [("weight", (self.n,), self.weight)]

        def config(self):
            return {"type": "Scale", "n": self.n}

        @classmethod
        def from_config(cls, config, rng):
            return cls(config["n"], rng)

        @classmethod
        def build_size(cls, config):
            return config["n"] if isinstance(config.get("n"), int) else 1

    try:
        model = nn.Sequential(Scale(3), nn.Linear(3, 2, seed=0))
        model.save(tmp_path / "scaled.json")
        rebuilt = nn.module_from_checkpoint(str(tmp_path / "scaled.json"))
        assert type(rebuilt[0]) is Scale and rebuilt.parameter_values() == model.parameter_values()
        assert nn.config_size(model.config()) == 3 + 2 * 4
        hostile = {"type": "Scale", "n": 10 ** 9}
        minigrad.checkpoint.atomic_write_json(tmp_path / "hostile.json", {
            "format": "minigrad-checkpoint", "version": 1, "model": hostile, "parameters": {"weight": [1.0]}})
        with pytest.raises(minigrad.checkpoint.CheckpointError, match="builds 1,000,000,000 parameters"):
            nn.module_from_checkpoint(str(tmp_path / "hostile.json"))
    finally:
        nn.LAYER_TYPES.pop("Scale", None)


def test_a_class_of_another_module_does_not_take_a_library_layers_name():
    class Linear(nn.Module):
        def forward(self, x):
            return x

        @classmethod
        def from_config(cls, config, rng):
            return cls()

    assert nn.LAYER_TYPES["Linear"] is nn.Linear
    assert type(nn.module_from_config(nn.Linear(2, 1).config())) is nn.Linear


def test_module_from_config_rejects_bad_configs():
    with pytest.raises(ValueError):
        nn.module_from_config({"type": "Nope"})
    with pytest.raises(ValueError):
        nn.module_from_config({"type": "Linear", "in_dim": 3})
    with pytest.raises(ValueError):
        nn.module_from_config("Linear")


def test_zero_grad_clears_every_parameter_gradient():
    model = _sequential()
    out = model(random_map(random.Random(1), 2, 7, 7))
    minigrad.backward(out, [1.0, 1.0])
    grads = [p.grad for p in model.parameters()]
    assert sum(g != 0.0 for g in grads) > len(grads) // 2
    model.zero_grad()
    assert all(p.grad == 0.0 for p in model.parameters())


def test_no_grad_layers_build_no_graph():
    model = _sequential()
    with minigrad.no_grad():
        out = model(as_value_array(random_map(random.Random(1), 2, 7, 7)))
    assert all(o.grad_fn is None for o in out)
    assert [o.v for o in out] == [o.v for o in model(random_map(random.Random(1), 2, 7, 7))]


@pytest.mark.parametrize("fused", [True, False])
def test_a_frozen_weight_gets_no_gradient_and_changes_no_other(fused):
    from minigrad.losses import mse_loss

    def grads(freeze):
        layer = nn.Conv2D(width=5, height=5, kernel_size=3, stride=1, in_channels=1, out_channels=2, seed=3)
        layer.set_fused(fused)
        if freeze:
            layer.parameters()[4].requires_grad = False
            layer.parameters()[9].requires_grad = False  # the first channel's bias
        x = [[[0.1 * (i - j) for j in range(5)] for i in range(5)]]
        mse_loss([v for plane in layer(x) for row in plane for v in row], [0.5] * 18).backward()
        return [p.grad for p in layer.parameters()]
    frozen, free = grads(True), grads(False)
    assert frozen[4] is None and frozen[9] is None
    assert [g for i, g in enumerate(frozen) if i not in (4, 9)] == [g for i, g in enumerate(free) if i not in (4, 9)]
