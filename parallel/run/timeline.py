"""A timeline of training: Chrome Trace Event JSON (Perfetto, chrome://tracing) and timeline.png.

What reaches the recorder, and where it lands::

    trainer.train_steps / fit(on_step=...)  --> on_step(report)    the step on the parent's "steps"
                                                                    track, its phases (prepare, hand-out,
                                                                    wait, reduce, optimizer step) on its
                                                                    "phases" track, each sample on the
                                                                    track of the worker that computed it
    trainer.add_event_listener(...)         --> on_event(name, ...) an instant: a worker's timeout, death
                                                                    and replacement on its track, a
                                                                    recomputed sample on the parent's
    with recorder.span("checkpoint"): ...   --> a span on the parent's "phases" track (between steps)
    fit(on_epoch=recorder.on_epoch)         --> the evaluation that ends an epoch, likewise

Only the first ``trace_steps`` steps are kept (and what happens before the last of them ends), so
a long run writes a trace of bounded size. Times are the ``time.perf_counter`` clock, which all
processes of a Linux machine share; a step whose samples do not fall inside it (workers on other
hosts) has them laid out back to back from its hand-out on each worker's track instead, marked
``"clock": "placed"``.

Standalone use::

    recorder = TimelineRecorder(trace_steps=200)
    trainer.add_event_listener(recorder.on_event)
    trainer.fit(train, test=test, on_step=recorder.on_step, on_epoch=recorder.on_epoch)
    recorder.write("trace.json")     # open in ui.perfetto.dev or chrome://tracing
    recorder.plot("timeline.png")    # the first 20 steps, one row per worker and one for the parent
"""
import contextlib
import json
import os
import time

from minigrad.atomic_file import atomic_write_text
from minigrad.checks import positive_int

PARENT_PID, WORKERS_PID = 1, 2
STEPS_TID, PHASES_TID = 0, 1
PHASES = (("prepare", "prepare"), ("hand_out", "hand-out"), ("wait", "wait"), ("reduce", "reduce"),
          ("optimizer", "optimizer step"))
PHASE_COLORS = {"prepare": "tab:gray", "hand-out": "tab:purple", "wait": "#d9d9d9", "reduce": "tab:orange",
                "optimizer step": "tab:green", "checkpoint": "tab:brown", "evaluation": "tab:olive"}
EVENT_MARKERS = {"death": ("X", "tab:red"), "timeout": ("v", "tab:red"), "replacement": ("^", "tab:green"),
                 "recompute": ("o", "tab:red")}
CLOCK_SLACK = 1e-3  # seconds a sample may seem to lie outside its step before the clocks count as unrelated


class _Span:
    __slots__ = ("track", "name", "cat", "start", "end", "args")

    def __init__(self, track, name, cat, start, end, args):
        self.track, self.name, self.cat, self.start, self.end, self.args = track, name, cat, start, end, args


class _Instant:
    __slots__ = ("track", "name", "kind", "time", "args")

    def __init__(self, track, name, kind, at, args):
        self.track, self.name, self.kind, self.time, self.args = track, name, kind, at, args


