"""Numerical kernel interdependences: A from an inner product or a distance between the
rows (instances) or columns (attributes) of X (the reference toolkit's numerical kernels).

Each is a :class:`~rpnkit.interdependence.kernel.PairwiseInterdependence` defining only its
statistic k(u, v) between two q-vectors:

* ``tanh``: tanh(α⟨u, v⟩ + c);
* ``exponential``: exp(-γ‖u - v‖₂²);
* ``minkowski`` / ``manhattan`` / ``euclidean`` / ``chebyshev`` / ``canberra``:
  exp(-d(u, v)) for the Minkowski-p, L1, L2, L∞ and Canberra distances (Canberra terms
  |u_k - v_k| / (|u_k| + |v_k|), 0/0 taken as 0 as in ``scipy.spatial.distance``);
* ``laplacian``: exp(-‖u - v‖₁ / σ);
* ``anisotropic_rbf``: exp(-Σ_k a_k (u_k - v_k)²) with a scalar or per-coordinate a.

Safe input range: any finite X; the distance kernels are in (0, 1], ``tanh`` in (-1, 1),
so A stays bounded. Distances are formed from the (*, p, p, q) differences: memory grows
with (positions)² × width, so keep the compared sets small (tokens of one sample, one
graph's nodes).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import INTERDEPENDENCES
from .kernel import PairwiseInterdependence

__all__ = [
    "TanhInterdependence", "ExponentialInterdependence", "MinkowskiInterdependence",
    "ManhattanInterdependence", "EuclideanInterdependence", "ChebyshevInterdependence",
    "CanberraInterdependence", "LaplacianInterdependence", "AnisotropicRBFInterdependence",
]


def differences(u: Tensor) -> Tensor:
    """u_i - u_j for the rows of u (*, p, q) → (*, p, p, q)."""
    return u[..., :, None, :] - u[..., None, :, :]


def safe_root(s: Tensor, p: float) -> Tensor:
    """s^(1/p) for s ≥ 0 with a zero gradient at s = 0 (the distance of a row to itself)."""
    pos = s > 0
    return torch.where(pos, torch.where(pos, s, torch.ones_like(s)) ** (1.0 / p),
                       torch.zeros_like(s))


def minkowski_distance(u: Tensor, p: float) -> Tensor:
    """‖u_i - u_j‖_p between the rows of u (p ≥ 1, or ``math.inf`` for L∞)."""
    d = differences(u).abs()
    if math.isinf(p):
        return d.amax(-1)
    if p == 1:
        return d.sum(-1)
    return safe_root((d ** p).sum(-1), p)


@INTERDEPENDENCES.register("tanh")
class TanhInterdependence(PairwiseInterdependence):
    """Hyperbolic tangent kernel A = tanh(α⟨u_i, u_j⟩ + c) (reference defaults α 1, c 0)."""

    statistic = "tanh kernel"

    def __init__(self, alpha: float = 1.0, c: float = 0.0, level: str = "attribute",
                 normalize: str = "none") -> None:
        super().__init__(level, normalize)
        self.alpha = self._number("alpha", alpha, "tanh interdependence")
        self.c = self._number("c", c, "tanh interdependence")

    def pairwise(self, u: Tensor) -> Tensor:
        return torch.tanh(self.alpha * torch.matmul(u, u.transpose(-1, -2)) + self.c)


@INTERDEPENDENCES.register("exponential")
class ExponentialInterdependence(PairwiseInterdependence):
    """Exponential kernel A = exp(-γ‖u_i - u_j‖₂²) (the reference's definition; γ 1)."""

    statistic = "exponential kernel"

    def __init__(self, gamma: float = 1.0, level: str = "attribute",
                 normalize: str = "none") -> None:
        super().__init__(level, normalize)
        self.gamma = self._number("gamma", gamma, "exponential interdependence", positive=True)

    def pairwise(self, u: Tensor) -> Tensor:
        return torch.exp(-self.gamma * differences(u).pow(2).sum(-1))


class _DistanceInterdependence(PairwiseInterdependence):
    """A = exp(-d(u_i, u_j)) for a distance d (:meth:`distance`)."""

    def distance(self, u: Tensor) -> Tensor:
        raise NotImplementedError

    def pairwise(self, u: Tensor) -> Tensor:
        return torch.exp(-self.distance(u))


@INTERDEPENDENCES.register("minkowski")
class MinkowskiInterdependence(_DistanceInterdependence):
    """A = exp(-‖u_i - u_j‖_p), Minkowski order p ≥ 1 or ``inf`` (default 3).

    The reference toolkit has no default p."""

    def __init__(self, p: float = 3.0, level: str = "attribute", normalize: str = "none") -> None:
        super().__init__(level, normalize)
        if (isinstance(p, bool) or not isinstance(p, numbers.Real) or math.isnan(p) or p < 1):
            raise ConfigurationError(
                f"minkowski interdependence: p must be a number >= 1 or inf, got {p!r}")
        self.p = float(p)
        self.statistic = f"exp(-L{self.p:g} distance)"

    def distance(self, u: Tensor) -> Tensor:
        return minkowski_distance(u, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, " + super().extra_repr()


@INTERDEPENDENCES.register("manhattan")
class ManhattanInterdependence(_DistanceInterdependence):
    """A = exp(-‖u_i - u_j‖₁) (Manhattan / cityblock distance)."""

    statistic = "exp(-L1 distance)"

    def distance(self, u: Tensor) -> Tensor:
        return minkowski_distance(u, 1.0)


@INTERDEPENDENCES.register("euclidean")
class EuclideanInterdependence(_DistanceInterdependence):
    """A = exp(-‖u_i - u_j‖₂) (Euclidean distance)."""

    statistic = "exp(-L2 distance)"

    def distance(self, u: Tensor) -> Tensor:
        return minkowski_distance(u, 2.0)


@INTERDEPENDENCES.register("chebyshev")
class ChebyshevInterdependence(_DistanceInterdependence):
    """A = exp(-‖u_i - u_j‖_∞) (Chebyshev distance)."""

    statistic = "exp(-L∞ distance)"

    def distance(self, u: Tensor) -> Tensor:
        return minkowski_distance(u, math.inf)


@INTERDEPENDENCES.register("canberra")
class CanberraInterdependence(_DistanceInterdependence):
    """A = exp(-Σ_k |u_ik - u_jk| / (|u_ik| + |u_jk|)) (Canberra distance, 0/0 := 0)."""

    statistic = "exp(-Canberra distance)"

    def distance(self, u: Tensor) -> Tensor:
        num = differences(u).abs()
        den = u.abs()[..., :, None, :] + u.abs()[..., None, :, :]
        pos = den > 0
        return torch.where(pos, num / torch.where(pos, den, torch.ones_like(den)),
                           torch.zeros_like(den)).sum(-1)


@INTERDEPENDENCES.register("laplacian")
class LaplacianInterdependence(_DistanceInterdependence):
    """Laplacian kernel A = exp(-‖u_i - u_j‖₁ / σ) (σ 1)."""

    statistic = "Laplacian kernel"

    def __init__(self, sigma: float = 1.0, level: str = "attribute",
                 normalize: str = "none") -> None:
        super().__init__(level, normalize)
        self.sigma = self._number("sigma", sigma, "laplacian interdependence", positive=True)

    def distance(self, u: Tensor) -> Tensor:
        return minkowski_distance(u, 1.0) / self.sigma


@INTERDEPENDENCES.register("anisotropic_rbf")
class AnisotropicRBFInterdependence(PairwiseInterdependence):
    """Anisotropic RBF A = exp(-Σ_k a_k (u_ik - u_jk)²), a ≥ 0 one scale per coordinate k.

    ``a``: a number (every coordinate; default 1) or a sequence with one entry per
    coordinate of the compared vectors (m at instance level, the T positions at attribute
    level). Held as the non-persistent buffer ``scales``.
    """

    statistic = "anisotropic RBF kernel"

    def __init__(self, a: float | Sequence[float] = 1.0, level: str = "attribute",
                 normalize: str = "none") -> None:
        super().__init__(level, normalize)
        owner = "anisotropic_rbf interdependence"
        if isinstance(a, numbers.Real) and not isinstance(a, bool):
            values = [a]
        else:
            try:
                values = list(a)
            except TypeError:
                values = []
        if not values or not all(
                isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                and v >= 0 for v in values):
            raise ConfigurationError(
                f"{owner}: a must be a number >= 0 or a sequence of them (one per coordinate), "
                f"got {a!r}")
        self.a = tuple(float(v) for v in values)
        self.register_buffer("scales", torch.tensor(self.a, dtype=torch.float64)
                             .to(torch.get_default_dtype()), persistent=False)

    def bind(self, m: int, **factory: Any) -> None:
        super().bind(m)
        if self.level == "instance" and len(self.a) not in (1, m):
            raise ConfigurationError(
                f"anisotropic_rbf interdependence: {len(self.a)} scales a given for m = {m} "
                f"attributes; give one number or {m}")
        self.reset_parameters(factory.get("device"), factory.get("dtype"))

    def reset_parameters(self, device: Any = None, dtype: torch.dtype | None = None) -> None:
        """Refill the ``scales`` buffer from ``a`` (after meta-device construction)."""
        device = self.scales.device if device is None else device
        dtype = self.scales.dtype if dtype is None else dtype
        if torch.device(device).type == "meta":
            self.scales = torch.empty(len(self.a), device=device, dtype=dtype)
            return
        self.scales = torch.tensor(self.a, dtype=torch.float64).to(device=device, dtype=dtype)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.reset_parameters()  # every dtype change re-rounds the scales from the exact a
        return out

    def pairwise(self, u: Tensor) -> Tensor:
        q = u.shape[-1]
        if self.scales.numel() not in (1, q):
            raise ValueError(
                f"anisotropic_rbf interdependence: {self.scales.numel()} scales a for vectors "
                f"of {q} coordinates (the {'attributes' if self.level == 'instance' else 'positions along dimension -2'})")
        return torch.exp(-(differences(u).pow(2) * self.scales.to(u.dtype)).sum(-1))

    def extra_repr(self) -> str:
        return f"a={self.a if len(self.a) > 1 else self.a[0]}, " + super().extra_repr()
