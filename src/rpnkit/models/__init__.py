"""Ready-made models (classic models expressed as RPNs), available by name.

``build_model(name, **params)`` is the entry point used by configs
(``model: {name: kan, dims: [...]}``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..model import RPN
from ..registry import Registry

__all__ = ["MODELS", "build_model"]

MODELS = Registry("model")


@MODELS.register("rpn")
def _rpn(dims: list[int], **params: Any) -> RPN:
    """Generic RPN built with RPN.from_dims."""
    return RPN.from_dims(dims, **params)


def build_model(name: str, **params: Any) -> nn.Module:
    """Build a registered model by name, e.g. ``build_model("kan", dims=[4, 8, 3])``."""
    return MODELS.get(name)(**params)
