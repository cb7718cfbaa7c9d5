"""The fused small-head product with a KAN base branch folded in (issue 21 item 2).

A KAN head is ``κ(x) Wᵀ + act(x) W'ᵀ`` (:class:`~rpnkit.models.classic.KANBaseRemainder`:
the remainder's activation acts on the input). For a tiny head the base branch as its own
module costs as much as the spline part (activation, product and add forward; their three
autograd nodes backward). :class:`FusedBaseProduct` wraps the head's
:class:`~rpnkit.contract.FusedHeadProduct` and computes both terms in one autograd node:
κ written by the expansion's fused part into one (B, D + 1) buffer, ``y = K Wᵀ + b`` and
``y += act(x) W'ᵀ`` by two GEMMs; backward: the weight gradients by two GEMMs, dL/dK by one,
dL/dx by the part's analytic rule plus ``act'(x) ⊙ (g W')``.

The remainder takes part when it declares :meth:`fused_input_activation` (``"silu"`` or
``"identity"``; None: not foldable) and has no hooks of its own. Where the fused product does
not run (compile, export, ``torch.func``, autocast, non-uniform knots) the head adds the
remainder module's output as before; under ``create_graph`` the backward differentiates the
planned path plus the remainder module, so double backward is exact.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from .contract import FusedHeadProduct, _FusedHead, has_hooks
from .expansion._spline import functorch_active

__all__ = ["FusedBaseProduct"]

_ACTIVATIONS = ("silu", "identity")


class FusedBaseProduct(FusedHeadProduct):
    """A :class:`~rpnkit.contract.FusedHeadProduct` that also computes the head's input-side
    linear remainder ``act(x) W'ᵀ [+ b']`` (:meth:`wrap`). The remainder stays the head's
    module (its parameters, state dict and closed form are unchanged); this product only
    reads its ``weight`` and ``bias`` on every call."""

    folds_remainder = True

    def __init__(self, fused: FusedHeadProduct, remainder: nn.Module, activation: str) -> None:
        super().__init__(fused.part, fused.n, fused.D, fused.rank)
        self.rem = (remainder,)  # not a submodule: the head owns the remainder
        self.activation = activation
        self._act_type = nn.SiLU if activation == "silu" else type(None)

    @staticmethod
    def wrap(fused: FusedHeadProduct | None, remainder: nn.Module) -> FusedHeadProduct | None:
        """``fused`` with ``remainder`` folded in where the remainder declares it
        (``fused_input_activation()`` in :data:`_ACTIVATIONS`); else ``fused`` unchanged."""
        declare = getattr(remainder, "fused_input_activation", None)
        act = declare() if fused is not None and declare is not None else None
        if act not in _ACTIVATIONS:
            return fused
        return FusedBaseProduct(fused, remainder, act)

    def ready(self) -> bool:
        # cheap per-call checks (dictionary reads): the activation is still the one planned
        # and nobody hooked the remainder (its hooks would not run here)
        rem = self.rem[0]
        return (super().ready() and type(rem._modules.get("activation")) is self._act_type
                and not has_hooks(rem))

    def _whole(self, plain):
        act = self.activation

        def whole(x, w, bias, w2, b2):  # the planned path + the remainder, differentiable
            y = plain(x, w, bias) + (F.silu(x) if act == "silu" else x) @ w2.t()
            return y if b2 is None else y + b2

        return whole

    def run(self, x: Tensor, w: Tensor, bias: Tensor | None, plain) -> Tensor:
        rem = self.rem[0]
        whole = self._whole(plain)
        if functorch_active():  # a single vmap (available): its batched rule
            from .fused_stacked import FusedVmap

            return FusedVmap.apply(x, w, bias, rem.weight, rem.bias, self, whole)
        return _FusedHead.apply(x, w, bias, rem.weight, rem.bias, self, whole)

    def forward(self, x: Tensor, w: Tensor, bias: Tensor | None, plain) -> Tensor:
        return self.run(x, w, bias, plain)

    def run_stacked(self, x: Tensor, w: Tensor, bias: Tensor | None, plain) -> Tensor:
        from .fused_stacked import run_stacked

        rem = self.rem[0]
        return run_stacked(self, x, w, bias, rem.weight, rem.bias, self._whole(plain))

    def describe(self) -> str:
        return (super().describe() + f"; remainder {self.activation}(x) W'ᵀ folded into the "
                "same node")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", remainder={self.activation}"
