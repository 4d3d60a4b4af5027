"""Train the reference CNN on 15x15 MNIST digits with the data-parallel trainer.

    python scripts/train_parallel.py --workers 8
    python scripts/train_parallel.py --resume runs/20260101-120000/model.json
    python scripts/evaluate.py runs/20260101-120000/model.json --data mnist --data-dir ../shared/data/mnist

The model is ``nn.CNN.reference(seed)`` (5,357 parameters), the loss the mean squared error
against +1 at the label and -1 elsewhere, the prediction the largest output. The run folder
(--out, default runs/YYYYmmdd-HHMMSS) receives:

    model.json       the checkpoint: model config and parameters, optimizer state, step, epoch,
                     data order (seed, epoch, position, the epoch's shuffle) and this run's config;
                     --resume continues from it bit for bit, with any --workers
    train_stats.csv  step, epoch, loss, lr, samples_per_s
    test_stats.csv   epoch, step, loss, accuracy (one row per epoch)
    training.png     loss and accuracy curves; filters.png: the first layer's filters (with matplotlib)

Exit codes: 0 done; 1 a worker failed (an exception in a worker, or a sample that kept
killing workers); 2 bad arguments or input (data files, checkpoint, --out); 3 the loss or
a gradient became NaN or infinite (the step is not applied, the last checkpoint is kept);
130 / 143 stopped by SIGINT / SIGTERM after saving the last completed step to model.json.
"""
import argparse
import math
import os
import sys
import time
import warnings

DEFAULTS = {
    "workers": None,  # one per CPU
    "epochs": 6,
    "batch_size": 8,
    "lr": 0.004,
    "lr_schedule": "cosine",
    "momentum": None,  # 0.9 with --optimizer sgd; Adam has none
    "weight_decay": 1e-3,
    "optimizer": "adam",
    "seed": 0,
    "data": "mnist5k",
    "data_dir": None,
    "download": False,
    "out": None,
    "max_steps": None,
    "checkpoint_every": 100,
    "backend": "process",
    "scheduler": None,
    "quiet": False,
}
# What a resumed run may change: where and how it runs, not what it computes.
RUNTIME_KEYS = ("workers", "backend", "scheduler", "out", "checkpoint_every", "quiet", "data_dir", "download")


class UserError(ValueError):
    """A problem with the user's input: printed as one line, exit code 2."""


def integer(least):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {value}")
        return value
    return parse


