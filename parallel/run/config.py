"""A run's config from one table of options: the command line and its help, and the checks a
resumed run's saved config passes.

``options`` maps a name to ``(default, kind, help)``; ``kind`` is ``bool`` (a switch), ``str``, a
list of choices, or a parser of the text (``integer(least)``, ``nonnegative_float``). The help
text shows each default, so no default is typed twice.
"""
import argparse
import math


class ConfigError(ValueError):
    """A config that cannot be used: one line, expected vs got."""


def integer(least):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {value}")
        return value
    return parse


def nonnegative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def defaults(options):
    return {name: default for name, (default, _, _) in options.items()}


def flag(name):
    return "--" + name.replace("_", "-")


def argument_parser(options, description):
    """``--name`` for every option; only the options given end up in the parsed namespace."""
    p = argparse.ArgumentParser(description=description, argument_default=argparse.SUPPRESS)
    for name, (default, kind, text) in options.items():
        text = f"{text} (default: {default})"
        if kind is bool:
            p.add_argument(flag(name), action="store_true", help=text)
        elif isinstance(kind, list):
            p.add_argument(flag(name), choices=kind, help=text)
        else:
            p.add_argument(flag(name), type=kind, help=text)
    return p


def is_valid(options, name, value):
    """``value`` passes the check its argument once passed (a saved config may have been edited)."""
    default, kind, _ = options[name]
    if kind is bool or isinstance(kind, list):
        return isinstance(value, bool) if kind is bool else value in kind
    if value is None or kind is str:
        return default is None if value is None else isinstance(value, str)
    try:
        return not isinstance(value, bool) and kind(str(value)) == value
    except argparse.ArgumentTypeError:
        return False


def resumed_config(saved, given, options, runtime, where, added_later=None):
    """The saved config with the ``given`` ``runtime`` options (where and how the run computes, not
    what); any other given option must equal the saved one. ``added_later`` maps options that
    older checkpoints lack to what those runs did (not to today's default, which may differ)."""
    if isinstance(saved, dict):
        saved = {**(added_later or {}), **saved}
    if not isinstance(saved, dict) or sorted(saved) != sorted(options):
        raise ConfigError(f"{where}: expected a training checkpoint with a config of {sorted(options)}")
    for name in options:
        if not is_valid(options, name, saved[name]):
            raise ConfigError(f"{where}: config {name} = {saved[name]!r} is not a valid {flag(name)}")
    for name, value in given.items():
        if name not in runtime and saved[name] != value:
            raise ConfigError(f"{flag(name)} {value} differs from the checkpoint's {saved[name]}; "
                              f"a resumed run keeps its config")
    return {**saved, **{name: v for name, v in given.items() if name in runtime}}
