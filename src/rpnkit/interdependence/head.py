"""Heads and layers with a data interdependence: g = ⟨κ(ξ(X)), ψ(w)⟩ + π(X).

:class:`InterdependentHead` composes an :class:`~rpnkit.RPNHead` (κ, ψ and its planned
contraction, unchanged) with a ξ applied before it and a remainder π applied to the
original input. When ξ acts by left multiplication along dimension -2 (graphs, chains,
attention, instance kernels) and κ is linear (``identity`` without preprocessing),
⟨ξ(X), W⟩ = A(X) ⟨X, W⟩ and the head multiplies A after the product – exact, and the
product with A then runs on n columns instead of m (the GCN order Â (X W)).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..fusion import Fusion, build_fusion
from ..head import RPNHead, check_dim
from ..modules import apply_list, bind_module_list, build_module_list, compact_repr
from ..registry import INTERDEPENDENCES, REMAINDERS
from ..remainder.remainders import Remainder
from ..seeding import derive_seed
from .base import Interdependence

__all__ = ["InterdependentHead", "InterdependentLayer"]


def _resolve(spec: Any, params: Mapping | None) -> Interdependence:
    if isinstance(spec, nn.Module):
        if not isinstance(spec, Interdependence):
            raise ConfigurationError(
                f"interdependence must be an rpnkit Interdependence, got {type(spec).__name__}"
            )
        if params:
            raise ConfigurationError("interdependence_params given with an already-built module")
        return spec
    return INTERDEPENDENCES.resolve(copy.deepcopy(spec), copy.deepcopy(params))


class InterdependentHead(nn.Module):
    """One RPN 2 head: ``fuse_c ⟨κ(ξ(X)), ψ(w^c)⟩ + b + π(X)``, then output modules.

    Args:
        m, n: input width and output width (per site).
        interdependence / interdependence_params: ξ as a module, registry name or mapping.
        expansion, reconciliation, ... : the RPN head options (:class:`~rpnkit.spec.HeadSpec`)
            of the inner κ/ψ head, which is built on ξ's output width m'.
        channels / channel_fusion: C parameter vectors; ``sum`` / ``mean`` run inside the
            planned contraction, other fusions (``max``, ``learned``, ``weighted``,
            ``linear``, ``concat``) fuse C single-channel products.
        remainder: π on the original input X (``zero`` for grids, whose sites differ).
        reorder: allow the exact A(X)⟨X, W⟩ order (default True).
    """

    def __init__(self, m: int, n: int, interdependence: Any = "identity",
                 interdependence_params: Mapping | None = None, *, remainder: Any = "zero",
                 remainder_params: Mapping | None = None, bias: bool = False, output: Any = None,
                 channels: int = 1, channel_fusion: Any = "sum", reorder: bool = True,
                 device: Any = None, dtype: torch.dtype | None = None, **head_options: Any) -> None:
        super().__init__()
        self.m = check_dim("m", m, "InterdependentHead")
        self.n = check_dim("n", n, "InterdependentHead")
        factory = {"device": device, "dtype": dtype}
        self.xi = _resolve(interdependence, interdependence_params)
        self.xi.bind(self.m, **factory)
        self.m_xi = int(self.xi.calculate_m(self.m))
        self.sites = int(self.xi.sites(self.m))
        channels = check_dim("channels", channels, "InterdependentHead", 4096)
        inner_fused = isinstance(channel_fusion, str) and channel_fusion in ("sum", "mean")
        if not inner_fused and channels == 1:
            build_fusion(channel_fusion)  # an unknown name fails with one channel too
        if inner_fused or channels == 1:
            self.inner = nn.ModuleList([RPNHead(
                self.m_xi, self.n, channels=channels,
                channel_fusion=channel_fusion if inner_fused else "sum", bias=False, output=None,
                remainder="zero", device=device, dtype=dtype, **head_options)])
            self.channel_fusion: Fusion | None = None
        else:
            seed = head_options.pop("seed", None)
            self.inner = nn.ModuleList([
                RPNHead(self.m_xi, self.n, bias=False, output=None, remainder="zero",
                        seed=None if seed is None else derive_seed(seed, c), device=device, dtype=dtype,
                        **head_options) for c in range(channels)])
            self.channel_fusion = build_fusion(channel_fusion)
            self.n = self.channel_fusion.bind([self.n] * channels, **factory)
        # what ξ and κ declare decides the order: A(X)⟨X, W⟩ = ⟨A(X) X, W⟩ needs ξ on the
        # left and κ linear (no pre/post-processing, a class that declares itself linear)
        self.xi_structure = self.xi.structure(self.m)
        kappa = self.inner[0].structure().expansion
        self.reorder = bool(reorder and self.xi_structure.side == "left" and kappa.linear
                            and (self.channel_fusion is None or self.channel_fusion.is_linear))
        self.remainder: Remainder = REMAINDERS.resolve(copy.deepcopy(remainder),
                                                       copy.deepcopy(remainder_params))
        if not isinstance(self.remainder, Remainder):
            raise ConfigurationError(f"remainder must be an rpnkit Remainder, got {type(self.remainder).__name__}")
        self.has_remainder = not self.remainder.is_zero
        if self.has_remainder and self.sites != 1:
            raise ConfigurationError(
                f"InterdependentHead: remainder {self.remainder.registry_name!r} acts on X, but ξ "
                f"{self.xi.registry_name!r} turns one sample into {self.sites} sites; use "
                f"remainder 'zero' (and a bias) with patch interdependence"
            )
        self.remainder.factory_kwargs = {k: v for k, v in factory.items() if v is not None}
        self.remainder.bind(self.m, self.n)
        self.bias = nn.Parameter(torch.zeros(self.n, **{k: v for k, v in factory.items() if v is not None})) if bias else None
        self.output = build_module_list(output)
        bind_module_list(self.output, self.n)
        if device is not None or dtype is not None:
            self.to(**{k: v for k, v in factory.items() if v is not None})

    @property
    def dtype(self) -> torch.dtype:
        return self.inner[0].w.dtype

    def reset_parameters(self) -> None:
        for h in self.inner:
            h.reset_parameters()
        for mod in (self.xi, self.remainder, self.channel_fusion, *self.xi.modules(), *self.output):
            if mod is not None and hasattr(mod, "reset_parameters") and mod is not self:
                mod.reset_parameters()
        if self.bias is not None:
            with torch.no_grad():
                self.bias.zero_()

    def product(self, z: Tensor) -> Tensor:
        """fuse_c ⟨κ(z), ψ(w^c)⟩ for z of shape (*, m')."""
        outs = [h(z) for h in self.inner]
        return outs[0] if self.channel_fusion is None else self.channel_fusion(outs)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"InterdependentHead expects a torch.Tensor, got {type(x).__name__}")
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        if x.dim() < self.xi_structure.min_rank:
            raise ValueError(
                f"InterdependentHead: ξ {self.xi_structure.name!r} relates the positions along "
                f"dimension -2 (tokens or instances of one sample); a {x.dim()}-D input "
                f"{tuple(x.shape)} would mix the rows of the batch, so a prediction would depend "
                f"on the batch size. Give input of shape (batch, sites, {self.m}) (e.g. "
                f"x.unsqueeze(1) for one site, or the tokens of each sample), or use an "
                f"attribute-level ξ such as 'parameterised'"
            )
        if self.reorder:
            y = self.xi.mix(self.product(x), x)
        else:
            y = self.product(self.xi(x))
        if self.bias is not None:
            y = y + self.bias
        if self.has_remainder:
            y = y + self.remainder(x.reshape(-1, self.m)).reshape(*x.shape[:-1], -1)
        return apply_list(self.output, y)

    def plan(self) -> str:
        order = "A(X)·⟨X, ψ(w)⟩ (ξ after the product)" if self.reorder else "⟨κ(ξ(X)), ψ(w)⟩"
        st = self.xi_structure
        rows = ("; input (*, sites, m): rows of dimension -2 are related" if st.min_rank > 2
                else "; a 2-D input is one whole instance set (transductive)" if st.transductive
                else "")
        lines = [f"ξ {st.name}: {st.form}, {st.side} side{rows}; order {order}"]
        lines += [h.plan() for h in self.inner]
        return "\n".join(lines)

    def extra_repr(self) -> str:
        return (f"m={self.m}, n={self.n}, m'={self.m_xi}, sites={self.sites}, "
                f"channels={len(self.inner) if self.channel_fusion is not None else self.inner[0].channels}, "
                f"reorder={self.reorder}")

    def __repr__(self) -> str:
        return compact_repr(self, {"xi": "ξ", "remainder": "π"})


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
