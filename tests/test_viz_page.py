"""The interactive graph page: self-contained, the engine's numbers, both layouts, and in a real browser."""
import json
import math
import os
import re
import shutil

import pytest

import minigrad
from minigrad import Value, nn
from minigrad.viz import DOT_NOT_FOUND, backward_steps, graph_nodes, page_data, to_html

from conftest import assert_all_close

HAS_DOT = shutil.which("dot") is not None
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
CHROMEDRIVER = "/usr/bin/chromedriver"
NO_DOT = pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
LAYOUTS = ["layered", pytest.param("dot", marks=NO_DOT)]


def neuron():
    x1, x2, w1, w2, b = Value(2.0), Value(0.0), Value(-3.0), Value(1.0), Value(6.8813735870195432)
    out = (x1 * w1 + x2 * w2 + b).tanh()
    out.backward()
    return out


def mlp():
    model = nn.Sequential(nn.Linear(2, 3, activation="tanh", seed=0), nn.Linear(3, 1, seed=1))
    model.set_fused(False)
    x = [Value(0.5), Value(-1.0)]
    loss = minigrad.mse_loss(model(x), [1.0])
    loss.backward()
    return loss, model, x


def embedded_data(text):
    match = re.search(r'<script id="graph-data" type="application/json">(.*?)</script>', text, re.S)
    assert match, "no graph-data script in the page"
    return json.loads(match.group(1))


def boxes(text):
    """(node number, centre x, centre y, width, height) of every box in the page's SVG."""
    found = re.findall(r'<g class="node[^"]*" id="node-(\d+)" data-node="\d+" '
                       r'transform="translate\(([-\d.]+),([-\d.]+)\)">\s*'
                       r'<rect x="[-\d.]+" y="[-\d.]+" width="([\d.]+)" height="([\d.]+)"', text)
    return [(int(i), float(x), float(y), float(w), float(h)) for i, x, y, w, h in found]


def page_number(x):
    return float(x)  # "NaN", "Infinity" and "-Infinity" too, as the page writes them


@pytest.mark.parametrize("layout", LAYOUTS)
def test_page_is_self_contained(tmp_path, layout):
    loss, _, _ = mlp()
    text = open(to_html(loss, tmp_path / "g.html", layout=layout), encoding="utf-8").read()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "<link" not in text and "@import" not in text
    namespace = "http://www.w3.org/2000/svg"  # names the SVG dialect, never fetched
    assert set(re.findall(r"https?://[^\s\"'<>)]*", text)) == {namespace}
    assert text.count("<svg") == 1 and "<script src" not in text
    assert sorted(os.listdir(tmp_path)) == ["g.html"]  # the atomic writer leaves no temp file


@pytest.mark.parametrize("layout", LAYOUTS)
def test_embedded_numbers_are_the_engines(tmp_path, layout):
    loss, _, _ = mlp()
    nodes, edges = graph_nodes(loss)
    data = embedded_data(open(to_html(loss, tmp_path / "g.html", layout=layout), encoding="utf-8").read())
    assert data["layout"] == layout
    assert len(data["nodes"]) == len(nodes) == 40
    for i, (entry, value) in enumerate(zip(data["nodes"], nodes)):
        assert entry["op"] == ("leaf" if value.grad_fn is None else value.grad_fn.name), i
        assert entry["value"] == value.v and entry["grad"] == value.grad, i
        assert entry["grad_text"] == f"grad={value.grad:.4g}"
    assert sorted((a, b) for b, entry in enumerate(data["nodes"]) for a in entry["inputs"]) == sorted(edges)


