"""Local evaluation of the uniform B-spline basis with an analytic backward.

On a uniform grid (knots ``k_0 + j·h``) a degree-d basis is non-zero on d+1 knot intervals,
so at any x only the d+1 bases ``j−d … j`` of x's interval j are non-zero. With
``u = (x − k_0)/h``, ``j = ⌊u⌋`` and ``f = u − j ∈ [0, 1)`` their values are fixed
polynomials of f (the pieces of the cardinal B-spline):

    N_{j−d+k}(x) = Σ_e C[e, k] f^e,        k, e = 0 … d

and their x-derivatives are ``Σ_e e·C[e, k] f^{e−1} / h``. :class:`UniformBSplineBasis`
writes these d+1 values per feature into a zero-filled dense feature-major (B, m·(t+d)) block,
one local index k at a time (a loop over the degree, never over samples): the values from the
powers f², …, f^d with one op per non-zero coefficient (:func:`_poly`), and one ``scatter_``
per k. On the CPU the block is filled in row chunks that stay in cache (:data:`CHUNK_BYTES`),
the columns are arithmetic, ``i·(t+d) + j − d``, and basis k is scattered into the block's
view shifted by k columns: no column table, no gather. The few entries whose x lies outside
the grid [k_d, k_{t+d}) (or is NaN, ±inf) are placed at a clamped interval and then get their
feature's t+d columns rewritten from the table path of one feature. On other devices the
columns come from a small table by a 1-D gather, with a discard column for bases that do not
exist. The block itself is reused across steps when nothing uses it any more
(:class:`~rpnkit.workspace.BlockPool`: no page faults for a fresh block every step). The
backward recomputes f and the intervals from x and gathers the d+1 gradient entries per
feature the same two ways.

Everything that depends only on (m, t, d) – the coefficient matrices and the column tables –
is built once (:func:`spline_tables`) and held by the expansion as non-persistent buffers; the
knot values are read from the knots buffer on every call (two scalar reads), so overwriting
the knots in place keeps this path right as long as they stay uniform (see
:meth:`rpnkit.expansion.rbf.BSpline.refresh`).

Wherever PyTorch goes: under autocast the basis is evaluated in the buffers' dtype with
autocast off (:func:`autocast_off`; the GEMM that follows is autocast as usual); under
``torch.compile`` / ``torch.export`` and ``torch.func`` transforms the plain differentiable
form (:func:`uniform_basis_plain`) runs instead of the custom Function; and the Functions'
backward passes are differentiable when a higher-order gradient is asked for
(``create_graph=True``): they then recompute the derivatives from x with plain ops.

Tiny heads (a few inputs, :mod:`rpnkit.expansion.fused`) take a third form,
:func:`fused_spline_dense`: all t+d bases at once by the centred cardinal B-spline
(:func:`centred_tables`), a handful of elementwise ops without index tables or scatter,
written straight into the head's buffer.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch
from torch import Tensor

from ..workspace import BlockPool
from .fused import columns

__all__ = ["cardinal_coefficients", "spline_tables", "UniformBSplineBasis", "uniform_basis",
           "uniform_basis_plain", "RadialBasis", "radial_basis", "autocast_off", "traced",
           "centred_tables", "centred_terms", "spline_scalars", "fused_spline_dense"]


def cardinal_coefficients(d: int) -> list[list[Fraction]]:
    """C[e][k]: coefficient of f^e in the local value of basis ``j−d+k`` (exact rationals).

    From the uniform Cox–de Boor recursion on the local offset f:
    ``N_k ← ((f + p − k) N_{k−1} + (k + 1 − f) N_k) / p`` for p = 1 … d.
    """
    # polys[k] = coefficient list (index e) of the k-th local value
    polys: list[list[Fraction]] = [[Fraction(1)]]
    for p in range(1, d + 1):
        new = []
        for k in range(p + 1):
            acc = [Fraction(0)] * (p + 1)
            if k >= 1:  # (f + p - k) * N_{k-1}
                for e, c in enumerate(polys[k - 1]):
                    acc[e] += c * (p - k)
                    acc[e + 1] += c
            if k < p:  # (k + 1 - f) * N_k
                for e, c in enumerate(polys[k]):
                    acc[e] += c * (k + 1)
                    acc[e + 1] -= c
            new.append([c / p for c in acc])
        polys = new
    return [[polys[k][e] for k in range(d + 1)] for e in range(d + 1)]


def spline_tables(m: int, t: int, d: int, device: torch.device | str | None = "cpu"
                  ) -> dict[str, Tensor]:
    """Tables of the local path for m features, t intervals, degree d >= 1 (float64 / long),
    built on ``device`` (default the CPU, whatever device context is active).

    ``coef`` (d+1, d+1): values = powers @ coef; ``dcoef`` (d, d+1): derivatives (in u) =
    powers[:, :d] @ dcoef. ``cols`` (m·(t+2d+2), d+1): for feature i and clamped interval
    jc ∈ [−1, t+2d] (row ``i·(t+2d+2) + jc + 1``) the dense column of each local basis, or
    the discarded column m·(t+d) when that basis does not exist (outside the t+d bases, or x
    outside the knots). ``row0`` (m,): ``i·(t+2d+2) + 1``. ``base`` (m,) float64:
    ``i·(t+d) − d``, the column of basis 0 of feature i on interval j is ``base + j`` (inside
    the grid).
    """
    width = t + d
    n_rows = t + 2 * d + 2  # jc = -1 .. t + 2d
    c = cardinal_coefficients(d)
    f64 = {"dtype": torch.float64, "device": device}
    coef = torch.tensor([[float(v) for v in row] for row in c], **f64)
    dcoef = coef[1:] * torch.arange(1, d + 1, **f64).unsqueeze(1)
    jc = torch.arange(-1, t + 2 * d + 1, device=device).view(n_rows, 1)
    base = jc - d + torch.arange(d + 1, device=device).view(1, d + 1)  # (n_rows, d+1) index
    inside = (jc >= 0) & (jc <= t + 2 * d - 1)
    keep = ((base >= 0) & (base < width) & inside).unsqueeze(0)
    cols = torch.arange(m, device=device).view(m, 1, 1) * width + base.unsqueeze(0)
    cols = torch.where(keep, cols, torch.full_like(cols, m * width))
    return {
        "coef": coef,
        "dcoef": dcoef,
        "cols": cols.reshape(m * n_rows, d + 1).contiguous(),
        "row0": torch.arange(m, device=device) * n_rows + 1,
        "base": (torch.arange(m, device=device) * width - d).to(torch.float64),
    }


def _grid(knots: Tensor) -> tuple[Tensor, Tensor]:
    """(k₀, h) of uniform knots, 0-dim tensors."""
    k0 = knots[0]
    return k0, knots[1] - k0


def _local(x: Tensor, grid: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """(f, j) for x (B, m), both (B, m) in x's dtype: u = (x − k₀)/h, j = ⌊u⌋ (NaN for a NaN
    or ±inf x) and f = u − j; ``grid`` = :func:`_grid`."""
    u = (x - grid[0]).div_(grid[1])
    j = torch.floor(u)
    return u.sub_(j), j  # in place: u is not needed again


def _table_rows(j: Tensor, d: int, top: int, row0: Tensor) -> Tensor:
    """Rows of the column table for intervals j (float, (B, m)): ``i·(t+2d+2) + clamp(j) + 1``
    (j is overwritten). NaN/±inf inputs go to interval d (whose d+1 bases all exist), so NaN
    reaches the output as with the recursion."""
    jc = j.nan_to_num_(nan=d, posinf=d, neginf=d).clamp_(-1, top).to(torch.long)
    return jc.add_(row0)


def _interior(j: Tensor, d: int, width: int) -> bool:
    """Whether every interval j lies inside the grid (d <= j <= t+d−1), where all d+1 local
    bases exist and basis k of feature i is column ``i·(t+d) + j − d + k``. False for NaN."""
    if j.numel() == 0:  # an empty batch: nothing to place
        return True
    lo, hi = torch.aminmax(j)
    return lo.item() >= d and hi.item() <= width - 1


def _exact_columns(x: Tensor, n_cols: int) -> bool:
    """Whether column numbers up to ``n_cols`` are exact in x's floating dtype (the interior
    path computes them as j + (i·(t+d) − d) in that dtype, then converts)."""
    return n_cols < 2 / torch.finfo(x.dtype).eps


#: bytes of the dense block filled per row chunk of the CPU path (it stays in cache while
#: its d+1 scatters land)
CHUNK_BYTES = 1 << 22


def _chunk_rows(b: int, row_bytes: int) -> int:
    return max(1, min(b, CHUNK_BYTES // max(row_bytes, 1)))


@functools.cache
def horner_coefficients(d: int) -> tuple[tuple[float, ...], ...]:
    """``H[k][e]``: coefficient of f^e in the local value k (Python floats, so scalar
    arguments of elementwise ops: exact in float64, rounded once in the tensor's dtype)."""
    c = cardinal_coefficients(d)
    return tuple(tuple(float(c[e][k]) for e in range(d + 1)) for k in range(d + 1))


@functools.cache
def horner_derivatives(d: int) -> tuple[tuple[float, ...], ...]:
    """``H'[k][e]``: coefficient of f^e in the u-derivative of local value k (e < d)."""
    c = cardinal_coefficients(d)
    return tuple(tuple(float((e + 1) * c[e + 1][k]) for e in range(d)) for k in range(d + 1))


@functools.cache
def _terms(coeffs: tuple[float, ...]) -> tuple[tuple[int, float], ...]:
    """The non-zero ``(e, coefficient)`` pairs of a polynomial in f, highest power first."""
    return tuple((e, c) for e, c in reversed(tuple(enumerate(coeffs))) if c != 0.0)


@functools.cache
def _constant(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A 0-dim tensor operand (a Python number costs a scalar conversion per op)."""
    with torch.inference_mode(False):
        return torch.tensor(value, dtype=dtype, device=device)


def _powers(f: Tensor, d: int) -> list[Tensor | None]:
    """``[None, f, f², …, f^d]`` (d − 1 elementwise products)."""
    pows: list[Tensor | None] = [None, f]
    while len(pows) <= d:
        pows.append(pows[-1] * f)
    return pows


def _poly(pows: list, coeffs: tuple[float, ...], out: Tensor) -> Tensor:
    """``Σ_e coeffs[e] f^e`` from the powers of f, in ``out``: one op per non-zero
    coefficient (the constant folded into the first, scaled powers added with ``alpha``); a
    lone power with coefficient 1 is returned as it is (no op)."""
    terms = _terms(coeffs)
    if not terms:
        return out.zero_()
    (e, c), rest = terms[0], terms[1:]
    if e == 0:  # a constant polynomial
        return out.fill_(c)
    if not rest and c == 1.0:
        return pows[e]
    if rest and rest[-1][0] == 0:
        torch.add(_constant(rest[-1][1], out.dtype, out.device), pows[e], alpha=c, out=out)
        rest = rest[:-1]
    else:
        torch.mul(pows[e], _constant(c, out.dtype, out.device), out=out)
    for e, c in rest:
        out.add_(pows[e], alpha=c)
    return out


def _local_derivatives(x: Tensor, knots: Tensor, dcoef: Tensor) -> Tensor:
    """(B·m, d+1) x-derivatives of the d+1 local bases, with out-of-place differentiable ops
    (the backward's form when a higher-order gradient is asked for): ``Σ_e e·C[e, k] f^{e−1}
    / h``, f = u − ⌊u⌋ (⌊u⌋ has derivative 0, so df/dx = 1/h)."""
    k0 = knots[0]
    h = knots[1] - k0
    u = (x - k0) / h
    f = (u - torch.floor(u).detach()).reshape(-1)
    pows = [torch.ones_like(f)]
    while len(pows) < dcoef.shape[0]:
        pows.append(pows[-1] * f)
    return (torch.stack(pows, 1) @ dcoef) / h


def _scatter_table(out: Tensor, f: Tensor, rows: Tensor, cols: Tensor) -> None:
    """The general local path into the zero-filled block ``out`` (n, m·(t+d) + 1): per local
    basis k its (n, m) columns by a 1-D gather from the k-th column of the table (the
    discard column for a basis that does not exist), its values from the powers of f
    (:func:`_poly`), one ``scatter_``."""
    rows = rows.view(-1)
    col = rows.new_empty(f.shape)
    val = f.new_empty(f.shape)
    d = cols.shape[1] - 1
    pows = _powers(f, d)
    for k, hk in enumerate(horner_coefficients(d)):
        torch.index_select(cols[:, k], 0, rows, out=col.view(-1))
        out.scatter_(1, col, _poly(pows, hk, val))


def _table_grad(gp: Tensor, f: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Σ_k g[col_k]·N'_k (in u) per input, the table path's backward: ``gp`` the block's
    gradient with a zero discard column, f and ``rows`` (n, m) as for :func:`_scatter_table`."""
    rows = rows.view(-1)
    col = rows.new_empty(f.shape)
    g, dv, gx = gp.new_empty(f.shape), f.new_empty(f.shape), f.new_zeros(f.shape)
    d = cols.shape[1] - 1
    pows = _powers(f, d - 1)
    for k, hk in enumerate(horner_derivatives(d)):
        torch.index_select(cols[:, k], 0, rows, out=col.view(-1))
        gx.addcmul_(torch.gather(gp, 1, col, out=g), _poly(pows, hk, dv))
    return gx


def _outside(j: Tensor, d: int, width: int) -> Tensor | None:
    """None when every interval j is interior (d <= j <= t+d−1); else the (n, m) mask of the
    entries that are not (beyond the grid, NaN, ±inf), with j clamped in place into the
    interior so that their arithmetic columns stay inside their own feature."""
    if _interior(j, d, width):
        return None
    mask = ~((j >= d) & (j <= width - 1))
    j.nan_to_num_(nan=d, posinf=width - 1, neginf=d).clamp_(d, width - 1)
    return mask


def _one_feature(x: Tensor, grid: tuple, cols: Tensor, row0: Tensor, m: int, width: int
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """(f, table rows, table) for K scalar inputs x (K,) of any feature, as inputs of one
    feature: the table is feature 0's rows of ``cols`` with its discard column moved to
    ``width`` (the basis is the same function for every feature)."""
    one = cols[: cols.shape[0] // m].clamp(max=width)
    f, j = _local(x.view(-1, 1), grid)
    return f, _table_rows(j, cols.shape[1] - 1, one.shape[0] - 2, row0[:1]), one


def _fill_rows(out: Tensor, x: Tensor, grid: tuple, tabs: tuple, width: int,
               col: Tensor, val: Tensor) -> None:
    """One row chunk of the CPU path: zero ``out`` (n, m·(t+d) + 1), then write the d+1
    local values of every feature. The columns are arithmetic, ``i·(t+d) + j − d`` for
    basis 0, and basis k is scattered into the view shifted by k columns (no table gather,
    no discard column). Entries whose x lies outside the grid (or is NaN, ±inf) – none in
    the common case, one ``aminmax`` per chunk says so – are written at a clamped interval
    first and then get their feature's t+d columns rewritten from the table path of one
    feature (:func:`_one_feature`). ``col``/``val``: (n, m) scratch."""
    cols, row0, base = tabs
    n, m = x.shape
    d = cols.shape[1] - 1
    out.zero_()
    f, j = _local(x, grid)
    outside = _outside(j, d, width)
    col.copy_(j.add_(base))  # exact: see _exact_columns
    pows = _powers(f, d)
    for k, hk in enumerate(horner_coefficients(d)):
        out[:, k:].scatter_(1, col, _poly(pows, hk, val))
    if outside is not None:
        r, i = outside.nonzero(as_tuple=True)
        fo, rows, one = _one_feature(x[r, i], grid, cols, row0, m, width)
        dense = fo.new_zeros(fo.shape[0], width + 1)
        _scatter_table(dense, fo, rows, one)
        out[:, : m * width].view(n, m, width)[r, i] = dense[:, :width]


class UniformBSplineBasis(torch.autograd.Function):
    """Dense (B, m·(t+d)) B-spline basis of x on uniform knots; backward in O(B·m·(d+1)).

    The block is (B, m·(t+d) + 1), its last column taking bases that do not exist; the output
    is the view without it (rows keep the buffer's stride). On the CPU it is written in row
    chunks of about :data:`CHUNK_BYTES` (:func:`_fill_rows`: the zero fill and the d+1
    scatters of a chunk land while it is in cache), columns computed arithmetically, entries
    outside the grid rewritten feature by feature; elsewhere (other devices, column numbers
    not exact in the dtype) the whole block by the table path (:func:`_scatter_table`). Per
    local basis k (a loop over the degree, not over samples) only (n, m) buffers are live
    besides the block: no K = d+1 GEMM, no (B·m, d+1) tables.

    The backward recomputes f and the intervals from the saved x, gathers the d+1 gradient
    entries per feature (from shifted views on the CPU, entries outside the grid again
    through the one-feature table; elsewhere through the table) and accumulates ``g·N'``.
    It is differentiable when autograd asks for a graph of it (``create_graph``): the
    derivatives are then recomputed from x with plain ops (:func:`_local_derivatives`).
    """

    @staticmethod
    def forward(ctx, x: Tensor, knots: Tensor, coef: Tensor, dcoef: Tensor,
                cols: Tensor, row0: Tensor, base: Tensor, width: int,
                pool: BlockPool | None) -> Tensor:
        b, m = x.shape
        d = coef.shape[0] - 1
        shape = (b, m * width + 1)
        out = x.new_empty(shape) if pool is None else pool.take(shape, x)
        grid = _grid(knots)
        if x.device.type == "cpu" and _exact_columns(x, m * width):
            rc = _chunk_rows(b, out.stride(0) * out.element_size())
            col = row0.new_empty(rc, m)
            val = x.new_empty(rc, m)
            for s in range(0, b, rc):
                n = min(rc, b - s)
                _fill_rows(out[s:s + n], x[s:s + n], grid, (cols, row0, base), width,
                           col[:n], val[:n])
        else:
            out.zero_()
            f, j = _local(x, grid)
            _scatter_table(out, f, _table_rows(j, d, cols.shape[0] // m - 2, row0), cols)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x, knots, dcoef, cols, row0, base)
        ctx.width = width
        return out[:, : m * width]

    @staticmethod
    def backward(ctx, grad: Tensor):
        if not ctx.needs_input_grad[0]:
            return (None,) * 9
        x, knots, dcoef, cols, row0, base = ctx.saved_tensors
        b, m = x.shape
        d = dcoef.shape[1] - 1
        width = ctx.width
        top = cols.shape[0] // m - 2
        if torch.is_grad_enabled():  # create_graph: a backward autograd can differentiate
            rows = _table_rows(_local(x.detach(), _grid(knots))[1], d, top, row0).view(-1)
            gp = torch.nn.functional.pad(grad, (0, 1))
            col = cols.index_select(0, rows).view(b, m * (d + 1))
            dvals = _local_derivatives(x, knots, dcoef)
            gx = torch.linalg.vecdot(gp.gather(1, col).view(b * m, d + 1), dvals).view(b, m)
            return (gx,) + (None,) * 8
        grid = _grid(knots)
        f, j = _local(x, grid)
        if not (x.device.type == "cpu" and _exact_columns(x, m * width)):
            # the discard column's gradient is zero: bases that do not exist add nothing
            gp = torch.nn.functional.pad(grad, (0, 1))
            gx = _table_grad(gp, f, _table_rows(j, d, top, row0), cols)
        else:
            outside = _outside(j, d, width)
            col = j.add_(base).to(torch.long)
            g, dv, gx = grad.new_empty(b, m), f.new_empty(b, m), f.new_zeros(b, m)
            pows = _powers(f, d - 1)
            for k, hk in enumerate(horner_derivatives(d)):  # basis k: the view shifted by k
                gx.addcmul_(torch.gather(grad[:, k:], 1, col, out=g), _poly(pows, hk, dv))
            if outside is not None:  # their feature's t+d entries through the table path
                r, i = outside.nonzero(as_tuple=True)
                fo, rows, one = _one_feature(x[r, i], grid, cols, row0, m, width)
                go = torch.nn.functional.pad(grad.reshape(b, m, width)[r, i], (0, 1))
                gx[r, i] = _table_grad(go, fo, rows, one).view(-1)
        gx.div_(knots[1] - knots[0])  # du/dx = 1/h
        return (gx,) + (None,) * 8


def functorch_active() -> bool:
    """True inside ``torch.func`` transforms (vmap, grad, jacrev, …): the custom autograd
    Functions here are eager-only, so callers take their plain differentiable form there."""
    return bool(torch._C._are_functorch_transforms_active())


def traced() -> bool:
    """True where the custom Functions give way to plain differentiable code: inside
    ``torch.func`` transforms, ``torch.compile`` and ``torch.export`` (no ``out=``, no
    in-place writes into views, a graph the tracer sees whole)."""
    return functorch_active() or torch.compiler.is_compiling()


def autocast_off(x: Tensor) -> bool:
    """Whether autocast is on for x's device (the basis is then evaluated with autocast off,
    in its buffers' dtype: exact tables and knots, and no dtype mixed into one scatter)."""
    dev = x.device.type
    return torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev)


def uniform_basis_plain(x: Tensor, knots: Tensor, tables: dict[str, Tensor],
                        width: int) -> Tensor:
    """The same basis with out-of-place differentiable ops (autograd derives the backward, to
    any order), for ``torch.func`` transforms, ``torch.compile`` and ``torch.export``."""
    b, m = x.shape
    coef, cols, row0 = tables["coef"], tables["cols"], tables["row0"]
    d1 = coef.shape[0]
    top = cols.shape[0] // m - 2
    k0 = knots[0]
    u = (x - k0) / (knots[1] - k0)
    j = torch.floor(u).detach()
    f = (u - j).reshape(-1)
    jc = torch.nan_to_num(j, nan=d1 - 1, posinf=d1 - 1, neginf=d1 - 1)
    rows = (jc.clamp(-1, top).to(torch.long) + row0).reshape(-1)
    pows = [torch.ones_like(f), f]
    while len(pows) < d1:
        pows.append(pows[-1] * f)
    vals = torch.stack(pows[:d1], 1) @ coef
    col = cols.index_select(0, rows).view(b, m * d1)
    out = torch.zeros(b, m * width + 1, dtype=x.dtype, device=x.device)
    return out.scatter(1, col, vals.view(b, m * d1))[:, : m * width]


def uniform_basis(x: Tensor, knots: Tensor, tables: dict[str, Tensor], width: int,
                  pool: BlockPool | None = None) -> Tensor:
    """Dense feature-major basis (B, m·width) of x (B, m) on uniform ``knots`` (x, knots and
    the floating tables in one dtype; callers handle autocast, see :func:`autocast_off`);
    the block comes from ``pool`` (:class:`~rpnkit.workspace.BlockPool`) when one is given."""
    if traced():
        return uniform_basis_plain(x, knots, tables, width)
    return UniformBSplineBasis.apply(
        x, knots, tables["coef"], tables["dcoef"], tables["cols"], tables["row0"],
        tables["base"], width, pool,
    )


def _radial(x: Tensor, centres: Tensor, eps: float, gaussian: bool) -> tuple[Tensor, Tensor]:
    """(z, φ(z)) with z = ε(x_i − c_k), (B, m, K), out-of-place differentiable ops."""
    z = (x.unsqueeze(-1) - centres) * eps
    s = z * z
    return z, torch.exp(-s) if gaussian else 1.0 / (1.0 + s)


class RadialBasis(torch.autograd.Function):
    """φ(ε(x_i − c_k)) for Gaussian (exp(−z²)) or inverse quadratic (1/(1+z²)) bumps, (B, m·K).

    Forward in place on one (B, m, K) buffer; backward ``Σ_k g·φ'(z)·ε`` from the saved
    output, with z recomputed (no autograd graph of five elementwise ops, no saved z). Under
    ``create_graph`` the backward recomputes φ from x with plain ops, so it is differentiable.
    """

    @staticmethod
    def forward(ctx, x: Tensor, centres: Tensor, eps: float, gaussian: bool) -> Tensor:
        z = (x.unsqueeze(-1) - centres).mul_(eps)
        s = z.square_()
        out = s.neg_().exp_() if gaussian else s.add_(1.0).reciprocal_()
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x, centres, out)
        ctx.eps, ctx.gaussian = eps, gaussian
        return out.flatten(1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        x, centres, out = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiable in grad and x
            z, phi = _radial(x, centres, ctx.eps, ctx.gaussian)
            dphi = phi if ctx.gaussian else phi * phi  # d/dz: −2z·(φ or φ²)
            gx = (grad.reshape(phi.shape) * dphi * z).sum(-1) * (-2.0 * ctx.eps)
            return gx, None, None, None
        z = (x.unsqueeze(-1) - centres).mul_(ctx.eps)
        g = grad.reshape(out.shape) * out
        if not ctx.gaussian:  # d/dz 1/(1+z²) = −2z φ²
            g.mul_(out)
        gx = torch.linalg.vecdot(g, z).mul_(-2.0 * ctx.eps)
        return gx, None, None, None


def radial_basis(x: Tensor, centres: Tensor, eps: float, gaussian: bool) -> Tensor:
    """(B, m·K) Gaussian or inverse quadratic bumps of x (B, m), centres in x's dtype: the
    analytic Function eagerly, plain differentiable ops when traced (:func:`traced`)."""
    if traced():
        return _radial(x, centres, eps, gaussian)[1].flatten(1)
    return RadialBasis.apply(x, centres, eps, gaussian)


def centred_tables(t: int, d: int) -> dict[str, Tensor]:
    """The centres (float64) of the t + d bases of degree d on uniform knots written as one
    centred cardinal B-spline: basis i is N(u − cᵢ) with u = (x − k₀)/h and centre
    cᵢ = i + (d+1)/2, and for s = |u − cᵢ|

        N(s) = Σ_q coef_q · (a_q − s)₊^d,   a_q = (d+1)/2 − q,   coef_q = (−1)^q C(d+1, q) / d!

    over q < (d+1)/2 (the truncated-power form of the symmetric half: every term is bounded
    by ((d+1)/2)^d, so there is no cancellation of large terms); dN/ds = Σ_q dcoef_q
    (a_q − s)₊^{d−1} with dcoef = −d·coef. The per-term numbers: :func:`centred_terms`."""
    return {"centres": torch.tensor([i + (d + 1) / 2 for i in range(t + d)],
                                    dtype=torch.float64)}


@functools.cache
def centred_terms(d: int) -> tuple[tuple[float, float, float], ...]:
    """``(a_q, coef_q, dcoef_q)`` of :func:`centred_tables` as Python floats (each the
    float64 rounding of an exact rational; scalar arguments of elementwise ops)."""
    out = []
    for q in range((d + 2) // 2):
        coef = Fraction((-1) ** q * math.comb(d + 1, q), math.factorial(d))
        out.append((float(Fraction(d + 1, 2) - q), float(coef), float(-d * coef)))
    return tuple(out)


def spline_scalars(d: int, like: Tensor) -> tuple[Tensor, ...]:
    """0-dim tensors (dtype's largest value, a_0 of :func:`centred_terms`, 1, 0) in ``like``'s
    dtype and device: tensor operands of :func:`fused_spline_dense`'s ops (a Python number
    there costs a scalar conversion per op)."""
    return tuple(torch.tensor(v, dtype=like.dtype, device=like.device) for v in (
        torch.finfo(like.dtype).max, centred_terms(d)[0][0], 1.0, 0.0))


def fused_spline_dense(x: Tensor, offsets: Tensor, scale: float, scalars: tuple, d: int,
                       out: Tensor, offset: int, need_grad: bool) -> Tensor | None:
    """Write the dense B-spline basis of x (B, m) on uniform knots into the columns
    ``[offset, offset + m·(t+d))`` of ``out`` (feature-major), by the centred cardinal form
    of :func:`centred_tables`: per term q a few elementwise ops on (B, m, t+d) numbers
    (z_q = (a_q − s)₊ = (z_0 − q)₊), no index tables, no scatter – the fastest exact form for
    the few inputs of a tiny head (the planned path keeps the local d+1 values for wide
    inputs). Inputs beyond the grid get zeros; NaN and ±inf give NaN, as the Cox–de Boor
    definition does (``fmod`` by the dtype's largest value keeps every finite x and turns ±inf
    into NaN; NaN stays NaN through ``relu``). With the knots' ``scale`` = 1/h (a Python
    float) and ``offsets`` = −k₀/h − cᵢ (t+d,), u − cᵢ = x·scale + offsets; ``scalars`` from
    :func:`spline_scalars`. Returns dN/dx (B, m, t+d) when ``need_grad`` (d >= 1)."""
    b, m = x.shape
    width = offsets.shape[0]
    big, a0, one, zero = scalars
    diff = torch.add(offsets, torch.fmod(x, big).unsqueeze(-1), alpha=scale)  # u − cᵢ
    s = diff.abs()
    dense = columns(out, offset, m, width)
    grad = z0 = None
    for q, (_, cq, dq) in enumerate(centred_terms(d)):
        z = (torch.sub(a0, s) if z0 is None else torch.sub(z0, one, alpha=q)).relu_()
        zd1 = (z if d == 2 else torch.mul(z, z) if d == 3 else z.pow(d - 1) if d > 3
               else (z > 0).to(z.dtype))
        if z0 is None:  # the first term overwrites (the previous part may have left scratch)
            z0 = z
            torch.addcmul(zero, zd1, z, value=cq, out=dense) if d > 1 else dense.copy_(z)
        else:
            dense.addcmul_(zd1, z, value=cq)
        if need_grad:
            grad = (torch.add(zero, zd1, alpha=dq * scale) if grad is None
                    else grad.add_(zd1, alpha=dq * scale))
    if not need_grad:
        return None
    return grad.mul_(diff.sign_())
