"""Write interactive pages of two graphs: a single neuron, and a small MLP with its loss.

    python scripts/plot_graph.py [--out-dir artifacts] [--layout auto|dot|layered]

writes ``graph_neuron.html`` (tanh(x1*w1 + x2*w2 + b), the neuron of micrograd's lecture)
and ``graph_mlp.html`` (2 inputs, 3 tanh hidden units, 1 output, squared error against 1,
built op by op). Each page is one file that opens in any browser without a network:
hover over a box for its numbers, press "step" to walk backward through the graph.
"""
import argparse
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # run from a checkout without installing minigrad

import minigrad  # noqa: E402
from minigrad import Value, nn  # noqa: E402
from minigrad.viz import LAYOUTS, to_html  # noqa: E402


def neuron():
    x1, x2 = Value(2.0), Value(0.0)
    w1, w2 = Value(-3.0), Value(1.0)
    b = Value(6.8813735870195432)
    out = (x1 * w1 + x2 * w2 + b).tanh()
    out.backward()
    return out


def mlp():
    model = nn.Sequential(nn.Linear(2, 3, activation="tanh", seed=0), nn.Linear(3, 1, seed=1))
    model.set_fused(False)  # one node per multiply and add, the graph drawn by hand
    loss = minigrad.mse_loss(model([Value(0.5), Value(-1.0)]), [1.0])
    loss.backward()
    return loss


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out-dir", default=os.path.join(REPO_ROOT, "artifacts"), help="folder for the pages")
parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                    help="dot: Graphviz; layered: no Graphviz needed; auto: Graphviz when installed")
args = parser.parse_args()

os.makedirs(args.out_dir, exist_ok=True)
pages = [("graph_neuron.html", neuron(), "A neuron: tanh(x1*w1 + x2*w2 + b)"),
         ("graph_mlp.html", mlp(), "A 2-3-1 MLP and its squared error, op by op")]
for name, root, title in pages:
    try:
        path = to_html(root, os.path.join(args.out_dir, name), title=title, layout=args.layout)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {path} ({title}; output {root.v:.6g})")
