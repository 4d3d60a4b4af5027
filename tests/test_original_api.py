"""Code written for the original minigrad, as its README, notebook and tests use it, runs unchanged.

The user model below is written the way the original's training notebook writes its CNN: a
subclass of ``nn.Module`` that chains ``Conv2D`` layers by their attributes, names its own
parameters with ``get_parameters()``, and saves and loads the flat JSON checkpoint itself.
Every number is checked against PyTorch in float64.
"""
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

import minigrad
import minigrad.nn as nn
from conftest import assert_all_close
from minigrad.core import Value, ValueMatrix, as_value_array, flatten, relu, reshape, tanh, transpose, \
    value_array_to_list
from minigrad.optimizer import SGD

ORIGINAL_CHECKPOINT = Path(os.environ.get(
    "MINIGRAD_ORIGINAL_CHECKPOINT",
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "original-minigrad" / "model.json"))


@dataclass
class CNNLayerConfig:
    out_channels: int
    kernel_size: int
    stride: int
    activation: Optional[Callable[[Value], Value]]


class UserCNN(nn.Module):
    """The original notebook's model: convolutions, then a tanh hidden layer and a tanh output."""

    def __init__(self, width, height, in_channels, layers: list[CNNLayerConfig], hidden_dim=30, n_classes=10):
        self.in_channels = in_channels
        self.n_classes = n_classes
        self.conv_layers = []
        w, h, c = width, height, in_channels
        for layer in layers:
            conv = nn.Conv2D(width=w, height=h, kernel_size=layer.kernel_size, stride=layer.stride,
                             in_channels=c, out_channels=layer.out_channels, activation=layer.activation)
            w, h, c = conv.out_width, conv.out_height, conv.out_channels
            self.conv_layers.append(conv)
        self.linear = nn.Linear(self.conv_layers[-1].output_size, hidden_dim, tanh)
        self.out_proj = nn.Linear(hidden_dim, n_classes, tanh)

    def get_parameters(self) -> list[Value]:
        return flatten([[c.get_parameters() for c in self.conv_layers],
                        self.linear.get_parameters(), self.out_proj.get_parameters()])

    def save(self, path):
        with open(path, "w") as f:
            json.dump([p.v for p in self.get_parameters()], f)

    def load(self, path):
        with open(path) as f:
            for p, new_p in zip(self.get_parameters(), json.load(f)):
                p.v = new_p
                p.grad = 0
                p.grad_fn = None

    def forward(self, x: list[ValueMatrix]) -> list[Value]:
        for conv in self.conv_layers:
            x = conv.forward(x)
        return self.out_proj.forward(self.linear.forward(flatten(x)))


def reference_user_cnn():
    return UserCNN(15, 15, 1, [CNNLayerConfig(15, 5, 2, tanh), CNNLayerConfig(12, 4, 2, tanh)], 35, 10)


def mean_squared(y_arr, y_pred_arr):
    return sum((y - y_pred).abs() ** 2 for y, y_pred in zip(y_arr, y_pred_arr)) / len(y_arr)


def targets_pm1(label, n_classes=10):
    y = as_value_array(-np.ones(n_classes, dtype=np.float64))
    y[label].v = 1
    return y


def seeded_parameters(model, seed):
    rng = random.Random(seed)
    for p in model.get_parameters():
        p.v = rng.uniform(-0.5, 0.5)


def torch_twin(torch, model):
    """The user model's network in torch, holding the same parameters."""
    convs = [torch.nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in model.conv_layers]
    layers = []
    for conv in convs:
        layers += [conv, torch.nn.Tanh()]
    hidden = torch.nn.Linear(model.linear.in_dim, model.linear.out_dim)
    out = torch.nn.Linear(model.out_proj.in_dim, model.out_proj.out_dim)
    net = torch.nn.Sequential(*layers, torch.nn.Flatten(), hidden, torch.nn.Tanh(), out, torch.nn.Tanh()).double()
    with torch.no_grad():
        for layer, theirs in zip(convs + [hidden, out], model.conv_layers + [model.linear, model.out_proj]):
            neurons = theirs.filters.neurons if isinstance(theirs, nn.Conv2D) else theirs.neurons
            layer.weight.copy_(torch.tensor([[w.v for w in n.weight] for n in neurons],
                                            dtype=torch.float64).reshape(layer.weight.shape))
            layer.bias.copy_(torch.tensor([n.bias.v for n in neurons], dtype=torch.float64))
    return net


