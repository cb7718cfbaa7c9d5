"""More three-term-recurrence polynomial families: Gegenbauer, Bessel, reverse Bessel,
Fibonacci and Lucas (feature-major P_1..P_d per input, like :mod:`.polynomial`).

Each family is the recurrence ``P_k = step(k, x, P_{k-1}, P_{k-2})`` from its ``P_0`` and
``P_1``; the columns are ``P_1(x_i) .. P_d(x_i)`` for each input i (D = m·d), the degree-0
constant left out as in the other polynomial families (Fibonacci's ``P_1 = F_1 = 1`` is
kept: the reference toolkit's Fibonacci columns are F_1..F_d).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import EXPANSIONS
from .base import check_finite_number
from .polynomial import _Orthogonal

__all__ = ["Gegenbauer", "Bessel", "ReverseBessel", "Fibonacci", "Lucas", "MAX_DEGREE"]

#: Highest degree d of these families, checked before anything is allocated: Bessel
#: coefficients grow like (2d-1)!!, so y_100 already has coefficients near 1e187.
MAX_DEGREE = 100


def _const(x: Any, c: int) -> Any:
    """The constant ``c`` shaped like ``x``: a tensor for tensors, else ``0·x + c`` (sympy
    expressions, numpy polynomials)."""
    if isinstance(x, Tensor):
        return torch.full_like(x, float(c))
    return x * 0 + c


class _Recurrence(_Orthogonal):
    """A family given by P_0, P_1 and a three-term recurrence (torch, sympy and numpy
    polynomials share the same ``p0``/``p1``/``step``)."""

    #: P_0 (a constant)
    p0_value = 1

    def __init__(self, d: int = 5, preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__(d, preprocess, postprocess)
        if self.d > MAX_DEGREE:
            raise ConfigurationError(
                f"{type(self).__name__}: d (degree) must be at most {MAX_DEGREE}, got {self.d:,}"
            )

    def p0(self, x: Any) -> Any:
        return _const(x, self.p0_value)

    def coefficients(self) -> list[np.ndarray]:
        """Monomial coefficients (float64, lowest degree first) of P_1 .. P_d."""
        x = np.polynomial.Polynomial([0.0, 1.0])
        prev, cur = self.p0(x), self.p1(x)
        out = [cur]
        for k in range(2, self.d + 1):
            prev, cur = cur, self.step(k, x, cur, prev)
            out.append(cur)
        return [np.asarray(np.atleast_1d(p.coef), dtype=np.float64) for p in out]

    def safe_abs(self, dtype: torch.dtype) -> float | None:
        """Largest r such that |x| <= r keeps every P_k finite in ``dtype``, with a 1e6 margin
        for the recurrence's intermediate products: |P_k(x)| <= S_k·max(1, |x|)^k with S_k
        the sum of |coefficients| of P_k, so r = min_k (max/1e6/S_k)^(1/k) (0.0 when some
        S_k alone exceeds the budget)."""
        if not dtype.is_floating_point:
            return None
        budget = float(torch.finfo(dtype).max) / 1e6
        r = float("inf")
        with np.errstate(over="ignore", invalid="ignore"):
            for k, c in enumerate(self.coefficients(), start=1):
                s = float(np.abs(c).sum())
                if not np.isfinite(s) or s > budget:
                    return 0.0
                if s > 0:
                    r = min(r, (budget / s) ** (1.0 / k))
        return r

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        out = []
        for x in xs:  # feature-major: P_1(x_i) .. P_d(x_i) for each i
            prev, cur = sympy.Integer(self.p0_value), self.p1(x)
            polys = [cur]
            for k in range(2, self.d + 1):
                prev, cur = cur, self.step(k, x, cur, prev)
                polys.append(cur)
            out.extend(sympy.expand(p) for p in polys)
        return out


@EXPANSIONS.register("gegenbauer")
class Gegenbauer(_Recurrence):
    """Gegenbauer (ultraspherical) polynomials C_1^(α)..C_d^(α) (feature-major, D = m·d).

    ``C_0 = 1``, ``C_1 = 2αx``, ``k C_k = 2x(k + α - 1) C_{k-1} - (k + 2α - 2) C_{k-2}``
    (scipy's ``eval_gegenbauer`` normalisation). ``alpha`` must be > -1/2 and non-zero
    (α = 0 makes every C_k, k >= 1, vanish). Orthogonal on [-1, 1], where |C_k| stays
    moderate; the safe input range in a dtype is :meth:`safe_abs` (|x| up to about 1e60
    in float64 and 1e6 in float32 at d = 5, α = 1).
    """

    def __init__(
        self,
        d: int = 5,
        alpha: float = 1.0,
        preprocess: Any = None,
        postprocess: Any = None,
    ) -> None:
        super().__init__(d, preprocess, postprocess)
        self.alpha = check_finite_number("alpha", alpha, "Gegenbauer")
        if self.alpha <= -0.5 or self.alpha == 0:
            raise ConfigurationError(
                f"Gegenbauer: alpha must be > -0.5 and non-zero, got {self.alpha!r}"
            )

    def hparams(self) -> dict[str, Any]:
        return {"d": self.d, "alpha": self.alpha}

    def p1(self, x: Any) -> Any:
        return 2 * self.alpha * x

    def step(self, k, x, pk1, pk2):
        a = self.alpha
        return (2 * (k + a - 1) * x * pk1 - (k + 2 * a - 2) * pk2) / k


@EXPANSIONS.register("bessel")
class Bessel(_Recurrence):
    """Bessel polynomials y_1..y_d (feature-major, D = m·d).

    ``y_0 = 1``, ``y_1 = x + 1``, ``y_k = (2k - 1) x y_{k-1} + y_{k-2}``; explicitly
    ``y_k(x) = Σ_j (k+j)! / ((k-j)! j!) (x/2)^j``. The coefficients grow like (2k-1)!!, so
    the safe input range shrinks quickly with d: :meth:`safe_abs` (about |x| <= 6e59 in
    float64 and 6e5 in float32 at d = 5; 0.0 where even |x| <= 1 could overflow).
    """

    def p1(self, x: Any) -> Any:
        return x + 1

    def step(self, k, x, pk1, pk2):
        return (2 * k - 1) * x * pk1 + pk2


@EXPANSIONS.register("reverse_bessel")
class ReverseBessel(_Recurrence):
    """Reverse Bessel polynomials θ_1..θ_d, θ_k(x) = x^k y_k(1/x) (feature-major, D = m·d).

    ``θ_0 = 1``, ``θ_1 = x + 1``, ``θ_k = (2k - 1) θ_{k-1} + x² θ_{k-2}``; explicitly
    ``θ_k(x) = Σ_j (k+j)! / ((k-j)! j! 2^j) x^(k-j)``. Safe input range: :meth:`safe_abs`
    (the same coefficient growth as :class:`Bessel`).
    """

    def p1(self, x: Any) -> Any:
        return x + 1

    def step(self, k, x, pk1, pk2):
        return (2 * k - 1) * pk1 + x * x * pk2


@EXPANSIONS.register("fibonacci")
class Fibonacci(_Recurrence):
    """Fibonacci polynomials F_1..F_d (feature-major, D = m·d).

    ``F_0 = 0``, ``F_1 = 1``, ``F_k = x F_{k-1} + F_{k-2}``; in closed form
    ``F_k(x) = (φ₊^k - φ₋^k) / (φ₊ - φ₋)`` with ``φ± = (x ± √(x² + 4)) / 2``. The first column
    of each input is the constant F_1 = 1 (kept, as the reference toolkit keeps it; its
    Structure declares those columns input-free). F_k(1) is the k-th Fibonacci number; safe
    input range: :meth:`safe_abs`.
    """

    p0_value = 0

    def p1(self, x: Any) -> Any:
        return _const(x, 1)

    def step(self, k, x, pk1, pk2):
        return x * pk1 + pk2

    def _core_structure(self, m: int):
        linear, _, monomials, bases = super()._core_structure(m)
        d = self.d

        def columns():  # F_1 = 1 depends on no input
            return [frozenset() if c % d == 0 else frozenset((c // d,)) for c in range(m * d)]

        return linear, columns, monomials, bases


@EXPANSIONS.register("lucas")
class Lucas(_Recurrence):
    """Lucas polynomials L_1..L_d (feature-major, D = m·d).

    ``L_0 = 2``, ``L_1 = x``, ``L_k = x L_{k-1} + L_{k-2}``; in closed form
    ``L_k(x) = φ₊^k + φ₋^k`` with ``φ± = (x ± √(x² + 4)) / 2``. L_k(1) is the k-th Lucas
    number; safe input range: :meth:`safe_abs`.
    """

    p0_value = 2

    def p1(self, x: Any) -> Any:
        return x

    def step(self, k, x, pk1, pk2):
        return x * pk1 + pk2
