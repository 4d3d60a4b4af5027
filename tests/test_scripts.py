"""The three scripts end to end: train_parallel.py's run folder, its bad arguments and bad input files
(one line, exit code 2, nothing changed), evaluate.py, bench_parallel.py."""
import json
import os

import pytest

from helpers_parallel import ROOT, file_digest, run_script, sha_line, tiny_model
from minigrad import checkpoint, nn

OFFICIAL = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")
ORIGINAL = os.path.join(os.path.dirname(ROOT), "shared", "data", "original-minigrad", "model.json")
TRAIN = ["--workers", "2", "--batch-size", "4", "--max-steps", "12", "--checkpoint-every", "5", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    done = run_script("train_parallel.py", *TRAIN, "--out", out)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def test_run_folder_holds_a_resumable_checkpoint_and_logs(run):
    out, stdout = run
    ckpt = checkpoint.read(os.path.join(out, "model.json"))
    model = nn.module_from_checkpoint(ckpt)
    assert len(model.parameters()) == 5357
    assert ckpt["step"] == ckpt["trainer"]["step"] == 12
    assert ckpt["config"]["batch_size"] == 4 and ckpt["config"]["max_steps"] == 12
    assert ckpt["config"]["out"] == str(out)
    assert [ckpt["config"][k] for k in ("augment", "sample_timeout", "tls_ca_file", "tls_cert", "tls_key")] == [
        "shift", None, None, None, None]
    order = ckpt["trainer"]["data_order"]
    assert order["position"] == 48 and sorted(order["order"]) == list(range(4000))
    optimizer = ckpt["trainer"]["optimizer"]
    assert optimizer["type"] == "Adam" and optimizer["step"] == 12
    assert len(optimizer["state"]["exp_avg"]) == len(optimizer["state"]["exp_avg_sq"]) == 5357
    assert ckpt["parameters_sha256"] == checkpoint.parameters_sha256(model) == sha_line(stdout)
    assert f"run folder: {out}" in stdout
    with open(os.path.join(out, "train_stats.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "step,epoch,loss,lr,samples_per_s,parent_rss_mb,worker_rss_mb" and len(lines) == 13
    assert all(float(x.split(",")[6]) > 1 for x in lines[1:])  # the workers' memory is logged
    assert [int(x.split(",")[0]) for x in lines[1:]] == list(range(1, 13))
    assert float(lines[1].split(",")[3]) == ckpt["config"]["lr"]  # cosine starts at the base rate
    with open(os.path.join(out, "test_stats.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "epoch,step,loss,accuracy" and lines[1].startswith("0.012,12,")


def test_pictures_are_pngs(run):
    pytest.importorskip("matplotlib")
    out, _ = run
    for name in ("training.png", "filters.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_checkpoint_from_before_the_newer_options_resumes(run, tmp_path):
    out, stdout = run
    ckpt = checkpoint.read(os.path.join(out, "model.json"))
    for key in ("recipe", "augment", "sample_timeout", "tls_ca_file", "tls_cert", "tls_key"):
        del ckpt["config"][key]
    (tmp_path / "model.json").write_text(json.dumps(ckpt))
    done = run_script("train_parallel.py", "--resume", tmp_path / "model.json", "--workers", "0", "--quiet")
    assert done.returncode == 0, done.stderr
    assert sha_line(done.stdout) == sha_line(stdout)
    assert checkpoint.read(str(tmp_path / "model.json"))["config"]["augment"] == "none"


def test_in_process_run_has_the_same_bits(run, tmp_path):
    _, stdout = run
    done = run_script("train_parallel.py", *TRAIN, "--workers", "0", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert sha_line(done.stdout) == sha_line(stdout)


@pytest.mark.parametrize("args,message", [
    (["--workers", "-1"], "--workers: expected an integer >= 0, got -1"),
    (["--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
    (["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
    (["--lr", "-0.1"], "--lr: expected a finite number >= 0, got -0.1"),
    (["--lr", "nan"], "--lr: expected a finite number >= 0, got nan"),
    (["--max-steps", "x"], "--max-steps: expected an integer, got 'x'"),
    (["--optimizer", "lbfgs"], "--optimizer: invalid choice"),
    (["--backend", "threads"], "--backend: invalid choice"),
])
def test_bad_arguments_are_argparse_errors(args, message):
    done = run_script("train_parallel.py", *args)
    assert done.returncode == 2
    assert message in done.stderr and "usage:" in done.stderr and "Traceback" not in done.stderr


def bad_inputs(good_checkpoint, tmp):
    """(name, extra arguments, text the error line must contain) for each kind of bad input."""
    text = open(good_checkpoint).read()
    ckpt = json.loads(text)
    (tmp / "truncated.json").write_text(text[: len(text) // 2])
    (tmp / "notjson.json").write_text("this is not a checkpoint\n")
    short = json.loads(text)
    short["parameters"]["hidden.bias"] = short["parameters"]["hidden.bias"][:-1]
    (tmp / "shape.json").write_text(json.dumps(short))
    other = dict(ckpt, model=tiny_model().config(), parameters=tiny_model().state_dict())
    (tmp / "other.json").write_text(json.dumps(other))
    edited = json.loads(text)
    edited["config"]["epochs"] = -1
    (tmp / "edited.json").write_text(json.dumps(edited))
    reordered = json.loads(text)
    reordered["trainer"]["data_order"]["order"][0] = reordered["trainer"]["data_order"]["order"][1]
    (tmp / "reordered.json").write_text(json.dumps(reordered))
    model_only = {k: ckpt[k] for k in ("format", "version", "model", "parameters")}
    (tmp / "model_only.json").write_text(json.dumps(model_only))
    idx = tmp / "idx"
    idx.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (idx / name).write_bytes(b"\x00\x00\x08\x03garbage")
    (tmp / "a_file").write_text("")
    (tmp / "copy").mkdir()
    (tmp / "copy" / "model.json").write_text(text)
    return [
        ("truncated checkpoint", ["--resume", tmp / "truncated.json"], "truncated.json: not valid JSON"),
        ("not JSON", ["--resume", tmp / "notjson.json"], "notjson.json: not valid JSON"),
        ("wrong shape", ["--resume", tmp / "shape.json"], "hidden.bias"),
        ("other architecture", ["--resume", tmp / "other.json"], "different architecture"),
        ("model-only checkpoint", ["--resume", tmp / "model_only.json"], "expected a training checkpoint"),
        ("edited config", ["--resume", tmp / "edited.json"], "config epochs = -1 is not a valid --epochs"),
        ("broken data order", ["--resume", tmp / "reordered.json"], "data order to be a permutation"),
        ("missing checkpoint", ["--resume", tmp / "missing.json"], "missing.json: no such file"),
        ("corrupt IDX", ["--data", "mnist", "--data-dir", idx, "--out", tmp / "o1"], "train-images-idx3-ubyte"),
        ("missing data dir", ["--data", "mnist", "--data-dir", tmp / "nowhere", "--out", tmp / "o2"],
         "file not found"),
        ("unwritable out", ["--out", tmp / "a_file" / "run"], "cannot write the run folder"),
        ("existing run", ["--out", os.path.dirname(good_checkpoint)], "already exists"),
        ("resume over another run",
         ["--resume", tmp / "copy" / "model.json", "--out", os.path.dirname(good_checkpoint)], "already exists"),
        ("changed config on resume", ["--resume", good_checkpoint, "--lr", "0.5"], "differs from the checkpoint"),
        ("momentum with Adam", ["--momentum", "0.5", "--out", tmp / "o3"], "Adam has no momentum"),
    ]


def test_bad_input_is_one_line_exit_2_and_changes_nothing(straight_run, tmp_path):
    _, run = straight_run
    good = os.path.join(run, "model.json")
    before = {name: file_digest(os.path.join(run, name)) for name in sorted(os.listdir(run))}
    failures = []
    for name, args, expected in bad_inputs(good, tmp_path):
        done = run_script("train_parallel.py", *args, "--quiet", timeout=60)
        lines = done.stderr.strip().splitlines()
        if not (done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:")
                and expected in lines[0]):
            failures.append((name, done.returncode, done.stderr[-500:]))
    assert failures == []
    assert {name: file_digest(os.path.join(run, name)) for name in sorted(os.listdir(run))} == before
    # the refused resumes would have continued in tmp_path: no logs were started there
    assert not os.path.exists(tmp_path / "train_stats.csv") and not os.path.exists(tmp_path / "model.json")


def evaluate_json(*args):
    done = run_script("evaluate.py", *args, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    result.pop("seconds")
    return result


def test_evaluate_reports_the_same_for_any_worker_count(run):
    out, stdout = run
    path = os.path.join(out, "model.json")
    in_process = evaluate_json(path, "--workers", "0")
    assert in_process == evaluate_json(path, "--workers", "2")
    assert in_process["n"] == 1000 and in_process["parameters_sha256"] == sha_line(stdout)
    assert sum(map(sum, in_process["confusion"])) == 1000
    assert in_process["accuracy"] == sum(in_process["confusion"][i][i] for i in range(10)) / 1000
    with open(os.path.join(out, "test_stats.csv")) as f:
        last = f.read().splitlines()[-1].split(",")
    assert float(last[2]) == in_process["loss"] and float(last[3]) == in_process["accuracy"]


def test_evaluate_reads_the_original_flat_checkpoint(run, tmp_path):
    out, _ = run
    path = os.path.join(out, "model.json")
    model = nn.module_from_checkpoint(path)
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps(model.parameter_values()))  # the original project's format
    expected = dict(evaluate_json(path, "--workers", "0"), checkpoint=str(flat))
    assert evaluate_json(str(flat), "--workers", "0") == expected


def test_evaluate_report_and_bad_checkpoint(run, tmp_path):
    out, _ = run
    done = run_script("evaluate.py", os.path.join(out, "model.json"), "--workers", "1")
    assert done.returncode == 0 and "accuracy" in done.stdout and "true\\pred" in done.stdout
    (tmp_path / "bad.json").write_text("[1.0, 2.0]")
    done = run_script("evaluate.py", tmp_path / "bad.json")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "expected 5357 parameters" in done.stderr


@pytest.mark.slow
def test_evaluate_on_the_official_test_set(run):
    if not os.path.isdir(OFFICIAL):
        pytest.skip(f"{OFFICIAL} is absent")
    out, stdout = run
    result = evaluate_json(os.path.join(out, "model.json"), "--data", "mnist", "--data-dir", OFFICIAL)
    assert result["n"] == 10000 and result["data"] == "mnist-test"
    assert result["parameters_sha256"] == sha_line(stdout)


@pytest.mark.slow
def test_the_original_projects_checkpoint_scores_91_95_percent():
    """The original minigrad's published checkpoint (a flat array), read by evaluate.py."""
    for path in (ORIGINAL, OFFICIAL):
        if not os.path.exists(path):
            pytest.skip(f"{path} is absent")
    result = evaluate_json(ORIGINAL, "--data", "mnist", "--data-dir", OFFICIAL)
    assert result["n"] == 10000 and result["data"] == "mnist-test"
    assert result["accuracy"] == 0.9195 and sum(result["confusion"][i][i] for i in range(10)) == 9195


def test_bench_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    done = run_script("bench_parallel.py", "--max-workers", "1", "--batch-sizes", "2", "--samples", "4",
                      "--repeat", "2", "--json", path)
    assert done.returncode == 0, done.stderr
    assert "samples/s" in done.stdout
    results = json.loads(path.read_text())["results"]
    assert [(r["workers"], r["batch_size"]) for r in results] == [(0, 2), (1, 2)]
    for r in results:
        assert r["samples_per_s"] > 0 and 0 <= r["overhead_share"] < 1
    assert results[1]["speedup_vs_1"] == 1.0


@pytest.mark.parametrize("name", ["train_parallel.py", "evaluate.py", "bench_parallel.py"])
def test_help(name):
    done = run_script(name, "--help")
    assert done.returncode == 0 and "usage:" in done.stdout
