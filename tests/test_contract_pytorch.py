"""The planned contraction behaves as PyTorch code must: double backward, autocast,
meta-device construction, dtype changes, per-head options and the init scale of declared
forms ("Correct wherever PyTorch goes").

Every fast path is compared with the dense definition κ(X) ψ(w)ᵀ (κ(X) and ψ(w) built).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rpnkit import RPNHead
from rpnkit import contract as st
from rpnkit.errors import ConfigurationError
from rpnkit.init import init_homogeneity
from rpnkit.reconciliation import forms
from rpnkit.reconciliation.base import Reconciliation

SYM = {"expansion": "taylor", "expansion_params": {"d": 2, "symmetric": True}}
ORD2 = {"expansion": "taylor", "expansion_params": {"d": 2}}
ORD3 = {"expansion": "taylor", "expansion_params": {"d": 3}}

#: (label, m, n, head options, expected path, expected Kronecker method)
CASES = [
    ("sym-bilinear", 30, 3, {**SYM, "reconciliation": "identity"}, "sym-bilinear", ""),
    ("sym-lorr", 30, 3, {**SYM, "reconciliation": "lorr"}, "lowrank-bilinear", ""),
    ("ordered-lorr", 6, 3, {**ORD3, "reconciliation": "lorr"}, "lowrank-bilinear", ""),
    ("dense-bilinear", 8, 3, {**ORD3, "reconciliation": "identity"}, "dense-bilinear", ""),
    ("kron-gemm", 6, 4, {**ORD2, "reconciliation": "hm",
                         "reconciliation_params": {"p": 2, "q": 2}, "fft": False},
     "kron-structured", "gemm"),
    ("kron-fft", 6, 4, {**ORD2, "reconciliation": "hm",
                        "reconciliation_params": {"p": 2, "q": 2}, "fft": True},
     "kron-structured", "fft"),
    ("kron-rank-one", 6, 4, {**ORD2, "reconciliation": "dual_lphm",
                             "reconciliation_params": {"p": 2, "q": 7, "r": 2}},
     "kron-structured", "rank-one"),
    ("rowsum", 6, 4, {**ORD2, "reconciliation": "one"}, "rowsum", ""),
    ("eye-prefix", 6, 4, {**ORD2, "reconciliation": "constant_eye"}, "eye-prefix", ""),
    ("zero", 6, 4, {**ORD2, "reconciliation": "zero"}, "zero", ""),
    ("materialised", 6, 3, {**SYM, "reconciliation": "identity"}, "materialised-κ", ""),
]
IDS = [c[0] for c in CASES]


def build(m, n, opts, **kw):
    torch.manual_seed(0)
    return RPNHead(m, n, **opts, **kw)


def dense_definition(head: RPNHead, x: torch.Tensor) -> torch.Tensor:
    """κ(X) ψ(w)ᵀ with κ(X) and ψ(w) materialised (independent of rpnkit.contract)."""
    kx = head.expansion(x)
    ws = head.reconciled_weights()
    return sum(kx @ ws[c].t() for c in range(head.channels))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def test_paths_are_listed_and_every_case_names_its_path():
    assert len(set(st.PATHS)) == len(st.PATHS)
    assert all(isinstance(p, str) and p == p.strip() for p in st.PATHS)
    seen = set()
    for _label, m, n, opts, path, method in CASES:
        head = build(m, n, opts)
        assert head.contraction.path == path
        assert head.contraction.path in st.PATHS
        assert head.plan().splitlines()[0] == f"path: {path}"
        assert head.contraction.kron_method == method
        seen.add(path)
    assert seen == set(st.PATHS)  # the cases above cover every path


# ------------------------------------------------------------------------------------------
# 1. double backward of the custom autograd Function (sym-bilinear)
# ------------------------------------------------------------------------------------------
def test_sym_bilinear_gradgradcheck_float64():
    head = build(st.SYM_MIN_M, 2, {**SYM, "reconciliation": "identity"}).double()
    assert head.contraction.path == "sym-bilinear"
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(3, st.SYM_MIN_M, generator=g, dtype=torch.float64) - 0.5).requires_grad_()
    w = (torch.randn(1, head.l, generator=g, dtype=torch.float64) * 0.1).requires_grad_()

    def f(w, x):
        return head.contraction(head.expansion.segment_inputs(x), w, head.reconciliation)

    assert torch.autograd.gradcheck(f, (w, x), fast_mode=True)
    assert torch.autograd.gradgradcheck(f, (w, x), fast_mode=True)
    # the gradients that gradgradcheck differentiates equal the dense definition's
    i, j = torch.triu_indices(st.SYM_MIN_M, st.SYM_MIN_M)
    dense = torch.cat([x, x[:, i] * x[:, j]], dim=1)
    gy = torch.randn(3, 2, dtype=torch.float64, generator=g)
    for a, b in zip(torch.autograd.grad(f(w, x), (w, x), gy),
                    torch.autograd.grad(dense @ w.view(2, -1).t(), (w, x), gy)):
        assert rel(a, b) < 1e-12


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rec", ["identity", "masking"])
def test_gradient_penalty_equals_dense_definition(rec, channels):
    """L = Σy + ‖dy/dx‖², dL/dw: create_graph=True must not be silently wrong (it was off
    by 1.3 with a once_differentiable backward)."""
    head = build(30, 3, {**SYM, "reconciliation": rec, "channels": channels}).double()
    assert head.contraction.path == "sym-bilinear"
    x = (torch.rand(5, 30, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64) - 0.5).requires_grad_()

    def penalised_grads(f):
        y = f(x)
        (dx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        loss = y.sum() + dx.pow(2).sum()
        return torch.autograd.grad(loss, [head.w, x])

    fast = penalised_grads(head.expansion_product)
    ref = penalised_grads(lambda x: dense_definition(head, x))
    for a, b in zip(fast, ref):
        assert rel(a, b) < 1e-10


def test_hessian_vector_product_equals_dense_definition():
    head = build(26, 2, {**SYM, "reconciliation": "identity"}).double()
    x = torch.rand(4, 26, dtype=torch.float64)
    v = torch.randn_like(head.w)

    def hvp(f):
        (gw,) = torch.autograd.grad(f(x).pow(2).sum(), head.w, create_graph=True)
        return torch.autograd.grad((gw * v).sum(), head.w)[0]

    assert rel(hvp(head.expansion_product), hvp(lambda x: dense_definition(head, x))) < 1e-10


# ------------------------------------------------------------------------------------------
# 2. autocast
# ------------------------------------------------------------------------------------------
#: bfloat16 keeps 8 bits of mantissa: forward and gradients within 3e-2 (relative to the
#: largest entry) of float32; float16 (11 bits, what CUDA autocast uses) within 5e-3
AUTOCAST_TOL = 3e-2
AUTOCAST = {torch.bfloat16: AUTOCAST_TOL, torch.float16: 5e-3}


@pytest.mark.parametrize("dtype", list(AUTOCAST), ids=str)
@pytest.mark.parametrize(("label", "m", "n", "opts", "path", "method"), CASES, ids=IDS)
def test_every_path_runs_under_autocast(label, m, n, opts, path, method, dtype):
    head = build(m, n, opts)
    assert head.contraction.path == path
    x = torch.rand(16, m, generator=torch.Generator().manual_seed(2)) - 0.5
    x.requires_grad_()
    wants = [x] + ([head.w] if isinstance(head.w, nn.Parameter) else [])
    y32 = head(x)
    g32 = torch.autograd.grad(y32.pow(2).sum(), wants)
    with torch.autocast("cpu", dtype=dtype):
        y16 = head(x)
        g16 = torch.autograd.grad(y16.float().pow(2).sum(), wants)
    assert torch.isfinite(y16).all()
    if path == "zero":
        assert (y16 == 0).all()
        return
    assert rel(y16.float(), y32) < AUTOCAST[dtype]
    for a, b in zip(g16, g32):
        assert a.dtype == b.dtype == torch.float32
        assert rel(a, b) < AUTOCAST[dtype]


def test_autocast_sym_bilinear_uses_the_autocast_dtype():
    head = build(30, 3, {**SYM, "reconciliation": "identity"})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = head.expansion_product(torch.rand(4, 30))
    assert y.dtype == torch.bfloat16  # like a matmul under autocast


# ------------------------------------------------------------------------------------------
# 3. meta-device construction: to_empty, then load_state_dict / reset_parameters
# ------------------------------------------------------------------------------------------
META_CASES = [c for c in CASES if c[0] not in ("zero", "kron-fft")] + [
    ("brief", 300, 4, {**SYM, "reconciliation": "lorr"}, "lowrank-bilinear", ""),
    ("bspline", 4, 3, {"expansion": "bspline", "reconciliation": "lorr"}, None, ""),
    ("extended", 4, 3, {"expansion": "extended", "reconciliation": "lorr", "expansion_params": {
        "expansions": ["bspline", {"name": "taylor", "d": 2, "symmetric": True}]}}, None, ""),
]


def _poison(head: RPNHead) -> None:
    """What uninitialised memory may hold: zeros in every table (valid, wrong indices)."""
    with torch.no_grad():
        for mod in head.modules():
            for name, buf in mod._buffers.items():
                if buf is not None and name in mod._non_persistent_buffers_set:
                    buf.zero_()


@pytest.mark.parametrize(("label", "m", "n", "opts", "path", "method"), META_CASES,
                         ids=[c[0] for c in META_CASES])
def test_meta_to_empty_load_state_dict_equals_original(label, m, n, opts, path, method):
    ref = build(m, n, opts)
    if path is not None:
        assert ref.contraction.path == path
    with torch.device("meta"):
        head = RPNHead(m, n, **opts)
    assert head.w.is_meta
    head.to_empty(device="cpu")
    _poison(head)
    head.load_state_dict(ref.state_dict())
    x = torch.rand(7, m, generator=torch.Generator().manual_seed(5)) - 0.5
    with torch.no_grad():
        assert torch.equal(head(x), ref(x))
    tables = dict(ref.named_buffers())
    for name, buf in head.named_buffers():
        assert torch.equal(buf, tables[name]), name


@pytest.mark.parametrize(("label", "m", "n", "opts", "path", "method"), META_CASES[:6],
                         ids=[c[0] for c in META_CASES[:6]])
def test_reset_parameters_rebuilds_every_table(label, m, n, opts, path, method):
    ref = build(m, n, opts)
    with torch.device("meta"):
        head = RPNHead(m, n, **opts)
    head.to_empty(device="cpu")
    _poison(head)
    head.reset_parameters()
    tables = dict(ref.named_buffers())
    for name, buf in head.named_buffers():
        if name in ("w",) or buf.is_floating_point():
            continue
        assert torch.equal(buf, tables[name]), name
    head.load_state_dict(ref.state_dict())
    x = torch.rand(3, m)
    with torch.no_grad():
        assert torch.equal(head(x), ref(x))


# ------------------------------------------------------------------------------------------
# 4. the plan follows the dtype
# ------------------------------------------------------------------------------------------
def test_plan_is_rederived_when_the_dtype_changes():
    head = build(6, 4, {**ORD2, "reconciliation": "hm", "reconciliation_params": {"p": 2, "q": 2},
                        "fft": True})
    assert head.contraction.kron_method == "fft"
    assert "FFT correlation" in head.plan()
    head.bfloat16()
    assert head.contraction.kron_method == "gemm"
    text = head.plan()
    assert "FFT correlation" not in text
    assert "no bfloat16 FFT" in text
    assert "Kronecker method: gemm (in torch.bfloat16)" in text
    x = torch.rand(5, 6) - 0.5
    y = head(x)  # runs the GEMM the plan names (torch has no bfloat16 FFT)
    assert y.dtype == torch.bfloat16
    head.double()
    assert head.contraction.kron_method == "fft"
    with torch.no_grad():
        assert rel(y.double(), head(x.double())) < AUTOCAST_TOL
        assert rel(head(x.double()), dense_definition(head, x.double())) < 1e-12


def test_plan_dtype_at_construction():
    opts = {**ORD2, "reconciliation": "hm", "reconciliation_params": {"p": 2, "q": 2}, "fft": True}
    assert build(6, 4, opts, dtype=torch.float16).contraction.kron_method == "gemm"
    assert build(6, 4, opts, dtype=torch.float64).contraction.kron_method == "fft"


# ------------------------------------------------------------------------------------------
# 5. no module-level switches: fft is a head option
# ------------------------------------------------------------------------------------------
def test_fft_is_a_per_head_option():
    assert not hasattr(st, "FORCE_FFT")
    opts = {**ORD2, "reconciliation": "hm", "reconciliation_params": {"p": 2, "q": 2}}
    before = build(6, 4, opts)
    forced = build(6, 4, opts, fft=True)
    later = build(6, 4, opts)
    direct = build(6, 4, opts, fft=False)
    assert forced.contraction.kron_method == "fft"
    assert direct.contraction.kron_method == "gemm"
    assert later.contraction.kron_method == before.contraction.kron_method  # nothing leaked
    x = torch.rand(4, 6, dtype=torch.float64)
    with torch.no_grad():
        ys = [h.double()(x) for h in (forced, later, direct)]
    assert rel(ys[0], ys[2]) < 1e-12
    assert rel(ys[1], ys[2]) < 1e-12
    with pytest.raises(ConfigurationError, match="fft must be None"):
        build(6, 4, opts, fft="yes")


# ------------------------------------------------------------------------------------------
# 6. init scale from the declared form
# ------------------------------------------------------------------------------------------
class UserLowRank(Reconciliation):
    """A user class: W = A Bᵀ declared as a low-rank form, no homogeneity given."""

    def __init__(self, r: int = 2) -> None:
        super().__init__()
        self.r = r

    def calculate_l(self, n, D):  # noqa: N803
        return self.r * (n + D)

    def factor_shapes(self, n, D):  # noqa: N803
        return [(n, self.r), (D, self.r)]

    def form(self):
        return forms.LowRank(0, 1)

    def reconcile(self, w, n, D):  # noqa: N803
        a, b = self.factors(w, n, D)
        return a @ b.t()


class UserKron(Reconciliation):
    """W = (P Qᵀ) ⊗ B declared as a Kronecker form (degree 3)."""

    p = q = 2

    def calculate_l(self, n, D):  # noqa: N803
        return 2 + 2 + (n // 2) * (D // 2)

    def factor_shapes(self, n, D):  # noqa: N803
        return [(2, 1), (2, 1), (n // 2, D // 2)]

    def form(self):
        return forms.Kronecker(2, 2, a=(0, 1), b=(2,))

    def reconcile(self, w, n, D):  # noqa: N803
        pm, qm, b = self.factors(w, n, D)
        return torch.kron(pm @ qm.t(), b)


@pytest.mark.parametrize("rec", [UserLowRank, UserKron])
def test_user_form_gets_a_dense_layers_init_scale(rec):
    torch.manual_seed(0)
    head = RPNHead(50, 20, expansion="taylor", reconciliation=rec())
    w_std = head.reconciled_weights().std().item()
    lin = nn.Linear(head.D, 20).weight.std().item()
    assert lin / 2 < w_std < 2 * lin, (w_std, lin)


@pytest.mark.parametrize(("name", "params", "k"), [
    ("identity", {}, 1), ("masking", {}, 1), ("lorr", {}, 2), ("random_matrix_adaption", {}, 2),
    ("duplicated_padding", {}, 1), ("hm", {}, 2), ("lphm", {}, 3), ("dual_lphm", {}, 4),
    ("hypernet", {}, None),
])
def test_init_homogeneity_of_the_builtins(name, params, k):
    from rpnkit.registry import RECONCILIATIONS

    assert init_homogeneity(RECONCILIATIONS.resolve(name, params)) == k
    assert init_homogeneity(UserLowRank()) == 2
    assert init_homogeneity(UserKron()) == 3


def test_form_degrees():
    assert forms.Opaque().degree is None
    assert forms.Dense().degree == 1
    assert forms.LowRank().degree == 2
    assert forms.Kronecker(2, 2, a=(), b=(0,)).degree == 1
    assert forms.Kronecker(2, 2, a=(0, 1), b=(2, 3)).degree == 4
    assert forms.Fixed("eye").degree == 0


def test_monomial_indices_are_lexicographic():
    import itertools

    from rpnkit.expansion.layout import monomial_indices

    for m in (1, 2, 5, 9):
        for k in (1, 2, 3):
            rows = list(itertools.combinations_with_replacement(range(m), k))
            want = torch.tensor(rows, dtype=torch.long).reshape(len(rows), k)
            assert torch.equal(monomial_indices(m, k), want)
