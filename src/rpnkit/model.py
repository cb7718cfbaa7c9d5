"""RPN: a deep chain of RPN layers."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from .errors import ConfigurationError, did_you_mean
from .layer import RPNLayer

__all__ = ["RPN"]

_LAYER_KEYS = (
    "expansion",
    "reconciliation",
    "remainder",
    "expansion_params",
    "reconciliation_params",
    "remainder_params",
    "heads",
    "channels",
    "head_fusion",
    "channel_fusion",
    "bias",
    "init",
    "output",
    "head_output",
)


class RPN(nn.Module):
    """A deep RPN: ``layer_K ∘ ... ∘ layer_1``. Layer k's n must be layer k+1's m.

    Nothing is inserted between layers unless a layer's ``output`` modules say so.
    Inputs with more than two dimensions (e.g. images) are flattened to (batch, -1).
    """

    def __init__(self, layers: Sequence[RPNLayer]) -> None:
        super().__init__()
        layers = list(layers)
        if not layers:
            raise ConfigurationError("RPN needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, RPNLayer):
                raise ConfigurationError(
                    f"RPN: layer {i} is a {type(layer).__name__}, expected RPNLayer"
                )
        for i in range(len(layers) - 1):
            a, b = layers[i], layers[i + 1]
            if a.n != b.m:
                raise ConfigurationError(
                    f"RPN: layer {i} outputs n={a.n} features but layer {i + 1} expects "
                    f"m={b.m}; consecutive layers must agree"
                )
        self.layers = nn.ModuleList(layers)

    @property
    def dims(self) -> list[int]:
        return [self.layers[0].m] + [layer.n for layer in self.layers]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() > 2:
            x = x.flatten(1)
        for layer in self.layers:
            x = layer(x)
        return x

    def plan(self) -> str:
        return "\n".join(layer.plan() for layer in self.layers)

    explain = plan

    @classmethod
    def from_dims(
        cls,
        dims: Sequence[int],
        expansion: Any = "identity",
        reconciliation: Any = "identity",
        remainder: Any = "zero",
        expansion_params: Mapping[str, Any] | None = None,
        reconciliation_params: Mapping[str, Any] | None = None,
        remainder_params: Mapping[str, Any] | None = None,
        heads: int = 1,
        channels: int = 1,
        head_fusion: str = "sum",
        channel_fusion: str = "sum",
        bias: bool = False,
        init: str = "default",
        activation: Any = None,
        layers: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> RPN:
        """Build an RPN with widths ``dims`` = [m, h_1, ..., n].

        Every head gets fresh components built from the given names/params.
        ``activation`` (a module name such as ``"relu"``) is applied after every layer
        except the last. ``layers`` is an optional list (one entry per layer, ``None``
        to keep the defaults) of per-layer overrides using the same keys as this
        method (``expansion``, ``reconciliation_params``, ``heads``, ``output``, ...).
        """
        dims = list(dims)
        if len(dims) < 2 or any(
            isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in dims
        ):
            raise ConfigurationError(
                f"RPN.from_dims: dims must be a list of at least two positive integers, got {dims!r}"
            )
        dims = [int(d) for d in dims]
        n_layers = len(dims) - 1
        overrides = list(layers) if layers is not None else []
        if len(overrides) > n_layers:
            raise ConfigurationError(
                f"RPN.from_dims: {len(overrides)} layer overrides given for {n_layers} layers"
            )
        overrides += [None] * (n_layers - len(overrides))
        base = {
            "expansion": expansion,
            "reconciliation": reconciliation,
            "remainder": remainder,
            "expansion_params": dict(expansion_params or {}),
            "reconciliation_params": dict(reconciliation_params or {}),
            "remainder_params": dict(remainder_params or {}),
            "heads": heads,
            "channels": channels,
            "head_fusion": head_fusion,
            "channel_fusion": channel_fusion,
            "bias": bias,
            "init": init,
            "output": None,
            "head_output": None,
        }
        built = []
        for i, ov in enumerate(overrides):
            cfg = dict(base)
            if i < n_layers - 1 and activation is not None:
                cfg["output"] = activation
            if ov:
                for key in ov:
                    if key not in _LAYER_KEYS:
                        raise ConfigurationError(
                            f"RPN.from_dims: unknown layer option {key!r} in layer {i}"
                            f"{did_you_mean(key, _LAYER_KEYS)}; valid: {', '.join(_LAYER_KEYS)}"
                        )
                cfg.update(ov)
                # a new component name resets that component's params unless given
                for comp in ("expansion", "reconciliation", "remainder"):
                    if comp in ov and f"{comp}_params" not in ov:
                        cfg[f"{comp}_params"] = {}
            built.append(
                RPNLayer(
                    dims[i],
                    dims[i + 1],
                    fusion=cfg["head_fusion"],
                    num_heads=cfg["heads"],
                    output=cfg["output"],
                    expansion=cfg["expansion"],
                    reconciliation=cfg["reconciliation"],
                    remainder=cfg["remainder"],
                    expansion_params=cfg["expansion_params"],
                    reconciliation_params=cfg["reconciliation_params"],
                    remainder_params=cfg["remainder_params"],
                    channels=cfg["channels"],
                    channel_fusion=cfg["channel_fusion"],
                    bias=cfg["bias"],
                    init=cfg["init"],
                    head_output=cfg["head_output"],
                )
            )
        return cls(built)
