"""RPN: a deep chain of RPN layers."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigurationError, did_you_mean
from .fused_chain import chain_forward, chain_heads
from .fusion import FUSIONS
from .head import CHANNEL_FUSIONS, _restore, model_input
from .interdependence.head import InterdependentLayer
from .layer import HEAD_FUSIONS, LAYER_HEAD_OPTIONS, RPNLayer
from .modules import compact_repr
from .pruning import accept_masks
from .seeding import derive_seed
from .spec import LAYER_FIELDS, head_defaults, layer_defaults

__all__ = ["RPN", "MAX_LAYERS"]

#: most layers :meth:`RPN.from_dims` builds (``len(dims) - 1``), checked before any is built
MAX_LAYERS = 1000

#: per-layer keys of ``from_dims`` (and of config ``layers:`` entries): head options (but the
#: head's ``output``, which is ``head_output`` here) and layer options
_LAYER_KEYS = (*LAYER_HEAD_OPTIONS, *LAYER_FIELDS)
#: positional order of ``from_dims`` options after ``dims`` (kept from rpnkit 0.1)
_POSITIONAL = (
    "expansion", "reconciliation", "remainder", "expansion_params", "reconciliation_params",
    "remainder_params", "heads", "channels", "head_fusion", "channel_fusion", "bias", "init",
    "activation",
)  # fmt: skip


class RPN(nn.Module):
    """A deep RPN: ``layer_K ∘ ... ∘ layer_1``. Layer k's n must be layer k+1's m.

    Nothing is inserted between layers unless a layer's ``output`` modules say so.
    Input of shape ``(*, m)`` is accepted; input whose trailing dimensions hold m numbers
    (e.g. images (B, 28, 28) for m = 784) is flattened to (B, m). Input is cast once, here,
    to the model's parameter dtype.

    Layers are :class:`~rpnkit.RPNLayer` s or, for RPN 2,
    :class:`~rpnkit.interdependence.InterdependentLayer` s (a data interdependence ξ in every
    head). With any interdependent layer the input keeps its layout ``(*, sites, m)`` (the
    nodes of a graph, the tokens of a sequence: ξ acts across dimension -2) and each layer
    returns ``(*, sites', n)``.
    """

    def __init__(self, layers: Sequence[RPNLayer | InterdependentLayer]) -> None:
        super().__init__()
        layers = list(layers)
        if not layers:
            raise ConfigurationError("RPN needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, (RPNLayer, InterdependentLayer)):
                raise ConfigurationError(
                    f"RPN: layer {i} is a {type(layer).__name__}, expected RPNLayer or "
                    f"InterdependentLayer"
                )
        for i in range(len(layers) - 1):
            a, b = layers[i], layers[i + 1]
            if a.n != b.m:
                raise ConfigurationError(
                    f"RPN: layer {i} outputs n={a.n} features but layer {i + 1} expects "
                    f"m={b.m}; consecutive layers must agree"
                )
        self.layers = nn.ModuleList(layers)
        #: some layer has a data interdependence ξ: keep the input's leading layout
        self.structured = any(layer.interdependent for layer in layers)
        accept_masks(self)  # a pruned state_dict (rpnkit.prune) loads into a fresh model

    @property
    def dims(self) -> list[int]:
        return [self.layers[0].m] + [layer.n for layer in self.layers]

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].dtype

    def forward(self, x: Tensor) -> Tensor:
        m = self.layers[0].m
        if isinstance(x, Tensor) and x.dim() > 2 and x.shape[-1] != m and x[0].numel() == m:
            x = x.flatten(1)  # images and other samples laid out over several dimensions
        x, lead = model_input(x, m, self.dtype, "RPN")
        if self.structured:  # ξ mixes across dimension -2: the layers see (*, sites, m)
            x = x.reshape(*lead, m)
        else:
            chain = chain_heads(self.layers, x)
            if chain is not None:  # tiny fused heads: the whole chain in one node
                return _restore(chain_forward(chain, x), lead)
        for layer in self.layers:
            x = layer(x)
        return x if self.structured else _restore(x, lead)

    def forward_stacked(self, x: Tensor) -> Tensor:
        """S stacked copies of the model at once, without ``torch.func`` (batched seeds,
        :mod:`rpnkit.training.seeds`): every parameter holds its S copies stacked along a
        new first dimension (swapped in by the caller), x is (B, m) shared by the copies or
        (S, B, m); output (S, B, n). Raises :class:`~rpnkit.fused_stacked.NotStackable`
        unless every head runs its fused product."""
        from .fused_stacked import NotStackable

        if self.structured or type(self).forward is not RPN.forward:
            raise NotStackable("RPN: interdependent layers or a custom forward")
        chain = chain_heads(self.layers, x)
        if chain is not None:  # tiny fused heads: all layers and copies in one node
            return chain_forward(chain, x, seeds=chain[0].w.shape[0])
        for layer in self.layers:
            x = layer.forward_stacked(x)
        return x

    def reset_parameters(self) -> None:
        """Re-initialise every layer."""
        for layer in self.layers:
            layer.reset_parameters()

    def plan(self) -> str:
        return "\n".join(layer.plan() for layer in self.layers)

    explain = plan

    def __repr__(self) -> str:
        return compact_repr(self)

    @classmethod
    def from_dims(
        cls,
        dims: Sequence[int],
        *args: Any,
        activation: Any = None,
        layers: Sequence[Mapping[str, Any] | None] | None = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
        **options: Any,
    ) -> RPN:
        """Build an RPN with widths ``dims`` = [m, h_1, ..., n].

        ``options`` are the head options of :class:`~rpnkit.spec.HeadSpec` (``expansion``,
        ``reconciliation_params``, ``channels``, ``seed`` ...; a head's output modules are
        ``head_output``) and the layer options ``heads`` (number of heads per layer),
        ``head_fusion``, ``output`` and ``interdependence`` / ``interdependence_params`` (RPN 2:
        ξ by registry name, e.g. ``interdependence={"name": "chain", "length": 8}``; such
        layers are :class:`~rpnkit.interdependence.InterdependentLayer` s and take any
        ``FUSIONS`` name as ``head_fusion`` / ``channel_fusion``). Every head gets fresh
        components. With ``seed`` given, layer i builds from ``derive_seed(seed, i)`` and its
        heads and channels from streams derived from that (:mod:`rpnkit.seeding`); a layer
        override's own ``seed`` is that layer's seed.
        ``activation`` (a module name such as ``"relu"``) is applied after every layer
        except the last. ``layers`` is an optional list (one entry per layer, ``None``
        to keep the defaults) of per-layer overrides with the same keys.
        ``device`` / ``dtype`` are factory arguments, as in ``nn.Linear``.
        """
        if len(args) > len(_POSITIONAL):
            raise TypeError(f"RPN.from_dims takes at most {len(_POSITIONAL)} positional options")
        for name, value in zip(_POSITIONAL, args):
            if name in options or (name == "activation" and activation is not None):
                raise TypeError(f"RPN.from_dims got multiple values for option {name!r}")
            if name == "activation":
                activation = value
            else:
                options[name] = value
        dims = list(dims)
        if len(dims) - 1 > MAX_LAYERS:
            raise ConfigurationError(
                f"RPN.from_dims: dims lists {len(dims):,} sizes, i.e. {len(dims) - 1:,} layers; "
                f"at most {MAX_LAYERS:,} layers are allowed"
            )
        if len(dims) < 2 or any(
            isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in dims
        ):
            raise ConfigurationError(
                f"RPN.from_dims: dims must be a list of at least two positive integers, got {dims!r}"
            )
        dims = [int(d) for d in dims]
        for key in options:
            if key not in _LAYER_KEYS:
                raise ConfigurationError(
                    f"RPN.from_dims: unknown option {key!r}{did_you_mean(key, _LAYER_KEYS)}; "
                    f"valid: {', '.join(_LAYER_KEYS)}, activation, layers"
                )
        n_layers = len(dims) - 1
        overrides = list(layers) if layers is not None else []
        if len(overrides) > n_layers:
            raise ConfigurationError(
                f"RPN.from_dims: {len(overrides)} layer overrides given for {n_layers} layers"
            )
        overrides += [None] * (n_layers - len(overrides))
        base = {k: v for k, v in head_defaults().items() if k in LAYER_HEAD_OPTIONS}
        base.update(layer_defaults())
        base.update(options)
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
                for comp in ("expansion", "reconciliation", "remainder", "interdependence"):
                    if comp in ov and f"{comp}_params" not in ov:
                        cfg[f"{comp}_params"] = None
            head_options = {k: cfg[k] for k in LAYER_HEAD_OPTIONS}
            if head_options["seed"] is not None and not (ov and "seed" in ov):
                # layer i's own stream: its heads and channels derive theirs from it
                head_options["seed"] = derive_seed(head_options["seed"], i)
            num_heads = cfg["heads"]
            layer_cls = RPNLayer
            if cfg["interdependence"] is not None:
                layer_cls = InterdependentLayer
            else:
                _check_plain_fusions(cfg, i)
            built.append(
                layer_cls(
                    dims[i],
                    dims[i + 1],
                    fusion=cfg["head_fusion"],
                    num_heads=num_heads,
                    output=copy.deepcopy(cfg["output"]),  # every layer owns its modules
                    head_output=cfg["head_output"],
                    device=device,
                    dtype=dtype,
                    **head_options,
                )
            )
        return cls(built)


def _check_plain_fusions(cfg: Mapping[str, Any], i: int) -> None:
    """A plain RPN layer fuses heads by sum / mean / concat / linear and channels by sum /
    mean; a fusion object's name (``max``, ``learned``, ...) needs an interdependent layer."""
    for key, valid in (("head_fusion", HEAD_FUSIONS), ("channel_fusion", CHANNEL_FUSIONS)):
        value = cfg[key]
        if isinstance(value, str) and value in valid:
            continue
        name = value.get("name") if isinstance(value, Mapping) else value
        if isinstance(name, str) and name in FUSIONS:
            raise ConfigurationError(
                f"RPN.from_dims: layer {i}: {key} {name!r} is a fusion object, which only "
                f"interdependent layers take; add interdependence: identity (the same "
                f"⟨κ(x), ψ(w)⟩ + π(x) heads) or use one of {', '.join(valid)}"
            )
        try:  # an unknown name or a bad mapping: the registry's error, with the valid names
            FUSIONS.resolve(value)
        except ConfigurationError as exc:
            raise type(exc)(f"RPN.from_dims: layer {i}: {key}: {exc}") from None
