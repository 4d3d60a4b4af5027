"""Time one training sample of the reference CNN: forward + backward, MSE against +-1 targets.

    python scripts/bench_engine.py [--samples 200] [--repeats 5] [--json PATH] [--torch-python PYTHON]

Rows: the fused engine with the image given as ``as_value_array`` Values (every input gets a
gradient, as the original minigrad's users call it), as plain nested floats (constants: what
the trainer's workers do), the op-by-op graph (one node per multiply and add), the fused
forward alone under no_grad, and, when PyTorch is installed, the same network in torch at
batch 1 on one thread, timed in the same run. Each figure is the best of ``--repeats`` timed
blocks of this process's CPU time (what other work on a shared machine disturbs least), in
milliseconds per sample; the columns give each row against the first and against torch. Where this interpreter has no
PyTorch (PyPy), torch is timed by ``--torch-python`` (default: the first ``python3`` on the
PATH that has it) in a subprocess, between the engine's rows.
"""
import argparse
import json
import platform
import random
import shutil
import subprocess
import sys
import time

from minigrad.pypy_nursery import restart_with_tuned_nursery

restart_with_tuned_nursery()  # under PyPy: once more with the tuned young generation, before any work

import minigrad  # noqa: E402
import minigrad.nn as nn  # noqa: E402
from minigrad.nested import as_value_array  # noqa: E402
from minigrad.losses import mse_loss, one_hot_pm1  # noqa: E402


def best_ms_per_sample(step, samples, repeats):
    for _ in range(max(1, samples // 10)):  # warm-up (and JIT warm-up on PyPy)
        step()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(samples):
            step()
        best = min(best, (time.process_time() - start) / samples)
    return best * 1e3


def engine_step(model, image, target, as_values=False):
    def step():
        model.zero_grad()
        x = as_value_array(image) if as_values else image
        mse_loss(model(x), target).backward()
    return step


def forward_step(model, image):
    def step():
        with minigrad.no_grad():
            model(image)
    return step


def torch_step(image, target):
    import torch
    torch.set_num_threads(1)
    layers = [torch.nn.Conv2d(1, 15, 5, 2), torch.nn.Tanh(), torch.nn.Conv2d(15, 12, 4, 2), torch.nn.Tanh(),
              torch.nn.Flatten(), torch.nn.Linear(48, 35), torch.nn.Tanh(), torch.nn.Linear(35, 10),
              torch.nn.Tanh()]
    net = torch.nn.Sequential(*layers).double()
    x = torch.tensor([image], dtype=torch.float64)
    t = torch.tensor([target], dtype=torch.float64)

    def step():
        net.zero_grad()
        torch.nn.functional.mse_loss(net(x), t).backward()
    return step


def torch_ms_elsewhere(python, samples, repeats):
    """torch's figure from another interpreter that has it, or None."""
    python = python or shutil.which("python3")
    if not python:
        return None
    cmd = [python, __file__, "--torch-only", "--samples", str(samples), "--repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    return float(done.stdout) if done.returncode == 0 and done.stdout.strip() else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="samples per timed block (fused engine)")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks; the best one counts")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--torch-python", metavar="PYTHON", help="interpreter with PyTorch, where this has none")
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.samples < 1 or args.repeats < 1:
        parser.error(f"expected --samples and --repeats >= 1, got {args.samples} and {args.repeats}")

    rng = random.Random(0)
    image = [[[rng.random() for _ in range(15)] for _ in range(15)]]
    target = one_hot_pm1(3, 10)
    if args.torch_only:
        print(best_ms_per_sample(torch_step(image, target), args.samples * 5, args.repeats))
        return 0
    fused = nn.CNN.reference(seed=0)
    op_by_op = nn.CNN.reference(seed=0, fused=False)
    n, repeats = args.samples, args.repeats

    rows = [("fused, as_value_array input", best_ms_per_sample(engine_step(fused, image, target, True), n, repeats)),
            ("fused, constant input", best_ms_per_sample(engine_step(fused, image, target), n, repeats)),
            ("op-by-op, constant input", best_ms_per_sample(engine_step(op_by_op, image, target),
                                                            max(2, n // 20), repeats)),
            ("no_grad forward", best_ms_per_sample(forward_step(fused, image), n, repeats))]
    try:
        torch_ms = best_ms_per_sample(torch_step(image, target), n * 5, repeats)
    except ImportError:
        torch_ms = torch_ms_elsewhere(args.torch_python, n, repeats)
    if torch_ms is not None:
        rows.append(("torch batch 1, 1 thread", torch_ms))

    first_ms = rows[0][1]
    interpreter = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"reference CNN ({len(fused.parameters())} parameters), forward + backward per sample, {interpreter}")
    print(f"{'':30} {'ms/sample':>10} {'vs first':>9} {'vs torch':>9}")
    for name, ms in rows:
        vs_torch = f"{ms / torch_ms:8.1f}x" if torch_ms else "        -"
        print(f"{name:30} {ms:10.3f} {ms / first_ms:8.2f}x {vs_torch}")
    if args.json:
        result = {"interpreter": interpreter, "ms_per_sample": dict(rows)}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
