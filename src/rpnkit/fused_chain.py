"""A chain of fused small heads in one autograd node (issue 21 item 2).

A tiny deep RPN (the function-fitting papers' [2, 2, 1], [2, 2, 2, 1] RPN-Ext, a small KAN)
is a chain of layers that are each one head taking the fused small-head product
(:class:`~rpnkit.contract.FusedHeadProduct`, with or without KAN's folded base branch,
:mod:`rpnkit.fused_remainder`). Its step is dominated by per-call overhead, not arithmetic:
every layer and head is a module call with its own input checks, every head an autograd
node. :func:`chain_forward` runs the whole chain as one node instead:

* forward: layer by layer :func:`head_forward` (κ written into one buffer, two GEMMs, the
  base branch by one more), nothing else;
* backward: layer by layer in reverse :func:`head_backward` (weights by GEMMs, dL/dK by one,
  dL/dx by the part's analytic rule), stopping at the first layer whose input needs no
  gradient;
* under ``create_graph`` it differentiates the layers' planned paths, so double backward is
  exact.

:meth:`rpnkit.model.RPN.forward` takes it when every layer is exactly one such head with no
output modules, no ξ, no hooks, and every fused product is available now (eager, no
autocast, no ``torch.func``); otherwise the layers run as modules, as before.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .contract import FusedHeadProduct, has_hooks, head_backward, head_forward
from .expansion._spline import functorch_active
from .head import RPNHead
from .layer import RPNLayer

__all__ = ["chain_forward", "chain_heads"]


class _FusedChain(torch.autograd.Function):
    """The chain ``x -> head_1 -> ... -> head_L`` in one node; ``tensors`` holds per layer
    (w, bias, w2, b2), None where absent; ``seeds = S`` for S stacked copies (see
    :func:`head_forward`)."""

    @staticmethod
    def forward(ctx, x: Tensor, heads, seeds: int, *tensors):
        needs = ctx.needs_input_grad
        plans = [h._modules["fused"] for h in heads]
        upstream = needs[0]  # whether the current layer's input needs a gradient
        flags, states, saved, h = [], [], [], x
        for i, plan in enumerate(plans):
            w, b, w2, b2 = tensors[4 * i : 4 * i + 4]
            y, (k, u, s, state) = head_forward(plan, h, w, b, w2, b2, upstream, seeds)
            saved.append((h, k, u, s))
            flags.append(upstream)
            states.append(state)
            upstream = upstream or any(needs[3 + 4 * i : 7 + 4 * i])
            h = y
        # inputs through save_for_backward (version checks); the intermediates (layer
        # inputs, buffers, states: never seen outside this node) as attributes
        ctx.save_for_backward(x, *tensors)
        ctx.saved, ctx.plans, ctx.heads, ctx.flags, ctx.states, ctx.seeds = (
            saved, plans, heads, flags, states, seeds)
        return h

    @staticmethod
    def backward(ctx, g: Tensor):
        x, *tensors = ctx.saved_tensors
        n = len(tensors)
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph: the planned paths, differentiable
            ins = (x, *tensors)
            flags = (needs[0], *needs[3:])
            with torch.enable_grad():
                h = _plain_chain(ctx.heads, ctx.seeds, x, tensors)
                want = [t for t, need in zip(ins, flags) if need]
                got = iter(torch.autograd.grad(h, want, g, create_graph=True,
                                               allow_unused=True))
            out = [next(got) if need else None for need in flags]
            return (out[0], None, None, *out[1:])
        grads: list[Tensor | None] = [None] * n
        for i in range(len(ctx.plans) - 1, -1, -1):
            w, _, w2, _ = tensors[4 * i : 4 * i + 4]
            h, k, u, s = ctx.saved[i]
            need_x = ctx.flags[i]
            gx, *gp = head_backward(ctx.plans[i], (k, u, s, ctx.states[i]), h, w, w2, g,
                                    (need_x, *needs[3 + 4 * i : 7 + 4 * i]), ctx.seeds)
            grads[4 * i : 4 * i + 4] = gp
            if not need_x:
                break
            g = gx
        return (g if needs[0] else None, None, None, *grads)


def _plain_chain(heads, seeds: int, x: Tensor, tensors) -> Tensor:
    """The chain by the heads' planned paths (differentiable to any order); S stacked copies
    under ``torch.func.vmap``."""
    wholes = [_whole(head) for head in heads]

    def run(x, *ts):
        for i, whole in enumerate(wholes):
            x = whole(x, *ts[4 * i : 4 * i + 4])
        return x

    if not seeds:
        return run(x, *tensors)
    dims = (None if x.dim() == 2 else 0, *(None if t is None else 0 for t in tensors))
    return torch.func.vmap(run, in_dims=dims)(x, *tensors)


def chain_heads(layers, x: Tensor):
    """The heads of ``layers`` if every layer is exactly one head whose fused product is
    available now and nothing else acts (no output modules, ξ, hooks, unfolded remainder,
    ``torch.func`` transform); else None. (Read on every call, so a model changed after
    construction is followed; submodules are read from ``_modules`` directly, this being the
    tiny models' hot path.)"""
    if not FusedHeadProduct.eager(x) or functorch_active():  # (compiling: decided first)
        return None
    heads = []
    for layer in layers:
        if type(layer).forward is not RPNLayer.forward:
            return None
        mods = layer._modules
        hs = mods["heads"]._modules
        if (len(hs) != 1 or len(mods["output"]) or layer.interdependent
                or mods.get("fuser") is not None or mods.get("fusion_linear") is not None):
            return None
        (head,) = hs.values()
        hmods = head._modules
        fused = hmods.get("fused")
        if (type(head).forward is not RPNHead.forward or fused is None
                or "w" not in head._parameters  # (e.g. a parametrization of w)
                or hmods.get("xi") is not None or len(hmods["output"])
                or (head.has_remainder and not head.fused_folds_remainder)
                or has_hooks(layer, head) or not fused.ready()):
            return None
        heads.append(head)
    return heads


def chain_forward(heads, x: Tensor, seeds: int = 0) -> Tensor:
    """The chain of fused ``heads`` (from :func:`chain_heads`) on x (B, m), one node;
    ``seeds = S``: the heads hold S stacked copies (x (B, m) shared or (S, B, m))."""
    tensors = []
    for head in heads:
        p = head._parameters
        if head.fused_folds_remainder:
            rem = head._modules["fused"].rem[0]._parameters
            tensors += (p["w"], p.get("bias"), rem["weight"], rem.get("bias"))
        else:
            tensors += (p["w"], p.get("bias"), None, None)
    return _FusedChain.apply(x, tuple(heads), seeds, *tensors)


def _whole(head):
    """The head's planned path (+ its remainder when folded) as f(x, w, b, w2, b2): what the
    chain differentiates under ``create_graph``."""
    if head.fused_folds_remainder:
        return head.fused._whole(head._planned)
    return lambda x, w, b, w2, b2: head._planned(x, w, b)
