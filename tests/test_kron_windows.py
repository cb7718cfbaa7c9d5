"""Kronecker lag windows as views of R (issue 21, item 4).

``kron-structured`` evaluates H = K R for ordered degree-2 Taylor blocks without gathering
R's lag windows: ``rows`` reshapes R's rows (the windows of one row of K step by m and tile
R), ``unfold`` takes R's strided windows (backward a fold), FFT stays as it was. Every
method is compared with the dense definition κ(X) ψ(w)ᵀ in float64, values and gradients
(gradcheck, gradgradcheck), for every Kronecker form that reaches the lag windows.
"""

from __future__ import annotations

import pytest
import torch

from rpnkit import RPNHead
from rpnkit import contract as st
from rpnkit.errors import ConfigurationError

D64 = torch.float64
RECS = ("hm", "lphm", "dual_lphm")


def build(m: int, q: int, rec: str, **kw) -> RPNHead:
    rp = {"p": 2, "q": q} if rec == "hm" else {"p": 2, "q": q, "r": 2}
    torch.manual_seed(0)
    head = RPNHead(m, 4, expansion={"name": "taylor", "d": 2}, reconciliation=rec,
                   reconciliation_params=rp, channels=2, dtype=D64, **kw)
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        head.w.copy_(torch.randn(head.w.shape, generator=g, dtype=D64) * 0.5)
    return head