def torch_parameters_flat(net):
    """torch's parameters in the original's ``get_parameters()`` order: per neuron, weights then bias."""
    out = []
    for layer in net:
        if hasattr(layer, "weight"):
            for w_row, b in zip(layer.weight.detach().reshape(layer.weight.shape[0], -1).tolist(),
                                layer.bias.detach().tolist()):
                out += w_row + [b]
    return out


def test_the_notebook_imports_resolve():
    assert ValueMatrix == list[list[Value]]
    assert minigrad.nn is nn and minigrad.optimizer.SGD is SGD  # `import minigrad` reaches the submodules
    assert tanh(Value(0.5)).v == Value(0.5).tanh().v


def test_neuron_weight_and_bias_by_attribute():
    n = nn.Neuron(3, activation=relu)
    for i, weight in enumerate(n.weight):
        weight.v = i + 1
    n.bias = 1  # a plain number becomes a Value
    assert isinstance(n.bias, Value) and n.b is n.bias and n.w is n.weight
    assert abs(n.forward(as_value_array([1, 3, 4.1])).v - 20.3) < 1e-12
    assert n.forward(as_value_array([1, 3, -4.2])).v == 0.0


@pytest.mark.parametrize("fused", [True, False])
def test_assigned_parameters_reach_forward_backward_and_state(fused):
    n = nn.Neuron(2, activation="tanh", fused=fused)
    n.weight = as_value_array([0.3, -0.7])
    n.bias = Value(0.1)
    x = as_value_array([2.0, 0.5])
    out = n.forward(x)
    out.backward()
    s = 0.1 + 0.3 * 2.0 - 0.7 * 0.5
    d = 1 - np.tanh(s) ** 2
    assert out.v == pytest.approx(np.tanh(s), rel=1e-15)
    assert_all_close([w.grad for w in n.weight] + [n.bias.grad, x[0].grad, x[1].grad],
                     [d * 2.0, d * 0.5, d, d * 0.3, d * -0.7], "gradients of the assigned Values")
    assert n.parameters() == n.weight + [n.bias]
    assert n.state_dict() == {"weight": [0.3, -0.7], "bias": [0.1]}
    with pytest.raises(ValueError, match="Expected 2 weights, got 3"):
        n.weight = [1.0, 2.0, 3.0]


@pytest.mark.parametrize("fused", [True, False])
def test_conv2d_filters_assigned_match_torch_conv2d(torch, fused):
    image = np.array([[1.0, 2.3, 4.7, 5.0], [0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0], [1.0, 2.3, 1.7, 1.0]])
    image = np.stack([image, image - 2])
    filters = np.array([[[[1.0, 0.2], [0.1, 1.0]]] * 2, [[[3.0, 1.2], [1.0, 0.0]]] * 2,
                        [[[0.0, 0.7], [0.7, 3.2]]] * 2])
    filters[:, 1, :, :] -= 0.01
    bias = np.array([0.1, 0.5, 1.0])

    conv = nn.Conv2D(4, 4, kernel_size=2, stride=2, in_channels=2, out_channels=3, activation=tanh)
    conv.set_fused(fused)
    assert conv.output_size == 3 * 2 * 2
    assert isinstance(conv.filters, nn.Linear)
    for i, n in enumerate(conv.filters.neurons):
        assert len(n.weight) == 8
        n.weight = as_value_array(flatten(filters[i]))
        n.bias = Value(bias[i])
    x = as_value_array(image)
    out = conv.forward(x)
    upstream = np.linspace(-1.0, 1.0, 12).reshape(3, 2, 2)
    minigrad.backward(flatten(out), upstream.ravel().tolist())

    tx = torch.tensor(image[np.newaxis], requires_grad=True)
    tw = torch.tensor(filters, requires_grad=True)
    tb = torch.tensor(bias, requires_grad=True)
    t_out = torch.conv2d(tx, tw, bias=tb, stride=2)[0].tanh()
    t_out.backward(torch.tensor(upstream))

    assert_all_close(flatten(value_array_to_list(out)), t_out.detach().flatten().tolist(), "outputs")
    assert_all_close([p.grad for p in conv.parameters()],
                     [g for o in range(3) for g in tw.grad[o].flatten().tolist() + [tb.grad[o].item()]],
                     "parameter gradients")
    assert_all_close([v.grad for v in flatten(x)], tx.grad.flatten().tolist(), "input gradients")
    assert conv.state_dict()["weight"] == filters.tolist() and conv.state_dict()["bias"] == bias.tolist()


