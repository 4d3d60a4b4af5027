"""Steady-state throughput of the Dask backend against the process pool, side by side.

    python scripts/bench_dask_step.py                     # batch 8, 2 workers, steps 100 and 500
    python scripts/bench_dask_step.py --rounds 3 --batch-size 32

Each backend trains the reference CNN on MNIST-5k (SGD with momentum) for --steps steps;
steady state is the wall time from the end of step --warmup to the end of the last step,
so start-up (pool, cluster, first messages) is not counted. Rounds alternate the backends,
so both see the same load on a shared machine; the median round counts. Both must end with
the same parameters (sha256), or the script exits 1.
"""
import argparse
import statistics
import sys
import time


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
    p.add_argument("--rounds", type=count, default=1)
    args = p.parse_args(argv)
    if args.steps <= args.warmup:
        p.error(f"expected --steps > --warmup ({args.warmup}), got {args.steps}")
    return args


def steady_state(backend, args, train):
    """(samples/s between step ``warmup`` and the last step, parameters sha256)."""
    from minigrad import nn
    from minigrad.losses import mse_loss, one_hot_pm1
    from parallel import DataParallelTrainer

    with DataParallelTrainer(lambda: nn.CNN.reference(seed=0),
                             lambda out, label: mse_loss(out, one_hot_pm1(label, 10)),
                             lr=0.01, momentum=0.9, workers=args.workers, backend=backend, seed=0) as trainer:
        for report in trainer.train_steps(train, epochs=1000, batch_size=args.batch_size, max_steps=args.steps):
            if report.step == args.warmup:
                start = time.perf_counter()
        seconds = time.perf_counter() - start
        return (args.steps - args.warmup) * args.batch_size / seconds, trainer.parameters_sha256()


def main(argv=None):
    args = parse_args(argv)
    from minigrad.data import load_mnist5k
    train = load_mnist5k("train")
    rates = {"process": [], "dask": []}
    shas = set()
    for _ in range(args.rounds):
        for backend in rates:
            rate, sha = steady_state(backend, args, train)
            rates[backend].append(rate)
            shas.add(sha)
            print(f"{backend:>8}: {rate:7.1f} samples/s", flush=True)
    process, dask = (statistics.median(rates[b]) for b in ("process", "dask"))
    print(f"batch {args.batch_size}, {args.workers} workers, steps {args.warmup}..{args.steps}: "
          f"dask {dask:.1f} samples/s, process pool {process:.1f}, ratio {dask / process:.2f}x")
    if len(shas) != 1:
        print(f"error: the backends ended with different parameters: {sorted(shas)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
