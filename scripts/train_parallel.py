"""Train the reference CNN on 15x15 MNIST digits with the data-parallel trainer.

    python scripts/train_parallel.py --workers 8
    python scripts/train_parallel.py --recipe original --data-dir ../shared/data/mnist --workers 8
    python scripts/train_parallel.py --resume runs/20260101-120000/model.json
    python scripts/evaluate.py runs/20260101-120000/model.json --data mnist --data-dir ../shared/data/mnist

The model is nn.CNN.reference(seed), the loss the mean squared error against +1 at the label and
-1 elsewhere. The run folder (--out) gets model.json (resumable bit for bit with any --workers),
train_stats.csv, test_stats.csv and, with matplotlib, training.png, timeline.png, filters.png,
mistakes.png and confusion.png: see DataParallelTrainer.fit; --trace adds a Chrome trace. Exit
codes: 0 done; 1 a worker failed; 2 bad arguments or input, or a file that cannot be written; 3 a
NaN or infinite loss or gradient; 130 / 143 SIGINT / SIGTERM (after saving the last completed
step).
"""
import os
import sys
import warnings

from minigrad.checkpoint import CheckpointError
from minigrad.data import DataError
from minigrad.data.augment import AUGMENTATIONS
from minigrad.data.mnist_task import RECIPES, load_data, pm1_mse_loss, reference_model_fn
from minigrad.pypy_nursery import restart_with_tuned_nursery
from parallel import BACKENDS, DataParallelTrainer, NonFiniteError, TrainingInterrupted, WorkerError
from parallel.extras import missing_package_message
from parallel.run import (RunFolderError, RunWriteError, last_checkpoint_note, new_run_folder, note,
                          read_run_checkpoint)
from parallel.run.config import ConfigError, argument_parser, defaults, integer, nonnegative_float, resumed_config
from parallel.signals import ignore_further_signals, stop_on_signals



# name: (default, type or choices, help). A resumed run may change only the RUNTIME options.
OPTIONS = {
    "recipe": ("mnist5k", list(RECIPES), "named settings (minigrad.data.mnist_task.RECIPES); the flags given "
               "beside it win"),
    "workers": (None, integer(0), "worker processes (0: in this process; None: one per CPU)"),
    "epochs": (8, integer(1), "passes over the training set"),
    "batch_size": (8, integer(1), "samples per step"),
    "lr": (0.005, nonnegative_float, "base learning rate"),
    "lr_schedule": ("cosine", ["constant", "cosine", "step"], "cosine decays to 0; step: x0.1 after each third"),
    "momentum": (None, nonnegative_float, "SGD momentum (None: 0.9 with --optimizer sgd; Adam has none)"),
    "weight_decay": (1e-3, nonnegative_float, "L2 penalty added to every gradient, as torch.optim's"),
    "optimizer": ("adam", ["sgd", "adam"], "the update rule"),
    "seed": (0, integer(-2 ** 63), "model initialisation and data order"),
    "data": ("mnist5k", ["mnist5k", "mnist"], "mnist5k: shipped 4,000/1,000 digits; mnist: IDX files in --data-dir"),
    "data_dir": (None, str, "folder of the MNIST IDX files (with --data mnist)"),
    "download": (False, bool, "download the MNIST files into --data-dir first"),
    "augment": ("shift", sorted(AUGMENTATIONS), "random changes to each training sample, drawn from the seed, "
                "the epoch and the sample"),
    "out": (None, str, "run folder (None: runs/YYYYmmdd-HHMMSS, or the resumed checkpoint's)"),
    "max_steps": (None, integer(1), "stop after this many steps (the schedule spans them)"),
    "checkpoint_every": (100, integer(1), "steps between checkpoints"),
    "backend": ("process", sorted(BACKENDS), "process: a pool on this machine; dask: dask.distributed"),
    "scheduler": (None, str, "with --backend dask: a running scheduler tcp://HOST:PORT (None: a LocalCluster)"),
    "tls_ca_file": (None, str, "with --backend dask: the CA certificate of a TLS scheduler"),
    "tls_cert": (None, str, "with --backend dask: this client's TLS certificate"),
    "tls_key": (None, str, "with --backend dask: this client's TLS key"),
    "sample_timeout": (None, nonnegative_float, "seconds before a sample's worker counts as hung (0: off; "
                       "None: the larger of 30 s and 100x the median sample)"),
    "trace": (None, str, "write the first --trace-steps steps here as a Chrome trace (Perfetto, chrome://tracing)"),
    "trace_steps": (200, integer(1), "steps the trace and timeline.png keep"),
    "quiet": (False, bool, "no progress bar or epoch lines"),
}
RUNTIME = {"workers", "backend", "scheduler", "out", "checkpoint_every", "quiet", "data_dir", "download",
           "sample_timeout", "tls_ca_file", "tls_cert", "tls_key", "trace", "trace_steps"}
# what runs of older versions, whose checkpoints lack these options, did
ADDED_LATER = {"recipe": "mnist5k", "augment": "none", "sample_timeout": None, "tls_ca_file": None, "tls_cert": None,
               "tls_key": None, "trace": None, "trace_steps": 200}


