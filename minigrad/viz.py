"""Pictures of a computation graph: Graphviz DOT text, SVG/PNG when Graphviz is installed,
and a self-contained HTML page that steps through the backward pass.

``to_dot(y)`` draws one box per Value below ``y`` (its op, its value ``v`` and its ``grad``)
and one arrow per input, from the input to the Value it feeds. Boxes are numbered in the
order a depth-first walk from ``y`` meets them, so the same graph always gives the same text.
``to_html(y, path)`` draws the same boxes in one HTML file that needs no network.
"""
import html
import json
import math
import os
import re
import shutil
import subprocess

from .atomic_file import atomic_write_bytes
from .core import Value

RANKDIRS = ("LR", "RL", "TB", "BT")
FORMATS = ("svg", "png")
DOT_NOT_FOUND = ("Graphviz 'dot' was not found on PATH; install graphviz (e.g. apt-get install graphviz) "
                 "or use to_dot() and render it elsewhere")


def graph_nodes(root):
    """Every Value below ``root`` (``root`` first) and the edges ``(input index, output index)``.

    Only ``grad_fn.inputs()`` is followed, so helper Values an op keeps for itself stay out.
    A Value's number is the order in which the walk first meets it (``id()`` only tells two
    Values apart), so the numbering is the same on every run.
    """
    if not isinstance(root, Value):
        raise TypeError(f"Expected a Value, got {type(root).__name__}")
    index = {id(root): 0}
    nodes, edges = [root], []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.grad_fn is None:
            continue
        out = index[id(node)]
        fresh = []
        for x in node.grad_fn.inputs():
            if id(x) not in index:
                index[id(x)] = len(nodes)
                nodes.append(x)
                fresh.append(x)
            edges.append((index[id(x)], out))
        stack.extend(reversed(fresh))  # visit the first input first
    return nodes, edges


def _float(x):
    return x.v if isinstance(x, Value) else x  # a gradient from create_graph=True is a Value


def _number(x):
    return f"{_float(x):.4g}"


def _op_name(value):
    return "leaf" if value.grad_fn is None else value.grad_fn.name


def _label_lines(value, show_grad=True):
    lines = [_op_name(value), "v=" + _number(value.v)]
    if show_grad:
        lines.append("grad=" + _number(value.grad))
    return lines


def node_label(value, show_grad=True):
    return "\\n".join(_escape(line) for line in _label_lines(value, show_grad))


