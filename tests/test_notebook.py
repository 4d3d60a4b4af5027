"""The README's library example, run as a notebook cell in a Jupyter kernel (nbclient): lambdas
defined in a cell reach the workers, the progress bar renders, and the run folder is kept."""
import json
import os

import pytest

from helpers_parallel import ROOT

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")


def readme_example():
    """The first Python block of the README's "The trainer" section."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## The trainer"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("```", start)]


def test_readme_library_example_runs_in_a_jupyter_kernel(tmp_path):
    out = str(tmp_path / "run")
    code = readme_example()
    small = code.replace('out="runs/first"', f"out={out!r}").replace("epochs=1,", "epochs=1, max_steps=6,")
    assert out in small and "max_steps=6" in small, "the README's example changed; update this test"
    cells = [nbformat.v4.new_code_cell(f"import sys\nsys.path.insert(0, {ROOT!r})"), nbformat.v4.new_code_cell(small)]
    notebook = nbformat.v4.new_notebook(cells=cells)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    lines = "".join(o.get("text", "") for o in notebook.cells[1].outputs
                    if o.output_type == "stream" and o.name == "stdout").splitlines()
    with open(os.path.join(out, "model.json")) as f:
        ckpt = json.load(f)
    accuracy, sha = lines[-1].split()[0], lines[-1].split()[-1]
    assert ckpt["step"] == 6 and sha == ckpt["parameters_sha256"]
    assert 0 <= float(accuracy) <= 1
    assert any(line.startswith("epoch") and "step      6" in line for line in lines)  # the epoch line
    assert sorted(name for name in os.listdir(out) if name.endswith(".csv")) == ["test_stats.csv", "train_stats.csv"]
