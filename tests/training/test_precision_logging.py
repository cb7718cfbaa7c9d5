"""Mixed precision, compile and per-epoch logs of the one training loop."""

from __future__ import annotations

import csv

import pytest
import torch

import rpnkit
from rpnkit.config import TrainConfig
from rpnkit.training import fit


def _data(n: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g) * 2 - 1
    y = (x[:, :1] * x[:, 1:2] + torch.sin(x[:, 2:3])).contiguous()
    return {"train": (x[:192], y[:192]), "val": (x[192:224], y[192:224]), "test": (x[224:], y[224:])}


def _model():
    torch.manual_seed(0)
    return rpnkit.RPN.from_dims([3, 8, 1], expansion="taylor", reconciliation="lorr",
                                remainder="linear")


def _cfg(**kw):
    return {"epochs": 15, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.02}, **kw}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_close_to_fp32(precision):
    ref = fit(_model(), _data(), _cfg())
    res = fit(_model(), _data(), _cfg(precision=precision))
    assert res.extra["precision"] == precision
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in res.history)
    assert res.history[-1]["train_loss"] < 0.5 * res.history[0]["train_loss"]
    assert res.final["test"]["mse"] == pytest.approx(ref.final["test"]["mse"], rel=0.5, abs=5e-3)


def test_precision_options_are_validated():
    with pytest.raises(ValueError, match="needs dtype float32"):
        TrainConfig(precision="bf16", dtype="float64")
    with pytest.raises(ValueError, match="lbfgs"):
        TrainConfig(precision="fp16", optimizer={"name": "lbfgs"})
    with pytest.raises(ValueError, match="fp32, bf16 or fp16"):
        TrainConfig(precision="int8")
    with pytest.raises(ValueError, match="tensorboard"):
        TrainConfig(logging="wandb")


@pytest.mark.slow
def test_compile_option_matches_eager():
    ref = fit(_model(), _data(), _cfg(epochs=3, dtype="float64"))
    res = fit(_model(), _data(), _cfg(epochs=3, dtype="float64", compile=True))
    assert res.extra["compile"] is True
    assert res.final["test"]["mse"] == pytest.approx(ref.final["test"]["mse"], rel=1e-9)


def test_run_folder_has_a_per_epoch_csv(tmp_path):
    from rpnkit.config import parse_config
    from rpnkit.training import prepare, train_run

    cfg = parse_config({
        "data": {"name": "function", "expression": "x0*x1", "ranges": [[-1, 1], [-1, 1]],
                 "n_samples": 200, "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
        "model": {"dims": [2, 3, 1], "expansion": "taylor"},
        "train": {"epochs": 4},
        "plots": False,
    })
    train_run(prepare(cfg), tmp_path / "run")
    with open(tmp_path / "run" / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"train_loss", "lr", "val_loss"} <= set(rows[0])
    assert all(float(r["train_loss"]) > 0 for r in rows)
