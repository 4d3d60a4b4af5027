"""Steady-state throughput of the Dask backend against the process pool, side by side.

    python scripts/bench_dask_step.py                     # batch 8, 2 workers, steps 100..500
    python scripts/bench_dask_step.py --batch-size 32 --block 5

Both trainers (the pool and a LocalCluster of as many workers) train the reference CNN on
MNIST-5k (SGD with momentum) at the same time, taking turns: --block steps of one, then
--block of the other. On a machine shared with other work the load then falls on both
alike. Steady state is the time of steps --warmup+1 .. --steps of each (the wall time of
--steps steps minus that of --warmup), so start-up is not counted. Both must end with the
same parameters (sha256), or the script exits 1.
"""
import argparse
import sys
import time

BACKENDS = ("process", "dask")


def count(text):
    """An argparse type: an integer >= 1."""
    from minigrad.checks import positive_int
    try:
        return positive_int("the count", int(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=count, default=8)
    p.add_argument("--workers", type=count, default=2)
    p.add_argument("--warmup", type=count, default=100)
    p.add_argument("--steps", type=count, default=500)
    p.add_argument("--block", type=count, default=10, help="steps of one backend before the other's turn")
    args = p.parse_args(argv)
    if args.steps <= args.warmup:
        p.error(f"expected --steps > --warmup ({args.warmup}), got {args.steps}")
    return args


def main(argv=None):
    args = parse_args(argv)
    from minigrad import nn
    from minigrad.data import load_mnist5k
    from minigrad.losses import mse_loss, one_hot_pm1
    from parallel import DataParallelTrainer

    train = load_mnist5k("train")
    trainers = {b: DataParallelTrainer(lambda: nn.CNN.reference(seed=0),
                                       lambda out, label: mse_loss(out, one_hot_pm1(label, 10)),
                                       lr=0.01, momentum=0.9, workers=args.workers, backend=b, seed=0)
                for b in BACKENDS}
    try:
        steps = {b: t.train_steps(train, epochs=1000, batch_size=args.batch_size, max_steps=args.steps)
                 for b, t in trainers.items()}
        seconds = dict.fromkeys(BACKENDS, 0.0)
        for start in range(0, args.steps, args.block):
            for backend in BACKENDS:
                for step in range(start + 1, min(start + args.block, args.steps) + 1):
                    began = time.perf_counter()
                    next(steps[backend])
                    if step > args.warmup:
                        seconds[backend] += time.perf_counter() - began
        shas = {b: t.parameters_sha256() for b, t in trainers.items()}
    finally:
        for trainer in trainers.values():
            trainer.close()
    rate = {b: (args.steps - args.warmup) * args.batch_size / seconds[b] for b in BACKENDS}
    print(f"batch {args.batch_size}, {args.workers} workers, steps {args.warmup + 1}..{args.steps} in turns of "
          f"{args.block}: dask {rate['dask']:.1f} samples/s, process pool {rate['process']:.1f}, "
          f"ratio {rate['dask'] / rate['process']:.2f}x")
    if len(set(shas.values())) != 1:
        print(f"error: the backends ended with different parameters: {shas}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
