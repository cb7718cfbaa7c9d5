"""RPN 2 through the front doors: ``RPN.from_dims`` (and its per-layer overrides) and the YAML
``model:`` section of the generic ``rpn`` model build interdependent layers by name; fusion
objects by name where the layer takes them; unknown names give the registry's error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import rpnkit
from rpnkit import RPN, RPNLayer
from rpnkit.config import ModelConfig, parse_config
from rpnkit.errors import ConfigurationError, UnknownNameError
from rpnkit.interdependence import InterdependentHead, InterdependentLayer
from rpnkit.models import build_model
from rpnkit.spec import HEAD_FIELDS, LAYER_FIELDS
from rpnkit.training.run import build_from_config, prepare, train_run

D64 = torch.float64
EDGES = [[0, 1], [1, 2], [2, 3], [3, 4], [0, 4], [1, 5]]
CHAIN = {"name": "chain", "length": 5, "hops": 2, "decay": 0.7}


def test_interdependence_is_a_layer_option():
    # one head type: ξ is a head option (every head of the layer gets its copy), reached by
    # name wherever layer options are (from_dims, per-layer overrides, configs)
    assert {"interdependence", "interdependence_params"} <= set(HEAD_FIELDS)
    assert not {"interdependence", "interdependence_params"} & set(LAYER_FIELDS)
    assert {"interdependence", "interdependence_params"} <= set(ModelConfig.model_fields)


def test_from_dims_builds_interdependent_layers_equal_to_hand_built_ones():
    kw = {"expansion": "taylor", "reconciliation": "lorr", "reconciliation_params": {"r": 2},
          "bias": True, "seed": 3}
    torch.manual_seed(0)
    model = RPN.from_dims([3, 4, 2], interdependence=CHAIN, heads=2, head_fusion="mean",
                          activation="tanh", dtype=D64, **kw)
    assert [type(layer) for layer in model.layers] == [InterdependentLayer] * 2
    assert model.structured
    assert model.dims == [3, 4, 2]
    assert model.dtype == D64
    xi = {k: v for k, v in CHAIN.items() if k != "name"}
    hand = nn.ModuleList([
        InterdependentLayer(3, 4, fusion="mean", num_heads=2, output="tanh", interdependence="chain",
                            interdependence_params=xi, dtype=D64, **kw),
        InterdependentLayer(4, 2, fusion="mean", num_heads=2, interdependence="chain",
                            interdependence_params=xi, dtype=D64, **{**kw, "seed": 5}),
    ])
    hand.load_state_dict(model.layers.state_dict())  # same structure, same parameter names
    x = torch.randn(6, 5, 3, dtype=D64)  # 6 sequences of 5 tokens
    y = model(x)
    assert y.shape == (6, 5, 2)
    torch.testing.assert_close(y, hand[1](hand[0](x)), rtol=1e-12, atol=1e-12)
    torch.manual_seed(0)  # torch's generator draws w; the same seed rebuilds the same model
    again = RPN.from_dims([3, 4, 2], interdependence=CHAIN, heads=2, head_fusion="mean",
                          activation="tanh", dtype=D64, **kw)
    torch.testing.assert_close(again(x), y, rtol=0, atol=0)
    assert "ξ chain" in model.plan()


def test_from_dims_graph_layer_is_a_gcn_layer():
    torch.manual_seed(0)
    model = RPN.from_dims([3, 2], interdependence="graph",
                          interdependence_params={"edges": EDGES, "num_nodes": 6}, bias=True,
                          dtype=D64)
    head = model.layers[0].heads[0]
    with torch.no_grad():
        head.bias.normal_()
    x = torch.randn(6, 3, dtype=D64)
    a_hat = head.xi.matrix(x)
    w = head.reconciled_weights().sum(0)
    torch.testing.assert_close(model(x), a_hat @ x @ w.T + head.bias, rtol=1e-12, atol=1e-12)
    assert head.reorder  # identity κ: Â (X W), the GCN order


def test_per_layer_overrides_mix_plain_and_interdependent_layers():
    model = RPN.from_dims(
        [3, 4, 4, 2], interdependence=CHAIN, expansion="taylor",
        layers=[None, {"interdependence": "attention", "interdependence_params": {"rank": 2}},
                {"interdependence": None, "head_fusion": "concat", "heads": 2}])
    kinds = [type(layer) for layer in model.layers]
    assert kinds == [InterdependentLayer, InterdependentLayer, RPNLayer]
    assert model.layers[0].heads[0].xi.registry_name == "chain"
    # a new ξ name drops the base's ξ parameters (length, hops, decay are chain's)
    assert model.layers[1].heads[0].xi.registry_name == "attention"
    assert model.layers[1].heads[0].xi.rank == 2
    assert model(torch.randn(2, 5, 3)).shape == (2, 5, 2)
    plain = RPN.from_dims([3, 2], layers=[{"interdependence": "identity"}])
    assert isinstance(plain.layers[0], InterdependentLayer)


def test_fusion_objects_by_name_in_interdependent_layers():
    torch.manual_seed(0)
    model = RPN.from_dims([3, 4], interdependence="identity", heads=2,
                          head_fusion={"name": "weighted", "weights": [0.25, 0.75]}, channels=3,
                          channel_fusion="max", head_output="relu", output="layer_norm", dtype=D64)
    layer = model.layers[0]
    assert layer.fusion == "weighted"
    assert layer.fuser.registry_name == "weighted"
    assert all(h.channel_fusion == "max" and h.channels == 3 for h in layer.heads)
    assert all(p.dtype == D64 for p in model.parameters())  # layer_norm too (factory dtype)
    x = torch.randn(5, 3, dtype=D64)
    parts = [torch.relu(torch.stack([x @ w.T for w in h.reconciled_weights()]).amax(0))
             for h in layer.heads]
    want = nn.functional.layer_norm(0.25 * parts[0] + 0.75 * parts[1], (4,),
                                    layer.output[0].weight, layer.output[0].bias,
                                    layer.output[0].eps)
    torch.testing.assert_close(model(x), want, rtol=1e-12, atol=1e-12)
    learned = RPN.from_dims([3, 4, 2], interdependence="identity", heads=2, head_fusion="learned")
    assert sum(p.numel() for n, p in learned.named_parameters() if "logits" in n) == 4


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"interdependence": "chian"}, UnknownNameError,
     r"unknown interdependence 'chian' \(did you mean 'chain'\?\); valid names: .*attention, .*chain"),
    ({"interdependence": {"name": "graph", "edgse": EDGES}}, ConfigurationError,
     r"unknown parameter 'edgse' for interdependence 'graph' \(did you mean 'edges'\?\)"),
    ({"interdependence": "identity", "head_fusion": "maxx"}, UnknownNameError,
     r"unknown fusion 'maxx' \(did you mean 'max'\?\); valid names: concat, learned, linear, max"),
    ({"interdependence": "identity", "channel_fusion": "learnd"}, UnknownNameError,
     r"did you mean 'learned'"),
    ({"head_fusion": "max"}, ConfigurationError,
     r"layer 0: head_fusion 'max' is a fusion object.*interdependence: identity.*sum, mean, "
     r"concat, linear"),
    ({"channel_fusion": "learned"}, ConfigurationError,
     r"layer 0: channel_fusion 'learned' is a fusion object.*one of sum, mean"),
    ({"head_fusion": "maxx"}, UnknownNameError,
     r"layer 0: head_fusion: unknown fusion 'maxx' \(did you mean 'max'\?\); valid names"),
    ({"interdepndence": "chain"}, ConfigurationError, r"did you mean 'interdependence'"),
])
def test_unknown_names_give_the_registry_error(options, error, match):
    with pytest.raises(error, match=match):
        RPN.from_dims([3, 2], **options)


def test_rpn_rejects_other_layers_by_name():
    with pytest.raises(ConfigurationError, match="expected RPNLayer or InterdependentLayer"):
        RPN([InterdependentHead(3, 2)])


def test_yaml_model_section_builds_interdependent_layers():
    cfg = parse_config({"data": {"name": "iris"}, "model": {
        "dims": [4, 6, 3], "expansion": {"name": "taylor", "d": 2}, "activation": "relu",
        "interdependence": {"name": "parameterised", "reconciliation": "lorr"},
        "heads": 2, "head_fusion": {"name": "weighted", "weights": [0.5, 0.5]},
        "channel_fusion": "max", "channels": 2,
        "layers": [None, {"interdependence": None, "head_fusion": "sum", "channel_fusion": "sum"}]}})
    mc = cfg.model
    assert mc.name == "rpn"
    assert mc.title() == "RPN [4, 6, 3] taylor/identity/zero ξ=parameterised"
    kw = mc.build_kwargs()
    assert kw["interdependence"] == {"name": "parameterised", "reconciliation": "lorr"}
    model = build_from_config(mc, seed=0, in_width=4, out_width=3)
    assert [type(layer) for layer in model.layers] == [InterdependentLayer, RPNLayer]
    assert model(torch.randn(5, 4)).shape == (5, 3)
    assert mc.to_dict()["interdependence"] == {"name": "parameterised", "reconciliation": "lorr"}
    plain = parse_config({"data": {"name": "iris"}, "model": {"dims": [4, 3]}}).model
    assert "interdependence" not in plain.build_kwargs()
    assert plain.title() == "RPN [4, 3] identity/identity/zero"


@pytest.mark.parametrize(("model", "match"), [
    ({"interdependence": "chian"}, r"model: unknown interdependence 'chian' \(did you mean "
                                   r"'chain'\?\); valid names: .*attention, .*chain, .*graph"),
    ({"interdependence": "identity", "head_fusion": "mx"}, r"model: unknown fusion 'mx'"),
    ({"head_fusion": "learned"}, r"model: RPN.from_dims: layer 0: head_fusion 'learned' is a "
                                 r"fusion object"),
])
def test_yaml_unknown_names_fail_before_training(model, match):
    cfg = parse_config({"data": {"name": "iris"}, "model": {"dims": [4, 3], **model}})
    with pytest.raises(ConfigurationError, match=match):
        build_from_config(cfg.model, seed=0, in_width=4, out_width=3)


@pytest.mark.parametrize("bad", [3, {"kernel": "rbf"}, ["chain"]])
def test_yaml_interdependence_must_be_a_name_or_mapping(bad):
    with pytest.raises(ConfigurationError, match="registry name or a mapping with a 'name' key"):
        parse_config({"data": {"name": "iris"}, "model": {"dims": [4, 3], "interdependence": bad}})


def test_train_an_interdependent_rpn_through_a_config(tmp_path):
    torch.set_num_threads(1)
    cfg = parse_config({
        "seed": 0, "data": {"name": "iris"},
        "model": {"dims": [4, 8, 3], "expansion": "taylor", "reconciliation": "lorr",
                  "activation": "relu", "interdependence": "parameterised", "heads": 2,
                  "head_fusion": "learned"},
        "train": {"epochs": 3, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}},
    })
    res = train_run(prepare(cfg), tmp_path / "run")
    assert np.isfinite(res.final["test"]["loss"])
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]


def test_list_components_and_builders_reach_the_new_kinds():
    comps = rpnkit.list_components()
    assert "chain" in comps["interdependence"]
    assert "learned" in comps["fusion"]
    assert rpnkit.list_components("interdependence", "graph*") == ["graph", "graph_pagerank"]
    assert rpnkit.list_components("fusion", "*ea*") == ["learned", "linear", "mean"]
    assert isinstance(rpnkit.build_interdependence("chain", length=4), rpnkit.interdependence.Interdependence)
    assert isinstance(rpnkit.build_fusion("max"), rpnkit.fusion.Fusion)
    with pytest.raises(UnknownNameError, match="did you mean 'fusion'"):
        rpnkit.list_components("fusions")


def test_model_summary_names_the_planned_paths_of_interdependent_heads():
    from rpnkit.cli import _model_summary

    model = build_model("rpn", dims=[3, 2], expansion="taylor", reconciliation="lorr",
                        interdependence="identity")
    lines = _model_summary("m", model)
    assert "path lowrank-bilinear" in lines[1]
