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


# ----------------------------------------------------------------------------- every block
# Every fenced python / bash / yaml block of the README runs as written, in document order,
# in one empty folder that has the clone's `.venv` and `examples` (the state after `make
# run`): python blocks with the venv's python, bash blocks with `.venv/bin` first on PATH
# (as after `source .venv/bin/activate`), yaml blocks validated as configs (a block that
# holds only some sections, e.g. `model:`, replaces those sections of a minimal config).
# A block that cannot run here is preceded by `<!-- no-run: reason -->`.
ROOT = README.parent
NO_RUN = re.compile(r"<!--\s*no-run:\s*(.+?)\s*-->\s*$")
BASE_CONFIG = {"data": {"name": "function", "expression": "x0", "ranges": [[-1, 1]]},
               "model": {"dims": [1, 1]}}


def readme_blocks(text: str | None = None) -> list[tuple[int, str, str, str | None]]:
    """(line, language, code, no-run reason) of every fenced block, in order."""
    text = _readme() if text is None else text
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        reason = NO_RUN.match(prev.strip())
        blocks.append((start + 1, lang, "\n".join(lines[start + 1:j]) + "\n",
                       reason.group(1) if reason else None))
        i = j + 1
    return blocks


def test_readme_blocks_are_found_and_few_are_skipped():
    blocks = readme_blocks()
    assert {lang for _, lang, _, _ in blocks} <= {"python", "bash", "yaml"}
    skipped = [(line, why) for line, _, _, why in blocks if why]
    assert len(blocks) >= 18
    assert len(skipped) <= 3, skipped  # Quickstart (make test), Install (network), torchrun
    assert all(len(why) > 10 for _, why in skipped)
    # the fragments of the old README are gone
    text = _readme()
    assert "cfg.yaml --budget" not in text
    assert "export_run(run, \"torchscript\")" not in text
    sample = "x\n<!-- no-run: needs a GPU -->\n```bash\nnvidia-smi\n```\n```python\nprint(1)\n```\n"
    assert readme_blocks(sample) == [(3, "bash", "nvidia-smi\n", "needs a GPU"),
                                     (6, "python", "print(1)\n", None)]


def _yaml_config(code: str, path: Path) -> None:
    import yaml

    from rpnkit.config import load_config

    raw = yaml.safe_load(code)
    assert isinstance(raw, dict), code
    full = {**BASE_CONFIG, **raw}
    path.write_text(yaml.safe_dump(full), encoding="utf-8")
    load_config(path)  # a ConfigurationError names the bad key


def test_every_readme_block_runs_as_written(tmp_path):
    import os
    import subprocess
    import sys

    work = tmp_path / "newcomer"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv")
    (work / "examples").symlink_to(ROOT / "examples")
    venv_bin = ROOT / ".venv" / "bin"
    python = venv_bin / "python" if (venv_bin / "python").exists() else Path(sys.executable)
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
           "MPLBACKEND": "Agg", "RPNKIT_PROGRESS_SECONDS": "600"}
    env.pop("PYTHONPATH", None)
    ran = 0
    for k, (line, lang, code, why) in enumerate(readme_blocks()):
        if why:
            continue
        where = f"README.md line {line} ({lang})"
        if lang == "yaml":
            _yaml_config(code, tmp_path / f"block{k}.yaml")
        elif lang == "python":
            script = tmp_path / f"block{k}.py"
            script.write_text(code, encoding="utf-8")
            res = subprocess.run([str(python), str(script)], cwd=work, env=env,
                                 capture_output=True, text=True, timeout=900)
            assert res.returncode == 0, f"{where}:\n{res.stderr[-3000:]}"
        else:
            res = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env,
                                 capture_output=True, text=True, timeout=900)
            assert res.returncode == 0, f"{where}:\n{res.stderr[-3000:]}"
        ran += 1
    assert ran >= 15
    # what the blocks promise exists
    assert (work / "runs" / "iris" / "model.pt2").is_file()
    assert (work / "runs" / "f1" / "model.onnx").is_file()
    assert (work / "preds.csv").read_text().splitlines()[0] == "y"
