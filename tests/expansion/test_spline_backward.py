"""The local B-spline path: values and analytic backward against the Cox–de Boor definition."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

import rpnkit
from rpnkit import RPNHead
from rpnkit.contract import materialised_product
from rpnkit.expansion._spline import UniformBSplineBasis, cardinal_coefficients


def _inputs(d: int, t: int, lo: float, hi: float, rows: int = 7, m: int = 3) -> torch.Tensor:
    """Inside the grid, in the extended knots, beyond every knot, avoiding the knots themselves
    (where the basis has kinks for d = 1 and finite differences straddle them)."""
    h = (hi - lo) / t
    g = torch.Generator().manual_seed(100 * d + t)
    x = torch.rand(rows, m, generator=g, dtype=torch.float64) * (hi - lo + 2 * (d + 2) * h)
    x = x + lo - (d + 2) * h
    # move points that sit within 1e-4 of a knot off it
    u = (x - lo) / h
    near = (u - u.round()).abs() < 1e-4
    return torch.where(near, x + 3e-4 * h, x).requires_grad_()


@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("t", [1, 4, 7])
def test_gradcheck_against_finite_differences(d, t):
    e = rpnkit.build_expansion("bspline", t=t, d=d, range=(-1.25, 0.75)).double()
    x = _inputs(d, t, -1.25, 0.75)
    assert torch.autograd.gradcheck(e.local_basis, (x,), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("t", [1, 3, 5])
def test_analytic_backward_equals_autograd_of_the_definition(d, t):
    e = rpnkit.build_expansion("bspline", t=t, d=d, range=(-2.0, 1.0)).double()
    x = _inputs(d, t, -2.0, 1.0, rows=16, m=4)
    g = torch.randn(16, 4 * (t + d), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (fast,) = torch.autograd.grad(e.local_basis(x), x, g)
    (ref,) = torch.autograd.grad(e.expand(x), x, g)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(e.local_basis(x), e.expand(x), rtol=0, atol=1e-13)


def test_first_layer_input_without_grad_gets_none_and_no_saved_state():
    e = rpnkit.build_expansion("bspline")
    x = torch.rand(5, 2)
    out = e.local_basis(x)
    assert out.grad_fn is None
    assert out.shape == (5, 16)


def test_cardinal_coefficients_are_the_cardinal_spline():
    # d = 1: hat function pieces f and 1 - f; partition of unity for every d
    assert cardinal_coefficients(1) == [[Fraction(1), Fraction(0)], [Fraction(-1), Fraction(1)]]
    for d in range(1, 7):
        c = cardinal_coefficients(d)
        assert sum(c[0]) == 1
        assert all(sum(row) == 0 for row in c[1:])


def test_head_uses_the_local_path_and_matches_the_definition_in_float32_and_64():
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        head = RPNHead(5, 3, expansion="bspline", reconciliation="identity", dtype=dtype)
        assert head.expansion.knots.dtype == dtype
        x = torch.rand(32, 5, dtype=dtype) * 3 - 1.5
        x.requires_grad_()
        y = head(x)
        (gx,) = torch.autograd.grad(y.sum(), x)
        x0 = x.detach().clone().requires_grad_()
        y0 = materialised_product(head, x0)
        (gx0,) = torch.autograd.grad(y0.sum(), x0)
        torch.testing.assert_close(y, y0, rtol=tol, atol=tol)
        torch.testing.assert_close(gx, gx0, rtol=tol, atol=tol)


def test_default_head_casts_the_knots_once_to_the_parameter_dtype():
    head = RPNHead(4, 2, expansion="bspline", reconciliation="identity")
    assert head.expansion.knots.dtype == head.w.dtype == torch.float32
    assert head.expansion.spline_coef.dtype == torch.float32
    assert set(head.expansion.state_dict()) == {"knots"}  # tables are not saved


def test_no_per_call_casts_of_grids():
    head = RPNHead(3, 2, expansion="bspline", reconciliation="identity", remainder="linear")
    x = torch.rand(8, 3)
    head(x).sum().backward()
    with torch.profiler.profile(record_shapes=True) as prof:
        head(x).sum().backward()
    copies = [e for e in prof.events() if e.name == "aten::_to_copy"]
    # at most one float -> long conversion of the interval index (the local basis; the fused
    # small head's dense basis has none); no grid or table is cast per call (before: the
    # float64 knots were cast on every call, ~60 copies per KAN step)
    assert len([e for e in copies if e.input_shapes and e.input_shapes[0] == [8, 3]]) <= 1
    assert len(copies) <= 3
    head.fused = None  # the planned local basis: at most the one index conversion
    head(x).sum().backward()
    with torch.profiler.profile(record_shapes=True) as prof:
        head(x).sum().backward()
    # (0-dim copies are the Horner rule's Python-float coefficients, wrapped by the ops)
    copies = [e for e in prof.events() if e.name == "aten::_to_copy"
              and e.input_shapes and e.input_shapes[0] != []]
    # (inside the grid the columns are converted by copy_ into a long scratch: no _to_copy)
    assert len([e for e in copies if e.input_shapes[0] == [8, 3]]) <= 1
    assert len(copies) <= 3


def test_non_uniform_knots_fall_back_to_the_definition_after_refresh():
    head = RPNHead(3, 2, expansion="bspline", reconciliation="identity").double()
    e = head.expansion
    x = torch.rand(20, 3, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        e.knots.copy_(e.knots + 0.05 * torch.sin(torch.arange(e.knots.numel(), dtype=torch.float64)))
    e.refresh()
    assert not e.uniform
    torch.testing.assert_close(head(x), materialised_product(head, x), rtol=0, atol=1e-12)
    # uniform again (e.g. a regridded range): back on the local path
    with torch.no_grad():
        e.knots.copy_(torch.linspace(-3.0, 3.0, e.knots.numel(), dtype=torch.float64))
    e.refresh()
    assert e.uniform
    torch.testing.assert_close(head(x), materialised_product(head, x), rtol=0, atol=1e-12)


def test_loading_non_uniform_knots_refreshes():
    a = RPNHead(3, 2, expansion="bspline", reconciliation="identity").double()
    b = RPNHead(3, 2, expansion="bspline", reconciliation="identity").double()
    with torch.no_grad():
        a.expansion.knots.mul_(torch.linspace(1.0, 1.3, a.expansion.knots.numel(),
                                              dtype=torch.float64))
    b.load_state_dict(a.state_dict())
    assert not b.expansion.uniform
    x = torch.rand(6, 3, dtype=torch.float64)
    torch.testing.assert_close(b(x), materialised_product(b, x), rtol=0, atol=1e-12)


def test_uniform_basis_function_in_compiled_free_form_is_once_differentiable():
    e = rpnkit.build_expansion("bspline").double()
    x = (torch.rand(4, 2, dtype=torch.float64) * 2 - 1).requires_grad_()
    y = e.local_basis(x)
    assert "UniformBSplineBasis" in type(y.grad_fn).__name__
    assert UniformBSplineBasis is not None


@pytest.mark.parametrize("name", ["gaussian_rbf", "inverse_quadratic_rbf"])
@pytest.mark.parametrize("eps", [1.0, 2.5])
def test_rbf_analytic_backward(name, eps):
    e = rpnkit.build_expansion(name, K=6, eps=eps, range=(-1.5, 1.0)).double()
    x = (torch.randn(5, 3, dtype=torch.float64) * 1.5).requires_grad_()
    assert "RadialBasis" in type(e(x).grad_fn).__name__
    assert torch.autograd.gradcheck(e, (x,))
    z = eps * (x.unsqueeze(-1) - e.centres)
    want = (torch.exp(-(z * z)) if name == "gaussian_rbf" else 1 / (1 + z * z)).flatten(1)
    torch.testing.assert_close(e(x), want, rtol=0, atol=1e-15)


def test_rbf_subclass_with_its_own_phi_uses_autograd():
    from rpnkit.expansion.rbf import GaussianRBF

    class Wide(GaussianRBF):
        def phi(self, z):
            return torch.exp(-0.5 * z * z)

    e = Wide(K=4).double()
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    y = e(x)
    assert "RadialBasis" not in type(y.grad_fn).__name__
    z = x.unsqueeze(-1) - e.centres
    torch.testing.assert_close(y, torch.exp(-0.5 * z * z).flatten(1))


def test_rbf_centres_are_cast_once_with_the_head():
    head = RPNHead(3, 2, expansion="gaussian_rbf", reconciliation="identity")
    assert head.expansion.centres.dtype == torch.float32
    back = head.double().expansion.centres
    torch.testing.assert_close(back, torch.linspace(-1, 1, 10, dtype=torch.float64), rtol=0, atol=0)
