"""Grids that follow the data: :func:`update_grid` and :func:`refine_grid`.

An expansion declares its grids in its Structure (:meth:`~rpnkit.expansion.Expansion.structure`:
each basis block with its grid and the chain of modules from the head's input to the values
its basis sees: the pre-processing of every enclosing composite, the expansions a ``nested``
applies before it, the leaf's own pre-processing), :meth:`~rpnkit.expansion.Expansion.grid_layout` (``t``
intervals, ``d`` outer knots) and :meth:`~rpnkit.expansion.Expansion.set_grid`.
:func:`update_grid` moves every such grid of a head to the range of the values its leaf sees
on the data (optionally blended with their quantiles) and re-fits the head's weights by least
squares so that its output on the data is preserved:
``min_W ‖κ_new(x) Wᵀ − κ_old(x) W_oldᵀ‖² + λ‖W‖²``.

The least-squares refit is exact (closed form) for reconciliations whose reconciled matrix
*is* the parameter vector (``identity``: KAN); for others (``lorr``, ...) the parameters are
refitted by L-BFGS on the same objective, starting from their current values.

:func:`refine_grid` gives a copy of the model whose spline components have more intervals,
with the same function (least squares again) — train on at a finer resolution.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import ConfigurationError
from .head import RPNHead

__all__ = ["update_grid", "refine_grid", "grid_components"]


def grid_components(head: RPNHead) -> list[nn.Module]:
    """The expansions of ``head`` whose grid :func:`update_grid` moves (declared by
    a basis block with a grid in its Structure and a ``grid_layout()``)."""
    return [g.leaf for g in _grid_leaves(head)]


def _grid_leaves(head: RPNHead) -> list:
    """The basis blocks of the head's declared structure whose grid may move (B-splines),
    each with the chain of modules from the head's input to the values its basis sees."""
    return [b for b in head.expansion.structure(head.m).bases
            if b.grid is not None and b.leaf.grid_layout() is not None]


def _heads_with_inputs(model: nn.Module, x: Tensor) -> list[tuple[RPNHead, Tensor]]:
    """Every head with the input it sees on x (layers in order)."""
    from .layer import RPNLayer
    from .model import RPN

    if isinstance(model, RPNHead):
        return [(model, x)]
    layers = list(model.layers) if isinstance(model, RPN) else [model] if isinstance(
        model, RPNLayer) else None
    if layers is None:
        raise ConfigurationError(f"update_grid: cannot read a {type(model).__name__}; give an "
                                 "RPN, RPNLayer or RPNHead")
    from .inspection import _plain_layers

    _plain_layers(layers, "update_grid")
    out = []
    h = x
    for layer in layers:
        out.extend((head, h) for head in layer.heads)
        h = layer(h)
    return out


def _new_knots(u: Tensor, t: int, d: int, margin: float, grid_eps: float,
               dtype: torch.dtype) -> Tensor:
    v = u.detach().reshape(-1).to(torch.float64)
    v = v[torch.isfinite(v)]
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = margin * (hi - lo)
    lo, hi = lo - pad, hi + pad
    uniform = torch.linspace(lo, hi, t + 1, dtype=torch.float64)
    if grid_eps < 1.0:
        q = torch.quantile(v, torch.linspace(0, 1, t + 1, dtype=torch.float64))
        q[0], q[-1] = lo, hi
        inner = grid_eps * uniform + (1.0 - grid_eps) * q
        inner, _ = torch.sort(inner)
    else:
        inner = uniform
    h_lo = inner[1] - inner[0]
    h_hi = inner[-1] - inner[-2]
    left = inner[0] - h_lo * torch.arange(d, 0, -1, dtype=torch.float64)
    right = inner[-1] + h_hi * torch.arange(1, d + 1, dtype=torch.float64)
    return torch.cat([left, inner, right]).to(dtype)


def _dense_identity(head: RPNHead) -> bool:
    """Whether ψ(w) is w itself, reshaped n×D, as the reconciliation declares its form."""
    form = head.structure().reconciliation.form
    return bool(getattr(form, "reshape", False))


def _refit(head: RPNHead, k_new: Tensor, target: Tensor, ridge: float, steps: int) -> None:
    """Fit head.w so that fuse_c(κ_new ψ(w^c)ᵀ) ≈ target (B, n)."""
    C = head.channels
    fuse = (1.0 / C) if head.channel_fusion == "sum" else 1.0
    if _dense_identity(head):
        kd = k_new.to(torch.float64)
        g = kd.T @ kd
        lam = ridge * float(torch.diagonal(g).mean().clamp_min(1e-12))
        g = g + lam * torch.eye(g.shape[0], dtype=torch.float64, device=g.device)
        W = torch.linalg.solve(g, kd.T @ target.to(torch.float64)).T  # (n, D)
        with torch.no_grad():
            for c in range(C):
                head.w[c].copy_((W * fuse).reshape(-1).to(head.w.dtype))
        return
    if head.l == 0:
        return
    w = head.w
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-16, history_size=50)
    kd = k_new.detach().to(w.dtype)
    tg = target.detach().to(w.dtype)
    norm = float((tg * tg).mean().clamp_min(1e-30))

    def closure():
        opt.zero_grad()
        Ws = torch.stack([head.reconciliation.reconcile(w[c], head.n, head.D) for c in range(C)])
        W = Ws.sum(0) if head.channel_fusion == "sum" else Ws.mean(0)
        loss = ((kd @ W.T - tg) ** 2).mean() / norm
        loss.backward()
        return loss

    opt.step(closure)
    w.grad = None


def _dense_w(head: RPNHead) -> Tensor:
    Ws = head.reconciled_weights()
    return Ws.sum(0) if head.channel_fusion == "sum" else Ws.mean(0)


