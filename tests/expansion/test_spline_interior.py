"""Issue 21 item 3: the CPU local B-spline path in row chunks – arithmetic columns and
shifted-view scatters where every x of a chunk lies inside the grid, the table path elsewhere –
equals the Cox–de Boor definition in float64 (values, gradients, gradcheck), chunk by chunk."""

from __future__ import annotations

import pytest
import torch

import rpnkit
from rpnkit.expansion import _spline


def _mixed_rows(b: int, m: int, lo: float, hi: float, seed: int = 0) -> torch.Tensor:
    """Rows inside [lo, hi) except a few entries beyond the grid and on its end knots."""
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(b, m, dtype=torch.float64, generator=g)
    x[3, 0] = hi + 0.3 * (hi - lo)  # beyond the grid (extended knots)
    x[7, -1] = lo - 5.0  # beyond every knot
    x[11, 1] = lo  # the first grid knot: inside
    x[12, 1] = hi  # the last grid knot: interval t+d, outside
    return x


@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("chunk_bytes", [1, 2000, 1 << 22])
def test_chunks_inside_and_outside_equal_the_definition(d, chunk_bytes, monkeypatch):
    monkeypatch.setattr(_spline, "CHUNK_BYTES", chunk_bytes)
    e = rpnkit.build_expansion("bspline", t=5, d=d, range=(-1.5, 0.5)).double()
    x = _mixed_rows(40, 3, -1.5, 0.5).requires_grad_()
    fast, ref = e.local_basis(x), e.expand(x)
    assert "UniformBSplineBasis" in type(fast.grad_fn).__name__
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-13)
    g = torch.randn(fast.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (gf,) = torch.autograd.grad(fast, x, g)
    (gr,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(gf, gr, rtol=0, atol=1e-10)


@pytest.mark.parametrize("chunk_bytes", [1, 1 << 22])
def test_nan_and_infinite_inputs_give_nan_where_the_definition_does(chunk_bytes, monkeypatch):
    monkeypatch.setattr(_spline, "CHUNK_BYTES", chunk_bytes)
    e = rpnkit.build_expansion("bspline", t=5, d=3).double()
    x = _mixed_rows(16, 4, -1.0, 1.0, seed=3)
    x[2, 1], x[5, 3], x[9, 0] = float("nan"), float("inf"), float("-inf")
    x.requires_grad_()
    fast, ref = e.local_basis(x), e.expand(x)
    bad = (~torch.isfinite(x.detach())).repeat_interleave(8, dim=1)  # their feature's block
    torch.testing.assert_close(fast[~bad], ref[~bad], rtol=0, atol=1e-13)
    # a non-finite feature gives NaN in its block (in its d+1 local columns; the recursion
    # in all t+d), so every product with it is NaN as with the definition
    for r, c in ((2, 1), (5, 3), (9, 0)):
        blk = fast[r, 8 * c: 8 * c + 8]
        assert blk.isnan().any()
        assert ref[r, 8 * c: 8 * c + 8][blk.isnan()].isnan().all()
    assert torch.isfinite(fast[2, :8]).all()  # the neighbours keep their values
    g = torch.randn(fast.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    (gf,) = torch.autograd.grad(fast, x, g)
    finite = torch.isfinite(x.detach())
    (gr,) = torch.autograd.grad(e.expand(x), x, g)
    torch.testing.assert_close(gf[finite], gr[finite], rtol=0, atol=1e-10)


@pytest.mark.parametrize("d", [1, 3, 5])
def test_interior_only_values_and_gradients(d, monkeypatch):
    monkeypatch.setattr(_spline, "CHUNK_BYTES", 4000)  # several chunks, each inside the grid
    e = rpnkit.build_expansion("bspline", t=4, d=d, range=(-1.0, 1.0)).double()
    x = (torch.rand(30, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
         * 1.98 - 0.99).requires_grad_()
    j = torch.floor((x.detach() - e.knots[0]) / (e.knots[1] - e.knots[0]))
    assert _spline._interior(j, d, 4 + d)
    torch.testing.assert_close(e.local_basis(x), e.expand(x), rtol=0, atol=1e-13)
    assert torch.autograd.gradcheck(e.local_basis, (x[:6].detach().requires_grad_(),),
                                    eps=1e-6, atol=1e-6)
    if d >= 2:  # C¹: the graph of the backward (create_graph) differentiates again
        assert torch.autograd.gradgradcheck(e.local_basis, (x[:4].detach().requires_grad_(),),
                                            eps=1e-6, atol=1e-5)


def test_interior_path_takes_no_column_table(monkeypatch):
    # inside the grid the columns are arithmetic: the table gather is never called
    e = rpnkit.build_expansion("bspline", t=5, d=3)
    x = torch.rand(64, 4) * 1.9 - 0.95
    calls = []
    real = _spline._scatter_table
    monkeypatch.setattr(_spline, "_scatter_table", lambda *a: calls.append(1) or real(*a))
    e.local_basis(x)
    assert calls == []
    x[5, 2] = 3.0  # one row beyond the grid: its chunk takes the table path
    torch.testing.assert_close(e.local_basis(x), e.expand(x), rtol=0, atol=5e-6)
    assert calls == [1]


def test_float32_point_rounding_onto_the_last_knot_is_outside():
    # x just below the grid's end can round to u = t + d in float32: interval t + d is not
    # interior, so that chunk takes the table path and still equals the definition
    e = rpnkit.build_expansion("bspline", t=5, d=3)
    ref = rpnkit.build_expansion("bspline", t=5, d=3).double()
    x = torch.full((8, 3), torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)).item())
    torch.testing.assert_close(e.local_basis(x).double(), ref.expand(x.double()),
                               rtol=0, atol=1e-6)


def test_exact_columns_guard():
    assert _spline._exact_columns(torch.zeros(1), 2**24 - 1)
    assert not _spline._exact_columns(torch.zeros(1), 2**24)
    assert not _spline._exact_columns(torch.zeros(1, dtype=torch.float16), 2048)
    assert _spline._exact_columns(torch.zeros(1, dtype=torch.float64), 2**40)


def test_half_precision_wide_input_uses_the_table_path(monkeypatch):
    # float16 cannot hold column numbers >= 2048 exactly: the whole block takes the table path
    # (float16 rounding of u = (x − k₀)/h is ~1e-3; a misplaced column would be off by ~0.5)
    calls = []
    real = _spline._scatter_table
    monkeypatch.setattr(_spline, "_scatter_table", lambda *a: calls.append(1) or real(*a))
    e = rpnkit.build_expansion("bspline", t=5, d=3).half()
    ref = rpnkit.build_expansion("bspline", t=5, d=3).double()
    x = (torch.rand(4, 300) * 1.8 - 0.9).half()
    torch.testing.assert_close(e.local_basis(x).double(), ref.expand(x.double()),
                               rtol=0, atol=2e-2)
    assert calls == [1]


def test_empty_batch_forward_and_backward():
    e = rpnkit.build_expansion("bspline", t=5, d=3).double()
    x = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    out = e.local_basis(x)
    assert out.shape == (0, 24)
    (gx,) = torch.autograd.grad(out.sum(), x)
    assert gx.shape == (0, 3)
