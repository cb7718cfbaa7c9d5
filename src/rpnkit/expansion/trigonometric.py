"""Fourier, trigonometric, hyperbolic and inverse (arc) expansions."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..registry import EXPANSIONS
from .base import Expansion, check_finite_number, check_positive_int

__all__ = ["Fourier", "Trigonometric", "Hyperbolic", "ArcTrigonometric", "ArcHyperbolic"]


@EXPANSIONS.register("fourier")
class Fourier(Expansion):
    """Fourier features: for j = 1..N the blocks [cos(2πjx/P) | sin(2πjx/P)] (D = 2mN).

    Block-major (SPEC §2 names no layout for this row, so the blocks follow the formula's
    order): column ``(2(j-1) + s)·m + i`` is feature i's cosine (s = 0) or sine (s = 1) at
    frequency j.
    """

    def __init__(
        self, P: float = 10.0, N: int = 5, preprocess: Any = None, postprocess: Any = None  # noqa: N803
    ) -> None:
        super().__init__(preprocess, postprocess)
        self.P = check_finite_number("P", P, "Fourier", positive=True)
        self.N = check_positive_int("N", N, "Fourier")

    def hparams(self) -> dict[str, Any]:
        return {"P": self.P, "N": self.N}

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return 2 * int(m) * self.N

    def _basis(self, m: int) -> tuple[int, str]:
        return 2 * self.N, "block"

    def expand(self, x: Tensor) -> Tensor:
        j = torch.arange(1, self.N + 1, dtype=x.dtype, device=x.device)
        arg = (2 * math.pi / self.P) * j.view(1, -1, 1) * x.unsqueeze(1)  # (B, N, m)
        return torch.stack([torch.cos(arg), torch.sin(arg)], dim=2).flatten(1)

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        from ..modules import sympy_number

        out = []
        for j in range(1, self.N + 1):
            f = 2 * sympy.pi * j / sympy_number(self.P)
            out.extend(sympy.cos(f * x) for x in xs)
            out.extend(sympy.sin(f * x) for x in xs)
        return out


class _Blocks(Expansion):
    """Block-major expansion [f_1(x) | f_2(x) | f_3(x)] (D = 3m)."""

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return 3 * int(m)

    def _basis(self, m: int) -> tuple[int, str]:
        return 3, "block"

    def blocks(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def expand(self, x: Tensor) -> Tensor:
        return torch.cat(self.blocks(x), dim=1)


@EXPANSIONS.register("trigonometric")
class Trigonometric(_Blocks):
    """[sin x | cos x | tan x] (D = 3m)."""

    def blocks(self, x):
        return [torch.sin(x), torch.cos(x), torch.tan(x)]

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        return [*map(sympy.sin, xs), *map(sympy.cos, xs), *map(sympy.tan, xs)]


@EXPANSIONS.register("hyperbolic")
class Hyperbolic(_Blocks):
    """[sinh x | cosh x | tanh x] (D = 3m). Finite for |x| <= log(max float): 88.7 in float32,
    709.8 in float64."""

    def safe_abs(self, dtype):
        import math

        return math.log(float(torch.finfo(dtype).max))

    def blocks(self, x):
        return [torch.sinh(x), torch.cosh(x), torch.tanh(x)]

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        return [*map(sympy.sinh, xs), *map(sympy.cosh, xs), *map(sympy.tanh, xs)]


@EXPANSIONS.register("arc_trigonometric")
class ArcTrigonometric(_Blocks):
    """u = σ(x): [arcsin 0.99u | arccos 0.99u | arctan u] (D = 3m)."""

    def blocks(self, x):
        u = torch.sigmoid(x)
        return [torch.asin(0.99 * u), torch.acos(0.99 * u), torch.atan(u)]

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        from ..modules import sympy_sigmoid

        u = [sympy_sigmoid(x) for x in xs]
        c = sympy.Float(0.99)
        return [*(sympy.asin(c * v) for v in u), *(sympy.acos(c * v) for v in u),
                *map(sympy.atan, u)]


@EXPANSIONS.register("arc_hyperbolic")
class ArcHyperbolic(_Blocks):
    """u = σ(x): [arcsinh u | arccosh(u + 1.01) | arctanh 0.99u] (D = 3m)."""

    def blocks(self, x):
        u = torch.sigmoid(x)
        return [torch.asinh(u), torch.acosh(u + 1.01), torch.atanh(0.99 * u)]

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        from ..modules import sympy_sigmoid

        u = [sympy_sigmoid(x) for x in xs]
        return [*map(sympy.asinh, u), *(sympy.acosh(v + sympy.Float(1.01)) for v in u),
                *(sympy.atanh(sympy.Float(0.99) * v) for v in u)]
