"""Hostile files: however deep, large or strange a checkpoint or IDX file is, its reader raises its
one documented error (CheckpointError, DataError) with a one-line message, in bounded time and
memory; never RecursionError, MemoryError, a hang or a traceback from evaluate.py."""
import gzip
import json
import os
import random
import resource
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from minigrad import checkpoint, nn
from minigrad.checkpoint import CheckpointError, load_into, read
from minigrad.data import idx
from minigrad.data.idx import DataError, read_idx_images, read_idx_labels, write_idx
from minigrad.nn import module_from_checkpoint
from minigrad.optimizer import SGD, optimizer_from_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ_CHECKPOINTS = 2000
FUZZ_IDX = 1500
CASE_SECONDS = 1.0   # the slowest single case
MEMORY_MB = 150      # growth of this process's peak RSS over a whole fuzz run


def small_model():
    return nn.Sequential(nn.Linear(3, 4, "tanh", seed=1), nn.Linear(4, 2, seed=2))


def checkpoint_text():
    """A valid checkpoint with the extra fields a run adds (optimizer state, step, config)."""
    model = small_model()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = 0.5
    opt.step()
    return json.dumps({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "model": model.config(),
                       "parameters": model.state_dict(), "optimizer": opt.state_dict(), "step": 1,
                       "config": {"lr": 0.1, "batch_size": 8, "data": "mnist5k"}})


def one_line(message, path):
    assert "\n" not in message and len(message) < 400 + len(path), message
    assert message.startswith(path), message


def load_everything(path):
    """What evaluate.py and --resume do with a checkpoint: read, build, load, restore the optimizer."""
    ckpt = read(path)
    model = module_from_checkpoint(ckpt)
    load_into(small_model(), ckpt) if ckpt.get("format") != checkpoint.FLAT else None
    if isinstance(ckpt.get("optimizer"), dict):
        checkpoint.as_checkpoint_error(path, optimizer_from_state, model.parameters(), ckpt["optimizer"])


# ---- the mutations ----

HOSTILE_VALUES = [None, True, -1, 0, 2 ** 63, 10 ** 999, 1e308, -0.0, 5e-324, "", "x" * 5000, "\ud800",
                  [], {}, [[[[]]]], {"type": "Sequential", "layers": "abc"}, {"type": "Linear"},
                  {"type": "Linear", "in_dim": 10 ** 9, "out_dim": 10 ** 9},
                  {"type": "Conv2D", "width": 10 ** 6, "height": 10 ** 6, "kernel_size": 1, "stride": 1,
                   "in_channels": 1, "out_channels": 1}, ["NaN"], {"__proto__": 1}]
RAW_SNIPPETS = ["[" * 300, "]" * 300, "{" * 300, '{"a":' * 300, "NaN", "-Infinity", "1e999", "9" * 5000,
                '"\\ud800"', '"\\u0000"', "\x00", "\ufeff", ",", ":", '"', "\\", "nul", "[1,]", "{,}", " " * 1000]


def mutate_tree(doc, rng):
    """Replace one node of the parsed checkpoint (anywhere, however deep) by a hostile value."""
    doc = json.loads(json.dumps(doc))
    parent, key = None, None
    node = doc
    for _ in range(rng.randrange(1, 8)):
        if isinstance(node, dict) and node:
            parent, key = node, rng.choice(sorted(node))
        elif isinstance(node, list) and node:
            parent, key = node, rng.randrange(len(node))
        else:
            break
        node = parent[key]
    value = rng.choice(HOSTILE_VALUES)
    if parent is None:
        return value
    if rng.random() < 0.2 and isinstance(parent, dict):
        del parent[key]
    elif rng.random() < 0.2:
        parent[key] = [parent[key]] * 3 if rng.random() < 0.5 else {"x": parent[key]}
    else:
        parent[key] = value
    return doc


def mutate_text(text, rng):
    """Cut, duplicate, insert or overwrite a span of the file's text."""
    i, j = sorted(rng.randrange(len(text) + 1) for _ in range(2))
    choice = rng.randrange(5)
    if choice == 0:
        return text[:i] + text[j:]
    if choice == 1:
        return text[:j] + text[i:j] * rng.randrange(2, 50) + text[j:]
    if choice == 2:
        return text[:i] + rng.choice(RAW_SNIPPETS) + text[i:]
    if choice == 3:
        return text[:i]
    return text[:i] + "".join(rng.choice('[]{}",:0123456789.eE-+ truefalsn\\u') for _ in range(j - i)) + text[j:]


