"""The component catalog, rendered from the registries as a markdown table.

``python -m rpnkit.catalog`` prints the table; ``python -m rpnkit.catalog --update README.md``
rewrites the block between ``<!-- catalog:start -->`` and ``<!-- catalog:end -->`` in place.
The README test compares that block with :func:`render_catalog`, so it cannot drift.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from .registry import (
    COMPRESSIONS,
    EXPANSIONS,
    FUSIONS,
    INTERDEPENDENCES,
    RECONCILIATIONS,
    REMAINDERS,
    Registry,
)

__all__ = ["START", "END", "render_catalog", "replace_block", "update_readme", "main"]

START = "<!-- catalog:start -->"
END = "<!-- catalog:end -->"

_KINDS: tuple[tuple[str, Registry], ...] = (
    ("expansion", EXPANSIONS),
    ("reconciliation", RECONCILIATIONS),
    ("remainder", REMAINDERS),
    ("interdependence", INTERDEPENDENCES),  # ξ, RPN 2
    ("fusion", FUSIONS),  # channel / head fusion objects
    ("compression", COMPRESSIONS),  # κ with D <= m
)
#: keyword arguments every expansion accepts; listed once under the table
_COMMON = ("preprocess", "postprocess")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _params(registry: Registry, name: str) -> str:
    items = [
        f"`{key}={value!r}`"
        for key, value in registry.parameters(name).items()
        if key not in _COMMON
    ]
    return _cell(", ".join(items)) if items else "–"


def render_catalog() -> str:
    """Markdown table of every registered component: kind, name, class, doc, parameters.

    Rows are grouped by kind and sorted by name, so the table does not depend on the order in
    which modules happen to register their classes.
    """
    lines = [
        "| kind | name | class | description | parameters (defaults) |",
        "|---|---|---|---|---|",
    ]
    for kind, registry in _KINDS:
        for name in sorted(registry.names()):  # independent of import order
            cls = registry.get(name)
            lines.append(
                f"| {kind} | `{name}` | `rpnkit.{kind}.{cls.__name__}` | "
                f"{_cell(registry.describe(name))} | {_params(registry, name)} |"
            )
    lines.append("")
    lines.append(
        "Every expansion also accepts `preprocess` and `postprocess` (module lists, registered "
        "as submodules). Build any row with `rpnkit.build_<kind>(name, **parameters)`."
    )
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str) -> str:
    """Return ``text`` with the catalog markers' content replaced by ``block``."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), flags=re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"catalog markers {START} ... {END} not found")
    return pattern.sub(lambda _: f"{START}\n{block}{END}", text, count=1)


def update_readme(path: str | Path) -> bool:
    """Rewrite the catalog block of ``path``; return True when the file changed."""
    path = Path(path)
    old = path.read_text(encoding="utf-8")
    new = replace_block(old, render_catalog())
    if new != old:
        path.write_text(new, encoding="utf-8")
    return new != old


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rpnkit.catalog", description=__doc__)
    parser.add_argument("--update", metavar="README", help="rewrite the catalog block of this file")
    args = parser.parse_args(argv)
    if args.update:
        changed = update_readme(args.update)
        sys.stdout.write(f"{args.update}: {'updated' if changed else 'already up to date'}\n")
    else:
        sys.stdout.write(render_catalog())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
