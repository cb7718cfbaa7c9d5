"""The contraction ``fuse_c κ(X) ψ(w^c)ᵀ`` of a head, planned once at construction.

The dense definition materialises κ(X) (B×D) and ψ(w) (n×D); both are often far larger
than the work needed. This module combines what the components *declare* – the
expansion's layout (:mod:`rpnkit.expansion.layout`: dense, tensor-power and
symmetric-power segments) and the reconciliation's algebraic form
(:mod:`rpnkit.reconciliation.forms`: dense, low-rank, Kronecker, fixed, opaque) – into the
cheapest exact product. It imports no concrete component class: a subclass, or a
component written outside rpnkit, gets the same fast path as the built-in one whose
layout/form it declares.

:class:`Contraction` is an ``nn.Module`` built in :class:`~rpnkit.RPNHead`'s ``__init__``.
Its path, and every index table the path needs (symmetric monomial columns, Kronecker
correlation lags and windows), are decided there and held as non-persistent buffers, so
``.to()``, ``torch.compile(fullgraph=True)``, DataParallel and DDP need no special case and
``head.plan()`` prints exactly what runs. ``forward`` is straight tensor code.

Paths (``head.plan()`` names one):

``dense-bilinear``
    Dense form (W is the parameter): x^{⊗k} is contracted with the reshaped weight (one
    GEMM, then one reduction per further index) instead of being formed.
``lowrank-bilinear``
    W = L Rᵀ: ``(κ R) Lᵀ`` with ``κ R`` contracted blockwise as bilinear forms (symmetric
    degree-2 blocks by ``quadratic-fold``, higher degrees on their unique monomials, as in
    ``sym-bilinear``).
``kron-structured``
    W = A ⊗ B: ``y = vec(A K Bᵀ)`` with K = κ reshaped q×t; ``H = K R`` is accumulated
    segment by segment, degree-2 blocks through the correlation lags that occur (GEMM with
    a gathered window, or FFT when many lags occur); when κ reshaped is rank one per sample
    (q = m + 1), ``y = (A x̃) ⊗ (R x)``.
``sym-bilinear``
    Dense form with symmetric blocks of any degree (m >= ``SYM_MIN_M``): a unique monomial
    is x_α times a lower-degree monomial (its tail); for each of ``SYM_BLOCKS`` ranges of α
    the tails (a suffix of the lower-degree list) meet W's columns of the range in one GEMM,
    then x_α in one batched product: about the unique monomials' flops (half / a sixth of
    the ordered form at degree 2 / 3), no B×C block, W never copied to the ordered layout,
    plain differentiable ops (double backward, vmap, compile, autocast as they come).
    Degree-2 blocks (here and under ``lowrank-bilinear``) take ``quadratic-fold``: the
    block times A (C_2×c) is x^T U_c x with U_c upper-triangular, so A's entries are
    gathered once into the U_c (weight side, c·m²/2 numbers, a dense degree-1 segment
    before folded in as a constant slot) and x U_cᵀ x is one GEMM and one reduction per
    range of the first index (:func:`quad_ranges`); no B×m² block.
``rowsum`` / ``eye-prefix`` / ``zero``
    closed forms of the fixed matrices (rowsum of x^{⊗k} is (Σx)^k).
``materialised-κ``
    κ(X) is built, then the form is applied factorised (or ``apply`` for opaque forms).
    Always exact for every pair.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.modules import module as _torch_module

from .errors import ConfigurationError
from .expansion._spline import autocast_off, functorch_active, traced
from .expansion.fused import columns
from .expansion.layout import Segment, monomial_indices
from .reconciliation import forms

__all__ = ["Contraction", "FusedHeadProduct", "FUSED_MAX_D", "PATHS", "materialised_product", "tensor_power", "use_fft",
           "fft_supported", "refresh_tables"]

#: Every value :attr:`Contraction.path` can take (stable names; ``head.plan()``'s first line
#: is ``path: <name>``). ``kron-structured`` runs one of :data:`KRON_METHODS` per degree-2
#: segment (:attr:`Contraction.kron_method`).
PATHS: tuple[str, ...] = (
    "dense-bilinear",
    "sym-bilinear",
    "lowrank-bilinear",
    "kron-structured",
    "rowsum",
    "eye-prefix",
    "zero",
    "materialised-κ",
)

#: How ``kron-structured`` evaluates its ordered degree-2 segments: ``rank-one`` (κ reshaped
#: is u vᵀ per sample, no correlation), ``gemm`` (gathered lag window, one GEMM), ``fft``
#: (one FFT correlation), ``none`` (no degree-2 segment).
KRON_METHODS: tuple[str, ...] = ("rank-one", "gemm", "fft", "none")

#: Batch size the FFT-vs-GEMM choice is made for (both costs are nearly linear in it).
NOMINAL_BATCH = 64


# ---------------------------------------------------------------------------------------------
# primitives (pure tensor code)
# ---------------------------------------------------------------------------------------------
def tensor_power(lead: Tensor, z: Tensor, k: int) -> Tensor:
    """lead ⊗ z^{⊗(k-1)} (row-major), shape (B, m_lead·m^{k-1})."""
    p = lead
    for _ in range(k - 1):
        p = (p.unsqueeze(2) * z.unsqueeze(1)).flatten(1)
    return p


def _sym_tables(m: int, k: int, blocks: int):
    """Tables of the blocked symmetric contraction of a degree-k segment (k >= 2).

    Monomial x_α x_{β...} (α its first, smallest index; ``idx`` its (C_k, k) lexicographic
    tuples) is x_α times the degree-(k-1) monomial of its remaining indices, whose position
    in the degree-(k-1) list (lexicographic as well) is ``tail``. The first indices are cut
    into ``blocks`` ranges [a0, a1): for a range, the tails of its monomials all lie in the
    suffix of the degree-(k-1) list that starts at ``s`` (tails whose first index is >= a0).
    Range a owns rows [base, base + (C_{k-1} - s)(a1 - a0)) of a flat table T laid out
    (tail - s, α - a0); ``dest`` is each monomial's row in T (the other rows of T, where α
    exceeds the tail's first index, stay zero); ``src`` is the inverse (R's row for each row
    of T, C_k for a zero row). Returns (dest, src, low, ranges, rows of T), ``low`` the
    (k-1, C_{k-1}) index tuples of the degree-(k-1) monomials (empty for k = 2). The tables
    are computed on the CPU, then made where tensors are made (meta-device construction)."""
    with torch.device("cpu"):
        low = monomial_indices(m, k - 1).numpy()  # (C_{k-1}, k-1)
        a = monomial_indices(m, k).numpy()
    codes = np.zeros(low.shape[0], dtype=np.int64)
    for j in range(k - 1):
        codes = codes * m + low[:, j]
    tcode = np.zeros(a.shape[0], dtype=np.int64)
    for j in range(1, k):
        tcode = tcode * m + a[:, j]
    tail = np.searchsorted(codes, tcode)  # lexicographic order = order of the base-m codes
    h = -(-m // max(1, min(int(blocks), m)))
    ranges, base = [], 0
    dest = np.empty(a.shape[0], dtype=np.int64)
    for a0 in range(0, m, h):
        a1 = min(m, a0 + h)
        s = int(np.searchsorted(low[:, 0], a0))  # first tail with first index >= a0
        mine = (a[:, 0] >= a0) & (a[:, 0] < a1)
        dest[mine] = base + (tail[mine] - s) * (a1 - a0) + (a[mine, 0] - a0)
        ranges.append((a0, a1, s, base))
        base += (low.shape[0] - s) * (a1 - a0)
    src = np.full(base, a.shape[0], dtype=np.int64)
    src[dest] = np.arange(a.shape[0])
    low_t = low.T.copy() if k > 2 else np.zeros((0, 0), dtype=np.int64)
    return _long(dest), _long(src), _long(low_t), tuple(ranges), base


def _quad_tables(m: int, ranges: int, one: bool, c: int):
    """Tables of the folded degree-2 contraction (``quadratic-fold``, :meth:`Contraction._quad`).

    The degree-2 block contracted with a (C_2, c) matrix A is Σ_{i<=j} x_i x_j A[(i, j)]:
    per column of A, a quadratic form with an upper-triangular m×m matrix. The first index
    i is cut into ``ranges`` ranges [a0, a1); range a gets a block (c, slots, m - a0) of a
    flat table T, at ``base``: slot ``o + i - a0`` holds A[(i, j)] at position j - a0 (zero
    where j < i); with ``one``, range 0 has a leading slot 0 holding the degree-1 rows (the
    dense segment before, x_j times a constant 1), ``o`` = 1. R (rows: those degree-1 rows
    when ``one``, then the C_2 degree-2 rows) is read as Rᵀ flattened, entry (col, row) at
    col·rows + row; ``src`` is, for each entry of T, its entry of Rᵀ (c·rows for a zero),
    ``dest`` the inverse (each entry of Rᵀ appears once in T). Returns (dest, src, ranges,
    numbers in T), ``ranges`` tuples (a0, a1, o, base)."""
    with torch.device("cpu"):
        idx = monomial_indices(m, 2).numpy()
    lead = m if one else 0
    n_r = lead + idx.shape[0]
    h = -(-m // max(1, min(int(ranges), m)))
    out, blocks, base = [], [], 0
    for a0 in range(0, m, h):
        a1 = min(m, a0 + h)
        o = 1 if (one and a0 == 0) else 0
        slots, width = a1 - a0 + o, m - a0
        blk = np.full((slots, width), -1, dtype=np.int64)  # R row of (slot, j - a0)
        if o:
            blk[0] = np.arange(m)
        mine = np.nonzero((idx[:, 0] >= a0) & (idx[:, 0] < a1))[0]
        blk[o + idx[mine, 0] - a0, idx[mine, 1] - a0] = lead + mine
        cols = np.arange(c)[:, None, None] * n_r + blk[None]
        blocks.append(np.where(blk[None] >= 0, cols, c * n_r).reshape(-1))
        out.append((a0, a1, o, base))
        base += c * slots * width
    src = np.concatenate(blocks)
    dest = np.empty(c * n_r, dtype=np.int64)
    hit = src < c * n_r
    dest[src[hit]] = np.nonzero(hit)[0]
    return _long(dest), _long(src), tuple(out), base


def quad_ranges(m: int, c: int, batch: int = NOMINAL_BATCH) -> int:
    """Ranges of the first index for the folded degree-2 contraction of width m into c
    columns at ``batch`` rows (:data:`SYM_QUAD_RANGES` if set). Per range one GEMM (B×(m-a0)
    by (m-a0)×(a1-a0)·c) and one batched product: s ranges cost about (1 + 1/s)/2 of the
    B·m²·c multiply-adds of one range, forward and again for the weight gradient, and a fixed
    :data:`QUAD_RANGE_COST` each (its kernels and autograd nodes, whatever the batch). Chosen
    once, at construction, for the head's ``plan_batch``."""
    if SYM_QUAD_RANGES is not None:
        return max(1, min(int(SYM_QUAD_RANGES), m))
    costs = {s: batch * m * m * c * (1 + 1 / s) + QUAD_RANGE_COST * s
             for s in range(1, min(m, 8) + 1)}
    return min(costs, key=costs.get)


