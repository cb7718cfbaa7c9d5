"""Identity interdependence (RPN 1 as a special case of RPN 2)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..registry import INTERDEPENDENCES
from .base import Interdependence, check_choice

__all__ = ["IdentityInterdependence"]


@INTERDEPENDENCES.register("identity")
class IdentityInterdependence(Interdependence):
    """ξ(X) = X: A = I (attribute or instance level); every head without ξ is this one."""

    def __init__(self, level: str = "attribute") -> None:
        super().__init__()
        self.level = check_choice("level", level, ("attribute", "instance"), "identity interdependence")
        self.left_multiplies = self.level == "instance"

    def form(self) -> str:
        return "identity"

    def mix(self, z: Tensor, x: Tensor) -> Tensor:
        return z

    def forward(self, x: Tensor) -> Tensor:
        return x

    def matrix(self, x: Tensor | None = None) -> Tensor:
        size = x.shape[-2] if (self.level == "instance" and x is not None) else self.m
        return torch.eye(int(size or 0), dtype=torch.get_default_dtype() if x is None else x.dtype)
