"""HeadSpec: the one definition of a head's options.

Every front door builds heads from a :class:`HeadSpec`: :class:`~rpnkit.RPNHead` (its
keyword arguments *are* the spec's fields), :meth:`RPN.from_dims` and its per-layer
overrides, the YAML ``model:`` section and the scikit-learn estimators. A new head option
is added here, once; the others read :data:`HEAD_FIELDS` / :func:`head_defaults`.

Layer-level options (number of heads, head fusion, layer output modules) live beside it in
:class:`LayerSpec` (:data:`LAYER_FIELDS`), so that ``from_dims`` overrides and configs accept
exactly ``HEAD_FIELDS + LAYER_FIELDS``. The data interdependence ξ of RPN 2 is a head option.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigurationError, did_you_mean

__all__ = ["HeadSpec", "LayerSpec", "HEAD_FIELDS", "LAYER_FIELDS", "head_defaults",
           "layer_defaults", "check_head_options"]


@dataclass
class HeadSpec:
    """Options of one RPN head ``fuse_c(κ(x) ψ(w^c)ᵀ) [+ b] + π(x)``.

    Attributes:
        expansion / reconciliation / remainder: component modules, registry names, or
            ``{"name": ..., **params}`` mappings (SPEC §2–§4). Defaults: identity,
            identity, zero – a plain linear map.
        expansion_params / reconciliation_params / remainder_params: keyword arguments used
            when the component is given by name. Modules inside them (e.g.
            ``preprocess: [nn.LayerNorm(3)]``) are deep-copied for every head, so heads never
            share weights silently.
        channels: number C of parameter vectors w^0..w^{C-1} sharing κ, ψ and π.
        channel_fusion: ``"sum"`` (the model's definition) or ``"mean"`` (with ξ: any fusion
            object's name).
        bias: add a learnable bias b ∈ R^n (zeros at init).
        init: initialisation scheme name (:mod:`rpnkit.init`).
        output: module(s) applied to the head output (activation, norm, dropout), as modules
            or names (``"relu"``, ``"layer_norm"``, ...).
        seed: seed of the head's random state (masks, fixed random matrices, hypernets) for
            components that were not given a seed of their own. ``None`` (default) draws it
            from torch's global generator, so the heads of a layer differ and
            ``torch.manual_seed`` reproduces them.
        fft: how ``kron-structured`` contractions correlate degree-2 blocks: ``None``
            (default) chooses FFT or direct GEMM by cost, ``True`` / ``False`` forces FFT /
            GEMM (float32/float64 only have an FFT; other dtypes always use the GEMM).
        interdependence / interdependence_params: ξ of RPN 2 (a registry name of
            :data:`~rpnkit.registry.INTERDEPENDENCES`, a mapping or a module; ``None``, the
            default, is an RPN 1 head): the head computes ``fuse_c ⟨κ(ξ(X)), ψ(w^c)⟩ + b +
            π(X)`` with κ, ψ and the plan on ξ's width m'. With ξ, ``channel_fusion`` may also
            be any :data:`~rpnkit.registry.FUSIONS` name (max, learned, weighted, ...).
        reorder: allow the exact order A(X)·⟨X, W⟩ when ξ multiplies from the left and κ is
            declared linear (default True).
        plan_batch: the rows per batch the contraction plan's cost model counts at (its
            Kronecker-window, FFT and folded-product choices; every choice gives the same
            values). ``None`` (default) plans for :data:`rpnkit.contract.NOMINAL_BATCH` rows;
            a run built from a config (``rpnkit train``) plans at its ``train.batch_size``
            unless the ``model:`` section sets ``plan_batch``.
    """

    expansion: Any = "identity"
    reconciliation: Any = "identity"
    remainder: Any = "zero"
    expansion_params: Mapping[str, Any] | None = None
    reconciliation_params: Mapping[str, Any] | None = None
    remainder_params: Mapping[str, Any] | None = None
    channels: int = 1
    channel_fusion: Any = "sum"
    bias: bool = False
    init: str = "default"
    output: Any = None
    seed: int | None = None
    fft: bool | None = None
    interdependence: Any = None
    interdependence_params: Mapping[str, Any] | None = None
    reorder: bool = True
    plan_batch: int | None = None

    @classmethod
    def from_options(cls, owner: str = "RPNHead", **options: Any) -> HeadSpec:
        """Build from keyword options, rejecting unknown keys with a "did you mean"."""
        check_head_options(options, owner)
        return cls(**options)

    def fresh(self) -> HeadSpec:
        """A copy whose module-valued options (also inside ``*_params``) are deep copies."""
        return dataclasses.replace(
            self,
            **{f: copy.deepcopy(getattr(self, f)) for f in HEAD_FIELDS},
        )

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in HEAD_FIELDS}

    def build(self, m: int, n: int, **factory: Any):
        """An :class:`~rpnkit.RPNHead` with these options (fresh component copies)."""
        from .head import RPNHead

        return RPNHead(m, n, **self.fresh().as_dict(), **factory)


#: Head options, in RPNHead's positional order after (m, n).
HEAD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(HeadSpec))

@dataclass
class LayerSpec:
    """Options of one RPN layer beside its heads' :class:`HeadSpec` (``RPN.from_dims`` and
    its per-layer overrides, the YAML ``model:`` section and the ready models read these).

    Attributes:
        heads: number H of heads built from the head options.
        head_fusion: ``sum`` (default), ``mean``, ``concat``, ``linear``; with ξ any
            :data:`~rpnkit.registry.FUSIONS` name or mapping (``max``, ``weighted``, ...).
        output: module(s) on the fused output (activation, norm, dropout).
        head_output: module(s) on each built head's output.

    The data interdependence ξ of RPN 2 is a head option (:class:`HeadSpec`
    ``interdependence`` / ``interdependence_params``); a layer whose heads have one keeps the
    input's layout ``(*, sites, m)`` and each head gets its own copy of ξ.
    """

    heads: int = 1
    head_fusion: Any = "sum"
    output: Any = None
    head_output: Any = None


#: Layer options accepted next to the head options (``RPN.from_dims``, configs).
LAYER_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(LayerSpec))


def layer_defaults() -> dict[str, Any]:
    """Default value of every layer option."""
    return {f.name: f.default for f in fields(LayerSpec)}


def head_defaults() -> dict[str, Any]:
    """Default value of every head option."""
    return {f.name: f.default for f in fields(HeadSpec) if f.name in HEAD_FIELDS}


def check_head_options(options: Mapping[str, Any], owner: str) -> None:
    for key in options:
        if key not in HEAD_FIELDS:
            raise ConfigurationError(
                f"{owner}: unknown head option {key!r}{did_you_mean(key, HEAD_FIELDS)}; "
                f"valid: {', '.join(HEAD_FIELDS)}"
            )
