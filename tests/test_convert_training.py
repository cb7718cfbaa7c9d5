"""Converted reference configs whose data is here train (quick mode) with the reference's
parameter count; ``data.labels_as_targets`` (the reference fits iris / Pima / banknote class
labels with MSE).

Data available without a download: the bundled tabular sets (iris from scikit-learn, Pima and
banknote shipped) and the generated function-fitting sets. MNIST (a download), CIFAR-10, IMDB,
AG News and SST-2 (bag-of-words csv exports the user provides) are not trained here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import rpnkit
from rpnkit.cli import main
from rpnkit.config import parse_config
from rpnkit.data import load_data
from rpnkit.errors import ConfigurationError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "reference"

#: example -> (parameter count the reference prints, quick-mode overrides)
QUICK = {
    "iris": (8, []),
    "diabetes": (44, []),
    "banknote": (14, []),
    "composite": (2441, ["data.n_samples=200"]),
}


@pytest.mark.parametrize("stem", list(QUICK))
def test_converted_config_trains_with_the_reference_count(stem, tmp_path, capsys):
    count, extra = QUICK[stem]
    out = tmp_path / "run"
    args = ["train", str(EXAMPLES / f"{stem}.yaml"), "--out", str(out), "--quiet",
            "--set", "train.epochs=2", "--set", "device=cpu"]
    for s in extra:
        args += ["--set", s]
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert np.isfinite(result["test"]["mse"])
    run = rpnkit.load_run(out)
    assert run.task == "regression"
    assert sum(p.numel() for p in run.model.parameters()) == count


@pytest.mark.parametrize("stem", ["iris", "diabetes", "banknote"])
def test_tabular_examples_fit_labels_as_targets(stem):
    cfg = yaml.safe_load((EXAMPLES / f"{stem}.yaml").read_text())
    assert cfg["data"]["labels_as_targets"] is True
    assert cfg["train"]["loss"] == "mse"
    assert parse_config(cfg).data.labels_as_targets


def test_labels_as_targets_gives_the_class_index_as_one_float_target():
    cls = load_data("iris", split={"train": 0.9, "val": 0.0, "test": 0.1}, seed=3)
    reg = load_data("iris", split={"train": 0.9, "val": 0.0, "test": 0.1}, seed=3,
                    labels_as_targets=True)
    assert cls.task == "classification"
    assert reg.task == "regression"
    assert reg.classes is None
    assert reg.n_targets == 1
    for split in ("train", "test"):
        assert reg.y[split].dtype == np.float64
        assert reg.y[split].shape == (cls.y[split].shape[0], 1)
        np.testing.assert_array_equal(reg.y[split][:, 0], cls.y[split])  # same rows, same order
        np.testing.assert_array_equal(reg.x[split], cls.x[split])
    assert set(np.unique(reg.y["train"])) == {0.0, 1.0, 2.0}


def test_labels_as_targets_refused_for_regression_data_and_streams():
    with pytest.raises(ConfigurationError, match=r"labels_as_targets applies to classification "
                                                 r"data, but dataset 'elementary' is regression"):
        load_data("elementary", {"equation": "E.0", "n_samples": 50}, labels_as_targets=True)
    with pytest.raises(ConfigurationError, match=r"labels_as_targets applies to in-memory data"):
        parse_config({"data": {"name": "npy", "stream": True, "path": "x.npy",
                               "labels_as_targets": True},
                      "model": {"dims": [2, 1]}})
