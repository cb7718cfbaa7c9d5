"""Composite expansions: nested (composition) and extended (concatenation)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..registry import EXPANSIONS
from .base import Expansion
from .layout import Segment

__all__ = ["Nested", "Extended"]


def _build_list(expansions: Any, owner: str) -> nn.ModuleList:
    if expansions is None or isinstance(expansions, (str, nn.Module)) or not isinstance(
        expansions, Sequence
    ):
        raise ConfigurationError(
            f"{owner}: 'expansions' must be a non-empty list of expansions (names, "
            f"{{name: ..., ...}} mappings or modules), got {expansions!r}"
        )
    if len(expansions) == 0:
        raise ConfigurationError(f"{owner}: 'expansions' must not be empty")
    built = []
    for spec in expansions:
        if isinstance(spec, nn.Module) and not isinstance(spec, Expansion):
            raise ConfigurationError(
                f"{owner}: {type(spec).__name__} is not an rpnkit Expansion"
            )
        built.append(spec if isinstance(spec, Expansion) else EXPANSIONS.resolve(spec))
    return nn.ModuleList(built)


@EXPANSIONS.register("nested")
class Nested(Expansion):
    """Composition κ_k ∘ ... ∘ κ_1 of the listed expansions (applied first to last)."""

    def __init__(
        self, expansions: Sequence[Any] = ("identity",), preprocess: Any = None, postprocess: Any = None
    ) -> None:
        super().__init__(preprocess, postprocess)
        self.expansions = _build_list(list(expansions) if isinstance(expansions, tuple) else expansions, "Nested")

    def calculate_D(self, m: int) -> int:  # noqa: N802
        for e in self.expansions:
            m = e.calculate_D(m)
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
        self.expansions = _build_list(list(expansions) if isinstance(expansions, tuple) else expansions, "Extended")

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return sum(e.calculate_D(m) for e in self.expansions)

    def bind(self, m: int) -> None:
        for e in self.expansions:
            e.bind(m)
        super().bind(m)

    def expand(self, x: Tensor) -> Tensor:
        return torch.cat([e(x) for e in self.expansions], dim=1)

    def _sympy(self, xs: list[Any]) -> list[Any]:
        return [y for e in self.expansions for y in e.sympy(xs)]

    def _layout(self, m: int) -> list[Segment]:
        return [seg for e in self.expansions for seg in e.layout(m)]

    def _segment_inputs(self, z: Tensor) -> list[Tensor]:
        return [t for e in self.expansions for t in e.segment_inputs(z)]