def _escape(text):
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(root, show_grad=True, rankdir="LR", max_nodes=500):
    """Graphviz DOT text of the graph below ``root``, inputs pointing at the Values they feed."""
    if rankdir not in RANKDIRS:
        raise ValueError(f"Expected rankdir in {RANKDIRS}, got {rankdir!r}")
    nodes, edges = graph_nodes(root)
    if len(nodes) > max_nodes:
        raise ValueError(f"Expected a graph of at most max_nodes={max_nodes} Values, got {len(nodes)}; "
                         "pass a larger max_nodes or draw a smaller graph")
    lines = ["digraph minigrad {", f"  rankdir={rankdir};", '  node [shape=box, fontname="monospace"];']
    for i, value in enumerate(nodes):
        style = "" if value.grad_fn is not None else ", style=filled, fillcolor=lightgrey"
        lines.append(f'  n{i} [label="{node_label(value, show_grad)}"{style}];')
    for a, b in edges:
        lines.append(f"  n{a} -> n{b};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _output_paths(path, format):
    stem, ext = os.path.splitext(os.fspath(path))
    ext = ext[1:].lower()
    if ext and ext not in FORMATS:
        raise ValueError(f"Expected a path ending in .svg or .png (or no extension), got {os.fspath(path)!r}")
    fmt = format if format is not None else (ext or "svg")
    if fmt not in FORMATS:
        raise ValueError(f"Expected format in {FORMATS}, got {fmt!r}")
    if ext and ext != fmt:
        raise ValueError(f"Expected a .{fmt} path for format {fmt!r}, got {os.fspath(path)!r}")
    return stem + ".dot", stem + "." + fmt, fmt


def render(root, path, format=None, show_grad=True, rankdir="LR", max_nodes=500):
    """Write the DOT of ``root``'s graph next to ``path`` and draw it to ``path`` with Graphviz.

    ``render(y, "graph.svg")`` writes ``graph.dot`` and ``graph.svg``; the format comes from
    the extension, or from ``format`` ("svg" or "png") when ``path`` has none. The .dot file
    is written even when Graphviz is missing, and then ``RuntimeError`` says so.
    Returns the path of the picture.
    """
    dot_path, out_path, fmt = _output_paths(path, format)
    text = to_dot(root, show_grad=show_grad, rankdir=rankdir, max_nodes=max_nodes)
    atomic_write_bytes(dot_path, text.encode("utf-8"))
    atomic_write_bytes(out_path, _run_dot(["-T" + fmt, dot_path], dot_path))
    return out_path


def _run_dot(args, source, stdin=None):
    """Graphviz ``dot``'s output for ``args``; ``source`` names the graph in errors."""
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(DOT_NOT_FOUND)
    result = subprocess.run([dot, *args], input=stdin, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"Graphviz 'dot' failed on {source} (exit code {result.returncode}): "
                           f"{result.stderr.decode('utf-8', 'replace').strip()}")
    return result.stdout


# The interactive page: boxes laid out in pixels, drawn as inline SVG, stepped by inline script.

LAYOUTS = ("auto", "dot", "layered")
CHAR_WIDTH = 7.3  # px of one 12px monospace character
LINE_HEIGHT = 15
PAD = 7
LAYER_GAP = 56
ROW_GAP = 14
MARGIN = 16


def backward_steps(nodes, edges):
    """Node numbers in the order backward completes their gradients: the root first, and each
    Value after every Value it feeds (a depth-first post-order over the inputs, reversed)."""
    inputs = [[] for _ in nodes]
    for a, b in edges:
        inputs[b].append(a)
    done = [False] * len(nodes)
    done[0] = True
    order, stack = [], [(0, iter(inputs[0]))]
    while stack:
        node, children = stack[-1]
        for child in children:
            if not done[child]:
                done[child] = True
                stack.append((child, iter(inputs[child])))
                break
        else:
            stack.pop()
            order.append(node)
    return order[::-1]


def _box_size(lines):
    return max(len(line) for line in lines) * CHAR_WIDTH + 2 * PAD, len(lines) * LINE_HEIGHT + 2 * PAD


def _curve(x0, y0, x1, y1):
    mid = (x0 + x1) / 2
    return f"M{x0:.1f},{y0:.1f} C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {x1:.1f},{y1:.1f}"


def layered_layout(sizes, edges, steps):
    """Box centres, edge paths and the page size without Graphviz: the root in the rightmost
    column, every Value one column left of its leftmost consumer's (its longest path to the
    root), and each column ordered by the mean height of the boxes it feeds."""
    consumers = [[] for _ in sizes]
    for a, b in edges:
        consumers[a].append(b)
    rank = [0] * len(sizes)
    for i in steps:  # consumers come first, so their ranks are final
        rank[i] = max((rank[c] + 1 for c in consumers[i]), default=0)
    columns = [[] for _ in range(max(rank) + 1)]
    slot = [0.0] * len(sizes)
    for i in steps:
        columns[rank[i]].append(i)
    for column in columns:
        column.sort(key=lambda i: (sum(slot[c] for c in consumers[i]) / max(1, len(consumers[i])), i))
        for k, i in enumerate(column):
            slot[i] = k - (len(column) - 1) / 2
    widths = [max(sizes[i][0] for i in column) for column in columns]
    heights = [sum(sizes[i][1] for i in column) + ROW_GAP * (len(column) - 1) for column in columns]
    height = max(heights) + 2 * MARGIN
    centres = [None] * len(sizes)
    x = MARGIN
    for r in reversed(range(len(columns))):
        y = (height - heights[r]) / 2
        for i in columns[r]:
            centres[i] = (x + widths[r] / 2, y + sizes[i][1] / 2)
            y += sizes[i][1] + ROW_GAP
        x += widths[r] + LAYER_GAP
    paths = []
    for a, b in edges:
        (xa, ya), (xb, yb) = centres[a], centres[b]
        paths.append(_curve(xa + sizes[a][0] / 2, ya, xb - sizes[b][0] / 2, yb))
    return centres, paths, (x - LAYER_GAP + MARGIN, height)


def dot_layout(sizes, edges):
    """Box centres, edge paths and the page size from Graphviz ``dot -Tplain`` (boxes of fixed size)."""
    lines = ["digraph layout {", "  rankdir=LR; nodesep=0.2; ranksep=0.6;",
             '  node [shape=box, fixedsize=true, label=""]; edge [arrowhead=none];']
    lines += [f"  n{i} [width={w / 72:.4f}, height={h / 72:.4f}];" for i, (w, h) in enumerate(sizes)]
    lines += [f"  n{a} -> n{b};" for a, b in edges]
    plain = _run_dot(["-Tplain"], "the page layout", ("\n".join(lines) + "\n}\n").encode("utf-8"))
    rows = [line.split() for line in plain.decode("utf-8").splitlines()]
    width, height = float(rows[0][2]) * 72, float(rows[0][3]) * 72  # "graph scale width height" comes first

    def point(x, y):  # inches from the bottom left to pixels from the top left
        return float(x) * 72 + MARGIN, height + MARGIN - float(y) * 72

    centres, paths = [None] * len(sizes), []
    for fields in rows[1:]:
        if fields[0] == "node":
            centres[int(fields[1][1:])] = point(fields[2], fields[3])
        elif fields[0] == "edge":
            xy = [point(fields[4 + 2 * k], fields[5 + 2 * k]) for k in range(int(fields[3]))]
            curves = " ".join("C" + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy[k:k + 3]) for k in range(1, len(xy), 3))
            paths.append(f"M{xy[0][0]:.1f},{xy[0][1]:.1f} {curves}")
    size = (width + 2 * MARGIN, height + 2 * MARGIN)
    return centres, paths, size