def test_leaf_gradients_on_the_page_equal_torch(torch, tmp_path):
    loss, model, x = mlp()
    data = embedded_data(open(to_html(loss, tmp_path / "g.html"), encoding="utf-8").read())
    nodes, _ = graph_nodes(loss)
    number = {id(v): i for i, v in enumerate(nodes)}
    leaves = model.parameters() + x
    shown = [data["nodes"][number[id(v)]]["grad"] for v in leaves]

    t = [torch.tensor(v.v, dtype=torch.float64, requires_grad=True) for v in leaves]
    params, (x0, x1) = t[:-2], t[-2:]
    hidden = [torch.tanh(params[3 * k + 2] + params[3 * k] * x0 + params[3 * k + 1] * x1) for k in range(3)]
    out = params[12] + sum(params[9 + k] * hidden[k] for k in range(3))
    ((out - 1.0) ** 2).backward()
    assert_all_close(shown, [p.grad.item() for p in t], "page grads vs torch")


def test_steps_put_every_value_after_all_the_values_it_feeds():
    a, b = Value(1.5), Value(-2.0)
    c = a * b
    d = c + a        # a feeds c and d; c feeds d and e
    e = c.tanh()
    y = d * e
    y.backward()
    nodes, edges = graph_nodes(y)
    steps = backward_steps(nodes, edges)
    assert sorted(steps) == list(range(len(nodes))) and steps[0] == 0
    position = {node: k for k, node in enumerate(steps)}
    for src, dst in edges:
        assert position[dst] < position[src], f"n{src} lit before n{dst}, which it feeds"


def test_non_finite_numbers_are_written_as_javascript_reads_them(tmp_path):
    x = Value(0.0)
    y = x.log() * Value(float("nan"))
    y.backward()
    data = embedded_data(open(to_html(y, tmp_path / "g.html"), encoding="utf-8").read())
    values = {entry["op"]: entry["value"] for entry in data["nodes"]}
    assert values["LogBackward"] == "-Infinity"
    assert math.isnan(page_number(values["MulBackward"]))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_box_is_placed_and_none_overlap(tmp_path, layout):
    loss, _, _ = mlp()
    text = open(to_html(loss, tmp_path / "g.html", layout=layout), encoding="utf-8").read()
    placed = boxes(text)
    assert sorted(i for i, *_ in placed) == list(range(40))
    width, height = map(float, re.search(r'<svg id="graph"[^>]* width="(\d+)" height="(\d+)"', text).groups())
    for i, x, y, w, h in placed:
        assert w / 2 <= x <= width - w / 2 and h / 2 <= y <= height - h / 2, f"n{i} outside the picture"
    for k, (i, x, y, w, h) in enumerate(placed):
        for j, x2, y2, w2, h2 in placed[k + 1:]:
            apart = abs(x - x2) >= (w + w2) / 2 - 0.5 or abs(y - y2) >= (h + h2) / 2 - 0.5
            assert apart, f"n{i} and n{j} overlap"
    assert text.count('class="edge"') == len(graph_nodes(loss)[1])


def test_layered_layout_puts_inputs_left_of_what_they_feed(tmp_path):
    loss, _, _ = mlp()
    placed = {i: x for i, x, *_ in boxes(open(to_html(loss, tmp_path / "g.html", layout="layered")).read())}
    for src, dst in graph_nodes(loss)[1]:
        assert placed[src] < placed[dst]