class TimelineRecorder:
    """Records the first ``trace_steps`` steps of a run; ``write`` and ``plot`` draw them."""

    def __init__(self, trace_steps=200, clock=time.perf_counter):
        self.trace_steps = positive_int("trace_steps", trace_steps)
        self.clock = clock
        self.steps = 0
        self.spans = []      # _Span, in the order they were recorded
        self.instants = []   # _Instant
        self.step_starts = []

    @property
    def full(self):
        return self.steps >= self.trace_steps

    # ---- what the run tells it ----

    def on_step(self, report):
        """Record a ``StepReport``: the step, its phases and its samples."""
        if self.full:
            return
        self.steps += 1
        start, end = report.started, report.started + report.seconds
        self.step_starts.append(start)
        self.spans.append(_Span(("parent", STEPS_TID), f"step {report.step}", "step", start, end,
                                {"step": report.step, "epoch": report.epoch, "loss": report.loss, "lr": report.lr,
                                 "samples": len(report.indices)}))
        at = start
        for key, name in PHASES:
            seconds = report.phases.get(key, 0.0)
            self.spans.append(_Span(("parent", PHASES_TID), name, "phase", at, at + seconds,
                                    {"step": report.step, "seconds": seconds}))
            at += seconds
        hand_out = start + report.phases.get("prepare", 0.0)
        for worker, index, began, seconds, loss, clock in _place(report.samples_timing, hand_out, end):
            args = {"index": index, "loss": loss, "engine seconds": seconds, "step": report.step}
            if clock:
                args["clock"] = clock
            self.spans.append(_Span(("worker", worker), f"sample {index}", "sample", began, began + seconds, args))

    def on_event(self, name, **fields):
        """A backend's event (``ProcessBackend(on_event=...)``), stamped now."""
        if self.full:
            return
        now = self.clock()
        worker = fields.get("worker")
        if name == "death":
            how = "timed out, killed" if fields.get("timeout") else f"died (exit code {fields.get('exitcode')})"
            label = f"worker {worker} {how}"
        elif name == "replacement":
            label = f"worker {worker} replaced (pid {fields.get('pid')})"
        elif name == "timeout":
            label = f"worker {worker} timed out on sample {fields.get('index')}"
        elif name == "recompute":
            label = f"sample {fields.get('index')} recomputed"
        else:
            label = name
        track = ("worker", worker) if name != "recompute" and isinstance(worker, int) else ("parent", PHASES_TID)
        self.instants.append(_Instant(track, label, name, now, dict(fields)))

    @contextlib.contextmanager
    def span(self, name, **args):
        """Time the block as a span ``name`` (e.g. "checkpoint", "evaluation") on the parent's track."""
        start = self.clock()
        try:
            yield
        finally:
            self.add_span(name, start, self.clock(), **args)

    def add_span(self, name, start, end, **args):
        """A span of the parent's between ``start`` and ``end`` (seconds on ``clock``)."""
        if not self.full:
            self.spans.append(_Span(("parent", PHASES_TID), name, name, start, end, args))

    def on_epoch(self, epochs_done, evaluation):
        """``fit(on_epoch=...)``: the evaluation that just ended (its ``seconds`` up to now)."""
        if evaluation is not None:
            end = self.clock()
            self.add_span("evaluation", end - evaluation.seconds, end, epochs=epochs_done,
                          accuracy=evaluation.accuracy, loss=evaluation.loss)

    # ---- what it writes ----

    def trace_events(self):
        """The Chrome Trace Event list: metadata, complete ("X") and instant ("i") events, times in
        whole microseconds from the first thing recorded."""
        origin = self._origin()
        events = _metadata(self._workers())
        for s in self.spans:
            ts = _micros(s.start, origin)
            pid, tid = _ids(s.track)
            events.append({"name": s.name, "cat": s.cat, "ph": "X", "ts": ts, "dur": _micros(s.end, origin) - ts,
                           "pid": pid, "tid": tid, "args": s.args})
        for e in self.instants:
            pid, tid = _ids(e.track)
            events.append({"name": e.name, "cat": e.kind, "ph": "i", "s": "t", "ts": _micros(e.time, origin),
                           "pid": pid, "tid": tid, "args": e.args})
        return events

    def write(self, path):
        """Write the trace as JSON (atomically) to ``path``."""
        trace = {"traceEvents": self.trace_events(), "displayTimeUnit": "ms",
                 "otherData": {"steps": self.steps, "trace_steps": self.trace_steps}}
        atomic_write_text(path, json.dumps(trace, separators=(",", ":"), default=_plain) + "\n")
        return path

    def plot(self, path, steps=20, quiet=False):
        """``path``: the first ``steps`` steps, one row for the parent's phases and one per worker.
        Returns False (and says why in one line) when matplotlib is missing or nothing was recorded."""
        positive_int("steps", steps)
        from .plots import MATPLOTLIB_MISSING, _pyplot, _save
        plt = _pyplot()
        if plt is None:
            if not quiet:
                print(f"{os.path.basename(path)} not drawn: {MATPLOTLIB_MISSING}")
            return False
        if not self.step_starts:
            return False
        origin = self.step_starts[0]
        until = self.step_starts[steps] if steps < len(self.step_starts) else float("inf")
        workers = self._workers()
        rows = [("parent", PHASES_TID)] + [("worker", w) for w in workers]
        labels = ["parent"] + [f"worker {w}" for w in workers]
        fig, ax = plt.subplots(figsize=(14, 1.2 + 0.45 * len(rows)))
        seen = set()
        for s in self.spans:
            if s.start >= until or s.track not in rows:
                continue
            y = rows.index(s.track)
            color = PHASE_COLORS.get(s.name, "tab:pink") if s.cat != "sample" else (
                "tab:blue" if s.args["step"] % 2 else "tab:cyan")
            label = s.name if s.cat != "sample" else "sample (alternate steps alternate colors)"
            ax.broken_barh([(1e3 * (s.start - origin), 1e3 * (s.end - s.start))], (y - 0.4, 0.8),
                           facecolors=color, edgecolor="none", label=None if label in seen else label)
            seen.add(label)
        for e in self.instants:
            if e.time < until and e.track in rows:
                marker, color = EVENT_MARKERS.get(e.kind, ("*", "black"))
                label = f"{e.kind} (event)"
                ax.plot([1e3 * (e.time - origin)], [rows.index(e.track)], marker=marker, color=color,
                        markeredgecolor="black", markersize=10, linestyle="none",
                        label=None if label in seen else label)
                seen.add(label)
        for start in self.step_starts[:steps]:
            ax.axvline(1e3 * (start - origin), color="black", linewidth=0.4, alpha=0.4)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels)
        ax.invert_yaxis()
        ax.set_xlabel("milliseconds since the first step began (thin lines: step starts)")
        shown = min(steps, len(self.step_starts))
        ax.set_title(f"The first {shown} steps: what the parent and each worker were doing (gaps: idle)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        fig.tight_layout()
        try:
            _save(fig, path)
        finally:
            plt.close(fig)
        return True

    def _origin(self):
        times = [s.start for s in self.spans] + [e.time for e in self.instants]
        return min(times) if times else 0.0

    def _workers(self):
        found = {s.track[1] for s in self.spans if s.track[0] == "worker"}
        found |= {e.track[1] for e in self.instants if e.track[0] == "worker"}
        return sorted(found)


def _place(samples_timing, hand_out, end):
    """``(worker, index, started, seconds, loss, clock)`` per sample, inside the step.

    Samples timed on this machine's clock keep their times. If any lies outside the step (a worker
    on another host, whose clock means nothing here), each worker's samples of the step are laid
    out back to back from the hand-out instead, in the order it ran them, clamped to the step.
    """
    if all(s[2] is not None and hand_out - CLOCK_SLACK <= s[2] and s[2] + s[3] <= end + CLOCK_SLACK
           for s in samples_timing):
        return [(w, i, started, seconds, loss, None) for w, i, started, seconds, loss in samples_timing]
    placed, free = [], {}
    for w, i, _started, seconds, loss in sorted(samples_timing, key=lambda s: (s[0], s[2] or 0.0)):
        at = min(free.get(w, hand_out), end)
        seconds = min(seconds, end - at)
        free[w] = at + seconds
        placed.append((w, i, at, seconds, loss, "placed"))
    return placed


def _plain(value):
    """A numpy scalar in the args (a user's learning rate schedule may return one) as a Python number."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"Expected numbers and strings in a trace's args, got {type(value).__name__}")


def _ids(track):
    kind, number = track
    return (PARENT_PID, number) if kind == "parent" else (WORKERS_PID, number)


def _micros(t, origin):
    return int(round((t - origin) * 1e6))


def _metadata(workers):
    def meta(name, pid, tid, args):
        return {"name": name, "ph": "M", "ts": 0, "pid": pid, "tid": tid, "args": args}
    events = [meta("process_name", PARENT_PID, 0, {"name": "parent (trainer)"}),
              meta("process_sort_index", PARENT_PID, 0, {"sort_index": 0}),
              meta("thread_name", PARENT_PID, STEPS_TID, {"name": "steps"}),
              meta("thread_name", PARENT_PID, PHASES_TID, {"name": "phases"}),
              meta("process_name", WORKERS_PID, 0, {"name": "workers"}),
              meta("process_sort_index", WORKERS_PID, 0, {"sort_index": 1})]
    for w in workers:
        events.append(meta("thread_name", WORKERS_PID, w, {"name": f"worker {w}"}))
        events.append(meta("thread_sort_index", WORKERS_PID, w, {"sort_index": w}))
    return events
