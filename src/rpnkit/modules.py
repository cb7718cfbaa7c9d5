"""Small helpers that build activation / normalisation / dropout modules by name.

Used for expansion pre/post-processing, remainder activations and head/layer
output modules. Size-dependent modules (``layer_norm``, ``batch_norm``) given by
bare name are created when the owning component is bound to its sizes, which
happens when a head is constructed, never in ``forward``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .errors import ConfigurationError, UnknownNameError, did_you_mean

__all__ = ["ACTIVATIONS", "build_module", "build_module_list", "bind_module_list", "Deferred"]

ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "softmax": lambda: nn.Softmax(dim=-1),
    "log_softmax": lambda: nn.LogSoftmax(dim=-1),
    "dropout": nn.Dropout,
}
SIZED: dict[str, Callable[[int], nn.Module]] = {
    "layer_norm": nn.LayerNorm,
    "batch_norm": nn.BatchNorm1d,
}
MODULE_NAMES = sorted([*ACTIVATIONS, *SIZED])


class Deferred(nn.Module):
    """Placeholder for a size-dependent module, replaced when sizes are bound."""

    def __init__(self, name: str, params: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.name = name
        self.params = dict(params or {})

    def materialise(self, size: int) -> nn.Module:
        return SIZED[self.name](size, **self.params)

    def forward(self, x):  # pragma: no cover - guarded by bind
        raise RuntimeError(
            f"module {self.name!r} has no size yet: use it inside an RPNHead (which binds "
            "sizes at construction) or pass an explicit nn.Module"
        )

    def extra_repr(self) -> str:
        return f"{self.name}, unbound"


def build_module(spec: Any) -> nn.Module:
    """Build one module from an ``nn.Module``, a name, or ``{"name": ..., **params}``."""
    if isinstance(spec, nn.Module):
        return spec
    params: dict[str, Any] = {}
    if isinstance(spec, Mapping):
        params = dict(spec)
        if "name" not in params:
            raise ConfigurationError(f"module spec {spec!r} needs a 'name' key")
        spec = params.pop("name")
    if not isinstance(spec, str):
        raise ConfigurationError(
            f"cannot build a module from {type(spec).__name__} {spec!r}; give an nn.Module or "
            f"one of: {', '.join(MODULE_NAMES)}"
        )
    if spec in ACTIVATIONS:
        try:
            return ACTIVATIONS[spec](**params)
        except TypeError as exc:
            raise ConfigurationError(f"bad parameters {params} for module {spec!r}: {exc}") from None
    if spec in SIZED:
        return Deferred(spec, params)
    raise UnknownNameError(
        f"unknown module {spec!r}{did_you_mean(spec, MODULE_NAMES)}; valid: {', '.join(MODULE_NAMES)}"
    )


def build_module_list(specs: Any) -> nn.ModuleList:
    """Build a registered ``nn.ModuleList`` from None, one spec or a sequence of specs."""
    if specs is None:
        return nn.ModuleList()
    if isinstance(specs, nn.ModuleList):
        specs = list(specs)
    if isinstance(specs, (nn.Module, str, Mapping)):
        specs = [specs]
    if not isinstance(specs, Sequence) and not isinstance(specs, nn.ModuleList):
        raise ConfigurationError(f"expected a list of modules, got {type(specs).__name__}")
    return nn.ModuleList(build_module(s) for s in specs)


def bind_module_list(modules: nn.ModuleList, size: int) -> None:
    """Replace :class:`Deferred` placeholders with real modules of width ``size``."""
    for i, mod in enumerate(modules):
        if isinstance(mod, Deferred):
            modules[i] = mod.materialise(size)


def _call(mod: nn.Module, x):
    """``mod(x)``; a module whose floating state has another dtype than x runs on cast copies.

    This keeps components dtype-preserving (float64 in -> float64 out) when, say, a float32
    LayerNorm post-processes float64 features. Gradients still reach the original parameters;
    running statistics updated in such a mixed-dtype call are not written back.
    """
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        state = dict(mod.named_parameters()) | dict(mod.named_buffers())
        if any(t.is_floating_point() and t.dtype != x.dtype for t in state.values()):
            cast = {k: t.to(x.dtype) if t.is_floating_point() else t for k, t in state.items()}
            return torch.func.functional_call(mod, cast, (x,))
    return mod(x)


def apply_list(modules: nn.ModuleList, x):
    for mod in modules:
        x = _call(mod, x)
    return x
