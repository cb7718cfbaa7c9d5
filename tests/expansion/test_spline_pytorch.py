"""B-spline and RBF expansions wherever PyTorch goes: autocast, meta-device construction,
double backward, torch.export, and size bounds checked before anything is allocated.

References are the dense definitions: the Cox–de Boor recursion (``BSpline.expand``, or a
model whose splines are switched to it) and φ(ε(x − c)) written out with plain torch ops.
"""

from __future__ import annotations

import copy

import pytest
import torch

import rpnkit
from rpnkit.errors import ConfigurationError
from rpnkit.expansion.rbf import MAX_GRID, MAX_SPLINE_DEGREE, BSpline, GaussianRBF
from rpnkit.models import KAN

EXT = {"name": "extended", "expansions": [{"name": "bspline"}, {"name": "taylor", "d": 2}]}


def _kan(dtype=None):
    return KAN([3, 5, 2]) if dtype is None else KAN([3, 5, 2]).to(dtype)


def _rpn_ext():
    """The default job's model (src/rpnkit/resources/default.yaml): RPN-Ext, lorr r=1."""
    return rpnkit.RPN.from_dims([2, 2, 2, 1], expansion=EXT,
                                reconciliation={"name": "lorr", "r": 1}, remainder="zero")


def _rbf_model(kind):
    return rpnkit.RPN.from_dims([3, 4, 2], expansion={"name": kind, "K": 6, "eps": 1.5})


MODELS = {
    "kan": (_kan, 3),
    "rpn_ext": (_rpn_ext, 2),
    "gaussian_rbf": (lambda: _rbf_model("gaussian_rbf"), 3),
    "inverse_quadratic_rbf": (lambda: _rbf_model("inverse_quadratic_rbf"), 3),
}


def _x(m, rows=64, seed=0, dtype=torch.float32, lo=-1.2, hi=1.2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(rows, m, generator=g, dtype=dtype) * (hi - lo) + lo


def _off_knots(x, e: BSpline):
    """Move points within 1e-3·h of a knot off it (kinks of the basis there)."""
    k0, h = float(e.knots[0]), float(e.knots[1] - e.knots[0])
    u = (x - k0) / h
    return torch.where((u - u.round()).abs() < 1e-3, x + 3e-3 * h, x)


def _splines(model):
    return [mod for mod in model.modules() if isinstance(mod, BSpline)]


# ------------------------------------------------------------------------------ autocast
def _rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(MODELS))
def test_forward_backward_under_cpu_autocast_close_to_float32(name, dtype):
    """Before: scatter(): Expected self.dtype to be equal to src.dtype (every B-spline model).
    Tolerance: relative (Frobenius) error 3e-2 (bfloat16 has an 8-bit mantissa, float16 11).
    """
    make, m = MODELS[name]
    torch.manual_seed(0)
    model = make()
    x = _x(m)
    ref = model(x)
    ref.square().mean().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype):
        y = model(x)
    assert not torch.equal(y.float(), ref)  # the GEMMs did run in the low precision
    y.float().square().mean().backward()
    assert _rel_err(y.float(), ref) < 3e-2
    for p, g in zip(model.parameters(), ref_grads):
        assert p.grad is not None
        assert p.grad.dtype == p.dtype
        assert _rel_err(p.grad, g) < 3e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["bspline", "gaussian_rbf", "inverse_quadratic_rbf"])
def test_basis_under_autocast_is_the_float32_basis(kind, dtype):
    """Under autocast the basis is evaluated in the buffers' dtype with autocast off: exactly
    the float32 values (with their gradient), whatever autocast's dtype (CPU bf16 and fp16;
    the same code runs on CUDA)."""
    head = rpnkit.RPNHead(4, 3, expansion=kind, reconciliation="identity")
    e = head.expansion
    x = _x(4, rows=32).requires_grad_()
    ref = e.segment_inputs(x)[0]
    (gref,) = torch.autograd.grad(ref.square().sum(), x)
    with torch.autocast("cpu", dtype=dtype):
        out = e.segment_inputs(x)[0]
        also = e(x)  # the definition (Cox–de Boor for bspline) too
    (gx,) = torch.autograd.grad(out.square().sum(), x)
    assert out.dtype == torch.float32
    assert also.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, gref, rtol=0, atol=0)
    torch.testing.assert_close(also, e(x), rtol=0, atol=0)


