"""The watchdog for hung workers: a sample that runs past ``sample_timeout`` has its worker
killed and replaced, the sample is recomputed, and the parameters are the same bits as an
undisturbed run; a sample that hangs every worker it meets stops the run with a named error.
Each case must end within the timeout plus a few seconds, with no process left behind."""
import time

import pytest

from helpers_parallel import (SLEEP_SECONDS, FaultyDataset, alive, children, sample_at, tiny_dataset, tiny_trainer,
                              train_sha, wait_gone)
from parallel import SampleTimeoutError
from parallel.process_pool import ProcessBackend

pytestmark = pytest.mark.filterwarnings("ignore:.*workers on .* CPUs:RuntimeWarning")

STEPS, BATCH, TIMEOUT = 6, 5, 1.0


def run(data, times=STEPS, **options):
    lines, pids = [], []
    start = time.monotonic()
    with tiny_trainer(2, log=lines.append, sample_timeout=TIMEOUT, **options) as trainer:
        try:
            for _ in trainer.train_steps(data, epochs=10, batch_size=BATCH, max_steps=times):
                pids.extend(p for p in trainer.backend.pids() if p not in pids)
            return trainer.parameters_sha256(), lines, time.monotonic() - start, pids
        finally:
            pids.extend(p for p in trainer.backend.pids() if p not in pids)


@pytest.mark.parametrize("mode", ["stop", "hang", "sleep"])
def test_a_hung_sample_is_recomputed_on_a_new_worker_with_the_same_bits(mode, tmp_path):
    undisturbed, _ = train_sha(0, steps=STEPS, batch_size=BATCH)
    data = FaultyDataset(tiny_dataset(), sample_at(2, 1), mode, str(tmp_path / "faults"), times=1)
    sha, lines, seconds, pids = run(data)
    assert sha == undisturbed
    assert len(lines) == 1, lines
    assert f"ran past the {TIMEOUT:g} s sample timeout at sample {sample_at(2, 1)}" in lines[0]
    assert seconds < TIMEOUT + (SLEEP_SECONDS if mode == "sleep" else 0) + 10
    assert wait_gone(pids, 5) == []


def test_a_sample_that_hangs_every_worker_stops_the_run_naming_it(tmp_path):
    data = FaultyDataset(tiny_dataset(), sample_at(2, 3), "hang", str(tmp_path / "faults"), times=100)
    start = time.monotonic()
    with pytest.raises(SampleTimeoutError, match=rf"Sample {sample_at(2, 3)} ran past the 1 s sample timeout "
                                                 r"3 times in a row") as info:
        run(data, max_crashes=3)
    assert info.value.index == sample_at(2, 3)
    assert time.monotonic() - start < 3 * TIMEOUT + 15
    time.sleep(0.5)
    leftovers = [p for p in alive(children()) if p]
    assert leftovers == []


def test_evaluation_is_watched_too(tmp_path):
    test = tiny_dataset(n=12, seed=1)
    data = FaultyDataset(test, 5, "stop", str(tmp_path / "faults"), times=1)
    with tiny_trainer(0) as reference:
        expected = reference.evaluate(test)
    lines = []
    with tiny_trainer(2, log=lines.append, sample_timeout=TIMEOUT) as trainer:
        got = trainer.evaluate(data)
    assert (got.loss, got.predictions) == (expected.loss, expected.predictions)
    assert len(lines) == 1 and "sample timeout at sample 5" in lines[0]


def test_the_default_timeout_is_the_larger_of_30_s_and_100_medians():
    backend = ProcessBackend(1, sample_timeout=None)
    assert backend.timeout("train") == 30.0
    for seconds in (0.2, 0.5, 0.4):
        backend.watchdog.record("train", seconds)
    assert backend.timeout("train") == pytest.approx(40.0)
    assert backend.timeout("eval") == 30.0
    assert ProcessBackend(1, sample_timeout=0).timeout("train") is None
    assert ProcessBackend(1, sample_timeout=2.5).timeout("train") == 2.5


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "5", True])
def test_a_bad_timeout_is_one_clear_error(bad):
    with pytest.raises(ValueError, match="Expected sample_timeout"):
        ProcessBackend(1, sample_timeout=bad)
