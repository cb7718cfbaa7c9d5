"""Regression tests for the structure review (issue "Components own their structure").

Each test reproduces one finding of the review and fails on the code before the fix.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import rpnkit
from rpnkit import RPN, RPNHead, RPNLayer
from rpnkit.contract import materialised_product
from rpnkit.errors import ConfigurationError, UnknownNameError
from rpnkit.models import build_model


def test_float32_kan_accepts_float64_input():
    torch.manual_seed(0)
    kan = build_model("kan", dims=[3, 4, 2])
    x = torch.rand(5, 3, dtype=torch.float64)
    y = kan(x)  # used to raise "double != float" in KANBaseRemainder
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, kan(x.float()), rtol=0, atol=0)
    assert kan.double()(x).dtype == torch.float64


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_bspline_fast_path_gives_nan_where_the_definition_does(bad):
    head = RPNHead(3, 2, expansion="bspline", reconciliation="identity").double()
    x = torch.rand(4, 3, dtype=torch.float64) * 2 - 1
    x[1, 2] = bad
    y = head(x)
    y0 = materialised_product(head, x)
    assert torch.equal(torch.isnan(y), torch.isnan(y0))
    assert torch.isnan(y[1]).all()
    assert torch.isfinite(y[[0, 2, 3]]).all()
    basis = head.expansion.local_basis(x).reshape(4, 3, -1)
    assert torch.isnan(basis[1, 2]).any()  # NaN inside the bad feature's block only
    assert not torch.isnan(basis[1, :2]).any()
    assert not torch.isnan(basis[[0, 2, 3]]).any()
    for rec in ("lorr", "masking", "zero", "hm"):
        rp = {"p": 2, "q": 8} if rec == "hm" else {}
        other = RPNHead(3, 2, expansion="bspline", reconciliation=rec,
                        reconciliation_params=rp).double()
        assert torch.equal(torch.isnan(other(x)), torch.isnan(materialised_product(other, x)))


def test_modules_in_params_are_copied_per_head_and_layer():
    ln = nn.LayerNorm(3)
    model = RPN.from_dims([3, 3, 2], heads=2, expansion="taylor",
                          expansion_params={"preprocess": [ln]},
                          layers=[None, {"expansion_params": {"preprocess": [ln]}}])
    norms = [h.expansion.preprocess[0] for layer in model.layers for h in layer.heads]
    assert len(norms) == 4
    assert len({id(n) for n in norms}) == 4
    assert all(n is not ln for n in norms)
    layer = RPNLayer(3, 2, num_heads=3, expansion="identity",
                     expansion_params={"postprocess": [nn.Linear(3, 3)]})
    lins = [h.expansion.postprocess[0] for h in layer.heads]
    assert len({id(m) for m in lins}) == 3
    # the parameters are independent: training one head does not move the others
    params = [p for m in lins for p in m.parameters()]
    assert len({p.data_ptr() for p in params}) == len(params)


@pytest.mark.parametrize(("rec", "state"), [("masking", "mask"),
                                            ("random_matrix_adaption", "A"),
                                            ("hypernet", "net.2.weight")])
def test_heads_of_a_layer_draw_their_own_random_state(rec, state):
    rp = {"l": 4, "hidden": 5} if rec == "hypernet" else {}
    layer = RPNLayer(4, 3, num_heads=2, reconciliation=rec, reconciliation_params=rp)
    a, b = (h.reconciliation.state_dict()[state] for h in layer.heads)
    assert not torch.equal(a, b)
    # a seed makes it reproducible (heads still differ: seed, seed+1, ...)
    one = RPNLayer(4, 3, num_heads=2, reconciliation=rec, reconciliation_params=rp, seed=7)
    two = RPNLayer(4, 3, num_heads=2, reconciliation=rec, reconciliation_params=rp, seed=7)
    for h1, h2 in zip(one.heads, two.heads):
        assert torch.equal(h1.reconciliation.state_dict()[state],
                           h2.reconciliation.state_dict()[state])
    s1, s2 = (h.reconciliation.state_dict()[state] for h in one.heads)
    assert not torch.equal(s1, s2)
    # a seed given to the component itself is used as given (heads then share the state)
    same = RPNLayer(4, 3, num_heads=2, reconciliation=rec, reconciliation_params={**rp, "seed": 3})
    c, d = (h.reconciliation.state_dict()[state] for h in same.heads)
    assert torch.equal(c, d)
    # torch.manual_seed reproduces unseeded heads
    torch.manual_seed(11)
    e = RPNLayer(4, 3, num_heads=2, reconciliation=rec, reconciliation_params=rp)
    torch.manual_seed(11)
    f = RPNLayer(4, 3, num_heads=2, reconciliation=rec, reconciliation_params=rp)
    assert torch.equal(e.heads[1].reconciliation.state_dict()[state],
                       f.heads[1].reconciliation.state_dict()[state])


def test_standalone_hypernet_creates_no_parameters_after_the_fact():
    psi = rpnkit.build_reconciliation("hypernet", l=4, hidden=5)
    opt_params = list(psi.parameters())
    with pytest.raises(ConfigurationError, match="bind"):
        psi.reconcile(torch.zeros(4), 3, 2)
    assert list(psi.parameters()) == opt_params == []


def test_remainder_with_a_sized_activation_is_built_at_construction():
    head = RPNHead(3, 4, remainder="linear", remainder_params={"activation": "layer_norm"})
    assert isinstance(head.remainder.activation, nn.LayerNorm)
    assert head.remainder.activation.normalized_shape == (4,)
    assert "remainder.activation.weight" in head.state_dict()
    assert head(torch.rand(2, 3)).shape == (2, 4)
    kan_base = build_model("kan", dims=[3, 2])
    assert kan_base(torch.rand(2, 3)).shape == (2, 2)


def test_concat_n_means_the_output_width_whatever_the_heads():
    built = RPNLayer(3, 4, num_heads=2, fusion="concat")
    given = RPNLayer(3, 4, heads=[RPNHead(3, 2), RPNHead(3, 2)], fusion="concat")
    assert built.n == given.n == 4
    assert built(torch.rand(5, 3)).shape == given(torch.rand(5, 3)).shape == (5, 4)
    with pytest.raises(ConfigurationError, match="pass n=4"):
        RPNLayer(3, 2, heads=[RPNHead(3, 2), RPNHead(3, 2)], fusion="concat")


def test_l_zero_registers_no_parameter():
    for rec in ("constant", "zero", "one", "constant_eye"):
        head = RPNHead(3, 2, expansion="taylor", reconciliation=rec)
        assert list(head.parameters()) == []
        assert head.w.shape == (1, 0)
        assert "w" in head.state_dict()  # a buffer: old checkpoints load
        head.double()
        assert head(torch.rand(2, 3)).dtype == torch.float64


def test_factory_kwargs_build_in_place():
    head = RPNHead(784, 64, expansion="taylor", reconciliation="masking", device="meta")
    assert head.w.is_meta
    assert head.w.shape == (1, 64 * (784 + 784**2))
    assert head.reconciliation.mask.is_meta
    model = RPN.from_dims([4, 3, 2], expansion="taylor", reconciliation="lorr",
                          remainder="linear", bias=True, dtype=torch.float64)
    assert {t.dtype for t in model.state_dict().values()} == {torch.float64}
    layer = RPNLayer(4, 3, num_heads=2, fusion="linear", dtype=torch.float64,
                     reconciliation="random_matrix_adaption")
    assert {t.dtype for t in layer.state_dict().values()} == {torch.float64}


def test_reset_parameters_on_every_owner():
    torch.manual_seed(0)
    model = RPN.from_dims([3, 4, 2], expansion="taylor", reconciliation="lorr",
                          remainder="linear", heads=2, head_fusion="linear", bias=True)
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)
    model.reset_parameters()
    after = model.state_dict()
    for key, value in after.items():
        if key.endswith("bias") and "remainder" not in key:
            assert torch.equal(value, torch.zeros_like(value)), key
        elif "fusion_linear" in key:
            torch.testing.assert_close(value, before[key])  # back to the mean of the heads
        else:
            assert not torch.equal(value, torch.full_like(value, 0.5)), key
    rem = rpnkit.build_remainder("linear", bias=True)
    rem.bind(3, 2)
    with torch.no_grad():
        rem.weight.fill_(9.0)
    rem.reset_parameters()
    assert rem.weight.abs().max() <= 1 / 3**0.5


def test_inputs_of_any_leading_shape():
    head = RPNHead(3, 2, expansion="taylor", reconciliation="lorr")
    x = torch.rand(4, 5, 3)
    y = head(x)
    assert y.shape == (4, 5, 2)
    torch.testing.assert_close(y.reshape(20, 2), head(x.reshape(20, 3)))
    model = RPN.from_dims([3, 4, 2])
    assert model(torch.rand(3)).shape == (2,)
    assert RPN.from_dims([6, 2])(torch.rand(5, 2, 3)).shape == (5, 2)  # images: flattened


def test_print_is_compact_and_names_the_components():
    model = RPN.from_dims([3, 4, 2], expansion="taylor", reconciliation="lorr")
    text = repr(model)
    assert "ModuleList()" not in text
    assert text.count("(κ): Taylor") == 2
    assert "(ψ): LowRank(r=2)" in text
    assert "(π): ZeroRemainder" in text
    assert "contraction" not in text
    assert "path='lowrank-bilinear'" in text


def test_list_components_is_sorted_and_filterable():
    allc = rpnkit.list_components()
    for names in allc.values():
        assert names == sorted(names)
    assert rpnkit.list_components("expansion", "*rbf*") == ["gaussian_rbf",
                                                              "inverse_quadratic_rbf"]
    assert rpnkit.list_components("reconciliation", "lphm") == ["dual_lphm", "lphm"]
    with pytest.raises(UnknownNameError, match="did you mean 'expansion'"):
        rpnkit.list_components("expansions")


def test_plan_is_the_stored_plan():
    head = RPNHead(5, 4, expansion="taylor", reconciliation="hm",
                   reconciliation_params={"p": 2, "q": 6})
    assert head.plan().splitlines()[0] == f"path: {head.contraction.path}"
    assert {"k0_rows", "k0_gslot"} <= {n for n, _ in head.contraction.named_buffers()}
    assert "k0_rows" not in head.state_dict()  # non-persistent: derived from the sizes


def test_index_tables_follow_to():
    head = RPNHead(4, 3, expansion={"name": "taylor", "d": 3, "symmetric": True},
                   reconciliation="lorr")
    bufs = dict(head.named_buffers())
    assert "contraction.quad1_src" in bufs  # degree 2 under lorr: R's rows folded (quadratic-fold)
    assert "contraction.sym2_dest" in bufs  # degree 3: the unique-monomial tables
    assert "expansion.monomials_2" in bufs
    head.to(torch.float64)
    after = dict(head.named_buffers())
    for name in ("contraction.quad1_src", "contraction.quad1_dest", "contraction.sym2_src",
                 "contraction.sym2_low"):
        assert after[name].dtype == torch.long  # index tables stay integer


@pytest.mark.parametrize(("rec", "rp"), [("lorr", {}), ("hm", {"p": 2, "q": 6}),
                                         ("identity", {}), ("one", {})])
def test_torch_export(rec, rp):
    head = RPNHead(5, 4, expansion="taylor", reconciliation=rec, reconciliation_params=rp).double()
    x = torch.rand(3, 5, dtype=torch.float64)
    ep = torch.export.export(head, (x,))
    torch.testing.assert_close(ep.module()(x), head(x), rtol=1e-12, atol=1e-12)
