"""Losses: a scalar Value from a model's outputs and the target."""
from .core import Value, log_softmax, value_sum


def mse_loss(predictions, targets):
    """Mean of ``(prediction - target) ** 2``; targets are numbers (e.g. +-1) or Values."""
    predictions = list(predictions)
    targets = list(targets.tolist() if hasattr(targets, "tolist") else targets)
    if len(predictions) != len(targets):
        raise ValueError(f"Expected {len(predictions)} targets, got {len(targets)}")
    if not predictions:
        raise ValueError("Expected at least one prediction, got none")
    return value_sum([(p - t) ** 2 for p, t in zip(predictions, targets)]) / len(predictions)


def cross_entropy(logits, target_index):
    """``-log softmax(logits)[target_index]``, computed stably (torch's ``cross_entropy`` for one sample)."""
    logits = list(logits)
    if isinstance(target_index, bool) or not hasattr(target_index, "__index__"):
        raise TypeError(f"Expected an integer class index, got {type(target_index).__name__}")
    target_index = target_index.__index__()  # numpy integers too
    if not 0 <= target_index < len(logits):
        raise ValueError(f"Expected a class index in [0, {len(logits)}), got {target_index}")
    logits = [x if isinstance(x, Value) else Value(x) for x in logits]
    return -log_softmax(logits)[target_index]


def one_hot_pm1(label, n_classes):
    """The +-1 target vector of the original project: +1 at ``label``, -1 elsewhere."""
    return [1.0 if i == label else -1.0 for i in range(n_classes)]
