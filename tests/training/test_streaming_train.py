"""Training on streamed data (``data.stream: true``): same results as in memory semantics,
for any number of workers, processes and interruptions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import rpnkit
from rpnkit.data.streaming import open_stream
from rpnkit.training import InterruptFlag, TrainingInterrupted, fit


@pytest.fixture
def stream(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(3000, 2))
    y = (x[:, 0] * x[:, 1] + np.sin(x[:, 0]))[:, None]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    return open_stream("npy", {"x": str(tmp_path / "x.npy"), "y": str(tmp_path / "y.npy"),
                               "block_rows": 256},
                       {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)


def _model():
    torch.manual_seed(0)
    return rpnkit.RPN.from_dims([2, 4, 1], expansion="taylor", reconciliation="lorr",
                                remainder="linear")


CFG = {"epochs": 3, "batch_size": 100, "dtype": "float64", "optimizer": {"name": "adam", "lr": 0.02}}


def test_streamed_training_learns_and_is_worker_independent(stream):
    a = fit(_model(), stream, CFG, seed=1)
    b = fit(_model(), stream, {**CFG, "num_workers": 2}, seed=1)
    assert a.final["test"]["r2"] > 0.9
    assert a.final == b.final
    assert a.history[0]["train_loss"] > a.history[-1]["train_loss"]


def test_streamed_training_resumes_mid_epoch_exactly(stream, tmp_path):
    ref = fit(_model(), stream, CFG, seed=1)
    flag = InterruptFlag()
    model = _model()

    class Trip(nn.Module):  # raises the interrupt flag during the 30th training batch
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x):
            if self.training:
                self.calls += 1
                if self.calls == 30:
                    flag.set()
            return self.inner(x)

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(TrainingInterrupted):
        fit(Trip(model), stream, CFG, seed=1, interrupt=flag, checkpoint_path=ckpt)
    state = torch.load(ckpt, weights_only=True)
    assert state["batch"] > 0  # mid-epoch
    again = _model()
    res = fit(Trip(again), stream, CFG, seed=1, resume=state)
    for split in ("train", "val", "test"):
        for k, v in ref.final[split].items():
            assert res.final[split][k] == pytest.approx(v, rel=1e-12, abs=1e-15)
