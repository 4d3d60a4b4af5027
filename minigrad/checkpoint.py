"""JSON checkpoints: a model's architecture and parameters, and whatever the run adds.

A checkpoint is one JSON object (never a pickle: loading a file must not run code)::

    {"format": "minigrad-checkpoint", "version": 1,
     "minigrad": "1.0.0",               # the version that wrote it, for messages
     "layout": "named-tensors",         # how parameters and per-parameter state are laid out
     "model": {...},                    # model.config(), enough to rebuild the architecture
     "parameters": {"conv.0.weight": [[[[...]]]], "conv.0.bias": [...], ...},  # state_dict()
     ...}                               # extra fields: optimizer state, step, the run's config

Layout "named-tensors": parameters are tensors by name, each nested like torch's; lists of
per-parameter state (an optimizer's momentum, Adam's moments) follow ``get_parameters()`` order.
A file without "layout" (written before the field existed) has this layout. A file in a newer
format version or another layout is refused by ``read``, naming both, before anything uses it.

The original minigrad wrote a bare JSON array of floats, every parameter in ``get_parameters()``
order (layer by layer, neuron by neuron, a neuron's weights then its bias). ``read`` accepts it as
``{"format": "flat", "parameters": [...]}``; ``nn.module_from_checkpoint`` takes it for the
reference CNN. This module knows files, not layers: it does not import ``nn``.

Files are replaced atomically, so a crash while saving leaves the previous checkpoint whole.
Every problem with a file raises ``CheckpointError``: one line naming the file, expected vs got.
"""
import hashlib
import json
import math
import os
import re
import struct

from . import __version__
from .atomic_file import atomic_write_text
from .checks import is_finite_real
from .core import Value
from .file_reading import FileRefused, read_limited

FORMAT = "minigrad-checkpoint"
VERSION = 1
LAYOUT = "named-tensors"
FLAT = "flat"
MAX_BYTES = 64 * 2 ** 20  # a 5,357-parameter CNN takes 120 KB; a million parameters about 20 MB
MAX_DEPTH = 64            # a conv weight nests 4 deep, a model config a few levels more
MAX_DIGITS = 1000         # a float64 needs at most 17 significant digits
_REQUIRED = ("format", "version", "model", "parameters")
_WRITTEN = _REQUIRED + ("minigrad", "layout")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, written or loaded; the message names the file."""


class Checkpoint(dict):
    """A checkpoint's contents: a plain dict that remembers the file it was read from."""

    path = None


# ---- writing ----

def save(path, model, /, **extra):
    """Write ``model``'s config and parameters, and the JSON-able ``extra`` fields, to ``path``."""
    clash = [k for k in _WRITTEN if k in extra]
    if clash:
        raise ValueError(f"Expected extra fields other than {list(_WRITTEN)}, got {clash}")
    doc = {"format": FORMAT, "version": VERSION, "minigrad": __version__, "layout": LAYOUT, "model": model.config(),
           "parameters": model.state_dict()}
    doc.update(extra)
    atomic_write_json(path, doc)


def atomic_write_json(path, obj):
    """Write ``obj`` as JSON to ``path`` atomically; NaN, infinities and non-JSON types are refused."""
    problem = _json_problem(obj, "")
    if problem:
        raise CheckpointError(f"{os.fspath(path)}: cannot write JSON: {problem}")
    atomic_write_text(path, json.dumps(obj, allow_nan=False) + "\n")


def _json_problem(x, where):
    """Why ``x`` would not survive a JSON round trip (e.g. ``"step: ... got nan"``), or None."""
    if x is None or isinstance(x, (str, bool, int)):
        return None
    if isinstance(x, float):
        return None if math.isfinite(x) else f"{where or 'value'}: expected a finite number, got {x!r}"
    if isinstance(x, dict):
        for k, item in x.items():
            if not isinstance(k, str):
                return f"{where or 'value'}: expected string keys, got {k!r}"
            problem = _json_problem(item, f"{where}.{k}" if where else k)
            if problem:
                return problem
        return None
    if isinstance(x, (list, tuple)):
        for i, item in enumerate(x):
            problem = _json_problem(item, f"{where}[{i}]")
            if problem:
                return problem
        return None
    return f"{where or 'value'}: expected JSON data (dict, list, str, number, bool, None), got {type(x).__name__}"


# ---- reading ----

