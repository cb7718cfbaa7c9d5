"""rpnkit – Reconciled Polynomial Networks on PyTorch.

An RPN approximates f: R^m -> R^n as ``g(x) = <κ(x), ψ(w)> + π(x)`` with a data
expansion κ, a parameter reconciliation ψ and a remainder π (see SPEC and the
README); RPN 2 adds a data interdependence ξ, g = <κ(ξ(X)), ψ(w)> + π(X), and fusion
objects for channels and heads. Components are ``nn.Module`` classes, also available by
registry name.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, UnknownNameError, did_you_mean

if TYPE_CHECKING:  # loaded on first use (module __getattr__ below): `import rpnkit` is torch-free
    from . import compression, expansion, fusion, interdependence, reconciliation, remainder
    from .head import RPNHead
    from .layer import RPNLayer
    from .model import RPN
    from .spec import HeadSpec

__version__ = "0.1.0"

__all__ = [
    "RPN",
    "RPNHead",
    "RPNLayer",
    "HeadSpec",
    "fit",
    "load_run",
    "inspect",
    "model_view",
    "update_grid",
    "prune",
    "ConfigurationError",
    "UnknownNameError",
    "build_expansion",
    "build_reconciliation",
    "build_remainder",
    "build_interdependence",
    "build_fusion",
    "build_compression",
    "list_components",
    "expansion",
    "reconciliation",
    "remainder",
    "interdependence",
    "fusion",
    "compression",
    "__version__",
]


def build_expansion(name: str, **params: Any) -> expansion.Expansion:
    """Build a data expansion κ by registry name, e.g. ``build_expansion("taylor", d=2)``."""
    from .registry import EXPANSIONS

    return EXPANSIONS.build(name, **params)


def build_reconciliation(name: str, **params: Any) -> reconciliation.Reconciliation:
    """Build a parameter reconciliation ψ by registry name, e.g. ``("lorr", r=2)``."""
    from .registry import RECONCILIATIONS

    return RECONCILIATIONS.build(name, **params)


def build_remainder(name: str, **params: Any) -> remainder.Remainder:
    """Build a remainder π by registry name, e.g. ``build_remainder("linear", activation="silu")``."""
    from .registry import REMAINDERS

    return REMAINDERS.build(name, **params)


def build_interdependence(name: str, **params: Any) -> interdependence.Interdependence:
    """Build a data interdependence ξ (RPN 2) by registry name, e.g.
    ``build_interdependence("chain", length=8)``."""
    from .registry import INTERDEPENDENCES

    return INTERDEPENDENCES.build(name, **params)


def build_fusion(name: str, **params: Any) -> fusion.Fusion:
    """Build a channel / head fusion by registry name, e.g. ``build_fusion("learned")``."""
    from .registry import FUSIONS

    return FUSIONS.build(name, **params)


def build_compression(name: str, **params: Any) -> compression.Compression:
    """Build a compression κ: R^m -> R^d (d <= m) by registry name, e.g.
    ``build_compression("pca", d=8)``; fitted ones learn with ``.fit(x_train)``. A head's
    ``expansion`` option also takes it (the instance, or its name)."""
    from .registry import COMPRESSIONS

    return COMPRESSIONS.build(name, **params)


def list_components(kind: str | None = None, filter: str | None = None):  # noqa: A002
    """Registered component names, sorted.

    ``list_components()`` gives ``{"expansion": [...], "reconciliation": [...],
    "remainder": [...], "interdependence": [...], "fusion": [...], "compression": [...]}``;
    ``kind="expansion"``
    gives that kind's list only; ``filter`` is a shell-style pattern (``"*rbf*"``,
    ``"naive_*"``) or a plain substring.
    """
    from .registry import (
        COMPRESSIONS,
        EXPANSIONS,
        FUSIONS,
        INTERDEPENDENCES,
        RECONCILIATIONS,
        REMAINDERS,
    )

    registries = {"expansion": EXPANSIONS, "reconciliation": RECONCILIATIONS,
                  "remainder": REMAINDERS, "interdependence": INTERDEPENDENCES,
                  "fusion": FUSIONS, "compression": COMPRESSIONS}

    def names(reg) -> list[str]:
        out = sorted(reg.names())
        if filter is None:
            return out
        if not isinstance(filter, str):
            raise ConfigurationError(f"filter must be a string pattern, got {filter!r}")
        if any(ch in filter for ch in "*?["):
            return [nm for nm in out if fnmatch.fnmatchcase(nm, filter)]
        return [nm for nm in out if filter in nm]

    if kind is None:
        return {k: names(reg) for k, reg in registries.items()}
    if kind not in registries:
        raise UnknownNameError(
            f"unknown component kind {kind!r}{did_you_mean(kind, list(registries))}; "
            f"valid: {', '.join(registries)}"
        )
    return names(registries[kind])


def fit(model, X, y=None, config=None, **options):  # noqa: N803
    """Train ``model`` on numpy arrays or tensors with the one training loop of rpnkit.

    ``fit(model, X, y, {"epochs": 200, "optimizer": {"name": "adam", "lr": 0.01}})`` trains on
    (X, y); ``X`` may also be ``{"train": (X, y), "val": (Xv, yv), "test": ...}`` (then
    ``y`` is None). ``config`` is the ``train:`` section of a YAML config (a mapping or a
    :class:`~rpnkit.config.TrainConfig`); further keyword arguments go to
    :func:`rpnkit.training.fit` (``seed``, ``device``, ``progress``, ``restore_best``,
    ``task``). Returns a :class:`~rpnkit.training.FitResult` (history, final and best
    metrics); the model is trained in place.

    The model keeps its dtype: a float64 model trains in float64 (the data are cast to it),
    a float32 one in float32. Only a config that asks for a precision explicitly (``dtype``,
    or a mixed ``precision`` such as ``bf16``, which trains float32 weights) casts the model,
    in place, to that dtype.
    """
    from .training import fit as _fit

    data = X if y is None else (X, y)
    return _fit(model, data, _model_dtype_config(model, config), **options)


def _model_dtype_config(model, config):
    """``config`` with ``dtype`` set to the model's parameter dtype, unless the config names a
    ``dtype`` or a mixed ``precision`` itself (see :func:`fit`)."""
    import torch

    from .config import TrainConfig

    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    if not floats:
        return config
    dtype = floats[0]
    if isinstance(config, TrainConfig):
        explicit = "dtype" in config.model_fields_set or config.precision != "fp32"
    elif config is None or isinstance(config, dict) or hasattr(config, "keys"):
        given = dict(config or {})
        explicit = "dtype" in given or given.get("precision", "fp32") != "fp32"
    else:
        return config  # not a config: the engine's error names it
    if explicit:
        return config
    names = {torch.float32: "float32", torch.float64: "float64"}
    if dtype not in names:
        raise ConfigurationError(
            f"rpnkit.fit: the model's parameters are {dtype}; it trains float32 or float64 "
            f"weights (cast the model with .float() or .double(), or keep float32 weights "
            f"and train with config precision 'bf16' / 'fp16')"
        )
    if isinstance(config, TrainConfig):
        return config.model_copy(update={"dtype": names[dtype]})
    return {**dict(config or {}), "dtype": names[dtype]}


def load_run(run, which: str = "final", device="cpu"):
    """A trained run folder as a ready model with its preprocessing (:mod:`rpnkit.predict`):
    ``load_run("runs/x").predict(X_raw)``."""
    from .predict import load_run as _load_run

    return _load_run(run, which, device)


def inspect(model, x, names=None):
    """The learned one-input edge functions φ_ji of a model on data x
    (:func:`rpnkit.inspection.inspect`): callable, sampled, with their importance."""
    from .inspection import inspect as _inspect

    return _inspect(model, x, names)


def model_view(model_or_view, path=None, x=None, **options):
    """Draw the network's edges and their curves (:func:`rpnkit.inspection.model_view`)."""
    from .inspection import model_view as _model_view

    return _model_view(model_or_view, path, x, **options)


