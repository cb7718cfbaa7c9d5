"""The conformance matrix's sample registry (like PyTorch's ModuleInfo): heads per planned path.

:func:`samples` builds, for every (expansion, reconciliation) pair of the catalog, heads at
sizes that reach every path of the planner: the small size (m = 4) where most pairs
materialise κ, a wide size (m = 30) where symmetric Taylor runs ``sym-bilinear`` and dense
forms ``dense-bilinear``, Kronecker forms on ordered Taylor with the lag-window GEMM, the
FFT correlation (``fft=True``, the constructor argument) and the rank-one method, and
B-spline heads on their local (d+1 non-zeros) basis. :func:`path_of` names a head's path for
the coverage table. Not a test module (leading underscore).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

import torch

import rpnkit
from rpnkit.models.classic import KANBaseRemainder

CATALOG = rpnkit.list_components()
D64 = torch.float64

#: compression variants at m = 4 (their own ids; the wide pooling ones at m = 16 below)
COMPRESSION_VARIANTS: dict[str, tuple[str, dict]] = {
    "pca": ("pca", {"d": 3}),
    "pca_whiten": ("pca", {"d": 2, "whiten": True}),
    "random_projection": ("random_projection", {"d": 3, "seed": 1}),
    "random_projection_sparse": ("random_projection", {"d": 2, "kind": "sparse", "seed": 2}),
    "feature_selection": ("feature_selection", {"d": 2}),
    "naive_probabilistic": ("naive_probabilistic", {"d": 2, "distribution": "normal"}),
    "max_pooling": ("max_pooling", {"height": 2, "width": 2, "kernel": 2, "stride": 1}),
    "mean_pooling": ("mean_pooling", {"height": 2, "width": 2, "kernel": 2, "stride": 1}),
    "isomap": ("isomap", {"d": 2, "n_neighbors": 5}),
    "lle": ("lle", {"d": 2, "n_neighbors": 5}),
    "max_pooling_4x4": ("max_pooling", {"height": 4, "width": 4, "kernel": 3, "stride": 1,
                                        "padding": 1}),
    "mean_pooling_4x4": ("mean_pooling", {"height": 4, "width": 4, "kernel": 3, "stride": 1,
                                          "padding": 1}),
}
#: compression variants sampled at m = 16 only
COMPRESSION_WIDE = ("max_pooling_4x4", "mean_pooling_4x4")
#: variants compared in eval mode (training mode samples its kept inputs at random)
EVAL_MODE = ("naive_probabilistic",)


def fit_compressions(head: rpnkit.RPNHead) -> None:
    """Fit every fitted compression of the head on 40 fixed rows (before any forward)."""
    from rpnkit.compression.base import FittedCompression

    for mod in head.expansion.modules():
        if isinstance(mod, FittedCompression) and mod.m is not None:
            g = torch.Generator().manual_seed(11)
            mod.fit(torch.rand(40, mod.m, generator=g, dtype=D64) * 1.4 - 0.7)


#: expansion variants (id -> (name, params)); the Taylor-based ones reach structured paths
EXPANSIONS: dict[str, tuple[str, dict]] = {
    **{name: (name, {}) for name in CATALOG["expansion"] if name not in ("extended", "nested")},
    "taylor": ("taylor", {"d": 2}),
    "taylor_sym": ("taylor", {"d": 2, "symmetric": True}),
    "taylor3_sym": ("taylor", {"d": 3, "symmetric": True}),
    "extended": ("extended", {"expansions": ["bspline", {"name": "taylor", "d": 2}]}),
    "extended_sym": ("extended", {"expansions": ["chebyshev",
                                                 {"name": "taylor", "d": 2, "symmetric": True}]}),
    "nested": ("nested", {"expansions": ["linear", {"name": "taylor", "d": 2}]}),
    "nested_sym": ("nested", {"expansions": ["linear",
                                             {"name": "taylor", "d": 2, "symmetric": True}]}),
    # geometric patches on 3-D grids of m = 4 cells (the catalog entries use the 1-D default)
    "cuboid_patch_2x2": ("cuboid_patch_expansion", {"p_h": 1, "p_w": 1, "p_d": 0, "h": 2, "w": 2}),
    "cylinder_patch_2ch": ("cylinder_patch_expansion", {"p_r": 1, "p_d": 1, "h": 1, "w": 1, "d": 2,
                                                        "channels": 2}),
    "sphere_patch_cd2": ("sphere_patch_expansion", {"p_r": 1, "h": 2, "w": 1, "d": 2, "cd_h": 2}),
    # compressions (D <= m); fitted ones are fitted on FIT_DATA when built (see Sample.build)
    **COMPRESSION_VARIANTS,
}
#: variants whose size matters (they are also built wide)
STRUCTURED = ("taylor", "taylor_sym", "taylor3_sym", "extended", "extended_sym", "nested",
              "nested_sym", "identity", "bspline")
#: expansions that are slow or huge at the wide size
NOT_WIDE = ("taylor3_sym", "combinatorial", "combinatorial_normal")


def _divisor_near_sqrt(k: int) -> int:
    best = 1
    for i in range(1, math.isqrt(k) + 1):
        if k % i == 0:
            best = i
    return best


def recon_params(name: str, D: int, n: int) -> dict:  # noqa: N803
    q = _divisor_near_sqrt(D)
    p = 2 if n % 2 == 0 else 1
    if name in ("hm", "duplicated_padding"):
        return {"p": p, "q": q}
    if name in ("lphm", "dual_lphm"):
        return {"p": p, "q": q, "r": 2}
    if name in ("lorr", "random_matrix_adaption"):
        return {"r": 2}
    if name == "hypernet":
        return {"l": 5, "hidden": 7}
    return {}


@dataclass(frozen=True)
class Sample:
    exp: str
    rec: str
    m: int
    n: int = 4
    channels: int = 2
    rp: dict | None = field(default=None, compare=False)
    options: dict = field(default_factory=dict, compare=False)
    tag: str = ""

    @property
    def id(self) -> str:
        return f"{self.exp}-{self.rec}-m{self.m}" + (f"-{self.tag}" if self.tag else "")

    def build(self, dtype: torch.dtype = D64, device=None, **kw) -> rpnkit.RPNHead:
        name, ep = EXPANSIONS[self.exp]
        kappa = rpnkit.build_expansion(name, **ep)
        D = kappa.calculate_D(self.m)  # noqa: N806
        rp = recon_params(self.rec, D, self.n) if self.rp is None else self.rp
        torch.manual_seed(0)
        # a class among the options (a remainder) is instantiated per build
        opts = {k: v() if isinstance(v, type) else v for k, v in {**self.options, **kw}.items()}
        head = rpnkit.RPNHead(self.m, self.n, expansion=kappa, reconciliation=self.rec,
                              reconciliation_params=rp, channels=self.channels,
                              seed=0, dtype=dtype, device=device, **opts)
        if device is None or torch.device(device).type != "meta":
            with torch.no_grad():  # a non-trivial w in every channel
                g = torch.Generator().manual_seed(3)
                if head.w.numel():
                    head.w.copy_(torch.randn(head.w.shape, generator=g, dtype=D64)
                                 .mul(0.5).to(head.w.dtype))
                if head.bias is not None:
                    head.bias.copy_(torch.randn(head.n, generator=g, dtype=D64).to(dtype))
            fit_compressions(head)
        if self.exp in EVAL_MODE:
            head.eval()
        return head

    def inputs(self, b: int = 5, seed: int = 1, dtype: torch.dtype = D64) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(b, self.m, generator=g, dtype=D64) * 1.4 - 0.7
        x = x + 0.05 * torch.sign(x)  # away from 0 (reciprocal), inside the spline range
        return x.to(dtype)


def path_of(head: rpnkit.RPNHead) -> str:
    """A head's planned path for the coverage table (kron-structured split by method, local
    B-spline bases counted separately)."""
    if head.fused is not None:
        return "fused"
    c = head.contraction
    path = c.path
    if path == "kron-structured":
        return f"kron-structured/{c.kron_method}"
    if any("local" in seg.label for seg in head.structure().expansion.segments):
        return f"{path}+local-spline"
    return path


def samples() -> list[Sample]:
    out: list[Sample] = []
    recs = list(CATALOG["reconciliation"])
    for e in EXPANSIONS:
        for r in recs:
            if e in COMPRESSION_WIDE:
                out.append(Sample(e, r, 16, options={"bias": True}))
                continue
            out.append(Sample(e, r, 4, options={"bias": True}))
            if e in STRUCTURED and e not in NOT_WIDE:
                out.append(Sample(e, r, 30, remainder_sample(r)))
    kron = [r for r in recs if r in ("hm", "lphm", "dual_lphm", "duplicated_padding")]
    for r in kron:  # the lag-window methods of ordered Taylor
        for e in ("taylor", "extended", "nested"):
            out.append(Sample(e, r, 8, options={"fft": True}, tag="fft"))
            out.append(Sample(e, r, 8, options={"fft": False}, tag="gemm"))
        # q = m + 1: ordered Taylor d=2 is [1; x] ⊗ x, κ reshaped (m+1)×m per sample is the
        # rank-one u vᵀ (the rank-one method); with 1 or 2 row blocks p
        for p in (1, 2):
            rp = {"p": p, "q": 9} if r in ("hm", "duplicated_padding") else {"p": p, "q": 9, "r": 1}
            out.append(Sample("taylor", r, 8, rp=rp, tag=f"rank1-p{p}"))
        rp = {"p": 2, "q": 8} if r in ("hm", "duplicated_padding") else {"p": 2, "q": 8, "r": 1}
        out.append(Sample("taylor", r, 8, rp=rp, tag="q=m"))
    # one channel, a few inputs: the fused small-head product (one node, issue 21), also with
    # KAN's base branch folded in
    for e in ("bspline", "taylor", "extended"):
        for r in ("identity", "lorr"):
            for m in (2, 5):
                out.append(Sample(e, r, m, channels=1, options={"bias": m == 2}, tag="fused"))
    for m in (2, 5):
        out.append(Sample("bspline", "identity", m, channels=1,
                          options={"remainder": KANBaseRemainder}, tag="fused-kan"))
    return out


def remainder_sample(rec: str) -> int:
    """Output width for the wide samples (even, so Kronecker forms split it)."""
    return 4


def coverage(items: list[Sample]) -> collections.Counter:
    cnt: collections.Counter = collections.Counter()
    for s in items:
        try:
            head = s.build()
        except rpnkit.ConfigurationError:
            continue
        cnt[path_of(head)] += 1
    return cnt


def definition(head: rpnkit.RPNHead, x: torch.Tensor) -> torch.Tensor:
    """fuse_c(κ(x) ψ(w^c)ᵀ) + b + π(x) with κ and ψ materialised (the SPEC's definition)."""
    k = head.expansion(x)
    ws = head.reconciled_weights()
    y = sum(k @ ws[c].T for c in range(ws.shape[0]))
    if head.channel_fusion == "mean":
        y = y / ws.shape[0]
    if head.bias is not None:
        y = y + head.bias
    return y + head.remainder(x)
