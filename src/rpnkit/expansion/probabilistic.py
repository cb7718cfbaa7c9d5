"""Probabilistic expansions: naive (per-feature) log-densities and combinatorial ones."""

from __future__ import annotations

import itertools
import math
from math import comb
from typing import Any

import torch
from torch import Tensor

from ..registry import EXPANSIONS
from .base import Expansion, check_finite_number, check_positive_int

__all__ = [
    "NaiveNormal",
    "NaiveLaplace",
    "NaiveCauchy",
    "NaiveGamma",
    "NaiveExponential",
    "NaiveChi2",
    "Combinatorial",
    "CombinatorialNormal",
    "subset_indices",
]

_LOG_2PI = math.log(2 * math.pi)


class _Naive(Expansion):
    """Elementwise log-density (D = m)."""

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return int(m)

    def _basis(self, m: int) -> tuple[int, str]:
        return 1, "feature"


class _LocScale(_Naive):
    def __init__(
        self, loc: float = 0.0, scale: float = 1.0, preprocess: Any = None, postprocess: Any = None
    ) -> None:
        super().__init__(preprocess, postprocess)
        owner = type(self).__name__
        self.loc = check_finite_number("loc", loc, owner)
        self.scale = check_finite_number("scale", scale, owner, positive=True)

    def hparams(self) -> dict[str, Any]:
        return {"loc": self.loc, "scale": self.scale}


@EXPANSIONS.register("naive_normal")
class NaiveNormal(_LocScale):
    """log N(x; loc, scale²) elementwise (default N(0, 1))."""

    def expand(self, x):
        z = (x - self.loc) / self.scale
        return -0.5 * z * z - math.log(self.scale) - 0.5 * _LOG_2PI

    def _sympy(self, xs: list[Any]) -> list[Any]:
        from ..modules import sympy_number

        s = sympy_number(self.scale)
        const = sympy_number(-math.log(self.scale) - 0.5 * _LOG_2PI)
        return [-((x - sympy_number(self.loc)) / s) ** 2 / 2 + const for x in xs]


@EXPANSIONS.register("naive_laplace")
class NaiveLaplace(_LocScale):
    """log Laplace(x; loc, scale) elementwise (default Laplace(0, 1))."""

    def expand(self, x):
        return -(x - self.loc).abs() / self.scale - math.log(2 * self.scale)

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        from ..modules import sympy_number

        loc, scale = sympy_number(self.loc), sympy_number(self.scale)
        const = sympy_number(-math.log(2 * self.scale))
        return [-sympy.Abs(x - loc) / scale + const for x in xs]


@EXPANSIONS.register("naive_cauchy")
class NaiveCauchy(_LocScale):
    """log Cauchy(x; loc, scale) elementwise (default Cauchy(0, 1))."""

    def expand(self, x):
        z = (x - self.loc) / self.scale
        return -math.log(math.pi * self.scale) - torch.log1p(z * z)

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        from ..modules import sympy_number

        loc, scale = sympy_number(self.loc), sympy_number(self.scale)
        const = sympy_number(-math.log(math.pi * self.scale))
        return [const - sympy.log(1 + ((x - loc) / scale) ** 2) for x in xs]


def _positive(x: Tensor) -> Tensor:
    """u = 0.99·σ(x) + 0.001, mapping R onto the positive support (0.001, 0.991)."""
    return 0.99 * torch.sigmoid(x) + 0.001


def _positive_sympy(xs: list[Any]) -> list[Any]:
    """:func:`_positive` on sympy expressions."""
    import sympy

    from ..modules import sympy_sigmoid

    return [sympy.Float(0.99) * sympy_sigmoid(x) + sympy.Float(0.001) for x in xs]


@EXPANSIONS.register("naive_gamma")
class NaiveGamma(_Naive):
    """log Gamma(u; concentration, rate) at u = 0.99σ(x)+0.001 (default Gamma(0.5, rate 1)).

    SPEC §2 says "shape params" without names; they follow ``torch.distributions.Gamma``
    (``concentration``, ``rate``), as do ``naive_exponential`` (``rate``) and ``naive_chi2``
    (``df``).
    """

    def __init__(
        self,
        concentration: float = 0.5,
        rate: float = 1.0,
        preprocess: Any = None,
        postprocess: Any = None,
    ) -> None:
        super().__init__(preprocess, postprocess)
        self.concentration = check_finite_number("concentration", concentration, "NaiveGamma", True)
        self.rate = check_finite_number("rate", rate, "NaiveGamma", positive=True)

    def hparams(self) -> dict[str, Any]:
        return {"concentration": self.concentration, "rate": self.rate}

    def expand(self, x):
        u = _positive(x)
        k, r = self.concentration, self.rate
        return k * math.log(r) - math.lgamma(k) + (k - 1) * torch.log(u) - r * u

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        from ..modules import sympy_number

        k, r = self.concentration, self.rate
        const = sympy_number(k * math.log(r) - math.lgamma(k))
        return [const + sympy_number(k - 1) * sympy.log(u) - sympy_number(r) * u
                for u in _positive_sympy(xs)]


