"""Installing is enough: minigrad imports without any third-party package, setup.cfg installs what the
trainer needs, and a missing optional package (dask, matplotlib) is one line naming its extra."""
import os
import subprocess
import sys

from helpers_parallel import ROOT


def python(code, *blocked):
    """Run ``code`` in a fresh interpreter where the ``blocked`` packages cannot be imported."""
    block = "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    return subprocess.run([sys.executable, "-c", f"import sys\n{block}{code}"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})


def test_import_minigrad_needs_no_third_party_package():
    done = python("import minigrad, minigrad.nn, minigrad.checkpoint, minigrad.optimizer\n"
                  "print(minigrad.Value(2.0) * 3)", "numpy", "torch", "psutil", "tqdm", "cloudpickle", "matplotlib")
    assert done.returncode == 0, done.stderr
    assert "Value" in done.stdout or "6.0" in done.stdout


def script(*args):
    return ("import runpy\nsys.argv = ['train_parallel.py', " + ", ".join(repr(str(a)) for a in args) + "]\n"
            "sys.exit(runpy.run_path('scripts/train_parallel.py', run_name='__main__'))")


def test_missing_dask_is_one_line_naming_the_extra(tmp_path):
    done = python(script("--backend", "dask", "--workers", "1", "--max-steps", "1", "--quiet", "--out", tmp_path),
                  "dask", "distributed")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ('error: dask.distributed is not installed; '
                                   'install it with: pip install "minigrad[distributed]"')


def test_missing_matplotlib_is_one_line_and_the_run_finishes(tmp_path):
    done = python(script("--workers", "0", "--max-steps", "2", "--quiet", "--out", tmp_path), "matplotlib")
    assert done.returncode == 0, done.stderr
    assert 'pictures: none (matplotlib is not installed: pip install "minigrad[plots]")' in done.stdout
    assert "Traceback" not in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["model.json", "test_stats.csv", "train_stats.csv"]


def test_setup_cfg_installs_what_the_trainer_needs():
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    required = [line.split(";")[0].split("<")[0].strip() for line in cfg["options"]["install_requires"].split("\n")]
    assert {"numpy", "cloudpickle", "psutil", "tqdm"} <= set(required)
