"""Losses against torch.nn.functional (float64): values and gradients, stability, bad arguments."""
import math

import pytest
from conftest import assert_all_close, assert_close

import minigrad
from minigrad import Value, nn
from minigrad.gradcheck import gradcheck
from minigrad.losses import cross_entropy, mse_loss, one_hot_pm1

MSE_CASES = [
    ([0.3, -0.7, 0.9], [1.0, -1.0, -1.0]),
    ([0.5], [0.5]),                                  # zero loss, zero gradient
    ([1e3, -1e3, 0.0, 1e-300], [1.0, -1.0, 0.0, 0.0]),
    ([-0.25, 0.75, 2.0, -3.0, 0.1], [0.0, 1.0, 2.5, -1.0, 0.1]),
]


@pytest.mark.parametrize("predictions,targets", MSE_CASES)
@pytest.mark.parametrize("value_targets", [False, True])
def test_mse_loss_matches_torch(torch, predictions, targets, value_targets):
    preds = [Value(p) for p in predictions]
    tgts = [Value(t) for t in targets] if value_targets else list(targets)
    loss = mse_loss(preds, tgts)
    loss.backward(1.3)

    tp = torch.tensor(predictions, dtype=torch.float64, requires_grad=True)
    tt = torch.tensor(targets, dtype=torch.float64, requires_grad=value_targets)
    t_loss = torch.nn.functional.mse_loss(tp, tt)
    t_loss.backward(torch.tensor(1.3, dtype=torch.float64))

    assert_close(loss.v, t_loss.item(), "loss")
    assert_all_close([p.grad for p in preds], tp.grad.tolist(), "prediction grads")
    if value_targets:
        assert_all_close([t.grad for t in tgts], tt.grad.tolist(), "target grads")


def test_mse_loss_accepts_numpy_targets(torch):
    np = pytest.importorskip("numpy")
    preds = [Value(0.2), Value(-0.4)]
    loss = mse_loss(preds, np.array([1.0, -1.0]))
    assert_close(loss.v, ((0.2 - 1.0) ** 2 + (-0.4 + 1.0) ** 2) / 2, "loss")
    loss.backward()
    assert_all_close([p.grad for p in preds], [0.2 - 1.0, -0.4 + 1.0], "grads")


CE_CASES = [
    ([0.3, -0.7, 0.9], 0),
    ([0.3, -0.7, 0.9], 2),
    ([1000.0, -1000.0, 0.0], 0),   # large logits: finite and equal to torch
    ([1000.0, -1000.0, 0.0], 1),
    ([1000.0, -1000.0, 0.0], 2),
    ([-1000.0, -1000.0], 1),
    ([30.0, -30.0, 1.0, 2.0, -0.5, 0.0, 4.0, 1e-300, -2.0, 0.5], 7),
    ([5.0], 0),                    # one class: loss 0
    ([0.0, 0.0, 0.0, 0.0], 3),
]


@pytest.mark.parametrize("logits,target", CE_CASES)
def test_cross_entropy_matches_torch(torch, logits, target):
    xs = [Value(x) for x in logits]
    loss = cross_entropy(xs, target)
    loss.backward()

    t = torch.tensor([logits], dtype=torch.float64, requires_grad=True)
    t_loss = torch.nn.functional.cross_entropy(t, torch.tensor([target]))
    t_loss.backward()

    assert math.isfinite(loss.v) and all(math.isfinite(x.grad) for x in xs)
    assert_close(loss.v, t_loss.item(), "loss")
    assert_all_close([x.grad for x in xs], t.grad[0].tolist(), "logit grads")


def test_cross_entropy_takes_numbers_and_numpy_indices(torch):
    np = pytest.importorskip("numpy")
    logits = [0.1, 2.0, -1.0]
    loss = cross_entropy(logits, np.int64(1))
    t_loss = torch.nn.functional.cross_entropy(torch.tensor([logits], dtype=torch.float64), torch.tensor([1]))
    assert_close(loss.v, t_loss.item(), "loss")


def test_losses_are_reexported():
    assert minigrad.mse_loss is mse_loss and nn.mse_loss is mse_loss
    assert minigrad.cross_entropy is cross_entropy and nn.cross_entropy is cross_entropy


def test_one_hot_pm1():
    assert one_hot_pm1(3, 5) == [-1.0, -1.0, -1.0, 1.0, -1.0]
    assert one_hot_pm1(0, 1) == [1.0]


@pytest.mark.parametrize("call", [
    lambda: mse_loss([Value(1.0), Value(2.0)], [1.0]),
    lambda: mse_loss([Value(1.0)], [1.0, 2.0]),
    lambda: mse_loss([], []),
    lambda: cross_entropy([Value(1.0), Value(2.0)], 2),
    lambda: cross_entropy([Value(1.0), Value(2.0)], -1),
    lambda: cross_entropy([], 0),
])
def test_bad_lengths_and_indices_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("target", [1.0, 1.5, "1", None, True])
def test_cross_entropy_rejects_non_integer_targets(target):
    with pytest.raises(TypeError):
        cross_entropy([Value(1.0), Value(2.0)], target)


# the same losses by central differences, for runs without torch
def test_gradcheck_mse_loss():
    assert gradcheck(lambda a, b, c: mse_loss([a, b], [c, -1.0]), [0.3, -0.6, 0.8])


def test_gradcheck_cross_entropy():
    for target in range(3):
        assert gradcheck(lambda a, b, c, t=target: cross_entropy([a, b, c], t), [0.3, -0.6, 0.8])


def test_cross_entropy_by_hand():
    logits = [1000.0, -1000.0, 0.0]
    assert cross_entropy([Value(x) for x in logits], 0).v == 0.0
    assert_close(cross_entropy([Value(x) for x in logits], 2).v, 1000.0, "loss")
    assert_close(cross_entropy([Value(0.0)] * 4, 1).v, math.log(4), "uniform loss")
