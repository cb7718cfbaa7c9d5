"""The README's quickstart and component catalog stay in sync with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import rpnkit
from rpnkit import catalog

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_catalog_block_matches_the_registry():
    text = _readme()
    match = re.search(re.escape(catalog.START) + r"\n(.*?)" + re.escape(catalog.END), text, re.DOTALL)
    assert match, "README.md lacks the catalog markers"
    assert match.group(1) == catalog.render_catalog(), (
        "README catalog is stale: run `python -m rpnkit.catalog --update README.md`"
    )
    assert "## Component catalog" in text.split(catalog.START)[0]


def test_quickstart_opens_with_make_run_then_make_test():
    text = _readme()
    section = text.split("## Quickstart", 1)[1]
    block = re.search(r"```[a-z]*\n(.*?)```", section, re.DOTALL).group(1)
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    commands = [c for c in commands if c]
    assert commands[:2] == ["make run", "make test"]
    assert text.index("## Quickstart") < text.index("## Component catalog")


def test_catalog_lists_every_component_once():
    table = catalog.render_catalog()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    comps = rpnkit.list_components()
    assert len(rows) == sum(len(v) for v in comps.values())
    for kind, names in comps.items():
        for name in names:
            assert sum(line.startswith(f"| {kind} | `{name}` |") for line in rows) == 1
    assert "| expansion | `bspline` | `rpnkit.expansion.BSpline` |" in table
    assert set(comps) == {"expansion", "reconciliation", "remainder", "interdependence", "fusion",
                          "compression"}
    assert "| interdependence | `graph` | `rpnkit.interdependence.GraphInterdependence` |" in table
    assert "| fusion | `learned` | `rpnkit.fusion.LearnedFusion` |" in table
    assert "`length=1`, `hops=None`, `direction='forward'`" in table  # chain's parameters
    assert "`range=(-1.0, 1.0)`, `t=5`, `d=3`" in table
    assert "`r=2`" in table
    assert all(line.count(" | ") == 4 for line in rows)  # pipes in docs are escaped


def test_update_and_main(tmp_path, capsys):
    path = tmp_path / "README.md"
    path.write_text(f"# x\n\n{catalog.START}\nold\n{catalog.END}\ntail\n", encoding="utf-8")
    assert catalog.main(["--update", str(path)]) == 0
    assert capsys.readouterr().out.strip().endswith("updated")
    text = path.read_text(encoding="utf-8")
    assert text == f"# x\n\n{catalog.START}\n{catalog.render_catalog()}{catalog.END}\ntail\n"
    assert catalog.update_readme(path) is False
    assert catalog.main([]) == 0
    assert capsys.readouterr().out == catalog.render_catalog()
    with pytest.raises(ValueError, match="markers"):
        catalog.replace_block("no markers here", "x")


def test_one_file_component_example_runs(tmp_path):
    """The README's "Adding a component in one file" example takes the low-rank fast path."""
    import subprocess
    import sys

    section = _readme().split("### Adding a component in one file", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "path: lowrank-bilinear"
