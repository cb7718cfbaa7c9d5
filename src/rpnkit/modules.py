"""Small helpers that build activation / normalisation / dropout modules by name.

Used for expansion pre/post-processing, remainder activations and head/layer
output modules. Size-dependent modules (``layer_norm``, ``batch_norm``) given by
bare name are created when the owning component is bound to its sizes, which
happens when a head is constructed, never in ``forward``. :func:`module_sympy` holds the
closed forms (sympy) of these torch modules for symbolic export, in one table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .errors import ConfigurationError, NoClosedFormError, UnknownNameError, did_you_mean

__all__ = [
    "ACTIVATIONS",
    "build_module",
    "build_module_list",
    "bind_module_list",
    "Deferred",
    "module_sympy",
    "modules_sympy",
]

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
    return mod(x)


def compact_repr(module: nn.Module, rename: Mapping[str, str] | None = None,
                 skip: Sequence[str] = ()) -> str:
    """``repr`` like ``nn.Module``'s, without empty containers and the ``skip`` children;
    children named in ``rename`` are shown under the new name (e.g. κ, ψ, π)."""
    rename = dict(rename or {})
    lines = []
    for name, child in module.named_children():
        if name in skip or (isinstance(child, (nn.ModuleList, nn.Sequential)) and len(child) == 0):
            continue
        text = repr(child).replace("\n", "\n  ")
        lines.append(f"({rename.get(name, name)}): {text}")
    head = f"{type(module).__name__}({module.extra_repr()}"
    if not lines:
        return head + ")"
    return head + "\n  " + "\n  ".join(lines) + "\n)"


def apply_list(modules: nn.ModuleList, x):
    for mod in modules:
        x = _call(mod, x)
    return x


# -- closed forms (sympy) -----------------------------------------------------------------
# The torch modules above are not rpnkit components, so their sympy forms live here, in one
# table. sympy is imported lazily: ``import rpnkit`` does not need it.
def sympy_number(v: Any) -> Any:
    """A Python/numpy number as a sympy number (integers stay exact)."""
    import sympy

    v = float(v)
    if v == int(v) and abs(v) < 1e15:
        return sympy.Integer(int(v))
    return sympy.Float(v, 15)


def sympy_sigmoid(e: Any) -> Any:
    """σ(e) = 1 / (1 + exp(-e)) as a sympy expression."""
    import sympy

    return 1 / (1 + sympy.exp(-e))


def float64_array(t: torch.Tensor) -> Any:
    """A tensor as a detached float64 numpy array on the CPU."""
    return t.detach().to("cpu", torch.float64).numpy()


def sympy_affine(weight: Any, xs: Sequence[Any], bias: Any = None, tol: float = 0.0) -> list[Any]:
    """``weight @ xs + bias`` (numpy weight (n, k), bias (n,) or None); |entries| < tol dropped."""
    import numpy as np
    import sympy

    out = []
    for i in range(weight.shape[0]):
        row = weight[i]
        keep = np.flatnonzero(np.abs(row) >= tol)
        terms = [sympy.Float(float(row[j]), 15) * xs[j] for j in keep]
        if bias is not None and abs(bias[i]) >= tol:
            terms.append(sympy.Float(float(bias[i]), 15))
        out.append(sympy.Add(*terms))
    return out


def module_sympy(mod: nn.Module, xs: Sequence[Any], where: str = "") -> list[Any]:
    """Closed form of an activation / normalisation / dropout module (eval mode) on xs.

    Raises:
        NoClosedFormError: for a module without a supported closed form (e.g. LayerNorm).
    """
    import numpy as np
    import sympy

    xs = list(xs)
    if isinstance(mod, (nn.Identity, nn.Dropout)):
        return xs
    if isinstance(mod, nn.ReLU):
        return [sympy.Max(0, e) for e in xs]
    if isinstance(mod, nn.SiLU):
        return [e * sympy_sigmoid(e) for e in xs]
    if isinstance(mod, nn.Sigmoid):
        return [sympy_sigmoid(e) for e in xs]
    if isinstance(mod, nn.Tanh):
        return [sympy.tanh(e) for e in xs]
    if isinstance(mod, nn.Softplus):
        beta = sympy_number(mod.beta)
        return [sympy.log(1 + sympy.exp(beta * e)) / beta for e in xs]
    if isinstance(mod, nn.ELU):
        a = sympy_number(mod.alpha)
        return [sympy.Piecewise((e, e > 0), (a * (sympy.exp(e) - 1), True)) for e in xs]
    if isinstance(mod, nn.LeakyReLU):
        s = sympy_number(mod.negative_slope)
        return [sympy.Piecewise((e, e > 0), (s * e, True)) for e in xs]
    if isinstance(mod, nn.GELU):
        if mod.approximate == "tanh":
            c = sympy.sqrt(2 / sympy.pi)
            return [e / 2 * (1 + sympy.tanh(c * (e + sympy.Float(0.044715) * e**3))) for e in xs]
        return [e / 2 * (1 + sympy.erf(e / sympy.sqrt(2))) for e in xs]
    if isinstance(mod, (nn.Softmax, nn.LogSoftmax)) and mod.dim in (-1, 1, None):
        ex = [sympy.exp(e) for e in xs]
        s = sympy.Add(*ex)
        if isinstance(mod, nn.Softmax):
            return [v / s for v in ex]
        return [e - sympy.log(s) for e in xs]
    if isinstance(mod, nn.BatchNorm1d) and mod.track_running_stats and mod.running_mean is not None:
        mean, var = float64_array(mod.running_mean), float64_array(mod.running_var)
        scale = 1.0 / np.sqrt(var + mod.eps)
        if mod.affine:
            scale = scale * float64_array(mod.weight)
            shift = float64_array(mod.bias) - mean * scale
        else:
            shift = -mean * scale
        return [sympy_number(scale[i]) * e + sympy_number(shift[i]) for i, e in enumerate(xs)]
    prefix = f"{where}: " if where else ""
    raise NoClosedFormError(
        f"{prefix}module {type(mod).__name__} has no closed form supported by to_sympy"
    )


def modules_sympy(modules: Sequence[nn.Module] | None, xs: Sequence[Any], where: str = "") -> list[Any]:
    """Apply :func:`module_sympy` for each module in order (the symbolic :func:`apply_list`)."""
    xs = list(xs)
    for mod in modules or []:
        xs = module_sympy(mod, xs, where)
    return xs