def test_reshape_flatten_transpose_as_in_the_original():
    arr = np.arange(12)
    assert reshape(arr, 4, 3) == arr.reshape(4, 3).tolist() == reshape(arr, (4, 3))
    matrix = np.arange(12).reshape(3, 4)
    assert transpose(matrix) == matrix.T.tolist()
    nested = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    flat = as_value_array(flatten(nested))  # one flat list of Values, as the original built
    assert len(flat) == 24 and all(isinstance(v, Value) for v in flat)
    assert [v.v for v in flat] == nested.ravel().tolist()
    layer = nn.Linear(2, 2)
    assert flatten(n.get_parameters() for n in layer.neurons) == layer.get_parameters()
    assert value_array_to_list(as_value_array(nested)) == nested.tolist()
    with pytest.raises(ValueError, match=r"Expected 15 items for shape \(5, 3\), got 12"):
        reshape(arr, 5, 3)


def test_user_model_trains_with_sgd_like_torch(torch):
    model = reference_user_cnn()
    seeded_parameters(model, seed=1)
    assert len(model.get_parameters()) == 5357 == len(model.parameters())
    net = torch_twin(torch, model)
    t_opt = torch.optim.SGD(net.parameters(), lr=0.05)
    optimizer = SGD(model.get_parameters(), lr=0.05)
    rng = np.random.default_rng(0)
    for _ in range(3):
        samples = rng.standard_normal((2, 1, 15, 15))
        labels = rng.integers(0, 10, 2)
        optimizer.zero_grad()
        loss = Value(0)
        for sample, target in zip(samples, labels):
            loss += mean_squared(targets_pm1(target), model.forward(as_value_array(sample)))
        loss = loss / len(samples)
        loss.backward()
        optimizer.step()

        t_opt.zero_grad()
        t_targets = -torch.ones(2, 10, dtype=torch.float64)
        t_targets[torch.arange(2), torch.tensor(labels)] = 1.0
        t_loss = ((t_targets - net(torch.tensor(samples))) ** 2).mean(dim=1).mean()
        t_loss.backward()
        t_opt.step()
        assert abs(loss.v - t_loss.item()) <= 1e-12 * abs(t_loss.item())
    assert_all_close([p.v for p in model.get_parameters()], torch_parameters_flat(net), "parameters after SGD",
                     rtol=1e-10, atol=1e-12)


def test_flat_checkpoint_saved_by_the_user_loads_everywhere(tmp_path):
    model = reference_user_cnn()
    seeded_parameters(model, seed=2)
    path = tmp_path / "model_epoch_0.json"
    model.save(path)
    flat = json.loads(path.read_text())
    assert isinstance(flat, list) and len(flat) == 5357

    ours = nn.CNN.load(path)  # this project reads the original's flat checkpoint
    again = reference_user_cnn()
    again.load(path)
    image = np.random.default_rng(3).random((1, 15, 15))
    expected = [v.v for v in model.forward(as_value_array(image))]
    assert [v.v for v in ours(image)] == expected
    assert [v.v for v in again.forward(as_value_array(image))] == expected
    assert ours.parameter_values() == flat


@pytest.mark.skipif(not ORIGINAL_CHECKPOINT.is_file(), reason=f"{ORIGINAL_CHECKPOINT} is absent")
def test_the_original_published_checkpoint_through_the_users_load():
    model = reference_user_cnn()
    model.load(ORIGINAL_CHECKPOINT)
    ours = nn.CNN.load(ORIGINAL_CHECKPOINT)
    assert [p.v for p in model.get_parameters()] == ours.parameter_values()
    image = np.random.default_rng(4).standard_normal((1, 15, 15))
    assert [v.v for v in model.forward(as_value_array(image))] == [v.v for v in ours(image)]


def test_a_subclass_extending_get_parameters_with_super():
    class WithExtra(nn.Linear):
        def __init__(self):
            super().__init__(2, 1, seed=0)
            self.extra = Value(0.5)

        def get_parameters(self):
            return super().get_parameters() + [self.extra]

    layer = WithExtra()
    assert layer.parameters() == layer.neurons[0].weight + [layer.neurons[0].bias, layer.extra]
    layer.extra.grad = 1.0
    layer.zero_grad()
    assert layer.extra.grad == 0.0
