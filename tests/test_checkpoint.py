"""JSON checkpoints: round trips, the original flat format, every kind of bad file, atomic writes (under failure,
and as a reader polling a training run sees them), and the digest."""
import errno
import hashlib
import importlib.util
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import threading

import pytest

import minigrad
from minigrad import Value, mse_loss, nn
from minigrad import checkpoint
from minigrad.atomic_file import WriteError
from minigrad.checkpoint import CheckpointError, load_into, parameters_sha256, read, save
from minigrad.nn import module_from_checkpoint
from minigrad.optimizer import Adam, optimizer_from_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def reference_text():
    """The text of a valid checkpoint of the reference CNN (seed 1)."""
    model = nn.CNN.reference(seed=1)
    return json.dumps({"format": "minigrad-checkpoint", "version": 1, "model": model.config(),
                       "parameters": model.state_dict()})


def small_model(seed=0):
    return nn.Sequential(nn.Linear(3, 4, "tanh", seed=seed), nn.Linear(4, 2, seed=seed + 1))


def listing(folder):
    return sorted(os.listdir(folder))


# ---- round trips ----

def test_round_trip_keeps_every_parameter_bit_for_bit(tmp_path):
    model = nn.CNN.reference(seed=3)
    path = tmp_path / "model.json"
    save(path, model)
    ckpt = read(path)
    assert ckpt["format"] == checkpoint.FORMAT and ckpt["version"] == checkpoint.VERSION
    assert ckpt["model"] == model.config() and ckpt["parameters"] == model.state_dict()
    rebuilt = module_from_checkpoint(ckpt)
    assert type(rebuilt) is nn.CNN and rebuilt.config() == model.config()
    assert rebuilt.parameter_values() == model.parameter_values()
    assert parameters_sha256(rebuilt) == parameters_sha256(model)

    other = nn.CNN.reference(seed=4)
    assert parameters_sha256(other) != parameters_sha256(model)
    assert other.load(path) is other
    assert parameters_sha256(other) == parameters_sha256(model)
    assert listing(tmp_path) == ["model.json"]


def test_module_save_and_generic_architecture(tmp_path):
    model = small_model()
    model.save(tmp_path / "small.json", step=5)
    rebuilt = module_from_checkpoint(str(tmp_path / "small.json"))
    assert isinstance(rebuilt, nn.Sequential)
    x = [0.3, -0.2, 0.9]
    assert [v.v for v in rebuilt(x)] == [v.v for v in model(x)]


def test_checkpoint_module_does_not_import_nn(tmp_path):
    # `import minigrad` loads nn (as the original did), so the module's own imports are what count,
    # at the top or inside a function
    import ast
    import minigrad.checkpoint as c
    tree = ast.parse(open(c.__file__, encoding="utf-8").read())
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [alias.name for node in imports for alias in node.names]
    modules = [node.module for node in imports if isinstance(node, ast.ImportFrom)]
    assert imports and "nn" not in names and not {"nn", "minigrad.nn"} & set(modules)
    small_model().save(tmp_path / "small.json")
    assert type(module_from_checkpoint(str(tmp_path / "small.json"))).__name__ == "Sequential"


def test_a_checkpoint_names_its_writer_and_layout(tmp_path, reference_text):
    small_model().save(tmp_path / "small.json")
    ckpt = read(tmp_path / "small.json")
    assert (ckpt["minigrad"], ckpt["layout"]) == (minigrad.__version__, "named-tensors")
    with pytest.raises(ValueError, match=r"Expected extra fields other than .*'layout'\], got \['layout'\]"):
        small_model().save(tmp_path / "other.json", layout="x")
    old = tmp_path / "old.json"  # written before the two fields existed: still read, same layout
    old.write_text(reference_text)
    assert "layout" not in read(old) and module_from_checkpoint(old).config() == nn.CNN.reference().config()


