"""Dataset sources, seeded splits, standardisation and load-time validation."""

from __future__ import annotations

import numpy as np
import pytest

from rpnkit.data import (
    DATASETS,
    FEYNMAN_PAPER_IDS,
    equation_ids,
    equation_table,
    load_data,
    load_raw,
    split_indices,
)
from rpnkit.errors import ConfigurationError, UnknownNameError

FN = {"expression": "exp(sin(3*x0)) * x1 + x1**2", "ranges": [[0, 1], [0, 1]], "n_samples": 400}


def test_function_dataset_values_and_shapes():
    b = load_data("function", FN, {"train": 0.5, "val": 0.1, "test": 0.4}, seed=3)
    assert {k: v.shape for k, v in b.x.items()} == {"train": (200, 2), "val": (40, 2), "test": (160, 2)}
    assert b.y["train"].shape == (200, 1)
    assert b.task == "regression"
    x = b.x["test"]
    np.testing.assert_allclose(b.y["test"][:, 0], np.exp(np.sin(3 * x[:, 0])) * x[:, 1] + x[:, 1] ** 2)
    assert (x >= 0).all()
    assert (x <= 1).all()


def test_splits_are_seeded():
    a = load_data("function", FN, {"train": 0.5, "test": 0.5}, seed=1)
    b = load_data("function", FN, {"train": 0.5, "test": 0.5}, seed=1)
    c = load_data("function", FN, {"train": 0.5, "test": 0.5}, seed=2)
    np.testing.assert_array_equal(a.x["train"], b.x["train"])
    assert not np.array_equal(a.x["train"], c.x["train"])


def test_split_indices_are_disjoint_and_stratified():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    idx = split_indices(100, {"train": 0.6, "val": 0.2, "test": 0.2}, 0, labels)
    allidx = np.concatenate(list(idx.values()))
    assert sorted(allidx.tolist()) == list(range(100))
    assert len(idx["val"]) == 20
    assert len(idx["test"]) == 20
    assert np.bincount(labels[idx["test"]]).tolist() == [10, 6, 4]
    counts = split_indices(100, {"train": 70, "val": 10, "test": 20}, 0)
    assert [len(counts[k]) for k in ("train", "val", "test")] == [70, 10, 20]