def read(path, max_bytes=MAX_BYTES):
    """The checkpoint at ``path`` as a ``Checkpoint`` dict, after checking its format.

    Anything else is one ``CheckpointError``, however large, deep or strange the file: at most
    ``max_bytes``, nested at most ``MAX_DEPTH`` deep, no run of more than ``MAX_DIGITS`` digits
    (a 5,000-digit integer would take CPython's int() limit or PyPy's quadratic time).
    """
    name = os.fspath(path)
    doc = _parse(name, _read_text(name, max_bytes))
    if isinstance(doc, list):
        ckpt = Checkpoint(format=FLAT, parameters=_flat_values(name, doc))
    elif isinstance(doc, dict):
        _check_format(name, doc)
        ckpt = Checkpoint(doc)
    else:
        raise CheckpointError(f"{name}: expected a JSON object (a minigrad checkpoint) or an array "
                              f"of numbers (flat parameters), got {_json_type(doc)}")
    ckpt.path = name
    return ckpt


def _read_text(name, max_bytes):
    try:
        text = read_limited(name, max_bytes).decode("utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{name}: no such file") from None
    except FileRefused as e:
        raise CheckpointError(f"{name}: {e}") from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{name}: expected JSON text, got bytes that are not UTF-8 "
                              f"(at byte {e.start})") from None
    except OSError as e:
        raise CheckpointError(f"{name}: cannot read: {e.strerror or e}") from None
    if not text.strip():
        raise CheckpointError(f"{name}: empty file, expected a JSON checkpoint")
    return text


class _NonFinite(Exception):
    pass


def _refuse(constant):
    raise _NonFinite(constant)


def _parse(name, text):
    bare = _STRING.sub('""', text)
    depth = _nesting_depth(bare, MAX_DEPTH)
    if depth > MAX_DEPTH:
        raise CheckpointError(f"{name}: expected arrays and objects nested at most {MAX_DEPTH} deep, "
                              f"got {'more' if depth == math.inf else depth}")
    digits = _LONG_NUMBER.search(bare)
    if digits:
        raise CheckpointError(f"{name}: expected numbers of at most {MAX_DIGITS} digits, got one of more "
                              f"({digits.group()[:20]}...)")
    try:
        return json.loads(text, parse_constant=_refuse)
    except _NonFinite as e:
        raise CheckpointError(f"{name}: expected finite numbers, got {e.args[0]}") from None
    except json.JSONDecodeError as e:
        if _looks_truncated(text, e):
            raise CheckpointError(f"{name}: not valid JSON (truncated?) at line {e.lineno} "
                                  f"column {e.colno}") from None
        raise CheckpointError(f"{name}: not valid JSON at line {e.lineno} column {e.colno}: "
                              f"{e.msg}") from None
    except (ValueError, RecursionError) as e:  # what the checks above should already have caught
        raise CheckpointError(f"{name}: not valid JSON: {str(e)[:200]}") from None


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_LONG_NUMBER = re.compile(rf"\d{{{MAX_DIGITS + 1}}}")


def _nesting_depth(bare, limit):
    """How deep the arrays and objects of JSON text ``bare`` (its strings emptied) nest, without
    recursion; math.inf past ``limit``.

    Every pass removes the innermost ``[]`` pairs: a balanced text empties in exactly its depth
    of passes. Unclosed brackets left over count as deeper levels.
    """
    brackets = _NOT_A_BRACKET.sub("", bare).replace("{", "[").replace("}", "]")
    depth = 0
    while "[]" in brackets:
        if depth == limit:
            return math.inf
        brackets = brackets.replace("[]", "")
        depth += 1
    return depth + brackets.count("[")


def _looks_truncated(text, error):
    """A cut file fails in its last token (or an unterminated string), not somewhere inside."""
    if error.pos == 0 or error.msg == "Extra data":
        return False
    if error.msg.startswith("Unterminated string"):
        return True
    tail = text[error.pos:].rstrip()
    return not any(c in tail for c in ' \t\n\r,:[]{}"')


def _json_type(x):
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(x), type(x).__name__)


def _flat_values(name, values):
    if not isinstance(values, list) or not values:
        got = "an empty array" if values == [] else _json_type(values)
        raise CheckpointError(f"{name}: expected a non-empty array of parameter values, got {got}")
    for i, x in enumerate(values):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise CheckpointError(f"{name}: expected a number at parameter {i}, got {_json_type(x)}")
        if not is_finite_real(x):
            raise CheckpointError(f"{name}: expected a finite number at parameter {i}, got {_short(x)}")
    return [float(x) for x in values]


