"""Fusions added for the reference toolkit: prod, min, median and parameterised_concat (a
learned map from the concatenation through a reconciliation's form)."""

from __future__ import annotations

import pytest
import torch

from rpnkit.errors import ConfigurationError
from rpnkit.fusion import ParameterisedConcatFusion, build_fusion
from rpnkit.interdependence import InterdependentLayer

D64 = torch.float64
TOL = 1e-12


def _parts(k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 6, generator=g, dtype=D64) for _ in range(k)]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize(("name", "expect"), [
    ("prod", lambda s: torch.prod(s, 0)),
    ("min", lambda s: torch.amin(s, 0)),
    ("median", lambda s: torch.median(s, 0).values),
])
def test_elementwise_fusions(name, expect, k):
    f = build_fusion(name)
    assert f.bind([6] * k) == 6
    parts = _parts(k)
    torch.testing.assert_close(f(parts), expect(torch.stack(parts)), rtol=0, atol=0)
    assert not f.is_linear


def test_median_of_four_is_the_lower_middle_value():
    parts = [torch.tensor([v], dtype=D64) for v in (4.0, 1.0, 3.0, 2.0)]
    assert build_fusion("median")(parts).item() == 2.0
    with pytest.raises(ConfigurationError, match="needs equal widths"):
        build_fusion("prod").bind([2, 3])


FORMS = [("identity", {}), ("lorr", {"r": 2}), ("hm", {"p": 2, "q": 3}),
         ("lphm", {"p": 2, "q": 3, "r": 1}), ("dual_lphm", {"p": 2, "q": 3, "r": 1}),
         ("random_matrix_adaption", {"r": 2})]


@pytest.mark.parametrize(("rec", "rp"), FORMS, ids=[f[0] for f in FORMS])
def test_parameterised_concat_is_the_concatenation_times_psi(rec, rp):
    torch.manual_seed(0)
    f = build_fusion("parameterised_concat", n=4, reconciliation=rec, reconciliation_params=rp)
    assert f.bind([6, 6, 6], dtype=D64) == 4
    parts = _parts(3)
    w = f.psi.reconcile(f.w, 4, 18)
    assert w.shape == (4, 18)
    torch.testing.assert_close(f(parts), torch.cat(parts, -1) @ w.T, rtol=TOL, atol=TOL)
    assert f.w.numel() == f.psi.calculate_l(4, 18)
    leaves = [p.detach().clone().requires_grad_(True) for p in parts]
    assert torch.autograd.gradcheck(lambda *ps: f(list(ps)), tuple(leaves), eps=1e-6, atol=1e-6)


def test_parameterised_concat_in_a_layer_and_errors():
    torch.manual_seed(0)
    layer = InterdependentLayer(3, 4, num_heads=2, fusion={"name": "parameterised_concat",
                                                           "reconciliation": "lorr"},
                                dtype=D64)
    x = torch.randn(5, 3, dtype=D64)
    parts = [h(x) for h in layer.heads]
    (fuse,) = [m for m in layer.modules() if isinstance(m, ParameterisedConcatFusion)]
    torch.testing.assert_close(layer(x), torch.cat(parts, -1) @ fuse.matrix().T,
                               rtol=TOL, atol=TOL)
    assert any(p is fuse.w for p in layer.parameters())
    with pytest.raises(ConfigurationError, match="n must be an integer >= 1, got 0"):
        build_fusion("parameterised_concat", n=0)
    with pytest.raises(ConfigurationError):
        build_fusion("parameterised_concat", reconciliation="hm",
                     reconciliation_params={"p": 4}).bind([3, 3])
