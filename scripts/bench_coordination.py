"""What the pool's coordination of a step costs, apart from the model: a tiny model, and sleeping samples.

    python scripts/bench_coordination.py                  # both parts, CPython or PyPy
    python scripts/bench_coordination.py --json coordination.json
    python scripts/bench_coordination.py --scale-workers 8 16 --skip-tiny

1. The tiny model (``nn.Linear(4, 1)``, MSE: a sample's forward and backward take tens of
   microseconds) trained with 0, 1 and 2 workers at each batch size, side by side in one run
   with ``multiprocessing.Pool.imap(f, chunksize=1)`` of a trivial ``f`` (what a message per
   sample costs on this machine). For each: samples/s, the parent's CPU time per sample
   (``time.process_time``: hand-out, waiting, results, reduction, optimizer) and the workers'
   overhead per sample: their CPU time (psutil) minus the engine's own seconds per sample
   (reading the sample, forward, loss, backward, as each worker times them). First the ceiling:
   the tiny model's samples in one process and in two at once with nothing to coordinate; a
   speedup of 2 workers over workers=0 is also shown as its fraction of that ceiling.
2. The scale simulation: N workers (more than the machine has cores) whose loss sleeps 3 ms,
   so the samples cost time but little CPU; achieved samples/s against the ideal N / 3 ms,
   and against the machine's own ceiling for such samples: N processes computing the same
   sleeping samples in a loop at once, with no coordination at all (a sample that wakes from
   a sleep costs this VM far more CPU than a warm one, and N of them share the cores).

Each configuration starts its pool, takes one warm-up step, and reports the best of
``--repeat`` timed windows of ``--samples`` samples (as timeit does: the machine is shared).
"""
import argparse
import multiprocessing
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_parallel import positive_int  # noqa: E402 (the scripts folder is on the path)

