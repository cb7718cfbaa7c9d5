"""Sparsity and pruning of edges φ_ji (see :mod:`rpnkit.inspection`).

* :class:`Regularizer` — L1 and entropy penalties on the edges' coefficient magnitudes, to
  add to the training loss (``train.reg_l1`` / ``train.reg_entropy``).
* :func:`prune` — removes the edges whose importance on the data is below a threshold
  (relative to the largest in their layer), and the hidden nodes left without inputs or
  outputs: the parameter entries that serve only pruned edges are set to zero and masked,
  so they stay zero in later training (:func:`apply_masks`, called by the training engine
  after every optimiser step).

Which parameter entries serve which edge is asked of the components' definitions, not
their classes: the Jacobian of the dense reconciled matrix ψ(w) with respect to w (which
entries of w reach which columns W[j, ·]), the layout of κ (which columns belong to which
input, :func:`rpnkit.inspection._column_inputs`) and the gradient of the remainder's one-
input contributions π_j(u·e_i) with respect to its parameters. An entry shared by a kept
and a pruned edge (a low-rank factor) is kept; such edges are reported as not masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import ConfigurationError
from .head import RPNHead

__all__ = ["Regularizer", "prune", "apply_masks", "PruneReport", "edge_ownership"]

#: largest Jacobian (entries) computed for the ownership of w
MAX_JACOBIAN = 20_000_000


@dataclass
class _Ownership:
    """For one head: which parameter entries serve which edges (edge id j·m + i; the extra
    id n·m stands for columns that are not one-input edges)."""

    head: RPNHead
    columns: list  # per column of κ: frozenset of inputs
    w_uses: Tensor | None  # (C, l, n·m + 1) bool
    rem_uses: dict[str, Tensor]  # param name → (numel, n·m) bool


def _as_tensor(x: Any, like: Tensor) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    return t.to(device=like.device, dtype=like.dtype)


def _column_edges(head: RPNHead, columns: list) -> Tensor:
    """(n·D,) edge id of each entry of W (row-major), n·m for non-edge columns."""
    n, m = head.n, head.m
    col_in = torch.tensor([next(iter(s)) if len(s) == 1 else -1 for s in columns])
    j = torch.arange(n).view(n, 1).expand(n, len(columns))
    ids = j * m + col_in.view(1, -1)
    ids = torch.where(col_in.view(1, -1) >= 0, ids, torch.full_like(ids, n * m))
    return ids.reshape(-1)


def edge_ownership(head: RPNHead, x: Tensor) -> _Ownership:
    """Which entries of the head's parameters serve which edges (see the module docstring)."""
    from .inspection import N_PROBE, _column_inputs

    n, m, D = head.n, head.m, head.D
    x = head.check_input(x)[:N_PROBE]
    with torch.no_grad():
        columns, _ = _column_inputs(head.expansion, m, x)
    edges = _column_edges(head, columns).to(head.w.device)
    w_uses = None
    if head.l > 0 and head.l * n * D <= MAX_JACOBIAN:
        gen = torch.Generator().manual_seed(1234)
        per = []
        for c in range(head.channels):
            w0 = head.w[c].detach().to(torch.float64).clone()
            w0 = w0 + 0.1 * torch.randn(w0.shape, generator=gen, dtype=torch.float64).to(w0.device)

            def f(w: Tensor) -> Tensor:
                return head.reconciliation.reconcile(w.to(head.w.dtype), n, D).reshape(-1).to(
                    torch.float64)

            J = torch.autograd.functional.jacobian(f, w0)  # (n·D, l)
            used = J.abs() > 0
            uses = torch.zeros(head.l, n * m + 1, dtype=torch.bool, device=J.device)
            rows, cols = torch.nonzero(used, as_tuple=True)
            uses[cols, edges[rows]] = True
            per.append(uses)
        w_uses = torch.stack(per)
    rem_uses: dict[str, Tensor] = {}
    rem = head.remainder
    params = {k: p for k, p in rem.named_parameters() if p.requires_grad}
    if params:
        probe = x.detach()
        zero = torch.zeros(1, m, dtype=probe.dtype, device=probe.device)
        uses = {k: torch.zeros(p.numel(), n * m, dtype=torch.bool) for k, p in params.items()}
        for i in range(m):
            xi = torch.zeros_like(probe)
            xi[:, i] = probe[:, i]
            for j in range(n):
                out = (rem(xi)[:, j] - rem(zero)[:, j]).sum()
                grads = torch.autograd.grad(out, list(params.values()), allow_unused=True)
                for (k, _p), g in zip(params.items(), grads):
                    if g is not None:
                        uses[k][:, j * m + i] |= (g.detach().reshape(-1).abs() > 0).cpu()
        rem_uses = uses
    return _Ownership(head, columns, w_uses, rem_uses)