def nonnegative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def parse_args(argv):
    from parallel.trainer import BACKENDS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], argument_default=argparse.SUPPRESS,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workers", type=integer(0), help="worker processes (0: train in this process; "
                   "default: one per CPU)")
    p.add_argument("--epochs", type=integer(1), help=f"passes over the training set (default {DEFAULTS['epochs']})")
    p.add_argument("--batch-size", type=integer(1), help=f"samples per step (default {DEFAULTS['batch_size']})")
    p.add_argument("--lr", type=nonnegative_float, help=f"base learning rate (default {DEFAULTS['lr']})")
    p.add_argument("--lr-schedule", choices=["constant", "cosine", "step"],
                   help="per-step learning rate: cosine decays to 0, step multiplies by 0.1 after each "
                        "third (default cosine)")
    p.add_argument("--momentum", type=nonnegative_float, help="SGD momentum (default 0.9 with --optimizer sgd)")
    p.add_argument("--weight-decay", type=nonnegative_float, help="L2 penalty added to every gradient, as "
                   f"torch.optim's weight_decay (default {DEFAULTS['weight_decay']})")
    p.add_argument("--optimizer", choices=["sgd", "adam"], help="default adam")
    p.add_argument("--seed", type=int, help="model initialisation and data order (default 0)")
    p.add_argument("--data", choices=["mnist5k", "mnist"], help="mnist5k: shipped 4,000/1,000 digits; "
                   "mnist: the IDX files in --data-dir (default mnist5k)")
    p.add_argument("--data-dir", help="folder of the MNIST IDX files (with --data mnist)")
    p.add_argument("--download", action="store_true", help="download the MNIST files into --data-dir first")
    p.add_argument("--out", help="run folder (default runs/YYYYmmdd-HHMMSS, or the resumed checkpoint's)")
    p.add_argument("--max-steps", type=integer(1), help="stop after this many steps (the schedule spans them)")
    p.add_argument("--checkpoint-every", type=integer(1), help="steps between checkpoints (default 100)")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue the run saved in this model.json")
    p.add_argument("--backend", choices=sorted(BACKENDS), help="how workers run: process (a pool on this "
                   "machine) or dask (dask.distributed; default process)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="with --backend dask: a running Dask "
                   "scheduler (default: a LocalCluster of --workers processes on 127.0.0.1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    return p.parse_args(argv)


def make_config(given, resume):
    """The run's one config: defaults and arguments, or the resumed checkpoint's own."""
    given = {k: v for k, v in given.items() if k != "resume"}
    if resume is None:
        config = {**DEFAULTS, **given}
        if config["momentum"] is None:
            config["momentum"] = 0.9 if config["optimizer"] == "sgd" else 0.0
        if config["optimizer"] == "adam" and config["momentum"]:
            raise UserError(f"--momentum {config['momentum']} applies to --optimizer sgd; Adam has no momentum")
        check_scheduler(config)
        return config
    saved = resume.get("config")
    if not isinstance(saved, dict) or sorted(saved) != sorted(DEFAULTS):
        raise UserError(f"{resume.path}: expected a training checkpoint with a config of {sorted(DEFAULTS)}")
    check_saved_config(saved, resume.path)
    for key, value in given.items():
        if key not in RUNTIME_KEYS and saved[key] != value:
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} {value} differs from the checkpoint's {saved[key]}; "
                            f"a resumed run keeps its config")
    # it continues in the checkpoint's own folder (wherever that is now) unless --out says otherwise
    config = {**saved, "out": None, **{k: v for k, v in given.items() if k in RUNTIME_KEYS}}
    check_scheduler(config)
    return config


def check_scheduler(config):
    if config["scheduler"] and config["backend"] != "dask":
        raise UserError(f"--scheduler goes with --backend dask, got --backend {config['backend']}")


def check_saved_config(config, path):
    """A checkpoint's config passes the checks its arguments once passed (the file may be edited)."""
    checks = {"epochs": integer(1), "batch_size": integer(1), "lr": nonnegative_float,
              "momentum": nonnegative_float, "weight_decay": nonnegative_float, "seed": integer(-2 ** 63),
              "checkpoint_every": integer(1)}
    choices = {"lr_schedule": ("constant", "cosine", "step"), "optimizer": ("sgd", "adam"),
               "data": ("mnist5k", "mnist")}
    for key, check in checks.items():
        try:
            ok = not isinstance(config[key], bool) and check(str(config[key])) == config[key]
        except argparse.ArgumentTypeError:
            ok = False
        if not ok:
            raise UserError(f"{path}: config {key} = {config[key]!r} is not a valid --{key.replace('_', '-')}")
    for key, allowed in choices.items():
        if config[key] not in allowed:
            raise UserError(f"{path}: config {key} = {config[key]!r}, expected one of {list(allowed)}")
    steps = config["max_steps"]
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise UserError(f"{path}: config max_steps = {steps!r} is not a valid --max-steps")


def default_out(resume):
    if resume is not None:
        return os.path.dirname(os.path.abspath(resume.path))
    base = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    out, n = base, 1
    while os.path.exists(out):
        n += 1
        out = f"{base}-{n}"
    return out


