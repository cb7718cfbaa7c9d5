"""``rpnkit --version``, ``--help`` and ``list`` answer without importing torch or matplotlib,
and the generated listing that ``list`` prints equals the live registries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rpnkit.cli.listing import render, source, static

SRC = str(Path(__file__).resolve().parents[2] / "src")

# Runs `python -m rpnkit ARGS` in this interpreter, then reports the heavy modules it loaded.
PROBE = """
import contextlib, io, json, runpy, sys
sys.argv = ["rpnkit", *json.loads(sys.argv[1])]
out = io.StringIO()
code = 0
with contextlib.redirect_stdout(out):
    try:
        runpy.run_module("rpnkit", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code or 0
heavy = sorted(m for m in ("torch", "matplotlib", "numpy", "scipy", "sympy", "sklearn")
               if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy, "out": out.getvalue()}))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _probe(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(args))], capture_output=True,
                       text=True, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("list",), ()])
def test_cli_answers_without_torch_or_matplotlib(args):
    res = _probe(*args)
    assert res["code"] == 0
    assert res["heavy"] == [], f"rpnkit {' '.join(args)} imported {res['heavy']}"
    if args == ("--version",):
        import rpnkit

        assert res["out"].strip() == f"rpnkit {rpnkit.__version__}"
    elif args == ("list",):
        assert res["out"].strip() == render(static()).strip()
        for word in ("taylor", "lorr", "graph_pagerank", "learned", "adamw", "r2"):
            assert word in res["out"]
    else:
        assert "train" in res["out"]
        assert "search" in res["out"]


def test_import_rpnkit_is_torch_free_until_a_model_is_used():
    code = ("import sys, rpnkit\n"
            "assert 'torch' not in sys.modules, 'import rpnkit loaded torch'\n"
            "m = rpnkit.RPN.from_dims([2, 1], expansion='taylor')\n"
            "assert 'torch' in sys.modules\n"
            "from rpnkit.registry import EXPANSIONS\n"
            "assert 'taylor' in EXPANSIONS and 'bspline' in EXPANSIONS.names()\n"
            "from rpnkit import *\n"
            "print(HeadSpec.__name__, RPNHead.__name__, len(list_components()['fusion']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[:2] == ["HeadSpec", "RPNHead"]


def test_a_fresh_registry_lookup_loads_its_components():
    """The component registries fill themselves on the first lookup (import rpnkit is lazy)."""
    code = ("from rpnkit.registry import EXPANSIONS, RECONCILIATIONS, REMAINDERS, INTERDEPENDENCES, FUSIONS\n"
            "print(*(len(r.names()) for r in (EXPANSIONS, RECONCILIATIONS, REMAINDERS, "
            "INTERDEPENDENCES, FUSIONS)))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                       timeout=120)
    assert r.returncode == 0, r.stderr
    counts = [int(c) for c in r.stdout.split()]
    assert counts == [len(rows) for _, rows in static()[:5]]
    assert all(c > 0 for c in counts)


def test_static_listing_equals_the_live_registries():
    """The table `rpnkit list` prints cannot go stale: it must equal the registries read live,
    in a fresh interpreter (no names registered by other tests)."""
    code = "import json; from rpnkit.cli.listing import live; print(json.dumps(live()))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                       timeout=300)
    assert r.returncode == 0, r.stderr
    live = tuple((title, tuple(tuple(row) for row in rows))
                 for title, rows in json.loads(r.stdout))
    stale = [(title, sorted(set(rows) ^ set(dict(static()).get(title, ()))))
             for title, rows in live if rows != dict(static()).get(title)]
    assert live == static(), (
        "src/rpnkit/cli/_listing.py is stale; regenerate it with `python -m rpnkit.cli.listing`. "
        f"Differences: {stale}"
    )
    assert source(live) == (Path(SRC) / "rpnkit" / "cli" / "_listing.py").read_text(encoding="utf-8")
