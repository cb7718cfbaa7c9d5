"""scikit-learn contract of RPNClassifier / RPNRegressor."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_iris, load_wine, make_classification
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from rpnkit.sklearn import RPNClassifier, RPNRegressor

# check_estimator runs ~50 checks per estimator; a short training keeps it fast.
_FAST = {"max_epochs": 15, "lr": 0.1, "random_state": 0}

# Checks we knowingly do not pass, with the reason (none at present).
EXPECTED_FAILED: dict[str, str] = {}


def _expected_failed(estimator):
    return EXPECTED_FAILED


@parametrize_with_checks(
    [RPNClassifier(**_FAST), RPNRegressor(**_FAST), RPNClassifier(model="kan", **_FAST)],
    expected_failed_checks=_expected_failed,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_default_classifier_iris_cv():
    X, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), RPNClassifier(random_state=0))
    assert cross_val_score(pipe, X, y, cv=5).mean() >= 0.95


@pytest.mark.slow
def test_default_classifier_easy_datasets_cv():
    from sklearn.datasets import load_breast_cancer

    for loader in (load_iris, load_wine, load_breast_cancer):
        X, y = loader(return_X_y=True)
        pipe = make_pipeline(StandardScaler(), RPNClassifier(random_state=0))
        assert cross_val_score(pipe, X, y, cv=5).mean() >= 0.95


def test_string_labels_pandas_proba_and_pickle():
    pd = pytest.importorskip("pandas")
    X, y = make_classification(120, 5, n_informative=3, n_classes=3, random_state=0)
    labels = np.array(["cat", "dog", "emu"])[y]
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    clf = RPNClassifier(random_state=0, max_epochs=100).fit(df, pd.Series(labels))
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    assert list(clf.feature_names_in_) == list(df.columns)
    proba = clf.predict_proba(df)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(clf.predict(df)) <= set(labels)
    assert clf.decision_function(df).shape == (120, 3)
    assert clf.score(df, labels) > 0.8
    clf2 = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clf2.predict_proba(df), proba)
    c = clone(clf)
    assert c.get_params() == clf.get_params()
    assert not hasattr(c, "model_")


def test_binary_decision_function_and_hinge():
    X, y = make_classification(200, 4, random_state=1)
    y = np.where(y == 1, 5, -3)
    clf = RPNClassifier(random_state=0, loss="hinge", max_epochs=100).fit(X, y)
    d = clf.decision_function(X)
    assert d.shape == (200,)
    np.testing.assert_array_equal(clf.predict(X), np.where(d > 0, 5, -3))
    assert clf.score(X, y) > 0.85


def test_seed_reproducible_and_early_stopping():
    X, y = make_classification(300, 6, random_state=2)
    a = RPNClassifier(random_state=3, early_stopping=True, max_epochs=200).fit(X, y)
    b = RPNClassifier(random_state=3, early_stopping=True, max_epochs=200).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert len(a.validation_scores_) == a.n_iter_
    assert a.n_iter_ <= 200


@pytest.mark.parametrize("model", ["naive_bayes", "pgm", "kan", "kernel_svm", "mlp"])
def test_classic_models_by_name(model):
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    params = {"dims": (8,)} if model == "mlp" else {}
    clf = RPNClassifier(model=model, random_state=0, max_epochs=150, **params).fit(X, y)
    assert clf.score(X, y) > 0.85


def test_minibatch_and_regressor_multioutput():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    Y = np.stack([X[:, 0] * 2 + 1, X[:, 1] ** 2 - X[:, 2]], axis=1) * 10 + 100
    reg = RPNRegressor(random_state=0, optimizer="adam", batch_size=64, max_epochs=200).fit(X, Y)
    assert reg.predict(X).shape == (400, 2)
    assert reg.score(X, Y) > 0.95


def test_bad_hyperparameters():
    X, y = make_classification(50, 4, n_informative=2, random_state=0)
    with pytest.raises(ValueError, match="lr"):
        RPNClassifier(lr=-1).fit(X, y)
    with pytest.raises(ValueError, match="loss"):
        RPNClassifier(loss="nope").fit(X, y)
    with pytest.raises(ValueError, match="optimizer"):
        RPNClassifier(optimizer="sgd").fit(X, y)
    with pytest.raises(ValueError, match="one class"):
        RPNClassifier().fit(X, np.zeros(50))


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_device_fit_predict_pickle_symbolic():
    from sklearn.datasets import load_breast_cancer

    from rpnkit.symbolic import to_sympy

    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    clf = RPNClassifier(random_state=0, device="cuda").fit(X, y)
    assert next(clf.model_.parameters()).device.type == "cuda"
    assert clf.score(X, y) > 0.95
    proba = clf.predict_proba(X)
    clf2 = pickle.loads(pickle.dumps(clf))
    assert next(clf2.model_.parameters()).device.type == "cpu"
    np.testing.assert_allclose(clf2.predict_proba(X), proba, atol=1e-5)
    assert next(clf.model_.parameters()).device.type == "cuda"  # pickling did not move it
    rng = np.random.default_rng(0)
    Xr = rng.uniform(-2, 2, size=(20000, 2))
    yr = 1 + 2 * Xr[:, 0] - Xr[:, 1] ** 2
    reg = RPNRegressor(random_state=0, device="cuda", batch_size=2048, max_epochs=50).fit(Xr, yr)
    (expr,) = to_sympy(reg, tol=1e-2)
    assert reg.score(Xr, yr) > 0.99
    assert len(expr.free_symbols) == 2


def test_internal_standardisation_and_lbfgs():
    rng = np.random.default_rng(5)
    X = rng.uniform(0, 5, size=(300, 2)) * np.array([1.0, 1000.0]) + np.array([0.0, 5e4])
    y = X[:, 0] - 2e-3 * X[:, 1]
    reg = RPNRegressor(random_state=0).fit(X, y)
    np.testing.assert_allclose(reg.x_mean_, X.mean(axis=0))
    assert reg.score(X, y) > 0.999
    raw = RPNRegressor(random_state=0, standardize=False, optimizer="adam", max_epochs=20).fit(X, y)
    np.testing.assert_array_equal(raw.x_scale_, np.ones(2))


# --- one training loop, options, warnings ----------------------------------------------
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimators_train_through_the_engine(monkeypatch, tmp_path):
    import rpnkit.training.engine as engine

    calls = []
    real_fit = engine.fit

    def spy(model, data, cfg=None, **kw):
        calls.append((data, cfg, kw))
        return real_fit(model, data, cfg, **kw)

    monkeypatch.setattr(engine, "fit", spy)
    monkeypatch.chdir(tmp_path)
    X, y = make_classification(120, 4, random_state=0)
    RPNClassifier(random_state=0, max_epochs=5, early_stopping=True, loss="hinge").fit(X, y)
    RPNRegressor(random_state=0, max_epochs=5).fit(X, y.astype(float))
    assert len(calls) == 2
    (data, cfg, kw), (rdata, rcfg, _) = calls
    assert set(data) == {"train", "val"}
    assert kw["task"] == "classification"
    assert cfg["loss"] == "hinge"
    assert cfg["epochs"] == 5
    assert cfg["early_stopping"] == 20
    assert rcfg["optimizer"]["name"] == "lbfgs"
    assert rcfg["loss"] == "mse"
    assert set(rdata) == {"train"}
    assert list(tmp_path.iterdir()) == []  # no run folder, no checkpoint


def test_verbose_prints_every_epoch_like_scikit_learn(caplog, capsys):
    import logging

    X, y = make_classification(60, 3, n_informative=2, n_redundant=0, random_state=0)
    with caplog.at_level(logging.INFO, logger="rpnkit.sklearn"):
        RPNClassifier(random_state=0, max_epochs=4, n_iter_no_change=100, verbose=1).fit(X, y)
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 4
    assert printed[-1].startswith("Epoch 4, loss = ")
    lines = [r.getMessage() for r in caplog.records if r.name == "rpnkit.sklearn"]
    assert len(lines) == 4
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rpnkit.sklearn"):
        RPNClassifier(random_state=0, max_epochs=4).fit(X, y)
    assert not [r for r in caplog.records if r.name == "rpnkit.sklearn"]
    assert capsys.readouterr().out == ""


def test_convergence_warning_with_early_stopping():
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    X, y = make_classification(200, 4, random_state=0)
    with pytest.warns(ConvergenceWarning, match="max_epochs=3"):
        clf = RPNClassifier(random_state=0, max_epochs=3, early_stopping=True).fit(X, y)
    assert clf.n_iter_ == 3
    assert len(clf.validation_scores_) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        # converged: stopped early
        clf = RPNClassifier(random_state=0, max_epochs=300, early_stopping=True,
                            n_iter_no_change=2, tol=0.5).fit(X, y)
        assert clf.n_iter_ < 300
        # without early stopping there is nothing to warn about
        RPNClassifier(random_state=0, max_epochs=3).fit(X, y)


def test_early_stopping_restores_best_validation_weights():
    X, y = make_classification(300, 6, random_state=2)
    clf = RPNClassifier(random_state=3, early_stopping=True, max_epochs=60, n_iter_no_change=5,
                        lr=0.5).fit(X, y)
    assert clf.best_loss_ == pytest.approx(min(clf.validation_scores_))
    assert len(clf.loss_curve_) == clf.n_iter_


def test_model_with_component_options_is_an_error():
    X, y = load_iris(return_X_y=True)
    with pytest.raises(ValueError, match=r"expansion='fourier'.*ignored") as info:
        RPNClassifier(model="kan", expansion="fourier").fit(X, y)
    assert "model_params" in str(info.value)
    with pytest.raises(ValueError, match=r"bias=False, activation='relu'"):
        RPNRegressor(model="mlp", bias=False, activation="relu").fit(X, y.astype(float))
    with pytest.raises(ValueError, match="reconciliation_params"):
        RPNClassifier(model="kan", reconciliation_params={"r": 2}).fit(X, y)
    # the defaults and the model's own options are fine
    RPNClassifier(model="kan", model_params={"grid": 3}, max_epochs=2).fit(X, y)


def test_estimator_head_options_are_head_fields(monkeypatch):
    from rpnkit import RPN
    from rpnkit.sklearn import _HEAD_OPTIONS, _NON_HEAD_PARAMS
    from rpnkit.spec import HEAD_FIELDS

    for est in (RPNClassifier(), RPNRegressor()):
        head_params = set(est.get_params()) - set(_NON_HEAD_PARAMS)
        assert head_params <= set(HEAD_FIELDS), head_params - set(HEAD_FIELDS)
        assert head_params == set(_HEAD_OPTIONS)
    seen = {}
    real = RPN.from_dims.__func__

    def spy(cls, dims, **kw):
        seen.update(kw)
        return real(cls, dims, **kw)

    monkeypatch.setattr(RPN, "from_dims", classmethod(spy))
    X, y = load_iris(return_X_y=True)
    RPNClassifier(expansion="identity", bias=False, max_epochs=1).fit(X, y)
    # plan_batch: the training batch (the estimator's batch_size), not an estimator parameter
    assert set(seen) == {*_HEAD_OPTIONS, "activation", "plan_batch"}
    assert seen["expansion"] == "identity"
    assert seen["bias"] is False


# --------------------------------------------------------------- labels and sklearn's names
@pytest.mark.parametrize("kind", ["int32", "uint8", "int64", "bool", "str", "object"])
def test_classes_keep_the_labels_type_like_sklearn(kind):
    """classes_ and predict have the labels' dtype, as scikit-learn's LogisticRegression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score

    X, y = make_classification(60, 3, n_informative=2, n_redundant=0, n_classes=2,
                               random_state=0)
    labels = {"int32": y.astype(np.int32) + 3, "uint8": y.astype(np.uint8),
              "int64": y * 7 - 2, "bool": y.astype(bool),
              "str": np.array(["no", "yes"])[y],
              "object": np.array(["no", "yes"], dtype=object)[y]}[kind]
    ref = LogisticRegression().fit(X, labels)
    clf = RPNClassifier(random_state=0, max_epochs=30).fit(X, labels)
    assert clf.classes_.dtype == ref.classes_.dtype
    assert clf.classes_.tolist() == ref.classes_.tolist()
    pred = clf.predict(X)
    assert pred.dtype == ref.predict(X).dtype
    assert accuracy_score(labels, pred) == pytest.approx(float((pred == labels).mean()))
    assert (pred == labels).mean() > 0.7


