"""Layers with a data interdependence: g = ⟨κ(ξ(X)), ψ(w)⟩ + π(X).

The head is the one :class:`~rpnkit.RPNHead` (its ``interdependence`` option);
:class:`InterdependentHead` is its RPN 2 spelling with ξ as the third argument. When ξ acts
by left multiplication along dimension -2 (graphs, chains, attention, instance kernels) and
κ declares itself linear, ⟨ξ(X), W⟩ = A(X) ⟨X, W⟩ and the head multiplies A after the
product – exact, and the product with A then runs on n columns instead of m (the GCN order
Â (X W)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..head import RPNHead
from ..layer import RPNLayer

__all__ = ["InterdependentHead", "InterdependentLayer"]


class InterdependentHead(RPNHead):
    """An :class:`~rpnkit.RPNHead` with ξ given first: ``InterdependentHead(m, n, xi, params,
    **head_options)`` is ``RPNHead(m, n, interdependence=xi, interdependence_params=params,
    **head_options)`` – one head type; this name keeps the RPN 2 spelling (ξ defaults to
    ``identity``)."""

    def __init__(self, m: int, n: int, interdependence: Any = "identity",
                 interdependence_params: Mapping | None = None, **options: Any) -> None:
        super().__init__(m, n, interdependence=interdependence,
                         interdependence_params=interdependence_params, **options)


class InterdependentLayer(RPNLayer):
    """An :class:`~rpnkit.RPNLayer` whose built heads have a ξ (``identity`` unless
    ``interdependence`` is given): one layer type; this name keeps the RPN 2 spelling.

    ``fusion`` takes any :data:`~rpnkit.registry.FUSIONS` name (``sum``, ``mean``, ``max``,
    ``concat`` – n split evenly –, ``weighted``, ``learned``, ``linear``, ...).
    """

    def __init__(self, m: int, n: int, heads: Sequence[RPNHead] | None = None,
                 fusion: Any = "sum", num_heads: int = 1, output: Any = None,
                 head_output: Any = None, *, device: Any = None, dtype: torch.dtype | None = None,
                 **head_options: Any) -> None:
        if heads is None and head_options.get("interdependence") is None:
            head_options["interdependence"] = "identity"
        if isinstance(fusion, str) and fusion in ("concat", "linear"):
            fusion = {"name": fusion}  # the fusion objects, as RPN 2 layers always had
        super().__init__(m, n, heads, fusion, num_heads, output, head_output, device=device,
                         dtype=dtype, **head_options)
