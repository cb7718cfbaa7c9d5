"""Kernel-based interdependence: A computed from the data by a kernel function."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import INTERDEPENDENCES
from .base import Interdependence, check_choice, check_positive_int

__all__ = ["KernelInterdependence", "PairwiseInterdependence"]

KERNELS = ("linear", "polynomial", "rbf", "cosine")
NORMALIZE = ("softmax", "row", "none")


@INTERDEPENDENCES.register("kernel")
class KernelInterdependence(Interdependence):
    """A = k(·, ·) between instances (rows of dimension -2) or attributes (columns).

    ``level: instance`` – A[i, j] = k(x_i, x_j) over the b instances, ξ(X) = A X;
    ``level: attribute`` – A[i, j] = k(X[:, i], X[:, j]) over the m attributes, ξ(X) = X A.
    Kernels: ``linear`` ⟨u, v⟩, ``polynomial`` (⟨u, v⟩ + coef0)^degree, ``rbf``
    exp(-γ‖u - v‖²), ``cosine``. ``normalize``: ``softmax`` / ``row`` (rows sum to 1) or
    ``none``. A is b×b (or m×m), computed in forward from the data (form ``data``).
    """

    #: A is computed from the positions along dimension -2 at either level (the instances,
    #: or the values each attribute takes over them): input (*, T, m), never a bare batch
    couples_rows = True

    def __init__(self, kernel: str = "rbf", level: str = "instance", gamma: float = 1.0,
                 degree: int = 2, coef0: float = 1.0, normalize: str = "row") -> None:
        super().__init__()
        owner = "kernel interdependence"
        self.kernel = check_choice("kernel", kernel, KERNELS, owner)
        self.level = check_choice("level", level, ("instance", "attribute"), owner)
        self.normalize = check_choice("normalize", normalize, NORMALIZE, owner)
        self.degree = check_positive_int("degree", degree, owner)
        for name, v in (("gamma", gamma), ("coef0", coef0)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigurationError(f"{owner}: {name} must be a finite number, got {v!r}")
        self.gamma, self.coef0 = float(gamma), float(coef0)
        self.left_multiplies = self.level == "instance"

    def form(self) -> str:
        return f"data ({self.kernel} kernel over {self.level}s, {self.normalize} normalised)"

    def kernel_matrix(self, u: Tensor) -> Tensor:
        """k between the rows of u (*, p, q) → (*, p, p)."""
        g = torch.matmul(u, u.transpose(-1, -2))
        if self.kernel == "linear":
            a = g
        elif self.kernel == "polynomial":
            a = (g + self.coef0) ** self.degree
        elif self.kernel == "rbf":
            sq = (u * u).sum(-1)
            a = torch.exp(-self.gamma * (sq[..., :, None] + sq[..., None, :] - 2 * g).clamp_min(0))
        else:
            norm = torch.linalg.vector_norm(u, dim=-1).clamp_min(1e-12)
            a = g / (norm[..., :, None] * norm[..., None, :])
        if self.normalize == "softmax":
            a = torch.softmax(a, dim=-1)
        elif self.normalize == "row":
            a = a / a.sum(-1, keepdim=True).abs().clamp_min(1e-12)
        return a

    def matrix(self, x: Tensor | None = None) -> Tensor:
        if x is None:
            raise ConfigurationError("kernel interdependence: its matrix depends on the input x")
        return self.kernel_matrix(x if self.level == "instance" else x.transpose(-1, -2))

    def mix(self, z: Tensor, x: Tensor) -> Tensor:
        return torch.matmul(self.matrix(x), z)

    def forward(self, x: Tensor) -> Tensor:
        if self.level == "instance":
            return self.mix(x, x)
        return torch.matmul(x, self.matrix(x))  # A symmetric: X A = X Aᵀ for symmetric k


class PairwiseInterdependence(Interdependence):
    """Base of the data-dependent kernels: A from a pairwise statistic k(u_j, u_i) of X.

    The objects compared are the rows of dimension -2 (``level: instance``, each an
    m-vector) or the attributes (``level: attribute``, each the T values one attribute takes
    along dimension -2). With K[i, j] = k(u_i, u_j) (:meth:`pairwise`, between the rows of
    u of shape (*, p, q)), output i is Σ_j k(u_j, u_i) · input_j::

        instance    ξ(X) = Kᵀ X     (A = Kᵀ, b×b; ξ left-multiplies, dimension -2)
        attribute   ξ(X) = X K      (A = K, m×m)

    which is the reference toolkit's convention (it equals K X / X Kᵀ for the symmetric
    kernels; only ``kl_divergence`` is not symmetric). ``normalize`` rescales the weights
    each output takes from its sources: ``none`` (default, the reference's), ``row`` (they
    sum to 1) or ``softmax``. Every subclass only defines :meth:`pairwise`; A is computed in
    forward from the data (form ``data``), so the input is (*, T, m) and never a bare batch.
    """

    couples_rows = True
    #: what :meth:`form` calls the statistic
    statistic = "pairwise"

    def __init__(self, level: str = "attribute", normalize: str = "none") -> None:
        super().__init__()
        owner = f"{type(self).registry_name} interdependence"
        self.level = check_choice("level", level, ("instance", "attribute"), owner)
        self.normalize = check_choice("normalize", normalize, NORMALIZE, owner)
        self.left_multiplies = self.level == "instance"

    @staticmethod
    def _number(name: str, value, owner: str, positive: bool = False) -> float:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or (positive and value <= 0)):
            kind = "a finite number > 0" if positive else "a finite number"
            raise ConfigurationError(f"{owner}: {name} must be {kind}, got {value!r}")
        return float(value)

    def form(self) -> str:
        return f"data ({self.statistic} over {self.level}s, {self.normalize} normalised)"

    def pairwise(self, u: Tensor) -> Tensor:
        """K[..., i, j] = k(u_i, u_j) between the rows of u (*, p, q) → (*, p, p)."""
        raise NotImplementedError

    def weights(self, x: Tensor) -> Tensor:
        """M[..., i, j] = k(u_j, u_i), normalised over the sources j of each output i."""
        u = x if self.level == "instance" else x.transpose(-1, -2)
        a = self.pairwise(u).transpose(-1, -2)
        if self.normalize == "softmax":
            a = torch.softmax(a, dim=-1)
        elif self.normalize == "row":
            a = a / a.sum(-1, keepdim=True).abs().clamp_min(1e-12)
        return a

    def matrix(self, x: Tensor | None = None) -> Tensor:
        if x is None:
            raise ConfigurationError(
                f"{self.registry_name} interdependence: its matrix depends on the input x")
        a = self.weights(x)
        return a if self.level == "instance" else a.transpose(-1, -2)

    def mix(self, z: Tensor, x: Tensor) -> Tensor:
        return torch.matmul(self.weights(x), z)

    def forward(self, x: Tensor) -> Tensor:
        if self.level == "instance":
            return self.mix(x, x)
        return torch.matmul(x, self.matrix(x))

    def extra_repr(self) -> str:
        return f"level={self.level}, normalize={self.normalize!r}"