def _json_number(x):
    x = float(_float(x))
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")  # JSON has no inf or nan


def _svg(nodes, edges, labels, sizes, centres, paths, size):
    width, height = size
    out = [f'<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker>'
           '<marker id="arrow-hot" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="5" markerHeight="5" '
           'orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>']
    for (a, b), d in zip(edges, paths):
        out.append(f'<path class="edge" data-from="{a}" data-to="{b}" d="{d}" marker-end="url(#arrow)"/>')
    for i, value in enumerate(nodes):
        (x, y), (w, h) = centres[i], sizes[i]
        kind = "node leaf" if value.grad_fn is None else "node"
        out.append(f'<g class="{kind}" id="node-{i}" data-node="{i}" transform="translate({x:.1f},{y:.1f})">')
        out.append(f'<rect x="{-w / 2:.1f}" y="{-h / 2:.1f}" width="{w:.1f}" height="{h:.1f}" rx="4"/>')
        for k, (cls, text) in enumerate(zip(("op", "value", "grad"), labels[i])):
            y_text = -h / 2 + PAD + LINE_HEIGHT * (k + 0.78)
            out.append(f'<text class="{cls}" y="{y_text:.1f}">{html.escape(text)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def page_data(root, max_nodes=500):
    """What the page shows, straight from the engine: each Value's op, value, gradient and inputs,
    and ``steps``, the node numbers in the order backward completes their gradients."""
    nodes, edges = graph_nodes(root)
    if len(nodes) > max_nodes:
        raise ValueError(f"Expected a graph of at most max_nodes={max_nodes} Values, got {len(nodes)}; "
                         "pass a larger max_nodes or draw a smaller graph")
    entries = [{"op": _op_name(v), "value": _json_number(v.v), "grad": _json_number(v.grad),
                "grad_text": "grad=" + _number(v.grad), "inputs": []} for v in nodes]
    for a, b in edges:
        entries[b]["inputs"].append(a)
    return nodes, edges, {"nodes": entries, "steps": backward_steps(nodes, edges)}


def to_html(root, path, title=None, layout="auto", max_nodes=500):
    """Write one self-contained HTML page of the graph below ``root`` and return ``path``.

    Call ``root.backward()`` first: the page shows the gradients the engine holds. Hovering
    or clicking a box shows its op, value and gradient; the step buttons (or the arrow keys)
    walk backward through the graph, lighting each Value once its gradient is complete.
    ``layout``: "dot" (Graphviz, which must be installed), "layered" (no Graphviz needed) or
    "auto" (Graphviz when ``dot`` is on the PATH). Nothing on the page comes from the network.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Expected layout in {LAYOUTS}, got {layout!r}")
    nodes, edges, data = page_data(root, max_nodes)
    labels = [_label_lines(v) for v in nodes]
    sizes = [_box_size(lines) for lines in labels]
    if layout == "dot" or (layout == "auto" and shutil.which("dot") is not None):
        data["layout"] = "dot"
        centres, paths, size = dot_layout(sizes, edges)
    else:
        data["layout"] = "layered"
        centres, paths, size = layered_layout(sizes, edges, data["steps"])
    title = title if title is not None else f"Backward through {len(nodes)} Values"
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    parts = {"TITLE": html.escape(title), "SVG": _svg(nodes, edges, labels, sizes, centres, paths, size),
             "DATA": payload}
    page = re.sub(r"\{\{(TITLE|SVG|DATA)\}\}", lambda m: parts[m.group(1)], PAGE)
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{TITLE}}</title>
<style>
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: #222; }
header { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid #ddd;
         padding: 8px 16px; display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center; }
h1 { font-size: 16px; margin: 0; }
button { font: inherit; padding: 3px 10px; }
#status { font-family: monospace; }
main { display: flex; align-items: flex-start; }
#canvas { flex: 1; overflow: auto; }
aside { position: sticky; top: 56px; width: 270px; margin: 12px; padding: 10px 12px;
        border: 1px solid #ccc; border-radius: 6px; background: #fafafa; }
aside h2 { font-size: 14px; margin: 0 0 6px; }
aside dl { margin: 0; display: grid; grid-template-columns: auto 1fr; gap: 2px 10px; }
aside dt { color: #666; }
aside dd { margin: 0; font-family: monospace; overflow-wrap: anywhere; }
.hint { color: #666; font-size: 12px; margin-top: 8px; }
.edge { fill: none; stroke: #b8b8b8; stroke-width: 1.2; }
.edge.flowing { stroke: #d9480f; stroke-width: 3; marker-end: url(#arrow-hot); }
#arrow path { fill: #999; }
#arrow-hot path { fill: #d9480f; }
.node { cursor: pointer; }
.node rect { fill: #f3f3f3; stroke: #aaa; stroke-width: 1; }
.node.leaf rect { fill: #e6edf7; stroke-dasharray: 4 2; }
.node text { font: 12px monospace; text-anchor: middle; fill: #555; }
.node .op { font-weight: bold; }
.node .grad { fill: #aaa; }
.node.filled rect { fill: #fff3bf; stroke: #e8a200; }
.node.filled .grad { fill: #b35c00; font-weight: bold; }
.node.current rect { fill: #ffd43b; stroke: #d9480f; stroke-width: 2.5; }
.node.selected rect { stroke: #1c7ed6; stroke-width: 2.5; }
.node:hover rect { stroke: #1c7ed6; }
</style>
</head>
<body>
<header>
  <h1>{{TITLE}}</h1>
  <span>
    <button id="reset" title="back to before backward (Home)">reset</button>
    <button id="back" title="one node back (Left arrow)">&#x25C0; back</button>
    <button id="step" title="one node of backward (Right arrow)">step &#x25B6;</button>
    <button id="end" title="every gradient (End)">end &#x25B6;&#x25B6;</button>
  </span>
  <span id="status"></span>
</header>
<main>
<div id="canvas">
{{SVG}}
</div>
<aside>
  <h2 id="info-title">Backward, one node at a time</h2>
  <dl>
    <dt>op</dt><dd id="info-op">-</dd>
    <dt>value</dt><dd id="info-value">-</dd>
    <dt>grad</dt><dd id="info-grad">-</dd>
    <dt>inputs</dt><dd id="info-inputs">-</dd>
  </dl>
  <p class="hint">Press <b>step</b> (or &#x2192;) to run backward from the output: each box lights up once
  its gradient is complete, after every box it feeds, and the arrows into it carry its gradient on to its
  inputs. Hover over a box, or click it to keep it here. Dashed boxes are leaves (inputs and parameters).
  The numbers are the engine's, computed by <code>backward()</code>.</p>
</aside>
</main>
<script id="graph-data" type="application/json">{{DATA}}</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("graph-data").textContent);
const nodes = data.nodes, steps = data.steps;
const stepOf = new Array(nodes.length);
steps.forEach((node, k) => { stepOf[node] = k + 1; });
const boxes = nodes.map((_, i) => document.getElementById("node-" + i));
const edges = Array.from(document.querySelectorAll(".edge"));
let step = 0, selected = null, hovered = null;

function number(x) { return String(Number(x)); }
function filled(i) { return stepOf[i] <= step; }
function current() { return step > 0 ? steps[step - 1] : null; }

function describe(i) {
  const node = nodes[i];
  document.getElementById("info-title").textContent = "n" + i + (i === 0 ? " (the output)" : "");
  document.getElementById("info-op").textContent = node.op;
  document.getElementById("info-value").textContent = number(node.value);
  document.getElementById("info-grad").textContent =
    filled(i) ? number(node.grad) : "not yet (complete at step " + stepOf[i] + ")";
  document.getElementById("info-inputs").textContent =
    node.inputs.length ? node.inputs.map((j) => "n" + j).join(", ") : "none (a leaf)";
}

function show() {
  const now = current();
  boxes.forEach((box, i) => {
    box.classList.toggle("filled", filled(i));
    box.classList.toggle("current", i === now);
    box.classList.toggle("selected", i === selected);
    box.querySelector(".grad").textContent = filled(i) ? nodes[i].grad_text : "grad=?";
  });
  edges.forEach((edge) => { edge.classList.toggle("flowing", Number(edge.dataset.to) === now); });
  document.getElementById("status").textContent = step === 0
    ? "step 0 of " + steps.length + ": no gradient yet"
    : "step " + step + " of " + steps.length + ": n" + now + " (" + nodes[now].op + ") grad = " +
      number(nodes[now].grad);
  document.getElementById("reset").disabled = document.getElementById("back").disabled = step === 0;
  document.getElementById("step").disabled = document.getElementById("end").disabled = step === steps.length;
  const shown = hovered !== null ? hovered : selected !== null ? selected : now;
  if (shown !== null) describe(shown);
}

function go(k) {
  step = Math.max(0, Math.min(steps.length, k));
  show();
  if (step > 0) boxes[current()].scrollIntoView({ block: "nearest", inline: "nearest" });
}
document.getElementById("reset").addEventListener("click", () => go(0));
document.getElementById("back").addEventListener("click", () => go(step - 1));
document.getElementById("step").addEventListener("click", () => go(step + 1));
document.getElementById("end").addEventListener("click", () => go(steps.length));
document.addEventListener("keydown", (e) => {
  const moves = { ArrowRight: step + 1, ArrowLeft: step - 1, Home: 0, End: steps.length };
  if (e.key in moves) { e.preventDefault(); go(moves[e.key]); }
});
boxes.forEach((box, i) => {
  box.addEventListener("mouseenter", () => { hovered = i; show(); });
  box.addEventListener("mouseleave", () => { hovered = null; show(); });
  box.addEventListener("click", () => { selected = selected === i ? null : i; show(); });
});
show();
</script>
</body>
</html>
"""
