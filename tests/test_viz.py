"""Graph pictures: the DOT text of small graphs, its determinism, and rendering through Graphviz."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import minigrad
import minigrad.nn
from minigrad import Value
from minigrad.core import GradFunction
from minigrad.viz import DOT_NOT_FOUND, graph_nodes, render, to_dot

HAS_DOT = shutil.which("dot") is not None


def neuron_graph():
    a, b, c = Value(2.0), Value(-3.0), Value(10.0)
    y = (a * b + c).tanh()
    return y, (a, b, c)


def test_dot_of_small_graph_lists_every_value_and_edge():
    y, _ = neuron_graph()
    y.backward()
    assert to_dot(y) == textwrap.dedent("""\
        digraph minigrad {
          rankdir=LR;
          node [shape=box, fontname="monospace"];
          n0 [label="TanhBackward\\nv=0.9993\\ngrad=1"];
          n1 [label="AddBackward\\nv=4\\ngrad=0.001341"];
          n2 [label="MulBackward\\nv=-6\\ngrad=0.001341"];
          n3 [label="leaf\\nv=10\\ngrad=0.001341", style=filled, fillcolor=lightgrey];
          n4 [label="leaf\\nv=2\\ngrad=-0.004023", style=filled, fillcolor=lightgrey];
          n5 [label="leaf\\nv=-3\\ngrad=0.002682", style=filled, fillcolor=lightgrey];
          n1 -> n0;
          n2 -> n1;
          n3 -> n1;
          n4 -> n2;
          n5 -> n2;
        }
        """)


def test_show_grad_false_and_rankdir():
    y, _ = neuron_graph()
    dot = to_dot(y, show_grad=False, rankdir="TB")
    assert "rankdir=TB;" in dot
    assert "grad=" not in dot
    assert 'n0 [label="TanhBackward\\nv=0.9993"];' in dot


def test_value_gradients_from_create_graph_are_shown_by_their_payload():
    x = Value(0.5)
    y = x ** 3
    y.backward(create_graph=True)
    assert isinstance(x.grad, Value)
    dot = to_dot(y)
    assert 'n1 [label="leaf\\nv=0.5\\ngrad=0.75"' in dot  # 3 * 0.5**2


def test_a_value_used_twice_is_one_node_with_two_edges():
    x = Value(3.0)
    y = x * x
    nodes, edges = graph_nodes(y)
    assert nodes == [y, x]
    assert edges == [(1, 0), (1, 0)]
    assert to_dot(y).count("n1 -> n0;") == 2


def test_numbering_is_depth_first_from_the_root():
    x, w = Value(1.5), Value(-0.5)
    h = (x * w).tanh()
    y = h + x
    nodes, edges = graph_nodes(y)
    # y's inputs are numbered when y is expanded, then h's subtree is walked before x's
    assert nodes[:3] == [y, h, x]
    assert nodes[3].grad_fn.name == "MulBackward" and nodes[4] is w
    assert edges == [(1, 0), (2, 0), (3, 1), (2, 3), (4, 3)]


class HelperBackward(GradFunction):
    """An op that keeps a helper Value it does not differentiate through."""

    __slots__ = ("a", "helper")

    def __init__(self, a):
        self.a = a
        self.helper = Value(42.0)

    def inputs(self):
        return (self.a,)

    def compute_and_add_gradient(self, grad):
        self.a.grad += grad

    def gradient_graph(self, grad):
        return (grad,)


def test_only_inputs_are_followed():
    x = Value(1.0)
    y = Value(x.v, HelperBackward(x))
    nodes, _ = graph_nodes(y)
    assert nodes == [y, x]
    assert "v=42" not in to_dot(y)


def test_large_graphs_are_refused_with_the_count():
    x = Value(0.1)
    y = x
    for _ in range(9):
        y = y.tanh()
    assert len(graph_nodes(y)[0]) == 10
    assert to_dot(y, max_nodes=10).count("[label=") == 10
    with pytest.raises(ValueError, match="at most max_nodes=9 Values, got 10"):
        to_dot(y, max_nodes=9)


def test_default_limit_is_500_values():
    x = Value(0.1)
    y = x
    for _ in range(500):
        y = y + 1.0
    with pytest.raises(ValueError, match="max_nodes=500 Values, got 501"):
        to_dot(y)


def test_rankdir_must_be_a_graphviz_direction():
    y, _ = neuron_graph()
    with pytest.raises(ValueError, match="Expected rankdir in .*, got 'XY'"):
        to_dot(y, rankdir="XY")


def test_root_must_be_a_value():
    with pytest.raises(TypeError, match="Expected a Value, got float"):
        to_dot(1.0)


def mlp_dot():
    model = minigrad.nn.Linear(3, 2, activation="tanh", seed=0)
    model.set_fused(False)
    out = model([Value(0.5), Value(-1.0), Value(2.0)])
    loss = minigrad.mse_loss(out, [1.0, -1.0])
    loss.backward()
    return to_dot(loss)


def test_same_text_on_every_build():
    assert mlp_dot() == mlp_dot()


def test_same_text_under_different_hash_seeds():
    script = "from tests.test_viz import mlp_dot; import sys; sys.stdout.write(mlp_dot())"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outputs = []
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        result = subprocess.run([sys.executable, "-c", script], cwd=root, env=env,
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert outputs[0].startswith("digraph minigrad {")
    assert outputs[0] == outputs[1] == outputs[2] == mlp_dot()


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
def test_render_svg_writes_dot_and_svg(tmp_path):
    y, _ = neuron_graph()
    out = render(y, tmp_path / "graph.svg")
    assert out == str(tmp_path / "graph.svg")
    svg = (tmp_path / "graph.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "TanhBackward" in svg
    assert (tmp_path / "graph.dot").read_text() == to_dot(y)
    assert sorted(os.listdir(tmp_path)) == ["graph.dot", "graph.svg"]  # no temporary files left


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
def test_render_png_from_format(tmp_path):
    y, _ = neuron_graph()
    out = render(y, tmp_path / "graph", format="png")
    assert out == str(tmp_path / "graph.png")
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "graph.dot").exists()


def test_render_without_graphviz_raises_and_keeps_the_dot_file(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    y, _ = neuron_graph()
    with pytest.raises(RuntimeError) as err:
        render(y, tmp_path / "graph.svg")
    assert str(err.value) == DOT_NOT_FOUND
    assert "apt-get install graphviz" in str(err.value)
    assert (tmp_path / "graph.dot").read_text() == to_dot(y)
    assert not (tmp_path / "graph.svg").exists()


@pytest.mark.skipif(os.name != "posix", reason="fake dot is a shell script")
def test_a_failing_dot_leaves_no_partial_picture(tmp_path, monkeypatch):
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\necho 'syntax error in line 1' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda name: str(fake))
    y, _ = neuron_graph()
    with pytest.raises(RuntimeError, match="exit code 1.*syntax error"):
        render(y, tmp_path / "graph.svg")
    assert sorted(os.listdir(tmp_path)) == ["dot", "graph.dot"]


@pytest.mark.parametrize("path, fmt, message", [
    ("graph.pdf", None, "Expected a path ending in .svg or .png"),
    ("graph", "pdf", "Expected format in"),
    ("graph.svg", "png", "Expected a .png path for format 'png'"),
])
def test_render_checks_path_and_format_before_writing(tmp_path, path, fmt, message):
    y, _ = neuron_graph()
    with pytest.raises(ValueError, match=message):
        render(y, tmp_path / path, format=fmt)
    assert os.listdir(tmp_path) == []
