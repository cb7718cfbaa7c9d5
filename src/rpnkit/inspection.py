"""Look inside a trained RPN: its one-dimensional edge functions φ_ji(x_i).

A head ``g(x) = fuse_c(ψ(w^c) κ(x)) + b + π(x)`` whose expansion is *elementwise* (every
column of κ(x) depends on one input only: B-spline, RBF, the orthogonal polynomial
families, Fourier, and extended combinations of them) is a sum of 1-D functions, one per
(output j, input i) pair:

    g_j(x) = Σ_i φ_ji(x_i) + c_j,   φ_ji(u) = Σ_{col ∈ cols(i)} W[j, col] κ_col(u) + π_ji(u)

with W the dense reconciled matrix (:meth:`RPNHead.reconciled_weights`) and π_ji the
remainder's contribution of input i when the remainder is additively separable (KAN's SiLU
base branch is). Columns of κ that depend on two or more inputs (the cross terms x_i·x_j
of a Taylor part) are kept as *interaction terms*; columns of structured layout segments
(:mod:`rpnkit.expansion.layout`) have an exact monomial form.

Which column belongs to which input is asked of the component, never read off its class or
measured: its declared :class:`~rpnkit.structure.ExpansionStructure` gives, per column, the
inputs it depends on and, for structured columns, its monomial.

:func:`inspect` (exported as ``rpnkit.inspect``) returns a :class:`ModelView`: per layer,
its edges (callable, sampled on the data range, with an importance: the mean absolute
deviation of φ_ji over the data), interaction terms and constants. :func:`model_view`
draws it (see :mod:`rpnkit.training.plots`-style Agg figures).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import ConfigurationError
from .head import RPNHead
from .layer import RPNLayer
from .model import RPN

__all__ = ["inspect", "model_view", "ModelView", "LayerView", "HeadView", "Edge", "Interaction"]

#: points each edge is sampled on (uniform over the data range)
N_GRID = 200
#: data rows used to measure column dependence
N_PROBE = 96


@dataclass
class Edge:
    """φ_ji: the contribution of input ``inp`` to output ``out`` of layer ``layer``.

    ``grid``/``values`` sample it uniformly on the data range ``(lo, hi)``; ``importance``
    is the mean absolute deviation of φ_ji(x_i) from its mean over the data. Calling the
    edge evaluates φ_ji at new points (numpy or float in, numpy out).
    """

    layer: int
    out: int
    inp: int
    lo: float
    hi: float
    grid: np.ndarray
    values: np.ndarray
    importance: float
    fn: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    data_values: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    data_inputs: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def __call__(self, u: Any) -> np.ndarray:
        return self.fn(np.asarray(u, dtype=np.float64))


@dataclass
class Interaction:
    """A term of κ that depends on several inputs: ``coef · Π x_i^{p_i}`` when ``powers`` is
    known (structured layout segments: exact monomials), else an unnamed column."""

    layer: int
    out: int
    inputs: tuple[int, ...]
    coef: float
    powers: tuple[int, ...] | None
    importance: float
    label: str = ""


@dataclass
class HeadView:
    """The edges of one head before its output modules (``n × m`` of them)."""

    m: int
    n: int
    edges: dict[tuple[int, int], Edge]
    interactions: list[Interaction]
    constant: np.ndarray  # (n,)
    separable_remainder: bool
    columns: list[frozenset]  # the inputs each column of κ depends on


@dataclass
class LayerView:
    """One layer: the heads' edges combined by the layer's fusion, and its output modules."""

    index: int
    m: int
    n: int
    edges: dict[tuple[int, int], Edge]
    interactions: list[Interaction]
    constant: np.ndarray
    heads: list[HeadView]
    output: list[nn.Module]
    inputs: np.ndarray = field(repr=False)  # the layer's input on the data (B, m)

    def importance(self) -> np.ndarray:
        """(n, m) edge importances."""
        imp = np.zeros((self.n, self.m))
        for (j, i), e in self.edges.items():
            imp[j, i] = e.importance
        return imp


@dataclass
class ModelView:
    """What :func:`inspect` returns: one :class:`LayerView` per layer."""

    layers: list[LayerView]
    names: list[str]

    @property
    def edges(self) -> list[Edge]:
        return [e for layer in self.layers for e in layer.edges.values()]

    def edge(self, layer: int, out: int, inp: int) -> Edge:
        return self.layers[layer].edges[(out, inp)]

    def plot(self, path: Any = None, **kwargs: Any):
        """Draw the network (see :func:`model_view`)."""
        return model_view(self, path, **kwargs)


# -- column dependence --------------------------------------------------------------------
def _column_inputs(expansion: nn.Module, m: int, x: Tensor | None = None
                   ) -> tuple[list[frozenset], list]:
    """Per column of κ: the inputs it depends on, and its monomial as an exponent vector
    (None for non-monomial columns), as the expansion declares them in its
    :class:`~rpnkit.structure.ExpansionStructure` (never measured)."""
    st = expansion.structure(m)
    cols = st.column_inputs()
    mons = st.monomials or (None,) * st.D
    powers: list = []
    for row in mons:
        if row is None:
            powers.append(None)
            continue
        p = [0] * m
        for i in row:
            p[i] += 1
        powers.append(tuple(p))
    return cols, powers


def _dense_w(head: RPNHead) -> np.ndarray:
    with torch.no_grad():
        Ws = head.reconciled_weights().detach().to(torch.float64).cpu().numpy()
    W = Ws.sum(axis=0)
    if head.channel_fusion == "mean":
        W = W / Ws.shape[0]
    return W


def _view_head(head: RPNHead, x: Tensor, layer: int) -> HeadView:
    m, n = head.m, head.n
    dtype = head.w.dtype
    x = x.to(dtype)
    exp = head.expansion
    cols, powers = _column_inputs(exp, m)
    W = _dense_w(head)  # (n, D)
    const = np.zeros(n)
    if head.bias is not None:
        const += head.bias.detach().to(torch.float64).cpu().numpy()
    base = x.median(dim=0).values
    xd = x.detach().cpu().numpy().astype(np.float64)
    rem = head.remainder
    # the remainder must be a sum of one-input functions, as it declares
    if not rem.separable():
        raise ConfigurationError(
            f"inspect: layer {layer}: the remainder {rem.registry_name!r} is not a sum of "
            "one-input functions (an activation after its linear map mixes the inputs); "
            "use remainder 'zero', 'linear' without activation or KAN's 'kan_base'"
        )
    p0 = rem(torch.zeros(1, m, dtype=dtype, device=x.device))[0].detach()
    const += p0.to(torch.float64).cpu().numpy()
    Wt = torch.as_tensor(W, dtype=dtype, device=x.device)
    own: list[list[int]] = [[] for _ in range(m)]
    interactions: list[Interaction] = []
    K = exp(x).detach()
    for c, s in enumerate(cols):
        if len(s) == 1:
            own[next(iter(s))].append(c)
        elif len(s) == 0:
            const += W[:, c] * float(K[0, c])
    for c, s in enumerate(cols):
        if len(s) >= 2:
            vals = K[:, c].to(torch.float64).cpu().numpy()
            for j in range(n):
                if W[j, c] == 0.0:
                    continue
                p = powers[c]
                interactions.append(Interaction(
                    layer, j, tuple(sorted(s)), float(W[j, c]),
                    None if p is None else tuple(p),
                    float(np.mean(np.abs(W[j, c] * vals))),
                    _monomial_label(p) if p is not None else f"column {c}",
                ))

    def make_fn(i: int) -> Callable[[np.ndarray], np.ndarray]:
        idx = torch.as_tensor(own[i], dtype=torch.long, device=x.device)

        def fn(u: np.ndarray) -> np.ndarray:
            u = np.asarray(u, dtype=np.float64)
            flat = u.reshape(-1)
            with torch.no_grad():
                xb = base.repeat(flat.size, 1)
                xb[:, i] = torch.as_tensor(flat, dtype=dtype, device=x.device)
                out = torch.zeros(flat.size, n, dtype=dtype, device=x.device)
                if idx.numel():
                    out = out + exp(xb)[:, idx] @ Wt[:, idx].T
                xr = torch.zeros_like(xb)
                xr[:, i] = xb[:, i]
                out = out + rem(xr) - p0
            res = out.to(torch.float64).cpu().numpy()
            return res.reshape(*u.shape, n)

        return fn

    edges: dict[tuple[int, int], Edge] = {}
    for i in range(m):
        fn = make_fn(i)
        lo, hi = float(xd[:, i].min()), float(xd[:, i].max())
        if hi <= lo:
            hi = lo + 1e-6
        grid = np.linspace(lo, hi, N_GRID)
        gv = fn(grid)  # (G, n)
        dv = fn(xd[:, i])  # (B, n)
        for j in range(n):
            vals = dv[:, j]
            imp = float(np.mean(np.abs(vals - vals.mean())))
            edges[(j, i)] = Edge(layer, j, i, lo, hi, grid, gv[:, j].copy(), imp,
                                 _column(fn, j), vals.copy(), xd[:, i].copy())
    return HeadView(m, n, edges, interactions, const, True, cols)


def _column(fn: Callable, j: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda u: fn(u)[..., j]


def _monomial_label(p: Sequence[int]) -> str:
    return "·".join(f"x{i}" + (f"^{k}" if k > 1 else "") for i, k in enumerate(p) if k)


def _fusion_maps(layer: RPNLayer) -> list[np.ndarray]:
    """For each head h, the (n_layer × n_h) matrix A_h with layer = Σ_h A_h · head_h."""
    widths = [h.n for h in layer.heads]
    if layer.fusion in ("sum", "mean"):
        f = 1.0 / len(widths) if layer.fusion == "mean" else 1.0
        return [np.eye(layer.n) * f for _ in widths]
    lin = None
    if layer.fusion_linear is not None:
        lin = layer.fusion_linear.weight.detach().to(torch.float64).cpu().numpy()
    maps, start = [], 0
    for w in widths:
        sel = np.zeros((sum(widths), w))
        sel[start:start + w, :] = np.eye(w)
        maps.append(lin @ sel if lin is not None else sel)
        start += w
    return maps


def _view_layer(layer: RPNLayer, x: Tensor, index: int) -> LayerView:
    heads = []
    for h, head in enumerate(layer.heads):
        if len(head.output) > 0:
            raise ConfigurationError(
                f"inspect: layer {index}, head {h} has output modules "
                f"({', '.join(type(mod).__name__ for mod in head.output)}); its edges do not "
                "add up to the layer's output"
            )
        heads.append(_view_head(head, x, index))
    maps = _fusion_maps(layer)
    if layer.fusion_linear is not None and layer.fusion_linear.bias is not None:
        raise ConfigurationError("inspect: a linear head fusion with a bias is not supported")
    n, m = layer.n, layer.m
    const = sum(A @ hv.constant for A, hv in zip(maps, heads))
    edges: dict[tuple[int, int], Edge] = {}
    for i in range(m):
        # the head-level functions returning all n_h outputs, mapped by A_h
        head_fns = [(A, _all_outputs(hv, i)) for A, hv in zip(maps, heads)]
        e0 = heads[0].edges[(0, i)]
        grid = e0.grid
        data_in = e0.data_inputs
        gv = sum(np.tensordot(f(grid), A, axes=([-1], [1])) for A, f in head_fns)  # (G, n)
        dv = sum(np.tensordot(f(data_in), A, axes=([-1], [1])) for A, f in head_fns)
        for j in range(n):
            vals = dv[:, j]
            imp = float(np.mean(np.abs(vals - vals.mean())))
            edges[(j, i)] = Edge(index, j, i, e0.lo, e0.hi, grid, gv[:, j].copy(), imp,
                                 _layer_fn(head_fns, j), vals.copy(), data_in)
    # equal monomials (x0·x1 and x1·x0 of a tensor power) are merged into one term
    merged: dict[tuple, Interaction] = {}
    for A, hv in zip(maps, heads):
        for t in hv.interactions:
            for j in range(n):
                a = A[j, t.out]
                if a == 0.0:
                    continue
                key = (j, t.inputs, t.powers if t.powers is not None else t.label)
                if key in merged:
                    old = merged[key]
                    old.coef += a * t.coef
                    old.importance += abs(a) * t.importance
                else:
                    merged[key] = Interaction(index, j, t.inputs, a * t.coef, t.powers,
                                              abs(a) * t.importance, t.label)
    inter = list(merged.values())
    return LayerView(index, m, n, edges, inter, np.asarray(const, dtype=np.float64), heads,
                     list(layer.output), x.detach().to(torch.float64).cpu().numpy())


def _all_outputs(hv: HeadView, i: int) -> Callable:
    fns = [hv.edges[(j, i)].fn for j in range(hv.n)]
    return lambda u: np.stack([f(u) for f in fns], axis=-1)


def _layer_fn(head_fns: list, j: int) -> Callable:
    return lambda u: sum(np.tensordot(f(u), A[j], axes=([-1], [0])) for A, f in head_fns)


def _plain_layers(layers: list[Any], what: str) -> list[RPNLayer]:
    """``layers`` when each is a plain :class:`RPNLayer`; a layer with an interdependence ξ
    mixes sites (tokens, nodes, pixels), so it has no per-input edge functions."""
    for i, layer in enumerate(layers):
        if not isinstance(layer, RPNLayer) or layer.interdependent:
            names = sorted({h.xi_structure.name for h in getattr(layer, "heads", [])
                            if h.xi_structure is not None})
            raise ConfigurationError(
                f"{what}: layer {i} is a {type(layer).__name__} (interdependence "
                f"{', '.join(names) or 'ξ'}), whose outputs mix sites; per-input edge "
                "functions exist only for layers without interdependence"
            )
    return layers


def _layers_of(model: Any) -> list[RPNLayer]:
    if isinstance(model, RPN):
        return _plain_layers(list(model.layers), "inspect")
    if isinstance(model, RPNLayer):
        return [model]
    if isinstance(model, RPNHead):
        return [RPNLayer(model.m, model.n, heads=[model])]
    if hasattr(model, "model_") and isinstance(model.model_, RPN):
        return _plain_layers(list(model.model_.layers), "inspect")
    raise ConfigurationError(
        f"inspect: cannot read a {type(model).__name__}; give an RPN, RPNLayer, RPNHead or a "
        "fitted RPNRegressor / RPNClassifier"
    )


def inspect(model: Any, x: Any, names: Sequence[str] | None = None) -> ModelView:
    """The edge functions of every layer of ``model`` on the data ``x``.

    Args:
        model: an :class:`~rpnkit.RPN`, :class:`~rpnkit.RPNLayer` or :class:`~rpnkit.RPNHead`
            whose heads have elementwise expansions and separable remainders (KAN, RPN-Ext,
            additive models), or a fitted :class:`~rpnkit.sklearn.RPNRegressor` (then ``x``
            is in the model's own, standardised, input units).
        x: samples (array or tensor, shape (B, m)); they set each edge's range and
            importance. Later layers see the earlier layers' outputs on them.
        names: input names for plots and formulas (default ``x0, x1, ...``).

    Raises:
        ConfigurationError: a head whose remainder mixes inputs, or with output modules.
    """
    layers = _layers_of(model)
    first = layers[0]
    dtype = first.heads[0].w.dtype
    device = first.heads[0].w.device
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    xt = xt.to(device=device, dtype=dtype)
    if xt.dim() != 2 or xt.shape[1] != first.m:
        raise ValueError(f"inspect: x must have shape (B, {first.m}), got {tuple(xt.shape)}")
    if xt.shape[0] < 2:
        raise ValueError("inspect: x needs at least two rows (they set each edge's range)")
    modules = [model] if isinstance(model, nn.Module) else [model.model_]
    states = [mod.training for mod in modules]
    for mod in modules:
        mod.eval()
    views = []
    try:
        with torch.no_grad():
            h = xt
            for k, layer in enumerate(layers):
                views.append(_view_layer(layer, h, k))
                h = layer(h)
    finally:
        for mod, st in zip(modules, states):
            mod.train(st)
    names = list(names) if names is not None else [f"x{i}" for i in range(first.m)]
    if len(names) != first.m:
        raise ValueError(f"inspect: got {len(names)} names for {first.m} inputs")
    return ModelView(views, names)


# -- drawing ---------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def model_view(model_or_view: Any, path: Any = None, x: Any = None, *, names: Sequence[str] |
               None = None, formulas: dict | None = None, dpi: int = 110):
    """Draw the network as nodes and edges, each edge showing its learned curve φ_ji.

    Args:
        model_or_view: a :class:`ModelView` (from :func:`inspect`) or a model (then ``x``
            is required).
        path: where to save (``.png`` or ``.svg``); ``None`` returns the figure unsaved.
        formulas: optional ``{(layer, out, inp): str}`` printed under edges.

    Edges are shaded by importance (relative to the layer's largest); an edge's curve is
    drawn in a small inset on it, the insets of one input side by side. Returns the matplotlib figure (closed when
    saved) or the path.
    """
    view = model_or_view if isinstance(model_or_view, ModelView) else inspect(
        model_or_view, x, names)
    plt = _plt()
    widths = [view.layers[0].m] + [lv.n for lv in view.layers]
    depth = len(view.layers)
    slots = max(lv.m * lv.n for lv in view.layers)
    fig_w = float(np.clip(0.55 * slots + 1.0, 4.0, 30.0))
    fig_h = max(3.0, 2.8 * depth + 0.8)
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")

    def node_x(k: int, count: int) -> float:
        return (k + 0.5) / count if count else 0.5

    row_y = [0.07 + 0.86 * r / depth for r in range(depth + 1)]
    for r, count in enumerate(widths):
        for k in range(count):
            ax.plot(node_x(k, count), row_y[r], "o", ms=8, color="black", zorder=3)
            if r == 0:
                label = view.names[k] if k < len(view.names) else f"x{k}"
                ax.text(node_x(k, count), row_y[r] - 0.03, label, ha="center", va="top",
                        fontsize=9)
            elif r == depth:
                ax.text(node_x(k, count), row_y[r] + 0.025, f"y{k}", ha="center",
                        va="bottom", fontsize=9)
    for lv in view.layers:
        imp = lv.importance()
        top = float(imp.max()) if imp.size and imp.max() > 0 else 1.0
        y0, y1 = row_y[lv.index], row_y[lv.index + 1]
        # each input node owns a slot; its n curves sit side by side in it, a third of the
        # way up, so that no two insets overlap (pykan's arrangement)
        box_w = min(0.8 / (lv.m * lv.n), 1.4 / fig_w)  # at most ~1.4 inch wide
        box_h = min(0.32 * (y1 - y0), box_w * fig_w / fig_h)
        yc = y0 + 0.38 * (y1 - y0)
        for (j, i), e in lv.edges.items():
            a = float(np.clip(e.importance / top, 0.0, 1.0))
            alpha = 0.08 + 0.92 * a
            color = {"color": "black", "alpha": alpha, "lw": 0.5 + 1.5 * a, "zorder": 1}
            xa, xb = node_x(i, lv.m), node_x(j, lv.n)
            xc = (i + (j + 0.5) / lv.n) / lv.m
            ax.plot([xa, xc], [y0, yc - box_h / 2], **color)
            ax.plot([xc, xb], [yc + box_h / 2, y1], **color)
            sub = fig.add_axes((xc - box_w / 2, yc - box_h / 2, box_w, box_h))
            sub.plot(e.grid, e.values, color="tab:blue", lw=1.2, alpha=max(alpha, 0.3))
            sub.set_xticks([])
            sub.set_yticks([])
            for s in sub.spines.values():
                s.set_alpha(max(alpha, 0.2))
            if formulas and (lv.index, j, i) in formulas:
                sub.set_title(str(formulas[(lv.index, j, i)]), fontsize=6, pad=1)
        if lv.interactions:
            pair = sorted(lv.interactions, key=lambda t: -t.importance)[:3]
            txt = "+ interaction terms: " + ", ".join(f"y{t.out}: {t.label}" for t in pair)
            if len(lv.interactions) > 3:
                txt += ", ..."
            ax.text(0.99, y0 + 0.75 * (y1 - y0), txt, fontsize=7, color="tab:red",
                    ha="right", va="center")
    if path is None:
        return fig
    from pathlib import Path

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in ("png", "svg"):
        plt.close(fig)
        raise ConfigurationError(f"model_view: save as .png or .svg, got {path.name!r}")
    from .training.plots import save_figure

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save_figure(fig, path, dpi=dpi, format=fmt)
    finally:
        plt.close(fig)
    return path

