"""Training throughput of the data-parallel trainer, against the machine's own parallel ceiling.

    python scripts/bench_parallel.py                      # workers 0..2, batch sizes 2, 8, 32
    python scripts/bench_parallel.py --max-workers 8 --json bench.json
    python scripts/bench_parallel.py --backend dask --batch-sizes 8 32

First the ceiling: the engine loop (one sample's forward and backward, as a worker runs it)
in one process, then in N processes at once; N x the rate of N processes over the rate of
one is the most N workers could ever give on this machine (cores, memory bandwidth, turbo).
Then each configuration trains the reference CNN on MNIST-5k (SGD with momentum) after one
warm-up step (so pool start-up is not counted), in --repeat windows of --samples samples,
and reports the best window: samples/s, the speedup over one worker and its fraction of the
ceiling, the parent's time per step outside the engine (busy: the wall time it does not
spend waiting for workers, which includes being preempted by them on a small machine; CPU:
the processor time it uses: parameters, hand-out, reduction, optimizer), the bytes pickled
through the pipes per step, and the engine's time per sample.
"""
import argparse
import multiprocessing
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
    p.add_argument("--ceiling-samples", type=positive_int, default=150, help="samples per process for the ceiling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["process", "dask"], default="process",
                   help="process: the pool; dask: a LocalCluster of that many workers (0 stays in-process)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


# ---- the ceiling: the engine loop alone, in 1 and in N processes at once ----

def _payload(seed):
    from minigrad import nn
    from minigrad.losses import mse_loss, one_hot_pm1
    from parallel import Payload
    return Payload(lambda: nn.CNN.reference(seed=seed), lambda out, label: mse_loss(out, one_hot_pm1(label, 10)))


def engine_loop(samples, seed, barrier, results):
    """Runs in a child: ``samples`` samples of the engine as a worker computes them, timed."""
    from minigrad.data import load_mnist5k
    from parallel import Replica
    replica = Replica(_payload(seed))
    replica.add_dataset("train", load_mnist5k("train"))
    for i in range(5):  # warm up (PyPy's JIT, caches)
        replica.compute("train", "train", i)
    barrier.wait()
    start = time.perf_counter()
    for i in range(samples):
        replica.compute("train", "train", i % 4000)
    results.put(time.perf_counter() - start)


def engine_rate(processes, samples, seed):
    """Samples per second of ``processes`` engine loops running at once."""
    import cloudpickle  # noqa: F401 (the payload's lambdas travel with the function below)
    from parallel.process_pool import default_start_method
    ctx = multiprocessing.get_context(default_start_method())
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    children = [ctx.Process(target=engine_loop, args=(samples, seed, barrier, results)) for _ in range(processes)]
    for child in children:
        child.start()
    seconds = max(results.get() for _ in children)
    for child in children:
        child.join()
    return processes * samples / seconds


def ceilings(max_workers, samples, seed):
    """{N: the rate of N engine loops at once over the rate of one}, best of two tries each."""
    one = max(engine_rate(1, samples, seed) for _ in range(2))
    return one, {n: max(engine_rate(n, samples, seed) for _ in range(2)) / one for n in range(2, max_workers + 1)}


# ---- the trainer ----

def measure(workers, batch_size, samples, repeat, seed, train, backend="process"):
    """The best of ``repeat`` timed windows of ``samples`` samples (as timeit does: the machine
    is shared, and the fastest window is the one least disturbed by other processes)."""
    from minigrad import nn
    from minigrad.losses import mse_loss, one_hot_pm1
    from parallel import DataParallelTrainer

    steps = max(3, samples // batch_size)
    windows, traffic, cpu = [], [], []
    with DataParallelTrainer(lambda: nn.CNN.reference(seed=seed),
                             lambda out, label: mse_loss(out, one_hot_pm1(label, 10)),
                             lr=0.01, momentum=0.9, workers=workers, backend=backend, seed=seed) as trainer:
        pipe = trainer.backend
        for report in trainer.train_steps(train, epochs=1000, batch_size=batch_size, max_steps=1 + repeat * steps):
            if report.step == 1:  # the first step starts the pool
                continue
            if (report.step - 2) % steps == 0:
                windows.append([])
                traffic.append(getattr(pipe, "bytes_sent", 0) + getattr(pipe, "bytes_received", 0))
                cpu.append(time.process_time())
            windows[-1].append(report)
        traffic.append(getattr(pipe, "bytes_sent", 0) + getattr(pipe, "bytes_received", 0))
        cpu.append(time.process_time())
    best = min(range(repeat), key=lambda k: sum(r.seconds for r in windows[k]))
    timed = windows[best]
    seconds = sum(r.seconds for r in timed)
    engine = sum(r.engine_seconds for r in timed)
    busy = sum(r.seconds - r.phases["wait"] for r in timed)
    n = sum(r.samples for r in timed)
    return {"workers": workers, "batch_size": batch_size, "steps": len(timed), "samples": n,
            "seconds": seconds, "samples_per_s": n / seconds, "overhead_share": 1 - engine / seconds,
            "step_ms": 1000 * seconds / len(timed),
            "engine_ms_per_sample": 1000 * sum(r.sample_seconds for r in timed) / n,
            "overhead_ms_per_step": 1000 * (seconds - engine) / len(timed),
            "parent_busy_ms_per_step": 1000 * busy / len(timed) if workers else None,
            "parent_cpu_ms_per_step": 1000 * (cpu[best + 1] - cpu[best]) / len(timed) if workers else None,
            "pickled_bytes_per_step": (traffic[best + 1] - traffic[best]) / len(timed)}


def main(argv=None):
    args = parse_args(argv)
    from minigrad.data import load_mnist5k
    from parallel import available_cpus

    warnings.simplefilter("ignore", RuntimeWarning)  # more workers than CPUs is the point here
    train = load_mnist5k("train")
    print(f"{available_cpus()} CPUs, {sys.implementation.name} {sys.version.split()[0]}, backend {args.backend}")
    one, ceiling = ceilings(args.max_workers, args.ceiling_samples, args.seed)
    print(f"ceiling: the engine loop alone, {1000 / one:.2f} ms per sample in one process; "
          + ", ".join(f"{n} at once {c:.2f}x" for n, c in ceiling.items()))
    rows = []
    print(f"{'workers':>7} {'batch':>5} {'samples/s':>10} {'speedup':>8} {'of ceiling':>10} {'ms/step':>8} "
          f"{'outside engine ms/step':>22} {'parent busy ms/step':>19} {'parent CPU ms/step':>18} "
          f"{'pickled B/step':>14} "
          f"{'engine ms/sample':>16}")
    for batch_size in args.batch_sizes:
        single = None
        for workers in range(args.max_workers + 1):
            row = measure(workers, batch_size, args.samples, args.repeat, args.seed, train, args.backend)
            if workers == 1:
                single = row["samples_per_s"]
            row["speedup_vs_1"] = row["samples_per_s"] / single if single else None
            row["fraction_of_ceiling"] = (row["speedup_vs_1"] / ceiling[workers]
                                          if single and workers in ceiling else None)
            rows.append(row)
            speedup = f"{row['speedup_vs_1']:.2f}x" if single else "-"
            fraction = f"{row['fraction_of_ceiling']:.2f}" if row["fraction_of_ceiling"] else "-"
            busy, cpu = ((f"{row[k]:.2f}" if row[k] is not None else "-")
                         for k in ("parent_busy_ms_per_step", "parent_cpu_ms_per_step"))
            print(f"{workers:>7} {batch_size:>5} {row['samples_per_s']:>10.1f} {speedup:>8} {fraction:>10} "
                  f"{row['step_ms']:>8.1f} {row['overhead_ms_per_step']:>22.2f} {busy:>19} {cpu:>18} "
                  f"{row['pickled_bytes_per_step']:>14.0f} {row['engine_ms_per_sample']:>16.2f}", flush=True)
    if args.json:
        from minigrad.checkpoint import atomic_write_json
        atomic_write_json(args.json, {"cpus": available_cpus(), "python": sys.version.split()[0],
                                      "implementation": sys.implementation.name, "backend": args.backend,
                                      "time": time.time(), "pid": os.getpid(),
                                      "engine_ms_per_sample_alone": 1000 / one,
                                      "ceiling": {str(n): c for n, c in ceiling.items()}, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