def update_grid(
    model: nn.Module,
    x: Any,
    margin: float = 0.01,
    grid_eps: float = 1.0,
    ridge: float = 1e-8,
    steps: int = 200,
) -> dict[str, Any]:
    """Move every spline grid to the data and keep the model's function on it.

    Args:
        model: an RPN, RPNLayer or RPNHead; heads without a grid are left alone.
        x: samples (B, m) in the model's input units (the training inputs).
        margin: fraction of the data range added on each side.
        grid_eps: 1 gives uniform knots over the range (the fast local basis path);
            smaller values blend in the data's quantiles (``grid_eps·uniform +
            (1 − grid_eps)·quantiles``, pykan's convention), the basis then follows the
            Cox–de Boor definition.
        ridge: relative Tikhonov weight of the least-squares refit.
        steps: L-BFGS iterations for reconciliations that are not the identity.

    Returns:
        ``{"heads": count updated, "max_change": largest |Δoutput| on x}``.
    """
    from .inspection import _plain_layers
    from .model import RPN

    if isinstance(model, RPN):
        _plain_layers(list(model.layers), "update_grid")
    p = next(model.parameters())
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    xt = xt.to(device=p.device, dtype=p.dtype)
    was = model.training
    model.eval()
    updated = 0
    try:
        with torch.no_grad():
            before = model(xt)
        # layers in order: each head sees the (preserved) output of the earlier layers
        for head, h in _heads_with_inputs(model, xt):
            leaves = _grid_leaves(head)
            if not leaves:
                continue
            h = head.check_input(h)
            with torch.no_grad():
                k_old = head.expansion(h)
                target = k_old @ _dense_w(head).T
            for g in leaves:
                t, d = g.leaf.grid_layout()
                with torch.no_grad():
                    u = g.inputs(h)  # the values the leaf's basis sees
                new = _new_knots(u, int(t), int(d), margin, grid_eps, g.grid.dtype)
                if new.numel() != g.grid.numel():
                    raise ConfigurationError(
                        f"update_grid: {type(g.leaf).__name__} has {g.grid.numel()} knots, "
                        f"expected t + 2d + 1 = {new.numel()}"
                    )
                g.leaf.set_grid(new)
            with torch.no_grad():
                k_new = head.expansion(h)
            _refit(head, k_new, target, ridge, steps)
            updated += 1
        with torch.no_grad():
            after = model(xt)
    finally:
        model.train(was)
    change = float((after - before).abs().max()) if updated else 0.0
    return {"heads": updated, "max_change": change}


def refine_grid(model: nn.Module, x: Any, t: int, **kwargs: Any) -> nn.Module:
    """A copy of ``model`` whose spline grids have ``t`` intervals, fitted to the same function.

    Works for heads whose reconciliation is the identity (KAN and other heads with
    ψ = identity): the copy's heads are rebuilt with the finer expansion and their weights
    solved by least squares against the original heads' outputs on ``x`` (then
    :func:`update_grid` places the new grid on the data). Other heads are copied unchanged.
    """
    from .layer import RPNLayer
    from .model import RPN

    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise ConfigurationError(f"refine_grid: t must be a positive integer, got {t!r}")
    new = copy.deepcopy(model)
    p = next(model.parameters())
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(
        device=p.device, dtype=p.dtype)
    pairs_old = _heads_with_inputs(model, xt)
    layers = list(new.layers) if isinstance(new, RPN) else [new] if isinstance(new, RPNLayer) \
        else None
    if layers is None:
        raise ConfigurationError("refine_grid: give an RPN or RPNLayer")
    k = 0
    for layer in layers:
        for hi, head in enumerate(list(layer.heads)):
            old, h = pairs_old[k]
            k += 1
            if not grid_components(head) or not _dense_identity(head):
                continue
            expansion = copy.deepcopy(head.expansion)
            for g in _grid_leaves(head):
                comp = g.leaf
                t_old, d = comp.grid_layout()
                lo, hi_ = float(g.grid[d]), float(g.grid[d + t_old])
                if comp.has_processing():
                    raise ConfigurationError("refine_grid: a grid component with pre/post-"
                                             "processing of its own cannot be rebuilt")
                fresh = type(comp)(**{**comp.hparams(), "range": (lo, hi_), "t": t})
                if comp is head.expansion:
                    expansion = fresh
                else:
                    path = _path_of(head.expansion, comp)
                    _set_path(expansion, path, fresh)
            rebuilt = RPNHead(
                head.m, head.n, expansion=expansion, reconciliation="identity",
                remainder=copy.deepcopy(head.remainder), channels=1,
                bias=head.bias is not None, output=copy.deepcopy(list(head.output)) or None,
                dtype=head.w.dtype, device=head.w.device,
            )
            with torch.no_grad():
                if head.bias is not None:
                    rebuilt.bias.copy_(head.bias)
                hh = old.check_input(h)
                target = old.expansion(hh) @ _dense_w(old).T
                k_new = rebuilt.expansion(hh)
            _refit(rebuilt, k_new, target, kwargs.get("ridge", 1e-8), 0)
            layer.heads[hi] = rebuilt
    update_grid(new, xt, **kwargs)
    return new


def _path_of(root: nn.Module, target: nn.Module) -> str:
    for name, mod in root.named_modules():
        if mod is target:
            return name
    raise ConfigurationError("refine_grid: grid component not found in the expansion")


def _set_path(root: nn.Module, path: str, fresh: nn.Module) -> None:
    *parents, last = path.split(".")
    parent = root
    for part in parents:
        parent = getattr(parent, part) if not part.isdigit() else parent[int(part)]
    if last.isdigit():
        parent[int(last)] = fresh
    else:
        setattr(parent, last, fresh)
