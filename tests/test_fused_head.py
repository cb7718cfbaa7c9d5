"""The fused small-head product (issue 21 item 2): κ written into one buffer, one autograd node.

Checked against the dense definition κ(X) ψ(w)ᵀ + b in float64 (values and gradients of x,
w and b), with gradcheck / gradgradcheck, and for the cases where the head must keep its
planned path.
"""

from __future__ import annotations

import pytest
import torch

import rpnkit
from rpnkit import RPNHead
from rpnkit.contract import FusedHeadProduct

EXT = {"name": "extended", "expansions": ["bspline", {"name": "taylor", "d": 2}]}


def _head(expansion=EXT, reconciliation="lorr", m=2, n=3, **kw):
    torch.manual_seed(0)
    params = {"r": 2} if reconciliation == "lorr" else None
    return RPNHead(m, n, expansion=expansion, reconciliation=reconciliation,
                   reconciliation_params=params, remainder="zero", dtype=torch.float64, **kw)


def _definition(head, x):
    """κ(X) ψ(w)ᵀ + b with κ from the expansion's definition (Cox–de Boor, cat of blocks)."""
    w_mat = head.reconciliation.reconcile(head.w[0], head.n, head.D)
    y = head.expansion(x) @ w_mat.t()
    return y if head.bias is None else y + head.bias


def _inputs(m, b=40):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(b, m, generator=g, dtype=torch.float64) * 2.6 - 1.3  # also outside the knots
    x[0, 0] = -0.6  # on a knot
    x[1] = 1.0  # on the last inner knot
    return x


@pytest.mark.parametrize("expansion", [EXT, "bspline", {"name": "taylor", "d": 2},
                                       {"name": "taylor", "d": 3},
                                       {"name": "extended", "expansions": [
                                           {"name": "bspline", "t": 3, "d": 2}, "bspline",
                                           {"name": "taylor", "d": 3}]}])
