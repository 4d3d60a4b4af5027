"""Pictures of a computation graph: Graphviz DOT text, and SVG/PNG when Graphviz is installed.

``to_dot(y)`` draws one box per Value below ``y`` (its op, its value ``v`` and its ``grad``)
and one arrow per input, from the input to the Value it feeds. Boxes are numbered in the
order a depth-first walk from ``y`` meets them, so the same graph always gives the same text.
"""
import os
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


def _number(x):
    x = x.v if isinstance(x, Value) else x  # a gradient from create_graph=True is a Value
    return f"{x:.4g}"


def node_label(value, show_grad=True):
    op = "leaf" if value.grad_fn is None else value.grad_fn.name
    lines = [op, "v=" + _number(value.v)]
    if show_grad:
        lines.append("grad=" + _number(value.grad))
    return "\\n".join(_escape(line) for line in lines)


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
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError(DOT_NOT_FOUND)
    result = subprocess.run([dot, "-T" + fmt, dot_path], capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"Graphviz 'dot' failed on {dot_path} (exit code {result.returncode}): "
                           f"{result.stderr.decode('utf-8', 'replace').strip()}")
    atomic_write_bytes(out_path, result.stdout)
    return out_path