def test_evaluate_refuses_a_newer_checkpoint_before_any_work(tmp_path, reference_text):
    path = tmp_path / "newer.json"
    path.write_text(_doc(reference_text, version=2, minigrad="2.0.0"))
    done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"), str(path)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"error: {path}: expected version 1 (minigrad {minigrad.__version__}), got 2 "
                           f"(written by minigrad 2.0.0)\n")


def test_extra_fields_are_preserved(tmp_path):
    extra = {"step": 120, "epoch": 3, "rng": [3, [1, 2, 3], None], "note": "lr 0.1 → 0.01",
             "config": {"lr": 0.1, "schedule": "cosine", "fused": True, "tags": []},
             "optimizer": {"type": "SGD", "state": {"momentum_buffer": [0.5, -1e-300]}}}
    save(tmp_path / "model.json", small_model(), **extra)
    ckpt = read(tmp_path / "model.json")
    for key, value in extra.items():
        assert ckpt[key] == value
    assert ckpt.path == str(tmp_path / "model.json")


def test_resume_from_checkpoint_continues_bit_identically(tmp_path):
    data = [([0.1 * i, -0.2, 0.05 * i * i], [math.sin(i), math.cos(i)]) for i in range(6)]

    def train(model, opt, steps):
        for k in steps:
            x, y = data[k % len(data)]
            opt.zero_grad()
            mse_loss(model(x), y).backward()
            opt.step()

    model = small_model()
    opt = Adam(model.parameters(), lr=0.05, weight_decay=0.01)
    train(model, opt, range(10))

    model = small_model()
    opt = Adam(model.parameters(), lr=0.05, weight_decay=0.01)
    train(model, opt, range(4))
    expected_digest_after_4 = parameters_sha256(model)
    save(tmp_path / "run.json", model, optimizer=opt.state_dict(), step=4)
    ckpt = read(tmp_path / "run.json")
    resumed = module_from_checkpoint(ckpt, seed=99)
    assert parameters_sha256(resumed) == expected_digest_after_4
    resumed_opt = optimizer_from_state(resumed.parameters(), ckpt["optimizer"])
    train(resumed, resumed_opt, range(ckpt["step"], 10))

    whole = small_model()
    whole_opt = Adam(whole.parameters(), lr=0.05, weight_decay=0.01)
    train(whole, whole_opt, range(10))
    assert parameters_sha256(resumed) == parameters_sha256(whole)
    assert resumed_opt.state_dict() == whole_opt.state_dict()


# ---- the original flat format ----

def torch_reference_cnn(torch):
    tnn = torch.nn
    torch.manual_seed(0)
    return tnn.Sequential(tnn.Conv2d(1, 15, 5, stride=2), tnn.Tanh(), tnn.Conv2d(15, 12, 4, stride=2),
                          tnn.Tanh(), tnn.Flatten(0), tnn.Linear(48, 35), tnn.Tanh(),
                          tnn.Linear(35, 10), tnn.Tanh()).double()


def flat_parameters(torch_model):
    """The original project's order: layer by layer, neuron by neuron, its weights then its bias;
    a conv neuron's weights over input channel, kernel row, kernel column."""
    flat = []
    for layer in torch_model:
        if hasattr(layer, "weight"):
            for out in range(layer.weight.shape[0]):
                flat.extend(layer.weight[out].flatten().tolist())
                flat.append(layer.bias[out].item())
    return flat


def test_flat_checkpoint_of_a_torch_model_gives_torchs_outputs(tmp_path):
    torch = pytest.importorskip("torch")
    torch_model = torch_reference_cnn(torch)
    flat = flat_parameters(torch_model)
    assert len(flat) == 5357
    (tmp_path / "original.json").write_text(json.dumps(flat))

    model = nn.CNN.reference(seed=0).load(tmp_path / "original.json")
    assert model.parameter_values() == flat
    rng = random.Random(0)
    for _ in range(2):
        image = [[rng.uniform(-1, 1) for _ in range(15)] for _ in range(15)]
        want = torch_model(torch.tensor([image], dtype=torch.float64)).tolist()
        got = [v.v for v in model([image])]
        for a, b in zip(got, want):
            assert abs(a - b) <= 1e-9, (got, want)
    assert [name for name, _ in model.named_parameters()][:2] == ["conv.0.weight.0.0.0.0", "conv.0.weight.0.0.0.1"]


