"""TensorLayout: the flat parameter vector's tensors by name, shape and offset; a worker's flat
gradient of one sample, split by it, is torch's gradient tensor by tensor."""
import math

import numpy as np

from helpers_parallel import N_CLASSES, tiny_dataset, tiny_loss, tiny_model, tiny_model_fn
from parallel import Payload, Replica, TensorLayout
from parallel.replica import pack


def test_tensor_layout_names_and_offsets():
    model = tiny_model()
    layout = TensorLayout(model)
    assert layout.names == ["conv.0.weight", "conv.0.bias", "hidden.weight", "hidden.bias",
                            "output.weight", "output.bias"]
    assert layout.shapes[0] == (3, 1, 4, 4)
    assert layout.size == len(model.parameters()) == 240
    pieces = layout.split(np.arange(layout.size, dtype=float))
    assert [len(v) for v in pieces.values()] == [48, 3, 162, 6, 18, 3]
    assert pieces["hidden.bias"][0] == 48 + 3 + 162


def test_sample_gradient_by_tensor_name_matches_torch(torch):
    torch.set_default_dtype(torch.float64)
    replica = Replica(Payload(tiny_model_fn(), tiny_loss))
    data = tiny_dataset()
    replica.add_dataset("d", data)
    model = tiny_model()
    replica.set_parameters(pack([p.v for p in in_tensor_order(model)]))
    result = replica.compute("train", "d", 7)
    grads = TensorLayout(model).split(np.frombuffer(result.grad))
    sd = model.state_dict()
    t = {k: torch.tensor(v, requires_grad=True) for k, v in sd.items()}
    x = torch.tensor(data.images[7:8])
    h = torch.tanh(torch.nn.functional.conv2d(x, t["conv.0.weight"], t["conv.0.bias"], stride=2)).flatten(1)
    h = torch.tanh(h @ t["hidden.weight"].T + t["hidden.bias"])
    out = torch.tanh(h @ t["output.weight"].T + t["output.bias"])[0]
    target = -torch.ones(N_CLASSES)
    target[int(data.labels[7])] = 1.0
    loss = ((out - target) ** 2).mean()
    loss.backward()
    assert sorted(grads) == sorted(sd)
    assert math.isclose(result.loss, loss.item(), rel_tol=1e-12)
    assert result.prediction == int(out.argmax())
    for name, value in t.items():
        np.testing.assert_allclose(grads[name], value.grad.numpy().ravel(), rtol=1e-10, atol=1e-14, err_msg=name)


def in_tensor_order(model):
    """The model's parameters tensor by tensor, as the flat vector holds them."""
    return [p for _, _, values in model.named_tensors() for p in values]
