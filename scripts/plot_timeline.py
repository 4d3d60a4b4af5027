"""A short run of the reference CNN on the shipped digits, recorded as a timeline.

    python scripts/plot_timeline.py [--workers 8] [--steps 30] [--out-dir artifacts]

writes ``timeline.json`` (Chrome Trace Event JSON: open it in https://ui.perfetto.dev or
chrome://tracing) and ``timeline.png`` (the first 20 steps, one row per worker and one for the
parent). The recipe is the default run's (Adam, lr 0.004 with cosine decay over these steps,
weight decay 1e-3, batch 8, seed 0).
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # run from a checkout without installing minigrad


def positive(text):
    from minigrad.checks import positive_int
    try:
        return positive_int("the value", int(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from e


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=positive, default=8, help="worker processes (default 8)")
    parser.add_argument("--steps", type=positive, default=30, help="training steps (default 30)")
    parser.add_argument("--batch-size", type=positive, default=8, help="samples per step (default 8)")
    parser.add_argument("--out-dir", default=os.path.join(REPO_ROOT, "artifacts"), help="folder for the files")
    args = parser.parse_args(argv)

    from minigrad.data import load_mnist5k
    from parallel import DataParallelTrainer
    from minigrad.data.mnist_task import pm1_mse_loss, reference_model_fn
    from parallel.run.timeline import TimelineRecorder

    train = load_mnist5k("train")
    recorder = TimelineRecorder(trace_steps=args.steps)
    with DataParallelTrainer(reference_model_fn(0), pm1_mse_loss, optimizer="adam", lr=0.004, weight_decay=1e-3,
                             lr_schedule="cosine", workers=args.workers, seed=0) as trainer:
        trainer.add_event_listener(recorder.on_event)
        trainer.start(train)
        trainer.fit(train, epochs=1, batch_size=args.batch_size, max_steps=args.steps, on_step=recorder.on_step)
    os.makedirs(args.out_dir, exist_ok=True)
    print(recorder.write(os.path.join(args.out_dir, "timeline.json")))
    png = os.path.join(args.out_dir, "timeline.png")
    if recorder.plot(png):
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
