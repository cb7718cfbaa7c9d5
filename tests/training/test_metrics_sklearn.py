"""rpnkit's metrics equal scikit-learn's (sklearn.metrics) on every task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from rpnkit.errors import ConfigurationError
from rpnkit.training import compute_metrics, evaluate
from rpnkit.training.components import HIGHER_IS_BETTER, METRICS, check_metrics
from rpnkit.training.engine import as_bundle

REG = ["mse", "mae", "r2"]
CLS = ["accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted", "log_loss"]


def _reg(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return compute_metrics(REG, "regression", torch.as_tensor(p), torch.as_tensor(y), None)


@pytest.mark.parametrize("k", [1, 3])
def test_regression_metrics_equal_sklearn(k):
    rng = np.random.default_rng(k)
    # outputs of very different scales: a pooled R^2 differs from the uniform average
    y = rng.normal(size=(40, k)) * np.array([1.0, 100.0, 0.01])[:k] + 5
    p = y + rng.normal(size=(40, k)) * np.array([0.5, 10.0, 0.02])[:k]
    got = _reg(y, p)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y, p), rel=1e-12)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-12)
    assert got["r2"] == pytest.approx(skm.r2_score(y, p), rel=1e-12)
    assert got["r2"] == pytest.approx(skm.r2_score(y, p, multioutput="uniform_average"), rel=1e-12)


def test_multi_output_r2_is_the_uniform_average_not_pooled():
    y = np.array([[0.0, 0.0], [1.0, 100.0], [2.0, 200.0], [3.0, 300.0]])
    p = y + np.array([[0.5, 1.0], [-0.5, -1.0], [0.5, 1.0], [-0.5, -1.0]])
    pooled = 1 - ((y - p) ** 2).sum() / ((y - y.mean(axis=0)) ** 2).sum()
    got = _reg(y, p)["r2"]
    assert got == pytest.approx(skm.r2_score(y, p), rel=1e-12)
    assert abs(got - pooled) > 0.05  # the old, pooled value was not scikit-learn's


def test_r2_edge_cases_equal_sklearn():
    const = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    exact = const.copy()
    off = const + np.array([[0.1, 0.0], [0.0, 0.1], [0.0, -0.1]])
    for p in (exact, off):  # a constant target column: 1 when exact, else 0 (force_finite)
        assert _reg(const, p)["r2"] == pytest.approx(skm.r2_score(const, p), rel=1e-12)
    with pytest.warns(skm._regression.UndefinedMetricWarning):
        ref = skm.r2_score([[1.0]], [[2.0]])
    assert math.isnan(ref)
    assert math.isnan(_reg(np.array([[1.0]]), np.array([[2.0]]))["r2"])


def _cls(y: np.ndarray, logits: np.ndarray, names=CLS) -> dict[str, float]:
    return compute_metrics(names, "classification", torch.as_tensor(logits), torch.as_tensor(y),
                           None)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = 5
    y = rng.integers(0, k - 1, size=60)  # class 4 never true; imbalanced predictions
    logits = rng.normal(size=(60, k)) * 2
    logits[np.arange(60), y] += rng.uniform(0, 2.5, size=60)
    pred = logits.argmax(axis=1)
    got = _cls(y, logits)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), rel=1e-12)
    for avg in ("macro", "micro", "weighted"):
        assert got[f"f1_{avg}"] == pytest.approx(skm.f1_score(y, pred, average=avg), rel=1e-12)
    assert got["f1"] == got["f1_macro"]
    want = skm.log_loss(y, _softmax(logits), labels=list(range(k)))
    assert got["log_loss"] == pytest.approx(want, rel=1e-10)


def test_f1_with_classes_never_predicted_equals_sklearn():
    y = np.array([0, 0, 1, 1, 2, 2, 3])
    pred = np.array([0, 0, 0, 0, 2, 2, 2])  # 1 and 3 never predicted: F1 0 for them
    logits = np.eye(4)[pred] * 3.0
    got = _cls(y, logits, ["f1_macro", "f1_micro", "f1_weighted"])
    for avg in ("macro", "micro", "weighted"):
        with np.errstate(all="ignore"):
            want = skm.f1_score(y, pred, average=avg, zero_division=0)
        assert got[f"f1_{avg}"] == pytest.approx(want, rel=1e-12)


def test_binary_one_logit_metrics_equal_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=50)
    z = rng.normal(size=50) + (2 * y - 1) * 0.8
    pred = (z > 0).astype(int)
    got = _cls(y, z[:, None])
    p1 = 1 / (1 + np.exp(-z))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), rel=1e-12)
    for avg in ("macro", "micro", "weighted"):
        assert got[f"f1_{avg}"] == pytest.approx(skm.f1_score(y, pred, average=avg), rel=1e-12)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, p1), rel=1e-10)


def test_log_loss_clips_like_sklearn():
    y = np.array([0, 1, 2])
    logits = np.array([[-800.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 1.0]])  # p(true)≈0
    got = _cls(y, logits, ["log_loss"])["log_loss"]
    want = skm.log_loss(y, _softmax(logits), labels=[0, 1, 2])
    assert math.isfinite(got)
    assert got == pytest.approx(want, rel=1e-10)


def test_evaluate_reports_sklearn_metrics_in_the_targets_scale():
    """Through evaluate: standardised regression targets are mapped back first."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2))
    y = np.column_stack([x[:, 0] * 3 + 1, x[:, 1] * 0.01])
    bundle = as_bundle({"train": (x, y), "test": (x, y)})
    bundle.y_mean, bundle.y_std = y.mean(axis=0), y.std(axis=0)
    bundle.y = {k: (v - bundle.y_mean) / bundle.y_std for k, v in bundle.y.items()}
    model = torch.nn.Linear(2, 2).double()
    got = evaluate(model, bundle, "test", "mse", REG, dtype=torch.float64)
    with torch.no_grad():
        p = model(torch.as_tensor(x)).numpy() * bundle.y_std + bundle.y_mean
    assert got["r2"] == pytest.approx(skm.r2_score(y, p), rel=1e-10)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-10)


def test_metric_names_and_directions():
    assert check_metrics(["f1_weighted", "f1_micro", "accuracy"], "classification") == [
        "f1_weighted", "f1_micro", "accuracy"]
    with pytest.raises(ConfigurationError, match="does not apply to regression"):
        check_metrics(["f1_macro"], "regression")
    assert {"f1_macro", "f1_micro", "f1_weighted"} <= set(METRICS)
    assert "macro" in METRICS["f1"]
    assert {"r2", "accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted"} == HIGHER_IS_BETTER


def test_monitor_an_f1_average_selects_the_highest(one_thread):
    """monitor: f1_weighted is higher-is-better: the best epoch has the largest value."""
    from rpnkit import fit
    from rpnkit.models import build_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    y = (x[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(np.int64) + (x[:, 1] > 0.7)
    data = {"train": (x[:80], y[:80]), "val": (x[80:], y[80:])}
    torch.manual_seed(0)
    model = build_model("rpn", dims=[2, 3], expansion="taylor")
    res = fit(model, data, None, {"epochs": 12, "metrics": ["f1_weighted", "accuracy"],
                                  "monitor": "f1_weighted", "optimizer": {"name": "adam",
                                                                          "lr": 0.05}})
    values = [h["val_f1_weighted"] for h in res.history]
    assert res.best["value"] == max(values)
    assert res.best["epoch"] == values.index(max(values)) + 1
