"""RPNHead: one RPN head with C channels, g(x) = fuse_c(κ(x) ψ(w^c)ᵀ) [+ b] + π(x)."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigurationError
from .expansion.base import Expansion
from .init import init_rpn_weights
from .modules import apply_list, bind_module_list, build_module_list
from .reconciliation.base import Reconciliation
from .registry import EXPANSIONS, RECONCILIATIONS, REMAINDERS
from .remainder.remainders import Remainder

__all__ = ["RPNHead", "CHANNEL_FUSIONS", "check_dim"]

CHANNEL_FUSIONS = ("sum", "mean")


def check_dim(name: str, value: Any, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigurationError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _component(spec: Any, params: Any, registry, base: type, what: str) -> nn.Module:
    if isinstance(spec, nn.Module):
        if not isinstance(spec, base):
            raise ConfigurationError(
                f"{what} must be an rpnkit {base.__name__}, got {type(spec).__name__}"
            )
        if params:
            raise ConfigurationError(
                f"{what}_params were given together with an already-built {what} module"
            )
        return spec  # used as given: the head binds and owns it
    return registry.resolve(spec, params)


class RPNHead(nn.Module):
    """One RPN head: ``fuse_c(κ(x) ψ(w^c)ᵀ) + b + π(x)``, then optional output modules.

    Args:
        m: input width.
        n: output width.
        expansion / reconciliation / remainder: component modules, registry names, or
            ``{"name": ..., **params}`` mappings (SPEC §2–§4). Defaults: identity,
            identity, zero – i.e. a plain linear layer.
        channels: number C of parameter vectors w^0..w^{C-1} sharing κ, ψ and π.
        channel_fusion: ``"sum"`` (the model's definition, default) or ``"mean"``.
        bias: add a learnable bias b ∈ R^n (zeros at init).
        init: initialisation scheme name, see :mod:`rpnkit.init`.
        output: module(s) applied to the head output (activation, norm, dropout),
            given as modules or names (``"relu"``, ``"layer_norm"``, ...).
        expansion_params / reconciliation_params / remainder_params: keyword arguments
            used when the component is given by name.

    Components are bound to (m, n, D) here, at construction: masks, random matrices,
    hypernet output layers and linear-remainder weights exist before the first forward.
    """

    def __init__(
        self,
        m: int,
        n: int,
        expansion: Any = "identity",
        reconciliation: Any = "identity",
        remainder: Any = "zero",
        channels: int = 1,
        channel_fusion: str = "sum",
        bias: bool = False,
        init: str = "default",
        output: Any = None,
        expansion_params: dict | None = None,
        reconciliation_params: dict | None = None,
        remainder_params: dict | None = None,
    ) -> None:
        super().__init__()
        self.m = check_dim("m", m, "RPNHead")
        self.n = check_dim("n", n, "RPNHead")
        self.channels = check_dim("channels", channels, "RPNHead")
        if channel_fusion not in CHANNEL_FUSIONS:
            raise ConfigurationError(
                f"RPNHead: channel_fusion must be one of {CHANNEL_FUSIONS}, got {channel_fusion!r}"
            )
        self.channel_fusion = channel_fusion
        self.expansion: Expansion = _component(
            expansion, expansion_params, EXPANSIONS, Expansion, "expansion"
        )
        self.reconciliation: Reconciliation = _component(
            reconciliation, reconciliation_params, RECONCILIATIONS, Reconciliation, "reconciliation"
        )
        self.remainder: Remainder = _component(
            remainder, remainder_params, REMAINDERS, Remainder, "remainder"
        )
        self.D = int(self.expansion.calculate_D(self.m))
        if self.D < 1:
            raise ConfigurationError(
                f"RPNHead: expansion {self.expansion.registry_name!r} gives D={self.D} features "
                f"for m={self.m}; it needs D >= 1"
            )
        self.expansion.bind(self.m)
        self.reconciliation.bind(self.n, self.D)
        self.remainder.bind(self.m, self.n)
        self.l = int(self.reconciliation.calculate_l(self.n, self.D))
        self.w = nn.Parameter(torch.empty(self.channels, self.l))
        self.bias = nn.Parameter(torch.zeros(self.n)) if bias else None
        self.output = build_module_list(output)
        bind_module_list(self.output, self.n)
        self.init_scheme = init
        self.reset_parameters(init)

    # -- parameters ----------------------------------------------------------
    def reset_parameters(self, init: str | None = None) -> None:
        """(Re-)initialise w with scheme ``init`` (default: the scheme given at construction)."""
        init = init or self.init_scheme
        init_rpn_weights(self.w.data, self.reconciliation, self.n, self.D, init)
        if self.bias is not None:
            with torch.no_grad():
                self.bias.zero_()

    def reconciled_weights(self) -> Tensor:
        """Dense ψ(w^c) for every channel, shape (channels, n, D)."""
        return torch.stack(
            [self.reconciliation.reconcile(self.w[c], self.n, self.D) for c in range(self.channels)]
        )

    # -- evaluation ------------------------------------------------------------
    def check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"RPNHead expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.m:
            raise ValueError(
                f"RPNHead expects input of shape (batch, {self.m}), got {tuple(x.shape)}"
            )
        if not torch.is_floating_point(x):
            x = x.to(self.w.dtype)
        elif x.dtype != self.w.dtype:
            # dtype-preserving: float64 in -> float64 out even for a float32 head (and a
            # float64 head promotes float32 input); parameters are cast, never rounded down.
            x = x.to(torch.promote_types(x.dtype, self.w.dtype))
        return x

    def fuse_channels(self, parts: list[Tensor]) -> Tensor:
        y = parts[0]
        for p in parts[1:]:
            y = y + p
        if self.channel_fusion == "mean" and len(parts) > 1:
            y = y / len(parts)
        return y

    def expansion_product(self, x: Tensor) -> Tensor:
        """fuse_c ⟨κ(x), ψ(w^c)⟩ for a (B, m) batch, without bias or remainder."""
        from .structured import expansion_product

        return expansion_product(self, x)  # structured fast paths, see head.plan()

    def forward(self, x: Tensor) -> Tensor:
        x = self.check_input(x)
        y = self.expansion_product(x)
        if self.bias is not None:
            y = y + self.bias
        y = y + self.remainder(x)
        return apply_list(self.output, y)

    def plan(self) -> str:
        """How the forward pass is evaluated: the path that runs and why (rpnkit.structured)."""
        from .structured import plan

        return plan(self)

    explain = plan

    def extra_repr(self) -> str:
        return (
            f"m={self.m}, n={self.n}, D={self.D}, l={self.l}, channels={self.channels}, "
            f"channel_fusion={self.channel_fusion!r}, bias={self.bias is not None}"
        )
