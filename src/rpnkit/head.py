"""RPNHead: one RPN head with C channels, g(x) = fuse_c(κ(x) ψ(w^c)ᵀ) [+ b] + π(x)."""

from __future__ import annotations

import copy
import numbers
import reprlib
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .budget import NOMINAL_BATCH, Estimate
from .budget import check as check_budget
from .contract import Contraction, FusedHeadProduct, plan_sizes, refresh_tables
from .errors import ConfigurationError
from .expansion.base import Expansion
from .fusion import Fusion, build_fusion
from .init import init_rpn_weights
from .modules import apply_list, bind_module_list, build_module_list, compact_repr
from .reconciliation.base import Reconciliation
from .reconciliation.forms import form_of
from .registry import EXPANSIONS, FUSIONS, RECONCILIATIONS, REMAINDERS
from .remainder.remainders import Remainder
from .spec import HEAD_FIELDS, HeadSpec
from .structure import HeadStructure

if TYPE_CHECKING:
    from .interdependence.base import Interdependence

__all__ = ["RPNHead", "CHANNEL_FUSIONS", "check_dim", "model_input"]

CHANNEL_FUSIONS = ("sum", "mean")


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def short(value: Any) -> str:
    """A bounded repr of an untrusted value, for messages."""
    return _REPR.repr(value)


def check_dim(name: str, value: Any, owner: str, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigurationError(
            f"{owner}: {name} must be a positive integer, got {short(value)}"
        )
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{owner}: {name} must be at most {maximum:,}, got {value:,}")
    return int(value)


#: upper bounds of counts that multiply the model size (heads per layer, channels per head)
MAX_HEADS = 4096
MAX_CHANNELS = 4096


def model_input(x: Any, m: int, dtype: torch.dtype, owner: str) -> tuple[Tensor, tuple]:
    """The dtype policy, applied where data enters a head, layer or model.

    Input of shape ``(*, m)`` is flattened to ``(B, m)`` and cast once to the module's
    parameter dtype (``dtype``): the parameters decide the precision, as in ``nn.Linear``
    after ``.double()``/``.half()``. Returns the 2-D input and the leading shape to restore.
    """
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{owner} expects a torch.Tensor of shape (*, {m}), got {type(x).__module__}."
            f"{type(x).__name__}; convert it with torch.as_tensor(x)"
        )
    if x.dim() == 0 or x.shape[-1] != m:
        raise ValueError(f"{owner} expects input of shape (*, {m}), got {tuple(x.shape)}")
    lead = tuple(x.shape[:-1])
    if x.dim() != 2:
        x = x.reshape(-1, m)
    if x.dtype != dtype:
        x = x.to(dtype)
    return x, lead


def _restore(y: Tensor, lead: tuple) -> Tensor:
    return y if len(lead) == 1 else y.reshape(*lead, y.shape[-1])


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
    # modules inside the params (e.g. preprocess: [nn.LayerNorm(3)]) become this head's own
    return registry.resolve(copy.deepcopy(spec), copy.deepcopy(params))


def _factor_shapes(rec: Reconciliation, n: int, D: int):  # noqa: N803
    try:
        return rec.factor_shapes(n, D)
    except NotImplementedError:
        return None


