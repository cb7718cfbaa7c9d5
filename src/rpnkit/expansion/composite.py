"""Composite expansions: nested (composition) and extended (concatenation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..registry import EXPANSIONS
from .base import Expansion
from .fused import ConcatPart, FusedPart
from .layout import Segment

__all__ = ["Nested", "Extended", "MAX_NESTED", "MAX_EXTENDED", "MAX_COMPOSITE_D"]

#: most expansions a composition / concatenation may list (counted before any is built)
MAX_NESTED = 32
MAX_EXTENDED = 256
#: a composite's D (and every intermediate width of a composition) above this is refused
#: at once: no model of that width can be held, and the exact integers would only grow
MAX_COMPOSITE_D = 2**53


def _build_list(expansions: Any, owner: str, limit: int) -> nn.ModuleList:
    if expansions is None or isinstance(expansions, (str, nn.Module)) or not isinstance(
        expansions, Sequence
    ):
        raise ConfigurationError(
            f"{owner}: 'expansions' must be a non-empty list of expansions (names, "
            f"{{name: ..., ...}} mappings or modules), got {expansions!r}"
        )
    if len(expansions) == 0:
        raise ConfigurationError(f"{owner}: 'expansions' must not be empty")
    if len(expansions) > limit:
        raise ConfigurationError(
            f"{owner}: 'expansions' lists {len(expansions):,} expansions; at most {limit} are "
            "allowed (a longer list is almost certainly a mistake: each one is built, bound "
            "and run on every forward)"
        )
    built = []
    for spec in expansions:
        if isinstance(spec, nn.Module) and not isinstance(spec, Expansion):
            raise ConfigurationError(
                f"{owner}: {type(spec).__name__} is not an rpnkit Expansion"
            )
        built.append(spec if isinstance(spec, Expansion) else EXPANSIONS.resolve(spec))
    return nn.ModuleList(built)


def _check_D(d: int, what: str) -> int:  # noqa: N802
    d = int(d)
    if d > MAX_COMPOSITE_D:
        shown = f"{d:,}" if d < 10**30 else f"about 2**{d.bit_length() - 1}"
        raise ConfigurationError(
            f"{what} is {shown}, above the limit {MAX_COMPOSITE_D:,} (2**53); use fewer or "
            "smaller expansions (lower degrees, fewer nested steps)"
        )
    return d


@EXPANSIONS.register("nested")
class Nested(Expansion):
    """Composition κ_k ∘ ... ∘ κ_1 of the listed expansions (applied first to last)."""

    def __init__(
        self, expansions: Sequence[Any] = ("identity",), preprocess: Any = None, postprocess: Any = None
    ) -> None:
        super().__init__(preprocess, postprocess)
        self.expansions = _build_list(list(expansions) if isinstance(expansions, tuple) else expansions, "Nested",
                                       MAX_NESTED)

    def calculate_D(self, m: int) -> int:  # noqa: N802
        for i, e in enumerate(self.expansions):
            m = e.calculate_D(m)
            _check_D(m, f"Nested: the width after expansion {i} ({e.registry_name})")
        return int(m)

    def bind(self, m: int) -> None:
        size = m
        for e in self.expansions:
            e.bind(size)
            size = e.calculate_D(size)
        super().bind(m)

    def expand(self, x: Tensor) -> Tensor:
        for e in self.expansions:
            x = e(x)
        return x

    def _sympy(self, xs: list[Any]) -> list[Any]:
        for e in self.expansions:
            xs = e.sympy(xs)
        return xs

    def _core_structure(self, m: int):
        """Columns compose through the chain. Every listed expansion's basis blocks are kept
        with the expansions applied before it in their chain; only the last one's blocks are
        columns of this expansion (the others' offsets are None)."""
        subs = []
        size = m
        for e in self.expansions:
            subs.append(e.structure(size))
            size = subs[-1].D
        linear = all(s.linear for s in subs)

        def columns():
            cols = subs[0].columns
            for s in subs[1:]:
                if cols is None or s.columns is None:
                    return None
                cols = tuple(frozenset().union(*(cols[j] for j in c)) for c in s.columns)
            return cols

        last = len(subs) - 1
        bases = tuple(b.shifted(0 if k == last else None, tuple(self.expansions[:k]))
                      for k, s in enumerate(subs) for b in s.bases)
        cols_known = all(s.columns_fn is not None for s in subs)
        mons = subs[0].monomials_fn if len(subs) == 1 else None
        return linear, columns if cols_known else None, mons, bases

    def _layout(self, m: int) -> list[Segment]:
        for e in self.expansions[:-1]:
            m = e.calculate_D(m)
        return self.expansions[-1].layout(m)

    def _segment_inputs(self, z: Tensor) -> list[Tensor]:
        for e in self.expansions[:-1]:
            z = e(z)
        return self.expansions[-1].segment_inputs(z)


@EXPANSIONS.register("extended")
class Extended(Expansion):
    """Concatenation [κ_1(x) | ... | κ_k(x)] of the listed expansions."""

    def __init__(
        self, expansions: Sequence[Any] = ("identity",), preprocess: Any = None, postprocess: Any = None
    ) -> None:
        super().__init__(preprocess, postprocess)
        self.expansions = _build_list(list(expansions) if isinstance(expansions, tuple) else expansions, "Extended",
                                       MAX_EXTENDED)

    def calculate_D(self, m: int) -> int:  # noqa: N802
        total = 0
        for i, e in enumerate(self.expansions):
            total += _check_D(e.calculate_D(m), f"Extended: D of expansion {i} ({e.registry_name})")
        return _check_D(total, "Extended: D")

    def bind(self, m: int) -> None:
        for e in self.expansions:
            e.bind(m)
        super().bind(m)

    def expand(self, x: Tensor) -> Tensor:
        return torch.cat([e(x) for e in self.expansions], dim=1)

    def _sympy(self, xs: list[Any]) -> list[Any]:
        return [y for e in self.expansions for y in e.sympy(xs)]

    def _core_structure(self, m: int):
        subs = [e.structure(m) for e in self.expansions]
        linear = all(s.linear for s in subs)

        def columns():
            if any(s.columns is None for s in subs):
                return None
            return [c for s in subs for c in s.columns]

        def monomials():
            return [p for s in subs for p in (s.monomials or (None,) * s.D)]

        bases, offset = [], 0
        for s in subs:
            bases.extend(b.shifted(offset) for b in s.bases)
            offset += s.D
        return linear, columns, monomials, tuple(bases)

    def _layout(self, m: int) -> list[Segment]:
        return [seg for e in self.expansions for seg in e.layout(m)]

    def fused_part(self, m: int, offset: int, total: int) -> FusedPart | None:
        """Every listed expansion's part side by side (:mod:`.fused`): no concatenation, each
        writes its own columns; None when one of them has no part."""
        if self.has_processing():
            return None
        parts, off = [], offset
        for e in self.expansions:
            p = e.fused_part(m, off, total)
            if p is None:
                return None
            parts.append(p)
            off += p.width
        return ConcatPart(parts, m, offset, total)

    def _segment_inputs(self, z: Tensor) -> list[Tensor]:
        return [t for e in self.expansions for t in e.segment_inputs(z)]
