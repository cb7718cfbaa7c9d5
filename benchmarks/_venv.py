"""Run a benchmark script with the project's ``.venv`` when started from a fresh shell.

``python benchmarks/x.py`` outside the virtual environment has neither torch nor rpnkit; the
scripts import this module first, which re-executes them with ``.venv/bin/python`` when it
exists (``make setup`` creates it) and otherwise exits with a one-line hint.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def ensure() -> None:
    if importlib.util.find_spec("torch") and importlib.util.find_spec("rpnkit"):
        return
    venv = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"
    if venv.exists() and Path(sys.prefix).resolve() != venv.parent.parent.resolve():
        os.execv(str(venv), [str(venv), *sys.argv])
    sys.exit("rpnkit is not installed here: run `make setup` (creates .venv), then "
             "`.venv/bin/python " + " ".join(sys.argv) + "`")


ensure()
