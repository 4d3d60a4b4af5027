"""The run loop behind ``DataParallelTrainer.fit``: train, log, evaluate, checkpoint, draw.

::

    fit(train, epochs, batch_size, test=..., out="runs/x", checkpoint_every=100, progress=True)
      prepare    data order checked (a resumed one too), run folder made, logs opened
                 (a resumed run cuts them back to its checkpoint's step)
      each step  train_stats.csv row, progress bar, step hooks (on_step, ...)
                 epoch end: evaluate test -> test_stats.csv, the epoch line, on_epoch
                 every checkpoint_every steps: model.json, written atomically
      the end    evaluate if the run stopped mid-epoch, model.json, pictures (training,
                 filters, mistakes and confusion of the last evaluation, the timeline of
                 the first steps), and with ``trace`` the Chrome trace of the first
                 ``trace_steps`` steps
      SIGINT / SIGTERM   model.json at the last completed step, then TrainingInterrupted
      a full disk        RunWriteError naming the file; the last model.json stays whole

Without ``out`` nothing is written: the loop only trains, evaluates after each epoch and
calls the hooks. Only the parent writes files.
"""
import contextlib
import math
import os
import time

from minigrad.checkpoint import CheckpointError

from ..errors import TrainingInterrupted
from ..signals import stop_on_signals
from .checkpoint import save_run_checkpoint
from .files import CsvLog, RunWriteError, prepare_run_folder, read_csv
from .memory import MB, MemoryMonitor
from .progress import Progress
from .timeline import TimelineRecorder

TRAIN_COLUMNS = ["step", "epoch", "loss", "lr", "samples_per_s", "parent_rss_mb", "worker_rss_mb"]
TEST_COLUMNS = ["epoch", "step", "loss", "accuracy"]