def _engine_cfgs(monkeypatch):
    import rpnkit.training.engine as engine

    cfgs = []
    real_fit = engine.fit

    def spy(model, data, cfg=None, **kw):
        cfgs.append(cfg)
        return real_fit(model, data, cfg, **kw)

    monkeypatch.setattr(engine, "fit", spy)
    return cfgs


def test_sklearn_mlp_names_are_aliases(monkeypatch):
    cfgs = _engine_cfgs(monkeypatch)
    X, y = make_classification(60, 3, n_informative=2, n_redundant=0, random_state=0)
    clf = RPNClassifier(max_iter=3, learning_rate_init=0.07, alpha=1e-4, random_state=0,
                        n_iter_no_change=100).fit(X, y)
    assert clf.n_iter_ == 3
    assert cfgs[-1]["epochs"] == 3
    assert cfgs[-1]["optimizer"]["lr"] == 0.07
    assert cfgs[-1]["optimizer"]["weight_decay"] == 1e-4
    RPNRegressor(max_iter=2, alpha=0.5, random_state=0).fit(X, y.astype(float))
    assert cfgs[-1]["epochs"] == 2
    assert cfgs[-1]["optimizer"]["weight_decay"] == 0.5
    # the same values under the canonical names give the same model
    same = RPNClassifier(max_epochs=3, lr=0.07, weight_decay=1e-4, random_state=0,
                         n_iter_no_change=100).fit(X, y)
    np.testing.assert_array_equal(same.predict_proba(X), clf.predict_proba(X))