def test_auto_layout_without_graphviz_is_layered(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    data = embedded_data(open(to_html(neuron(), tmp_path / "g.html"), encoding="utf-8").read())
    assert data["layout"] == "layered"
    with pytest.raises(RuntimeError) as err:
        to_html(neuron(), tmp_path / "h.html", layout="dot")
    assert str(err.value) == DOT_NOT_FOUND
    assert not (tmp_path / "h.html").exists()


def test_same_bytes_on_every_build(tmp_path):
    to_html(mlp()[0], tmp_path / "a.html")
    to_html(mlp()[0], tmp_path / "b.html")
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()


def test_title_is_escaped(tmp_path):
    text = open(to_html(neuron(), tmp_path / "g.html", title="a </script><b>"), encoding="utf-8").read()
    assert "<title>a &lt;/script&gt;&lt;b&gt;</title>" in text
    assert text.count("</script>") == 2  # the data and the program


def test_gradients_from_create_graph_are_shown_by_their_payload():
    x = Value(0.5)
    y = x ** 3
    y.backward(create_graph=True)
    _, _, data = page_data(y)
    assert data["nodes"][1]["grad"] == 0.75


@pytest.mark.parametrize("kwargs, error, message", [
    ({"layout": "circle"}, ValueError, "Expected layout in .*, got 'circle'"),
    ({"max_nodes": 39}, ValueError, "at most max_nodes=39 Values, got 40"),
])
def test_bad_arguments_write_nothing(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        to_html(mlp()[0], tmp_path / "g.html", **kwargs)
    assert os.listdir(tmp_path) == []


# In a real browser: headless Chromium from the system, driven by Selenium through the system chromedriver.

def _browser_missing():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if CHROMIUM is None or not os.path.exists(CHROMEDRIVER):
        return "Chromium is not installed (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _text(driver, element_id):
    return driver.find_element("id", element_id).text


def _filled(driver):
    return [int(e.get_attribute("data-node")) for e in driver.find_elements("css selector", ".node.filled")]


PAGE_STATE = """
const text = (id) => document.getElementById(id).textContent;
return {filled: Array.from(document.querySelectorAll(".node.filled"), (e) => Number(e.dataset.node)),
        title: text("info-title"), value: text("info-value"), grad: text("info-grad"),
        labels: Array.from(document.querySelectorAll(".node .grad"), (e) => e.textContent)};
"""


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("build", [neuron, lambda: mlp()[0]], ids=["neuron", "mlp"])
def test_browser_steps_show_the_engines_gradients(browser, tmp_path, layout, build):
    root = build()
    nodes, edges = graph_nodes(root)
    browser.get("file://" + str(to_html(root, tmp_path / "g.html", layout=layout)))
    assert _filled(browser) == [] and _text(browser, "status").startswith(f"step 0 of {len(nodes)}")
    step = browser.find_element("id", "step")
    lit = []
    for k in range(1, len(nodes) + 1):
        step.click()
        state = browser.execute_script(PAGE_STATE)
        now = set(state["filled"]) - set(lit)
        assert len(now) == 1 and len(state["filled"]) == k, f"step {k} lit {sorted(now)}"
        node = now.pop()
        lit.append(node)
        consumers = {dst for src, dst in edges if src == node}
        assert consumers <= set(lit[:-1]), f"n{node} lit before the Values it feeds"
        assert state["title"].startswith(f"n{node}")
        assert float(state["grad"]) == nodes[node].grad, f"n{node} at step {k}"
        assert float(state["value"]) == nodes[node].v
        assert state["labels"][node] == f"grad={nodes[node].grad:.4g}"
        assert state["labels"].count("grad=?") == len(nodes) - k
    assert step.get_attribute("disabled") is not None
    browser.find_element("id", "back").click()
    assert set(_filled(browser)) == set(lit[:-1])
    browser.find_element("id", "reset").click()
    assert _filled(browser) == []
    assert set(browser.execute_script(PAGE_STATE)["labels"]) == {"grad=?"}


def test_browser_hover_and_click_show_a_node(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    root = neuron()
    nodes, _ = graph_nodes(root)
    browser.get("file://" + str(to_html(root, tmp_path / "g.html")))
    leaf = next(i for i, v in enumerate(nodes) if v.grad_fn is None and v.v == -3.0)  # w1
    ActionChains(browser).move_to_element(browser.find_element("id", f"node-{leaf}")).perform()
    assert _text(browser, "info-op") == "leaf" and float(_text(browser, "info-value")) == -3.0
    assert _text(browser, "info-grad").startswith("not yet (complete at step")
    browser.find_element("id", "end").click()
    browser.find_element("id", f"node-{leaf}").click()
    ActionChains(browser).move_to_element(browser.find_element("id", "status")).perform()  # hover away
    assert float(_text(browser, "info-grad")) == nodes[leaf].grad == 2.0 * (1 - root.v ** 2)
    assert "selected" in browser.find_element("id", f"node-{leaf}").get_attribute("class")