def update_grid(model, x, **options):
    """Move spline grids to the data, keeping the function (:func:`rpnkit.grid.update_grid`)."""
    from .grid import update_grid as _update_grid

    return _update_grid(model, x, **options)


def prune(model, x, threshold: float = 1e-2, y=None, **options):
    """Zero and mask unimportant edges (:func:`rpnkit.pruning.prune`)."""
    from .pruning import prune as _prune

    return _prune(model, x, threshold, y, **options)


_LAZY = ("models", "training", "data", "sklearn", "symbolic", "contract", "budget", "config",
         "cli", "spec", "predict", "inspection", "grid", "pruning", "symbolic_fit",
         "expansion", "reconciliation", "remainder", "interdependence", "fusion", "registry",
         "compression")
# public classes, by the module that defines them (imported on first use, like the submodules)
_LAZY_ATTRS = {"RPN": "model", "RPNHead": "head", "RPNLayer": "layer", "HeadSpec": "spec",
               "EXPANSIONS": "registry", "RECONCILIATIONS": "registry", "REMAINDERS": "registry",
               "INTERDEPENDENCES": "registry", "FUSIONS": "registry",
               "COMPRESSIONS": "registry"}


def __getattr__(name: str):
    """Submodules and the torch-backed classes load on first use (``rpnkit.models``,
    ``rpnkit.RPN``, ...), so that ``import rpnkit`` (and ``rpnkit --version``) is instant."""
    import importlib

    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(f".{_LAZY_ATTRS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rpnkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_ATTRS))