def make_config(given, resume):
    """The run's one config: defaults and arguments, or the resumed checkpoint's own."""
    if resume is None:
        config = {**defaults(OPTIONS), **RECIPES[given.get("recipe", OPTIONS["recipe"][0])], **given}
        if config["momentum"] is None:
            config["momentum"] = 0.9 if config["optimizer"] == "sgd" else 0.0
        if config["optimizer"] == "adam" and config["momentum"]:
            raise ConfigError(f"--momentum {config['momentum']} applies to --optimizer sgd; Adam has no momentum")
    else:  # it continues in the checkpoint's own folder (wherever that is now) unless --out says otherwise
        config = resumed_config(resume.get("config"), given, OPTIONS, RUNTIME, resume.path, ADDED_LATER)
        config["out"] = given.get("out")
    if config["scheduler"] and config["backend"] != "dask":
        raise ConfigError(f"--scheduler goes with --backend dask, got --backend {config['backend']}")
    tls = [config[k] for k in ("tls_ca_file", "tls_cert", "tls_key")]
    if any(tls) and (not all(tls) or config["backend"] != "dask"):
        raise ConfigError("--tls-ca-file, --tls-cert and --tls-key go together, with --backend dask")
    if str(config["scheduler"] or "").startswith("tls://") and not any(tls):
        raise ConfigError(f"--scheduler {config['scheduler']} is a TLS scheduler: expected --tls-ca-file, "
                          f"--tls-cert and --tls-key, got none of them")
    return config


def main(argv=None):
    # ---- arguments ----
    parser = argument_parser(OPTIONS, __doc__.splitlines()[0])
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue the run saved in this model.json")
    args = vars(parser.parse_args(argv))
    try:
        resume = read_run_checkpoint(args.pop("resume")) if "resume" in args else None
        config = make_config(args, resume)
        config["out"] = config["out"] or (os.path.dirname(os.path.abspath(resume.path)) if resume else new_run_folder())
        # ---- data ----
        train = load_data(config["data"], "train", config["data_dir"], config["download"])
        test = load_data(config["data"], "test", config["data_dir"], config["download"])
        # ---- model and trainer ----
        extra = {"tls": (config["tls_ca_file"], config["tls_cert"], config["tls_key"])} if config["tls_cert"] else {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = DataParallelTrainer(
                reference_model_fn(config["seed"]), pm1_mse_loss, optimizer=config["optimizer"], lr=config["lr"],
                momentum=config["momentum"], weight_decay=config["weight_decay"], lr_schedule=config["lr_schedule"],
                workers=config["workers"], backend=config["backend"], scheduler=config["scheduler"],
                seed=config["seed"], sample_timeout=config["sample_timeout"],
                augment_fn=AUGMENTATIONS[config["augment"]], log=lambda line: note(f"warning: {line}"), **extra)
        for w in caught:
            note(f"warning: {w.message}")  # e.g. more workers than CPUs
        if resume is not None:
            trainer.resume(resume)
    except ModuleNotFoundError as e:
        return fail(missing_package_message(e) or e, 2)
    except ValueError as e:  # ConfigError, DataError, CheckpointError and the trainer's argument checks
        return fail(e, 2)
    # ---- the run ----
    with stop_on_signals(), trainer:
        try:
            history = trainer.fit(train, config["epochs"], config["batch_size"], test=test,
                                  max_steps=config["max_steps"], out=config["out"],
                                  checkpoint_every=config["checkpoint_every"], progress=not config["quiet"],
                                  config=config, trace=config["trace"], trace_steps=config["trace_steps"])
        except TrainingInterrupted as e:
            ignore_further_signals()  # an impatient Ctrl-C must not cut the exit short
            return fail(f"{e}; saved step {trainer.step} to {trainer.last_checkpoint[0]}", e.exit_code, prefix="")
        except NonFiniteError as e:
            return fail(f"{e}; {last_checkpoint_note(trainer)}", 3)
        except WorkerError as e:
            return fail(f"{e}\n{last_checkpoint_note(trainer)}", 1)
        except RunWriteError as e:
            return fail(f"{e}; {last_checkpoint_note(trainer)}", 2)
        except ModuleNotFoundError as e:
            return fail(missing_package_message(e) or e, 2)
        except (DataError, CheckpointError, RunFolderError, ConnectionError) as e:
            return fail(e, 2)
    # ---- results ----
    print(history["memory"])
    print(f"pictures: {', '.join(history['pictures'])}" if history["pictures"] else
          'pictures: none (matplotlib is not installed: pip install "minigrad[plots]")')
    print(f"run folder: {config['out']}")
    print(f"parameters sha256: {trainer.parameters_sha256()}")
    return 0


def fail(message, code, prefix="error: "):
    print(f"{prefix}{message}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    restart_with_tuned_nursery()  # PyPy: start again with the young generation the engine runs fastest with
    sys.exit(main())
