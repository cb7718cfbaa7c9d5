"""The package builds as a wheel that installs into a fresh venv and works there.

Slow (a venv and an install, ~1-2 minutes): ``pytest -m slow tests/test_wheel.py``; CI runs it
after the default suite (``.ci/run``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, check=True, **kw)


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp_path / "dist"), str(ROOT)])
    wheel = next((tmp_path / "dist").glob("rpnkit-*.whl"))
    t_build = time.perf_counter() - t0
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    torch_spec = os.environ.get("RPNKIT_TEST_TORCH", "torch==2.13.0")
    _run([str(py), "-m", "pip", "install", "-q", torch_spec])
    _run([str(py), "-m", "pip", "install", "-q", str(wheel)])
    t_install = time.perf_counter() - t0 - t_build
    exe = venv / "bin" / "rpnkit"
    assert "rpnkit 0.1.0" in _run([str(exe), "--version"]).stdout
    out = _run([str(exe), "run"], cwd=tmp_path).stdout
    assert "RPN-Ext" in out
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data: {name: function, expression: 'x0*x1', ranges: [[-1, 1], [-1, 1]], "
                   "n_samples: 300}\nmodel: {dims: [2, 1], expansion: taylor}\n"
                   "train: {epochs: 500, optimizer: {name: adam, lr: 0.05}}\nplots: false\n",
                   encoding="utf-8")
    _run([str(exe), "train", str(cfg), "--out", str(tmp_path / "run"), "--quiet"], cwd=tmp_path)
    (tmp_path / "x.csv").write_text("x0,x1\n0.5,0.5\n-0.5,0.5\n", encoding="utf-8")
    preds = _run([str(exe), "predict", str(tmp_path / "run"), str(tmp_path / "x.csv")]).stdout
    values = [float(v) for v in preds.split()[1:]]
    assert values[0] == pytest.approx(0.25, abs=0.03)
    assert values[1] == pytest.approx(-0.25, abs=0.03)
    # the core installs without the optional packages
    listed = _run([str(py), "-m", "pip", "list"]).stdout.lower()
    assert "scikit-learn" not in listed  # (sympy comes with torch itself)
    assert "matplotlib" not in listed
    print(f"wheel build {t_build:.1f}s, venv + install {t_install:.1f}s, "
          f"total {time.perf_counter() - t0:.1f}s")
