"""Model inputs: clear errors for non-tensors, warnings for inputs that overflow an
expansion, and one line with a suggestion when training diverges."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import rpnkit
from rpnkit.training import fit


def test_numpy_and_lists_get_a_clear_type_error():
    head = rpnkit.RPNHead(3, 2)
    for bad in (np.zeros((2, 3)), [[0.0, 1.0, 2.0]]):
        with pytest.raises(TypeError, match=r"torch.as_tensor"):
            head(bad)


def test_safe_ranges_are_documented_by_the_expansions():
    hyp = rpnkit.build_expansion("hyperbolic")
    assert hyp.safe_abs(torch.float32) == pytest.approx(88.72, abs=0.01)
    x = torch.tensor([[80.0], [100.0]])
    out = hyp(x)
    assert torch.isfinite(out[0]).all()
    assert not torch.isfinite(out[1]).all()  # beyond the documented range
    assert rpnkit.build_expansion("identity").safe_abs(torch.float32) is None
    tay = rpnkit.build_expansion("taylor", d=3)
    assert torch.isfinite(tay(torch.full((1, 2), tay.safe_abs(torch.float32) * 0.99))).all()


def test_training_warns_once_per_head_when_inputs_leave_the_range(caplog):
    torch.manual_seed(0)
    x = torch.randn(200, 2) * 150
    y = torch.zeros(200, 1)
    model = rpnkit.RPN.from_dims([2, 3, 1], expansion="hyperbolic")
    with caplog.at_level(logging.WARNING, logger="rpnkit"):
        res = fit(model, (x, y), {"epochs": 3})
    warned = [r.getMessage() for r in caplog.records if "sees inputs up to" in r.getMessage()]
    assert len(warned) == 1
    assert "layers.0.heads.0" in warned[0]
    assert "tanh" in warned[0]
    assert res.stopped["cause"] == "non_finite"
    diverged = [r.getMessage() for r in caplog.records if "NaN/inf in epoch" in r.getMessage()]
    assert diverged
    assert "grad_clip" in diverged[0]
    # bounded by a preprocess: no warning
    caplog.clear()
    ok = rpnkit.RPN.from_dims([2, 1], expansion="hyperbolic",
                              expansion_params={"preprocess": ["tanh"]})
    with caplog.at_level(logging.WARNING, logger="rpnkit"):
        fit(ok, (x, y), {"epochs": 2})
    assert not [r for r in caplog.records if "sees inputs up to" in r.getMessage()]
