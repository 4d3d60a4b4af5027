"""The timeline of a run: Chrome Trace Event JSON with the fields the format requires, one track per
worker whose spans never overlap, the parent's phases adding up to the step, a killed worker as an
event, and a bound on the steps kept."""
import json
import time

import pytest

from helpers_parallel import FaultyDataset, run_script, tiny_dataset, tiny_trainer
from parallel.data_order import epoch_order
from parallel.run.timeline import PARENT_PID, PHASES_TID, STEPS_TID, WORKERS_PID, TimelineRecorder
from parallel.trainer import StepReport

pytestmark = pytest.mark.filterwarnings("ignore:.*workers on .* CPUs:RuntimeWarning")

BATCH = 5
PHASE_NAMES = ["prepare", "hand-out", "wait", "reduce", "optimizer step"]


def record(data, steps, trace_steps=200, workers=2, test=None):
    """Train ``steps`` steps with a recorder attached (a checkpoint span after step 2); return the
    trace's events, the reports and each step's interval as measured around it here."""
    recorder = TimelineRecorder(trace_steps=trace_steps)
    reports, outside = [], []
    with tiny_trainer(workers) as trainer:
        assert trainer.add_event_listener(recorder.on_event) == (workers > 0)
        trainer.start(data)  # the workers' start-up is not part of the first step
        before = time.perf_counter()
        for report in trainer.train_steps(data, epochs=10, batch_size=BATCH, max_steps=steps):
            outside.append((before, time.perf_counter()))
            recorder.on_step(report)
            reports.append(report)
            if report.step == 2:
                with recorder.span("checkpoint", step=2):
                    time.sleep(0.01)
            if test is not None and report.step == 3:
                recorder.on_epoch(1, trainer.evaluate(test))
            before = time.perf_counter()
    return recorder, reports, outside


def events_of(recorder, tmp_path):
    path = tmp_path / "trace.json"
    recorder.write(path)
    with open(path) as f:
        trace = json.load(f)
    return trace["traceEvents"]


def spans(events, cat=None):
    return [e for e in events if e["ph"] == "X" and (cat is None or e["cat"] == cat)]


def test_every_event_has_the_fields_the_format_requires(tmp_path):
    recorder, _, _ = record(tiny_dataset(), steps=4, test=tiny_dataset(6, seed=1))
    events = events_of(recorder, tmp_path)
    assert {e["ph"] for e in events} == {"M", "X"}
    for e in events:
        for field in ("ph", "ts", "pid", "tid", "name"):
            assert field in e, f"{e} has no {field}"
        assert isinstance(e["ts"], int) and e["ts"] >= 0, e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int), e
        if e["ph"] == "X":
            assert isinstance(e["dur"], int) and e["dur"] >= 0, e
            assert isinstance(e["args"], dict), e
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name", "process_sort_index", "thread_sort_index"), e
    named = {(e["pid"], e["tid"]) for e in events if e["name"] == "thread_name"}
    used = {(e["pid"], e["tid"]) for e in spans(events)}
    assert used <= named, f"tracks without a name: {used - named}"
    assert {(PARENT_PID, STEPS_TID), (PARENT_PID, PHASES_TID), (WORKERS_PID, 0), (WORKERS_PID, 1)} <= used
    samples = spans(events, "sample")
    assert len(samples) == 4 * BATCH
    assert all({"index", "loss", "engine seconds"} <= set(e["args"]) for e in samples)
    assert sorted(e["args"]["index"] for e in samples) == sorted(epoch_order(40, 0, 0)[:4 * BATCH])
    assert [e["name"] for e in spans(events, "checkpoint")] == ["checkpoint"]
    [evaluation] = spans(events, "evaluation")
    assert evaluation["args"]["epochs"] == 1 and 0 <= evaluation["args"]["accuracy"] <= 1


def test_spans_on_one_track_never_overlap(tmp_path):
    recorder, _, _ = record(tiny_dataset(), steps=6, workers=3, test=tiny_dataset(6, seed=1))
    tracks = {}
    for e in spans(events_of(recorder, tmp_path)):
        tracks.setdefault((e["pid"], e["tid"]), []).append(e)
    assert len(tracks) >= 2  # the parent and the workers that claimed samples (under load, maybe not all 3)
    for track, on_it in tracks.items():
        on_it.sort(key=lambda e: e["ts"])
        for a, b in zip(on_it, on_it[1:]):
            assert a["ts"] + a["dur"] <= b["ts"], f"{track}: {a['name']} overlaps {b['name']}"