@EXPANSIONS.register("naive_exponential")
class NaiveExponential(_Naive):
    """log Exponential(u; rate) at u = 0.99σ(x)+0.001 (default rate 0.5)."""

    def __init__(self, rate: float = 0.5, preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__(preprocess, postprocess)
        self.rate = check_finite_number("rate", rate, "NaiveExponential", positive=True)

    def hparams(self) -> dict[str, Any]:
        return {"rate": self.rate}

    def expand(self, x):
        return math.log(self.rate) - self.rate * _positive(x)

    def _sympy(self, xs: list[Any]) -> list[Any]:
        from ..modules import sympy_number

        const, rate = sympy_number(math.log(self.rate)), sympy_number(self.rate)
        return [const - rate * u for u in _positive_sympy(xs)]


@EXPANSIONS.register("naive_chi2")
class NaiveChi2(_Naive):
    """log χ²(u; df) at u = 0.99σ(x)+0.001 (default df 1)."""

    def __init__(self, df: float = 1.0, preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__(preprocess, postprocess)
        self.df = check_finite_number("df", df, "NaiveChi2", positive=True)

    def hparams(self) -> dict[str, Any]:
        return {"df": self.df}

    def expand(self, x):
        h = self.df / 2
        u = _positive(x)
        return (h - 1) * torch.log(u) - u / 2 - h * math.log(2) - math.lgamma(h)

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        from ..modules import sympy_number

        h = self.df / 2
        const = sympy_number(-h * math.log(2) - math.lgamma(h))
        return [sympy_number(h - 1) * sympy.log(u) - u / 2 + const for u in _positive_sympy(xs)]


def subset_indices(m: int, r: int) -> torch.Tensor:
    """All r-subsets of range(m) in lexicographic order, shape (C(m, r), r), on CPU.

    Computed when the expansion binds its width (a non-persistent buffer), never in forward.
    """
    rows = list(itertools.combinations(range(m), r))
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), r)


class _Subsets(Expansion):
    def __init__(self, d: int = 2, preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__(preprocess, postprocess)
        self.d = check_positive_int("d", d, type(self).__name__)

    def hparams(self) -> dict[str, Any]:
        return {"d": self.d}

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return sum(comb(int(m), r) for r in range(1, self.d + 1))

    def table_numel(self, m: int) -> int:
        return sum(r * comb(int(m), r) for r in range(1, min(self.d, int(m)) + 1))

    def safe_abs(self, dtype: torch.dtype) -> float | None:
        return float(torch.finfo(dtype).max) ** (1.0 / max(self.d, 2)) / 10

    def cheaper(self, m: int) -> list[tuple[str, int]]:
        if self.d <= 1:
            return []
        return [(f"{self.registry_name} d={self.d - 1}", type(self)(self.d - 1).calculate_D(m))]

    def _columns(self, m: int) -> list[frozenset]:
        return [frozenset(s) for r in range(1, min(self.d, m) + 1)
                for s in itertools.combinations(range(m), r)]

    def bind_tables(self, m: int) -> None:
        for r in range(1, min(self.d, m) + 1):
            self.register_buffer(f"subsets_{r}", subset_indices(m, r), persistent=False)

    def subset_blocks(self, x: Tensor) -> list[Tensor]:
        m = x.shape[1]
        out = []
        for r in range(1, min(self.d, m) + 1):
            idx = self.table(f"subsets_{r}", m, lambda m, r=r: subset_indices(m, r)).to(x.device)
            out.append(self.reduce(x[:, idx], r))
        return out

    def reduce(self, xs: Tensor, r: int) -> Tensor:
        raise NotImplementedError

    def expand(self, x: Tensor) -> Tensor:
        return torch.cat(self.subset_blocks(x), dim=1)

    def _sympy(self, xs: list[Any]) -> list[Any]:
        m = len(xs)
        return [
            self._sympy_reduce([xs[i] for i in idx], r)
            for r in range(1, min(self.d, m) + 1)
            for idx in itertools.combinations(range(m), r)  # the order of subset_indices
        ]

    def _sympy_reduce(self, terms: list[Any], r: int) -> Any:
        """:meth:`reduce` on the sympy expressions of one r-subset."""
        raise NotImplementedError


@EXPANSIONS.register("combinatorial")
class Combinatorial(_Subsets):
    """Products ∏_{i∈S} x_i over all r-subsets S, r = 1..d (lexicographic; D = Σ C(m, r)).

    Blocks are ordered by r, subsets lexicographically within a block (``itertools.combinations``
    order); degrees r > m contribute no columns.
    """

    def reduce(self, xs, r):
        return xs.prod(dim=-1)

    def _sympy_reduce(self, terms, r):
        import sympy

        return sympy.Mul(*terms)


@EXPANSIONS.register("combinatorial_normal")
class CombinatorialNormal(_Subsets):
    """log N_r(x_S; 0, I_r) = -(r/2)·log 2π - ½‖x_S‖² over all r-subsets, r = 1..d."""

    def reduce(self, xs, r):
        return -0.5 * r * _LOG_2PI - 0.5 * (xs * xs).sum(dim=-1)

    def _sympy_reduce(self, terms, r):
        import sympy

        from ..modules import sympy_number

        return sympy_number(-0.5 * r * _LOG_2PI) - sympy.Add(*[t**2 for t in terms]) / 2
