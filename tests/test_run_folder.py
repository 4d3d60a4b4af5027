"""fit(out=...) keeps a run folder, on a model that is not the CNN (a small MLP): a checkpoint that says how it
was made, a log row per step, an evaluation per epoch, its pictures; without out, fit writes nothing."""
import os

from helpers_parallel import MLP_FIT, MLP_N, mlp_trainer, points, rows
from minigrad import checkpoint, nn
from parallel.run import plots


def test_fit_with_out_keeps_a_resumable_run(mlp_run):
    sha, out, history = mlp_run
    ckpt = checkpoint.read(os.path.join(out, "model.json"))
    assert ckpt["step"] == ckpt["trainer"]["step"] == 15 and ckpt["config"] == {"note": "mlp"}
    assert ckpt["parameters_sha256"] == sha
    assert ckpt["trainer"]["optimizer"]["type"] == "Adam"
    assert checkpoint.parameters_sha256(nn.module_from_checkpoint(ckpt)) == sha
    assert [int(r.split(",")[0]) for r in rows(os.path.join(out, "train_stats.csv"))] == list(range(1, 16))
    assert [r.split(",")[:2] for r in rows(os.path.join(out, "test_stats.csv"))] == [
        ["1.0", "5"], ["2.0", "10"], ["3.0", "15"]]
    assert [s for s, _ in history["train"]] == list(range(1, 16)) and len(history["test"]) == 3
    assert history["out"] == out and history["memory"].startswith("memory")
    assert history["test"][0][1].confusion is None  # regression targets
    # no conv.0.weight: no filters.png; regression targets: no mistakes.png
    expected = ["training.png", "timeline.png"] if plots._pyplot() is not None else []
    assert history["pictures"] == expected
    assert sorted(os.listdir(out)) == sorted(["model.json", "train_stats.csv", "test_stats.csv"] + expected)


def test_fit_without_out_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with mlp_trainer(0) as t:
        history = t.fit(points(MLP_N), **MLP_FIT, test=points(6, 0.5))
    assert os.listdir(tmp_path) == [] and sorted(history) == ["test", "train"]
