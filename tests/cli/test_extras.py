"""Extras that fit: each optional feature names its extra in one line when the package is
missing (simulated with sys.modules[name] = None), and pyproject's extras hold them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[2]
SRC = str(ROOT / "src")

# runs `rpnkit ARGS` with the modules in BLOCK made unimportable
RUN_WITHOUT = """
import json, sys
for name in json.loads(sys.argv[1]):
    sys.modules[name] = None
from rpnkit.cli import main
sys.exit(main(json.loads(sys.argv[2])))
"""


def _without(block: list[str], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RPNKIT_DEBUG", None)
    return subprocess.run([sys.executable, "-c", RUN_WITHOUT, json.dumps(block),
                           json.dumps(list(args))], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained with plots on, without matplotlib."""
    tmp = tmp_path_factory.mktemp("extras")
    cfg = {"seed": 0, "data": {"name": "function", "expression": "x0*x1",
                               "ranges": [[-1, 1], [-1, 1]], "n_samples": 100},
           "model": {"dims": [2, 1], "expansion": "taylor"}, "train": {"epochs": 3},
           "plots": True}
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = tmp / "run"
    res = _without(["matplotlib"], "train", str(path), "--out", str(out))
    return res, out


def test_train_without_matplotlib_skips_plots_with_one_warning(trained):
    res, out = trained
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "ModuleNotFoundError" not in res.stderr
    skipped = [ln for ln in res.stderr.splitlines() if "plots skipped" in ln]
    assert skipped == ["rpnkit: plots skipped: matplotlib is not installed "
                       "(pip install 'rpnkit[plots]', or set plots: false)"]
    assert (out / "model.pt").is_file()
    assert (out / "metrics.json").is_file()
    assert not list(out.glob("*.png"))


def test_plot_without_matplotlib_exits_2_naming_the_extra(trained):
    _, out = trained
    res = _without(["matplotlib"], "plot", str(out))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "rpnkit: error: rpnkit plot needs matplotlib, which is not installed: "
        "pip install 'rpnkit[plots]'"]
    assert not (out / "model_view.png").exists()


def test_make_plots_without_matplotlib_returns_no_paths(monkeypatch, caplog, tmp_path):
    import logging

    from rpnkit.data.streaming import MissingPackageError
    from rpnkit.training.plots import make_plots, require_matplotlib

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with caplog.at_level(logging.WARNING, logger="rpnkit.training.plots"):
        assert make_plots(tmp_path, None, None) == []
    assert [r.getMessage() for r in caplog.records] == [
        "plots skipped: matplotlib is not installed (pip install 'rpnkit[plots]', or set "
        "plots: false)"]
    with pytest.raises(MissingPackageError, match=r"drawing needs matplotlib.*rpnkit\[plots\]"):
        require_matplotlib("drawing")


def test_symbolic_polish_without_scipy_names_the_extra(monkeypatch):
    from rpnkit.symbolic_fit import fit_function

    u = np.linspace(-2, 2, 50)
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    with pytest.warns(RuntimeWarning, match=r"needs scipy.*pip install 'rpnkit\[symbolic\]'"):
        best, _ = fit_function(u, np.sin(1.3 * u) + 0.5, library=["sin"])
    assert best.primitive == "sin"  # still fitted, without the polish


def test_pyproject_extras_and_dev():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]

    def names(reqs):
        return {r.split(">")[0].split("=")[0].split("<")[0].strip() for r in reqs}

    want = {"plots": {"matplotlib"}, "sklearn": {"scikit-learn"}, "symbolic": {"sympy", "scipy"},
            "parquet": {"pyarrow"}, "onnx": {"onnx", "onnxscript", "onnxruntime"},
            "tensorboard": {"tensorboard"}}
    for extra, pkgs in want.items():
        assert names(extras[extra]) == pkgs, extra
    every = set().union(*want.values())
    assert every <= names(extras["dev"])
    assert every <= names(extras["all"])
