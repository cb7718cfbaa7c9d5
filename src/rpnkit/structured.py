"""Structured evaluation of a head's expansion product ``fuse_c κ(X) ψ(w^c)ᵀ`` (SPEC §3).

The dense definition materialises κ(X) (B×D) and ψ(w) (n×D). Both are often far
larger than the work really needed: Taylor's degree-k block is the tensor power
``x^{⊗k}`` (B×m^k), a low-rank ψ is ``A Bᵀ`` and a Kronecker ψ is ``A ⊗ B``. This
module decomposes κ(X) into *segments* and lets each reconciliation act on them
without ever forming the big blocks:

* ``dense`` segments – columns that are cheap to materialise (x itself, B-splines,
  RBFs, …) or whose structure is not exploited;
* ``power`` segments – ``lead ⊗ z^{⊗(k-1)}`` of a base z (B×m): Taylor's degrees 1 and 2
  together as ``[x | x⊗x] = [1; x] ⊗ x`` (lead = x̃ = [1; x]) and its degree-k blocks
  ``x^{⊗k}`` for k ≥ 3 (:class:`~rpnkit.expansion.polynomial.Taylor`, also inside
  ``extended`` and as the last stage of ``nested``);
* ``sympower`` segments – the unique monomials of degree k (``Taylor(symmetric=True)``).

Paths (see :func:`plan`, reported by :meth:`RPNHead.plan`):

``dense-bilinear``
    identity / masking / hypernet ψ: the n×D matrix is used as it is (it *is* the
    parameter), but x^{⊗k} is contracted with the reshaped weight (one GEMM – for a
    standalone Taylor d=2, ``w.reshape(n·(m+1), m)`` is a view – then one reduction per
    further index) instead of being formed. Symmetric Taylor blocks are cheaper to
    gather (C = unique monomials, B×C) and multiply, so that pair materialises.
``lowrank-bilinear``
    lorr ``(κB)Aᵀ`` and random matrix adaption: the D×r factor's degree-k rows are
    reshaped to (m, …, m, r) and contracted with x one index at a time:
    ``κB = x·B₁ + einsum('bi,ijr,bj->br')``. Symmetric blocks scatter B's rows into
    the ordered (m, m, r) layout (r·m² numbers, no batch dimension).
``kron-structured``
    hm / lphm / dual_lphm / duplicated_padding ``y = vec(A K Bᵀ)`` with K = κ reshaped
    q×t: ``H = K R`` (R = Bᵀ or T) is accumulated segment by segment. For a degree-2
    block at flat offset ``off`` the entry ``K[i, c]`` is ``z_α z_β`` with
    ``off + αm + β = it + c``, hence ``H[i] = Σ_α z_α · corr(R, z)[off + αm − it]``:
    only the correlation lags that occur are computed (one GEMM with a gathered window
    of R, or an FFT correlation when many lags occur). When q = m + 1 (κ = [1; x] ⊗ x
    reshaped to [1; x]·xᵀ, rank one) a single lag 0 occurs: ``H[i] = x̃_i · (xᵀR)``.
``rowsum`` / ``eye-prefix`` / ``zero``
    closed forms for the constant reconciliations (rowsum of x^{⊗k} is (Σx)^k).
``materialised-κ``
    the generic fallback: κ(X) is built and ``reconciliation.apply`` (already
    factorised in ψ) is used. Always exact, for every (κ, ψ) pair. A uniform B-spline
    (d >= 1) is built by :func:`bspline_basis` (d+1 non-zeros per feature) instead of
    the full Cox–de Boor recursion.

``FORCE_FFT`` (module attribute) pins the Kronecker correlation method for tests.

Every path is exact (up to floating point rounding), differentiable, and keeps the
input's dtype and device. Pre-processing is applied before the structure is used;
post-processing on κ's output forces materialisation of the affected expansion.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from .expansion.base import Expansion
from .expansion.composite import Extended, Nested
from .expansion.polynomial import Taylor, monomial_indices
from .expansion.rbf import BSpline
from .modules import apply_list
from .reconciliation.basic import Constant, ConstantEye, IdentityReconciliation, Masking, One, Zero
from .reconciliation.hypernet import HyperNet
from .reconciliation.kronecker import HM, LPHM, DualLPHM, DuplicatedPadding
from .reconciliation.lowrank import LowRank, RandomMatrixAdaption

__all__ = [
    "Segment",
    "segments",
    "expansion_product",
    "materialised_product",
    "plan",
    "path_name",
    "symmetric_block",
    "bspline_basis",
    "FORCE_FFT",
]


# ---------------------------------------------------------------------------------------------
# structure of κ
# ---------------------------------------------------------------------------------------------
@dataclass
class Segment:
    """A contiguous column range ``[offset, offset + width)`` of κ(X).

    ``kind`` is ``"dense"`` (``value`` holds the B×width columns), ``"power"`` (the ordered
    tensor power ``base^{⊗k}``) or ``"sympower"`` (the unique degree-k monomials of ``base``).
    In plan mode (no data) the tensors are ``None``.
    """

    offset: int
    width: int
    kind: str
    label: str
    k: int = 1
    m: int = 0
    base: Tensor | None = None
    value: Tensor | None = None
    tilde: bool = False
    _cache: Tensor | None = field(default=None, repr=False)
    _lead: Tensor | None = field(default=None, repr=False)

    @property
    def m_lead(self) -> int:
        return self.m + 1 if self.tilde else self.m

    @property
    def lead(self) -> Tensor:
        """First tensor factor: z, or z̃ = [1; z] for ``tilde`` (then lead ⊗ z = [z | z⊗z])."""
        if not self.tilde:
            return self.base
        if self._lead is None:
            z = self.base
            self._lead = torch.cat([z.new_ones(z.shape[0], 1), z], dim=1)
        return self._lead

    @property
    def batch(self) -> int:
        return (self.value if self.kind == "dense" else self.base).shape[0]

    def dense(self) -> Tensor:
        """The B×width block (materialised on demand for power segments)."""
        if self.kind == "dense":
            return self.value
        if self._cache is None:
            if self.kind == "power":
                self._cache = tensor_power(self.lead, self.base, self.k)
            else:
                self._cache = symmetric_block(self.base, self.k)
        return self._cache


def tensor_power(lead: Tensor, z: Tensor, k: int) -> Tensor:
    """lead ⊗ z^{⊗(k-1)} (row-major), shape (B, m_lead·m^{k-1})."""
    b = z.shape[0]
    p = lead
    for _ in range(k - 1):
        p = (p.unsqueeze(2) * z.unsqueeze(1)).reshape(b, -1)
    return p


@functools.lru_cache(maxsize=64)
def _sym_columns(m: int, k: int) -> tuple[Tensor, Tensor]:
    """(columns (k, C) of the monomial index tuples, their flat ordered positions (C,))."""
    idx = monomial_indices(m, k)
    pos = torch.zeros(idx.shape[0], dtype=torch.long)
    for j in range(k):
        pos = pos * m + idx[:, j]
    return idx.t().contiguous(), pos


_DEVICE_CACHE: dict = {}


def _on(t: Tensor, device: torch.device, key) -> Tensor:
    """Cache small index tensors per device (they are rebuilt from CPU only once)."""
    if device.type == "cpu":
        return t
    ck = (key, str(device))
    got = _DEVICE_CACHE.get(ck)
    if got is None:
        got = t.to(device)
        if len(_DEVICE_CACHE) > 256:
            _DEVICE_CACHE.clear()
        _DEVICE_CACHE[ck] = got
    return got


def symmetric_block(z: Tensor, k: int) -> Tensor:
    """Unique degree-k monomials of z (non-decreasing index tuples, lexicographic), (B, C)."""
    if k == 1:
        return z
    m = z.shape[1]
    cols, _ = _sym_columns(m, k)
    cols = _on(cols, z.device, ("symcols", m, k))
    out = z.index_select(1, cols[0])
    for j in range(1, k):
        out = out * z.index_select(1, cols[j])
    return out


def bspline_basis(e: BSpline, x: Tensor) -> Tensor:
    """The basis of a uniform-knot :class:`BSpline` (d >= 1), (B, m·(t+d)), evaluated locally.

    On the knot interval j (u = (x − k₀)/h, j = ⌊u⌋, f = u − j) only the d+1 bases
    j−d … j are non-zero; their values follow the uniform Cox–de Boor recursion on f alone
    (``N_k ← ((f + p − k) N_{k−1} + (k + 1 − f) N_k) / p``), O(d²) ops on (B, m) tensors instead
    of O(d) ops on (B, m, t+2d) tensors, then one scatter. Same piecewise polynomial as
    :meth:`BSpline.basis` (continuous at the knots for d >= 1).
    """
    d, t = e.d, e.t
    knots = e.knots.to(device=x.device, dtype=x.dtype)
    k0 = knots[0]
    h = (knots[-1] - knots[0]) / (knots.numel() - 1)
    n_int = t + 2 * d  # knot intervals
    u = (x - k0) / h
    j = torch.floor(u)
    f = u - j
    vals = [torch.ones_like(x)]
    for p in range(1, d + 1):
        new = []
        for k in range(p + 1):
            term = (f + (p - k)) * vals[k - 1] if k >= 1 else None
            if k < p:
                right = ((k + 1) - f) * vals[k]
                term = right if term is None else term + right
            new.append(term / p)
        vals = new
    width = t + d
    b, m = x.shape
    first = j.clamp(-d - 1, n_int).to(torch.long) - d  # basis index of vals[0]
    bases = first.unsqueeze(-1) + torch.arange(d + 1, device=x.device)  # (B, m, d+1)
    col = bases + (torch.arange(m, device=x.device) * width).view(1, m, 1)
    dummy = m * width  # out-of-range bases go to one discarded slot
    col = torch.where((bases >= 0) & (bases < width), col, torch.full_like(col, dummy))
    buf = x.new_zeros(b, dummy + 1).scatter(1, col.reshape(b, -1), torch.stack(vals, -1).reshape(b, -1))
    return buf[:, :dummy]  # (B, m·(t+d)), feature-major; a strided view, no copy


def _plain(e: Expansion) -> bool:
    return len(e.postprocess) == 0


def segments(e: Expansion, x: Tensor | None, m: int, offset: int = 0) -> list[Segment]:
    """Decompose κ = ``e`` applied to x (B, m) into segments; ``x=None`` gives the layout only."""
    name = e.registry_name
    kind = type(e)
    if kind is BSpline and e.d >= 1 and _plain(e):
        value = None
        if x is not None:
            z = apply_list(e.preprocess, e.check_input(x))
            value = bspline_basis(e, z)
        return [Segment(offset, e.calculate_D(m), "dense", "bspline (local, d+1 non-zeros)",
                        value=value)]
    if not _plain(e) or kind not in (Taylor, Extended, Nested):
        # no structure used: the expansion's own forward (pre/post included) runs once
        value = None if x is None else e(x)
        label = name if _plain(e) else f"{name} (postprocess: materialised)"
        return [Segment(offset, e.calculate_D(m), "dense", label, value=value)]
    z = None
    if x is not None:
        z = apply_list(e.preprocess, e.check_input(x))
    if kind is Taylor:
        if e.d >= 2 and not e.symmetric:
            # degrees 1 and 2 together: [x | x⊗x] = [1; x] ⊗ x
            segs = [Segment(offset, m * (m + 1), "power", "[1;x]⊗x", k=2, m=m, base=z,
                            tilde=True)]
        else:
            segs = [Segment(offset, m, "dense", "x", value=z)]
        off = offset + (m * (m + 1) if e.d >= 2 and not e.symmetric else m)
        for k in range(2 if e.symmetric else 3, e.d + 1):
            if e.symmetric:
                width = math.comb(m + k - 1, k)
                segs.append(Segment(off, width, "sympower", f"sym(x^{k})", k=k, m=m, base=z))
            else:
                width = m**k
                segs.append(Segment(off, width, "power", f"x^⊗{k}", k=k, m=m, base=z))
            off += width
        return segs
    if kind is Extended:
        segs = []
        off = offset
        for sub in e.expansions:
            part = segments(sub, z, m, off)
            segs.extend(part)
            off += sub.calculate_D(m)
        return segs
    # Nested
    size = m
    for sub in e.expansions[:-1]:
        if z is not None:
            z = sub(z)
        size = sub.calculate_D(size)
    return segments(e.expansions[-1], z, size, offset)


def _structured(segs: list[Segment]) -> bool:
    return any(s.kind != "dense" for s in segs)


def _materialise(segs: list[Segment]) -> Tensor:
    parts = [s.dense() for s in segs]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


# ---------------------------------------------------------------------------------------------
# primitives on segments
# ---------------------------------------------------------------------------------------------
def _power_left(s: Segment, ws: Tensor) -> Tensor:
    """Σ_I (lead ⊗ z^{⊗(k-1)})[b, I] ws[o, I] for ws (n, width), any row stride: (B, n).

    The last index is contracted first with one GEMM (a single 2-D GEMM when ``ws`` rows
    are contiguous, e.g. a whole ``w.reshape(n, D)`` for Taylor d=2; batched otherwise),
    then one reduction per remaining index; the B×width block is never formed.
    """
    z, lead, k = s.base, s.lead, s.k
    b, m = z.shape
    n = ws.shape[0]
    rest = s.width // m
    try:
        flat = ws.view(n * rest, m)
    except RuntimeError:
        flat = None
    if flat is not None:
        u = (z @ flat.t()).view(b, n, rest)  # (B, n, rest)
        for _ in range(k - 2):
            u = (u.view(b, n, -1, m) * z[:, None, None, :]).sum(-1)
        return (u * lead[:, None, :]).sum(-1)
    u = torch.matmul(z, ws.reshape(n, rest, m).transpose(1, 2))  # (n, B, rest)
    for _ in range(k - 2):
        u = (u.reshape(n, b, -1, m) * z[None, :, None, :]).sum(-1)
    return (u * lead[None]).sum(-1).t()


def _power_right(s: Segment, rseg: Tensor) -> Tensor:
    """Σ_I (lead ⊗ z^{⊗(k-1)})[b, I] rseg[I, c] for rseg (width, c), contiguous rows: (B, c)."""
    z, lead, k = s.base, s.lead, s.k
    b, m = z.shape
    c = rseg.shape[1]
    u = lead @ rseg.reshape(lead.shape[1], -1)  # (B, m^{k-1} c): contracts the first index
    for _ in range(k - 1):
        u = (u.reshape(b, m, -1) * z.unsqueeze(2)).sum(1)
    return u.reshape(b, c)


def _sym_to_ordered(rseg: Tensor, m: int, k: int) -> Tensor:
    """Scatter rows of a symmetric-block factor (C, c) to the ordered layout (m^k, c)."""
    _, pos = _sym_columns(m, k)
    pos = _on(pos, rseg.device, ("sympos", m, k))
    full = rseg.new_zeros(m**k, rseg.shape[1])
    return full.index_copy(0, pos, rseg)


def dense_left(segs: list[Segment], w_mat: Tensor) -> Tensor:
    """κ(X) W̃ᵀ for a dense (n, D) matrix W̃ without forming power blocks."""
    y = None
    # one split (its backward is a single concatenation) instead of per-segment slices
    parts = [w_mat] if len(segs) == 1 else torch.split(w_mat, [s.width for s in segs], dim=1)
    for s, ws in zip(segs, parts):
        if s.kind == "power":
            part = _power_left(s, ws.to(s.base.dtype))
        else:
            v = s.dense()
            part = v @ ws.to(v.dtype).t()
        y = part if y is None else y + part
    return y


def right_product(segs: list[Segment], r_mat: Tensor) -> Tensor:
    """κ(X) R for a (D, c) matrix R (e.g. lorr's B) without forming power blocks."""
    y = None
    parts = [r_mat] if len(segs) == 1 else torch.split(r_mat, [s.width for s in segs], dim=0)
    for s, rs in zip(segs, parts):
        if s.kind == "power":
            part = _power_right(s, rs.to(s.base.dtype).contiguous())
        elif s.kind == "sympower":
            full = _sym_to_ordered(rs.to(s.base.dtype), s.m, s.k)
            part = _power_right(s, full)
        else:
            v = s.dense()
            part = v @ rs.to(v.dtype)
        y = part if y is None else y + part
    return y


def rowsum(segs: list[Segment]) -> Tensor:
    """Row sums of κ(X), (B, 1); the sum of lead ⊗ z^{⊗(k-1)} is Σlead·(Σz)^{k-1}."""
    y = None
    for s in segs:
        if s.kind == "power":
            part = s.lead.sum(dim=1, keepdim=True) * s.base.sum(dim=1, keepdim=True) ** (s.k - 1)
        else:
            part = s.dense().sum(dim=1, keepdim=True)
        y = part if y is None else y + part
    return y


def prefix(segs: list[Segment], cols: int) -> Tensor:
    """The first ``cols`` columns of κ(X), materialising only what they need."""
    parts = []
    for s in segs:
        if s.offset >= cols:
            break
        take = min(s.width, cols - s.offset)
        if s.kind == "power":
            rows = -(-take // (s.width // s.m_lead))
            v = s.lead[:, :rows]  # only the rows of the first factor that are needed
            for _ in range(s.k - 1):
                v = (v.unsqueeze(2) * s.base.unsqueeze(1)).reshape(v.shape[0], -1)
            parts.append(v[:, :take])
        else:
            parts.append(s.dense()[:, :take])
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


# -- Kronecker: H = K R with K = κ reshaped (q, t) --------------------------------------------
@functools.lru_cache(maxsize=64)
def _lag_pairs(m_lead: int, m: int, off: int, t: int, q: int):
    """Pairs (row i, α, lag slot u) with lag o = off + α m − i t in (−m, t), plus the lags.

    Entry (i, c) of K holds lead_α z_β for off + α m + β = i t + c; for fixed (i, α) the
    sum over β is the correlation of R with z at lag o (α < m_lead, β < m).
    """
    alpha = np.arange(m_lead, dtype=np.int64)
    start = off + alpha * m  # flat position of z_α z_0
    lo = np.maximum((start - t) // t + 1, 0)  # smallest i with i t + t > start
    hi = np.minimum((start + m - 1) // t, q - 1)  # largest i with i t <= start + m - 1
    cnt = np.maximum(hi - lo + 1, 0)
    a_idx = np.repeat(alpha, cnt)
    first = np.repeat(lo, cnt)
    within = np.arange(a_idx.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    rows = first + within
    lags = off + a_idx * m - rows * t
    uniq, slot = np.unique(lags, return_inverse=True)
    return (
        torch.as_tensor(rows),
        torch.as_tensor(a_idx),
        torch.as_tensor(slot.reshape(-1)),
        torch.as_tensor(uniq),
    )


#: Kronecker correlation method: None chooses by cost, True/False forces FFT / direct GEMM.
FORCE_FFT: bool | None = None


def _use_fft(b: int, m: int, t: int, n_lags: int, c: int) -> tuple[bool, int]:
    size = 1 << max(1, int(math.ceil(math.log2(m + t - 1))))
    if FORCE_FFT is not None:
        return FORCE_FFT, size
    direct = b * m * n_lags * c + n_lags * m * c
    fft = 3 * (b * c + b + c) * size * math.log2(size) + b * c * size
    return fft * 2 < direct, size


def _lag_window(r: Tensor, lags: Tensor, m: int) -> Tensor:
    """W[u, β, c] = R[lag_u + β, c] (zero outside 0..t-1): (n_lags, m, c)."""
    t = r.shape[0]
    idx = lags.view(-1, 1) + torch.arange(m, device=lags.device).view(1, -1)
    idx = torch.where((idx >= 0) & (idx < t), idx, torch.full_like(idx, t))
    rz = torch.cat([r, r.new_zeros(1, r.shape[1])], dim=0)
    return rz[idx]


def _power2_kron(s: Segment, r: Tensor, q: int) -> tuple[Tensor, Tensor]:
    """Contribution of a lead ⊗ z segment to H = K R: returns (rows, values (B, P, c))."""
    z = s.base
    b, m = z.shape
    t, c = r.shape
    rows, a_idx, slot, lags = _lag_pairs(s.m_lead, m, s.offset, t, q)
    dev = z.device
    key = ("lag", s.m_lead, m, s.offset, t, q)
    rows, a_idx = _on(rows, dev, key + ("r",)), _on(a_idx, dev, key + ("a",))
    slot, lags = _on(slot, dev, key + ("s",)), _on(lags, dev, key + ("l",))
    fft, size = _use_fft(b, m, t, lags.numel(), c)
    if fft and z.dtype in (torch.float32, torch.float64):  # no bf16/fp16 FFTs everywhere
        # corr[o] = Σ_β R[o+β] z[β] = (R * flip(z))[o + m - 1]: one rfft per R column and
        # per sample, a product, one irfft per (sample, column); FFTs run on the last dim.
        rf = torch.fft.rfft(r.t(), n=size, dim=-1)  # (c, F)
        zf = torch.fft.rfft(z.flip(1), n=size, dim=-1)  # (B, F)
        corr = torch.fft.irfft(zf.unsqueeze(1) * rf.unsqueeze(0), n=size, dim=-1)  # (B, c, N)
        cl = corr.index_select(2, lags + (m - 1)).transpose(1, 2)  # (B, n_lags, c)
    else:
        win = _lag_window(r, lags, m)  # (L, m, c)
        cl = (z @ win.permute(1, 0, 2).reshape(m, -1)).reshape(b, -1, c)
    if lags.numel() == 1:  # aligned: every pair uses the same lag (rank one per sample)
        return rows, s.lead.index_select(1, a_idx).unsqueeze(2) * cl
    vals = s.lead.index_select(1, a_idx).unsqueeze(2) * cl.index_select(1, slot)
    return rows, vals


def kron_h(segs: list[Segment], r: Tensor, q: int, t: int) -> Tensor:
    """H = K R, (B, q, c) with K = κ(X) reshaped (q, t) per sample and R (t, c)."""
    b = segs[0].batch
    c = r.shape[1]
    h = None
    for s in segs:
        if s.kind == "power" and s.k == 2:
            rr = r.to(s.base.dtype)
            rows, vals = _power2_kron(s, rr, q)
            zero = vals.new_zeros(b, q, c)
            part = zero.index_add(1, rows, vals)
        else:
            v = s.dense()
            i0 = s.offset // t
            i1 = (s.offset + s.width - 1) // t
            lead = s.offset - i0 * t
            tail = (i1 + 1) * t - (s.offset + s.width)
            vp = F.pad(v, (lead, tail)).reshape(b, i1 - i0 + 1, t)
            part = F.pad(vp @ r.to(v.dtype), (0, 0, i0, q - 1 - i1))
        h = part if h is None else h + part
    return h


# ---------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------
_DENSE_W = (IdentityReconciliation, Masking, HyperNet)
_LOWRANK = (LowRank, RandomMatrixAdaption)
_KRON = (HM, LPHM, DualLPHM, DuplicatedPadding)
_CLOSED = (Constant, One, Zero, ConstantEye)


def _kron_exploits(segs: list[Segment]) -> bool:
    return any(s.kind == "power" and s.k == 2 for s in segs)


def path_name(head) -> str:
    """Name of the path :meth:`RPNHead.expansion_product` takes (see module docstring)."""
    return _choose(head, segments(head.expansion, None, head.m))[0]


def _choose(head, segs: list[Segment]) -> tuple[str, str]:
    rt = type(head.reconciliation)
    if rt in _CLOSED:
        name = {Constant: "rowsum", One: "rowsum", Zero: "zero", ConstantEye: "eye-prefix"}[rt]
        return name, "closed form of a fixed matrix, ψ(w) never formed"
    if not _structured(segs):
        return "materialised-κ", (
            "κ has no structure to exploit (no tensor-power blocks, or post-processing on "
            "its output): κ(x) is built and ψ is applied in its factorised form"
        )
    if rt in _DENSE_W:
        if not any(s.kind == "power" for s in segs):
            return "materialised-κ", (
                "symmetric monomials are gathered directly (B×C, C = unique monomials) and "
                "multiplied by the n×C weight: fewer flops than any bilinear form over a "
                "full m×m weight"
            )
        m_min = min(s.m for s in segs if s.kind == "power")
        if head.n >= m_min:
            return "materialised-κ", (
                f"n={head.n} >= m={m_min}: a bilinear form would hold a B×n×m intermediate, "
                "no smaller than the B×m² block it avoids, so κ(x) is built (same GEMM flops)"
            )
        return "dense-bilinear", (
            "ψ(w) is the n×D parameter itself; x^{⊗k} is contracted with the reshaped weight "
            "(symmetric blocks: unique monomials gathered, then one GEMM)"
        )
    if rt in _LOWRANK:
        return "lowrank-bilinear", "(κB)Aᵀ with κB contracted blockwise as bilinear forms"
    if rt in _KRON:
        if _kron_exploits(segs):
            return "kron-structured", (
                "H = K R built per segment; x⊗x blocks via the correlation lags that occur"
            )
        return "materialised-κ", (
            "Kronecker ψ only exploits ordered degree-2 blocks; κ(x) is built and "
            "vec(A K Bᵀ) is applied"
        )
    return "materialised-κ", (
        f"no structured rule for reconciliation {rt.__name__}: κ(x) is built and its "
        "apply() is used"
    )


def _kron_parts(rec, w: Tensor, n: int, d: int, dtype):
    """(R, left on H (B,q,c)→(B,p,c), left on u (B,q)→(B,p), post (c, s) or None)."""
    rt = type(rec)
    fs = [f.to(dtype) for f in rec.factors(w, n, d)]
    if rt is HM:
        a, bm = fs
        return bm.t(), lambda h: torch.matmul(a, h), lambda u: u @ a.t(), None
    if rt is LPHM:
        a, sm, tm = fs
        return tm, lambda h: torch.matmul(a, h), lambda u: u @ a.t(), sm.t()
    if rt is DualLPHM:
        pm, qm, sm, tm = fs
        return (
            tm,
            lambda h: torch.matmul(pm, torch.matmul(qm.t(), h)),
            lambda u: (u @ qm) @ pm.t(),
            sm.t(),
        )
    (bm,) = fs  # duplicated padding: W = 1_{p×q} ⊗ B
    p = rec.p
    return (
        bm.t(),
        lambda h: h.sum(dim=1, keepdim=True).expand(-1, p, -1),
        lambda u: u.sum(dim=1, keepdim=True).expand(-1, p),
        None,
    )


def _rank_one(segs: list[Segment], q: int, t: int) -> bool:
    """True when κ reshaped q×t is u vᵀ per sample (a lone lead ⊗ z block with one lag)."""
    if len(segs) != 1 or segs[0].kind != "power" or segs[0].k != 2:
        return False
    s = segs[0]
    rows, a_idx, _, lags = _lag_pairs(s.m_lead, s.m, s.offset, t, q)
    return (
        lags.numel() == 1 and s.m_lead == q and rows.numel() == q and bool((rows == a_idx).all())
    )


def _kron_apply(rec, segs: list[Segment], w: Tensor, n: int, d: int) -> Tensor:
    b = segs[0].batch
    q = rec.q
    t = d // q
    dtype = (segs[0].value if segs[0].kind == "dense" else segs[0].base).dtype
    r_mat, left_h, left_u, post = _kron_parts(rec, w, n, d, dtype)
    if _rank_one(segs, q, t):
        # K = u vᵀ, so A K Bᵀ = (A u)(B v)ᵀ: y = (A u) ⊗ (v R) – e.g. (A x̃) ⊗ (B x) for q = m+1
        s = segs[0]
        lags = _lag_pairs(s.m_lead, s.m, s.offset, t, q)[3]
        u = s.lead  # row i of K is lead_i · (z shifted by the lag)
        lag = int(lags[0])
        if lag == 0 and t == s.m:
            v = s.base @ r_mat
        else:
            v = s.base @ _lag_window(r_mat, lags.to(s.base.device), s.m)[0]
        g = left_u(u).unsqueeze(2) * v.unsqueeze(1)  # (B, p, c)
    else:
        g = left_h(kron_h(segs, r_mat, q, t))
    if post is not None:
        g = g @ post
    return g.reshape(b, n)


def _apply_one(head, path: str, segs: list[Segment], w: Tensor, x: Tensor) -> Tensor:
    rec, n, d = head.reconciliation, head.n, head.D
    rt = type(rec)
    if path == "dense-bilinear":
        w_mat = rec.reconcile(w, n, d)
        return dense_left(segs, w_mat)
    if path == "lowrank-bilinear":
        if rt is LowRank:
            a, bm = rec.factors(w, n, d)
            z = right_product(segs, bm)
            return z @ a.to(z.dtype).t()
        lam1, lam2 = rec.factors(w, n, d)
        rec.ensure_bound(n, d)
        a = rec.A.to(device=w.device, dtype=w.dtype)
        bm = rec.B.to(device=w.device, dtype=w.dtype)
        z = right_product(segs, bm)
        return ((z * lam2.to(z.dtype)) @ a.to(z.dtype).t()) * lam1.to(z.dtype)
    if path == "kron-structured":
        return _kron_apply(rec, segs, w, n, d)
    if path == "rowsum":
        rs = rowsum(segs)
        c = rec.c if rt is Constant else 1.0
        return (c * rs).expand(-1, n)
    if path == "zero":
        return x.new_zeros(x.shape[0], n) + 0.0 * x.sum()
    if path == "eye-prefix":
        k = min(n, d)
        out = prefix(segs, k)
        if n > k:
            out = torch.cat([out, out.new_zeros(out.shape[0], n - k)], dim=1)
        return out
    raise AssertionError(path)  # pragma: no cover


def expansion_product(head, x: Tensor) -> Tensor:
    """``fuse_c ⟨κ(x), ψ(w^c)⟩`` for the head, by the cheapest exact path (no bias/remainder)."""
    segs = segments(head.expansion, x, head.m)
    path, _ = _choose(head, segs)
    rec = head.reconciliation
    first = segs[0]
    dtype = (first.value if first.kind == "dense" else first.base).dtype
    if not torch.is_floating_point(first.value if first.kind == "dense" else first.base):
        dtype = head.w.dtype
    w = head.w if head.w.dtype == dtype else head.w.to(dtype)
    # one channel: a view (its backward is free; unbind's stacks an l-sized gradient)
    ws = [w.view(-1)] if head.channels == 1 else w.unbind(0)
    if path == "materialised-κ":
        kx = _materialise(segs)
        parts = [rec.apply(kx, wc, head.n, head.D) for wc in ws]
    else:
        parts = [_apply_one(head, path, segs, wc, x) for wc in ws]
    return head.fuse_channels(parts)


def materialised_product(head, x: Tensor) -> Tensor:
    """The dense definition ``fuse_c κ(X) ψ(w^c)ᵀ``: κ(X) (B×D) and ψ(w^c) (n×D) are built."""
    kx = head.expansion(x)
    w = head.w if head.w.dtype == kx.dtype else head.w.to(kx.dtype)
    rec = head.reconciliation
    w_all = [rec.reconcile(w[c], head.n, head.D).to(kx.dtype) for c in range(head.channels)]
    return head.fuse_channels([kx @ w_all[c].t() for c in range(head.channels)])


def _describe_segments(segs: list[Segment]) -> str:
    parts = []
    for s in segs:
        if s.kind == "dense":
            parts.append(f"{s.label}[{s.width}]")
        else:
            parts.append(f"{s.label}[{s.width}, never formed]" if s.kind == "power" else
                         f"{s.label}[{s.width}]")
    return " | ".join(parts)


def plan(head) -> str:
    """Human-readable plan: which path runs for this head and why."""
    segs = segments(head.expansion, None, head.m)
    path, why = _choose(head, segs)
    rec = head.reconciliation
    lines = [
        f"path: {path}",
        f"κ = {head.expansion.registry_name} (D={head.D}) as {_describe_segments(segs)}",
        f"ψ = {rec.registry_name}: {why}",
    ]
    if path == "materialised-κ":
        lines.append(f"apply: {rec.describe_apply(head.n, head.D)}")
    if path == "kron-structured":
        t = head.D // rec.q
        for s in segs:
            if s.kind == "power" and s.k == 2:
                _, _, _, lags = _lag_pairs(s.m_lead, s.m, s.offset, t, rec.q)
                if _rank_one(segs, rec.q, t):
                    how = ("aligned: K = x̃ xᵀ is rank one per sample, y = vec((A x̃)(R x)ᵀ), "
                           "no q×t block formed")
                else:
                    fft, size = _use_fft(64, s.m, t, lags.numel(), 1)
                    via = f"one FFT correlation (size {size})" if fft else "one GEMM"
                    how = f"rows straddle the blocks: {lags.numel()} correlation lags via {via}"
                lines.append(f"  {s.label} at offset {s.offset} with q={rec.q}, t={t}: {how}")
    lines.append(f"{head.channels} channel(s), {head.channel_fusion} fusion")
    return "\n".join(lines)