def definition(head: RPNHead, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """fuse_c κ(X) ψ(w^c)ᵀ with κ(X) and ψ(w^c) built (no rpnkit.contract code)."""
    kx = head.expansion(x)
    rec = head.reconciliation
    return sum(kx @ rec.reconcile(w[c], head.n, head.D).t() for c in range(head.channels))


def planned(head: RPNHead, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return head.contraction(head.expansion.segment_inputs(x), w, head.reconciliation)


def methods(head: RPNHead) -> tuple[str, list[str]]:
    c = head.contraction
    return c.kron_method, [s["windows"] for s in c.kron["segs"].values()]


#: (m, q, fft, expected Kronecker method, expected window method) – planner's own choices:
#: q = 2, 3 at m = 6 leave few rows of K per segment (row blocks of R); q = 6, 14, 42 many
#: (strided windows; q = 42: t = 1, every window hangs over R's ends); q = 7 = m + 1 is
#: rank one; fft=True runs the FFT.
PLANS = [
    (6, 2, None, "gemm", "rows"),
    (6, 3, None, "gemm", "rows"),
    (6, 6, None, "gemm", "unfold"),
    (6, 14, None, "gemm", "unfold"),
    (6, 42, None, "gemm", "unfold"),
    (6, 7, None, "rank-one", "unfold"),
    (6, 3, True, "fft", "rows"),
    (4, 10, True, "fft", "unfold"),
]


@pytest.mark.parametrize("rec", RECS)
@pytest.mark.parametrize(("m", "q", "fft", "method", "windows"), PLANS)
def test_windows_equal_the_definition_with_gradients(rec, m, q, fft, method, windows):
    head = build(m, q, rec, fft=fft)
    assert head.contraction.path == "kron-structured"
    assert methods(head) == (method, [windows])
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(3, m, generator=g, dtype=D64) - 0.5).requires_grad_()
    w = head.w.detach().clone().requires_grad_()
    y, ref = planned(head, x, w), definition(head, x, w)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    gy = torch.randn(y.shape, generator=g, dtype=D64)
    got = torch.autograd.grad(y, (x, w), gy)
    want = torch.autograd.grad(ref, (x, w), gy)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
    fn = lambda x, w: planned(head, x, w)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


@pytest.mark.parametrize("windows", ["rows", "unfold"])
@pytest.mark.parametrize(("m", "q"), [(4, 2), (4, 4), (4, 10), (4, 20), (6, 21), (6, 42)])
def test_both_window_methods_at_every_row_split(windows, m, q):
    """Each window method, forced, is exact wherever the segment splits into rows of K
    (row blocks crossing R's ends are zero-padded)."""
    head = build(m, q, "dual_lphm", fft=False)
    c = head.contraction
    for seg in c.kron["segs"].values():
        seg["windows"] = windows
        ends = ([(s0, s0 + (a1 - a0) * seg["m"]) for _r, a0, a1, s0 in seg["blocks"]]
                if windows == "rows" else [(seg["lag0"], seg["lag0"] + (seg["grid"] - 1)
                                            * seg["g"] + seg["m"])])
        seg["pad"] = st._pads(ends, c.kron["t"])
    _matches_definition(head, m, seed=2)


def test_no_window_index_table_and_the_mnist_plan():
    """The windows are views: no (lags × m) index table; the shipped MNIST dual_lphm head
    (m = 784, q = 2) runs row blocks of R, one per row of K."""
    head = build(6, 2, "dual_lphm")
    names = {n for n, _ in head.contraction.named_buffers()}
    assert not any(n.endswith("_win") for n in names)
    assert all(b.numel() <= 2 * (6 + 1 + 6) for n, b in head.contraction.named_buffers()
               if n.startswith("k0_"))
    big = RPNHead(784, 64, expansion={"name": "taylor", "d": 2}, reconciliation="dual_lphm",
                  reconciliation_params={"p": 2, "q": 2, "r": 2}, device="meta")
    assert methods(big) == ("gemm", ["rows"])
    assert "2 row block(s) of R reshaped" in big.plan()


def test_row_blocks_tile_the_segment():
    """Every (row, α) pair of _lag_pairs is in exactly one row block, and a block's start is
    the lag of its first α."""
    for m_lead, m, off, t, q in [(7, 6, 0, 21, 2), (7, 6, 0, 6, 7), (5, 4, 0, 1, 20),
                                 (785, 784, 0, 307720, 2), (7, 6, 0, 3, 14)]:
        rows, a_idx, slot, lags = st._lag_pairs(m_lead, m, off, t, q)
        pairs = {(int(r), int(a)) for r, a in zip(rows, a_idx)}
        got = set()
        for row, a0, a1, start in st._row_blocks(m_lead, m, off, t, q):
            assert start == off + a0 * m - row * t
            got |= {(row, a) for a in range(a0, a1)}
        assert got == pairs


def test_batch_option_is_checked():
    layout = RPNHead(3, 2, expansion={"name": "taylor", "d": 2}).expansion.layout(3)
    head = build(3, 2, "hm")
    args = (layout, head.contraction.form, 4, head.D, head.contraction.factor_shapes)
    assert st.Contraction(*args).batch == st.NOMINAL_BATCH
    assert st.Contraction(*args, batch=512).batch == 512
    with pytest.raises(ConfigurationError, match="batch must be None"):
        st.Contraction(*args, batch=0)


def test_fft_choice_unchanged_where_it_was_right():
    """The cost model now counts the window traffic explicitly; the FFT-or-GEMM choices it
    made and that measure right stay (MNIST shapes; m=64 q=64 and m=784 q=560 at B=64)."""
    assert st.use_fft(64, 784, 785, 1568, 5)[0]
    assert not st.use_fft(64, 784, 784, 1, 5)[0]
    assert build(64, 64, "hm").contraction.kron_method == "gemm"


@pytest.mark.parametrize("kernel_cost", [0, 10**9])
@pytest.mark.parametrize(("m", "q"), [(6, 2), (6, 3), (4, 10),
                                      pytest.param(6, 42, marks=pytest.mark.slow)])
def test_fused_row_node_with_and_without_padding(monkeypatch, kernel_cost, m, q):
    """The ``rows`` windows run as one autograd node (_RowWindows): R unpadded with the
    windows that hang over its ends as separate products (cheap kernels), or R zero-padded
    (dear kernels); both equal the definition, first and second derivatives included."""
    monkeypatch.setattr(st, "KERNEL_COST", kernel_cost)
    head = build(m, q, "dual_lphm", fft=False)
    c = head.contraction
    for seg in c.kron["segs"].values():
        seg["windows"] = "rows"
        pad, blocks, _zero, _write = seg["rowplan"]
        edges = sum(len(e) for *_x, e in blocks)
        assert (pad == (0, 0)) == (kernel_cost == 0)
        assert (edges > 0) == (kernel_cost == 0)
    x, w = _matches_definition(head, m, seed=4)
    fn = lambda x, w: planned(head, x, w)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


def test_fused_row_node_in_eager_plain_form_under_torch_func():
    """Eager runs one _RowWindows node per segment; torch.func (vmap / grad) takes the plain
    differentiable form, with the same values and gradients."""
    head = build(6, 2, "dual_lphm", fft=False)
    assert methods(head) == ("gemm", ["rows"])
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 6, generator=g, dtype=D64) - 0.5
    w = head.w.detach().clone().requires_grad_()
    h = head.contraction._kron_h(head.expansion.segment_inputs(x),
                                 head.reconciliation.form_factors(w[0], 4, head.D)[3])
    assert type(h.grad_fn).__name__ == "_RowWindowsBackward"
    loss = lambda w: planned(head, x, w).square().sum()  # noqa: E731
    want = torch.autograd.grad(loss(w), w)[0]
    torch.testing.assert_close(torch.func.grad(loss)(w), want, rtol=1e-12, atol=1e-12)
    ys = torch.func.vmap(lambda xi: planned(head, xi[None], w))(x)
    torch.testing.assert_close(ys[:, 0], planned(head, x, w), rtol=1e-12, atol=1e-12)