@pytest.mark.parametrize("reconciliation", ["lorr", "identity"])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_equals_definition_float64(expansion, reconciliation, bias):
    head = _head(expansion, reconciliation, bias=bias)
    assert head.fused is not None
    with torch.no_grad():
        if bias:
            head.bias.normal_()
    x = _inputs(2).requires_grad_()
    y = head(x)
    ref = _definition(head, x)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    params = list(head.parameters())
    got = torch.autograd.grad(y, [x, *params], g)
    want = torch.autograd.grad(ref, [x, *params], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("d", [1, 2, 4, 5])
def test_fused_spline_degrees_equal_definition(d):
    """Every degree's centred form (one term for d = 1, three for d = 5) against Cox–de Boor,
    values and input gradients, also outside the knots."""
    head = _head({"name": "bspline", "t": 4, "d": d}, "identity")
    assert head.fused is not None
    x = _inputs(2).requires_grad_()
    y, ref = head(x), _definition(head, x)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    (gx,), (gx_ref,) = torch.autograd.grad(y, [x], g), torch.autograd.grad(ref, [x], g)
    rows = slice(2 if d == 1 else 0, None)  # d = 1 has kinks at the knots (rows 0, 1)
    torch.testing.assert_close(gx[rows], gx_ref[rows], rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_spline_non_finite_inputs_give_nan_like_the_definition(dtype):
    head = _head("bspline", "identity").to(dtype)
    x = _inputs(2, 6).to(dtype)
    x[1, 0], x[2, 1], x[3, 0] = float("inf"), float("-inf"), float("nan")
    x[4, 1] = 1e30  # finite, far beyond the grid: zeros
    y, ref = head(x), _definition(head, x)
    assert torch.equal(y.isnan(), ref.isnan())
    assert y[1:4].isnan().all()
    torch.testing.assert_close(y[~y.isnan()], ref[~ref.isnan()])


def test_fused_gradcheck_and_gradgradcheck():
    head = _head(bias=True)
    x = (_inputs(2, 6) * 0.7).requires_grad_()
    w, b = head.w, head.bias

    def f(x, w, b):
        return head.fused.run(x, w, b, head._planned)

    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


def test_fused_only_w_needs_grad():
    """Data input (no grad): only w's gradient, equal to the definition's."""
    head = _head()
    x = _inputs(2)
    y = head(x)
    (gw,) = torch.autograd.grad(y.square().sum(), [head.w])
    (want,) = torch.autograd.grad(_definition(head, x).square().sum(), [head.w])
    torch.testing.assert_close(gw, want, rtol=1e-12, atol=1e-12)


def test_rpn_ext_model_uses_fused_path_in_float32():
    torch.manual_seed(0)
    model = rpnkit.RPN.from_dims([2, 2, 1], expansion=EXT, reconciliation="lorr",
                                 reconciliation_params={"r": 1}, remainder="zero")
    assert sum(p.numel() for p in model.parameters()) == 47
    heads = [layer.heads[0] for layer in model.layers]
    assert all(h.fused is not None for h in heads)
    assert "fused" in model.plan()
    x = _inputs(2).float()
    y = model(x)
    saved = [h.fused for h in heads]
    for h in heads:
        h.fused = None
    try:
        ref = model(x)
    finally:
        for h, f in zip(heads, saved):
            h.fused = f
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [
    {"channels": 2},
    {"expansion": {"name": "taylor", "d": 2, "symmetric": True}},
    {"expansion": {"name": "bspline", "preprocess": "tanh"}},
    {"expansion": {"name": "bspline", "d": 0}},
    {"expansion": {"name": "bspline", "t": 200}},  # D = 2·203 > FUSED_MAX_D
    {"reconciliation": "random_matrix_adaption"},  # factors are not views of w
])
def test_planned_path_kept(kw):
    kw = dict(kw)
    head = _head(kw.pop("expansion", EXT), kw.pop("reconciliation", "lorr"), **kw)
    assert head.fused is None
    assert "fused" not in head.plan()


def test_non_uniform_knots_fall_back_to_definition():
    head = _head("bspline")
    knots = head.expansion.knots.clone()
    knots[4] += 0.05  # non-uniform grid (as a data-fitted grid update writes)
    head.expansion.set_grid(knots)
    assert not head.fused.available(_inputs(2))
    x = _inputs(2)
    torch.testing.assert_close(head(x), _definition(head, x), rtol=1e-12, atol=1e-12)


def test_reset_tables_rebuilds_fused_tables():
    head = _head()
    x = _inputs(2)
    want = head(x).detach()
    spline = head.fused.part.parts[0]
    spline.centres.fill_(0)  # as after to_empty(): garbage in the non-persistent tables
    head.reset_tables()
    torch.testing.assert_close(head(x), want, rtol=0, atol=0)


def test_fused_not_used_under_autocast_and_functorch():
    head = _head()
    x = _inputs(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not head.fused.available(x)
    seen = []
    # one vmap has a batched rule (rpnkit.fused_stacked); grad and nested vmaps do not
    torch.func.vmap(lambda r: seen.append(head.fused.available(r[None])) or r, in_dims=0)(x)
    torch.func.vmap(torch.func.vmap(lambda r: seen.append(head.fused.available(r[None, None]))
                                    or r))(x[None])
    torch.func.grad(lambda r: seen.append(head.fused.available(r[None])) or r.sum())(x[0])
    assert seen == [True, False, False]


def test_plan_for_refuses_other_forms():
    from rpnkit.reconciliation import forms

    head = _head()
    assert FusedHeadProduct.plan_for(head.expansion, forms.LowRank(0, 1), [(3, 2), (22, 2)],
                                     2, 3, head.D, 1) is None
    assert FusedHeadProduct.plan_for(head.expansion, forms.Dense(), None, 2, 3, head.D,
                                     1) is None


def test_fused_non_contiguous_input():
    """A transposed (non-contiguous) batch gives the same values and gradients."""
    head = _head(m=3)
    x = torch.randn(3, 7, dtype=torch.float64).t().requires_grad_()
    xc = x.detach().contiguous().requires_grad_()
    y, yc = head(x), head(xc)
    torch.testing.assert_close(y, yc, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(y.sum(), x)[0],
                               torch.autograd.grad(yc.sum(), xc)[0], rtol=1e-14, atol=1e-14)


def test_fused_spline_follows_knots_written_in_place_and_dtype_round_trips():
    """The fused B-spline keeps (−k₀/h, 1/h) of the knots until they change: written in
    place (still uniform, no refresh), replaced by a cast, or a float32 round trip (whose
    tables are rebuilt exactly from float64)."""
    head = _head("bspline")
    x = _inputs(2)
    torch.testing.assert_close(head(x), _definition(head, x), rtol=1e-12, atol=1e-12)
    head = head.float().double()
    torch.testing.assert_close(head(x), _definition(head, x), rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        head.expansion.knots.mul_(1.5)
    assert head.fused.available(x)
    torch.testing.assert_close(head(x), _definition(head, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reconciliation", ["lorr", "identity"])
def test_fused_product_with_a_non_contiguous_weight(reconciliation):
    """A weight passed through functional_call may be a strided view: the fused product
    reads its factors correctly (it takes w's flat factors as strided views)."""
    head = _head(reconciliation=reconciliation, bias=True)
    x = _inputs(2)
    wnc = torch.stack([head.w.detach(), torch.zeros_like(head.w)], -1)[..., 0].requires_grad_()
    assert not wnc.is_contiguous()
    y = torch.func.functional_call(head, {"w": wnc}, (x,))
    torch.testing.assert_close(y, head(x), rtol=1e-13, atol=1e-13)
    (gw,) = torch.autograd.grad(y.square().sum(), wnc)
    (want,) = torch.autograd.grad(head(x).square().sum(), head.w)
    torch.testing.assert_close(gw, want, rtol=1e-12, atol=1e-12)
