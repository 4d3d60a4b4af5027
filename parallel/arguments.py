"""The trainer's checks of what a user hands it: each raises one ValueError that names the
argument and says expected vs got, before any worker starts or any step is taken."""
import inspect
import json

from minigrad.checks import is_finite_real


def callable_taking(name, fn, arity, signature):
    """``fn`` is callable with ``arity`` positional arguments (``signature`` says which, for the message)."""
    if not callable(fn):
        raise ValueError(f"Expected {name} to be callable as {signature}, got {type(fn).__name__}")
    try:
        parameters = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return fn
    try:
        parameters.bind(*range(arity))
    except TypeError:
        raise ValueError(f"Expected {name} to be callable as {signature}, got {_name(fn)}{parameters}") from None
    return fn


def _name(fn):
    return getattr(fn, "__name__", type(fn).__name__).replace("<lambda>", "lambda")


def optional_callable(name, fn, arity, signature):
    return None if fn is None else callable_taking(name, fn, arity, signature)


def built_model(model_fn):
    """``model_fn()``, which must build a ``minigrad.nn.Module``."""
    from minigrad.nn import Module
    try:
        model = model_fn()
    except Exception as e:
        raise ValueError(f"Expected model_fn() to build a model, got {type(e).__name__}: {e}") from e
    if not isinstance(model, Module):
        raise ValueError(f"Expected model_fn() to return a minigrad.nn.Module, got {type(model).__name__}")
    return model


def learning_rate(lr):
    if not is_finite_real(lr) or lr < 0:
        raise ValueError(f"Expected lr to be a finite number >= 0, got {lr!r}")
    return lr


def dataset(name, data):
    """A dataset the trainer can read: sized, not empty, ``images`` and ``labels`` of one length
    (then no NaN or infinite pixel), or ``data[i]`` giving ``(input, target)``."""
    if data is None or not hasattr(data, "__len__"):
        raise ValueError(f"Expected {name} to be a dataset (a minigrad.data.Dataset, or a sized object whose "
                         f"[i] is (input, target)), got {type(data).__name__}")
    n = len(data)
    if n == 0:
        raise ValueError(f"Expected {name} to hold at least one sample, got an empty dataset")
    images, labels = getattr(data, "images", None), getattr(data, "labels", None)
    if images is not None and labels is not None:
        if len(images) != len(labels):
            raise ValueError(f"Expected {name} to have as many labels as images, got {len(images)} images and "
                             f"{len(labels)} labels")
        _finite_pixels(name, images)
    elif not hasattr(data, "__getitem__"):
        raise ValueError(f"Expected {name} to have images and labels, or [i] giving (input, target), got "
                         f"{type(data).__name__}")
    return data


def _finite_pixels(name, images):
    import numpy as np
    try:
        array = np.asarray(images)
    except Exception:  # not an array of numbers: the model will say what it cannot read
        return
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))[0])
        raise ValueError(f"Expected {name} to have finite pixels, got NaN or infinity in sample {bad}")


def json_config(config):
    if config is None:
        return config
    if not isinstance(config, dict):
        raise ValueError(f"Expected config to be a dict (stored in each checkpoint), got {type(config).__name__}")
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"Expected config to be JSON-able (it is stored in each checkpoint), got {e}") from None
    return config


def flag(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"Expected {name} to be True or False, got {value!r}")
    return value

