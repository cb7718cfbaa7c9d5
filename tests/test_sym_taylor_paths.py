"""Issue 21 item 5: symmetric Taylor contracted on its unique monomials (degree 2 and 3), for
the dense form (``sym-bilinear``) and the low-rank form (``lowrank-bilinear``), against the
materialised definition in float64: values, gradients, gradcheck and gradgradcheck."""

from __future__ import annotations

import pytest
import torch

from rpnkit import RPNHead, contract
from rpnkit.contract import materialised_product

D64 = torch.float64


def _head(m, d, rec, rp=None, n=3, channels=1, expansion="taylor"):
    params = {"d": d, "symmetric": True}
    if expansion == "extended":
        params = {"expansions": ["chebyshev", {"name": "taylor", "d": d, "symmetric": True}]}
    torch.manual_seed(0)
    return RPNHead(m, n, expansion=expansion, expansion_params=params, reconciliation=rec,
                   reconciliation_params=rp or {}, channels=channels).to(D64)


def _check_against_definition(head, m, rows=5):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(rows, m, generator=g, dtype=D64) * 2 - 1).requires_grad_()
    y = head.expansion_product(x)
    x0 = x.detach().clone().requires_grad_()
    y0 = materialised_product(head, x0)
    torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)
    gy = torch.randn(y.shape, generator=g, dtype=D64)
    got = torch.autograd.grad(y, (x, head.w), gy)
    want = torch.autograd.grad(y0, (x0, head.w), gy)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("blocks", [1, 3, 24])  # one range, several, one first index each
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize(("rec", "rp", "path"), [("identity", None, "sym-bilinear"),
                                                 ("lorr", {"r": 2}, "lowrank-bilinear")])
def test_unique_monomial_paths_equal_the_definition(rec, rp, path, d, blocks, monkeypatch):
    monkeypatch.setattr(contract, "SYM_BLOCKS", blocks)
    m = contract.SYM_MIN_M
    head = _head(m, d, rec, rp, channels=2)
    assert head.contraction.path == path
    _check_against_definition(head, m)


def test_degree_four_and_a_segment_after_other_columns(monkeypatch):
    monkeypatch.setattr(contract, "SYM_MIN_M", 2)
    head = _head(5, 4, "identity")
    assert head.contraction.path == "sym-bilinear"
    _check_against_definition(head, 5)
    # extended: Chebyshev columns first, the symmetric blocks at an offset
    head = _head(6, 3, "lorr", {"r": 3}, expansion="extended")
    assert head.contraction.path == "lowrank-bilinear"
    _check_against_definition(head, 6)


def test_the_table_holds_about_the_unique_monomials_not_the_ordered_layout():
    m = 40
    head = _head(m, 3, "lorr")
    ranges, rows = head.contraction.sym_ranges[2]  # the degree-3 segment
    unique = m * (m + 1) * (m + 2) // 6
    assert len(ranges) == contract.SYM_BLOCKS
    assert unique <= rows < 1.5 * unique  # ordered: m^3 = 64000 rows
    assert rows < m**3 / 3
    assert 1 not in head.contraction.sym_ranges  # degree 2: the quadratic fold
    ranges, numbers, lo = head.contraction.sym_quad[1]
    assert lo == 0  # the degree-1 block x is folded in as a constant slot
    # one range: an (m + 1)×m table per column of R (upper triangle + degree 1, rest zero)
    assert len(ranges) == 1
    assert numbers == head.contraction._cols() * (m + 1) * m


@pytest.mark.parametrize(("rec", "rp"), [("identity", None), ("lorr", {"r": 2})])
@pytest.mark.parametrize("d", [2, 3])
def test_gradcheck_and_gradgradcheck(rec, rp, d, monkeypatch):
    monkeypatch.setattr(contract, "SYM_MIN_M", 2)
    monkeypatch.setattr(contract, "SYM_BLOCKS", 2)
    head = _head(4, d, rec, rp, n=2)
    assert head.contraction.path in ("sym-bilinear", "lowrank-bilinear")
    _check_contraction_gradients(head, 4, seed=2)