# -- regularisation ------------------------------------------------------------------------
class Regularizer(nn.Module):
    """``l1·Σ_layers Σ_ji a_ji + entropy·Σ_layers H(a / Σ a)`` with a_ji the mean magnitude
    of the parameter entries that serve edge (j, i) only (coefficients of φ_ji, KAN's base
    weight). Built once from a sample of the training inputs (the ownership tables)."""

    def __init__(self, model: nn.Module, x: Any, l1: float = 0.0, entropy: float = 0.0) -> None:
        super().__init__()
        from .grid import _heads_with_inputs

        if l1 < 0 or entropy < 0 or not (math.isfinite(l1) and math.isfinite(entropy)):
            raise ConfigurationError("Regularizer: l1 and entropy weights must be finite and >= 0")
        self.l1, self.entropy = float(l1), float(entropy)
        p = next(model.parameters())
        xt = _as_tensor(x, p)
        self.tables: list[tuple[RPNHead, Tensor | None, dict[str, Tensor], int]] = []
        with torch.no_grad():
            pairs = _heads_with_inputs(model, xt)
        for head, h in pairs:
            own = edge_ownership(head, h)
            ne = head.n * head.m
            # average matrices: (edges, entries) with 1/count for exclusively-owned entries
            w_avg = None
            if own.w_uses is not None:
                excl = own.w_uses[..., :ne] & (own.w_uses.sum(-1, keepdim=True) == 1)
                w_avg = _averager(excl.reshape(-1, ne).T)  # (ne, C·l)
            r_avg = {}
            for k, uses in own.rem_uses.items():
                excl = uses & (uses.sum(-1, keepdim=True) == 1)
                r_avg[k] = _averager(excl.T)
            self.tables.append((head, w_avg, r_avg, ne))

    def edge_magnitudes(self) -> list[Tensor]:
        """Per head, (n·m,) differentiable edge magnitudes a_ji."""
        out = []
        for head, w_avg, r_avg, ne in self.tables:
            a = head.w.new_zeros(ne)
            if w_avg is not None:
                a = a + w_avg.to(head.w.device, head.w.dtype) @ head.w.reshape(-1).abs()
            params = dict(head.remainder.named_parameters())
            for k, avg in r_avg.items():
                p = params[k]
                a = a + avg.to(p.device, p.dtype) @ p.reshape(-1).abs()
            out.append(a)
        return out

    def forward(self, model: nn.Module | None = None) -> Tensor:
        total = None
        for a in self.edge_magnitudes():
            term = self.l1 * a.sum()
            if self.entropy > 0:
                s = a.sum() + 1e-12
                p = a / s
                term = term + self.entropy * -(p * torch.log(p + 1e-12)).sum()
            total = term if total is None else total + term
        if total is None:
            raise ConfigurationError("Regularizer: the model has no heads")
        return total


def _averager(excl: Tensor) -> Tensor:
    """(edges, entries) bool → row-normalised float matrix."""
    m = excl.to(torch.float64)
    cnt = m.sum(1, keepdim=True).clamp_min(1.0)
    return (m / cnt).to_sparse() if m.numel() > 1_000_000 else m / cnt


# -- pruning -------------------------------------------------------------------------------
@dataclass
class PruneReport:
    """What :func:`prune` did. ``pruned``: (layer, out, in) edges now exactly zero;
    ``unmasked``: edges judged unimportant whose parameters are shared with kept edges (left
    in place); ``removed_inputs``: model inputs whose every edge was pruned; losses are the
    mean squared error on (x, y) when y was given."""

    pruned: list[tuple[int, int, int]]
    unmasked: list[tuple[int, int, int]]
    removed_inputs: list[int]
    removed_nodes: list[tuple[int, int]]
    kept: int
    total: int
    loss_before: float | None = None
    loss_after: float | None = None
    masks: dict[str, Tensor] = field(default_factory=dict, repr=False)


def _mse(model: nn.Module, x: Tensor, y: Any) -> float:
    with torch.no_grad():
        out = model(x)
    yt = _as_tensor(y, out).reshape(out.shape)
    return float(((out - yt) ** 2).mean())


