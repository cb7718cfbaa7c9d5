"""RPNLayer: H heads on the same input, fused by sum / mean / concat / linear."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigurationError, did_you_mean
from .fusion import Fusion, build_fusion
from .head import MAX_HEADS, RPNHead, _restore, check_dim, model_input
from .modules import apply_list, bind_module_list, build_module_list, compact_repr
from .pruning import accept_masks
from .seeding import derive_seed
from .spec import HEAD_FIELDS, HeadSpec

__all__ = ["RPNLayer", "HEAD_FUSIONS"]

HEAD_FUSIONS = ("sum", "mean", "concat", "linear")
#: head options a layer forwards to the heads it builds (a head's ``output`` is the layer's
#: ``head_output``; the layer's own ``output`` acts on the fused result)
LAYER_HEAD_OPTIONS = tuple(f for f in HEAD_FIELDS if f != "output")


class RPNLayer(nn.Module):
    """A layer of H heads: ``fuse_h(head_h(x))``, then optional output modules.

    Args:
        m, n: input width and **output** width of the layer. With ``concat`` fusion the
            head widths sum to n (built heads split n evenly).
        heads: the heads (``RPNHead`` instances). When omitted, ``num_heads`` heads are
            built from the head options (:class:`~rpnkit.spec.HeadSpec`: expansion,
            reconciliation, remainder, channels, bias, init, seed, ...). Each built head gets
            its own components and random state (masks, random matrices, hypernets): drawn
            from torch's generator, or, when ``seed`` is given, head i from
            ``rpnkit.seeding.derive_seed(seed, i)`` (independent streams per head).
        fusion: ``"sum"`` (default, the model's definition), ``"mean"``, ``"concat"`` or
            ``"linear"`` (a learned map from the concatenation to n, initialised to the mean
            of the heads when they all have width n); in a layer whose heads have a ξ also any
            :data:`~rpnkit.registry.FUSIONS` name, mapping or module (``max``, ``weighted``,
            ``learned``, ...), kept as ``fuser``.
        output: module(s) applied to the fused output (activation, norm, dropout).
        head_output: module(s) applied to each built head's output.
        device, dtype: factory arguments, as in ``nn.Linear``.
    """

    def __init__(
        self,
        m: int,
        n: int,
        heads: Sequence[RPNHead] | None = None,
        fusion: str = "sum",
        num_heads: int = 1,
        output: Any = None,
        head_output: Any = None,
        *,
        device: Any = None,
        dtype: torch.dtype | None = None,
        **head_options: Any,
    ) -> None:
        super().__init__()
        self.m = check_dim("m", m, "RPNLayer")
        self.n = check_dim("n", n, "RPNLayer")
        # sum / mean / concat / linear are the layer's own (closed forms for inspection and
        # symbolic export); any other fusion object fuses the heads of an RPN 2 layer
        self.fuser: Fusion | None = None
        if not (isinstance(fusion, str) and fusion in HEAD_FUSIONS):
            xi = head_options.get("interdependence") is not None or (
                heads is not None and any(getattr(h, "xi", None) is not None for h in heads))
            if not xi:
                raise ConfigurationError(
                    f"RPNLayer: fusion must be one of {HEAD_FUSIONS}, got {fusion!r} (fusion "
                    f"objects fuse the heads of a layer with an interdependence)"
                )
            self.fuser = build_fusion(fusion)
            fusion = self.fuser.registry_name
        self.fusion = fusion
        for key in head_options:
            if key not in LAYER_HEAD_OPTIONS:
                valid = (*LAYER_HEAD_OPTIONS, "head_output")
                raise ConfigurationError(
                    f"RPNLayer: unknown head option {key!r}{did_you_mean(key, valid)}; "
                    f"valid: {', '.join(valid)}"
                )
        factory = {"device": device, "dtype": dtype}
        if heads is None:
            num_heads = check_dim("num_heads", num_heads, "RPNLayer", MAX_HEADS)
            if fusion == "concat" or (self.fuser is not None and self.fuser.splits_width):
                if self.n % num_heads:
                    raise ConfigurationError(
                        f"RPNLayer: concat fusion splits n={self.n} over {num_heads} heads; "
                        f"n must be divisible by the number of heads"
                    )
                head_n = self.n // num_heads
            else:
                head_n = self.n
            spec = HeadSpec(**head_options, output=head_output)
            seed = spec.seed
            heads = []
            for i in range(num_heads):
                one = HeadSpec(**{**spec.as_dict(),
                                  "seed": None if seed is None else derive_seed(seed, i)})
                heads.append(one.build(self.m, head_n, **factory))
        elif head_options or head_output is not None:
            raise ConfigurationError(
                f"RPNLayer: head options {sorted(head_options)} given together with built heads"
            )
        heads = list(heads)
        if not heads:
            raise ConfigurationError("RPNLayer: needs at least one head")
        for i, h in enumerate(heads):
            if not isinstance(h, RPNHead):
                raise ConfigurationError(
                    f"RPNLayer: head {i} is a {type(h).__name__}, expected RPNHead"
                )
            if h.m != self.m:
                raise ConfigurationError(
                    f"RPNLayer(m={self.m}): head {i} takes m={h.m} inputs; every head must take "
                    f"the layer's m={self.m}"
                )
        widths = [h.n for h in heads]
        self.interdependent = any(h.xi is not None for h in heads)
        if self.fuser is not None:
            fused = self.fuser.bind(widths, **factory)
            if fused != self.n:
                raise ConfigurationError(
                    f"RPNLayer(n={self.n}): the {self.fusion} fusion of head widths {widths} "
                    f"gives {fused}")
        if fusion in ("sum", "mean") and any(w != self.n for w in widths):
            raise ConfigurationError(
                f"RPNLayer(n={self.n}) with {fusion!r} fusion needs every head to output n={self.n}, "
                f"got head widths {widths}"
            )
        if fusion == "concat" and sum(widths) != self.n:
            raise ConfigurationError(
                f"RPNLayer(n={self.n}) with 'concat' fusion: n is the layer's output width, the "
                f"sum of the head widths, but the heads are {widths} wide (sum {sum(widths)}); "
                f"pass n={sum(widths)}"
            )
        self.heads = nn.ModuleList(heads)
        self.fusion_linear: nn.Linear | None = None
        if fusion == "linear":
            self.fusion_linear = nn.Linear(sum(widths), self.n, bias=False, **factory)
        self.output = build_module_list(output)
        bind_module_list(self.output, self.n)
        self._reset_fusion()
        if device is not None or dtype is not None:
            self.output.to(**{k: v for k, v in factory.items() if v is not None})
        accept_masks(self)  # a pruned state_dict (rpnkit.prune) loads into a fresh layer

    def _reset_fusion(self) -> None:
        lin = self.fusion_linear
        if lin is None:
            return
        widths = [h.n for h in self.heads]
        if all(w == self.n for w in widths):  # start as the mean of the heads
            with torch.no_grad():
                eye = torch.eye(self.n, dtype=lin.weight.dtype, device=lin.weight.device)
                lin.weight.copy_(torch.cat([eye / len(widths)] * len(widths), dim=1))
        else:
            lin.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise every head, the linear fusion and the output modules."""
        for h in self.heads:
            h.reset_parameters()
        self._reset_fusion()
        if self.fuser is not None:
            for mod in self.fuser.modules():
                if hasattr(mod, "reset_parameters") and mod is not self.fuser:
                    mod.reset_parameters()
            if hasattr(self.fuser, "reset_parameters"):
                self.fuser.reset_parameters()
        for mod in self.output:
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()

    @property
    def dtype(self) -> torch.dtype:
        return self.heads[0].w.dtype

    def forward(self, x: Tensor) -> Tensor:
        if self.interdependent:  # ξ relates positions along dimension -2: keep the layout
            if not isinstance(x, Tensor):
                raise TypeError(f"RPNLayer expects a torch.Tensor, got {type(x).__name__}")
            return apply_list(self.output, self.fuse([h(x) for h in self.heads]))
        x, lead = model_input(x, self.m, self.dtype, "RPNLayer")
        return _restore(apply_list(self.output, self.fuse([h(x) for h in self.heads])), lead)

    def forward_stacked(self, x: Tensor) -> Tensor:
        """S stacked copies of the layer (see :meth:`RPNHead.forward_stacked`): heads fused
        by sum, mean or concatenation, no ξ and no parametrised fusion."""
        from .fused_stacked import NotStackable

        if self.interdependent or self.fuser is not None or self.fusion_linear is not None:
            raise NotStackable("RPNLayer: interdependence or a parametrised fusion")
        return apply_list(self.output, self.fuse([h.forward_stacked(x) for h in self.heads]))

    def fuse(self, outs: list[Tensor]) -> Tensor:
        """fuse_h of the heads' outputs (along the last dimension)."""
        if self.fuser is not None:
            return self.fuser(outs)
        if self.fusion in ("sum", "mean"):
            y = outs[0]
            for o in outs[1:]:
                y = y + o
            if self.fusion == "mean" and len(outs) > 1:
                y = y / len(outs)
            return y
        y = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
        return self.fusion_linear(y) if self.fusion_linear is not None else y

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # saved by the former InterdependentLayer, whose fusion object was ``fusion``
        for k in [k for k in state_dict if k.startswith(prefix + "fusion.")]:
            state_dict[prefix + "fuser." + k[len(prefix + "fusion."):]] = state_dict.pop(k)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def plan(self) -> str:
        lines = [f"RPNLayer {self.m}->{self.n}, {len(self.heads)} head(s), {self.fusion} fusion"]
        for i, h in enumerate(self.heads):
            lines += [f"  head {i}: " + h.plan().replace("\n", "\n    ")]
        return "\n".join(lines)

    def extra_repr(self) -> str:
        return f"m={self.m}, n={self.n}, heads={len(self.heads)}, fusion={self.fusion!r}"

    def __repr__(self) -> str:
        return compact_repr(self)
