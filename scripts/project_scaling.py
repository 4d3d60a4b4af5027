"""How far the pool should scale with the reference CNN: costs measured on this machine, projected to N cores.

    python scripts/project_scaling.py --json artifacts/scaling-cpython.json
    pypy3 scripts/project_scaling.py --json artifacts/scaling-pypy.json
    python scripts/project_scaling.py --plot artifacts/scaling.png artifacts/scaling-*.json

For each batch size B it trains the reference CNN (MNIST-5k, Adam) with one worker and measures,
per step: the parent's own time ``P`` (the wall time it does not spend waiting: the job on the
board, the results, the reduction of B gradient rows, the optimizer step) and the time it waits
for the worker, ``B * q`` (``q``: one sample in a worker with everything around it: the engine,
the gradient written to the slab, the claim, and its share of the wake-up, the parameter copy
and the message back). Then W workers on W cores take a step in

    P + ceil(log2 W) * h + ceil(B / W) * q

where ``h`` is one wake-up hand-off between two processes (a semaphore ping-pong; the board
wakes sleeping workers two by two, so W of them are up after log2 W hand-offs). The speedup
shown is over one worker (the same engine in both, so this VM's drift between processes cancels);
one worker's speed against workers=0 (in this process) is printed beside it.
Assumptions: each worker has a core of its own and the parent one more; a sample costs the same
on every core (no shared-cache or memory-bandwidth limit: this machine's own two-process ceiling
for the engine is 1.9-2.0x, ``bench_parallel.py``); P does not grow with W; B >= W.
"""
import argparse
import math
import multiprocessing
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CORES = (1, 2, 4, 8, 16, 32, 64)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=384, help="samples per timed window (and as many to warm up)")
    p.add_argument("--project-batch", type=int, nargs="+", default=[64, 256],
                   help="batch sizes to measure and project the speedup for")
    p.add_argument("--json", metavar="PATH", help="write the measured costs and the projection as JSON")
    p.add_argument("--plot", metavar="PNG", help="draw the projections of the JSON files given after it")
    p.add_argument("inputs", nargs="*", help="with --plot: JSON files this script wrote")
    return p.parse_args(argv)


def step_costs(workers, batch_size, samples):
    """(wall seconds, parent CPU seconds, seconds waiting for workers) per step, the best of three
    windows of ``samples`` samples, after as many to warm up (PyPy's JIT)."""
    steps = max(3, samples // batch_size)
    from minigrad import nn
    from minigrad.data import load_mnist5k
    from minigrad.losses import mse_loss, one_hot_pm1
    from parallel import DataParallelTrainer
    train = load_mnist5k("train")
    best = None
    with DataParallelTrainer(lambda: nn.CNN.reference(seed=0), lambda out, label: mse_loss(out, one_hot_pm1(label, 10)),
                             optimizer="adam", lr=0.004, workers=workers, seed=0, log=lambda line: None) as trainer:
        reports = trainer.train_steps(train, epochs=1000, batch_size=batch_size, max_steps=4 * steps)
        for _ in range(steps):
            next(reports)  # the pool is up and, on PyPy, the JIT warm
        for _ in range(3):
            cpu = time.process_time()
            window = [next(reports) for _ in range(steps)]
            cpu = (time.process_time() - cpu) / steps
            wall = sum(r.seconds for r in window) / steps
            wait = sum(r.phases["wait"] for r in window) / steps if workers else 0.0
            if best is None or wall < best[0]:
                best = (wall, cpu, wait)
    return best


def _pong(a, b, n):
    for _ in range(n):
        a.acquire()
        b.release()


def handoff_seconds(n=2000):
    """One wake-up from one process to another: half a semaphore round trip."""
    from parallel.process_pool import default_start_method
    ctx = multiprocessing.get_context(default_start_method())
    a, b = ctx.Semaphore(0), ctx.Semaphore(0)
    child = ctx.Process(target=_pong, args=(a, b, n + 100))
    child.start()
    for _ in range(100):
        a.release()
        b.acquire()
    start = time.perf_counter()
    for _ in range(n):
        a.release()
        b.acquire()
    seconds = (time.perf_counter() - start) / n / 2
    child.join()
    return seconds


def measure(args):
    costs = {}
    for batch in args.project_batch:
        wall, _, wait = step_costs(1, batch, max(args.samples, 2 * batch))
        in_process = step_costs(0, batch, max(args.samples, 2 * batch))[0]
        costs[str(batch)] = {"P": wall - wait, "q": wait / batch, "one_worker_step": wall,
                             "in_process_step": in_process}
    return {"implementation": sys.implementation.name, "python": sys.version.split()[0], "time": time.time(),
            "handoff_s": handoff_seconds(), "costs_s": costs}


def project(cost, h, batch, cores):
    """Speedup of ``cores`` workers over one, from one worker's measured costs."""
    one = cost["P"] + batch * cost["q"]
    return one / (cost["P"] + math.ceil(math.log2(cores)) * h + math.ceil(batch / cores) * cost["q"])


def plot(path, inputs):
    import json

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minigrad.atomic_file import atomic_write
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in inputs:
        with open(name) as f:
            data = json.load(f)
        for batch, rows in data["projection"].items():
            cores = [int(c) for c in rows]
            ax.plot(cores, list(rows.values()), marker="o",
                    label=f"{data['implementation']} {data['python']}, batch {batch}")
    ax.plot(CORES, CORES, color="grey", linestyle=":", label="linear")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(CORES, [str(c) for c in CORES])
    ax.set_yticks(CORES, [str(c) for c in CORES])
    ax.set_xlabel("cores (one worker each)")
    ax.set_ylabel("projected speedup over one worker")
    ax.set_title("The reference CNN: projected from costs measured on 2 cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.plot:
        plot(args.plot, args.inputs)
        return 0
    warnings.simplefilter("ignore", RuntimeWarning)
    from minigrad.pypy_nursery import restart_with_tuned_nursery
    restart_with_tuned_nursery()
    result = measure(args)
    h = result["handoff_s"]
    result["projection"] = {b: {str(n): project(c, h, int(b), n) for n in CORES[2:]}
                            for b, c in result["costs_s"].items()}
    print(f"{result['implementation']} {result['python']}: one wake-up hand-off {1e6 * h:.0f} us")
    print(f"{'batch':>5} {'parent ms/step':>14} {'worker ms/sample':>16} {'1 worker vs workers=0':>21} "
          + " ".join(f"{str(n) + ' cores':>9}" for n in CORES[2:]))
    for b, rows in result["projection"].items():
        c = result["costs_s"][b]
        ratio = c["in_process_step"] / c["one_worker_step"]
        print(f"{b:>5} {1e3 * c['P']:>14.2f} {1e3 * c['q']:>16.3f} {ratio:>20.2f}x "
              + " ".join(f"{s:>8.1f}x" for s in rows.values()))
    if args.json:
        from minigrad.checkpoint import atomic_write_json
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