def _matches_definition(head, m: int, seed: int):
    """The planned head equals the definition in float64, values and gradients (x and w);
    returns the (x, w) it checked."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(5, m, generator=g, dtype=D64) - 0.5).requires_grad_()
    w = head.w.detach().clone().requires_grad_()
    y, ref = planned(head, x, w), definition(head, x, w)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    gy = torch.randn(y.shape, generator=g, dtype=D64)
    for a, b in zip(torch.autograd.grad(y, (x, w), gy), torch.autograd.grad(ref, (x, w), gy)):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
    return x, w


@pytest.mark.parametrize("rec", ["lphm", "dual_lphm"])
@pytest.mark.parametrize("kernel_cost", [0, 10**9])
@pytest.mark.parametrize(("m", "q", "channels"), [(6, 2, 1), (6, 3, 2), (4, 2, 1)])
def test_folded_kron_product_is_one_node_equal_to_the_definition(monkeypatch, rec, kernel_cost,
                                                                  m, q, channels):
    """A flat Kronecker form with B = S Tᵀ over one row-window segment runs as one autograd
    node (_KronRows: H = K T, y = H kron(A, S)ᵀ, w's gradient one buffer), R unpadded with
    edge products or padded; values, gradients of x and w, gradcheck and gradgradcheck equal
    the definition in float64."""
    monkeypatch.setattr(st, "KERNEL_COST", kernel_cost)
    head = build(m, q, rec, fft=False)
    if channels == 1:
        head = _one_channel(head, m, q, rec)
    c = head.contraction
    assert c.kron["fold"] is not None
    assert methods(head)[1] == ["rows"]
    x, w = _matches_definition(head, m, seed=6)
    if channels == 1:
        assert type(planned(head, x, w).grad_fn).__name__ == "_KronRowsBackward"
    fn = lambda x, w: planned(head, x, w)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


def _one_channel(head: RPNHead, m: int, q: int, rec: str) -> RPNHead:
    torch.manual_seed(0)
    one = RPNHead(m, 4, expansion={"name": "taylor", "d": 2}, reconciliation=rec,
                  reconciliation_params={"p": 2, "q": q, "r": 2}, dtype=D64)
    with torch.no_grad():
        one.w.copy_(head.w[:1])
    return one


def test_folded_node_writes_w_gradient_and_skips_x_gradient():
    """One channel: the product's grad_fn is _KronRowsBackward; w's gradient (one buffer,
    every factor's part) equals the definition's also when x needs no gradient."""
    head = _one_channel(build(6, 2, "dual_lphm", fft=False), 6, 2, "dual_lphm")
    g = torch.Generator().manual_seed(7)
    x = torch.rand(5, 6, generator=g, dtype=D64) - 0.5
    w = head.w.detach().clone().requires_grad_()
    y = planned(head, x, w)
    assert type(y.grad_fn).__name__ == "_KronRowsBackward"
    gy = torch.randn(y.shape, generator=g, dtype=D64)
    got = torch.autograd.grad(y, w, gy)[0]
    want = torch.autograd.grad(definition(head, x, w), w, gy)[0]
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)


def test_fold_plan_follows_the_form():
    """The MNIST head (m = 784, q = 2, dual_lphm) is folded; hm (B = F itself) and a
    subclass computing its own factors (not flat) are not, and the latter stays exact."""
    from rpnkit.reconciliation.kronecker import DualLPHM

    big = RPNHead(784, 64, expansion={"name": "taylor", "d": 2}, reconciliation="dual_lphm",
                  reconciliation_params={"p": 2, "q": 2, "r": 2}, device="meta")
    assert big.reconciliation.form().flat
    assert big.contraction.kron["fold"] is not None
    assert build(6, 2, "hm").contraction.kron["fold"] is None

    class Scaled(DualLPHM):
        def factors(self, w, n, D):  # noqa: N803
            return [2.0 * f for f in super().factors(w, n, D)]

    assert not Scaled().form().flat
    torch.manual_seed(0)
    head = RPNHead(6, 4, expansion={"name": "taylor", "d": 2}, reconciliation=Scaled(),
                   dtype=D64)
    assert head.contraction.path == "kron-structured"
    assert head.contraction.kron["fold"] is None
    _matches_definition(head, 6, seed=8)


def test_fold_costs_choose_the_small_kron_matrix():
    """kron(A, S) is (p·s, q·c): folded for the MNIST shapes, not where it is large."""
    costs = st.fold_costs(128, 2, 2, 32, 2)
    assert costs["fold"] < costs["batched"]
    costs = st.fold_costs(128, 2, 64, 5000, 2)
    assert costs["fold"] > costs["batched"]
