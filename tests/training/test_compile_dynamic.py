"""compile: true in the engine compiles once per grad mode: the last partial batch of an
epoch and the evaluation of splits of other sizes reuse the graph (dynamic batch
dimension) instead of recompiling; results equal eager."""

from __future__ import annotations

import functools

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import rpnkit
from rpnkit.training import engine, fit


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(250, 2, generator=g, dtype=torch.float64) * 2 - 1
    y = (x[:, :1] * x[:, 1:2]).contiguous()
    # 170 training rows at batch 64: batches of 64, 64 and 42; val and test have 40 rows
    return {"train": (x[:170], y[:170]), "val": (x[170:210], y[170:210]), "test": (x[210:], y[210:])}


def _model():
    torch.manual_seed(0)
    return rpnkit.RPN.from_dims([2, 3, 1], expansion="taylor", reconciliation="lorr",
                                reconciliation_params={"r": 1}, remainder="linear")


def test_compiled_fit_does_not_recompile_on_partial_batches_or_eval(monkeypatch):
    # the "eager" backend: dynamo's graph capture and guards without code generation
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    cfg = {"epochs": 2, "batch_size": 64, "dtype": "float64", "optimizer": {"name": "adam"}}
    ref = fit(_model(), _data(), cfg)
    res = fit(_model(), _data(), {**cfg, "compile": True})
    # one graph with gradients (training) and one without (evaluation); before: the partial
    # batch and each new evaluation size compiled again
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
    assert res.final["test"]["mse"] == pytest.approx(ref.final["test"]["mse"], rel=1e-9)
    assert res.history[-1]["train_loss"] == pytest.approx(ref.history[-1]["train_loss"], rel=1e-9)


def test_dynamic_batch_wrapper_marks_the_batch_dimension():
    calls = []

    def fake(x):
        calls.append(getattr(x, "_dynamo_weak_dynamic_indices", set()))
        return x

    fwd = engine._dynamic_batch(fake)
    x = torch.zeros(5, 3)
    assert fwd(x) is x
    assert 0 in calls[0]
    assert fwd.compiled is fake
