"""Issue 21 item 3: the local B-spline basis per local index k (1-D column gathers of (B, m),
Horner values with scalar coefficients, one scatter per k; backward recomputed per k) equals
the Cox–de Boor definition in float64, also exactly on every knot and outside the grid."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

import rpnkit
from rpnkit.expansion._spline import (
    UniformBSplineBasis,
    cardinal_coefficients,
    horner_coefficients,
    horner_derivatives,
)


def _on_knots_and_outside(t: int, d: int, m: int) -> torch.Tensor:
    """Every knot (extended ones too), points between them, and points beyond both ends."""
    lo, hi = -1.5, 0.5
    h = (hi - lo) / t
    knots = lo + h * torch.arange(-d, t + d + 1, dtype=torch.float64)
    inner = knots[:-1] + 0.37 * h
    beyond = torch.tensor([lo - (d + 3) * h, lo - (d + 0.5) * h, hi + (d + 0.5) * h,
                           hi + (d + 3) * h], dtype=torch.float64)
    pts = torch.cat([knots, inner, beyond])
    rows = -(-pts.numel() // m)
    pts = torch.cat([pts, pts[: rows * m - pts.numel()]])
    # each feature sees every point (a different rotation per feature)
    return torch.stack([pts.roll(3 * i)[: rows * m] for i in range(m)], 1).reshape(-1, m)


def test_horner_tables_are_the_cardinal_coefficients():
    for d in range(1, 7):
        c = cardinal_coefficients(d)
        h, dh = horner_coefficients(d), horner_derivatives(d)
        assert h == tuple(tuple(float(c[e][k]) for e in range(d + 1)) for k in range(d + 1))
        assert dh == tuple(tuple(float((e + 1) * c[e + 1][k]) for e in range(d))
                           for k in range(d + 1))
    assert horner_coefficients(1) == ((1.0, -1.0), (0.0, 1.0))
    assert cardinal_coefficients(2)[2][1] == Fraction(-1)


@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("t", [1, 5])
def test_values_and_gradient_on_knots_and_outside_equal_the_definition(d, t):
    e = rpnkit.build_expansion("bspline", t=t, d=d, range=(-1.5, 0.5)).double()
    x = _on_knots_and_outside(t, d, 3).requires_grad_()
    fast, ref = e.local_basis(x), e.expand(x)
    assert fast.grad_fn is not None
    assert "UniformBSplineBasis" in type(fast.grad_fn).__name__
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-13)
    g = torch.randn(fast.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (gf,) = torch.autograd.grad(fast, x, g)
    (gr,) = torch.autograd.grad(ref, x, g)  # one-sided (interval j) derivative at knots
    torch.testing.assert_close(gf, gr, rtol=0, atol=1e-10)


def test_gradcheck_and_gradgradcheck_on_knots_and_outside():
    e = rpnkit.build_expansion("bspline", t=4, d=3, range=(-1.5, 0.5)).double()
    # d = 3 is C² at the knots, so finite differences across a knot are smooth enough
    x = _on_knots_and_outside(4, 3, 2).requires_grad_()
    assert torch.autograd.gradcheck(e.local_basis, (x,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(e.local_basis, (x,), eps=1e-6, atol=1e-5)


def test_second_derivative_equals_the_definition_off_knots():
    e = rpnkit.build_expansion("bspline", t=5, d=3, range=(-1.5, 0.5)).double()
    x = (torch.rand(9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
         * 4 - 2.5).requires_grad_()
    g = torch.randn(9, 4 * 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    (gf,) = torch.autograd.grad(e.local_basis(x), x, g, create_graph=True)
    (gr,) = torch.autograd.grad(e.expand(x), x, g, create_graph=True)
    (hf,) = torch.autograd.grad(gf.square().sum(), x)
    (hr,) = torch.autograd.grad(gr.square().sum(), x)
    torch.testing.assert_close(hf, hr, rtol=0, atol=1e-9)


def test_backward_saves_only_per_feature_state():
    # no (B·m, d+1) column table and no (B·m, d+1) derivative block kept for backward:
    # the backward recomputes intervals, columns and derivatives per k from x
    b, m, t, d = 32, 6, 5, 3
    e = rpnkit.build_expansion("bspline", t=t, d=d)
    x = (torch.rand(b, m) * 2 - 1).requires_grad_()
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = e.local_basis(x)
    table = m * (t + 2 * d + 2) * (d + 1)  # the (constant) column table of the expansion
    # x, the knots, the derivative coefficients, the column table, row0 and base (m each)
    assert sorted(sizes) == sorted([b * m, t + 2 * d + 1, d * (d + 1), table, m, m])
    (gx,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(gx, torch.autograd.grad(e.expand(x).sum(), x)[0],
                               rtol=0, atol=1e-5)


def test_kan_layer_above_the_fused_size_matches_the_definition():
    # D = 40·8 > 256: the planned (materialised) path, local basis without fused head
    torch.manual_seed(0)
    model = rpnkit.models.KAN([40, 3, 2]).double()
    x = _on_knots_and_outside(5, 3, 40)[:16].clone().requires_grad_()
    y = model(x)
    head = model.layers[0].heads[0]
    basis = head.expansion.expand(x)
    ref = basis @ head.w.view(3, -1).t() + head.remainder(x)
    h1 = model.layers[0](x)
    torch.testing.assert_close(h1, ref, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda z: model(z), (x[:4].detach().requires_grad_(),),
                                    eps=1e-6, atol=1e-5)
    assert y.shape == (16, 2)


def test_function_directly_with_float32_matches_float64_definition():
    e = rpnkit.build_expansion("bspline", t=5, d=3)
    x = _on_knots_and_outside(5, 3, 3).float()
    got = e.local_basis(x)
    ref = e.double().expand(x.double())
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-5)  # float32 rounding
    assert UniformBSplineBasis is not None