class _Place(torch.autograd.Function):
    """T = [R; 0][src]: R's rows (entries, for a 1-d R) placed into the blocked table T of
    :func:`_sym_tables` (or :func:`_quad_tables`) by a
    gather (``src``: R's row for each row of T, or R's row count for a zero row); the
    backward is a gather too (``dest``: each row of R appears once in T), where autograd's
    own rule for either form is a scatter (several times slower on CPU). The backward is
    itself plain differentiable code, so double backward is exact."""

    generate_vmap_rule = True

    @staticmethod
    def forward(r: Tensor, src: Tensor, dest: Tensor) -> Tensor:
        return torch.cat([r, r.new_zeros(1, *r.shape[1:])]).index_select(0, src)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[2])

    @staticmethod
    def backward(ctx, g: Tensor):
        (dest,) = ctx.saved_tensors
        return _Take.apply(g, dest, g.shape[0]), None, None


class _Take(torch.autograd.Function):
    """g[dest] with its adjoint (zeros elsewhere) as backward: the gradient of :class:`_Place`,
    differentiable again (create_graph)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(g: Tensor, dest: Tensor, rows: int) -> Tensor:
        return g.index_select(0, dest)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])
        ctx.rows = inputs[2]

    @staticmethod
    def backward(ctx, gg: Tensor):
        (dest,) = ctx.saved_tensors
        return gg.new_zeros(ctx.rows, *gg.shape[1:]).index_copy(0, dest, gg), None, None


#: the first indices of a symmetric segment are cut into this many ranges by the blocked
#: contraction (``sym-bilinear``, and symmetric blocks under ``lowrank-bilinear``): a range
#: multiplies a suffix of the lower-degree monomials, so the flops are those of the unique
#: monomials times about 1 + k/(2·SYM_BLOCKS) (degree 2: 9/16 of the ordered form at 8
#: ranges, degree 3: about 1/5), at two kernels per range
SYM_BLOCKS = 8

#: smallest width for which symmetric segments are contracted blockwise (``sym-bilinear``
#: for dense forms); below it the unique monomials are gathered (fewer, larger kernels)
SYM_MIN_M = 24


#: ranges of the first index of the folded degree-2 contraction (``quadratic-fold``); None:
#: chosen by :func:`quad_ranges`'s cost
SYM_QUAD_RANGES: int | None = None

#: fixed cost of one more range of the folded degree-2 contraction, in multiply-adds (its
#: slices, GEMM, batched product and their backward, with autograd's bookkeeping: about 120 µs
#: on the 2-core CPU of benchmarks/results/structured_sym_cpu.md, float32)
QUAD_RANGE_COST = 3_000_000


def _with_one(z: Tensor) -> Tensor:
    return torch.cat([z.new_ones(z.shape[0], 1), z], dim=1)


def _power_left(z: Tensor, lead: Tensor, k: int, width: int, ws: Tensor) -> Tensor:
    """Σ_I (lead ⊗ z^{⊗(k-1)})[b, I] ws[o, I] for ws (n, width), any row stride: (B, n)."""
    b, m = z.shape
    n = ws.shape[0]
    rest = width // m
    if ws.is_contiguous() or ws.stride(1) == 1 and ws.stride(0) == width:
        u = (z @ ws.reshape(n * rest, m).t()).view(b, n, rest)  # (B, n, rest)
        for _ in range(k - 2):
            u = (u.view(b, n, u.shape[2] // m, m) * z[:, None, None, :]).sum(-1)
        return (u * lead[:, None, :]).sum(-1)
    u = torch.matmul(z, ws.reshape(n, rest, m).transpose(1, 2))  # (n, B, rest)
    for _ in range(k - 2):
        u = (u.reshape(n, b, u.shape[2] // m, m) * z[None, :, None, :]).sum(-1)
    return (u * lead[None]).sum(-1).t()


def _power_right(z: Tensor, lead: Tensor, k: int, rseg: Tensor) -> Tensor:
    """Σ_I (lead ⊗ z^{⊗(k-1)})[b, I] rseg[I, c] for rseg (width, c): (B, c)."""
    b, m = z.shape
    c = rseg.shape[1]
    u = lead @ rseg.reshape(lead.shape[1], -1)  # (B, m^{k-1} c): contracts the first index
    for _ in range(k - 1):
        u = (u.reshape(b, m, u.shape[1] // m) * z.unsqueeze(2)).sum(1)
    return u.reshape(b, c)


def _power2_right(z: Tensor, tilde: bool, rseg: Tensor) -> Tensor:
    """Σ_{α,β} lead_α z_β rseg[α m + β, c] for lead = z or [1; z] (degree-2 segment): (B, c).

    Two kernels, whatever the batch: ``u = [1; z] R`` as one ``addmm`` (the constant row of
    the lead is R's first block, added, so [1; z] is never built) and the contraction over β
    as one batched product (no (B, m, c) product followed by a reduction)."""
    b, m = z.shape
    c = rseg.shape[1]
    if tilde:
        u = torch.addmm(rseg[:m].reshape(1, m * c), z, rseg[m:].reshape(m, m * c))
    else:
        u = z @ rseg.reshape(m, m * c)
    return torch.bmm(z.unsqueeze(1), u.view(b, m, c)).view(b, c)


def _lag_pairs(m_lead: int, m: int, off: int, t: int, q: int):
    """Pairs (row i, α, lag slot) with lag o = off + α m − i t in (−m, t), plus the lags.

    Entry (i, c) of K holds lead_α z_β for off + α m + β = i t + c; for fixed (i, α) the sum
    over β is the correlation of R with z at lag o. Computed once, at construction.
    """
    alpha = np.arange(m_lead, dtype=np.int64)
    start = off + alpha * m  # flat position of lead_α z_0
    lo = np.maximum((start - t) // t + 1, 0)  # smallest i with i t + t > start
    hi = np.minimum((start + m - 1) // t, q - 1)  # largest i with i t <= start + m - 1
    cnt = np.maximum(hi - lo + 1, 0)
    a_idx = np.repeat(alpha, cnt)
    first = np.repeat(lo, cnt)
    within = np.arange(a_idx.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    rows = first + within
    lags = off + a_idx * m - rows * t
    uniq, slot = np.unique(lags, return_inverse=True)
    return rows, a_idx, slot.reshape(-1), uniq


def _row_blocks(m_lead: int, m: int, off: int, t: int, q: int) -> tuple[tuple[int, int, int, int], ...]:
    """The pairs of :func:`_lag_pairs` grouped by row of K: ``(row, α0, α1, start)`` per row
    touched by the segment, rows consecutive. Row ``row`` takes α in [α0, α1); their windows
    of R (lags ``start + j m``, j < α1 − α0) step by m, so they tile the rows
    ``[start, start + (α1 − α0) m)`` of R (zero-padded where the range leaves [0, t)) and
    are that block reshaped (α1 − α0, m·c): a view, no gather."""
    rows, a_idx, _slot, _lags = _lag_pairs(m_lead, m, off, t, q)
    out = []
    for row in np.unique(rows):
        alphas = a_idx[rows == row]
        a0, a1 = int(alphas.min()), int(alphas.max()) + 1
        if a1 - a0 != alphas.size:  # cannot happen: lo(α), hi(α) are monotone in α
            raise AssertionError("row blocks of a power segment must be contiguous in α")
        out.append((int(row), a0, a1, int(off + a0 * m - row * t)))
    return tuple(out)


def _pads(starts_ends: list[tuple[int, int]], t: int) -> tuple[int, int]:
    """Zero rows needed before and after R (t rows) so that every [start, end) is inside."""
    lo = min(s for s, _e in starts_ends)
    hi = max(e for _s, e in starts_ends)
    return max(0, -lo), max(0, hi - t)


def fft_supported(dtype: torch.dtype) -> bool:
    """Whether the Kronecker correlation can run as an FFT in ``dtype`` (torch has no
    bfloat16 FFT, and half-precision FFTs only for power-of-two sizes on CUDA)."""
    return dtype in (torch.float32, torch.float64)


#: Cost model of the Kronecker lag windows, in multiply-add equivalents: one number read or
#: written in memory costs ``TRAFFIC_COST`` (a CPU core does several FMAs in the time one
#: float streams from memory, gathers and scatters are worse: ``INDEX_COST`` per indexed
#: number, index included) and every kernel launched ``KERNEL_COST`` (a few µs of dispatch
#: and autograd bookkeeping, the small-head regime). Forward and backward are both counted.
TRAFFIC_COST = 1
INDEX_COST = 16
KERNEL_COST = 100_000


def window_costs(b: int, m: int, m_lead: int, t: int, c: int,
                 blocks: tuple[tuple[int, int, int, int], ...], lags) -> dict[str, float]:
    """Cost of one step (forward + backward) of a degree-2 Kronecker segment's lag windows
    for a batch of ``b`` rows, per window method:

    ``rows``: per row of K one GEMM of lead's α range with R's rows reshaped (views, the
    windows tile R), one batched product with z; the backward adds each block's gradient
    into R's (a full-size slice backward per row).
    ``unfold``: the correlation at every lag of the arithmetic grid through the lags that
    occur (step g = gcd of their gaps), windows as an ``unfold`` view copied once for the
    GEMM, backward a fold; then the (B, pairs, c) values are gathered and added into rows.
    """
    lags = np.asarray(lags, dtype=np.int64)
    n_pairs = sum(a1 - a0 for _r, a0, a1, _s in blocks)
    n_rows = len(blocks)
    t_pad = t + 2 * m
    gemm = b * n_pairs * m * c + b * n_rows * m * c
    rows = (3 * gemm + TRAFFIC_COST * (2 * t_pad * c + 4 * b * n_rows * m * c
                                       + n_rows * t_pad * c + 2 * b * m_lead)
            + KERNEL_COST * (3 * n_rows + 8))
    g = int(np.gcd.reduce(np.diff(lags))) if lags.size > 1 else 1
    grid = int((lags[-1] - lags[0]) // g + 1) if lags.size else 0
    unfold = (3 * (b * m * grid * c + b * n_pairs * c)
              + TRAFFIC_COST * (4 * grid * m * c + 2 * t_pad * c + 4 * b * grid * c)
              + INDEX_COST * 4 * b * n_pairs * c + KERNEL_COST * 20)
    return {"rows": float(rows), "unfold": float(unfold)}


def use_fft(b: int, m: int, t: int, n_lags: int, c: int,
            force: bool | None = None) -> tuple[bool, int]:
    """(FFT cheaper than the direct GEMM?, FFT size) for one degree-2 Kronecker segment;
    ``force`` True/False decides instead of the cost model. Both sides count multiply-adds
    and the numbers they move (:data:`TRAFFIC_COST` each): the GEMM's ``n_lags`` windows
    (copied once from R's strided view), the FFT's (B, c, size) spectra product. ``b``: the batch
    the plan is made for (:attr:`Contraction.batch`)."""
    size = 1 << max(1, int(math.ceil(math.log2(m + t - 1))))
    if force is not None:
        return bool(force), size
    # (the traffic of z and of the (B, n_lags, c) output, and the FFT's spectra, are left
    # out: counting them flipped choices that measure right, e.g. m=64, q=64 and m=784,
    # q=560 at B=64, where the FFT's per-kernel overheads dominate)
    direct = b * m * n_lags * c + TRAFFIC_COST * n_lags * m * c
    # rfft of R and of z, irfft (multiply-adds), and the (B, c) spectra product, written once
    fft = 3 * (b * c + b + c) * size * math.log2(size) + TRAFFIC_COST * b * c * size
    return fft * 2 < direct, size


def fold_costs(b: int, p: int, q: int, s: int, c: int) -> dict[str, float]:
    """Cost of one step (forward + backward) of y = A H Sᵀ for H (B, q, c), A (p, q), S (s,
    c), in multiply-add equivalents: ``fold``: one GEMM with kron(A, S) (p·s, q·c), built
    once per step; ``batched``: A H then Sᵀ as batched products (their kernels, the
    (B, p, c) intermediate moved, and autograd nodes for the factors). Counted at the batch
    ``b`` the plan is made for."""
    fold = (3 * b * p * s * q * c + TRAFFIC_COST * (3 * p * s * q * c + 2 * b * (q * c + p * s))
            + KERNEL_COST * 6)
    batched = (3 * b * p * c * (q + s) + TRAFFIC_COST * 2 * b * (q * c + 2 * p * c + p * s)
               + KERNEL_COST * 14)
    return {"fold": float(fold), "batched": float(batched)}


def _row_plan(blocks: tuple[tuple[int, int, int, int], ...], m: int, t: int, c: int) -> tuple:
    """``(pad, blocks, zero, write)``: the row blocks of :func:`_row_blocks` split for the fused
    ``rows`` node. Where R is small enough that copying it zero-padded costs less than the
    kernels of the windows that hang over its ends (:data:`TRAFFIC_COST` per number moved,
    forward and backward, against :data:`KERNEL_COST` per kernel), ``pad`` = (rows before,
    rows after) and every window is inside the padded R; else ``pad`` = (0, 0) and per block
    ``(row, i0, i1, o0, edges)``: α in [i0, i1) are the windows wholly inside R (lags
    ``o0 + (α − i0) m`` in [0, t − m]: R's rows [o0, o0 + (i1 − i0) m) reshaped, a view, no
    zero padding), ``edges`` the α whose window hangs over an end of R, as ``(α, lag, β0,
    β1)`` with z's β in [β0, β1) meeting R's rows [lag + β0, lag + β1). ``zero``: the ranges
    of the (padded) R's flat gradient that the first block's GEMM does not write, ``write``:
    whether the first block's GEMM writes its rows (the backward zero-fills only ``zero`` and
    writes those rows without reading them)."""
    pad = _pads([(s0, s0 + (a1 - a0) * m) for _r, a0, a1, s0 in blocks], t)
    hang = sum(1 for _r, a0, a1, s0 in blocks for a in range(a0, a1)
               if not 0 <= s0 + (a - a0) * m <= t - m)
    if hang and TRAFFIC_COST * 4 * (t + sum(pad)) * c < KERNEL_COST * 8 * hang:
        t += sum(pad)
        blocks = tuple((row, a0, a1, s0 + pad[0]) for row, a0, a1, s0 in blocks)
    else:
        pad = (0, 0)
    out = []
    for row, a0, a1, start in blocks:
        inner, edges = [], []
        for a in range(a0, a1):
            o = start + (a - a0) * m
            if o >= 0 and o + m <= t:
                inner.append(a)
            else:
                edges.append((a, o, max(0, -o), min(m, t - o)))
        i0, i1 = (inner[0], inner[-1] + 1) if inner else (a0, a0)
        out.append((row, i0, i1, start + (i0 - a0) * m, tuple(edges)))
    # the first block writes its rows (when no edge product comes before it)
    row0, i0, i1, o0, _e = out[0]
    write = i1 > i0
    first = (o0, o0 + (i1 - i0) * m) if write else (0, 0)
    zero = tuple((lo * c, hi * c) for lo, hi in ((0, first[0]), (first[1], t)) if hi > lo)
    return pad, tuple(out), zero, write


def _zdot(u: Tensor, g: Tensor, out: Tensor) -> None:
    """out += Σ_c u[b, β, c] g[b, c] for u (B, m, c), out (B, m). For a few columns, c
    strided multiply-adds (a batched matrix-vector product of width c is several times
    slower)."""
    c = g.shape[1]
    if c > 4:
        out.unsqueeze(2).baddbmm_(u, g.unsqueeze(2))
        return
    for j in range(c):
        out.addcmul_(u[:, :, j], g[:, j : j + 1])


def _edge(zs: Tensor, re: Tensor) -> Tensor:
    """zs (B, k) @ re (k, c) for a few columns c: as (reᵀ zsᵀ)ᵀ with reᵀ copied contiguous
    (a GEMM with N = c ≤ 4 runs several times slower than its transpose)."""
    if re.shape[1] > 4:
        return zs @ re
    return torch.mm(re.t().contiguous(), zs.t()).t()


def _rows_forward(z: Tensor, rc: Tensor, plan: tuple, tilde: bool, q: int):
    """(H (B, q, c), saved) for the ``rows`` windows of one segment, R = ``rc`` (padded as
    ``plan`` says): per row of K one GEMM of z's α range with R's rows reshaped (a view),
    then one batched product with z; the windows over R's ends are small products. ``saved``:
    what :func:`_rows_backward` needs (the (B, m, c) GEMM results and the edge products)."""
    b, m = z.shape
    c = rc.shape[1]
    flat = rc.view(-1)
    h = z.new_zeros(b, q, c)
    saved = []
    for row, i0, i1, o0, edges in plan[1]:
        if i1 > i0:
            blk = flat[o0 * c : (o0 + (i1 - i0) * m) * c].view(i1 - i0, m * c)
            if tilde and i0 == 0:  # the lead's constant 1: R's first window, added
                u = torch.addmm(blk[0:1], z[:, : i1 - 1], blk[1:])
            else:
                lo = i0 - 1 if tilde else i0
                u = z[:, lo : lo + i1 - i0] @ blk
            u = u.view(b, m, c)
            h[:, row] = torch.bmm(z.unsqueeze(1), u).view(b, c)
            saved.append(u)
        for a, o, b0, b1 in edges:
            e = _edge(z[:, b0:b1], rc[o + b0 : o + b1])
            saved.append(e)
            la = a - 1 if tilde else a
            h[:, row] += e if la < 0 else e * z[:, la : la + 1]
    return h, saved


def _rows_backward(g: Tensor, z: Tensor, rc: Tensor, saved: list, plan: tuple, tilde: bool,
                   gz: Tensor | None, gflat: Tensor) -> None:
    """Gradients of :func:`_rows_forward`'s H: z's added into ``gz`` (None: not wanted), R's
    written into ``gflat`` (the padded R's flat gradient, uninitialised: the ranges
    ``plan[2]`` are zero-filled, the first block is written, the rest added in place)."""
    b, m = z.shape
    c = rc.shape[1]
    flat = rc.view(-1)
    for lo, hi in plan[2]:
        gflat[lo:hi].zero_()
    first = plan[3]
    k = 0
    for row, i0, i1, o0, edges in plan[1]:
        gi = g[:, row]  # (B, c)
        if i1 > i0:
            u = saved[k]
            k += 1
            sl = slice(o0 * c, (o0 + (i1 - i0) * m) * c)
            blk = flat[sl].view(i1 - i0, m * c)
            gblk = gflat[sl].view(i1 - i0, m * c)
            gu = (z.unsqueeze(2) * gi.unsqueeze(1)).view(b, m * c)
            beta = 0.0 if first else 1.0
            first = False
            if tilde and i0 == 0:
                if beta:
                    gblk[0] += gu.sum(0)
                else:
                    torch.sum(gu, 0, out=gblk[0])
                blk, gblk, lo = blk[1:], gblk[1:], 0
            else:
                lo = i0 - 1 if tilde else i0
            hi = lo + blk.shape[0]
            gblk.addmm_(z[:, lo:hi].t(), gu, beta=beta)
            if gz is not None:
                _zdot(u, gi, gz)
                gz[:, lo:hi].addmm_(gu, blk.t())
        for a, o, b0, b1 in edges:
            e = saved[k]
            k += 1
            re = rc[o + b0 : o + b1]
            la = a - 1 if tilde else a
            if la < 0:
                ge = gi
            else:
                ge = gi * z[:, la : la + 1]
                if gz is not None:
                    gz[:, la] += (e * gi).sum(1)
            if gz is not None:
                gz[:, b0:b1].addmm_(ge, re.t())
            # R's rows += zsᵀ ge, as (geᵀ zs)ᵀ (a GEMM with N = c ≤ 4 is slow)
            gflat[(o + b0) * c : (o + b1) * c].view(b1 - b0, c).t().addmm_(ge.t(), z[:, b0:b1])


def _padded_r(r: Tensor, pad: tuple[int, int]) -> Tensor:
    return F.pad(r, (0, 0, *pad)) if pad[0] or pad[1] else r.contiguous()


def _plain_grads(ctx, g: Tensor, args: tuple, n_out: int) -> tuple:
    """create_graph: the gradients of ``ctx.plain(*args)``, differentiable (higher
    derivatives exact); ``n_out`` trailing Nones for the non-tensor arguments."""
    with torch.enable_grad():
        h = ctx.plain(*args)
    need = ctx.needs_input_grad[: len(args)]
    got = list(torch.autograd.grad(h, [x for x, nd in zip(args, need) if nd], g,
                                   create_graph=True))
    return tuple(got.pop(0) if nd else None for nd in need) + (None,) * n_out


class _RowWindows(torch.autograd.Function):
    """H = K R for one ordered degree-2 segment (``rows`` windows) as one autograd node.

    Forward: :func:`_rows_forward` (per row of K one GEMM of z's α range with R's rows
    reshaped, a view of R, no zero padding: the few windows that hang over R's ends are
    separate small products). Backward: :func:`_rows_backward`: R's gradient written into one
    (t, c) tensor by in-place GEMMs on its row blocks, z's into one (B, m) tensor.
    Eager only: under ``torch.func`` / compile / autocast the plain differentiable form
    (:meth:`Contraction._row_windows`) runs instead, and a double backward (create_graph)
    differentiates that plain form, so higher derivatives are exact."""

    @staticmethod
    def forward(ctx, z: Tensor, r: Tensor, plan: tuple, tilde: bool, q: int, plain):
        h, saved = _rows_forward(z, _padded_r(r, plan[0]), plan, tilde, q)
        ctx.save_for_backward(z, r, *saved)
        ctx.plan, ctx.tilde, ctx.plain = plan, tilde, plain
        return h

    @staticmethod
    def backward(ctx, g: Tensor):
        z, r, *saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the plain form
            return _plain_grads(ctx, g, (z, r), 4)
        pad = ctx.plan[0]
        rc = _padded_r(r, pad)
        gz = torch.zeros_like(z) if ctx.needs_input_grad[0] else None
        gr = torch.empty_like(rc)
        _rows_backward(g, z, rc, saved, ctx.plan, ctx.tilde, gz, gr.view(-1))
        if pad[0] or pad[1]:
            gr = gr[pad[0] : rc.shape[0] - pad[1]]
        return gz, gr if ctx.needs_input_grad[1] else None, None, None, None, None


def _fold_left(fs: list[Tensor], a_idx: tuple, p: int, q: int) -> Tensor:
    """A (p, q) of the Kronecker form from its factors: ones, F_i or F_i F_jᵀ."""
    if len(a_idx) == 0:
        return fs[0].new_ones(p, q)
    if len(a_idx) == 1:
        return fs[a_idx[0]]
    return fs[a_idx[0]] @ fs[a_idx[1]].t()


class _KronRows(torch.autograd.Function):
    """y = vec(A K Tᵀ... ) for a flat Kronecker form (W = A ⊗ (S Tᵀ), w = [vec F_0, ...])
    whose κ is one ordered degree-2 segment with ``rows`` windows, as one autograd node from
    (z, w) to y: H = K R by :func:`_rows_forward` (R = T, a view of w), then
    y = H_flat kron(A, S)ᵀ (one GEMM with a (p·s, q·c) matrix instead of three batched
    products). Backward writes w's gradient into one buffer: R's part by
    :func:`_rows_backward` in place, the small factors' parts beside it (no split backward
    concatenating a copy of R's gradient). Eager only (like :class:`_RowWindows`); a double
    backward differentiates the plain form ``plain(z, w)``."""

    @staticmethod
    def forward(ctx, z: Tensor, w: Tensor, fold: dict, plain):
        fs = [w[o : o + math.prod(sh)].view(sh) for o, sh in zip(fold["offsets"], fold["shapes"])]
        r, sm = fs[fold["b"][1]], fs[fold["b"][0]]
        rc = _padded_r(r, fold["rowplan"][0])
        h, saved = _rows_forward(z, rc, fold["rowplan"], fold["tilde"], fold["q"])
        a = _fold_left(fs, fold["a"], fold["p"], fold["q"])
        mk = torch.kron(a, sm)  # (p·s, q·c): entry ((i, j), (k, l)) = A[i, k] S[j, l]
        hf = h.view(h.shape[0], h.shape[1] * h.shape[2])
        ctx.save_for_backward(z, w, hf, a, mk, *saved)
        ctx.fold, ctx.plain = fold, plain
        return hf @ mk.t()

    @staticmethod
    def backward(ctx, gy: Tensor):
        z, w, hf, a, mk, *saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the plain form
            return _plain_grads(ctx, gy, (z, w), 2)
        fold = ctx.fold
        p, q = fold["p"], fold["q"]
        offsets, shapes = fold["offsets"], fold["shapes"]
        fs = [w[o : o + math.prod(sh)].view(sh) for o, sh in zip(offsets, shapes)]
        s_idx, r_idx = fold["b"]
        sm = fs[s_idx]
        s, c = sm.shape
        gh = (gy @ mk).view(gy.shape[0], q, c)
        gm = (gy.t() @ hf).view(p, s, q, c)
        gw = torch.empty_like(w)
        # R's part: rows backward into w's gradient (padded R: a temporary, then copied)
        pad = fold["rowplan"][0]
        rc = _padded_r(fs[r_idx], pad)
        gz = torch.zeros_like(z) if ctx.needs_input_grad[0] else None
        o_r = offsets[r_idx]
        n_r = math.prod(shapes[r_idx])
        dest = gw[o_r : o_r + n_r] if not (pad[0] or pad[1]) else rc.new_empty(rc.numel())
        _rows_backward(gh, z, rc, saved, fold["rowplan"], fold["tilde"], gz, dest)
        if pad[0] or pad[1]:
            gw[o_r : o_r + n_r] = dest[pad[0] * c : pad[0] * c + n_r]
        # the small factors: S, then A's factors (zero first: a factor may appear twice)
        small = [i for i in range(len(fs)) if i != r_idx]
        for i in small:
            gw[offsets[i] : offsets[i] + math.prod(shapes[i])].zero_()
        gs = torch.einsum("iskl,ik->sl", gm, a)
        gw[offsets[s_idx] : offsets[s_idx] + s * c].view(s, c).add_(gs)
        a_idx = fold["a"]
        if a_idx:
            ga = torch.einsum("iskl,sl->ik", gm, sm)
            views = {i: gw[offsets[i] : offsets[i] + math.prod(shapes[i])].view(shapes[i])
                     for i in a_idx}
            if len(a_idx) == 1:
                views[a_idx[0]].add_(ga)
            else:
                i, j = a_idx
                views[i].addmm_(ga, fs[j])
                views[j].addmm_(ga.t(), fs[i])
        return gz, gw if ctx.needs_input_grad[1] else None, None, None


def plan_sizes(layout: list[Segment], form: forms.Form, n: int, batch: int) -> tuple[int, int]:
    """(numbers in the index tables, numbers a forward pass holds for ``batch`` rows) of the
    contraction of ``layout`` with ``form``, estimated before anything is built."""
    tables = sum((s.k + 1) * s.width for s in layout if s.kind == "sympower")
    # Kronecker lag pairs (rows, α, slot, grid slot; at most m_lead + m pairs) and lags: the
    # windows themselves are views of R
    tables += sum(5 * (s.m_lead + s.m) for s in layout if s.kind == "power")
    structured = any(s.kind == "power" for s in layout)
    if isinstance(form, forms.Fixed):
        act = sum(s.width for s in layout if s.kind == "dense") + n
    elif structured and not isinstance(form, forms.Opaque):
        m_max = max(s.m_lead for s in layout if s.kind == "power")
        act = sum(s.width for s in layout if s.kind != "power") + n * m_max + n
    else:
        act = sum(s.width for s in layout) + n
    return int(tables), int(batch) * int(act)


def _long(a) -> Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.long)


@torch.no_grad()
def refresh_tables(module: nn.Module, rebuild) -> None:
    """Recompute ``module``'s index tables in place: ``rebuild()`` registers them again (on
    the CPU), and their values are copied into the tensors already there, which keep their
    device and dtype (a buffer ``rebuild`` did not touch stays as it is). After ``to_empty()`` (meta-device construction) the index
    tables hold uninitialised memory; this makes them right again without re-binding."""
    old = {k: v for k, v in module._buffers.items() if v is not None}
    with torch.device("cpu"):
        rebuild()
    for k, fresh in list(module._buffers.items()):
        have = old.get(k)
        if have is None or fresh is None or fresh is have:
            continue
        if have.shape == fresh.shape and not have.is_meta:
            have.copy_(fresh)
            module._buffers[k] = have
        elif not have.is_meta:  # shape changed: take the new table where the old one lived
            module._buffers[k] = fresh.to(device=have.device, dtype=have.dtype)
        else:
            module._buffers[k] = have  # still on meta: shapes only


# ---------------------------------------------------------------------------------------------
# the planned contraction
# ---------------------------------------------------------------------------------------------
class Contraction(nn.Module):
    """``fuse_c κ(X) ψ(w^c)ᵀ`` for one head, by the path chosen at construction.

    Args:
        layout: the expansion's segments (``expansion.layout(m)``).
        form: the reconciliation's form (``reconciliation.form()``).
        n, D: output width and expansion width.
        factor_shapes: ``reconciliation.factor_shapes(n, D)`` (used by Kronecker forms).
        channels, channel_fusion: as in :class:`~rpnkit.RPNHead`.
        names: (expansion name, reconciliation name) for :meth:`describe`.
    """

    def __init__(
        self,
        layout: list[Segment],
        form: forms.Form,
        n: int,
        D: int,  # noqa: N803
        factor_shapes: list[tuple[int, ...]] | None = None,
        channels: int = 1,
        channel_fusion: str = "sum",
        names: tuple[str, str] = ("κ", "ψ"),
        fft: bool | None = None,
        batch: int | None = None,
    ) -> None:
        super().__init__()
        if fft is not None and not isinstance(fft, bool):
            raise ConfigurationError(
                f"fft must be None (choose by cost), True (FFT correlation) or False (direct "
                f"GEMM), got {fft!r}"
            )
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int)
                                  or batch < 1):
            raise ConfigurationError(
                f"batch must be None (plan for {NOMINAL_BATCH} rows) or a positive int (the "
                f"batch size the plan's costs are counted at), got {batch!r}"
            )
        self.fft = fft
        #: rows per batch the cost model plans for (the Kronecker window / FFT choices)
        self.batch = NOMINAL_BATCH if batch is None else int(batch)
        if sum(s.width for s in layout) != D:
            raise ValueError(
                f"expansion layout covers {sum(s.width for s in layout)} columns, but D={D}"
            )
        self.n, self.D = int(n), int(D)
        self.form = form
        self.channels = int(channels)
        self.mean = channel_fusion == "mean" and channels > 1
        self.names = names
        offsets, off = [], 0
        for s in layout:
            offsets.append(off)
            off += s.width
        # plain tuples: (kind, width, m, k, tilde, offset, label)
        self.segs = tuple(
            (s.kind, s.width, s.m, s.k, s.tilde, o, s.label) for s, o in zip(layout, offsets)
        )
        self.path, self.reason = self._choose()
        self.kron: dict | None = None
        self.factor_shapes = factor_shapes or []
        # the floating dtype the plan is made for: it follows .to()/.double()/.bfloat16() of
        # the module tree, and _apply re-derives the dtype-dependent decisions (FFT or GEMM)
        self.register_buffer("plan_dtype", torch.empty(0), persistent=False)
        self._build_tables()
        if isinstance(form, forms.Kronecker):
            self._plan_kron(self.factor_shapes)

    def _build_tables(self) -> None:
        """Register every index table of the plan (non-persistent buffers)."""
        self.sym_ranges: dict[int, tuple] = {}
        #: degree-2 symmetric segments contracted as folded quadratic forms: segment ->
        #: (ranges, rows of the table, index of the dense degree-1 segment folded in or None)
        self.sym_quad: dict[int, tuple] = {}
        folded: set[int] = set()
        for i, (kind, _w, m, k, *_rest) in enumerate(self.segs):
            if kind == "sympower":
                idx = monomial_indices(m, k)  # (C, k)
                self.register_buffer(f"cols{i}", idx.t().contiguous(), persistent=False)
                if k == 2 and self.path in ("sym-bilinear", "lowrank-bilinear"):
                    # R's degree-2 rows folded into upper-triangular quadratic forms (one
                    # gather on the weight side), with the degree-1 rows of a dense segment
                    # of width m just before (Taylor's x) as a constant slot
                    prev = self.segs[i - 1] if i > 0 else None
                    one = (prev is not None and prev[0] == "dense" and prev[1] == m
                           and i - 1 not in folded)
                    c = self._cols()
                    spans = quad_ranges(m, c, self.batch)
                    dest, src, ranges, rows = _quad_tables(m, spans, one, c)
                    self.register_buffer(f"quad{i}_dest", dest, persistent=False)
                    self.register_buffer(f"quad{i}_src", src, persistent=False)
                    self.sym_quad[i] = (ranges, rows, i - 1 if one else None)
                    folded.update((i - 1, i) if one else (i,))
                elif k >= 2 and self.path in ("sym-bilinear", "lowrank-bilinear"):
                    dest, src, low, ranges, rows = _sym_tables(m, k, SYM_BLOCKS)
                    self.register_buffer(f"sym{i}_dest", dest, persistent=False)
                    self.register_buffer(f"sym{i}_src", src, persistent=False)
                    if k > 2:  # (an empty table would share no storage: export refuses it)
                        self.register_buffer(f"sym{i}_low", low, persistent=False)
                    self.sym_ranges[i] = (ranges, rows)
        if isinstance(self.form, forms.Kronecker) and self.path == "kron-structured":
            q = self.form.q
            t = self.D // q
            for i, (kind, _w, m, k, tilde, off, _label) in enumerate(self.segs):
                if kind != "power" or k != 2:
                    continue
                rows, a_idx, slot, lags = _lag_pairs(m + 1 if tilde else m, m, off, t, q)
                # the windows themselves are views of R (see _row_blocks / _unfold_windows):
                # only the (row, α, lag) pairs are tables, and each pair's place on the
                # arithmetic grid of lags (step g) that the unfold windows cover
                g = int(np.gcd.reduce(np.diff(lags))) if lags.size > 1 else 1
                gslot = (lags[slot] - lags[0]) // g
                for name, arr in (("rows", rows), ("aidx", a_idx), ("slot", slot),
                                  ("lags", lags), ("gslot", gslot)):
                    self.register_buffer(f"k{i}_{name}", _long(arr), persistent=False)

    def _cols(self) -> int:
        """Columns of the matrix R that :meth:`_right` contracts with (n for a dense form, the
        rank for a low-rank one)."""
        if isinstance(self.form, forms.LowRank) and self.factor_shapes:
            return int(self.factor_shapes[self.form.right][-1])
        return self.n

    def reset_parameters(self) -> None:
        """Recompute every index table in place (they are non-persistent buffers, so after
        meta-device construction and ``to_empty()`` they hold uninitialised memory), and
        re-derive the dtype-dependent decisions. The contraction has no parameters."""
        refresh_tables(self, self._build_tables)
        self._replan()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the tables are not in a state dict: rebuild them, so that load_state_dict after
        # to_empty() gives a working module even without reset_parameters()
        self.reset_parameters()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self._replan()
        return out

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype the plan is made for (that of the head's parameters)."""
        return self.plan_dtype.dtype

    def _replan(self) -> None:
        """Decisions that depend on the dtype: FFT runs only where the dtype has one."""
        if self.kron is None:
            return
        ok = fft_supported(self.plan_dtype.dtype)
        for seg in self.kron["segs"].values():
            seg["fft"] = bool(seg["fft_wanted"] and ok)

    @property
    def kron_method(self) -> str:
        """For ``kron-structured``: the method of :data:`KRON_METHODS` that runs
        (``"gemm+fft"`` when segments differ); ``""`` for other paths."""
        if self.path != "kron-structured" or self.kron is None:
            return ""
        if self.kron["rank_one"]:
            return "rank-one"
        used = sorted({"fft" if seg["fft"] else "gemm" for seg in self.kron["segs"].values()})
        return "+".join(used) if used else "none"

    # -- planning ------------------------------------------------------------------------------
    def _choose(self) -> tuple[str, str]:
        form, n = self.form, self.n
        kinds = [s[0] for s in self.segs]
        if isinstance(form, forms.Fixed):
            path = {"zero": "zero", "constant": "rowsum", "eye": "eye-prefix"}[form.which]
            return path, "closed form of a fixed matrix, ψ(w) never formed"
        if all(k == "dense" for k in kinds):
            return "materialised-κ", (
                "κ has no structure to exploit (no tensor-power blocks, or post-processing on "
                "its output): κ(x) is built and ψ is applied in its factorised form"
            )
        if isinstance(form, forms.Dense):
            syms = [s for s in self.segs if s[0] == "sympower"]
            if "power" not in kinds and syms and all(s[2] >= SYM_MIN_M for s in syms):
                return "sym-bilinear", (
                    "the unique monomials x_α·(tail) are contracted blockwise: for each of "
                    f"{SYM_BLOCKS} ranges of the first index α, the lower-degree monomials "
                    "(a suffix) times ψ(w)'s columns of the range, then x_α: about the flops "
                    "of the unique monomials (half / a sixth of the ordered form at degree "
                    "2 / 3), no B×C block, ψ(w) never expanded to the ordered layout"
                )
            if "power" not in kinds:
                return "materialised-κ", (
                    "symmetric monomials are gathered directly (B×C, C = unique monomials) and "
                    "multiplied by the n×C weight: fewer flops than any bilinear form over a "
                    "full m×m weight"
                )
            m_min = min(s[2] for s in self.segs if s[0] == "power")
            if n >= m_min:
                return "materialised-κ", (
                    f"n={n} >= m={m_min}: a bilinear form would hold a B×n×m intermediate, "
                    "no smaller than the B×m² block it avoids, so κ(x) is built (same GEMM flops)"
                )
            return "dense-bilinear", (
                "ψ(w) is the n×D parameter itself; x^{⊗k} is contracted with the reshaped "
                "weight (symmetric blocks: unique monomials gathered, then one GEMM)"
            )
        if isinstance(form, forms.LowRank):
            return "lowrank-bilinear", "(κR)Lᵀ with κR contracted blockwise as bilinear forms"
        if isinstance(form, forms.Kronecker):
            if any(s[0] == "power" and s[3] == 2 for s in self.segs):
                return "kron-structured", (
                    "H = K R built per segment; x⊗x blocks via the correlation lags that occur"
                )
            return "materialised-κ", (
                "Kronecker ψ only exploits ordered degree-2 blocks; κ(x) is built and "
                "vec(A K Bᵀ) is applied"
            )
        return "materialised-κ", (
            f"no algebraic form declared by reconciliation {self.names[1]!r}: κ(x) is built "
            "and its apply() is used"
        )

    def _plan_kron(self, shapes: list[tuple[int, ...]]) -> None:
        form = self.form
        q = form.q
        t = self.D // q
        b_idx = form.b
        c = shapes[b_idx[0]][0] if len(b_idx) == 1 else shapes[b_idx[1]][1]
        info = {"q": q, "t": t, "segs": {}, "rank_one": False}
        if self.path == "kron-structured":
            for i, (kind, _w, m, k, tilde, off, _label) in enumerate(self.segs):
                if kind != "power" or k != 2:
                    continue
                m_lead = m + 1 if tilde else m
                _rows, _a, _slot, lags = _lag_pairs(m_lead, m, off, t, q)
                blocks = _row_blocks(m_lead, m, off, t, q)
                costs = window_costs(self.batch, m, m_lead, t, c, blocks, lags)
                windows = min(costs, key=costs.get)
                wanted, size = use_fft(self.batch, m, t, len(lags), c, self.fft)
                g = int(np.gcd.reduce(np.diff(lags))) if len(lags) > 1 else 1
                grid = int((lags[-1] - lags[0]) // g + 1)
                ends = ([(s0, s0 + (a1 - a0) * m) for _r, a0, a1, s0 in blocks]
                        if windows == "rows" else [(int(lags[0]), int(lags[-1]) + m)])
                info["segs"][i] = {"n_lags": len(lags), "fft_wanted": wanted, "fft": wanted,
                                   "size": size, "m": m, "windows": windows,
                                   "blocks": blocks, "pad": _pads(ends, t),
                                   "rowplan": _row_plan(blocks, m, t, c),
                                   "g": g, "grid": grid, "lag0": int(lags[0]),
                                   # the strided windows the GEMM takes when FFT is planned
                                   # but the dtype has none
                                   "unfold_pad": _pads([(int(lags[0]), int(lags[-1]) + m)], t)}
            if len(self.segs) == 1 and 0 in info["segs"]:
                kind, _w, m, k, tilde, off, _label = self.segs[0]
                rows, a_idx, _slot, lags = _lag_pairs(m + 1 if tilde else m, m, off, t, q)
                info["rank_one"] = bool(
                    len(lags) == 1 and (m + 1 if tilde else m) == q and len(rows) == q
                    and (rows == a_idx).all()
                )
                info["lag0"] = bool(info["rank_one"] and int(lags[0]) == 0 and t == m)
                # the one window, rows [lag, lag + m) of R zero-padded: a slice, no gather
                info["lag"] = int(lags[0])
                info["lag_pad"] = _pads([(int(lags[0]), int(lags[0]) + m)], t)
        info["fold"] = self._plan_fold(info, shapes, c)
        self.kron = info
        self._replan()

    def _plan_fold(self, info: dict, shapes: list[tuple[int, ...]], c: int) -> dict | None:
        """The one-node product (:class:`_KronRows`) where it applies and pays: a flat form
        (the factors are views of w) with B = S Tᵀ (R = T itself), κ one ordered degree-2
        segment (row windows), and y = H kron(A, S)ᵀ not dearer than A H Sᵀ by three batched
        products: multiply-adds at the planned batch (forward and backward) against the
        :data:`KERNEL_COST` of the kernels it saves (see :func:`fold_costs`)."""
        form = self.form
        if (not getattr(form, "flat", False) or len(form.b) != 2 or info["rank_one"]
                or len(self.segs) != 1 or 0 not in info["segs"] or not shapes):
            return None
        s_idx, r_idx = form.b
        if r_idx in form.a or r_idx == s_idx:
            return None
        p, q, s = form.p, form.q, int(shapes[s_idx][0])
        costs = fold_costs(self.batch, p, q, s, c)
        if costs["fold"] > costs["batched"]:
            return None
        offsets, off = [], 0
        for sh in shapes:
            offsets.append(off)
            off += math.prod(sh)
        seg = info["segs"][0]
        return {"p": p, "q": q, "a": tuple(form.a), "b": (s_idx, r_idx),
                "offsets": tuple(offsets), "shapes": tuple(tuple(sh) for sh in shapes),
                "tilde": bool(self.segs[0][4]), "rowplan": seg["rowplan"]}

    def _folded(self, z: Tensor) -> bool:
        """Whether this forward runs :class:`_KronRows` (planned, row windows without FFT,
        eager, no autocast)."""
        fold = self.kron["fold"] if self.kron is not None else None
        if fold is None:
            return False
        seg = self.kron["segs"][0]
        return (seg["windows"] == "rows" and not seg["fft"] and not traced()
                and not torch.is_autocast_enabled(z.device.type))

    # -- evaluation ------------------------------------------------------------------------------
    def _lead(self, i: int, z: Tensor) -> Tensor:
        return _with_one(z) if self.segs[i][4] else z

    def _dense(self, i: int, v: Tensor) -> Tensor:
        """Segment i as a (B, width) block (materialised for power segments)."""
        kind, _w, _m, k, *_ = self.segs[i]
        if kind == "dense":
            return v
        if kind == "power":
            return tensor_power(self._lead(i, v), v, k)
        cols = getattr(self, f"cols{i}")
        out = v.index_select(1, cols[0])
        for j in range(1, k):
            out = out * v.index_select(1, cols[j])
        return out

    def materialise(self, inputs: list[Tensor]) -> Tensor:
        parts = [self._dense(i, v) for i, v in enumerate(inputs)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _dense_left(self, inputs: list[Tensor], w_mat: Tensor) -> Tensor:
        """κ(X) W̃ᵀ for a dense (n, D) matrix W̃ without forming power blocks."""
        widths = [s[1] for s in self.segs]
        parts = [w_mat] if len(widths) == 1 else torch.split(w_mat, widths, dim=1)
        y = None
        for i, (v, ws) in enumerate(zip(inputs, parts)):
            kind, width, _m, k, *_ = self.segs[i]
            if kind == "power":
                part = _power_left(v, self._lead(i, v), k, width, ws)
            else:
                part = self._dense(i, v) @ ws.t()
            y = part if y is None else y + part
        return y

    def _right(self, inputs: list[Tensor], r_mat: Tensor) -> Tensor:
        """κ(X) R for a (D, c) matrix R without forming power blocks."""
        widths = [s[1] for s in self.segs]
        parts = [r_mat] if len(widths) == 1 else torch.split(r_mat, widths, dim=0)
        y = None
        skip = {q[2] for q in self.sym_quad.values() if q[2] is not None}
        for i, (v, rs) in enumerate(zip(inputs, parts)):
            kind, _width, m, k, tilde, *_ = self.segs[i]
            if i in skip:
                continue  # a degree-1 segment folded into the next segment's quadratic form
            if kind == "power" and k == 2:
                part = _power2_right(v, tilde, rs)
            elif kind == "power":
                part = _power_right(v, self._lead(i, v), k, rs.contiguous())
            elif i in self.sym_quad:
                lo = self.sym_quad[i][2]
                if lo is None:
                    part = self._quad(i, v, rs)
                else:
                    off = self.segs[lo][5] - self.segs[0][5]
                    rows = m + rs.shape[0]
                    # (all of R: no narrow, whose backward would zero-fill and copy R's
                    # gradient, and transpose-copy it again into w's layout)
                    part = self._quad(i, v, r_mat if off == 0 and rows == r_mat.shape[0]
                                      else r_mat.narrow(0, off, rows))
                    if inputs[lo] is not v:  # the fold took x_j·1 for the dense input
                        part = part + (inputs[lo] - v) @ parts[lo]
            elif kind == "sympower" and k >= 2:
                part = self._sym_right(i, v, rs)
            else:
                part = v @ rs
            y = part if y is None else y + part
        return y

    def _quad(self, i: int, v: Tensor, rs: Tensor) -> Tensor:
        """Σ_{a<=b} x_a x_b rs[(a, b), c] (+ Σ_b x_b rs[b, c] for a folded degree-1 segment,
        whose m rows then lead rs) for degree-2 segment i: (B, c).

        ``quadratic-fold``: rsᵀ's entries are placed once into the table T of
        :func:`_quad_tables` (one gather of about c·m²/2 numbers on the weight side, its
        backward one gather; nothing of size B×m² is formed); per range [a0, a1) of the
        first index: U = x[:, a0:] T_rangeᵀ (B, c·slots; one GEMM), then Σ_a lead_a U[c, a]
        (one product and one reduction), lead = x[:, a0:a1] (after a constant 1 for the
        folded degree-1 slot). Plain differentiable ops."""
        b, m = v.shape
        c = rs.shape[1]
        ranges, _rows, _lo = self.sym_quad[i]
        t = _Place.apply(rs.t().reshape(-1), getattr(self, f"quad{i}_src"),
                         getattr(self, f"quad{i}_dest"))
        # one split (its backward one cat), not a slice per range (each slice's backward
        # zero-fills a gradient of T's size)
        sizes = [c * (a1 - a0 + o) * (m - a0) for a0, a1, o, _base in ranges]
        pieces = t.split(sizes) if len(ranges) > 1 else (t[: sizes[0]],)
        y = None
        for (a0, a1, o, _base), piece in zip(ranges, pieces):
            width, slots = m - a0, a1 - a0 + o
            u = v[:, a0:] @ piece.view(c * slots, width).t()
            lead = _with_one(v[:, :a1]) if o else v[:, a0:a1]
            # (lead in the GEMM's dtype: under autocast the product is the autocast dtype, like
            # a matmul's)
            part = (u.view(b, c, slots) * lead.to(u.dtype).unsqueeze(1)).sum(-1)
            y = part if y is None else y + part
        return y

    def _sym_right(self, i: int, v: Tensor, rs: Tensor) -> Tensor:
        """Σ_j mono_j(x) rs[j, c] over the unique degree-k monomials of segment i: (B, c).

        Monomial j is x_α · tail(x), tail a degree-(k-1) monomial (x itself for k = 2). rs's
        rows are placed once into the blocked table T (:func:`_sym_tables`; one index_copy,
        its backward one gather); per range [a0, a1) of α: U = tails[:, s:] @ T_range
        (B, (a1-a0)·c), then Σ_α x_α U_α (one batched product). Plain differentiable ops."""
        k = self.segs[i][3]
        b = v.shape[0]
        c = rs.shape[1]
        ranges, rows = self.sym_ranges[i]
        if k == 2:
            tails = v
        else:
            low = getattr(self, f"sym{i}_low")
            tails = v.index_select(1, low[0])
            for j in range(1, k - 1):
                tails = tails * v.index_select(1, low[j])
        t = _Place.apply(rs, getattr(self, f"sym{i}_src"), getattr(self, f"sym{i}_dest"))
        n_tails = tails.shape[1]
        y = None
        for a0, a1, s0, base in ranges:
            h = a1 - a0
            width = n_tails - s0
            u = tails[:, s0:] @ t[base : base + width * h].view(width, h * c)
            part = torch.bmm(v[:, a0:a1].unsqueeze(1), u.view(b, h, c)).view(b, c)
            y = part if y is None else y + part
        return y

    def _rowsum(self, inputs: list[Tensor]) -> Tensor:
        y = None
        for i, v in enumerate(inputs):
            kind, _w, _m, k, *_ = self.segs[i]
            if kind == "power":
                part = self._lead(i, v).sum(1, keepdim=True) * v.sum(1, keepdim=True) ** (k - 1)
            else:
                part = self._dense(i, v).sum(dim=1, keepdim=True)
            y = part if y is None else y + part
        return y

    def _prefix(self, inputs: list[Tensor], cols: int) -> Tensor:
        parts = []
        for i, v in enumerate(inputs):
            kind, width, m, k, tilde, off, _ = self.segs[i]
            if off >= cols:
                break
            take = min(width, cols - off)
            if kind == "power":
                m_lead = m + 1 if tilde else m
                rows = -(-take // (width // m_lead))
                p = self._lead(i, v)[:, :rows]  # only the rows of the first factor needed
                for _ in range(k - 1):
                    p = (p.unsqueeze(2) * v.unsqueeze(1)).flatten(1)
                parts.append(p[:, :take])
            else:
                parts.append(self._dense(i, v)[:, :take])
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _kron_h(self, inputs: list[Tensor], r: Tensor) -> Tensor:
        """H = K R, (B, q, c) with K = κ(X) reshaped (q, t) per sample and R (t, c)."""
        q, t = self.kron["q"], self.kron["t"]
        b = inputs[0].shape[0]
        c = r.shape[1]
        h = None
        for i, v in enumerate(inputs):
            kind, width, m, _k, _tilde, off, _ = self.segs[i]
            seg = self.kron["segs"].get(i)
            if seg is not None and seg["windows"] == "rows" and not seg["fft"]:
                part = self._rows(i, v, r, seg)
            elif seg is not None:
                rows = getattr(self, f"k{i}_rows")
                vals = self._lag_values(i, v, r, seg)
                part = v.new_zeros(b, q, c).index_add(1, rows, vals)
            else:
                dv = self._dense(i, v)
                i0, i1 = off // t, (off + width - 1) // t
                vp = F.pad(dv, (off - i0 * t, (i1 + 1) * t - (off + width))).reshape(b, i1 - i0 + 1, t)
                part = F.pad(vp @ r, (0, 0, i0, q - 1 - i1))
            h = part if h is None else h + part
        return h

    @staticmethod
    def _padded(r: Tensor, pad: tuple[int, int]) -> Tensor:
        """R (t, c) with zero rows before/after, contiguous (the windows are its views)."""
        return F.pad(r, (0, 0, pad[0], pad[1])) if pad[0] or pad[1] else r.contiguous()

    def _rows(self, i: int, z: Tensor, r: Tensor, seg: dict) -> Tensor:
        """Segment i's part of H = K R by row blocks: one autograd node (:class:`_RowWindows`)
        in eager mode, the plain form under torch.func / compile / autocast."""
        if traced() or torch.is_autocast_enabled(z.device.type):
            return self._row_windows(i, z, r, seg)
        return _RowWindows.apply(z, r, seg["rowplan"], bool(self.segs[i][4]), self.kron["q"],
                                 lambda z_, r_: self._row_windows(i, z_, r_, seg))

    def _row_windows(self, i: int, z: Tensor, r: Tensor, seg: dict) -> Tensor:
        """(B, q, c): segment i's part of H = K R, row by row of K. Row ``row`` holds
        lead_α z_β for α in [α0, α1); its windows of R step by m, so they are R's rows
        [start, start + (α1 − α0) m) reshaped (α1 − α0, m·c) – a view. One GEMM with lead's α
        range per row, then one batched product with z for all rows."""
        b, m = z.shape
        c = r.shape[1]
        lead = self._lead(i, z)
        pad0 = seg["pad"][0]
        flat = self._padded(r, seg["pad"]).reshape(-1)
        us = []
        for _row, a0, a1, start in seg["blocks"]:
            s0 = (start + pad0) * c
            us.append(lead[:, a0:a1] @ flat[s0 : s0 + (a1 - a0) * m * c].view(a1 - a0, m * c))
        n_rows = len(us)
        u = us[0].view(b, m, c) if n_rows == 1 else torch.stack(
            [x.view(b, m, c) for x in us], dim=2)  # (B, m, rows, c)
        hr = torch.bmm(z.unsqueeze(1), u.reshape(b, m, n_rows * c)).view(b, n_rows, c)
        row0 = seg["blocks"][0][0]
        return F.pad(hr, (0, 0, row0, self.kron["q"] - row0 - n_rows))

    def _unfold_windows(self, i: int, z: Tensor, r: Tensor, seg: dict) -> Tensor:
        """(B, grid, c): corr(R, z_b) at every lag lag0 + j g of the arithmetic grid through
        the lags that occur; the windows are ``unfold``'s strided view of R (backward: a
        fold), copied once into the GEMM's operand."""
        b, m = z.shape
        c = r.shape[1]
        pad = seg["unfold_pad"]
        lo = seg["lag0"] + pad[0]
        g, grid = seg["g"], seg["grid"]
        rp = self._padded(r, pad)[lo : lo + (grid - 1) * g + m]
        win = rp.unfold(0, m, g)  # (grid, c, m), a view
        return (z @ win.permute(2, 0, 1).reshape(m, grid * c)).view(b, grid, c)

    def _lag_values(self, i: int, z: Tensor, r: Tensor, seg: dict) -> Tensor:
        """(B, P, c): lead_α(b) · corr(R, z_b)[lag] for every (row, α) pair of segment i."""
        b, m = z.shape
        lags = getattr(self, f"k{i}_lags")
        if seg["fft"] and b > 0:  # planned for the module's dtype (see _replan); MKL has no
            # empty transforms, so an empty batch takes the (equal) window GEMM
            size = seg["size"]
            # corr[o] = Σ_β R[o+β] z[β] = (R * flip(z))[o + m - 1]
            rf = torch.fft.rfft(r.t(), n=size, dim=-1)  # (c, F)
            zf = torch.fft.rfft(z.flip(1), n=size, dim=-1)  # (B, F)
            corr = torch.fft.irfft(zf.unsqueeze(1) * rf.unsqueeze(0), n=size, dim=-1)
            cl = corr.index_select(2, lags + (m - 1)).transpose(1, 2)  # (B, n_lags, c)
            slot = getattr(self, f"k{i}_slot")
        else:
            cl = self._unfold_windows(i, z, r, seg)  # (B, grid, c)
            slot = getattr(self, f"k{i}_gslot")
        lead = self._lead(i, z).index_select(1, getattr(self, f"k{i}_aidx")).unsqueeze(2)
        if cl.shape[1] == 1:
            return lead * cl
        return lead * cl.index_select(1, slot)

    def _kron_right(self, fs: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """(R, post): B = F_b itself gives R = Bᵀ; B = S Tᵀ gives R = T, then post = Sᵀ."""
        b_idx = self.form.b
        if len(b_idx) == 1:
            return fs[b_idx[0]].t(), None
        return fs[b_idx[1]], fs[b_idx[0]].t()

    def _kron_left(self, h: Tensor, fs: list[Tensor]) -> Tensor:
        """A H for H (B, q, c): A = 1 (sum of rows), F_a, or F_i F_jᵀ."""
        a_idx = self.form.a
        if len(a_idx) == 0:
            return h.sum(dim=1, keepdim=True).expand(-1, self.form.p, -1)
        if len(a_idx) == 1:
            return torch.matmul(fs[a_idx[0]], h)
        return torch.matmul(fs[a_idx[0]], torch.matmul(fs[a_idx[1]].t(), h))

    def _kron_apply(self, inputs: list[Tensor], fs: list[Tensor], kx: Tensor | None = None) -> Tensor:
        """y = vec(A K Bᵀ) per sample, K = κ reshaped (q, t); ``kx``: κ already built."""
        b = inputs[0].shape[0]
        r_mat, post = self._kron_right(fs)
        if kx is not None:
            g = self._kron_left(kx.reshape(b, self.form.q, self.D // self.form.q) @ r_mat, fs)
        elif self.kron["rank_one"]:
            # K = u vᵀ per sample, so A K Bᵀ = (A u)(B v)ᵀ: e.g. (A x̃) ⊗ (B x) for q = m+1
            z = inputs[0]
            u = self._lead(0, z)
            if self.kron["lag0"]:
                v = z @ r_mat
            else:
                lo = self.kron["lag"] + self.kron["lag_pad"][0]
                v = z @ self._padded(r_mat, self.kron["lag_pad"])[lo : lo + z.shape[1]]
            g = self._kron_left(u.unsqueeze(2), fs) * v.unsqueeze(1)  # (B, p, c)
        else:
            g = self._kron_left(self._kron_h(inputs, r_mat), fs)
        if post is not None:
            g = g @ post
        return g.reshape(b, self.n)

    def _one(self, inputs: list[Tensor], kx: Tensor | None, wc: Tensor, rec) -> Tensor:
        path, form, n, d = self.path, self.form, self.n, self.D
        if path == "dense-bilinear":
            return self._dense_left(inputs, rec.reconcile(wc, n, d))
        if path == "sym-bilinear":
            return self._right(inputs, rec.reconcile(wc, n, d).t())
        if path == "lowrank-bilinear":
            fs = rec.form_factors(wc, n, d)
            return self._right(inputs, fs[form.right]) @ fs[form.left].t()
        if path == "kron-structured":
            if self._folded(inputs[0]):
                return _KronRows.apply(
                    inputs[0], wc, self.kron["fold"],
                    lambda z_, w_: self._kron_apply([z_], rec.form_factors(w_, n, d)))
            return self._kron_apply(inputs, rec.form_factors(wc, n, d))
        # materialised κ
        if isinstance(form, forms.Dense):
            return kx @ rec.reconcile(wc, n, d).t()
        if isinstance(form, forms.LowRank):
            fs = rec.form_factors(wc, n, d)
            return (kx @ fs[form.right]) @ fs[form.left].t()
        if isinstance(form, forms.Kronecker):
            return self._kron_apply(inputs, rec.form_factors(wc, n, d), kx)
        return rec.apply(kx, wc, n, d)

    def forward(self, inputs: list[Tensor], w: Tensor, rec: nn.Module) -> Tensor:
        """``inputs``: ``expansion.segment_inputs(x)``; ``w``: (channels, l); ``rec``: ψ."""
        path, n = self.path, self.n
        b = inputs[0].shape[0]
        # fixed matrices: every channel gives the same product (sum: C times it, mean: it)
        times = 1.0 if self.mean else float(self.channels)
        if path == "zero":
            # 0·κ row sums: keeps pre-processing in the graph and NaN rows NaN, like κ·0ᵀ
            anchor = sum(v.sum(dim=1, keepdim=True) for v in inputs) * 0.0
            return inputs[0].new_zeros(b, n) + anchor
        if path == "rowsum":
            return (self.form.c * times * self._rowsum(inputs)).expand(-1, n)
        if path == "eye-prefix":
            k = min(n, self.D)
            out = self._prefix(inputs, k)
            if n > k:
                out = torch.cat([out, out.new_zeros(b, n - k)], dim=1)
            # 0·(row sum of κ): a NaN/inf feature beyond the prefix still makes its row NaN,
            # as κ Iᵀ does
            out = out + self._rowsum(inputs) * 0.0
            return out * times if self.channels > 1 and not self.mean else out
        kx = self.materialise(inputs) if path == "materialised-κ" else None
        return self._fuse([self._one(inputs, kx, wc, rec) for wc in self._channels(w)])

    def parts(self, inputs: list[Tensor], w: Tensor, rec: nn.Module) -> list[Tensor]:
        """The C per-channel products ⟨κ(x), ψ(w^c)⟩, unfused (for a head whose channels are
        fused by a fusion object: max, learned, ...); a fixed matrix gives C equal parts."""
        if self.path in ("zero", "rowsum", "eye-prefix"):
            one = self.forward(inputs, w, rec)  # sum of C equal parts, or their mean
            if self.channels > 1 and not self.mean:
                one = one / self.channels
            return [one] * self.channels
        kx = self.materialise(inputs) if self.path == "materialised-κ" else None
        return [self._one(inputs, kx, wc, rec) for wc in self._channels(w)]

    def _channels(self, w: Tensor) -> list[Tensor]:
        # one channel: a view (its backward is free; unbind's stacks an l-sized gradient)
        return [w.view(-1)] if self.channels == 1 else list(w.unbind(0))

    def _fuse(self, parts: list[Tensor]) -> Tensor:
        y = parts[0]
        for p in parts[1:]:
            y = y + p
        return y / len(parts) if self.mean else y

    # -- description ------------------------------------------------------------------------------
    def describe(self) -> str:
        """The stored plan: path, segments, why, and the Kronecker method per segment."""
        segs = []
        for kind, width, *_rest, label in self.segs:
            segs.append(f"{label}[{width}, never formed]" if kind == "power" and
                        self.path != "materialised-κ" else f"{label}[{width}]")
        lines = [
            f"path: {self.path}",
            f"κ = {self.names[0]} (D={self.D}) as {' | '.join(segs)}",
            f"ψ = {self.names[1]} ({self.form.kind} form): {self.reason}",
        ]
        if self.kron is not None and self.path == "kron-structured":
            lines.append(f"Kronecker method: {self.kron_method} (in {self.dtype})")
            for i, seg in self.kron["segs"].items():
                label, off = self.segs[i][6], self.segs[i][5]
                if self.kron["rank_one"]:
                    how = ("aligned: K = x̃ xᵀ is rank one per sample, y = vec((A x̃)(R x)ᵀ), "
                           "no q×t block formed")
                else:
                    rows = len(seg["blocks"])
                    if seg["windows"] == "rows":
                        gemm = (f"{rows} row block(s) of R reshaped (the windows step by m "
                                f"and tile R: views, no gather), one GEMM per row")
                    else:
                        gemm = (f"{seg['grid']} strided windows of R (unfold, step "
                                f"{seg['g']}; backward a fold), one GEMM")
                    if seg["fft"]:
                        via = f"one FFT correlation (size {seg['size']})"
                    elif seg["fft_wanted"]:
                        via = (f"{gemm} (an FFT would be chosen, but there is no "
                               f"{str(self.dtype).removeprefix('torch.')} FFT)")
                    else:
                        via = gemm
                    how = f"rows straddle the blocks: {seg['n_lags']} correlation lags via {via}"
                lines.append(f"  {label} at offset {off} with q={self.kron['q']}, "
                             f"t={self.kron['t']}: {how}")
            if self.kron.get("fold") is not None:
                lines.append("  y = H kron(A, S)ᵀ: one GEMM, with the row windows in one "
                             "autograd node (w's gradient written as one buffer)")
        for i, (ranges, _rows, lo) in self.sym_quad.items():
            label = self.segs[i][6]
            with_x = f" with {self.segs[lo][6]} as a constant slot" if lo is not None else ""
            lines.append(f"  {label}: quadratic-fold{with_x}: ψ's rows folded into "
                         f"upper-triangular m×m forms (one weight-side gather), "
                         f"{len(ranges)} range(s) of the first index, one GEMM each")
        fusion = "mean" if self.mean else "sum"
        lines.append(f"{self.channels} channel(s), {fusion} fusion")
        return "\n".join(lines)

    def extra_repr(self) -> str:
        return f"path={self.path!r}"


def materialised_product(head, x: Tensor) -> Tensor:
    """The dense definition ``fuse_c κ(X) ψ(w^c)ᵀ``: κ(X) (B×D) and ψ(w^c) (n×D) are built."""
    x = head.check_input(x)
    kx = head.expansion(x)
    rec = head.reconciliation
    parts = [kx @ rec.reconcile(head.w[c], head.n, head.D).t() for c in range(head.channels)]
    y = parts[0]
    for p in parts[1:]:
        y = y + p
    return y / len(parts) if head.channel_fusion == "mean" and len(parts) > 1 else y


# ---------------------------------------------------------------------------------------------
# the fused small-head product
# ---------------------------------------------------------------------------------------------
#: widest κ (D) for which a head takes the fused product (κ is then formed: B×D numbers)
FUSED_MAX_D = 256


class _FusedHead(torch.autograd.Function):
    """``κ(x) ψ(w)ᵀ + b [+ act(x) W'ᵀ + b']`` for one channel, κ written by the expansion's
    fused part into one (B, D + 1) buffer K (no concatenation, no per-segment products),
    ψ(w) = L Rᵀ (w = [vec L, vec R]) or W = w reshaped, the bracket a folded input-side
    remainder (KAN's base branch, :mod:`rpnkit.fused_remainder`; w2 = None without).
    Backward in one node (:func:`head_backward`): the gradient of w written into one flat
    buffer (no split backward), dL/dK by one GEMM and dL/dx by the part's analytic rule.
    When a higher-order gradient is asked for (``create_graph``) the backward differentiates
    ``whole(x, w, bias, w2, b2)`` (the planned path) instead, so double backward is exact."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, bias, w2, b2, plan: FusedHeadProduct,
                whole) -> Tensor:
        y, saved = head_forward(plan, x, w, bias, w2, b2, ctx.needs_input_grad[0])
        ctx.save_for_backward(x, w, bias, w2, b2)
        ctx.saved, ctx.plan, ctx.whole = saved, plan, whole
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        ins = ctx.saved_tensors
        needs = ctx.needs_input_grad[:5]
        if torch.is_grad_enabled():  # create_graph: the planned path, differentiable
            want = [t for t, need in zip(ins, needs) if need]
            got = iter(torch.autograd.grad(ctx.whole(*ins), want, g, create_graph=True,
                                           allow_unused=True))
            return (*(next(got) if need else None for need in needs), None, None)
        x, w, _, w2, _ = ins
        return (*head_backward(ctx.plan, ctx.saved, x, w, w2, g, needs), None, None)


def _global_hooks() -> bool:
    _m = _torch_module
    return bool(_m._global_forward_hooks or _m._global_forward_pre_hooks
                or _m._global_backward_hooks or _m._global_backward_pre_hooks)


def has_hooks(*modules) -> bool:
    """Whether any of ``modules`` has module hooks, or global module hooks are registered (a
    fused node would skip them)."""
    return _global_hooks() or any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        for m in modules)


def head_forward(plan, x: Tensor, w: Tensor, bias, w2, b2, need_x: bool, seeds: int = 0):
    """One fused head ``κ(x) ψ(w)ᵀ + b [+ act(x) W'ᵀ + b']``: (y, what its backward needs).
    ``seeds = S``: S stacked copies (w, bias, w2, b2 with a leading S; x (B, m) shared by the
    copies or (S, B, m); y (S, B, n)), as in :func:`~rpnkit.contract.fused_head_forward`."""
    y, k, u, state = fused_head_forward(plan, x, w, bias, need_x, seeds=seeds)
    s = None
    if w2 is not None:
        s = F.silu(x) if plan.activation == "silu" else x
        if seeds:
            y = y + s @ w2.mT
            if b2 is not None:
                y = y + b2.unsqueeze(1)
        else:
            y.addmm_(s, w2.t())
            if b2 is not None:
                y.add_(b2)
    return y, (k, u, s, state)


def head_backward(plan, saved, x: Tensor, w: Tensor, w2, g: Tensor, needs, seeds: int = 0):
    """Gradients (x, w, bias, w2, b2) of one fused head for the output gradient ``g``;
    ``needs`` says which are wanted (the others are None); ``seeds`` as in
    :func:`head_forward` (a shared input's gradient is summed over the copies)."""
    k, u, s, state = saved
    need_x, need_w, need_b, need_w2, need_b2 = needs
    shared = bool(seeds) and x.dim() == 2
    gk, gw, gb = fused_head_grads(plan, g, k, u, w, need_x, need_w, need_b, seeds=seeds,
                                  shared=shared)
    gw2 = (g.mT @ s if seeds else g.t() @ s) if need_w2 else None
    gb2 = g.sum(-2) if need_b2 else None
    gx = None
    if need_x:
        if x.dim() == 2:
            gx = plan.part.grad(state, gk, k, x)
        else:
            gx = plan.part.grad(state, gk, k, x.reshape(-1, x.shape[-1])).view(x.shape)
        if w2 is not None:
            gs = g @ w2
            if shared:
                gs = gs.sum(0)
            if plan.activation == "silu":
                gs = torch.ops.aten.silu_backward(gs, x)
            gx = gx + gs
    return gx, gw, gb, gw2, gb2


def fused_head_forward(plan, x: Tensor, w: Tensor, bias: Tensor | None, need_x: bool,
                       seeds: int = 0):
    """κ(x) ψ(w)ᵀ + b with κ written by the plan's fused part into one (N, D + 1) buffer K;
    returns (y, K, U = K R for a low-rank form else None, the part's saved state).

    ``seeds = S > 0``: S stacked copies (:mod:`rpnkit.fused_stacked`, batched seeds): w (S, ...),
    bias (S, n), and x either one (B, m) input shared by every copy (κ filled once, the GEMMs
    broadcast) or (S, B, m) (κ filled for all S·B rows at once, batched GEMMs); y (S, B, n)."""
    n, d, r = plan.n, plan.D, plan.rank
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    k = x2.new_empty(x2.shape[0], d + 1)  # every part writes all its columns
    state = plan.part.fill(x2, k, need_x)
    kd = columns(k, 0, d) if x.dim() == 2 else k[:, :d].view(*x.shape[:2], d)
    if not seeds:  # one head: w's factors as strided views (one op each), 2-D GEMMs
        w, o = _flat(w)
        u = torch.mm(kd, w.as_strided((d, r), (r, 1), o + n * r)) if r else None
        lt = w.as_strided((r, n), (1, r), o) if r else w.as_strided((d, n), (1, d), o)
        a = kd if u is None else u
        y = torch.mm(a, lt) if bias is None else torch.addmm(bias, a, lt)
        return y, k, u, state
    wf = w.view(seeds, -1)
    if r:
        u = torch.matmul(kd, wf[:, n * r :].view(seeds, d, r))
        lt = wf[:, : n * r].view(seeds, n, r).mT
    else:
        u = None
        lt = wf.view(seeds, n, d).mT
    a = kd if u is None else u
    if bias is None:
        y = torch.matmul(a, lt)
    else:
        y = torch.baddbmm(bias.unsqueeze(1), a.expand(seeds, *a.shape[-2:]), lt)
    return y, k, u, state


def _flat(w: Tensor) -> tuple[Tensor, int]:
    """w contiguous (a parameter is; a tensor passed through ``functional_call`` may not be)
    and its storage offset, for strided views of its flat factors."""
    if not w.is_contiguous():
        w = w.contiguous()
    return w, w.storage_offset()


def fused_head_grads(plan, g: Tensor, k: Tensor, u: Tensor | None, w: Tensor, need_x: bool,
                     need_w: bool, need_b: bool, seeds: int = 0,
                     shared: bool = False) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The fused product's gradients for the output gradient ``g``: with respect to the
    buffer K (``gk``, its last column discarded: bases that do not exist get nothing), the
    flat weight (``gw``: w's factors as views, written by two GEMMs) and the bias.
    ``seeds``/``shared`` as in :func:`fused_head_forward` (a shared K's gradient is summed
    over the copies)."""
    n, d, r = plan.n, plan.D, plan.rank
    kd = columns(k, 0, d)
    if seeds:
        if not shared:
            kd = kd.view(seeds, -1, d)
        gk, gw, gb = _stacked_grads(n, d, r, g, k, kd, u, w.view(seeds, -1), need_x, need_w,
                                    need_b, shared)
        return gk, None if gw is None else gw.view_as(w), gb
    wc, o = _flat(w)
    gw = gb = gk = None
    if need_x:
        gk = g.new_zeros(k.shape[0], d + 1)
    if r:
        gu = torch.mm(g, wc.as_strided((n, r), (r, 1), o))
        if need_w:
            gw = torch.empty(w.shape, dtype=g.dtype, device=g.device)
            torch.mm(g.t(), u, out=gw.as_strided((n, r), (r, 1), 0))
            torch.mm(kd.t(), gu, out=gw.as_strided((d, r), (r, 1), n * r))
        if need_x:
            torch.mm(gu, wc.as_strided((r, d), (1, r), o + n * r), out=columns(gk, 0, d))
    else:
        if need_w:
            gw = torch.mm(g.t(), kd).view(w.shape)
        if need_x:
            torch.mm(g, wc.as_strided((n, d), (d, 1), o), out=columns(gk, 0, d))
    if need_b:
        gb = g.sum(0)
    return gk, gw, gb


def _stacked_grads(n: int, d: int, r: int, g: Tensor, k: Tensor, kd: Tensor, u: Tensor | None,
                   wf: Tensor, need_x: bool, need_w: bool, need_b: bool, shared: bool):
    """:func:`fused_head_grads` for S stacked copies: g (S, B, n), wf (S, |w|), kd (B, D)
    shared or (S, B, D)."""
    gw = gk = None
    if r:
        gu = g @ wf[:, : n * r].view(-1, n, r)
        if need_w:
            gw = torch.cat([(g.mT @ u).flatten(1), (kd.mT @ gu).flatten(1)], 1)
        gkd = gu @ wf[:, n * r :].view(-1, d, r).mT if need_x else None
    else:
        if need_w:
            gw = (g.mT @ kd).flatten(1)
        gkd = g @ wf.view(-1, n, d) if need_x else None
    if need_x:
        gk = g.new_zeros(k.shape[0], d + 1)
        gk[:, :d] = gkd.sum(0) if shared else gkd.reshape(-1, d)
    return gk, gw, g.sum(1) if need_b else None


class FusedHeadProduct(nn.Module):
    """The fused small-head product, built by a head at construction when its components
    declare it (:meth:`~rpnkit.expansion.base.Expansion.fused_part` and a flat low-rank or
    reshape-dense form, one channel, D <= :data:`FUSED_MAX_D`). Eager only: under
    ``torch.compile`` / ``torch.export`` / ``torch.func`` and autocast the head takes its
    planned :class:`Contraction` (:meth:`available`)."""

    def __init__(self, part: nn.Module, n: int, D: int, rank: int) -> None:  # noqa: N803
        super().__init__()
        self.part, self.n, self.D, self.rank = part, int(n), int(D), int(rank)

    @staticmethod
    def plan_for(expansion: nn.Module, form: forms.Form, factor_shapes, m: int, n: int,
                 D: int, channels: int) -> FusedHeadProduct | None:  # noqa: N803
        """The fused product for these components, or None where it does not apply."""
        if channels != 1 or D > FUSED_MAX_D:
            return None
        if isinstance(form, forms.LowRank) and form.flat and (form.left, form.right) == (0, 1):
            rank = int(factor_shapes[0][1])
        elif isinstance(form, forms.Dense) and form.reshape:
            rank = 0
        else:
            return None
        part = expansion.fused_part(m, 0, D)
        return None if part is None else FusedHeadProduct(part, n, D, rank)

    def reset_parameters(self) -> None:
        self.part.reset_parameters()

    def ready(self) -> bool:
        """Whether the product can run as far as its own state goes (e.g. the knots are still
        uniform); :meth:`available` adds what depends on the call's context."""
        return self.part.available()

    @staticmethod
    def eager(x: Tensor) -> bool:
        """The call's context allows the fused node: not compiling or tracing (TorchScript's
        tracer cannot record a custom Function), no autocast for x's device."""
        return not (torch.compiler.is_compiling() or torch.jit.is_tracing() or autocast_off(x))

    def available(self, x: Tensor) -> bool:
        # of the torch.func transforms only a single vmap has a rule (rpnkit.fused_stacked)
        if not (self.eager(x) and self.ready()):
            return False
        if functorch_active():
            from .fused_stacked import vmap_ready

            return vmap_ready(self.part.tensors())
        return True

    def forward(self, x: Tensor, w: Tensor, bias: Tensor | None, plain) -> Tensor:
        return self.run(x, w, bias, plain)

    def run(self, x: Tensor, w: Tensor, bias: Tensor | None, plain) -> Tensor:
        """:meth:`forward` without ``nn.Module.__call__`` (the head's hot path)."""
        if functorch_active():  # a single vmap (available): its batched rule
            from .fused_stacked import FusedVmap

            return FusedVmap.apply(x, w, bias, None, None, self,
                                   lambda x, w, b, w2, b2: plain(x, w, b))
        return _FusedHead.apply(x, w, bias, None, None, self,
                                lambda x, w, b, w2, b2: plain(x, w, b))

    def run_stacked(self, x: Tensor, w: Tensor, bias: Tensor | None, plain) -> Tensor:
        """S stacked copies at once (:func:`rpnkit.fused_stacked.run_stacked`): w and bias
        (S, ...), x (B, m) shared or (S, B, m); output (S, B, n)."""
        from .fused_stacked import run_stacked

        return run_stacked(self, x, w, bias, None, None, lambda x, w, b, w2, b2: plain(x, w, b))

    def describe(self) -> str:
        how = f"(K R) Lᵀ, rank {self.rank}" if self.rank else "K Wᵀ"
        return (f"fused: κ written into one B×{self.D} buffer K, {how}, one analytic backward "
                f"(eager and under one vmap; compile/export/grad/autocast take the path above)")

    def extra_repr(self) -> str:
        return f"D={self.D}, rank={self.rank}"