def test_flat_checkpoint_read_and_build(tmp_path):
    model = nn.CNN.reference(seed=2)
    (tmp_path / "flat.json").write_text(json.dumps(model.parameter_values()))
    ckpt = read(tmp_path / "flat.json")
    assert ckpt == {"format": "flat", "parameters": model.parameter_values()}
    rebuilt = module_from_checkpoint(tmp_path / "flat.json")
    assert parameters_sha256(rebuilt) == parameters_sha256(model)


def test_flat_checkpoint_of_another_length_cannot_be_built(tmp_path):
    (tmp_path / "tiny.json").write_text("[1.0, 2.0, 3]")
    with pytest.raises(CheckpointError, match=r"tiny.json: expected 5357 parameters \(a flat checkpoint "
                                              r"of the reference CNN\), got 3; build the model"):
        module_from_checkpoint(tmp_path / "tiny.json")


# ---- bad files: named in the error, the model untouched ----

def _doc(text, **changes):
    doc = json.loads(text)
    doc.update(changes)
    return json.dumps(doc)


def _edit_parameters(text, name, edit):
    doc = json.loads(text)
    edit(doc["parameters"], name)
    return json.dumps(doc, allow_nan=True)


def _other_architecture(text):
    doc = json.loads(text)
    doc["model"]["layers"][0]["out_channels"] = 16
    return json.dumps(doc)


def _flat(n, bad_at=None, bad="\"x\""):
    values = [str(0.01 * i) for i in range(n)]
    if bad_at is not None:
        values[bad_at] = bad
    return "[" + ", ".join(values) + "]"


