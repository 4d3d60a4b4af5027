"""Accuracy, mean loss and confusion matrix of a checkpoint on held-out digits.

    python scripts/evaluate.py runs/20260101-120000/model.json
    python scripts/evaluate.py runs/20260101-120000/model.json --data mnist --data-dir ../shared/data/mnist
    python scripts/evaluate.py weights.json --json          # the original project's flat array too
    python scripts/evaluate.py runs/20260101-120000/model.json --pictures runs/20260101-120000

Reads the project's checkpoints (any architecture) and the original flat-array files
(taken as the reference CNN). The loss is the training loss: mean squared error against
+1 at the label and -1 elsewhere. Forward passes run without building a graph
(``minigrad.no_grad``), on --workers processes. --json prints one JSON object with
accuracy, loss, n, parameters_sha256 and the confusion matrix (rows: true label).
--pictures DIR draws DIR/mistakes.png (the first 64 misclassified digits as the model saw
them, true and predicted labels, and the model's output for the predicted class, which the
+-1 MSE loss trains towards +1) and DIR/confusion.png (the confusion matrix as a heat map).
Exit codes: 0 done; 2 bad arguments, a missing or corrupt checkpoint or data file.
"""
import argparse
import importlib.util
import json
import os
import sys

from minigrad import checkpoint
from minigrad.data import DataError
from minigrad.data.mnist_task import load_data, model_fn_from_checkpoint, pm1_mse_loss
from minigrad.nn import module_from_checkpoint
from minigrad.pypy_nursery import restart_with_tuned_nursery
from parallel import DataParallelTrainer
from parallel.run.config import integer
from parallel.run.plots import MATPLOTLIB_MISSING, plot_evaluation


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a model.json, or a flat JSON array of parameters")
    p.add_argument("--data", choices=["mnist5k", "mnist"], default="mnist5k",
                   help="mnist5k: the shipped 1,000 held-out digits; mnist: the 10,000 test digits in --data-dir")
    p.add_argument("--data-dir", help="folder of t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz)")
    p.add_argument("--download", action="store_true", help="download the MNIST test files into --data-dir first")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--workers", type=integer(0), default=None, help="processes (0: this one; default: one per CPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    p.add_argument("--pictures", metavar="DIR", help="draw mistakes.png and confusion.png into DIR (needs matplotlib)")
    return p.parse_args(argv)


def format_confusion(confusion):
    n = len(confusion)
    lines = ["true\\pred " + " ".join(f"{j:>5}" for j in range(n))]
    for i, row in enumerate(confusion):
        lines.append(f"{i:>9} " + " ".join(f"{v:>5}" for v in row))
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    try:
        ckpt = checkpoint.read(args.checkpoint)
        model_fn = model_fn_from_checkpoint(ckpt)
        module_from_checkpoint(ckpt)  # any mismatch or a hostile size is reported here, before workers start
        dataset = load_data(args.data, args.split, args.data_dir, args.download)
        if args.pictures is not None:
            if importlib.util.find_spec("matplotlib") is None:
                raise ValueError(f"--pictures needs matplotlib; {MATPLOTLIB_MISSING}")
            os.makedirs(args.pictures, exist_ok=True)
    except (checkpoint.CheckpointError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot create --pictures folder {args.pictures!r}: {e.strerror}", file=sys.stderr)
        return 2
    with DataParallelTrainer(model_fn, pm1_mse_loss, workers=args.workers) as trainer:
        checkpoint.load_into(trainer.model, ckpt)
        evaluation = trainer.evaluate(dataset)
        sha = trainer.parameters_sha256()
    result = {"checkpoint": args.checkpoint, "data": dataset.name, "n": evaluation.n,
              "accuracy": evaluation.accuracy, "loss": evaluation.loss, "parameters_sha256": sha,
              "confusion": evaluation.confusion, "seconds": evaluation.seconds}
    if args.pictures is not None:
        result["pictures"] = plot_evaluation(args.pictures, trainer.model, dataset, evaluation)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.checkpoint} on {dataset.name} ({evaluation.n} digits, {evaluation.seconds:.1f}s)")
    print(f"accuracy {100 * evaluation.accuracy:.2f}%  mean loss {evaluation.loss:.5f}")
    print(f"parameters sha256: {sha}")
    print(format_confusion(evaluation.confusion))
    if args.pictures is not None:
        print("wrote " + " and ".join(result["pictures"]))
    return 0


if __name__ == "__main__":
    restart_with_tuned_nursery()  # PyPy: start again with the young generation the engine runs fastest with
    sys.exit(main())
