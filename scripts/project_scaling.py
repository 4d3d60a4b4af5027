"""How far the pool should scale with the reference CNN: costs measured on this machine, projected to N cores.

    python scripts/project_scaling.py --json artifacts/scaling-cpython.json
    pypy3 scripts/project_scaling.py --json artifacts/scaling-pypy.json
    python scripts/project_scaling.py --plot artifacts/scaling.png artifacts/scaling-*.json

It trains the reference CNN (MNIST-5k, Adam) in this process (workers=0) and with one
worker, at two batch sizes, and fits the costs of a step to straight lines in the batch size B:

- in this process, a step takes ``in0 + B * in1`` (the engine, and the trainer's own work);
- with the pool, the parent's CPU per step is ``p0 + B * p1`` (the job on the board, the
  results, the reduction of B gradient rows, the optimizer step), and the parent waits
  ``c + B * q`` for one worker: ``q`` is a sample in a worker (engine, gradient written to the
  slab, claim), ``c`` the step's fixed cost in the workers and the hand-offs (the wake-up, the
  parameter copy, the last worker's message back).

Then, for W workers on W cores, a step of B samples takes
``p0 + B * p1 + c + ceil(log2 W) * h + ceil(B / W) * q``, where ``h`` is one wake-up hand-off
between two processes (measured with a semaphore ping-pong: the board wakes sleeping workers two
by two, so W of them are awake after log2 W hand-offs), and the speedup is the in-process step over
that. Assumptions: each worker has a core of its own and the parent one more; a sample costs the
same on every core (no shared-cache or memory-bandwidth limit: this machine's own two-process
ceiling for the engine is 1.96-2.01x, ``bench_parallel.py``); B is at least W.
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
    p.add_argument("--batch-sizes", type=int, nargs=2, default=[8, 64], metavar=("SMALL", "LARGE"),
                   help="the two batch sizes the costs are fitted at")
    p.add_argument("--steps", type=int, default=6, help="timed steps per configuration")
    p.add_argument("--project-batch", type=int, nargs="+", default=[64, 256],
                   help="batch sizes to project the speedup for")
    p.add_argument("--json", metavar="PATH", help="write the measured costs and the projection as JSON")
    p.add_argument("--plot", metavar="PNG", help="draw the projections of the JSON files given after it")
    p.add_argument("inputs", nargs="*", help="with --plot: JSON files this script wrote")
    return p.parse_args(argv)


def step_costs(workers, batch_size, steps):
    """(wall seconds, parent CPU seconds, seconds waiting for workers) per step, the best of two windows."""
    from minigrad import nn
    from minigrad.data import load_mnist5k
    from minigrad.losses import mse_loss, one_hot_pm1
    from parallel import DataParallelTrainer
    train = load_mnist5k("train")
    best = None
    with DataParallelTrainer(lambda: nn.CNN.reference(seed=0), lambda out, label: mse_loss(out, one_hot_pm1(label, 10)),
                             optimizer="adam", lr=0.004, workers=workers, seed=0, log=lambda line: None) as trainer:
        reports = trainer.train_steps(train, epochs=1000, batch_size=batch_size, max_steps=2 + 2 * steps)
        next(reports)
        next(reports)  # the pool is up and, on PyPy, the JIT warm
        for _ in range(2):
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


def line(small, large, b_small, b_large):
    """(intercept, slope) of the straight line through (b_small, small) and (b_large, large)."""
    slope = (large - small) / (b_large - b_small)
    return max(0.0, small - slope * b_small), slope


def measure(args):
    b1, b2 = args.batch_sizes
    inproc = [step_costs(0, b, args.steps)[0] for b in (b1, b2)]
    pooled = [step_costs(1, b, args.steps) for b in (b1, b2)]
    in0, in1 = line(inproc[0], inproc[1], b1, b2)
    p0, p1 = line(pooled[0][0] - pooled[0][2], pooled[1][0] - pooled[1][2], b1, b2)  # the parent's own time
    c, q = line(pooled[0][2], pooled[1][2], b1, b2)
    return {"implementation": sys.implementation.name, "python": sys.version.split()[0], "time": time.time(),
            "batch_sizes": [b1, b2], "in_process_step_s": inproc, "pool_1_worker_step_s": [p[0] for p in pooled],
            "pool_parent_cpu_s": [p[1] for p in pooled], "costs_s": {"in0": in0, "in1": in1, "p0": p0, "p1": p1,
                                                                      "c": c, "q": q, "h": handoff_seconds()}}


def project(costs, batch, cores):
    k = costs
    in_process = k["in0"] + batch * k["in1"]
    pooled = (k["p0"] + batch * k["p1"] + k["c"] + math.ceil(math.log2(cores)) * k["h"]
              + math.ceil(batch / cores) * k["q"])
    return in_process / pooled


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
    ax.set_ylabel("projected speedup over workers=0")
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
    result["projection"] = {str(b): {str(n): project(result["costs_s"], b, n) for n in CORES[2:]}
                            for b in args.project_batch}
    k = result["costs_s"]
    print(f"{result['implementation']} {result['python']}: in this process a step takes "
          f"{1e3 * k['in0']:.2f} ms + {1e3 * k['in1']:.3f} ms per sample; with the pool the parent spends "
          f"{1e3 * k['p0']:.2f} ms + {1e6 * k['p1']:.1f} us per sample per step, a worker "
          f"{1e3 * k['c']:.2f} ms per step + {1e3 * k['q']:.3f} ms per sample; one hand-off {1e6 * k['h']:.0f} us")
    print(f"{'batch':>5} " + " ".join(f"{str(n) + ' cores':>9}" for n in CORES[2:]))
    for batch, rows in result["projection"].items():
        print(f"{batch:>5} " + " ".join(f"{s:>8.1f}x" for s in rows.values()))
    if args.json:
        from minigrad.checkpoint import atomic_write_json
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
