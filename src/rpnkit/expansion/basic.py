"""Identity, reciprocal and linear expansions."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..registry import EXPANSIONS
from .base import Expansion, check_finite_number

__all__ = ["Identity", "Reciprocal", "Linear"]


@EXPANSIONS.register("identity")
class Identity(Expansion):
    """κ(x) = x (D = m)."""

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return int(m)

    def expand(self, x: Tensor) -> Tensor:
        return x

    def _basis(self, m: int) -> tuple[int, str]:
        return 1, "feature"

    def _is_linear(self) -> bool:
        return type(self).expand is Identity.expand

    def _sympy(self, xs: list[Any]) -> list[Any]:
        return list(xs)


@EXPANSIONS.register("reciprocal")
class Reciprocal(Expansion):
    """κ(x) = 1/x with |x| < eps clamped to ±eps (sign kept, 0 -> +eps); never mutates x."""

    def __init__(self, eps: float = 1e-6, preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__(preprocess, postprocess)
        self.eps = check_finite_number("eps", eps, "Reciprocal", positive=True)

    def hparams(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return int(m)

    def _basis(self, m: int) -> tuple[int, str]:
        return 1, "feature"

    def expand(self, x: Tensor) -> Tensor:
        sign = torch.where(x < 0, -torch.ones_like(x), torch.ones_like(x))
        safe = torch.where(x.abs() < self.eps, sign * self.eps, x)
        return 1.0 / safe

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        from ..modules import sympy_number

        eps = sympy_number(self.eps)
        return [
            sympy.Piecewise((1 / x, sympy.Abs(x) >= eps), (-1 / eps, x < 0), (1 / eps, True))
            for x in xs
        ]


@EXPANSIONS.register("linear")
class Linear(Expansion):
    """κ(x) = c·x (D = m)."""

    def __init__(self, c: float = 1.0, preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__(preprocess, postprocess)
        self.c = check_finite_number("c", c, "Linear")

    def hparams(self) -> dict[str, Any]:
        return {"c": self.c}

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return int(m)

    def expand(self, x: Tensor) -> Tensor:
        return self.c * x

    def _basis(self, m: int) -> tuple[int, str]:
        return 1, "feature"

    def _is_linear(self) -> bool:
        return type(self).expand is Linear.expand

    def _sympy(self, xs: list[Any]) -> list[Any]:
        from ..modules import sympy_number

        c = sympy_number(self.c)
        return [c * x for x in xs]
