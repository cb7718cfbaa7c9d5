"""Isomap / LLE out-of-sample maps wherever PyTorch goes (found by the conformance matrix).

* Isomap's distances to the k nearest fitted samples are differentiable twice (a gradient
  penalty through the head): ``cdist``'s backward has no derivative, so the neighbours are
  searched on x detached and their k distances computed again from x.
* Under autocast the neighbour search and LLE's local Gram solve run in the state's dtype:
  a bf16 Gram matrix moved the barycentre weights (and the head's output) by 17 %.
"""

from __future__ import annotations

import pytest
import torch

import rpnkit

D64 = torch.float64


def _fitted(name: str, m: int = 4, dtype=D64):
    comp = rpnkit.build_compression(name, d=2, n_neighbors=5)
    comp.bind(m)
    comp.to(dtype)
    g = torch.Generator().manual_seed(11)
    comp.fit(torch.rand(40, m, generator=g, dtype=D64) * 1.4 - 0.7)
    return comp


def _x(b: int = 6, m: int = 4, dtype=D64) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(b, m, generator=g, dtype=D64) * 1.4 - 0.7).to(dtype)


@pytest.mark.parametrize("name", ["isomap", "lle"])
def test_double_backward(name):
    comp = _fitted(name)
    x = _x(3).requires_grad_(True)
    assert torch.autograd.gradgradcheck(comp, (x,))


def test_isomap_distances_are_those_of_cdist():
    comp = _fitted("isomap")
    x = _x()
    dist, idx = comp.neighbours(x)
    full = torch.cdist(x, comp.samples)
    want, want_idx = torch.topk(full, 5, dim=1, largest=False)
    assert torch.equal(idx, want_idx)
    torch.testing.assert_close(dist, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["isomap", "lle"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_keeps_the_embedding(name, dtype):
    comp = _fitted(name, dtype=torch.float32)
    x = _x(dtype=torch.float32)
    ref = comp(x)
    with torch.autocast("cpu", dtype=dtype):
        got = comp(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    head = rpnkit.RPNHead(4, 3, expansion=comp, bias=True)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=dtype):
            y = head(x)
        want = head(x)
    assert float((y.float() - want).abs().max() / want.abs().max()) < 0.02  # the half GEMM only
