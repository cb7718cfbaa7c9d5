"""Layers with a data interdependence: g = ⟨κ(ξ(X)), ψ(w)⟩ + π(X).

The head is the one :class:`~rpnkit.RPNHead` (its ``interdependence`` option);
:class:`InterdependentHead` is its RPN 2 spelling with ξ as the third argument. When ξ acts
by left multiplication along dimension -2 (graphs, chains, attention, instance kernels) and
κ declares itself linear, ⟨ξ(X), W⟩ = A(X) ⟨X, W⟩ and the head multiplies A after the
product – exact, and the product with A then runs on n columns instead of m (the GCN order
Â (X W)).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..fusion import build_fusion
from ..head import RPNHead, check_dim
from ..modules import apply_list, bind_module_list, build_module_list
from ..seeding import derive_seed

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


class InterdependentLayer(nn.Module):
    """H interdependent heads on the same input, fused by a ``FUSIONS`` object.

    ``heads`` (built heads) or ``num_heads`` heads built from the head options (each with its
    own ξ copy when ξ is given by name or mapping); ``fusion``: ``sum`` (default), ``mean``,
    ``max``, ``concat`` (n split evenly), ``weighted``, ``learned``, ``linear``. ``output``
    acts on the fused result, ``head_output`` on each built head's output (as in
    :class:`~rpnkit.RPNLayer`).
    """

    def __init__(self, m: int, n: int, heads: Sequence[InterdependentHead] | None = None,
                 fusion: Any = "sum", num_heads: int = 1, output: Any = None,
                 head_output: Any = None, *, device: Any = None, dtype: torch.dtype | None = None,
                 **head_options: Any) -> None:
        super().__init__()
        self.m = check_dim("m", m, "InterdependentLayer")
        n = check_dim("n", n, "InterdependentLayer")
        self.fusion = build_fusion(fusion)
        if heads is None:
            num_heads = check_dim("num_heads", num_heads, "InterdependentLayer", 4096)
            concat = self.fusion.splits_width
            if concat and n % num_heads:
                raise ConfigurationError(
                    f"InterdependentLayer: concat fusion splits n={n} over {num_heads} heads; n "
                    f"must be divisible by the number of heads"
                )
            head_n = n // num_heads if concat else n
            seed = head_options.pop("seed", None)
            heads = [InterdependentHead(self.m, head_n, device=device, dtype=dtype,
                                        seed=None if seed is None else derive_seed(seed, i),
                                        output=copy.deepcopy(head_output),
                                        **copy.deepcopy(head_options))
                     for i in range(num_heads)]
        elif head_options or head_output is not None:
            raise ConfigurationError(
                f"InterdependentLayer: head options {sorted(head_options)} given together with "
                f"built heads"
            )
        heads = list(heads)
        if not heads:
            raise ConfigurationError("InterdependentLayer: needs at least one head")
        self.heads = nn.ModuleList(heads)
        self.n = self.fusion.bind([h.n for h in heads], device=device, dtype=dtype)
        if self.n != n:
            raise ConfigurationError(
                f"InterdependentLayer(n={n}): the {self.fusion.registry_name} fusion of head widths "
                f"{[h.n for h in heads]} gives {self.n}"
            )
        self.output = build_module_list(output)
        bind_module_list(self.output, self.n)
        if device is not None or dtype is not None:
            self.output.to(**{k: v for k, v in {"device": device, "dtype": dtype}.items()
                              if v is not None})

    @property
    def dtype(self) -> torch.dtype:
        return self.heads[0].dtype

    def reset_parameters(self) -> None:
        for h in self.heads:
            h.reset_parameters()
        if hasattr(self.fusion, "reset_parameters"):
            self.fusion.reset_parameters()
        for mod in self.output:
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return apply_list(self.output, self.fusion([h(x) for h in self.heads]))

    def plan(self) -> str:
        lines = [f"InterdependentLayer {self.m}->{self.n}, {len(self.heads)} head(s), "
                 f"{self.fusion.registry_name} fusion"]
        for i, h in enumerate(self.heads):
            lines.append(f"  head {i}: " + h.plan().replace("\n", "\n    "))
        return "\n".join(lines)

    def extra_repr(self) -> str:
        return f"m={self.m}, n={self.n}, heads={len(self.heads)}, fusion={self.fusion.registry_name!r}"