def test_bf16_input_under_autocast_uses_float32_tables():
    """A bfloat16 input (an autocast GEMM's output fed to a standalone expansion) is
    evaluated in the knots' dtype: 1/6 and the knots are not rounded to bfloat16."""
    e = rpnkit.build_expansion("bspline").float()
    x = _x(3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = e.local_basis(x)
    torch.testing.assert_close(out, e.local_basis(x.float()), rtol=0, atol=0)


# ------------------------------------------------------------------------------ meta device
@pytest.mark.parametrize("name", list(MODELS))
def test_meta_device_construction_equals_normal_construction(name):
    """Before: NotImplementedError aten::equal from the _apply overrides."""
    make, m = MODELS[name]
    torch.manual_seed(0)
    ref = make()
    with torch.device("meta"):
        meta = make()
    assert all(t.is_meta for t in meta.state_dict().values())
    meta.to_empty(device="cpu")
    meta.reset_parameters()
    meta.load_state_dict(ref.state_dict())
    x = _x(m)
    torch.testing.assert_close(meta(x), ref(x), rtol=0, atol=0)
    # every buffer, non-persistent ones (the spline tables) included, as built normally
    for (k, a), (_, b) in zip(ref.named_buffers(), meta.named_buffers()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("kind", ["bspline", "gaussian_rbf", "inverse_quadratic_rbf"])
def test_reset_parameters_recomputes_buffers_in_place(kind):
    """reset_parameters() rebuilds knots / centres and tables from the hyperparameters, in
    place, keeping each buffer's dtype (no float32 rounding carried over)."""
    params = {"t": 4, "d": 2, "range": (-2.0, 1.0)} if kind == "bspline" else {"K": 7}
    ref = rpnkit.build_expansion(kind, **params)
    ref.bind(3)
    ref.float()
    with torch.device("meta"):
        e = rpnkit.build_expansion(kind, **params)
        e.bind(3)
    e.to_empty(device="cpu")
    e.float()
    before = {k: id(v) for k, v in e.named_buffers()}
    for buf in e.buffers():  # uninitialised memory
        buf.fill_(float("nan") if buf.is_floating_point() else -7)
    e.reset_parameters()
    assert {k: id(v) for k, v in e.named_buffers()} == before  # in place
    for (k, a), (_, b) in zip(ref.named_buffers(), e.named_buffers()):
        assert a.dtype == b.dtype, k
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)
    # and the construction grid is the float64 one rounded once
    if kind == "bspline":
        torch.testing.assert_close(e.knots, ref.default_knots(torch.float32), rtol=0, atol=0)
        assert e.uniform
    x = _x(3)
    torch.testing.assert_close(e.segment_inputs(x)[0], ref.segment_inputs(x)[0], rtol=0, atol=0)


def test_to_empty_alone_gives_the_construction_grid():
    """to_empty() from meta writes the knots / centres derived from the hyperparameters (the
    values are not learnt; load_state_dict or reset_parameters are not needed for them)."""
    with torch.device("meta"):
        b = BSpline(t=6, d=3)
        b.bind(2)
        g = GaussianRBF(K=5)
    b.to_empty(device="cpu")
    g.to_empty(device="cpu")
    torch.testing.assert_close(b.knots, BSpline(t=6, d=3).knots, rtol=0, atol=0)
    torch.testing.assert_close(g.centres, GaussianRBF(K=5).centres, rtol=0, atol=0)
    x = _x(2, dtype=torch.float64)
    torch.testing.assert_close(b.local_basis(x), b.expand(x), rtol=0, atol=1e-13)


# ------------------------------------------------------------------------------ double backward
@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_bspline_local_basis_gradgradcheck(d):
    e = rpnkit.build_expansion("bspline", t=4, d=d, range=(-1.5, 1.0)).double()
    e.bind(3)
    x = _off_knots(_x(3, rows=6, dtype=torch.float64, lo=-2.5, hi=2.0), e).requires_grad_()
    assert torch.autograd.gradcheck(e.local_basis, (x,), eps=1e-7, atol=1e-6)
    assert torch.autograd.gradgradcheck(e.local_basis, (x,), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("kind", ["gaussian_rbf", "inverse_quadratic_rbf"])
def test_rbf_gradgradcheck(kind):
    e = rpnkit.build_expansion(kind, K=5, eps=1.3).double()
    x = _x(3, rows=6, dtype=torch.float64, lo=-2, hi=2).requires_grad_()
    assert torch.autograd.gradcheck(e.expand, (x,))
    assert torch.autograd.gradgradcheck(e.expand, (x,))


def _penalty_grads(model, x):
    """Gradient-penalty loss y + |dy/dx|² (create_graph), gradients w.r.t. every parameter."""
    x = x.clone().requires_grad_()
    y = model(x)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    loss = y.square().mean() + gx.square().sum()
    return torch.autograd.grad(loss, list(model.parameters()))


def test_kan_gradient_penalty_equals_the_cox_de_boor_model():
    """Before: 'trying to differentiate twice a function marked with @once_differentiable'.
    The reference is the same KAN with its splines on the Cox–de Boor recursion."""
    torch.manual_seed(0)
    model = _kan(torch.float64)
    dense = copy.deepcopy(model)
    for e in _splines(dense):
        e.uniform = False  # the definition (expand) instead of the local path
    x = _off_knots(_x(3, dtype=torch.float64, lo=-1.3, hi=1.3), _splines(model)[0])
    got = _penalty_grads(model, x)
    want = _penalty_grads(dense, x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["gaussian_rbf", "inverse_quadratic_rbf"])
def test_rbf_gradient_penalty_equals_the_plain_definition(kind):
    e = rpnkit.build_expansion(kind, K=6, eps=1.5).double()
    w = torch.randn(3 * 6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    w.requires_grad_()
    x = _x(3, dtype=torch.float64, lo=-2, hi=2)

    def plain(x):
        z = 1.5 * (x.unsqueeze(-1) - torch.linspace(-1, 1, 6, dtype=torch.float64))
        phi = torch.exp(-z * z) if kind == "gaussian_rbf" else 1 / (1 + z * z)
        return phi.flatten(1)

    def grads(f):
        xx = x.clone().requires_grad_()
        y = f(xx) @ w
        (gx,) = torch.autograd.grad(y.sum(), xx, create_graph=True)
        return torch.autograd.grad(y.square().mean() + gx.square().sum(), [w, xx])

    for a, b in zip(grads(e.expand), grads(plain)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ torch.export
@pytest.mark.parametrize("name", ["kan", "rpn_ext", "gaussian_rbf"])
def test_torch_export_equals_eager(name):
    """Before: mul(): functions with out=... arguments don't support automatic
    differentiation (the custom Function traced by export)."""
    make, m = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    x = _x(m, rows=16)
    prog = torch.export.export(model, (x,))
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(prog.module()(x), want, rtol=1e-6, atol=1e-6)
    x2 = _x(m, rows=16, seed=5)
    torch.testing.assert_close(prog.module()(x2), model(x2), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------ size bounds
@pytest.mark.parametrize(("build", "pattern"), [
    (lambda: rpnkit.build_expansion("bspline", t=10**9), r"t \(knot intervals.*1,048,576.*1,000,000,000"),
    (lambda: rpnkit.build_expansion("bspline", d=10**6), r"d \(degree\) must be at most 20"),
    (lambda: rpnkit.build_expansion("gaussian_rbf", K=10**9), r"K \(centres.*1,048,576"),
    (lambda: rpnkit.build_expansion("inverse_quadratic_rbf", K=MAX_GRID + 1), r"K \(centres"),
    (lambda: KAN([2, 1], grid=10**8), r"KAN's grid\) must be at most 1,048,576, got 100,000,000"),
], ids=["bspline_t", "bspline_d", "gaussian_rbf_K", "inverse_quadratic_rbf_K", "kan_grid"])
def test_sizes_are_refused_before_allocation(build, pattern):
    """Before: the constructors allocated the knots / centres (8 GB for 1e9) first."""
    with pytest.raises(ConfigurationError, match=pattern):
        build()


def test_largest_allowed_sizes_still_build():
    assert rpnkit.build_expansion("bspline", t=5, d=MAX_SPLINE_DEGREE).calculate_D(1) == 25
    with torch.device("meta"):  # no memory for the check itself
        assert BSpline(t=MAX_GRID).knots.numel() == MAX_GRID + 7
        assert GaussianRBF(K=MAX_GRID).centres.numel() == MAX_GRID


def test_load_state_dict_assign_into_a_meta_built_spline_builds_its_tables():
    """load_state_dict(assign=True) gives real knots; the non-persistent tables follow them."""
    ref = BSpline(t=4, d=3)
    ref.bind(3)
    with torch.device("meta"):
        e = BSpline(t=4, d=3)
        e.bind(3)
    e.load_state_dict(ref.state_dict(), assign=True)
    assert not any(b.is_meta for b in e.buffers())
    for (k, a), (_, b) in zip(ref.named_buffers(), e.named_buffers()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)
    x = _x(3, dtype=torch.float64)
    torch.testing.assert_close(e.local_basis(x), ref.local_basis(x), rtol=0, atol=0)
