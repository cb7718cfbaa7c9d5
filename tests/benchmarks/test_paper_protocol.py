"""The paper-protocol benchmark's seed-batched trainer follows the training engine exactly."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
PP = pytest.importorskip("paper_protocol")

from rpnkit.training import fit  # noqa: E402


@pytest.mark.parametrize("kind", ["elementary", "composite"])
def test_paper_parameter_counts(kind):
    counts = PP.check_paper_params(kind)
    assert counts == PP.PAPER_PARAMS[kind]


def test_feynman_counts_add_linear_remainder():
    counts = PP.check_paper_params("feynman")
    assert counts["RPN-Ext"] == 81
    assert counts["MLP"] == 151
    assert counts["KAN"] == 150


def test_feynman_first_layer_grid_follows_raw_ranges():
    assert PP.input_range("feynman", "I.6.2") == (1.0, 3.0)
    assert PP.input_range("elementary", "E.0") is None


@pytest.mark.parametrize("name", ["RPN-Ext", "KAN", "MLP"])
def test_vmapped_seeds_follow_the_engine(name):
    """Each seed of the batched run (the reference recipe: AdamW, ExponentialLR per epoch,
    shuffled batches of 100) has the validation curve the engine gives that seed alone."""
    kind, eq, seeds, epochs = "composite", "C.1", [0, 3], 4
    x, y = PP.seed_data(kind, eq, seeds, torch.float64)
    build = PP.builders(kind, 2, None)
    curves = PP.train_seeds([build[name](s) for s in seeds], x, y, 900, 100, epochs, seeds=seeds)
    for j, s in enumerate(seeds):
        tr, va = slice(0, 900), slice(900, 1000)
        bundle = {"train": (x[j, tr].numpy(), y[j, tr].numpy()), "val": (x[j, va].numpy(), y[j, va].numpy())}
        cfg = {"epochs": epochs, "batch_size": 100, "loss": "mse", "dtype": "float64",
               "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4},
               "scheduler": {"name": "exponential", "gamma": 0.999}}
        res = fit(build[name](s), bundle, cfg, seed=s)
        engine = np.array([h["val_mse"] for h in res.history])
        np.testing.assert_allclose(curves["val"][1:, j], engine, rtol=1e-9, atol=1e-12)


def test_lbfgs_column_improves_on_init():
    kind, eq = "elementary", "E.5"
    x, y = PP.seed_data(kind, eq, [0], torch.float64)
    net = PP.builders(kind, 2, None)["KAN-LBFGS"](0)
    c = PP.train_lbfgs(net, x[0], y[0], 900, 100, steps=3)
    assert c["test"].shape == (4, 1)
    assert c["train"][-1, 0] < c["train"][0, 0]


def test_summary_rules():
    val = np.array([[9.0], [3.0], [1.0], [2.0]])
    test = np.array([[9.0], [4.0], [5.0], [0.5]])
    r = PP.summarise({"val": val, "test": test, "train": val}, 0)
    assert r["final"] == 0.5
    assert r["best_val"] == 5.0
    assert r["best_val_epoch"] == 2
    assert r["best_test"] == 0.5
    assert r["best_test_epoch"] == 3