class Run:
    """One call of ``fit``: its arguments, its files and what it has done so far (``history``)."""

    def __init__(self, trainer, train, epochs, batch_size, test=None, max_steps=None, out=None,
                 checkpoint_every=100, progress=False, config=None, on_step=None, on_epoch=None, trace=None,
                 trace_steps=200):
        self.trainer, self.train, self.test, self.out = trainer, train, test, out
        self.epochs, self.batch_size, self.max_steps = epochs, batch_size, max_steps
        self.total = trainer.total_steps(len(train), epochs, batch_size, max_steps)
        self.checkpoint_every = checkpoint_every
        self.config = {} if config is None else config
        self.step_hooks = [on_step] if on_step else []  # each called with the StepReport of every step
        self.trace = trace
        self.timeline = TimelineRecorder(trace_steps) if out is not None or trace is not None else None
        if self.timeline is not None:
            self.step_hooks.append(self.timeline.on_step)
            trainer.add_event_listener(self.timeline.on_event)
        self.last_evaluation = None
        self.on_epoch = on_epoch
        self.history = {"train": [], "test": []}
        self.steps_per_epoch = math.ceil(len(train) / batch_size)
        self.last_report = None
        self.first_step = trainer.step  # the run's rows begin after it (a resumed run's checkpoint)
        self.checkpoint_path = None
        self.train_log = self.test_log = None
        self.memory = MemoryMonitor(trainer.backend) if out is not None or progress else None
        self.progress = Progress(self._samples_until(self.total), self._samples_until(trainer.step), self.memory,
                                 quiet=not progress)
        self.started = time.perf_counter()

    def _samples_until(self, step):
        full, rest = divmod(step, self.steps_per_epoch)
        return full * len(self.train) + min(rest * self.batch_size, len(self.train))

    # ---- the run ----

    def fit(self):
        """Train to the end; on any way out close what the run opened (saving first after a signal)."""
        with stop_on_signals():
            try:
                self._open()
                self._loop()
                self._finish()
            except TrainingInterrupted:
                self._stop(save=self.test_log is not None)  # the run folder is ready: keep the last step
                raise
            except BaseException:
                self._stop(save=False)
                raise
        return self.history

    def _open(self):
        trainer = self.trainer
        try:
            trainer.prepare_data_order(len(self.train), self.batch_size)  # a resumed order is checked now
        except ValueError as e:
            if not trainer.last_checkpoint:
                raise
            raise CheckpointError(f"{trainer.last_checkpoint[0]}: {e}") from None
        if self.out is not None:
            resumed_from = trainer.last_checkpoint[0] if trainer.last_checkpoint else None
            self.checkpoint_path = prepare_run_folder(self.out, resumed_from)
            keep = trainer.step if resumed_from else None
            self.train_log = CsvLog(os.path.join(self.out, "train_stats.csv"), TRAIN_COLUMNS, keep)
            self.test_log = CsvLog(os.path.join(self.out, "test_stats.csv"), TEST_COLUMNS, keep)
        if self.test is not None:
            trainer.start(self.train, self.test)  # both datasets reach the workers at start

    def _loop(self):
        trainer = self.trainer
        if self._epoch_evaluation_missing():
            self.evaluate()
        for report in trainer.train_steps(self.train, self.epochs, self.batch_size, self.max_steps):
            self._record(report)
            self.progress.update(report)
            for hook in self.step_hooks:
                hook(report)
            if report.epoch_end:
                evaluation = self.evaluate() if self.test is not None else None
                self.history["test"].append((report.epoch + 1, evaluation))
                if self.on_epoch:
                    self.on_epoch(report.epoch + 1, evaluation)
            if self.out is not None and report.step % self.checkpoint_every == 0:
                self.save()

    def _record(self, report):
        """The step's row in train_stats.csv and the history, once (also for a step a signal cut
        off from the loop: ``_stop`` records it before the checkpoint says the run got there)."""
        if report.step <= (self.last_report.step if self.last_report is not None else self.first_step):
            return
        self.last_report = report
        self.history["train"].append((report.step, report.loss))
        if self.train_log is not None:
            parent, workers = self.memory.read()
            self.train_log.write(report.step, report.epoch, report.loss, report.lr, report.samples / report.seconds,
                                 round(parent / MB, 1), round(max(workers, default=0) / MB, 1))

    def _epoch_evaluation_missing(self):
        """A resumed run stopped between an epoch's last step and its evaluation."""
        order, last = self.trainer.data_order, self.trainer.last_checkpoint
        if self.test_log is None or self.test is None or not last or not last[1]:
            return False
        return (order.position == 0 and order.epoch > 0
                and not any(int(r["step"]) == last[1] for r in read_csv(self.test_log.path)))

    def _span(self, name):
        return self.timeline.span(name) if self.timeline is not None else contextlib.nullcontext()

    def evaluate(self):
        """Test loss and accuracy, logged with the epochs done (a fraction when stopped mid-epoch)."""
        with self._span("evaluation"):
            evaluation = self.last_evaluation = self.trainer.evaluate(self.test)
        step = self.trainer.step
        epoch = round(step / self.steps_per_epoch, 4)
        if self.test_log is not None:
            self.test_log.write(epoch, step, evaluation.loss, evaluation.accuracy)
            self.test_log.flush()
        train_loss = self.last_report.loss if self.last_report else float("nan")
        self.progress.write(f"epoch {epoch:6.2f}  step {step:6d}  train loss {train_loss:.4f}  "
                            f"test loss {evaluation.loss:.4f}  accuracy {100 * evaluation.accuracy:.2f}%  "
                            f"({time.perf_counter() - self.started:.0f}s)")
        return evaluation

    def save(self):
        with self._span("checkpoint"):
            self.train_log.flush()
            self.test_log.flush()
            save_run_checkpoint(self.checkpoint_path, self.trainer, self.config)

    def _finish(self):
        trainer = self.trainer
        if self.out is None:
            self.progress.close()
            self._write_trace()
            return
        self.memory.read(force=True)
        if self.test is not None and (self.last_report is None or not self.last_report.epoch_end):
            evaluation = self.evaluate()
            self.history["test"].append((round(trainer.step / self.steps_per_epoch, 4), evaluation))
        self.save()
        self.progress.close()
        self._close_logs()
        self._write_trace()
        self.history.update(out=self.out, memory=self.memory.summary(), pictures=self.draw())

    def _stop(self, save):
        self.progress.close()
        self.trainer.close()  # workers stop before anything slow
        try:
            done = self.trainer.last_report
            if done is not None and done.step == self.trainer.step:
                self._record(done)  # a step completed as the signal came: its row before its checkpoint
            if save:
                self.save()
        finally:
            with contextlib.suppress(RunWriteError):  # the first failure is the one to report
                self._close_logs()
                self._write_trace()

    def _write_trace(self):
        if self.trace is not None:
            try:
                self.timeline.write(self.trace)
            except OSError as e:
                raise RunWriteError(self.trace, e) from None

    def _close_logs(self):
        for log in (self.train_log, self.test_log):
            if log is not None:
                log.close()

    def draw(self):
        """training.png, timeline.png, filters.png (a model with a ``conv.0.weight``), mistakes.png and
        confusion.png (a test set of images with class labels); [] without matplotlib."""
        from .plots import plot_evaluation, plot_filters, plot_training
        drawn = []
        train_rows = read_csv(self.train_log.path)
        test_rows = read_csv(self.test_log.path)
        model = self.trainer.model
        weights = model.state_dict().get("conv.0.weight")
        evaluation = self.last_evaluation
        pictures = [(["training.png"], lambda p: plot_training(train_rows, test_rows, p, self.steps_per_epoch)),
                    (["timeline.png"], lambda p: self.timeline.plot(p, quiet=True)),
                    (["filters.png"], lambda p: weights is not None and plot_filters(weights, p))]
        if evaluation is not None and evaluation.confusion is not None and hasattr(self.test, "images"):
            pictures.append((["mistakes.png", "confusion.png"],  # one pass of the model draws both
                             lambda p: plot_evaluation(self.out, model, self.test, evaluation)))
        for names, draw in pictures:
            path = os.path.join(self.out, names[0])
            try:
                if draw(path):
                    drawn.extend(names)
            except OSError as e:
                raise RunWriteError(path, e) from None
        return drawn