def prune(model: nn.Module, x: Any, threshold: float = 1e-2, y: Any = None,
          nodes: bool = True) -> PruneReport:
    """Zero and mask the edges with importance < ``threshold`` × the largest in their layer.

    Args:
        model: an RPN (or RPNLayer) whose heads :func:`rpnkit.inspect` can read.
        x: samples (B, m) in the model's input units; importance is measured on them.
        threshold: relative importance below which an edge goes.
        y: optional targets: the report then has the MSE before and after.
        nodes: also remove hidden nodes with no remaining inputs or outputs (all their edges).

    The masks are kept on the model (``model.rpnkit_masks``) and re-applied by the training
    engine after every optimiser step; call :func:`apply_masks` in a loop of your own.
    """
    from .grid import _heads_with_inputs
    from .inspection import inspect

    if not (isinstance(threshold, (int, float)) and 0 <= threshold < 1):
        raise ConfigurationError(f"prune: threshold must be in [0, 1), got {threshold!r}")
    p = next(model.parameters())
    xt = _as_tensor(x, p)
    before = _mse(model, xt, y) if y is not None else None
    view = inspect(model, xt)
    imps = [lv.importance() for lv in view.layers]
    keep = [imp >= threshold * (imp.max() if imp.size and imp.max() > 0 else 1.0) for imp in imps]
    keep = [k & (imp > 0) for k, imp in zip(keep, imps)]
    removed_nodes: list[tuple[int, int]] = []
    if nodes:
        changed = True
        while changed:
            changed = False
            for li in range(len(keep) - 1):  # hidden nodes between layer li and li+1
                for node in range(keep[li].shape[0]):
                    has_in = bool(keep[li][node].any())
                    has_out = bool(keep[li + 1][:, node].any())
                    if has_in and has_out:
                        continue
                    if has_in or has_out:
                        keep[li][node, :] = False
                        keep[li + 1][:, node] = False
                        changed = True
                    if (li + 1, node) not in removed_nodes:
                        removed_nodes.append((li + 1, node))
    model_was = model.training
    model.eval()
    masks: dict[str, Tensor] = dict(getattr(model, "rpnkit_masks", {}) or {})
    names = {id(q): k for k, q in model.named_parameters()}
    pruned, unmasked = [], []
    with torch.no_grad():
        pairs = _heads_with_inputs(model, xt)
    layer_of = _layer_index(model)
    try:
        for head, h in pairs:
            li = layer_of[id(head)]
            k = keep[li]
            n, m = head.n, head.m
            if k.shape != (n, m):  # heads of a concat layer: only the layer view applies
                raise ConfigurationError("prune: layers with 'concat' fusion are not supported")
            gone = torch.as_tensor(~k.reshape(-1))
            own = edge_ownership(head, h)
            if own.w_uses is not None:
                uses = own.w_uses.cpu()
                pruned_set = torch.cat([gone, torch.tensor([False])])
                dead = ~(uses & ~pruned_set).any(-1) & uses.any(-1)  # only pruned edges
                _mask(masks, names[id(head.w)], head.w, ~dead)
            params = dict(head.remainder.named_parameters())
            for key, uses in own.rem_uses.items():
                dead = ~(uses & ~gone).any(-1) & uses.any(-1)
                _mask(masks, names[id(params[key])], params[key], ~dead)
            if head.bias is not None:  # a pruned edge's mean on the data moves to the bias
                hv = view.layers[li].heads[_head_index(model, li, head)]
                with torch.no_grad():
                    for e in torch.nonzero(gone).flatten().tolist():
                        j, i = divmod(e, m)
                        head.bias[j] += float(np.mean(hv.edges[(j, i)].data_values))
    finally:
        model.train(model_was)
    model.rpnkit_masks = masks
    apply_masks(model)
    # an edge is pruned when it is now exactly zero (a low-rank factor shared with kept edges
    # leaves it in place)
    now = [lv.importance() for lv in inspect(model, xt).layers]
    for li, (k, imp) in enumerate(zip(keep, now)):
        for j, i in zip(*np.nonzero(~k)):
            (pruned if imp[j, i] == 0.0 else unmasked).append((li, int(j), int(i)))
    removed_inputs = [i for i in range(keep[0].shape[1]) if not keep[0][:, i].any()]
    after = _mse(model, xt, y) if y is not None else None
    total = sum(k.size for k in keep)
    return PruneReport(sorted(set(pruned)), sorted(set(unmasked)), removed_inputs,
                       removed_nodes, int(sum(k.sum() for k in keep)), total, before, after,
                       masks)


def _head_index(model: nn.Module, li: int, head: RPNHead) -> int:
    from .model import RPN

    layer = model.layers[li] if isinstance(model, RPN) else model
    return next(k for k, h in enumerate(layer.heads) if h is head)


def _layer_index(model: nn.Module) -> dict[int, int]:
    from .model import RPN

    layers = list(model.layers) if isinstance(model, RPN) else [model]
    return {id(h): li for li, layer in enumerate(layers) for h in getattr(layer, "heads", [])}


def _mask(masks: dict[str, Tensor], name: str, param: Tensor, keep: Tensor) -> None:
    keep = keep.reshape(param.shape).to(param.device)
    old = masks.get(name)
    masks[name] = keep if old is None else (old.to(param.device) & keep)


def apply_masks(model: nn.Module) -> None:
    """Zero the masked parameter entries (a no-op when the model has no masks)."""
    masks = getattr(model, "rpnkit_masks", None)
    if not masks:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, keep in masks.items():
            p = params.get(name)
            if p is not None:
                if keep.device != p.device:
                    keep = keep.to(p.device)
                    masks[name] = keep
                p.mul_(keep.to(p.dtype))
                if p.grad is not None:
                    p.grad.mul_(keep.to(p.grad.dtype))
