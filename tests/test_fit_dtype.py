"""rpnkit.fit keeps the dtype of the model it is given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rpnkit
from rpnkit.config import TrainConfig
from rpnkit.errors import ConfigurationError
from rpnkit.models.classic import KAN

pytestmark = pytest.mark.usefixtures("one_thread")


def _data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (64, 2))
    return x, (np.sin(2 * x[:, 0]) + x[:, 1] ** 2)[:, None]


def _params(model):
    return [p for p in model.parameters() if p.is_floating_point()]


@pytest.mark.parametrize("config", [None, {"epochs": 3}, TrainConfig(epochs=3)],
                         ids=["none", "mapping", "trainconfig"])
def test_float64_model_stays_float64_and_trains_in_float64(config):
    """Before: the default train dtype float32 cast the user's float64 model in place."""
    x, y = _data()
    torch.manual_seed(0)
    model = KAN([2, 1]).double()
    w0 = model.layers[0].heads[0].w.detach().clone()
    rpnkit.fit(model, x, y, config)
    ps = _params(model)
    assert all(p.dtype == torch.float64 for p in ps)
    w = model.layers[0].heads[0].w.detach()
    assert not torch.equal(w, w0)  # trained
    # trained in float64: the update is not representable in float32
    assert not torch.equal(w, w.float().double())
    assert model(torch.as_tensor(x)).dtype == torch.float64


def test_float32_model_stays_float32_and_an_explicit_dtype_wins():
    x, y = _data()
    torch.manual_seed(0)
    model = KAN([2, 1])
    rpnkit.fit(model, x, y, {"epochs": 2})
    assert all(p.dtype == torch.float32 for p in _params(model))
    rpnkit.fit(model, x, y, {"epochs": 2, "dtype": "float64"})  # asked for: cast in place
    assert all(p.dtype == torch.float64 for p in _params(model))
    rpnkit.fit(model, x, y, TrainConfig(epochs=2, dtype="float32"))
    assert all(p.dtype == torch.float32 for p in _params(model))


def test_half_model_is_refused_with_the_way_out():
    x, y = _data()
    model = KAN([2, 1]).to(torch.bfloat16)
    with pytest.raises(ConfigurationError, match=r"torch\.bfloat16.*\.float\(\)"):
        rpnkit.fit(model, x, y, {"epochs": 1})
