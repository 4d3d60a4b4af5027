"""Draw the graph of dy/dx for y = tanh(x): the graph a second derivative is taken through.

``minigrad.grad(y, x, create_graph=True)`` returns dy/dx = 1 - tanh(x)**2 as a Value built
from ordinary ops. Its own backward then gives d2y/dx2 = -2 tanh(x) (1 - tanh(x)**2), which
the picture shows as the ``grad`` of the leaf x.

    python scripts/plot_second_derivative.py [--x 0.5] [--out artifacts/second_derivative_graph.svg]

writes the .dot next to the picture; without Graphviz only the .dot is written and the
script exits with code 2.
"""
import argparse
import math
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # run from a checkout without installing minigrad

import minigrad  # noqa: E402
from minigrad.viz import render  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--x", type=float, default=0.5, help="the point at which to differentiate")
parser.add_argument("--out", default=os.path.join(REPO_ROOT, "artifacts", "second_derivative_graph.svg"),
                    help="the picture (.svg or .png); the .dot goes next to it")
args = parser.parse_args()

x = minigrad.Value(args.x)
y = x.tanh()
dydx = minigrad.grad(y, x, create_graph=True)
dydx.backward()  # x.grad is now d2y/dx2

t = math.tanh(args.x)
print(f"x = {args.x}")
print(f"dy/dx   = {dydx.v:.12f}   (1 - tanh(x)**2 = {1 - t * t:.12f})")
print(f"d2y/dx2 = {x.grad:.12f}   (-2 tanh(x) (1 - tanh(x)**2) = {-2 * t * (1 - t * t):.12f})")

os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
try:
    picture = render(dydx, args.out)
except (RuntimeError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
print(f"wrote {os.path.splitext(picture)[0]}.dot and {picture}")
