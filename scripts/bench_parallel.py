"""Training throughput of the data-parallel trainer: samples/s by worker count and batch size.

    python scripts/bench_parallel.py                      # workers 0..2, batch sizes 2, 8, 32
    python scripts/bench_parallel.py --max-workers 8 --json bench.json
    python scripts/bench_parallel.py --backend dask --batch-sizes 8 32

Each configuration trains the reference CNN on MNIST-5k (SGD with momentum) after one
warm-up step (so pool start-up is not counted), in --repeat windows of --samples samples,
and reports the best window: samples/s, the speedup over one worker, the overhead share
(the part of the wall time the busiest worker did not spend in the engine: messaging,
pickling, reduction, optimizer), that time per step, and the engine's time per sample.
"""
import argparse
import os
import sys
import time
import warnings


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-workers", type=positive_int, default=2, help="measure 0, 1, ..., N workers")
    p.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[2, 8, 32])
    p.add_argument("--samples", type=positive_int, default=192, help="samples per timed window")
    p.add_argument("--repeat", type=positive_int, default=3, help="timed windows per configuration; the best counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["process", "dask"], default="process",
                   help="process: the pool; dask: a LocalCluster of that many workers (0 stays in-process)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


def measure(workers, batch_size, samples, repeat, seed, train, backend="process"):
    """The best of ``repeat`` timed windows of ``samples`` samples (as timeit does: the machine
    is shared, and the fastest window is the one least disturbed by other processes)."""
    from minigrad import nn
    from minigrad.losses import mse_loss, one_hot_pm1
    from parallel import DataParallelTrainer

    steps = max(3, samples // batch_size)
    with DataParallelTrainer(lambda: nn.CNN.reference(seed=seed),
                             lambda out, label: mse_loss(out, one_hot_pm1(label, 10)),
                             lr=0.01, momentum=0.9, workers=workers, backend=backend, seed=seed) as trainer:
        reports = list(trainer.train_steps(train, epochs=1000, batch_size=batch_size,
                                           max_steps=1 + repeat * steps))
    windows = [reports[1 + k * steps:1 + (k + 1) * steps] for k in range(repeat)]  # step 1 starts the pool
    timed = min(windows, key=lambda w: sum(r.seconds for r in w))
    seconds = sum(r.seconds for r in timed)
    engine = sum(r.engine_seconds for r in timed)
    n = sum(r.samples for r in timed)
    return {"workers": workers, "batch_size": batch_size, "steps": len(timed), "samples": n,
            "seconds": seconds, "samples_per_s": n / seconds, "overhead_share": 1 - engine / seconds,
            "step_ms": 1000 * seconds / len(timed),
            "engine_ms_per_sample": 1000 * sum(r.sample_seconds for r in timed) / n,
            "overhead_ms_per_step": 1000 * (seconds - engine) / len(timed)}


def main(argv=None):
    args = parse_args(argv)
    from minigrad.data import load_mnist5k
    from parallel import available_cpus

    warnings.simplefilter("ignore", RuntimeWarning)  # more workers than CPUs is the point here
    train = load_mnist5k("train")
    rows = []
    print(f"{available_cpus()} CPUs, {sys.implementation.name} {sys.version.split()[0]}, backend {args.backend}")
    print(f"{'workers':>7} {'batch':>5} {'samples/s':>10} {'speedup':>8} {'overhead':>9} {'ms/step':>8} "
          f"{'outside engine ms/step':>22} {'engine ms/sample':>16}")
    for batch_size in args.batch_sizes:
        one = None
        for workers in range(args.max_workers + 1):
            row = measure(workers, batch_size, args.samples, args.repeat, args.seed, train, args.backend)
            if workers == 1:
                one = row["samples_per_s"]
            row["speedup_vs_1"] = row["samples_per_s"] / one if one else None
            rows.append(row)
            speedup = f"{row['speedup_vs_1']:.2f}x" if one else "-"
            print(f"{workers:>7} {batch_size:>5} {row['samples_per_s']:>10.1f} {speedup:>8} "
                  f"{100 * row['overhead_share']:>8.1f}% {row['step_ms']:>8.1f} "
                  f"{row['overhead_ms_per_step']:>22.2f} {row['engine_ms_per_sample']:>16.2f}", flush=True)
    if args.json:
        from minigrad.checkpoint import atomic_write_json
        atomic_write_json(args.json, {"cpus": available_cpus(), "python": sys.version.split()[0],
                                      "implementation": sys.implementation.name, "backend": args.backend,
                                      "time": time.time(),
                                      "pid": os.getpid(), "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