def test_tables_are_rebuilt_after_to_empty():
    head = _head(24, 3, "identity")
    want = head.contraction.sym3_dest if hasattr(head.contraction, "sym3_dest") else None
    dest = head.contraction.sym2_dest.clone()
    src = head.contraction.sym2_src.clone()
    head.contraction.to_empty(device="cpu")
    head.contraction.reset_parameters()
    assert torch.equal(head.contraction.sym2_dest, dest)
    assert torch.equal(head.contraction.sym2_src, src)
    assert want is None
    _check_against_definition(head, 24)


def test_vmap_over_weights_matches_the_loop():
    head = _head(24, 2, "identity")
    x = torch.rand(4, 24, dtype=D64)
    ws = torch.randn(3, 1, head.l, dtype=D64)
    ins = head.expansion.segment_inputs(x)

    def f(w):
        return head.contraction(ins, w, head.reconciliation)

    torch.testing.assert_close(torch.func.vmap(f)(ws), torch.stack([f(w) for w in ws]))


# ------------------------------------------------------------------ degree 2: quadratic fold
@pytest.mark.parametrize("ranges", [1, 2, 3, None])  # None: chosen by quad_ranges' cost
@pytest.mark.parametrize(("m", "n", "bias", "channels"), [(24, 3, False, 1), (30, 5, True, 2),
                                                         (41, 1, True, 1)])
@pytest.mark.parametrize(("rec", "rp", "path"), [("identity", None, "sym-bilinear"),
                                                 ("lorr", {"r": 2}, "lowrank-bilinear"),
                                                 ("lorr", {"r": 4}, "lowrank-bilinear")])
def test_quadratic_fold_equals_the_definition(rec, rp, path, m, n, bias, channels, ranges,
                                              monkeypatch):
    monkeypatch.setattr(contract, "SYM_QUAD_RANGES", ranges)
    torch.manual_seed(0)
    head = RPNHead(m, n, expansion="taylor", expansion_params={"d": 2, "symmetric": True},
                   reconciliation=rec, reconciliation_params=rp or {}, channels=channels,
                   bias=bias).to(D64)
    c = head.contraction
    assert c.path == path
    assert 1 in c.sym_quad
    assert c.sym_quad[1][2] == 0
    if ranges is not None:
        assert len(c.sym_quad[1][0]) == ranges
    assert "quadratic-fold with x as a constant slot" in head.plan()
    _check_against_definition(head, m)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(4, m, generator=g, dtype=D64) * 2 - 1
    torch.testing.assert_close(head(x), materialised_product(head, x) + (head.bias if bias else 0),
                               rtol=1e-12, atol=1e-12)


def test_quad_ranges_follow_the_batch_the_plan_is_costed_at():
    # more rows make the GEMM's saved multiply-adds outweigh a range's fixed kernels
    for m, c in ((64, 8), (256, 8), (256, 2), (784, 64)):
        counts = [contract.quad_ranges(m, c, b) for b in (1, 16, 64, 256, 1024, 8192)]
        assert counts == sorted(counts)
        assert 1 <= counts[0] <= counts[-1] <= 8
    assert contract.quad_ranges(64, 8, 64) == 1  # small: one GEMM, fewest kernels
    assert contract.quad_ranges(256, 8, 64) >= 3  # large: the triangle pays
    assert contract.quad_ranges(6, 3, 10**6) == 6  # never more ranges than rows


def test_quadratic_fold_planned_at_two_batches_gives_the_same_values():
    torch.manual_seed(0)
    heads = [RPNHead(96, 4, expansion="taylor", expansion_params={"d": 2, "symmetric": True},
                     reconciliation="identity", plan_batch=b).to(D64) for b in (4, 4096)]
    heads[1].load_state_dict(heads[0].state_dict())
    spans = [len(h.contraction.sym_quad[1][0]) for h in heads]
    assert spans[0] < spans[1]
    x = torch.rand(5, 96, dtype=D64, generator=torch.Generator().manual_seed(1))
    y0, y1 = (h(x) for h in heads)
    torch.testing.assert_close(y0, y1, rtol=1e-12, atol=1e-12)
    g0, g1 = (torch.autograd.grad(y.square().sum(), h.w)[0] for y, h in zip((y0, y1), heads))
    torch.testing.assert_close(g0, g1, rtol=1e-12, atol=1e-12)