def test_the_parents_phases_add_up_to_the_measured_step(tmp_path):
    recorder, reports, outside = record(tiny_dataset(), steps=5)
    events = events_of(recorder, tmp_path)
    origin = reports[0].started
    steps = spans(events, "step")
    phases = spans(events, "phase")
    assert [e["args"]["step"] for e in steps] == [1, 2, 3, 4, 5]
    assert [e["name"] for e in phases] == PHASE_NAMES * 5
    for k, (step, report, (before, after)) in enumerate(zip(steps, reports, outside)):
        mine = phases[5 * k:5 * k + 5]
        assert mine[0]["ts"] == step["ts"] and mine[-1]["ts"] + mine[-1]["dur"] == step["ts"] + step["dur"]
        assert abs(sum(e["dur"] for e in mine) - step["dur"]) <= 5  # whole microseconds, rounded
        assert abs(step["dur"] - 1e6 * report.seconds) <= 1
        # the step lies inside the interval this test measured around it
        assert before - origin - 1e-6 <= step["ts"] / 1e6
        assert (step["ts"] + step["dur"]) / 1e6 <= after - origin + 1e-6
        for e in spans(events, "sample"):
            if e["args"]["step"] == report.step:
                assert step["ts"] <= e["ts"] and e["ts"] + e["dur"] <= step["ts"] + step["dur"] + 1
    # and the steps fill most of those intervals (the test's own code between them is tiny)
    assert sum(e["dur"] for e in steps) / 1e6 >= 0.5 * sum(after - before for before, after in outside) - 0.02


def test_a_killed_worker_shows_as_events_and_its_sample_is_recomputed(tmp_path):
    index = epoch_order(40, 0, 0)[BATCH + 1]  # second step, second sample
    data = FaultyDataset(tiny_dataset(), index, "sigkill", str(tmp_path / "faults"), times=1)
    recorder, _, _ = record(data, steps=4)
    events = events_of(recorder, tmp_path)
    instants = [e for e in events if e["ph"] == "i"]
    for e in instants:
        assert e["s"] in ("g", "p", "t") and isinstance(e["args"], dict), e
    [death] = [e for e in instants if e["cat"] == "death"]
    [replacement] = [e for e in instants if e["cat"] == "replacement"]
    [recompute] = [e for e in instants if e["cat"] == "recompute"]
    assert death["pid"] == WORKERS_PID and death["tid"] == death["args"]["worker"]
    assert death["args"]["exitcode"] == -9 and "died" in death["name"]
    assert (replacement["pid"], replacement["tid"]) == (death["pid"], death["tid"])
    assert replacement["args"]["pid"] != death["args"]["pid"]
    assert death["ts"] <= replacement["ts"]
    assert (recompute["pid"], recompute["tid"]) == (PARENT_PID, PHASES_TID)
    assert recompute["args"]["index"] == index and recompute["name"] == f"sample {index} recomputed"
    step2 = [e for e in spans(events, "step") if e["args"]["step"] == 2][0]
    assert step2["ts"] <= death["ts"] <= step2["ts"] + step2["dur"]
    [sample] = [e for e in spans(events, "sample") if e["args"]["index"] == index and e["args"]["step"] == 2]
    assert sample["ts"] >= recompute["ts"]  # the span shown is the recomputation


def test_only_the_first_trace_steps_are_kept(tmp_path):
    recorder, _, _ = record(tiny_dataset(), steps=6, trace_steps=3)
    recorder.on_event("death", worker=0, pid=1, exitcode=-9, timeout=False)
    with recorder.span("checkpoint"):
        pass
    events = events_of(recorder, tmp_path)
    assert [e["args"]["step"] for e in spans(events, "step")] == [1, 2, 3]
    assert sorted({e["args"]["step"] for e in spans(events, "sample")}) == [1, 2, 3]
    assert len(spans(events, "phase")) == 15
    assert spans(events, "checkpoint")[0]["args"] == {"step": 2}  # the one during the steps kept
    assert [e for e in events if e["ph"] == "i"] == []
    with open(tmp_path / "trace.json") as f:
        assert json.load(f)["otherData"] == {"steps": 3, "trace_steps": 3}


def report(step, started, seconds, samples, phases=None):
    phases = phases or {"prepare": 0.0, "hand_out": 0.1 * seconds, "wait": 0.8 * seconds, "reduce": 0.05 * seconds,
                        "optimizer": 0.05 * seconds}
    return StepReport(step=step, epoch=0, loss=1.0, lr=0.1, indices=[s[1] for s in samples], seconds=seconds,
                      engine_seconds=0.0, sample_seconds=0.0, epoch_end=False, phases=phases,
                      samples_timing=samples, started=started)


def test_samples_timed_on_another_clock_are_placed_inside_their_step(tmp_path):
    recorder = TimelineRecorder()
    far = 5000.0  # a worker on another host: its clock says nothing about ours
    recorder.on_step(report(1, 10.0, 1.0, [(0, 3, far, 0.3, 0.5), (1, 4, far + 0.1, 0.2, 0.6),
                                           (0, 5, far + 0.4, 0.5, 0.7), (0, 6, far + 0.9, 0.5, 0.8)]))
    recorder.on_step(report(2, 11.0, 1.0, [(0, 7, 11.2, 0.3, 0.5)]))
    samples = spans(events_of(recorder, tmp_path), "sample")
    placed = [(e["tid"], e["args"]["index"], e["ts"], e["dur"]) for e in samples if e["args"]["step"] == 1]
    assert placed == [(0, 3, 0, 300000), (0, 5, 300000, 500000), (0, 6, 800000, 200000), (1, 4, 0, 200000)]
    assert all(e["args"]["clock"] == "placed" for e in samples if e["args"]["step"] == 1)
    [own] = [e for e in samples if e["args"]["step"] == 2]
    assert (own["ts"], own["dur"]) == (1200000, 300000) and "clock" not in own["args"]


