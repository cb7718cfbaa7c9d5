"""The fused small-head product for S stacked copies of a model (batched seeds, issue 21).

The fused product (:class:`~rpnkit.contract.FusedHeadProduct`, with or without a folded
KAN base branch, :mod:`rpnkit.fused_remainder`) is one custom autograd node that writes into
preallocated buffers. For S copies of one model trained together
(:mod:`rpnkit.training.seeds`) the S copies of a head run as one :class:`_FusedStacked` node:

* κ is filled once for an input shared by every copy (the same minibatch for all), or for all
  S·B rows at once, by the expansion's fused part;
* the products are batched GEMMs over the stacked weights (S, ...), the backward one
  analytic node (weights by batched GEMMs, dL/dK by one, dL/dx by the part's rule);
* under ``create_graph`` the backward differentiates the vmapped planned path, so double
  backward stays exact.

Two ways in. **Natively**: ``RPN.forward_stacked`` (and the layer's and head's) run a plain
chain of fused heads on stacked parameters swapped into the model, with no ``torch.func``
at all (the engine checks it against the vmapped model on the first batch and otherwise
keeps vmap); a module that cannot run so raises :class:`NotStackable`. **Under
``torch.func.vmap``**: :class:`FusedVmap` is the fused product as a Function with a vmap
rule, taken when exactly one vmap is active and the part's own tensors are unbatched
(:func:`vmap_ready`); nested transforms, ``grad``/``jvp`` and copies whose knots differ take
the planned path.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .contract import head_backward, head_forward

__all__ = ["FusedVmap", "NotStackable", "run_stacked", "vmap_ready"]


class NotStackable(RuntimeError):
    """A module cannot run its S stacked copies natively (``forward_stacked``); the caller
    falls back to ``torch.func.vmap``."""


def vmap_ready(tensors) -> bool:
    """Whether the functorch transforms now active are exactly one ``vmap`` and none of
    ``tensors`` (the fused part's and its expansion's own tensors) is batched by it."""
    from torch._C._functorch import TransformType, is_batchedtensor
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    stack = retrieve_all_functorch_interpreters()
    if len(stack) != 1 or stack[0].key() != TransformType.Vmap:
        return False
    return not any(is_batchedtensor(t) for t in tensors)


class _FusedStacked(torch.autograd.Function):
    """S stacked copies of ``κ(x) ψ(w)ᵀ + b [+ act(x) W'ᵀ + b']`` in one node: x (B, m)
    shared or (S, B, m), every other tensor with a leading S; output (S, B, n)."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, bias, w2, b2, plan, whole, shared: bool) -> Tensor:
        y, saved = head_forward(plan, x, w, bias, w2, b2, ctx.needs_input_grad[0],
                                seeds=w.shape[0])
        ctx.save_for_backward(x, w, bias, w2, b2)
        ctx.saved, ctx.plan, ctx.whole, ctx.shared = saved, plan, whole, shared
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w, bias, w2, b2 = ctx.saved_tensors
        needs = ctx.needs_input_grad[:5]
        ins = (x, w, bias, w2, b2)
        if torch.is_grad_enabled():  # create_graph: the vmapped planned path, differentiable
            dims = tuple(None if t is None or (i == 0 and ctx.shared) else 0
                         for i, t in enumerate(ins))
            y = torch.func.vmap(ctx.whole, in_dims=dims)(*ins)
            want = [t for t, need in zip(ins, needs) if need]
            got = iter(torch.autograd.grad(y, want, g, create_graph=True, allow_unused=True))
            return (*(next(got) if need else None for need in needs), None, None, None)
        grads = head_backward(ctx.plan, ctx.saved, x, w, w2, g, needs, seeds=w.shape[0])
        return (*grads, None, None, None)


class FusedVmap(torch.autograd.Function):
    """The fused product as a Function ``torch.func.vmap`` can batch (its :meth:`vmap` rule
    runs :class:`_FusedStacked`). Called unbatched (no input batched at the vmap level) it
    computes ``whole`` (the planned path) and differentiates it in backward."""

    @staticmethod
    def forward(x, w, bias, w2, b2, plan, whole):
        return whole(x, w, bias, w2, b2)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:5])
        ctx.whole = inputs[6]

    @staticmethod
    def backward(ctx, g: Tensor):
        ins = ctx.saved_tensors
        needs = ctx.needs_input_grad[:5]
        with torch.enable_grad():
            y = ctx.whole(*ins)
            want = [t for t, need in zip(ins, needs) if need]
            got = iter(torch.autograd.grad(y, want, g, create_graph=torch.is_grad_enabled(),
                                           allow_unused=True))
        return (*(next(got) if need else None for need in needs), None, None)

    @staticmethod
    def vmap(info, in_dims, x, w, bias, w2, b2, plan, whole):
        S = info.batch_size

        def stacked(t, dim):
            if t is None:
                return None
            return t.movedim(dim, 0) if dim is not None else t.expand(S, *t.shape)

        shared = in_dims[0] is None
        xs = x if shared else x.movedim(in_dims[0], 0)
        y = _FusedStacked.apply(xs, *(stacked(t, dim) for t, dim in zip(
            (w, bias, w2, b2), in_dims[1:5])), plan, whole, shared)
        return y, 0


def run_stacked(plan, x: Tensor, w: Tensor, bias, w2, b2, whole) -> Tensor:
    """S stacked copies of the fused product, natively (no ``torch.func``): x (B, m) shared
    or (S, B, m), w (S, ...), bias / w2 / b2 (S, ...) or None; output (S, B, n)."""
    return _FusedStacked.apply(x, w, bias, w2, b2, plan, whole, x.dim() == 2)