def test_quadratic_fold_tables_hold_each_weight_once():
    m, c = 7, 3
    for ranges, one in ((1, True), (3, True), (2, False)):
        dest, src, spans, size = contract._quad_tables(m, ranges, one, c)
        rows = (m if one else 0) + m * (m + 1) // 2
        assert dest.shape == (c * rows,)
        assert src.shape == (size,)
        assert torch.equal(src[dest], torch.arange(c * rows))  # every entry placed once
        assert int((src < c * rows).sum()) == c * rows  # the rest of T is zero
        assert len(spans) == ranges


@pytest.mark.parametrize(("rec", "rp"), [("identity", None), ("lorr", {"r": 2})])
@pytest.mark.parametrize("ranges", [1, 2])
def test_quadratic_fold_gradcheck_and_gradgradcheck(rec, rp, ranges, monkeypatch):
    monkeypatch.setattr(contract, "SYM_MIN_M", 2)
    monkeypatch.setattr(contract, "SYM_QUAD_RANGES", ranges)
    head = _head(5, 2, rec, rp, n=2)
    assert len(head.contraction.sym_quad[1][0]) == ranges
    _check_contraction_gradients(head, 5, seed=5)


def test_quadratic_fold_with_a_different_degree_one_input():
    """The degree-1 slot takes the quadratic segment's input; a dense segment fed another
    tensor (not Taylor's own x) is corrected by (v - x) R_1."""
    head = _head(24, 2, "lorr", {"r": 2})
    g = torch.Generator().manual_seed(6)
    x = torch.rand(3, 24, generator=g, dtype=D64)
    v = torch.rand(3, 24, generator=g, dtype=D64)
    w = head.w
    got = head.contraction([v, x], w, head.reconciliation)
    i, j = torch.triu_indices(24, 24)
    kx = torch.cat([v, x[:, i] * x[:, j]], dim=1)
    want = kx @ head.reconciliation.reconcile(w[0], head.n, head.D).t()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("rec", "rp"), [("identity", None), ("lorr", {"r": 2})])
def test_quadratic_fold_under_bf16_autocast(rec, rp):
    torch.manual_seed(0)
    head = RPNHead(32, 4, expansion="taylor", expansion_params={"d": 2, "symmetric": True},
                   reconciliation=rec, reconciliation_params=rp or {})
    assert head.contraction.sym_quad
    x = torch.rand(8, 32) * 2 - 1
    want = materialised_product(head.double(), x.double()).float()
    head.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = head.expansion_product(x)
    torch.testing.assert_close(got.float(), want, rtol=5e-2, atol=5e-2 * want.abs().max().item())


def test_quadratic_fold_tables_follow_to_empty_and_dtype():
    head = _head(24, 2, "identity")
    dest, src = head.contraction.quad1_dest.clone(), head.contraction.quad1_src.clone()
    head.contraction.to_empty(device="cpu")
    head.contraction.reset_parameters()
    assert torch.equal(head.contraction.quad1_dest, dest)
    assert torch.equal(head.contraction.quad1_src, src)
    assert "quad1_src" not in head.state_dict()  # non-persistent buffers
    _check_against_definition(head, 24)


def _check_contraction_gradients(head, m: int, seed: int) -> None:
    """gradcheck and gradgradcheck of the head's planned contraction in w and x (float64)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(3, m, generator=g, dtype=D64) - 0.5).requires_grad_()
    w = (torch.randn(1, head.l, generator=g, dtype=D64) * 0.5).requires_grad_()

    def f(w, x):
        return head.contraction(head.expansion.segment_inputs(x), w, head.reconciliation)

    assert torch.autograd.gradcheck(f, (w, x))
    assert torch.autograd.gradgradcheck(f, (w, x))
