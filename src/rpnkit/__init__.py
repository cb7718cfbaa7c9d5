"""rpnkit – Reconciled Polynomial Networks on PyTorch.

An RPN approximates f: R^m -> R^n as ``g(x) = <κ(x), ψ(w)> + π(x)`` with a data
expansion κ, a parameter reconciliation ψ and a remainder π (see SPEC and the
README). Components are ``nn.Module`` classes, also available by registry name.
"""

from __future__ import annotations

from typing import Any

from . import expansion, reconciliation, remainder
from .errors import ConfigurationError, UnknownNameError
from .head import RPNHead
from .layer import RPNLayer
from .model import RPN
from .registry import EXPANSIONS, RECONCILIATIONS, REMAINDERS

__version__ = "0.1.0"

__all__ = [
    "RPN",
    "RPNHead",
    "RPNLayer",
    "ConfigurationError",
    "UnknownNameError",
    "build_expansion",
    "build_reconciliation",
    "build_remainder",
    "list_components",
    "expansion",
    "reconciliation",
    "remainder",
    "__version__",
]


def build_expansion(name: str, **params: Any) -> expansion.Expansion:
    """Build a data expansion κ by registry name, e.g. ``build_expansion("taylor", d=2)``."""
    return EXPANSIONS.build(name, **params)


def build_reconciliation(name: str, **params: Any) -> reconciliation.Reconciliation:
    """Build a parameter reconciliation ψ by registry name, e.g. ``("lorr", r=2)``."""
    return RECONCILIATIONS.build(name, **params)


def build_remainder(name: str, **params: Any) -> remainder.Remainder:
    """Build a remainder π by registry name, e.g. ``build_remainder("linear", activation="silu")``."""
    return REMAINDERS.build(name, **params)


def list_components() -> dict[str, list[str]]:
    """Registered component names: ``{"expansion": [...], "reconciliation": [...], "remainder": [...]}``."""
    return {
        "expansion": EXPANSIONS.names(),
        "reconciliation": RECONCILIATIONS.names(),
        "remainder": REMAINDERS.names(),
    }
