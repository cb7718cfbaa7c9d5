"""Radial basis function and B-spline expansions (grid-based, feature-major)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import EXPANSIONS
from .base import Expansion, check_finite_number, check_positive_int
from .layout import Segment, dense

__all__ = ["GaussianRBF", "InverseQuadraticRBF", "BSpline"]


def _check_range(value: Any, owner: str) -> tuple[float, float]:
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy arrays, tensors
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ConfigurationError(f"{owner}: range must be a pair (low, high), got {value!r}")
    lo = check_finite_number("range[0]", value[0], owner)
    hi = check_finite_number("range[1]", value[1], owner)
    if not lo < hi:
        raise ConfigurationError(f"{owner}: range must satisfy low < high, got ({lo}, {hi})")
    return lo, hi


class _RBF(Expansion):
    """exp-/quadratic-type bumps φ(ε(x_i - c_k)) on K centres linspace(low, high, K)."""

    def __init__(
        self,
        range: Sequence[float] = (-1.0, 1.0),  # noqa: A002 - SPEC parameter name
        K: int = 10,  # noqa: N803
        eps: float = 1.0,
        preprocess: Any = None,
        postprocess: Any = None,
    ) -> None:
        super().__init__(preprocess, postprocess)
        owner = type(self).__name__
        self.range = _check_range(range, owner)
        self.K = check_positive_int("K", K, owner)
        self.eps = check_finite_number("eps", eps, owner)
        centres = torch.linspace(self.range[0], self.range[1], self.K, dtype=torch.float64)
        self.register_buffer("centres", centres)

    def hparams(self) -> dict[str, Any]:
        return {"range": self.range, "K": self.K, "eps": self.eps}

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return int(m) * self.K

    def phi(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def expand(self, x: Tensor) -> Tensor:
        c = self.centres.to(device=x.device, dtype=x.dtype)
        z = self.eps * (x.unsqueeze(-1) - c)
        return self.phi(z).flatten(1)

    def _sympy_z(self, xs: list[Any]) -> list[Any]:
        """ε(x_i - c_k) as sympy expressions, feature-major (the arguments of φ)."""
        from ..modules import float64_array, sympy_number

        eps = sympy_number(self.eps)
        centres = float64_array(self.centres)
        return [eps * (x - sympy_number(c)) for x in xs for c in centres]


@EXPANSIONS.register("gaussian_rbf")
class GaussianRBF(_RBF):
    """Gaussian RBF exp(-(ε(x_i - c_k))²), centres linspace(low, high, K) (D = mK)."""

    def phi(self, z):
        return torch.exp(-(z * z))

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        return [sympy.exp(-(z**2)) for z in self._sympy_z(xs)]


@EXPANSIONS.register("inverse_quadratic_rbf")
class InverseQuadraticRBF(_RBF):
    """Inverse quadratic RBF 1/(1 + (ε(x_i - c_k))²) (D = mK)."""

    def phi(self, z):
        return 1.0 / (1.0 + z * z)

    def _sympy(self, xs: list[Any]) -> list[Any]:
        return [1 / (1 + z**2) for z in self._sympy_z(xs)]


@EXPANSIONS.register("bspline")
class BSpline(Expansion):
    """Degree-d B-spline basis on t uniform intervals of [low, high], d extra knots each side.

    Knots are ``low + j·h`` for ``j = -d .. t+d`` with ``h = (high - low)/t``; the
    Cox–de Boor recursion gives ``t + d`` bases per feature (feature-major, D = m(t+d)).
    Inside [low, high) the bases sum to one.
    """

    def __init__(
        self,
        range: Sequence[float] = (-1.0, 1.0),  # noqa: A002
        t: int = 5,
        d: int = 3,
        preprocess: Any = None,
        postprocess: Any = None,
    ) -> None:
        super().__init__(preprocess, postprocess)
        self.range = _check_range(range, "BSpline")
        self.t = check_positive_int("t", t, "BSpline")
        self.d = check_positive_int("d", d, "BSpline", minimum=0)
        lo, hi = self.range
        h = (hi - lo) / self.t
        j = torch.arange(-self.d, self.t + self.d + 1, dtype=torch.float64)
        self.register_buffer("knots", lo + j * h)

    def hparams(self) -> dict[str, Any]:
        return {"range": self.range, "t": self.t, "d": self.d}

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return int(m) * (self.t + self.d)

    def basis(self, x: Tensor) -> Tensor:
        """(B, m, t+d) basis values."""
        k = self.knots.to(device=x.device, dtype=x.dtype)
        xe = x.unsqueeze(-1)
        b = ((xe >= k[:-1]) & (xe < k[1:])).to(x.dtype)
        for p in range(1, self.d + 1):
            left = (xe - k[: -(p + 1)]) / (k[p:-1] - k[: -(p + 1)])
            right = (k[p + 1 :] - xe) / (k[p + 1 :] - k[1:-p])
            b = left * b[..., :-1] + right * b[..., 1:]
        return b

    def expand(self, x: Tensor) -> Tensor:
        return self.basis(x).flatten(1)

    def _layout(self, m: int) -> list[Segment]:
        if self.d >= 1:
            return [dense(self.calculate_D(m), "bspline (local, d+1 non-zeros)")]
        return [dense(self.calculate_D(m), "bspline")]

    def _segment_inputs(self, z: Tensor) -> list[Tensor]:
        return [self.local_basis(z) if self.d >= 1 else self.expand(z)]

    def local_basis(self, x: Tensor) -> Tensor:
        """The same basis as :meth:`expand` (d >= 1), evaluated locally: (B, m·(t+d)).

        On knot interval j (u = (x − k₀)/h, j = ⌊u⌋, f = u − j) only the d+1 bases j−d … j
        are non-zero; their values follow the uniform Cox–de Boor recursion on f alone
        (``N_k ← ((f + p − k) N_{k−1} + (k + 1 − f) N_k) / p``): O(d²) ops on (B, m) tensors
        instead of O(d) ops on (B, m, t+2d) tensors, then one scatter. Continuous at the knots
        for d >= 1, so it equals the recursion there too. A NaN or ±inf feature gives NaN in
        its block (the recursion gives NaN in all of its bases), so every product with it is
        NaN, as with the recursion.
        """
        d, t = self.d, self.t
        knots = self.knots.to(device=x.device, dtype=x.dtype)
        k0 = knots[0]
        h = (knots[-1] - knots[0]) / (knots.numel() - 1)
        n_int = t + 2 * d  # knot intervals
        u = (x - k0) / h
        j = torch.floor(u)
        f = u - j
        vals = [torch.ones_like(x)]
        for p in range(1, d + 1):
            new = []
            for k in range(p + 1):
                term = (f + (p - k)) * vals[k - 1] if k >= 1 else None
                if k < p:
                    right = ((k + 1) - f) * vals[k]
                    term = right if term is None else term + right
                new.append(term / p)
            vals = new
        width = t + d
        b, m = x.shape
        # a NaN/±inf feature has NaN values (f = NaN); place them at interval 0, inside the
        # basis, so that NaN reaches every output as in the recursion (not a discarded slot)
        first = j.nan_to_num(0.0, posinf=0.0, neginf=0.0).clamp(-d - 1, n_int).to(torch.long) - d
        bases = first.unsqueeze(-1) + torch.arange(d + 1, device=x.device)  # (B, m, d+1)
        col = bases + (torch.arange(m, device=x.device) * width).view(1, m, 1)
        dummy = m * width  # out-of-range bases go to one discarded slot
        col = torch.where((bases >= 0) & (bases < width), col, torch.full_like(col, dummy))
        buf = x.new_zeros(b, dummy + 1).scatter(
            1, col.flatten(1), torch.stack(vals, -1).flatten(1)
        )
        return buf[:, :dummy]  # (B, m·(t+d)), feature-major; a strided view, no copy
