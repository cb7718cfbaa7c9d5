from __future__ import annotations

import copy

import pytest

BASE = {
    "seed": 1,
    "device": "cpu",
    "data": {
        "name": "function",
        "expression": "sin(3*x0) * x1 + x1**2",
        "ranges": [[0, 1], [0, 1]],
        "n_samples": 300,
        "split": {"train": 0.6, "val": 0.2, "test": 0.2},
    },
    "model": {
        "dims": [2, 2, 1],
        "expansion": {"name": "extended", "expansions": [{"name": "bspline"}, {"name": "taylor", "d": 2}]},
        "reconciliation": {"name": "lorr", "r": 1},
        "remainder": {"name": "zero"},
    },
    "train": {"epochs": 30, "optimizer": {"name": "adam", "lr": 0.02}, "scheduler": "none", "loss": "mse"},
}


@pytest.fixture
def base_config():
    return copy.deepcopy(BASE)
