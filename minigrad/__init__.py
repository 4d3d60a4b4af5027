"""minigrad: a scalar-valued autograd engine in pure Python, with a PyTorch-like API."""
__version__ = "1.1.0"  # first: checkpoint (imported below) writes it into every file

from .core import (GradFunction, Value, backward, enable_grad, grad, hessian, is_grad_enabled, log_softmax,
                   no_grad, relu, sigmoid, softmax, tanh, value_max, value_sum)
from .fused import weighted_sum
from .gradcheck import gradcheck
from .losses import cross_entropy, mse_loss
from .nested import as_value_array, flatten, reshape, transpose, value_array_to_list

from . import core, nn, optimizer  # as the original: `import minigrad` reaches minigrad.nn
from .pypy_nursery import size_for_children

size_for_children()  # PyPy processes started from this one get the tuned young generation


__all__ = ["core", "nn", "optimizer",
           "Value", "GradFunction", "no_grad", "enable_grad", "is_grad_enabled", "backward", "grad", "hessian",
           "gradcheck", "relu", "tanh", "sigmoid", "softmax", "log_softmax", "value_sum", "value_max",
           "weighted_sum", "as_value_array", "value_array_to_list", "flatten", "reshape", "transpose",
           "mse_loss", "cross_entropy"]