SLEEP_SECONDS = 0.003


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[8, 64])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="pool sizes for the tiny model")
    p.add_argument("--samples", type=positive_int, default=6400, help="samples per timed window (tiny model)")
    p.add_argument("--repeat", type=positive_int, default=3, help="timed windows per configuration; the best counts")
    p.add_argument("--scale-workers", type=positive_int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--scale-batch", type=positive_int, default=64)
    p.add_argument("--scale-steps", type=positive_int, default=40, help="steps per timed window (scale simulation)")
    p.add_argument("--skip-tiny", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


# ---- the tiny model ----

def tiny_dataset(n=65536, seed=0):
    """``n`` inputs of 4 numbers and a class 0-9 whose target is class / 9: a ``Dataset``, so the pool
    places it in shared memory, and large enough that an epoch's shuffle costs little per step."""
    import numpy as np
    from minigrad.data import Dataset
    rng = np.random.default_rng(seed)
    return Dataset(rng.uniform(-1, 1, size=(n, 4)), rng.integers(0, 10, size=n), "tiny")


def tiny_model():
    from minigrad import nn
    return nn.Linear(4, 1, seed=0)


def tiny_loss(outputs, target):
    from minigrad.losses import mse_loss
    return mse_loss(outputs, [target / 9])


def sleepy_loss(outputs, target):
    time.sleep(SLEEP_SECONDS)
    return tiny_loss(outputs, target)


def cpu_seconds(pids):
    """User + system CPU time of the processes ``pids`` (psutil)."""
    import psutil
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(workers, batch_size, loss_fn, steps, repeat):
    """The best of ``repeat`` windows of ``steps`` steps after one warm-up step."""
    from parallel import DataParallelTrainer
    data = tiny_dataset()
    windows = []
    with DataParallelTrainer(tiny_model, loss_fn, lr=0.01, workers=workers, seed=0, log=lambda line: None,
                             predict_fn=lambda outputs: 0) as trainer:
        pids = trainer.backend.pids() if workers else []
        reports = trainer.train_steps(data, epochs=10 ** 6, batch_size=batch_size, max_steps=1 + repeat * steps)
        next(reports)  # the pool starts and every worker loads the model
        pids = trainer.backend.pids() if workers else []
        for _ in range(repeat):
            wakeups = getattr(trainer.backend, "wakeups", 0)
            parent, children, start = time.process_time(), cpu_seconds(pids), time.perf_counter()
            window = [next(reports) for _ in range(steps)]
            seconds = time.perf_counter() - start
            parent, children = time.process_time() - parent, cpu_seconds(pids) - children
            n = sum(r.samples for r in window)
            engine = sum(r.sample_seconds for r in window)
            windows.append({"workers": workers, "batch_size": batch_size, "samples": n, "seconds": seconds,
                            "samples_per_s": n / seconds, "parent_cpu_us_per_sample": 1e6 * parent / n,
                            "engine_us_per_sample": 1e6 * engine / n,
                            "worker_overhead_us_per_sample": 1e6 * (children - engine) / n if workers else None,
                            "parent_wakeups_per_step": (getattr(trainer.backend, "wakeups", 0) - wakeups) / steps
                            if workers else None})
        if workers:
            assert trainer.backend.restarts == 0, "a worker died during the benchmark"
    return max(windows, key=lambda w: w["samples_per_s"])


def engine_loop(samples, barrier, results, sleeping=False):
    """Runs in a child: ``samples`` samples of the tiny model (sleeping ones if ``sleeping``), as a
    worker computes them, with nothing to coordinate, timed."""
    from parallel import Payload, Replica
    replica = Replica(Payload(tiny_model, sleepy_loss if sleeping else tiny_loss, predict_fn=lambda outputs: 0))
    replica.add_dataset("tiny", tiny_dataset(1024))
    for i in range(10 if sleeping else 2000):  # warm (PyPy's JIT)
        replica.run_sample("train", "tiny", i % 1024)
        replica.gradient()
    barrier.wait()
    start = time.perf_counter()
    for i in range(samples):
        replica.run_sample("train", "tiny", i % 1024)
        replica.gradient()
    results.put(time.perf_counter() - start)


def ceiling(processes, samples, sleeping=False):
    """Samples per second of ``processes`` uncoordinated loops of the tiny model's samples at once."""
    from parallel.process_pool import default_start_method
    ctx = multiprocessing.get_context(default_start_method())
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    children = [ctx.Process(target=engine_loop, args=(samples, barrier, results, sleeping))
                for _ in range(processes)]
    for child in children:
        child.start()
    seconds = max(results.get() for _ in children)
    for child in children:
        child.join()
    return processes * samples / seconds


def trivial(x):
    return x


def pool_imap_rate(items, repeat):
    """Items per second through ``Pool(2).imap(trivial, chunksize=1)``: one message each way per item."""
    from parallel.process_pool import default_start_method
    best = 0.0
    with multiprocessing.get_context(default_start_method()).Pool(2) as pool:
        list(pool.imap(trivial, range(100), chunksize=1))
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in pool.imap(trivial, range(items), chunksize=1):
                pass
            best = max(best, items / (time.perf_counter() - start))
    return best


# ---- the report ----

def _format(value, spec):
    return "-" if value is None else format(value, spec)


def main(argv=None):
    args = parse_args(argv)
    warnings.simplefilter("ignore", RuntimeWarning)  # more workers than CPUs is the point of the scale part
    from parallel import available_cpus
    print(f"{available_cpus()} CPUs, {sys.implementation.name} {sys.version.split()[0]}")
    out = {"cpus": available_cpus(), "implementation": sys.implementation.name, "python": sys.version.split()[0],
           "time": time.time(), "tiny": [], "scale": []}
    if not args.skip_tiny:
        imap = pool_imap_rate(args.samples, args.repeat)
        out["pool_imap_items_per_s"] = imap
        print(f"multiprocessing.Pool(2).imap(trivial, chunksize=1): {imap:,.0f} items/s")
        one, two = (max(ceiling(k, args.samples) for _ in range(2)) for k in (1, 2))
        out["engine_ceiling_2_over_1"] = two / one
        print(f"ceiling: the tiny model's samples with nothing to coordinate, {one:,.0f}/s in one process, "
              f"{two:,.0f}/s in two at once ({two / one:.2f}x)")
        print(f"{'workers':>7} {'batch':>5} {'samples/s':>10} {'vs workers=0':>12} {'of ceiling':>10} "
              f"{'parent CPU us/sample':>20} "
              f"{'worker overhead us/sample':>25} {'engine us/sample':>16} {'parent wake-ups/step':>20}")
        for batch_size in args.batch_sizes:
            alone = None
            for workers in args.workers:
                row = measure(workers, batch_size, tiny_loss, max(3, args.samples // batch_size), args.repeat)
                alone = row["samples_per_s"] if workers == 0 else alone
                row["vs_in_process"] = row["samples_per_s"] / alone if alone else None
                row["of_ceiling"] = row["vs_in_process"] / out["engine_ceiling_2_over_1"] \
                    if alone and workers == 2 else None
                out["tiny"].append(row)
                print(f"{workers:>7} {batch_size:>5} {row['samples_per_s']:>10,.0f} "
                      f"{_format(row['vs_in_process'], '.2f'):>12} {_format(row['of_ceiling'], '.2f'):>10} "
                      f"{row['parent_cpu_us_per_sample']:>20.1f} "
                      f"{_format(row['worker_overhead_us_per_sample'], '.1f'):>25} "
                      f"{row['engine_us_per_sample']:>16.1f} {_format(row['parent_wakeups_per_step'], '.2f'):>20}",
                      flush=True)
    if not args.skip_scale:
        print(f"scale simulation: samples sleep {1000 * SLEEP_SECONDS:g} ms, batch {args.scale_batch}")
        print(f"{'workers':>7} {'samples/s':>10} {'ideal':>8} {'of ideal':>8} {'ceiling':>8} {'of ceiling':>10} "
              f"{'parent CPU us/sample':>20}")
        for workers in args.scale_workers:
            row = measure(workers, args.scale_batch, sleepy_loss, args.scale_steps, args.repeat)
            row["ideal_samples_per_s"] = ideal = workers / SLEEP_SECONDS
            row["of_ideal"] = row["samples_per_s"] / ideal
            row["ceiling_samples_per_s"] = most = ceiling(
                workers, max(2, args.scale_batch * args.scale_steps // workers), sleeping=True)
            row["of_ceiling"] = row["samples_per_s"] / most
            out["scale"].append(row)
            print(f"{workers:>7} {row['samples_per_s']:>10,.0f} {ideal:>8,.0f} {row['of_ideal']:>8.2f} "
                  f"{most:>8,.0f} {row['of_ceiling']:>10.2f} {row['parent_cpu_us_per_sample']:>20.1f}", flush=True)
    if args.json:
        from minigrad.checkpoint import atomic_write_json
        atomic_write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