def checkpoint_cases(count, seed):
    rng = random.Random(seed)
    text = checkpoint_text()
    doc = json.loads(text)
    flat = json.dumps(small_model().parameter_values())
    for k in range(count):
        kind = k % 3
        if kind == 0:
            yield json.dumps(mutate_tree(doc, rng), ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        elif kind == 1:
            yield mutate_text(text, rng).encode("utf-8", "surrogatepass")
        else:
            data = bytearray(mutate_text(flat if rng.random() < 0.3 else text, rng).encode("utf-8", "surrogatepass"))
            for _ in range(rng.randrange(1, 4)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            yield bytes(data)


def write_new(path, data):
    if os.path.exists(path):
        os.remove(path)  # a new file: truncating one in place makes ext4 flush it on close
    with open(path, "wb") as f:
        f.write(data)


def run_fuzz(cases, check):
    """Run ``check(path)`` on every case; the slowest case's seconds and the peak RSS growth in MB."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    slowest = 0.0
    for path, data in cases:
        write_new(path, data)
        start = time.perf_counter()
        check(path, data)
        slowest = max(slowest, time.perf_counter() - start)
    return slowest, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def expect_only(error_type, fn, path, data):
    try:
        fn(path)
    except error_type as e:
        one_line(str(e), path)
    except Exception as e:  # noqa: B902 - the point is to name any other exception with its input
        raise AssertionError(f"{type(e).__name__}: {str(e)[:300]} for input {data[:300]!r}") from e


@pytest.mark.parametrize("count,seed", [
    (FUZZ_CHECKPOINTS, 13),
    pytest.param(30 * FUZZ_CHECKPOINTS, 14, marks=pytest.mark.slow),
])
def test_fuzzed_checkpoints_raise_only_checkpoint_errors(tmp_path, count, seed):
    path = str(tmp_path / "model.json")
    cases = ((path, data) for data in checkpoint_cases(count, seed))
    slowest, grown = run_fuzz(cases, lambda p, d: expect_only(CheckpointError, load_everything, p, d))
    assert slowest < CASE_SECONDS and grown < MEMORY_MB, (slowest, grown)


def test_fuzz_reaches_deep_into_the_files(tmp_path):
    """The mutations are not all refused at the door: many get past read(), some load whole."""
    path = str(tmp_path / "model.json")
    outcomes = {"read": 0, "loaded": 0}
    for data in checkpoint_cases(300, seed=13):
        write_new(path, data)
        try:
            read(path)
            outcomes["read"] += 1
            load_everything(path)
            outcomes["loaded"] += 1
        except ValueError:
            pass
    assert outcomes["read"] > 60 and outcomes["loaded"] > 5, outcomes


def idx_cases(count, seed, folder):
    rng = random.Random(seed)
    images = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    write_idx(os.path.join(folder, "base-images.idx"), images)
    write_idx(os.path.join(folder, "base-labels.idx"), np.arange(5, dtype=np.uint8))
    bases = {name: open(os.path.join(folder, f"base-{name}.idx"), "rb").read() for name in ("images", "labels")}
    for k in range(count):
        name = rng.choice(sorted(bases))
        data = bytearray(bases[name])
        choice = k % 4
        if choice == 0:  # a header field, anything from 0 to 2**32 - 1
            at = rng.randrange(0, min(len(data), 16) // 4) * 4
            data[at:at + 4] = struct.pack(">I", rng.choice([0, 1, 2049, 2051, 2 ** 31, 2 ** 32 - 1,
                                                            rng.randrange(2 ** 32)]))
        elif choice == 1:
            data = data[:rng.randrange(len(data))]
        elif choice == 2:
            data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        else:
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data)
        gz = rng.random() < 0.4
        if gz:
            data = gzip.compress(data, mtime=0)
            if rng.random() < 0.5:  # corrupt the compressed stream too
                cut = bytearray(data)
                cut[rng.randrange(len(cut))] ^= 1 << rng.randrange(8)
                data = bytes(cut)
        yield name, gz, data


@pytest.mark.parametrize("count,seed", [(FUZZ_IDX, 17), pytest.param(20 * FUZZ_IDX, 18, marks=pytest.mark.slow)])
def test_fuzzed_idx_files_raise_only_data_errors(tmp_path, count, seed):
    readers = {"images": read_idx_images, "labels": read_idx_labels}
    cases = []
    for n, (name, gz, data) in enumerate(idx_cases(count, seed, str(tmp_path))):
        cases.append((name, str(tmp_path / f"case{n % 2}.idx{'.gz' if gz else ''}"), data))

    def check(path, data):
        expect_only(DataError, readers[names[path, data]], path, data)
    names = {(path, data): name for name, path, data in cases}
    slowest, grown = run_fuzz([(path, data) for _, path, data in cases], check)
    assert slowest < CASE_SECONDS and grown < MEMORY_MB, (slowest, grown)


# ---- named hostile files ----

DEEP = 100_000
HOSTILE_CHECKPOINTS = {
    "deep_arrays": ("[" * DEEP + "]" * DEEP, "nested at most 64 deep, got more"),
    "deep_unclosed": ("[" * DEEP, "nested at most 64 deep, got 100000"),
    "deep_objects": ('{"a":' * DEEP + "1" + "}" * DEEP, "nested at most 64 deep, got more"),
    "deep_in_the_config": (lambda t: t.replace('"model": ', '"model": ' + "[" * 70, 1).replace(
        ', "parameters"', "]" * 70 + ', "parameters"', 1), "nested at most 64 deep, got more"),
    "just_too_deep": ("[" * 65 + "]" * 65, "nested at most 64 deep, got more"),
    "brackets_in_strings_do_not_count": (lambda t: t.replace('"tanh"', '"' + "[" * 500 + '"', 1),
                                         "activation"),
    "huge_integer": (lambda t: t.replace('"step": 1', '"step": 1' + "0" * 5000), "at most 1000 digits"),
    "huge_exponent": (lambda t: t.replace('"step": 1', '"step": 1e999999999999'), None),
    "config_of_a_billion_inputs": (lambda t: t.replace('"in_dim": 3', '"in_dim": 1000000000', 1),
                                   "in proportion to the 26 parameter values"),
    "config_of_huge_images": (
        lambda t: t.replace('{"type": "Linear", "in_dim": 3', '{"type": "Sequential", "layers": [{"type": '
                            '"Conv2D", "width": 1000000, "height": 1000000, "kernel_size": 1, "stride": 1, '
                            '"in_channels": 1, "out_channels": 1}]}, {"type": "Linear", "in_dim": 3', 1),
        "in proportion"),
    "long_strings_are_cut": (lambda t: t.replace('"minigrad-checkpoint"', '"' + "m" * 100000 + '"'),
                             "expected format 'minigrad-checkpoint', got 'mmmm"),
    "lone_surrogate": (lambda t: t.replace('"minigrad-checkpoint"', '"\\ud800"'), r"got '\ud800'"),
    "nul_bytes": ("\x00" * 100, "not valid JSON at line 1 column 1"),
    "byte_order_mark": (lambda t: "\ufeff" + t, "not valid JSON"),
}


@pytest.mark.parametrize("content,message", HOSTILE_CHECKPOINTS.values(), ids=HOSTILE_CHECKPOINTS.keys())
def test_hostile_checkpoint_is_one_clear_error(tmp_path, content, message):
    path = str(tmp_path / "model.json")
    text = content(checkpoint_text()) if callable(content) else content
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(text)
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as e:
        load_everything(path)
    assert time.perf_counter() - start < CASE_SECONDS
    one_line(str(e.value), path)
    if message:
        assert message in str(e.value)


def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(checkpoint_text())
    with pytest.raises(CheckpointError, match=r"model.json: expected at most 1000 bytes, got \d+ bytes$"):
        read(path, max_bytes=1000)
    assert read(path)["step"] == 1


@pytest.mark.parametrize("make,kind", [
    (lambda p: os.mkfifo(p), "a FIFO"),
    (lambda p: os.symlink("/dev/zero", p), "a character device"),
    (lambda p: os.mkdir(p), "a directory"),
])
def test_strange_files_are_refused_without_blocking(tmp_path, make, kind):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    for name, reader, error in (("model.json", read, CheckpointError), ("images.idx", read_idx_images, DataError),
                                ("labels.idx.gz", read_idx_labels, DataError)):
        path = str(tmp_path / name)
        make(path)
        with pytest.raises(error, match=f"expected a regular file, got {kind}$"):
            reader(path)


def test_gzip_bomb_is_refused_at_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(idx, "MAX_BYTES", 2 ** 20)
    path = str(tmp_path / "images.idx.gz")
    header = struct.pack(">IIII", idx.IMAGES_MAGIC, 10 ** 6, 28, 28)
    with gzip.open(path, "wb") as f:
        f.write(header)
        for _ in range(20):
            f.write(bytes(2 ** 20))
    assert os.path.getsize(path) < 100_000
    with pytest.raises(DataError, match=r"images.idx.gz: expected at most 1.0 MiB once decompressed, got more$"):
        read_idx_images(path)


def test_evaluate_on_a_deeply_nested_file_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * DEEP + "]" * DEEP)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"), str(path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: {path}: expected arrays and objects nested at most 64 deep, got more\n"
    assert done.stdout == ""


def test_evaluate_on_a_config_of_a_billion_inputs_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(HOSTILE_CHECKPOINTS["config_of_a_billion_inputs"][0](checkpoint_text()))
    done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"), str(path)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "in proportion to the 26 parameter values" in done.stderr
