"""A NaN or infinite loss stops the run naming the step and the sample: the step is not applied, and
the script exits 3 with its last good checkpoint unchanged."""
import json
import os

import pytest

from helpers_parallel import file_digest, run_script, tiny_dataset, tiny_loss, tiny_model_fn
from parallel import DataParallelTrainer, NonFiniteError
from parallel.data_order import epoch_order

pytestmark = pytest.mark.filterwarnings("ignore:.*workers on .* CPUs:RuntimeWarning")


def test_nan_loss_names_the_step_and_sample_and_changes_nothing():
    def loss_fn(outputs, label):
        loss = tiny_loss(outputs, label)
        return loss * float("nan") if label == 2 and outputs[0].v > -2 else loss
    data = tiny_dataset()
    first_bad = next(i for i in epoch_order(len(data), 0, 0) if data.labels[i] == 2)
    position = epoch_order(len(data), 0, 0).index(first_bad)
    with DataParallelTrainer(tiny_model_fn(), loss_fn, lr=0.05, workers=2, log=lambda line: None) as trainer:
        with pytest.raises(NonFiniteError) as info:
            for _ in trainer.train_steps(data, epochs=1, batch_size=4):
                before = trainer.parameters_sha256()
        assert info.value.step == position // 4 + 1
        assert info.value.index == first_bad
        assert f"step {position // 4 + 1} at sample {first_bad}" in str(info.value)
        assert trainer.step == position // 4
        if trainer.step:
            assert trainer.parameters_sha256() == before


def test_nan_stops_the_script_with_the_step_and_keeps_the_checkpoint(straight_run, tmp_path):
    """Weights of +-1e308 are finite, but w * x overflows to +-inf and inf - inf is nan."""
    _, run = straight_run
    with open(os.path.join(run, "model.json")) as f:
        ckpt = json.load(f)
    ckpt["config"]["max_steps"] = 32  # two more steps to go
    flat = [1e308 if k % 2 else -1e308 for k in range(15 * 25)]
    ckpt["parameters"]["conv.0.weight"] = [[[flat[o * 25 + r * 5:o * 25 + r * 5 + 5] for r in range(5)]]
                                           for o in range(15)]
    path = tmp_path / "model.json"
    path.write_text(json.dumps(ckpt))
    before = file_digest(path)
    done = run_script("train_parallel.py", "--resume", path, "--quiet")
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("error:")][0]
    assert "Non-finite loss in step 31 at sample" in line and "checkpoint" in line
    assert file_digest(path) == before  # the last good checkpoint stays