def main(argv=None):
    from minigrad import checkpoint
    from minigrad.data import DataError
    from parallel import DataParallelTrainer, NonFiniteError, TrainingInterrupted, WorkerError
    from parallel.mnist_task import load_data, pm1_mse_loss, reference_model_fn
    from parallel.progress import note
    from parallel.run_files import RunFolderError, prepare_run_folder

    # ---- arguments and config ----
    args = vars(parse_args(argv))
    try:
        resume = checkpoint.read(args["resume"]) if "resume" in args else None
        config = make_config(args, resume)
        out = config["out"] = config["out"] or default_out(resume)
        checkpoint_path = prepare_run_folder(out, resume.path if resume is not None else None)
        # ---- seed and data ----
        seed = config["seed"]
        train = load_data(config["data"], "train", config["data_dir"], config["download"])
        test = load_data(config["data"], "test", config["data_dir"], config["download"])
        # ---- model and optimizer ----
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = DataParallelTrainer(
                reference_model_fn(seed), pm1_mse_loss, optimizer=config["optimizer"], lr=config["lr"],
                momentum=config["momentum"], weight_decay=config["weight_decay"],
                lr_schedule=config["lr_schedule"], workers=config["workers"], backend=config["backend"],
                scheduler=config["scheduler"], seed=seed, log=lambda line: note(f"warning: {line}"))
        for w in caught:
            note(f"warning: {w.message}")  # e.g. more workers than CPUs
        if resume is not None:
            restore(trainer, resume, len(train), config)
    except (UserError, DataError, checkpoint.CheckpointError, RunFolderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # ---- training loop ----
    from parallel.signals import stop_on_signals
    with stop_on_signals(), trainer:
        run = Run(trainer, config, train, test, checkpoint_path, resume)
        try:
            run.loop()
        except TrainingInterrupted as e:
            run.stop(f"{e}; saved step {trainer.step} to {checkpoint_path}", save=True)
            return e.exit_code
        except NonFiniteError as e:
            run.stop(f"error: {e}; {run.last_checkpoint_note()}", save=False)
            return 3
        except WorkerError as e:
            run.stop(f"error: {e}\n{run.last_checkpoint_note()}", save=False)
            return 1
        except (UserError, DataError, checkpoint.CheckpointError, RunFolderError, ConnectionError) as e:
            run.stop(f"error: {e}", save=False)
            return 2
        # ---- results ----
        run.finish()
    return 0


def restore(trainer, resume, n_train, config):
    """Parameters, optimizer state, step and data order from a training checkpoint (all checked now,
    before anything starts)."""
    from minigrad import checkpoint
    from parallel.data_order import DataOrder
    if "trainer" not in resume:
        raise UserError(f"{resume.path}: expected a training checkpoint (with a 'trainer' field), "
                        f"got a model-only checkpoint")
    checkpoint.load_into(trainer.model, resume)
    try:
        trainer.load_state_dict(resume["trainer"])
        order = resume["trainer"]["data_order"]
        if order is not None:
            DataOrder(n_train, config["batch_size"], config["seed"]).load_state_dict(order)
    except ValueError as e:
        raise UserError(f"{resume.path}: {e}") from None


MB = 1024 * 1024


class Run:
    """The loop body's bookkeeping: logs, progress, evaluation lines, checkpoints and pictures."""

    def __init__(self, trainer, config, train, test, checkpoint_path, resume):
        from parallel.memory import MemoryMonitor
        from parallel.progress import Progress
        from parallel.run_files import CsvLog
        self.trainer, self.config, self.train, self.test = trainer, config, train, test
        self.checkpoint_path = checkpoint_path
        self.out = os.path.dirname(checkpoint_path)
        self.saved_step = trainer.step if resume is not None else None
        keep = trainer.step if resume is not None else None
        self.train_log = CsvLog(os.path.join(self.out, "train_stats.csv"),
                                ["step", "epoch", "loss", "lr", "samples_per_s", "parent_rss_mb",
                                 "worker_rss_mb"], keep)
        self.test_log = CsvLog(os.path.join(self.out, "test_stats.csv"), ["epoch", "step", "loss", "accuracy"], keep)
        self.total = trainer.total_steps(len(train), config["epochs"], config["batch_size"], config["max_steps"])
        self.steps_per_epoch = math.ceil(len(train) / config["batch_size"])
        total_samples = self._samples_until(self.total)
        self.memory = MemoryMonitor(trainer.backend)
        self.progress = Progress(total_samples, self._samples_until(trainer.step), self.memory,
                                 quiet=config["quiet"])
        self.started = time.perf_counter()
        self.last_report = None

    def _samples_until(self, step):
        full, rest = divmod(step, self.steps_per_epoch)
        return full * len(self.train) + min(rest * self.config["batch_size"], len(self.train))

    def loop(self):
        trainer, config = self.trainer, self.config
        if self._epoch_evaluation_missing():
            self.evaluate()
        for report in trainer.train_steps(self.train, config["epochs"], config["batch_size"], config["max_steps"]):
            self.last_report = report
            parent, workers = self.memory.read()  # the first reading: the pool has started and has the data
            self.train_log.write(report.step, report.epoch, report.loss, report.lr, report.samples / report.seconds,
                                 round(parent / MB, 1), round(max(workers, default=0) / MB, 1))
            self.progress.update(report)
            if report.epoch_end:
                self.evaluate()
            if report.step % config["checkpoint_every"] == 0:
                self.save()

    def _epoch_evaluation_missing(self):
        """A resumed run stopped between an epoch's last step and its evaluation."""
        order = self.trainer.data_order
        return (self.saved_step and order is not None and order.position == 0 and order.epoch > 0
                and not self.test_log_has(self.saved_step))

    def test_log_has(self, step):
        from parallel.run_files import read_csv
        self.test_log.flush()
        return any(int(r["step"]) == step for r in read_csv(self.test_log.path))

    def evaluate(self):
        """Test loss and accuracy, logged with the epochs done (a fraction when stopped mid-epoch)."""
        evaluation = self.trainer.evaluate(self.test)
        step = self.trainer.step
        epoch = round(step / self.steps_per_epoch, 4)
        self.test_log.write(epoch, step, evaluation.loss, evaluation.accuracy)
        self.test_log.flush()
        train_loss = self.last_report.loss if self.last_report else float("nan")
        self.progress.write(f"epoch {epoch:6.2f}  step {step:6d}  train loss {train_loss:.4f}  "
                            f"test loss {evaluation.loss:.4f}  accuracy {100 * evaluation.accuracy:.2f}%  "
                            f"({time.perf_counter() - self.started:.0f}s)")
        return evaluation

    def save(self):
        from minigrad import checkpoint
        from parallel.signals import deferred_signals
        trainer = self.trainer
        self.train_log.flush()
        self.test_log.flush()
        state = trainer.state_dict()
        order = state["data_order"]
        with deferred_signals():  # a Ctrl-C now waits for os.replace, then stops the run
            checkpoint.save(self.checkpoint_path, trainer.model, config=self.config, step=trainer.step,
                            epoch=order["epoch"] if order else 0, trainer=state,
                            parameters_sha256=trainer.parameters_sha256())
        self.saved_step = trainer.step

    def last_checkpoint_note(self):
        if self.saved_step is None:
            return "no checkpoint was written"
        return f"the last checkpoint ({self.checkpoint_path}, step {self.saved_step}) is unchanged"

    def stop(self, message, save):
        from parallel.signals import ignore_further_signals
        ignore_further_signals()  # another Ctrl-C must not cut the final save short
        self.progress.close()
        self.trainer.close()
        if save:
            self.save()
        self.train_log.close()
        self.test_log.close()
        print(message, file=sys.stderr, flush=True)

    def finish(self):
        trainer = self.trainer
        self.memory.read(force=True)
        if self.last_report is None or not self.last_report.epoch_end:
            self.evaluate()
        self.save()
        trainer.close()
        self.progress.close()
        self.train_log.close()
        self.test_log.close()
        pictures = self.draw()
        print(self.memory.summary())
        if pictures:
            print(f"pictures: {', '.join(pictures)}")
        print(f"run folder: {self.out}")
        print(f"parameters sha256: {trainer.parameters_sha256()}")

    def draw(self):
        from parallel.plots import plot_filters, plot_training
        from parallel.run_files import read_csv
        drawn = []
        train_rows = read_csv(os.path.join(self.out, "train_stats.csv"))
        test_rows = read_csv(os.path.join(self.out, "test_stats.csv"))
        if plot_training(train_rows, test_rows, os.path.join(self.out, "training.png"), self.steps_per_epoch):
            drawn.append("training.png")
        weights = self.trainer.model.state_dict().get("conv.0.weight")
        if weights and plot_filters(weights, os.path.join(self.out, "filters.png")):
            drawn.append("filters.png")
        return drawn


if __name__ == "__main__":
    sys.exit(main())