OURS = re.escape(f"(minigrad {minigrad.__version__})")
BAD_FILES = {
    "missing": (None, r"model.json: no such file"),
    "empty": ("", r"model.json: empty file, expected a JSON checkpoint"),
    "blank": ("\n  \n", r"model.json: empty file"),
    "truncated": (lambda t: t[:len(t) // 2], r"model.json: not valid JSON \(truncated\?\) at line 1 column \d+$"),
    "truncated_in_a_string": (lambda t: t[:t.index("tanh") + 2],
                              r"model.json: not valid JSON \(truncated\?\) at line 1 column \d+$"),
    "not_json": ("hello world\n", r"model.json: not valid JSON at line 1 column 1: Expecting value"),
    "trailing_garbage": (lambda t: t + " }", r"model.json: not valid JSON at line 1 column \d+: Extra data"),
    "binary": (b"\x80\x04\x95\x00\x00", r"model.json: expected JSON text, got bytes that are not UTF-8"),
    "a_string": ('"model"', r"model.json: expected a JSON object \(a minigrad checkpoint\) or an array of "
                            r"numbers \(flat parameters\), got a string"),
    "a_number": ("3.5", r"model.json: expected a JSON object .* got a number"),
    "dict_without_format": ('{"weights": [1, 2]}', r"model.json: expected format 'minigrad-checkpoint', "
                                                   r"got no format field \(keys \['weights'\]\)"),
    "wrong_format": (lambda t: _doc(t, format="torch"), r"expected format 'minigrad-checkpoint', got 'torch'"),
    "newer_version": (lambda t: _doc(t, version=2), rf"model.json: expected version 1 {OURS}, "
                                                    r"got 2 \(written by a newer minigrad\?\)$"),
    "newer_version_named": (lambda t: _doc(t, version=3, minigrad="2.1.0"),
                            rf"model.json: expected version 1 {OURS}, got 3 \(written by minigrad 2\.1\.0\)$"),
    "string_version": (lambda t: _doc(t, version="1"), rf"model.json: expected version 1 {OURS}, got '1'$"),
    "other_layout": (lambda t: _doc(t, layout="flat-tensor-order", minigrad="1.2.0"),
                     rf"model.json: expected parameter layout 'named-tensors' {OURS}, "
                     r"got 'flat-tensor-order' \(written by minigrad 1\.2\.0\)$"),
    "no_model": (lambda t: _doc(t, model=None), r"expected 'model' to be an object of the architecture, got null"),
    "parameters_a_list": (lambda t: _doc(t, parameters=[1.0]),
                          r"expected 'parameters' to be an object of tensors by name, got an array"),
    "other_architecture": (_other_architecture, r"model.json: checkpoint is for a different architecture: "
                                                r"expected model.layers\[0\].out_channels = 15, got 16"),
    "missing_tensor": (lambda t: _edit_parameters(t, "output.bias", lambda p, n: p.pop(n)),
                       r"model.json: State dict does not match the model: missing \['output.bias'\]"),
    "wrong_shape": (lambda t: _edit_parameters(t, "output.weight", lambda p, n: p[n][9].pop()),
                    r"model.json: output.weight\[9\]: expected a list of 35, got 34"),
    "nan_parameter": (lambda t: _edit_parameters(t, "output.bias", lambda p, n: p[n].__setitem__(9, math.nan)),
                      r"model.json: expected finite numbers, got NaN"),
    "huge_parameter": (lambda t: _edit_parameters(t, "output.bias", lambda p, n: p[n].__setitem__(9, 1e308))
                       .replace("1e+308", "1e999"), r"model.json: output.bias\[9\]: expected a finite number, got inf"),
    "string_parameter": (lambda t: _edit_parameters(t, "output.bias", lambda p, n: p[n].__setitem__(9, "0.5")),
                         r"model.json: output.bias\[9\]: expected a number, got str"),
    "flat_too_short": (_flat(5356), r"model.json: expected 5357 parameters, got 5356"),
    "flat_empty": ("[]", r"model.json: expected a non-empty array of parameter values, got an empty array"),
    "flat_string": (_flat(5357, 3), r"model.json: expected a number at parameter 3, got a string"),
    "flat_bool": (_flat(5357, 5356, "true"), r"model.json: expected a number at parameter 5356, got a boolean"),
    "flat_nan": (_flat(5357, 7, "NaN"), r"model.json: expected finite numbers, got NaN"),
    "flat_infinity": (_flat(5357, 7, "-Infinity"), r"model.json: expected finite numbers, got -Infinity"),
    "flat_nested": (_flat(5357, 0, "[1.0]"), r"model.json: expected a number at parameter 0, got an array"),
}


@pytest.mark.parametrize("content,message", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_bad_file_is_named_and_model_is_unchanged(tmp_path, reference_text, content, message):
    path = tmp_path / "model.json"
    if callable(content):
        content = content(reference_text)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    model = nn.CNN.reference(seed=5)
    before = parameters_sha256(model)
    with pytest.raises(CheckpointError, match=message) as info:
        model.load(path)
    assert "\n" not in str(info.value)
    assert parameters_sha256(model) == before
    with pytest.raises(CheckpointError, match=r"model.json: "):
        module_from_checkpoint(path)  # builds the file's own architecture, so some messages differ


def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r"expected a regular file, got a directory"):
        read(tmp_path)


def test_the_valid_base_file_loads(tmp_path, reference_text):
    """The bad files above are edits of this one, which must itself be fine."""
    (tmp_path / "model.json").write_text(reference_text)
    model = nn.CNN.reference(seed=5).load(tmp_path / "model.json")
    assert parameters_sha256(model) == parameters_sha256(nn.CNN.reference(seed=1))


def test_load_into_a_plain_dict_names_the_checkpoint():
    model = small_model()
    ckpt = {"format": "flat", "parameters": [0.0] * 3}
    with pytest.raises(CheckpointError, match=r"^checkpoint: expected 26 parameters, got 3$"):
        load_into(model, ckpt)


def test_architecture_difference_names_the_first_field(tmp_path):
    save(tmp_path / "small.json", small_model())
    bigger = nn.Sequential(nn.Linear(3, 5, "tanh"), nn.Linear(5, 2))
    with pytest.raises(CheckpointError, match=r"small.json: checkpoint is for a different architecture: "
                                              r"expected model.layers\[0\].out_dim = 5, got 4"):
        bigger.load(tmp_path / "small.json")
    with pytest.raises(CheckpointError, match=r"expected 1 items in model.layers, got 2"):
        nn.Sequential(nn.Linear(3, 4, "tanh")).load(tmp_path / "small.json")


def test_unbuildable_config_is_a_checkpoint_error(tmp_path):
    (tmp_path / "odd.json").write_text(json.dumps(
        {"format": "minigrad-checkpoint", "version": 1, "model": {"type": "Transformer"}, "parameters": {}}))
    with pytest.raises(CheckpointError, match=r"odd.json: Expected a model config with a type in"):
        module_from_checkpoint(tmp_path / "odd.json")


# ---- writing: refused values and failures in the middle ----

@pytest.mark.parametrize("extra,message", [
    (dict(loss=float("nan")), r"cannot write JSON: loss: expected a finite number, got nan"),
    (dict(optimizer={"state": {"exp_avg": [0.0, float("inf")]}}),
     r"cannot write JSON: optimizer.state.exp_avg\[1\]: expected a finite number, got inf"),
    (dict(seen={1, 2}), r"cannot write JSON: seen: expected JSON data .* got set"),
    (dict(table={1: "a"}), r"cannot write JSON: table: expected string keys, got 1"),
])
def test_save_refuses_what_json_cannot_hold_and_keeps_the_old_file(tmp_path, extra, message):
    path = tmp_path / "model.json"
    save(path, small_model())
    old = path.read_bytes()
    with pytest.raises(CheckpointError, match="model.json: " + message):
        save(path, small_model(seed=7), **extra)
    assert path.read_bytes() == old and listing(tmp_path) == ["model.json"]


def test_save_refuses_a_diverged_model(tmp_path):
    model = small_model()
    model.layers[1].neurons[1].b.v = float("nan")
    with pytest.raises(CheckpointError, match=r"model.json: cannot write JSON: parameters.1.bias\[1\]: "
                                              r"expected a finite number, got nan"):
        save(tmp_path / "model.json", model)
    assert listing(tmp_path) == []


def test_save_refuses_extra_fields_that_shadow_the_format():
    with pytest.raises(ValueError, match=r"Expected extra fields other than .*, got \['model'\]"):
        save("unused.json", small_model(), model="mine")


class _FailingFile:
    """Wraps a real file; the write puts half the text on disk, then fails."""

    def __init__(self, f, error):
        self.f, self.error = f, error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()
        return False

    def write(self, text):
        self.f.write(text[:len(text) // 2])
        self.f.flush()
        raise self.error

    def __getattr__(self, name):
        return getattr(self.f, name)


def _fail_in_write(error):
    def patch(monkeypatch):
        real_fdopen = os.fdopen
        monkeypatch.setattr(os, "fdopen", lambda *a, **k: _FailingFile(real_fdopen(*a, **k), error))
    return patch


def _fail(target, name, error):
    def patch(monkeypatch):
        def boom(*args, **kwargs):
            raise error
        monkeypatch.setattr(target, name, boom)
    return patch


def _write_to_dev_full(monkeypatch):
    """The temp file is real (so its removal is checked) but its bytes go to /dev/full, where
    the kernel answers every write with ENOSPC."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


FAILURES = {
    "json_dumps": (_fail(json, "dumps", RuntimeError("serializer broke")), RuntimeError),
    "disk_full_in_write": (_fail_in_write(OSError(errno.ENOSPC, "No space left on device")), WriteError),
    "disk_full_for_real": (_write_to_dev_full, WriteError),
    "no_inode_for_the_temp_file": (_fail(tempfile, "mkstemp", OSError(errno.ENOSPC, "No space left")), WriteError),
    "interrupt_in_write": (_fail_in_write(KeyboardInterrupt()), KeyboardInterrupt),
    "fsync": (_fail(os, "fsync", OSError(errno.EIO, "Input/output error")), WriteError),
    "quota_at_fsync": (_fail(os, "fsync", OSError(errno.EDQUOT, "Disk quota exceeded")), WriteError),
    "io_error_at_replace": (_fail(os, "replace", OSError(errno.EIO, "Input/output error")), WriteError),
    "interrupt_at_fsync": (_fail(os, "fsync", KeyboardInterrupt()), KeyboardInterrupt),
    "replace": (_fail(os, "replace", PermissionError(13, "Permission denied")), PermissionError),
    "interrupt_at_replace": (_fail(os, "replace", KeyboardInterrupt()), KeyboardInterrupt),
}


@pytest.mark.parametrize("inject,error", FAILURES.values(), ids=FAILURES.keys())
def test_failed_write_keeps_the_previous_file_and_no_temp_file(tmp_path, monkeypatch, inject, error):
    path = tmp_path / "model.json"
    save(path, small_model(), step=1)
    old = path.read_bytes()
    inject(monkeypatch)
    with pytest.raises(error):
        save(path, small_model(seed=8), step=2)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert listing(tmp_path) == ["model.json"]
    assert read(path)["step"] == 1


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    _fail(os, "replace", OSError(28, "No space left on device"))(monkeypatch)
    with pytest.raises(OSError):
        checkpoint.atomic_write_text(tmp_path / "new.txt", "hello")
    assert listing(tmp_path) == []


STORAGE_FAILURES = {
    "full_while_writing": (_write_to_dev_full, "writing", "No space left on device (ENOSPC)"),
    "io_error_while_syncing": (_fail(os, "fsync", OSError(errno.EIO, "Input/output error")),
                               "syncing to disk", "Input/output error (EIO)"),
    "quota_while_renaming": (_fail(os, "replace", OSError(errno.EDQUOT, "Disk quota exceeded")),
                             "renaming over the old file", "Disk quota exceeded (EDQUOT)"),
}


@pytest.mark.parametrize("inject,step,why", STORAGE_FAILURES.values(), ids=STORAGE_FAILURES.keys())
@pytest.mark.parametrize("existed", [True, False], ids=["replacing", "new"])
def test_a_storage_failure_is_one_write_error_saying_what_and_where(tmp_path, monkeypatch, inject, step, why,
                                                                    existed):
    path = tmp_path / "model.json"
    if existed:
        save(path, small_model(), step=1)
    inject(monkeypatch)
    with pytest.raises(WriteError) as e:
        save(path, small_model(seed=8), step=2)
    monkeypatch.undo()
    after = "the previous file is unchanged" if existed else "no file was written"
    assert str(e.value) == f"{path}: cannot write ({step}): {why}; {after}"
    assert isinstance(e.value, OSError) and e.value.filename == str(path) and e.value.step == step
    assert listing(tmp_path) == (["model.json"] if existed else [])
    if existed:
        assert read(path)["step"] == 1


def test_other_errors_keep_their_type(tmp_path, monkeypatch):
    _fail(os, "replace", PermissionError(errno.EACCES, "Permission denied"))(monkeypatch)
    with pytest.raises(PermissionError) as e:
        checkpoint.atomic_write_text(tmp_path / "x.txt", "hello")
    assert not isinstance(e.value, WriteError)


def test_a_full_tmpfs_keeps_the_previous_checkpoint(tmpfs):
    folder = tmpfs("64k")
    path = folder / "model.json"
    save(path, small_model(), step=1)
    old = path.read_bytes()
    with pytest.raises(WriteError) as e:
        save(path, nn.CNN.reference(seed=1), step=2)  # about 120 KB
    assert e.value.errno == errno.ENOSPC
    assert str(e.value).startswith(f"{path}: cannot write (")
    assert str(e.value).endswith("No space left on device (ENOSPC); the previous file is unchanged")
    assert path.read_bytes() == old and listing(folder) == ["model.json"]
    save(path, small_model(seed=3), step=3)  # the space the failed write took is free again
    assert read(path)["step"] == 3


def test_checkpoint_file_is_always_whole(tmp_path):
    """A reader polling model.json during a run that saves every step never sees a partial file."""
    from helpers_parallel import run_script, train_args
    path = tmp_path / "model.json"
    reads, problems, stop = [], [], threading.Event()

    def poll():
        while not stop.is_set():
            try:
                with open(path) as f:
                    reads.append(json.load(f)["step"])
            except FileNotFoundError:
                pass
            except ValueError as e:
                problems.append(e)
    reader = threading.Thread(target=poll)
    reader.start()
    try:
        done = run_script("train_parallel.py", *train_args(tmp_path, "--checkpoint-every", "1",
                                                           "--max-steps", "20"))
    finally:
        stop.set()
        reader.join()
    assert done.returncode == 0, done.stderr
    assert problems == [] and len(set(reads)) > 5
    pictures = (["training.png", "timeline.png", "filters.png", "mistakes.png", "confusion.png"]
                if importlib.util.find_spec("matplotlib") else [])
    assert sorted(os.listdir(tmp_path)) == sorted(["model.json", "train_stats.csv", "test_stats.csv"] + pictures)


def test_atomic_write_text_replaces_and_keeps_permissions(tmp_path):
    path = tmp_path / "notes.txt"
    checkpoint.atomic_write_text(path, "first")
    if os.name == "posix":
        assert os.stat(path).st_mode & 0o777 == 0o644
        os.chmod(path, 0o600)
    checkpoint.atomic_write_text(path, "second ✓")
    assert path.read_text(encoding="utf-8") == "second ✓"
    if os.name == "posix":
        assert os.stat(path).st_mode & 0o777 == 0o600
    assert listing(tmp_path) == ["notes.txt"]


def test_atomic_write_json_round_trips_floats_exactly(tmp_path):
    values = [0.1, 1 / 3, -2.5e-308, 5e-324, 1.7976931348623157e308, -0.0]
    checkpoint.atomic_write_json(tmp_path / "v.json", {"v": values})
    got = json.loads((tmp_path / "v.json").read_text())["v"]
    assert parameters_sha256(got) == parameters_sha256(values)


# ---- the digest ----

def test_parameters_sha256_is_little_endian_float64():
    raw = bytes.fromhex("0000000000000000" "000000000000f03f" "00000000000004c0")  # 0.0, 1.0, -2.5
    assert parameters_sha256([0.0, 1.0, -2.5]) == hashlib.sha256(raw).hexdigest()
    assert parameters_sha256([Value(0.0), Value(1.0), Value(-2.5)]) == hashlib.sha256(raw).hexdigest()


def test_parameters_sha256_sees_one_ulp_and_order():
    model = nn.CNN.reference(seed=0)
    digest = parameters_sha256(model)
    assert digest == parameters_sha256(model.parameter_values()) == parameters_sha256(nn.CNN.reference(seed=0))
    p = model.parameters()[1234]
    p.v = math.nextafter(p.v, math.inf)
    assert parameters_sha256(model) != digest
    p.v = math.nextafter(p.v, -math.inf)
    assert parameters_sha256(model) == digest
    values = model.parameter_values()
    values[0], values[1] = values[1], values[0]
    assert parameters_sha256(values) != digest
    assert parameters_sha256([0.0]) != parameters_sha256([-0.0])


def test_cnn_load_on_the_class_builds_the_model_and_on_a_model_fills_it(tmp_path):
    trained = nn.CNN.reference(seed=3)
    trained.save(tmp_path / "model.json")
    (tmp_path / "flat.json").write_text(json.dumps(trained.parameter_values()))
    for name in ("model.json", "flat.json"):
        built = nn.CNN.load(tmp_path / name)
        assert isinstance(built, nn.CNN) and built.parameter_values() == trained.parameter_values()
        filled = nn.CNN.reference(seed=4)
        assert filled.load(tmp_path / name) is filled
        assert filled.parameter_values() == trained.parameter_values()
    with pytest.raises(CheckpointError, match="expected a Linear checkpoint, got a CNN"):
        nn.Linear.load(tmp_path / "model.json")
