"""Sparsity and pruning of edges φ_ji (see :mod:`rpnkit.inspection`).

* :class:`Regularizer` — L1 and entropy penalties on the edges' coefficient magnitudes, to
  add to the training loss (``train.reg_l1`` / ``train.reg_entropy``).
* :func:`prune` — removes the edges whose importance on the data is below a threshold
  (relative to the largest in their layer), and the hidden nodes left without inputs or
  outputs: the parameter entries that serve only pruned edges are set to zero and masked,
  so they stay zero in later training, in the engine or in a loop of one's own.

The masks are part of the modules (:func:`set_mask`): a bool buffer ``<param>_prune_mask``
(persistent: in ``state_dict``, moved and saved with the model) on the module that owns the
parameter, a forward pre-hook that zeroes the masked entries before every forward (outside
``torch.compile`` / ``torch.export`` tracing) and a gradient hook that zeroes their gradients,
so a plain ``loss.backward(); opt.step()`` loop keeps pruned edges exactly zero. A pruned
``state_dict`` loads into a fresh unpruned :class:`~rpnkit.RPN` or
:class:`~rpnkit.RPNLayer` (their load pre-hook, :func:`accept_masks`, installs the masks
first). :func:`apply_masks` (called by the training engine after every step) zeroes the
masked entries and gradients at once.

Which parameter entries serve which edge is asked of the components' definitions, not
their classes: the Jacobian of the dense reconciled matrix ψ(w) with respect to w (which
entries of w reach which columns W[j, ·]), the layout of κ (which columns belong to which
input, :func:`rpnkit.inspection._column_inputs`) and the gradient of the remainder's one-
input contributions π_j(u·e_i) with respect to its parameters. An entry shared by a kept
and a pruned edge (a low-rank factor) is kept; such edges are reported as not masked.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import ConfigurationError
from .head import RPNHead

__all__ = ["Regularizer", "prune", "apply_masks", "set_mask", "masks", "accept_masks",
           "PruneReport", "edge_ownership", "MASK_SUFFIX"]

#: a parameter ``p``'s mask is the buffer ``p + MASK_SUFFIX`` of the module that owns ``p``
MASK_SUFFIX = "_prune_mask"

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

    The masks become part of the modules (:func:`set_mask`: persistent buffers, applied in
    forward and to the gradients), so pruned edges stay exactly zero in any training loop and
    the masks are saved and loaded with ``state_dict``.
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
    new_masks: list[tuple[nn.Module, str, Tensor]] = []
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
                new_masks.append((head, "w", ~dead))
            for key, uses in own.rem_uses.items():
                dead = ~(uses & ~gone).any(-1) & uses.any(-1)
                owner, pname = _owner(head.remainder, key)
                new_masks.append((owner, pname, ~dead))
            if head.bias is not None:  # a pruned edge's mean on the data moves to the bias
                hv = view.layers[li].heads[_head_index(model, li, head)]
                with torch.no_grad():
                    for e in torch.nonzero(gone).flatten().tolist():
                        j, i = divmod(e, m)
                        head.bias[j] += float(np.mean(hv.edges[(j, i)].data_values))
    finally:
        model.train(model_was)
    for owner, pname, keep_entries in new_masks:
        set_mask(owner, pname, keep_entries)
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
                       masks(model))


def _head_index(model: nn.Module, li: int, head: RPNHead) -> int:
    from .model import RPN

    layer = model.layers[li] if isinstance(model, RPN) else model
    return next(k for k, h in enumerate(layer.heads) if h is head)


def _layer_index(model: nn.Module) -> dict[int, int]:
    from .model import RPN

    layers = list(model.layers) if isinstance(model, RPN) else [model]
    return {id(h): li for li, layer in enumerate(layers) for h in getattr(layer, "heads", [])}


def _owner(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    """(module owning the parameter, its local name) for a dotted parameter name."""
    path, _, pname = name.rpartition(".")
    return (root.get_submodule(path) if path else root), pname


def set_mask(module: nn.Module, name: str, keep: Tensor) -> None:
    """Mask parameter ``name`` of ``module``: its entries where ``keep`` is False are zero
    from now on (intersected with an existing mask).

    The mask is the persistent bool buffer ``name + "_prune_mask"`` of ``module``; a forward
    pre-hook zeroes the masked entries before every forward and a gradient hook zeroes their
    gradients, so a plain optimiser loop leaves them exactly zero (an optimiser state from
    before the masking, e.g. Adam's moments, is undone at the next forward).

    Raises:
        ConfigurationError: ``name`` is not a parameter of ``module`` or ``keep`` does not
            have its number of entries.
    """
    param = _own_params(module).get(name) if "." not in name else None
    if param is None:
        raise ConfigurationError(
            f"set_mask: {type(module).__name__} has no parameter {name!r}; valid: "
            f"{', '.join(k for k, _ in module.named_parameters(recurse=False)) or 'none'}"
        )
    keep = torch.as_tensor(keep)
    if keep.numel() != param.numel():
        raise ConfigurationError(
            f"set_mask: a mask for {name!r} needs {param.numel()} entries (shape "
            f"{tuple(param.shape)}), got {keep.numel()}"
        )
    keep = keep.to(device=param.device, dtype=torch.bool).reshape(param.shape)
    buf = name + MASK_SUFFIX
    old = _own_buffers(module).get(buf)
    if old is not None:
        keep = keep & old.to(keep.device)
    module.register_buffer(buf, keep.clone(), persistent=True)
    _install_hooks(module)
    _zero_masked(module)


def _own_params(module: nn.Module) -> dict[str, Tensor]:
    return dict(module.named_parameters(recurse=False))


def _own_buffers(module: nn.Module) -> dict[str, Tensor]:
    return dict(module.named_buffers(recurse=False))


def _mask_names(module: nn.Module) -> list[str]:
    """Names of ``module``'s own masked parameters."""
    return [b[: -len(MASK_SUFFIX)] for b, _ in module.named_buffers(recurse=False)
            if b.endswith(MASK_SUFFIX)]


def _masked_params(module: nn.Module):
    """(parameter, mask) pairs of ``module``'s own masked parameters."""
    params = _own_params(module)
    for name in _mask_names(module):
        if name in params:
            yield params[name], getattr(module, name + MASK_SUFFIX)


def _zero_masked(module: nn.Module) -> None:
    zero_masked(list(_masked_params(module)))


def masked_pairs(model: nn.Module) -> list[tuple[Tensor, Tensor]]:
    """(parameter, keep mask) of every masked parameter of ``model``: looked up once, so a
    training loop without masks pays nothing per step (see :func:`zero_masked`)."""
    return [pair for mod in model.modules() for pair in _masked_params(mod)]


def zero_masked(pairs: list[tuple[Tensor, Tensor]]) -> None:
    """Zero the masked entries (and their gradients) of the given (parameter, mask) pairs."""
    with torch.no_grad():
        for p, keep in pairs:
            # on .data: the zeroing does not bump the version of p (a graph from an earlier
            # forward, which saw the same zeros, stays valid)
            p.data.mul_(keep.to(device=p.device, dtype=p.dtype))
            if p.grad is not None:
                p.grad.mul_(keep.to(device=p.grad.device, dtype=p.grad.dtype))


def _grad_hook(module: nn.Module, name: str):
    ref = weakref.ref(module)

    def hook(p: Tensor) -> None:
        owner = ref()
        keep = None if owner is None else getattr(owner, name + MASK_SUFFIX, None)
        if keep is not None and p.grad is not None:
            p.grad.mul_(keep.to(device=p.grad.device, dtype=p.grad.dtype))

    return hook


def _hook_grads(module: nn.Module) -> None:
    """Gradient hooks on the masked parameters that have none yet (a deepcopy, an unpickled
    or a freshly loaded module gets them at its first forward)."""
    hooked = module.__dict__.setdefault("_prune_grad_hooked", {})
    params = _own_params(module)
    for name in _mask_names(module):
        p = params.get(name)
        if p is not None and hooked.get(name) != id(p) and p.requires_grad:
            p.register_post_accumulate_grad_hook(_grad_hook(module, name))
            hooked[name] = id(p)
            key = id(p)
            _MASKED[key] = (weakref.ref(p, lambda _r, k=key: _MASKED.pop(k, None)),
                            weakref.ref(module), name)
            _watch_optimizers()


#: id(masked parameter) → (parameter, owner, name) as weak references, for the optimiser
#: step hook (no module is kept alive by it)
_MASKED: dict[int, tuple[Any, Any, str]] = {}
_STEP_HOOK: list = []


def _after_step(optimizer: Any, args: Any, kwargs: Any) -> None:
    """After any optimiser step: masked entries back to zero (an optimiser state from before
    the masking, e.g. Adam's moments, would otherwise move them)."""
    if not _MASKED:
        return
    with torch.no_grad():
        for group in optimizer.param_groups:
            for p in group["params"]:
                entry = _MASKED.get(id(p))
                if entry is None or entry[0]() is not p:
                    continue
                owner = entry[1]()
                keep = None if owner is None else getattr(owner, entry[2] + MASK_SUFFIX, None)
                if keep is not None:
                    p.data.mul_(keep.to(device=p.device, dtype=p.dtype))


def _watch_optimizers() -> None:
    """Register :func:`_after_step` for every optimiser, once (when a first mask is set)."""
    if not _STEP_HOOK:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _STEP_HOOK.append(register_optimizer_step_post_hook(_after_step))


def _pre_forward(module: nn.Module, args: Any) -> None:
    if torch.compiler.is_compiling():  # traced graphs read the (already zero) entries
        return
    _hook_grads(module)
    _zero_masked(module)


def _pre_state_dict(module: nn.Module, prefix: str, keep_vars: bool) -> None:
    if not torch.compiler.is_compiling():
        _zero_masked(module)  # what is saved is the pruned function


def _install_hooks(module: nn.Module) -> None:
    if module.__dict__.get("_prune_hooks_installed"):
        _hook_grads(module)
        return
    module.register_forward_pre_hook(_pre_forward)
    module.register_state_dict_pre_hook(_pre_state_dict)
    module.__dict__["_prune_hooks_installed"] = True
    _hook_grads(module)


def _load_masks_pre_hook(module: nn.Module, state_dict: Any, prefix: str, *args: Any) -> None:
    """Before loading: give every module named by a ``..._prune_mask`` key of the state dict
    that mask (all True for now; the load then fills it in)."""
    for key in list(state_dict.keys()):
        if not (key.startswith(prefix) and key.endswith(MASK_SUFFIX)):
            continue
        path, _, buf = key[len(prefix):].rpartition(".")
        try:
            owner = module.get_submodule(path) if path else module
        except AttributeError:
            continue  # not a module of this model: the load reports the unexpected key
        name = buf[: -len(MASK_SUFFIX)]
        p = _own_params(owner).get(name)
        if p is None or buf in _own_buffers(owner):
            continue
        value = state_dict[key]
        if not isinstance(value, Tensor) or value.numel() != p.numel():
            raise ConfigurationError(
                f"load_state_dict: {key!r} masks {p.numel()} entries (shape {tuple(p.shape)}), "
                f"but the state dict's mask has "
                f"{value.numel() if isinstance(value, Tensor) else type(value).__name__}"
            )
        set_mask(owner, name, torch.ones(p.shape, dtype=torch.bool, device=p.device))


def accept_masks(module: nn.Module) -> None:
    """Let ``module`` (a model or layer, usually at construction) load a pruned state dict:
    the masks named in it are installed on the submodules before the values are copied."""
    module.register_load_state_dict_pre_hook(_load_masks_pre_hook)


def masks(model: nn.Module) -> dict[str, Tensor]:
    """The pruning masks of ``model``: parameter name → bool tensor (True: kept)."""
    out = {}
    for mod_name, mod in model.named_modules():
        for pname in _mask_names(mod):
            out[f"{mod_name}.{pname}" if mod_name else pname] = getattr(mod, pname + MASK_SUFFIX)
    return out


def apply_masks(model: nn.Module) -> None:
    """Zero the masked parameter entries and their gradients (a no-op without masks)."""
    for mod in model.modules():
        _zero_masked(mod)
