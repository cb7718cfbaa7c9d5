"""Radial basis function and B-spline expansions (grid-based, feature-major)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import EXPANSIONS
from .base import Expansion, check_finite_number, check_positive_int

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
        return self.phi(z).reshape(x.shape[0], -1)


@EXPANSIONS.register("gaussian_rbf")
class GaussianRBF(_RBF):
    """Gaussian RBF exp(-(ε(x_i - c_k))²), centres linspace(low, high, K) (D = mK)."""

    def phi(self, z):
        return torch.exp(-(z * z))


@EXPANSIONS.register("inverse_quadratic_rbf")
class InverseQuadraticRBF(_RBF):
    """Inverse quadratic RBF 1/(1 + (ε(x_i - c_k))²) (D = mK)."""

    def phi(self, z):
        return 1.0 / (1.0 + z * z)


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
        return self.basis(x).reshape(x.shape[0], -1)