def test_standardisation_fitted_on_train_only():
    b = load_data("function", FN, {"train": 0.5, "val": 0.0, "test": 0.5}, seed=0, standardize=True)
    np.testing.assert_allclose(b.x["train"].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(b.x["train"].std(0), 1, atol=1e-12)
    assert np.abs(b.x["test"].mean(0)).max() > 1e-6  # test statistics were not used
    raw = load_data("function", FN, {"train": 0.5, "val": 0.0, "test": 0.5}, seed=0)
    np.testing.assert_allclose(b.transform_x(raw.x["test"]), b.x["test"])


@pytest.mark.parametrize("kind", ["elementary", "composite"])
def test_all_paper_equations_load(kind):
    ids = equation_ids(kind)
    assert len(ids) == 17
    for eq in ids:
        b = load_data(kind, {"equation": eq, "n_samples": 100}, {"train": 0.5, "test": 0.5})
        assert np.isfinite(b.y["train"]).all()


def test_feynman_paper_equations_load_with_original_ranges():
    assert len(FEYNMAN_PAPER_IDS) == 27
    for eq in FEYNMAN_PAPER_IDS:
        b = load_data("feynman", {"equation": eq, "n_samples": 100}, {"train": 0.5, "test": 0.5})
        rec = equation_table("feynman")[eq]
        assert b.feature_names == rec["variables"]
        lo = np.array([r[0] for r in rec["ranges"]])
        assert (b.x["train"] >= lo).all()
    b = load_data("feynman", {"equation": "I.9.18", "dimensionless": True, "n_samples": 50},
                  {"train": 0.5, "test": 0.5})
    assert b.n_features == 6


def test_unknown_equation_suggests():
    with pytest.raises(ConfigurationError, match=r"did you mean 'I.9.18'"):
        load_raw("feynman", {"equation": "I.9.81"})


def test_unknown_dataset_and_option_suggest():
    with pytest.raises(UnknownNameError, match=r"did you mean 'iris'"):
        load_raw("irs")
    with pytest.raises(ConfigurationError, match=r"did you mean 'expression'"):
        load_raw("function", {"expresion": "x0"})


def test_nan_from_formula_is_rejected():
    with pytest.raises(ConfigurationError, match=r"NaN"):
        load_raw("function", {"expression": "log(x0 - 2)", "ranges": [[0, 1]]})
    with pytest.raises(ConfigurationError, match=r"inf"):
        load_raw("function", {"expression": "1/(x0*0)", "ranges": [[0, 1]]})


def test_bad_ranges_and_empty_splits():
    with pytest.raises(ConfigurationError, match="one \\[low, high\\] pair per variable"):
        load_raw("function", {"expression": "x0 + x1", "ranges": [[0, 1]]})
    with pytest.raises(ConfigurationError, match="low < high"):
        load_raw("function", {"expression": "x0", "ranges": [[1, 0]]})
    with pytest.raises(ConfigurationError, match="test split is empty"):
        load_data("function", {"expression": "x0", "ranges": [[0, 1]], "n_samples": 10},
                  {"train": 1.0, "val": 0.0, "test": 0.0})


@pytest.mark.parametrize(
    ("name", "n", "m", "k"),
    [("iris", 150, 4, 3), ("wine", 178, 13, 3), ("breast_cancer", 569, 30, 2),
     ("banknote", 1372, 4, 2), ("pima", 768, 8, 2), ("digits", 1797, 64, 10)],
)
def test_tabular_sets(name, n, m, k):
    raw = load_raw(name)
    assert raw.x.shape == (n, m)
    assert len(raw.classes) == k
    assert raw.task == "classification"
    assert raw.y.dtype == np.int64
    assert set(np.unique(raw.y)) == set(range(k))


def test_banknote_and_pima_class_counts():
    assert np.bincount(load_raw("banknote").y).tolist() == [762, 610]
    assert np.bincount(load_raw("pima").y).tolist() == [500, 268]


def test_csv_regression_classification_and_errors(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label,t\n1,2,cat,0.5\n3,4,dog,1.5\n5,6,cat,2.5\n7,8,dog,3.5\n")
    raw = load_raw("csv", {"path": str(p), "target": "t", "features": ["a", "b"]})
    assert raw.task == "regression"
    assert raw.x.shape == (4, 2)
    raw = load_raw("csv", {"path": str(p), "target": "label", "features": ["a", "b"]})
    assert raw.task == "classification"
    assert raw.classes == ["cat", "dog"]
    with pytest.raises(ConfigurationError, match=r"no column 'lable'.*did you mean 'label'"):
        load_raw("csv", {"path": str(p), "target": "lable"})
    with pytest.raises(ConfigurationError, match="not a number"):
        load_raw("csv", {"path": str(p), "target": "t"})  # 'label' becomes a feature
    q = tmp_path / "nan.csv"
    q.write_text("x,y\n1,2\n2,nan\n3,4\n")
    with pytest.raises(ConfigurationError, match="NaN"):
        load_raw("csv", {"path": str(q), "target": "y", "task": "regression"})
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_raw("csv", {"path": str(tmp_path / "missing.csv"), "target": "y"})
    r = tmp_path / "ragged.csv"
    r.write_text("x,y\n1,2\n3\n")
    with pytest.raises(ConfigurationError, match="fields"):
        load_raw("csv", {"path": str(r), "target": "y"})


def test_registry_lists_datasets():
    for name in ("function", "elementary", "composite", "feynman", "iris", "wine", "digits",
                 "breast_cancer", "banknote", "pima", "mnist", "csv"):
        assert name in DATASETS


def test_stratified_split_honours_counts_that_leave_rows_unused():
    import numpy as np

    from rpnkit.data import split_indices

    labels = np.repeat(np.arange(3), [50, 30, 20])
    s = split_indices(100, {"train": 10, "val": 5, "test": 5}, 0, labels)
    assert {k: len(v) for k, v in s.items()} == {"train": 10, "val": 5, "test": 5}
    assert len(set(np.concatenate(list(s.values())).tolist())) == 20
    assert set(labels[s["train"]].tolist()) == {0, 1, 2}  # still stratified