def _check_format(name, doc):
    if doc.get("format") != FORMAT:
        got = _short(doc["format"]) if "format" in doc else f"no format field (keys {_short(sorted(doc)[:5])})"
        raise CheckpointError(f"{name}: expected format {FORMAT!r}, got {got}")
    version = doc.get("version")
    writer = doc.get("minigrad")
    by = f"minigrad {_cut(writer, 40)}" if isinstance(writer, str) else None
    if version != VERSION or isinstance(version, bool):
        if by is None and isinstance(version, int) and version > VERSION:
            by = "a newer minigrad?"
        raise CheckpointError(f"{name}: expected version {VERSION} (minigrad {__version__}), got "
                              f"{_short(version)}{f' (written by {by})' if by else ''}")
    layout = doc.get("layout", LAYOUT)
    if layout != LAYOUT:
        raise CheckpointError(f"{name}: expected parameter layout {LAYOUT!r} (minigrad {__version__}), got "
                              f"{_short(layout)}{f' (written by {by})' if by else ''}")
    for key, what in (("model", "the architecture"), ("parameters", "tensors by name")):
        if not isinstance(doc.get(key), dict):
            got = _json_type(doc[key]) if key in doc else "nothing"
            raise CheckpointError(f"{name}: expected {key!r} to be an object of {what}, got {got}")


# ---- loading ----

def load_into(model, ckpt):
    """Set ``model``'s parameters from ``ckpt`` (from ``read``); on any error change nothing."""
    name = checkpoint_name(ckpt)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{name}: expected a checkpoint dict, got {type(ckpt).__name__}")
    if ckpt.get("format") == FLAT:
        values = _flat_values(name, ckpt.get("parameters"))
        n = len(model.parameters())
        if len(values) != n:
            raise CheckpointError(f"{name}: expected {n} parameters, got {len(values)}")
        as_checkpoint_error(name, model.load_parameter_values, values)
        return model
    _check_format(name, ckpt)
    difference = _difference(model.config(), ckpt["model"], "model")
    if difference:
        raise CheckpointError(f"{name}: checkpoint is for a different architecture: {difference}")
    as_checkpoint_error(name, model.load_state_dict, ckpt["parameters"])
    return model


def architecture(ckpt):
    """``ckpt``'s model config, after checking its format; None for a flat checkpoint, which has none."""
    if isinstance(ckpt, dict) and ckpt.get("format") == FLAT:
        return None
    _check_format(checkpoint_name(ckpt), ckpt)
    return ckpt["model"]


def checkpoint_name(ckpt):
    """The file ``ckpt`` was read from, for messages ("checkpoint" when it was not read from one)."""
    return ckpt.path if isinstance(ckpt, Checkpoint) and ckpt.path else "checkpoint"


def as_checkpoint_error(name, fn, *args):
    """``fn(*args)``, its ValueError raised again as a CheckpointError naming the file."""
    try:
        return fn(*args)
    except ValueError as e:
        raise CheckpointError(f"{name}: {_cut(str(e), 300)}") from None


def _difference(expected, got, where):
    """The first place where two JSON configs differ, as ``expected <where> = x, got y``."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for k in expected:
            if k not in got:
                return f"expected {where}.{k} = {_short(expected[k])}, got none"
            d = _difference(expected[k], got[k], f"{where}.{k}")
            if d:
                return d
        extra = [k for k in got if k not in expected]
        return f"expected no {where}.{_cut(extra[0])}, got {_short(got[extra[0]])}" if extra else None
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return f"expected {len(expected)} items in {where}, got {len(got)}"
        for i, (a, b) in enumerate(zip(expected, got)):
            d = _difference(a, b, f"{where}[{i}]")
            if d:
                return d
        return None
    if type(expected) is type(got) and expected == got:
        return None
    return f"expected {where} = {_short(expected)}, got {_short(got)}"


def _short(x):
    """``repr(x)``, cut to a length that keeps a message one readable line."""
    return _cut(repr(x))


def _cut(text, limit=80):
    return text if len(text) <= limit else text[:limit] + "..."


# ---- comparing ----

def parameters_sha256(model_or_values):
    """SHA-256 (hex) of the parameters as little-endian float64, in ``get_parameters()`` order.

    Two models (or checkpoints, once loaded) have the same digest only if every parameter is
    bit for bit the same; a model or a sequence of Values or floats is accepted.
    """
    if hasattr(model_or_values, "parameters"):
        values = [p.v for p in model_or_values.parameters()]
    else:
        values = [x.v if isinstance(x, Value) else float(x) for x in model_or_values]
    return hashlib.sha256(struct.pack(f"<{len(values)}d", *values)).hexdigest()
