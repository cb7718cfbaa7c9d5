"""Naive probabilistic compression: keep d inputs chosen by a distribution's density."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..expansion.base import check_finite_number
from ..registry import COMPRESSIONS
from .base import Compression

__all__ = ["NaiveProbabilistic", "DISTRIBUTIONS"]

#: distribution -> its parameters and their defaults (the reference toolkit's choices)
DISTRIBUTIONS: dict[str, dict[str, float]] = {
    "uniform": {"low": 0.0, "high": 1.0},
    "normal": {"loc": 0.0, "scale": 1.0},
    "laplace": {"loc": 0.0, "scale": 1.0},
    "cauchy": {"loc": 0.0, "scale": 1.0},
    "exponential": {"rate": 0.5},
    "gamma": {"concentration": 1.0, "rate": 1.0},
    "chi2": {"df": 1.0},
}
_POSITIVE = ("scale", "rate", "concentration", "df")


def _log_density(name: str, p: Mapping[str, float], u: Tensor) -> Tensor:
    if name == "uniform":
        inside = (u >= p["low"]) & (u <= p["high"])
        return torch.where(inside, -math.log(p["high"] - p["low"]), -math.inf)
    if name == "normal":
        z = (u - p["loc"]) / p["scale"]
        return -0.5 * z * z - math.log(p["scale"]) - 0.5 * math.log(2 * math.pi)
    if name == "laplace":
        return -(u - p["loc"]).abs() / p["scale"] - math.log(2 * p["scale"])
    if name == "cauchy":
        z = (u - p["loc"]) / p["scale"]
        return -torch.log1p(z * z) - math.log(math.pi * p["scale"])
    if name == "exponential":
        return torch.where(u >= 0, math.log(p["rate"]) - p["rate"] * u, -math.inf)
    a, b = (p["df"] / 2, 0.5) if name == "chi2" else (p["concentration"], p["rate"])
    return a * math.log(b) - math.lgamma(a) + (a - 1) * torch.log(u) - b * u


@COMPRESSIONS.register("naive_probabilistic")
class NaiveProbabilistic(Compression):
    """Keep d inputs drawn with probability ∝ p(u_i), u = 0.99σ(x)+0.001, in input order.

    In training mode the d indices of each row are sampled without replacement with weights
    p(u_i) (Gumbel top-d, torch's global generator, like dropout); in eval mode they are the
    d most probable inputs (ties: the earlier input). The kept values are the raw inputs
    x_i (the reference toolkit's ``simply_sampling``). ``distribution``: uniform (default),
    normal, laplace, cauchy, exponential, gamma, chi2 with ``distribution_params``
    (defaults in :data:`DISTRIBUTIONS`); ``normalize=False`` scores x itself instead of u.
    """

    def __init__(self, d: int = 2, distribution: str = "uniform",
                 distribution_params: Mapping[str, float] | None = None, normalize: bool = True,
                 preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__(preprocess, postprocess)
        self.d = self._target(d)
        if distribution not in DISTRIBUTIONS:
            raise ConfigurationError(
                f"NaiveProbabilistic: unknown distribution {distribution!r}; valid: "
                f"{', '.join(DISTRIBUTIONS)}")
        params = dict(DISTRIBUTIONS[distribution])
        for key, value in dict(distribution_params or {}).items():
            if key not in params:
                raise ConfigurationError(
                    f"NaiveProbabilistic: unknown parameter {key!r} for distribution "
                    f"{distribution!r}; valid: {', '.join(params)}")
            params[key] = check_finite_number(key, value, "NaiveProbabilistic",
                                              positive=key in _POSITIVE)
        if distribution == "uniform" and params["high"] <= params["low"]:
            raise ConfigurationError("NaiveProbabilistic: uniform needs high > low, got "
                                     f"low={params['low']}, high={params['high']}")
        self.distribution, self.distribution_params = distribution, params
        self.normalize = bool(normalize)

    def hparams(self) -> dict[str, Any]:
        return {"d": self.d, "distribution": self.distribution,
                "distribution_params": self.distribution_params, "normalize": self.normalize}

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return self.check_width(int(m), self.d)

    def log_weights(self, x: Tensor) -> Tensor:
        """log p(u) per input (B, m): the unnormalised log sampling weights."""
        u = 0.99 * torch.sigmoid(x) + 0.001 if self.normalize else x
        return _log_density(self.distribution, self.distribution_params, u)

    def indices(self, x: Tensor) -> Tensor:
        """The kept inputs of each row (B, d), ascending."""
        keys = self.log_weights(x.detach())
        if self.training:
            g = -torch.log(-torch.log(torch.rand_like(keys).clamp(1e-20, 1.0 - 1e-7)))
            keys = keys + g
        top = torch.sort(keys, dim=1, descending=True, stable=True).indices[:, : self.d]
        return torch.sort(top, dim=1).values

    def expand(self, x: Tensor) -> Tensor:
        return x.gather(1, self.indices(x))