def test_events_and_spans_take_the_recorders_clock(tmp_path):
    now = [20.0]
    recorder = TimelineRecorder(clock=lambda: now[0])
    recorder.on_step(report(1, 10.0, 1.0, [(0, 3, 10.2, 0.3, 0.5)]))
    recorder.on_event("timeout", worker=0, pid=7, index=3, seconds=2.0)
    now[0] = 21.5
    recorder.on_event("something new", detail=1)

    class Evaluated:
        seconds, accuracy, loss = 0.5, 0.75, 0.25
    recorder.on_epoch(1, Evaluated())
    recorder.on_epoch(2, None)
    events = events_of(recorder, tmp_path)
    instants = [(e["name"], e["ts"], e["tid"]) for e in events if e["ph"] == "i"]
    assert instants == [("worker 0 timed out on sample 3", 10000000, 0), ("something new", 11500000, PHASES_TID)]
    [evaluation] = spans(events, "evaluation")
    assert (evaluation["ts"], evaluation["dur"]) == (11000000, 500000)


def test_event_listeners_chain_and_a_backend_without_events_says_so():
    heard = []
    with tiny_trainer(0) as local:
        assert local.add_event_listener(heard.append) is False
    with tiny_trainer(1) as trainer:
        trainer.backend.on_event = lambda name, **fields: heard.append(("first", name))
        assert trainer.add_event_listener(lambda name, **fields: heard.append(("second", name)))
        assert trainer.add_event_listener(lambda name, **fields: heard.append(("third", fields)))
        trainer.backend.on_event("death", worker=0)
    assert heard == [("first", "death"), ("second", "death"), ("third", {"worker": 0})]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "200"])
def test_trace_steps_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match=f"Expected trace_steps to be a positive integer, got {bad!r}"):
        TimelineRecorder(trace_steps=bad)


def test_the_picture_has_a_row_per_worker(tmp_path):
    pytest.importorskip("matplotlib")
    recorder, _, _ = record(tiny_dataset(), steps=3)
    path = tmp_path / "timeline.png"
    assert recorder.plot(path, steps=2)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not TimelineRecorder().plot(tmp_path / "empty.png")


def test_the_script_records_a_short_run_of_the_reference_cnn(tmp_path):
    done = run_script("plot_timeline.py", "--workers", 2, "--steps", 3, "--out-dir", tmp_path)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "timeline.json") as f:
        events = json.load(f)["traceEvents"]
    assert [e["args"]["step"] for e in spans(events, "step")] == [1, 2, 3]
    assert len(spans(events, "sample")) == 3 * 8
    assert (tmp_path / "timeline.png").exists() or "matplotlib is not installed" in done.stdout
    bad = run_script("plot_timeline.py", "--steps", 0)
    assert bad.returncode == 2 and "expected a positive integer, got '0'" in bad.stderr


def test_numpy_numbers_in_a_report_are_written_as_plain_ones(tmp_path):
    import numpy as np
    recorder = TimelineRecorder()
    step = report(np.int64(1), 10.0, 1.0, [(0, np.int64(3), 10.2, 0.3, np.float64(0.5))])
    step.lr = np.float64(0.25)
    recorder.on_step(step)
    events = events_of(recorder, tmp_path)
    assert spans(events, "step")[0]["args"]["lr"] == 0.25 and spans(events, "step")[0]["args"]["step"] == 1
    [sample] = spans(events, "sample")
    assert sample["args"]["index"] == 3 and isinstance(sample["args"]["index"], int)


def test_fit_with_a_trace_writes_it_and_the_run_folder_gets_the_timeline(tmp_path):
    from helpers_parallel import tiny_dataset, tiny_trainer
    trace = tmp_path / "trace.json"
    with tiny_trainer(2) as trainer:
        history = trainer.fit(tiny_dataset(), epochs=2, batch_size=5, test=tiny_dataset(n=10, seed=1),
                              out=str(tmp_path / "run"), trace=str(trace), trace_steps=50)
    events = json.loads(trace.read_text())["traceEvents"]
    steps = [e for e in events if e["ph"] == "X" and e["name"].startswith("step")]
    assert len(steps) == 16
    assert {e["name"] for e in events if e["ph"] == "X"} >= {"evaluation", "checkpoint", "wait", "reduce"}
    if _pyplot_available():
        assert "timeline.png" in history["pictures"] and (tmp_path / "run" / "timeline.png").exists()


def _pyplot_available():
    from parallel.run import plots
    return plots._pyplot() is not None
