"""Module specs used for pre/post-processing, remainder activations and output modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rpnkit.errors import ConfigurationError, UnknownNameError
from rpnkit.modules import Deferred, apply_list, bind_module_list, build_module, build_module_list


def test_build_module_forms():
    assert isinstance(build_module("relu"), nn.ReLU)
    lrelu = build_module({"name": "leaky_relu", "negative_slope": 0.2})
    assert lrelu.negative_slope == 0.2
    mod = nn.Tanh()
    assert build_module(mod) is mod
    assert isinstance(build_module("softmax"), nn.Softmax)
    deferred = build_module({"name": "layer_norm", "eps": 1e-3})
    assert isinstance(deferred, Deferred)
    assert "unbound" in repr(deferred)


def test_build_module_errors():
    with pytest.raises(ConfigurationError, match="'name' key"):
        build_module({"negative_slope": 0.2})
    with pytest.raises(ConfigurationError, match="cannot build a module"):
        build_module(3)
    with pytest.raises(ConfigurationError, match="bad parameters"):
        build_module({"name": "relu", "slope": 1})
    with pytest.raises(UnknownNameError, match="did you mean 'gelu'"):
        build_module("gleu")
    with pytest.raises(ConfigurationError, match="expected a list of modules"):
        build_module_list(3)


def test_lists_bind_and_apply():
    mods = build_module_list(["tanh", {"name": "layer_norm", "eps": 1e-3}, nn.Dropout(0.0)])
    assert isinstance(mods[1], Deferred)
    bind_module_list(mods, 5)
    assert isinstance(mods[1], nn.LayerNorm)
    assert mods[1].eps == 1e-3
    assert mods[1].normalized_shape == (5,)
    x = torch.randn(3, 5)
    torch.testing.assert_close(apply_list(mods, x), nn.functional.layer_norm(torch.tanh(x), (5,), eps=1e-3))
    assert len(build_module_list(None)) == 0
    assert len(build_module_list(nn.ModuleList([nn.ReLU(), nn.Tanh()]))) == 2
    assert len(build_module_list(nn.Sequential(nn.ReLU()))) == 1
