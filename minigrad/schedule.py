"""Learning-rate schedules as pure functions of the step number.

``lr_at(schedule, base_lr, step, total_steps)`` is the learning rate of update number
``step`` (0 for the first update), the closed forms of torch.optim.lr_scheduler:

* ``"constant"``: ``base_lr``;
* ``"cosine"``: ``CosineAnnealingLR(T_max=total_steps, eta_min=0)``, from ``base_lr`` at step 0
  down to ``eta_min`` at ``step == total_steps``;
* ``"step"``: ``StepLR(step_size, gamma=0.1)``, ``base_lr`` times ``gamma`` every ``step_size`` steps.

A trainer sets ``optimizer.lr = lr_at(...)`` before each ``optimizer.step()``. Being a function of
the step alone, the schedule needs no state of its own to resume from a checkpoint.
"""
import math

from .checks import int_at_least
from .portable_math import cos, power


def constant(base_lr, step, total_steps=None):
    return base_lr


def cosine(base_lr, step, total_steps, eta_min=0.0):
    # the same expression, in the same order, as CosineAnnealingLR._get_closed_form_lr
    return eta_min + (base_lr - eta_min) * (1 + cos(math.pi * step / total_steps)) / 2


def step_decay(base_lr, step, total_steps=None, step_size=None, gamma=0.1):
    return base_lr * power(gamma, step // step_size)


SCHEDULES = {"constant": constant, "cosine": cosine, "step": step_decay}
_OPTIONS = {"constant": (), "cosine": ("eta_min",), "step": ("step_size", "gamma")}


def lr_at(schedule, base_lr, step, total_steps=None, **options):
    """The learning rate of update ``step`` (0-based) under ``schedule``; see the module doc."""
    if schedule not in SCHEDULES:
        raise ValueError(f"Expected a schedule in {sorted(SCHEDULES)}, got {schedule!r}")
    unknown = sorted(k for k in options if k not in _OPTIONS[schedule])
    if unknown:
        raise ValueError(f"Expected options of the {schedule!r} schedule among "
                         f"{list(_OPTIONS[schedule])}, got {unknown}")
    _check_number("base_lr", base_lr)
    int_at_least("step", step, 0)
    if schedule == "cosine":
        int_at_least("total_steps", total_steps, 1)
        if step > total_steps:
            raise ValueError(f"Expected step <= total_steps ({total_steps}), got {step}")
        _check_number("eta_min", options.get("eta_min", 0.0))
    if schedule == "step":
        int_at_least("step_size", options.get("step_size"), 1)
        _check_number("gamma", options.get("gamma", 0.1))
    return SCHEDULES[schedule](base_lr, step, total_steps, **options)


def _check_number(name, x):
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
        raise ValueError(f"Expected {name} to be a finite number >= 0, got {x!r}")