def test_aliases_survive_get_params_set_params_and_clone():
    from sklearn.model_selection import GridSearchCV

    est = RPNClassifier(max_iter=7, alpha=0.01)
    params = est.get_params()
    assert params["max_iter"] == 7
    assert params["alpha"] == 0.01
    assert params["learning_rate_init"] is None
    assert params["max_epochs"] == 300  # stored as given, resolved only in fit
    copy_ = clone(est)
    assert copy_.get_params() == params
    copy_.set_params(learning_rate_init=0.2, max_iter=None)
    assert copy_.learning_rate_init == 0.2
    assert copy_.max_iter is None
    assert pickle.loads(pickle.dumps(est)).get_params() == params
    X, y = make_classification(60, 3, n_informative=2, n_redundant=0, random_state=0)
    grid = GridSearchCV(RPNClassifier(max_iter=5, random_state=0),
                        {"learning_rate_init": [0.01, 0.1]}, cv=2).fit(X, y)
    assert grid.best_params_["learning_rate_init"] in (0.01, 0.1)
    assert grid.best_estimator_.max_iter == 5


def test_alias_and_canonical_name_disagreeing_is_an_error():
    X, y = make_classification(40, 3, n_informative=2, n_redundant=0, random_state=0)
    with pytest.raises(ValueError, match=r"max_iter=5 and max_epochs=10 name one setting"):
        RPNClassifier(max_iter=5, max_epochs=10).fit(X, y)
    with pytest.raises(ValueError, match=r"alpha=0.1 and weight_decay=0.2"):
        RPNRegressor(alpha=0.1, weight_decay=0.2).fit(X, y.astype(float))
    # the same value twice is fine
    RPNClassifier(max_iter=2, max_epochs=2).fit(X, y)
    with pytest.raises(ValueError, match=r"max_iter \(or max_epochs\) must be a positive integer"):
        RPNClassifier(max_iter=0).fit(X, y)
    with pytest.raises(ValueError, match=r"learning_rate_init\) must be > 0, got -1"):
        RPNClassifier(learning_rate_init=-1).fit(X, y)
