"""Kernel-based interdependence: A computed from the data by a kernel function."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import INTERDEPENDENCES
from .base import Interdependence, check_choice, check_positive_int

__all__ = ["KernelInterdependence"]

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