class RPNHead(nn.Module):
    """One RPN head: ``fuse_c(κ(x) ψ(w^c)ᵀ) + b + π(x)``, then optional output modules.

    Args:
        m: input width.
        n: output width.
        expansion, reconciliation, remainder, expansion_params, reconciliation_params,
        remainder_params, channels, channel_fusion, bias, init, output, seed: the head
            options, defined once in :class:`~rpnkit.spec.HeadSpec` (also accepted
            positionally in that order after ``m, n``).
        device, dtype: where and in which dtype parameters and state are created (factory
            arguments as in ``nn.Linear``).

    Components are bound to (m, n, D) here, at construction: masks, random matrices,
    hypernet layers and linear-remainder weights exist before the first forward, and the
    contraction plan (:meth:`plan`) with its index tables is fixed. With l = 0 (fixed
    reconciliations) ``w`` is an empty buffer, not a parameter, so no registered parameter is
    ever unused (DDP-safe).

    Input of shape ``(*, m)`` is accepted; it is cast to the head's parameter dtype.
    """

    def __init__(
        self,
        m: int,
        n: int,
        *args: Any,
        device: Any = None,
        dtype: torch.dtype | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if len(args) > len(HEAD_FIELDS):
            raise TypeError(f"RPNHead takes at most {len(HEAD_FIELDS)} positional options")
        for name, value in zip(HEAD_FIELDS, args):
            if name in options:
                raise TypeError(f"RPNHead got multiple values for option {name!r}")
            options[name] = value
        spec = HeadSpec.from_options("RPNHead", **options)
        self.m = check_dim("m", m, "RPNHead")
        self.n = check_dim("n", n, "RPNHead")
        self.channels = check_dim("channels", spec.channels, "RPNHead", MAX_CHANNELS)
        factory = {"device": device, "dtype": dtype}
        # ξ (RPN 2): bound to m first; κ, ψ and the plan are then built on its width m'
        self.xi: Interdependence | None = None
        self.xi_structure = None
        self.m_xi = self.m
        if spec.interdependence is not None:
            self.xi = _interdependence(spec.interdependence, spec.interdependence_params)
            self.xi.bind(self.m, **factory)
            self.xi_structure = self.xi.structure(self.m)
            self.m_xi = check_dim("m'", self.xi_structure.m_out, "RPNHead")
        elif spec.interdependence_params:
            raise ConfigurationError("RPNHead: interdependence_params given without interdependence")
        # channels: sum / mean run inside the planned contraction; any other fusion object
        # (max, learned, weighted, ...) fuses the C per-channel products
        self.channel_fuser: Fusion | None = None
        if not (isinstance(spec.channel_fusion, str) and spec.channel_fusion in CHANNEL_FUSIONS):
            if spec.interdependence is None and isinstance(spec.channel_fusion, str) \
                    and spec.channel_fusion in FUSIONS.names():
                raise ConfigurationError(
                    f"RPNHead: channel_fusion must be one of {CHANNEL_FUSIONS}, got "
                    f"{spec.channel_fusion!r} (a fusion object: give the head an "
                    f"interdependence, e.g. interdependence='identity')"
                )
            self.channel_fuser = build_fusion(spec.channel_fusion)
            if self.channel_fuser.splits_width:
                raise ConfigurationError(
                    f"RPNHead: channel_fusion {self.channel_fuser.registry_name!r} changes the "
                    f"output width; concatenate heads instead (head_fusion: concat)"
                )
            self.channel_fuser.bind([self.n] * self.channels, **factory)
        if spec.seed is not None and (
            isinstance(spec.seed, bool) or not isinstance(spec.seed, numbers.Integral)
            or not 0 <= spec.seed < 2**63
        ):
            raise ConfigurationError(f"RPNHead: seed must be an integer in [0, 2**63) or None, "
                                     f"got {short(spec.seed)}")
        self._channel_fusion = (spec.channel_fusion if self.channel_fuser is None
                                else self.channel_fuser.registry_name)
        self.expansion: Expansion = _component(
            spec.expansion, spec.expansion_params, EXPANSIONS, Expansion, "expansion"
        )
        self.reconciliation: Reconciliation = _component(
            spec.reconciliation, spec.reconciliation_params, RECONCILIATIONS, Reconciliation,
            "reconciliation",
        )
        self.remainder: Remainder = _component(
            spec.remainder, spec.remainder_params, REMAINDERS, Remainder, "remainder"
        )
        self.D = int(self.expansion.calculate_D(self.m_xi))
        if self.D < 1:
            raise ConfigurationError(
                f"RPNHead: expansion {self.expansion.registry_name!r} gives D={self.D} features "
                f"for m={self.m_xi}; it needs D >= 1"
            )
        self._check_budget(device, dtype)
        # random state is drawn only by components that have some (masks, random matrices,
        # hypernets): from their own seed, else this one, else torch's global generator
        self.seed = None if spec.seed is None else int(spec.seed)
        self.expansion.bind(self.m_xi)
        rec = self.reconciliation
        if rec.bound_seed is None:
            rec.bound_seed = self.seed
        rec.factory_kwargs = {k: v for k, v in factory.items() if v is not None}
        rec.bind(self.n, self.D)
        self.remainder.factory_kwargs = dict(rec.factory_kwargs)
        self.has_remainder = not self.remainder.is_zero
        if self.has_remainder and self.xi_structure is not None and self.xi_structure.sites != 1:
            raise ConfigurationError(
                f"RPNHead: remainder {self.remainder.registry_name!r} acts on X, but ξ "
                f"{self.xi_structure.name!r} turns one sample into {self.xi_structure.sites} "
                f"sites; use remainder 'zero' (and a bias) with patch interdependence"
            )
        self.remainder.bind(self.m, self.n)
        self.l = int(rec.calculate_l(self.n, self.D))
        if self.l > 0:
            self.w = nn.Parameter(torch.empty(self.channels, self.l, **factory))
        else:  # nothing to learn: an empty buffer keeps `head.w` and the dtype policy
            self.register_buffer("w", torch.empty(self.channels, 0, **factory))
        self.bias = nn.Parameter(torch.zeros(self.n, **factory)) if spec.bias else None
        self.output = build_module_list(spec.output)
        bind_module_list(self.output, self.n)
        psi = rec.structure(self.n, self.D)
        self.contraction = Contraction(
            list(self.expansion.structure(self.m_xi).segments),
            psi.form,
            self.n,
            self.D,
            None if psi.factor_shapes is None else [tuple(f) for f in psi.factor_shapes],
            self.channels,
            self.channel_fusion if self.channel_fuser is None else "sum",
            (self.expansion.registry_name, rec.registry_name),
            fft=spec.fft,
            batch=spec.plan_batch,
        )
        # tiny heads: κ written into one buffer and contracted in one autograd node (eager)
        self.fused: FusedHeadProduct | None = None
        if self.xi is None and self.channel_fuser is None and self.l > 0:
            self.fused = FusedHeadProduct.plan_for(
                self.expansion, psi.form, psi.factor_shapes, self.m, self.n, self.D,
                self.channels)
            if self.has_remainder:  # an input-side linear remainder (KAN's base) folds in
                from .fused_remainder import FusedBaseProduct

                self.fused = FusedBaseProduct.wrap(self.fused, self.remainder)
        self.fused_folds_remainder = bool(getattr(self.fused, "folds_remainder", False))
        # A(X)⟨X, W⟩ = ⟨A(X) X, W⟩: with ξ on the left and a linear κ (as declared) the head
        # multiplies A after the product, n columns wide instead of m
        self.reorder = bool(
            spec.reorder and self.xi_structure is not None and self.xi_structure.side == "left"
            and self.expansion.structure(self.m_xi).linear
            and (self.channel_fuser is None or self.channel_fuser.is_linear))
        self.init_scheme = spec.init
        self._init_w(spec.init)
        if device is not None or dtype is not None:
            self.to(**{k: v for k, v in factory.items() if v is not None})
        elif self.w.is_floating_point():
            # the expansion's grids/centres in the parameter dtype, cast once here, not per call
            self.expansion.to(dtype=self.w.dtype)
            if self.fused is not None:  # its tables too
                self.fused.to(dtype=self.w.dtype)

    def _check_budget(self, device: Any, dtype: torch.dtype | None) -> None:
        """Estimate the sizes from what the components declare and refuse, before anything is
        allocated, a head whose training would not fit the memory budget (:mod:`.budget`)."""
        exp, rec, m, n, d = self.expansion, self.reconciliation, self.m_xi, self.n, self.D
        rec.check_sizes(n, d)
        ell = int(rec.calculate_l(n, d))
        elem = torch.empty((), dtype=dtype or torch.get_default_dtype()).element_size()
        layout = exp.layout(m)
        tables, act = plan_sizes(layout, form_of(rec), n, NOMINAL_BATCH)
        est = Estimate(d, ell, self.channels, self.channels * ell * elem,
                       int(rec.state_numel(n, d)) * elem,
                       (tables + int(exp.table_numel(m))) * 8, act * elem)
        cheaper = [f"expansion {label} (D={dd:,})" for label, dd in exp.cheaper(m)]
        low_rank = 2 * (n + d)
        if ell > low_rank:
            cheaper.append(f"reconciliation lorr r=2 (l={low_rank:,})")
        where = (f"RPNHead(m={m}, n={n}) with expansion {exp.registry_name!r} and "
                 f"reconciliation {rec.registry_name!r}")
        dev = torch.device(device) if device is not None else None
        check_budget(est, where, cheaper, dev)

    @property
    def channel_fusion(self) -> str:
        return self._channel_fusion

    @channel_fusion.setter
    def channel_fusion(self, value: str) -> None:
        if self.channel_fuser is not None or value not in CHANNEL_FUSIONS:
            raise ConfigurationError(
                f"RPNHead: channel_fusion must be one of {CHANNEL_FUSIONS}, got {value!r}"
            )
        self._channel_fusion = value
        if "contraction" in self._modules:
            self.contraction.mean = value == "mean" and self.channels > 1

    # -- parameters ----------------------------------------------------------
    def reset_parameters(self, init: str | None = None) -> None:
        """(Re-)initialise every parameter the head owns: w with scheme ``init`` (default: the
        scheme given at construction), the bias (zeros), the remainder, the reconciliation
        and the expansion's and output's modules that have ``reset_parameters``."""
        extra = [*(self.xi.modules() if self.xi is not None else ()),
                 *(self.channel_fuser.modules() if self.channel_fuser is not None else ())]
        for mod in (self.reconciliation, self.remainder, *self.expansion.modules(), *self.output,
                    *extra):
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
        self.reset_tables()
        # last: w's scale may be read off the reconciliation's fixed state (random matrices)
        self._init_w(init)

    def reset_tables(self) -> None:
        """Recompute the index tables (non-persistent buffers) of the expansion and of the
        contraction in place: after meta-device construction and ``to_empty()`` they hold
        uninitialised memory. ``load_state_dict`` calls it too."""
        self._reset_expansion_tables()
        self.contraction.reset_parameters()
        if self.fused is not None:
            self.fused.reset_parameters()

    def _reset_expansion_tables(self) -> None:
        for exp in self.expansion.modules():  # composite expansions: every bound part
            if isinstance(exp, Expansion) and exp.m is not None:
                refresh_tables(exp, lambda exp=exp: exp.bind_tables(exp.m))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._reset_expansion_tables()  # the contraction rebuilds its own when it is loaded
        _migrate_interdependent_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _init_w(self, init: str | None) -> None:
        init_rpn_weights(self.w.data, self.reconciliation, self.n, self.D, init or self.init_scheme)
        if self.bias is not None:
            with torch.no_grad():
                self.bias.zero_()

    def reconciled_weights(self) -> Tensor:
        """Dense ψ(w^c) for every channel, shape (channels, n, D)."""
        return torch.stack(
            [self.reconciliation.reconcile(self.w[c], self.n, self.D) for c in range(self.channels)]
        )

    # -- evaluation ------------------------------------------------------------
    def check_input(self, x: Any) -> Tensor:
        """(B, m) input in the head's dtype (see :func:`model_input`)."""
        return model_input(x, self.m, self.w.dtype, "RPNHead")[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.w.dtype

    def fuse_channels(self, parts: list[Tensor]) -> Tensor:
        if self.channel_fuser is not None:
            return self.channel_fuser(parts)
        return self.contraction._fuse(parts)

    def expansion_product(self, x: Tensor) -> Tensor:
        """fuse_c ⟨κ(x), ψ(w^c)⟩ for a (B, m') batch (m' = ξ's output width, m without ξ),
        without bias or remainder."""
        inputs = self.expansion.segment_inputs(x)
        if self.channel_fuser is not None:
            return self.channel_fuser(self.contraction.parts(inputs, self.w, self.reconciliation))
        return self.contraction(inputs, self.w, self.reconciliation)

    def _planned(self, x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
        """⟨κ(x), ψ(w)⟩ + b by the planned contraction (for given w and b: the fused
        product's double backward differentiates this)."""
        inputs = self.expansion.segment_inputs(x)
        if self.channel_fuser is not None:
            y = self.channel_fuser(self.contraction.parts(inputs, w, self.reconciliation))
        else:
            y = self.contraction(inputs, w, self.reconciliation)
        return y if bias is None else y + bias

    def product(self, z: Tensor) -> Tensor:
        """fuse_c ⟨κ(z), ψ(w^c)⟩ for z of shape (*, m'), keeping the leading shape."""
        if z.dim() == 2:
            return self.expansion_product(z)
        y = self.expansion_product(z.reshape(-1, z.shape[-1]))
        return y.reshape(*z.shape[:-1], y.shape[-1])

    def forward(self, x: Tensor) -> Tensor:
        if self.xi is not None:
            return self._forward_xi(x)
        x, lead = model_input(x, self.m, self.w.dtype, "RPNHead")
        fused = self.fused
        add_remainder = self.has_remainder
        if fused is not None and fused.available(x):
            y = fused.run(x, self.w, self.bias, self._planned)
            add_remainder = add_remainder and not self.fused_folds_remainder
        else:
            y = self._planned(x, self.w, self.bias)
        if add_remainder:  # π = 0 adds nothing: no zero block, no add (and its backward)
            y = y + self.remainder(x)
        if len(self.output):
            y = apply_list(self.output, y)
        return y if len(lead) == 1 else _restore(y, lead)

    def forward_stacked(self, x: Tensor) -> Tensor:
        """S stacked copies of this head at once (batched seeds): its parameters hold (S, ...)
        tensors (swapped in by the caller), x is (B, m) shared by the copies or (S, B, m);
        output (S, B, n). Only the fused product runs so (:mod:`rpnkit.fused_stacked`); any
        other head raises :class:`~rpnkit.fused_stacked.NotStackable`."""
        from .fused_stacked import NotStackable

        fused = self.fused
        if (self.xi is not None or fused is None or x.dim() not in (2, 3)
                or x.shape[-1] != self.m or not fused.available(x)
                or (self.has_remainder and not self.fused_folds_remainder)):
            raise NotStackable("RPNHead: no fused product for stacked copies")
        if x.dtype != self.w.dtype:
            x = x.to(self.w.dtype)
        y = fused.run_stacked(x, self.w, self.bias, self._planned)
        return apply_list(self.output, y) if len(self.output) else y

    def _forward_xi(self, x: Tensor) -> Tensor:
        """``fuse_c ⟨κ(ξ(X)), ψ(w^c)⟩ + b + π(X)``: input keeps its layout ``(*, sites, m)``,
        so ξ sees the tokens or nodes along dimension -2."""
        if not isinstance(x, Tensor):
            raise TypeError(f"RPNHead expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.m:
            raise ValueError(f"RPNHead expects input of shape (*, {self.m}), got {tuple(x.shape)}")
        if x.dtype != self.w.dtype:
            x = x.to(self.w.dtype)
        st = self.xi_structure
        if x.dim() < st.min_rank:
            raise ValueError(
                f"RPNHead: ξ {st.name!r} relates the positions along dimension -2 (tokens or "
                f"instances of one sample); a {x.dim()}-D input {tuple(x.shape)} would mix the "
                f"rows of the batch, so a prediction would depend on the batch size. Give input "
                f"of shape (batch, sites, {self.m}) (e.g. x.unsqueeze(1) for one site, or the "
                f"tokens of each sample), or use an attribute-level ξ such as 'parameterised'"
            )
        y = self.xi.mix(self.product(x), x) if self.reorder else self.product(self.xi(x))
        if self.bias is not None:
            y = y + self.bias
        if self.has_remainder:
            y = y + self.remainder(x.reshape(-1, self.m)).reshape(*x.shape[:-1], -1)
        return apply_list(self.output, y)

    def input_range_problem(self, x: Tensor) -> str | None:
        """A message when x leaves the range the expansion keeps finite (None when inside or
        when pre-processing bounds it); one reduction and one host sync."""
        if (self.xi is not None or len(self.expansion.preprocess)
                or not torch.is_floating_point(x) or x.numel() == 0):
            return None
        limit = self.expansion.safe_abs(self.w.dtype)
        if limit is None:
            return None
        top = float(x.detach().abs().max())
        if top != top:
            return (f"expansion {self.expansion.registry_name!r} receives NaN inputs (an earlier "
                    f"layer overflowed or the data holds NaN)")
        if top <= limit:
            return None
        return (f"expansion {self.expansion.registry_name!r} sees inputs up to |x| = {top:.3g}, "
                f"beyond {limit:.3g} where it overflows in {self.w.dtype}; add a preprocess such "
                f"as tanh or layer_norm (expansion_params: {{preprocess: [tanh]}}) or "
                f"standardise the data")

    def structure(self) -> HeadStructure:
        """What this head's components declare (:mod:`rpnkit.structure`), with the planned
        path: κ's :class:`~rpnkit.structure.ExpansionStructure` at width m and ψ's
        :class:`~rpnkit.structure.ReconciliationStructure` at (n, D)."""
        return HeadStructure(self.expansion.structure(self.m_xi),
                             self.reconciliation.structure(self.n, self.D),
                             self.xi_structure, self.contraction.path)

    def plan(self) -> str:
        """The stored plan of the forward pass: the path that runs and why."""
        text = self.contraction.describe()
        if self.fused is not None:
            text += "\n" + self.fused.describe()
        if self.channel_fuser is not None:
            text += f"\nchannels fused by {self.channel_fuser.registry_name}"
        st = self.xi_structure
        if st is None:
            return text
        order = "A(X)·⟨X, ψ(w)⟩ (ξ after the product)" if self.reorder else "⟨κ(ξ(X)), ψ(w)⟩"
        rows = ("; input (*, sites, m): rows of dimension -2 are related" if st.min_rank > 2
                else "; a 2-D input is one whole instance set (transductive)" if st.transductive
                else "")
        return f"ξ {st.name}: {st.form}, {st.side} side{rows}; order {order}\n" + text

    explain = plan

    def extra_repr(self) -> str:
        return (
            f"m={self.m}, " + (f"m'={self.m_xi}, " if self.xi is not None else "")
            + f"n={self.n}, D={self.D}, l={self.l}, channels={self.channels}, "
            f"channel_fusion={self.channel_fusion!r}, bias={self.bias is not None}, "
            f"path={self.contraction.path!r}"
        )

    def __repr__(self) -> str:
        return compact_repr(self, {"expansion": "κ", "reconciliation": "ψ", "remainder": "π",
                                   "xi": "ξ"}, skip=("contraction", "fused"))


def _interdependence(spec: Any, params: Any):
    """ξ from a module, a registry name or a mapping (deep-copied: each head owns its ξ)."""
    from .interdependence.base import Interdependence
    from .registry import INTERDEPENDENCES

    if isinstance(spec, nn.Module):
        if not isinstance(spec, Interdependence):
            raise ConfigurationError(
                f"interdependence must be an rpnkit Interdependence, got {type(spec).__name__}")
        if params:
            raise ConfigurationError("interdependence_params given with an already-built module")
        return spec
    return INTERDEPENDENCES.resolve(copy.deepcopy(spec), copy.deepcopy(params))


def _migrate_interdependent_keys(state_dict: dict, prefix: str) -> None:
    """State dicts saved when RPN 2 heads wrapped an inner RPNHead (``inner.0.*``,
    ``channel_fusion.*``) load into the one head type."""
    inner = prefix + "inner."
    old = [k for k in state_dict if k.startswith(inner)]
    if not old:
        pass
    elif any(not k.startswith(inner + "0.") for k in old):
        raise ConfigurationError(
            f"{prefix or 'head'}: this state dict holds one inner head per channel (saved by an "
            f"older rpnkit with a non-sum channel fusion); it cannot be loaded into this version"
        )
    else:
        for k in old:
            state_dict[prefix + k[len(inner) + 2:]] = state_dict.pop(k)
    for k in [k for k in state_dict if k.startswith(prefix + "channel_fusion.")]:
        state_dict[prefix + "channel_fuser." + k[len(prefix + "channel_fusion."):]] = \
            state_dict.pop(k)
