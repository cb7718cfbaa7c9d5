"""Exact class labels: kept as their original values, never passed through float.

The rule (both the in-memory ``csv`` dataset and the streaming ``csv``/``parquet``
sources): a class label is its text with surrounding spaces removed; it must be an
integer written in digits (``7``, ``-3``, ``1000000000000000001``) or text that is not a
number (``cat``). Empty labels, ``nan``/``inf``, non-integral numbers (``1.5``) and
integer-valued text such as ``1.0`` or ``1e3`` are refused, naming the file and line;
so are two spellings of one integer (``7`` and ``007``) and data with fewer than two
classes. ``classes`` holds the original label strings (integers ordered by value).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from rpnkit.cli import main
from rpnkit.data import load_data, load_raw, open_stream
from rpnkit.errors import ConfigurationError

BIG = 10**18
SPLIT = {"train": 0.6, "val": 0.2, "test": 0.2}


def _csv(tmp_path, labels, name="d.csv", header="a,b,y", features=None):
    """A CSV with features a = row index, b = row index / 2 and target y = label."""
    rows = [header]
    for i, lab in enumerate(labels):
        a, b = (features[i] if features is not None else (str(i), str(i / 2)))
        rows.append(f"{a},{b},{lab}")
    p = tmp_path / name
    p.write_text("\n".join(rows) + "\n")
    return p


def _mixed(n, values):
    return [values[i % len(values)] for i in range(n)]


# ----------------------------------------------------------------------------- in-memory csv
def test_integer_labels_stay_exact_and_split_back_to_their_rows(tmp_path):
    labels = _mixed(40, [str(BIG), str(BIG + 1), "-3"])
    p = _csv(tmp_path, labels)
    for task in ("classification", "auto"):
        b = load_data("csv", {"path": str(p), "target": "y", "task": task}, SPLIT, seed=1)
        assert b.task == "classification"
        assert b.classes == ["-3", str(BIG), str(BIG + 1)]
        assert b.n_classes == 3
        for split in ("train", "val", "test"):
            assert b.y[split].dtype == np.int64
            rows = b.x[split][:, 0].astype(int)
            assert [b.classes[c] for c in b.y[split]] == [labels[r] for r in rows]
            assert len(set(b.y[split].tolist())) == 3  # stratified: every class in every split


def test_text_labels_keep_their_original_strings(tmp_path):
    labels = _mixed(30, ["cat", " dog ", "10", "9", "x1.5"])
    b = load_data("csv", {"path": str(_csv(tmp_path, labels)), "target": "y"}, SPLIT)
    assert b.classes == ["10", "9", "cat", "dog", "x1.5"]
    rows = b.x["train"][:, 0].astype(int)
    assert [b.classes[c] for c in b.y["train"]] == [labels[r].strip() for r in rows]
    ints = _mixed(30, ["10", "9", "007"])
    c = load_raw("csv", {"path": str(_csv(tmp_path, ints, "i.csv")), "target": "y"})
    assert c.classes == ["007", "9", "10"]  # integers by value, original spelling


def test_numeric_regression_targets_are_not_refused(tmp_path):
    p = _csv(tmp_path, _mixed(20, ["0.5", "1.5", "2.25"]))
    raw = load_raw("csv", {"path": str(p), "target": "y"})
    assert raw.task == "regression"
    np.testing.assert_array_equal(raw.y[:3, 0], [0.5, 1.5, 2.25])


BAD_LABELS = {
    # name: (labels, task, message fragment, line of the first bad label)
    "non-integral number": (["1", "2", "1.5", "2"], "classification", r"'1\.5'.*not an integer", 4),
    "non-integral number (auto)": (["a", "b", "1.5", "b"], "auto", r"'1\.5'.*not an integer", 4),
    "integer-valued float text": (["1.0", "2.0", "1.0", "2.0"], "classification", r"'1\.0'.*not an integer", 2),
    "integer-valued float text (auto)": (["1.0", "2.0", "1.0", "2.0"], "auto", r"'1\.0'.*not an integer", 2),
    "exponent": (["1", "1e3", "1", "2"], "classification", r"'1e3'.*not an integer", 3),
    "empty label": (["1", "2", "", "2"], "classification", r"empty class label", 4),
    "empty label (auto)": (["cat", "", "dog", "cat"], "auto", r"empty class label", 3),
    "nan label": (["cat", "dog", "nan", "dog"], "classification", r"'nan'.*not a finite number", 4),
    "nan label (auto)": (["1", "2", "NaN", "2"], "auto", r"'NaN'.*not a finite number", 4),
    "inf label": (["1", "-inf", "1", "2"], "classification", r"'-inf'.*not a finite number", 3),
    "two spellings of one integer": (["7", "2", "007", "2"], "classification", r"'007'.*'7'.*same", 4),
    "single class": (["cat"] * 4, "classification", r"only one class", None),
    "single integer class (auto)": (["3"] * 4, "auto", r"only one class", None),
}


@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_bad_labels_are_refused_with_file_and_line(tmp_path, case):
    labels, task, fragment, line = BAD_LABELS[case]
    p = _csv(tmp_path, labels * 3)
    with pytest.raises(ConfigurationError, match=fragment) as err:
        load_data("csv", {"path": str(p), "target": "y", "task": task})
    msg = str(err.value)
    assert "d.csv" in msg
    if line is not None:
        assert f"line {line}" in msg
    assert "\n" not in msg


def test_duplicate_header_is_refused(tmp_path):
    p = _csv(tmp_path, _mixed(10, ["1", "2"]), header="a,a,y")
    with pytest.raises(ConfigurationError, match=r"column 'a'.*twice|duplicate column 'a'"):
        load_raw("csv", {"path": str(p), "target": "y"})


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_feature_nan_inf_refused_with_line_and_column(tmp_path, value):
    feats = [(str(i), str(i)) for i in range(10)]
    feats[6] = ("6", value)
    p = _csv(tmp_path, _mixed(10, ["1", "2"]), features=feats)
    with pytest.raises(ConfigurationError, match=r"column 'b'.*line 8") as err:
        load_raw("csv", {"path": str(p), "target": "y"})
    assert "d.csv" in str(err.value)


def test_training_split_with_one_class_is_refused(tmp_path):
    p = _csv(tmp_path, ["a"] * 9 + ["b"])
    with pytest.raises(ConfigurationError, match=r"training split.*one class"):
        load_data("csv", {"path": str(p), "target": "y"}, {"train": 0.5, "test": 0.5},
                  indices={"train": np.arange(5), "val": np.arange(0), "test": np.arange(5, 10)})


# ----------------------------------------------------------------------------- CLI
def _cli_cfg(tmp_path, path, task="classification"):
    cfg = {
        "seed": 0,
        "device": "cpu",
        "data": {"name": "csv", "path": str(path), "target": "y", "task": task,
                 "split": {"train": 0.5, "val": 0.0, "test": 0.5}},
        "model": {"dims": [2, 2], "expansion": "taylor", "remainder": "linear", "bias": True},
        "train": {"epochs": 2, "optimizer": {"name": "adam", "lr": 0.05}, "loss": "cross_entropy"},
    }
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump(cfg))
    return c


CLI_BAD = {
    "non-integral label": (["1", "2", "1.5", "2"] * 5, r"not an integer"),
    "integer-valued float label": (["1.0", "2.0"] * 10, r"not an integer"),
    "empty label": (["1", "2", "", "2"] * 5, r"empty class label"),
    "nan label": (["1", "2", "nan", "2"] * 5, r"not a finite number"),
    "single class": (["1"] * 20, r"only one class"),
    "two spellings": (["1", "01", "2", "2"] * 5, r"same"),
}


@pytest.mark.parametrize("case", list(CLI_BAD))
def test_cli_refuses_bad_labels_in_one_line_and_writes_nothing(tmp_path, capsys, case):
    labels, fragment = CLI_BAD[case]
    cfg = _cli_cfg(tmp_path, _csv(tmp_path, labels))
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--quiet"]) == 2
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1, cap.err
    assert lines[0].startswith("rpnkit: error:")
    assert "d.csv" in lines[0]
    assert re.search(fragment, lines[0]), lines[0]
    assert not out.exists()
    assert cap.out == ""


def test_cli_duplicate_header_refused(tmp_path, capsys):
    cfg = _cli_cfg(tmp_path, _csv(tmp_path, ["1", "2"] * 10, header="a,y,y"))
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "'y'" in err[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- streaming csv
def test_stream_csv_big_integer_labels_exact(tmp_path):
    labels = _mixed(60, [str(BIG + 1), str(BIG), "5"])
    p = _csv(tmp_path, labels)
    b = open_stream("csv", {"path": str(p), "target": "y", "task": "classification",
                            "block_rows": 7}, SPLIT)
    assert b.classes == ["5", str(BIG), str(BIG + 1)]
    for split in ("train", "val", "test"):
        for xb, yb in b.batches(split, 16):
            assert [b.classes[c] for c in yb] == [labels[r] for r in xb[:, 0].astype(int)]


STREAM_BAD = {
    "non-integral number": (["1", "2", "1.5", "2"], r"'1\.5'.*not an integer", 4),
    "integer-valued float text": (["1.0", "2.0", "1.0", "2.0"], r"'1\.0'.*not an integer", 2),
    "empty label": (["1", "2", "", "2"], r"empty class label", 4),
    "nan label": (["cat", "dog", "nan", "dog"], r"'nan'.*not a finite number", 4),
    "inf label": (["1", "inf", "1", "2"], r"'inf'.*not a finite number", 3),
    "two spellings of one integer": (["7", "2", "2", "2", "2", "2", "2", "2", "2", "007"],
                                     r"'007'.*'7'.*same", 11),
    "single class": (["cat"] * 4, r"only one class", None),
}


@pytest.mark.parametrize("case", list(STREAM_BAD))
def test_stream_csv_bad_labels_refused(tmp_path, case):
    labels, fragment, line = STREAM_BAD[case]
    p = _csv(tmp_path, labels * 3)
    with pytest.raises(ConfigurationError, match=fragment) as err:
        open_stream("csv", {"path": str(p), "target": "y", "task": "classification",
                            "block_rows": 3})
    msg = str(err.value)
    assert "d.csv" in msg
    if line is not None:
        assert f"line {line}" in msg


def test_stream_csv_duplicate_header_refused(tmp_path):
    p = _csv(tmp_path, ["1", "2"] * 5, header="a,b,a")
    with pytest.raises(ConfigurationError, match=r"column 'a'.*twice|duplicate column 'a'"):
        open_stream("csv", {"path": str(p), "target": 2})


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [(["1", "2", "1.5", "2"], r"'1\.5'.*line 4.*not an integer"),
     (["1", "2", "", "2"], r"empty class label.*line 4"),
     (["1"] * 4, r"only one class")],
    ids=["non-integral", "empty", "single class"],
)
def test_cli_streaming_csv_refuses_bad_labels(tmp_path, capsys, labels, fragment):
    cfg_path = _cli_cfg(tmp_path, _csv(tmp_path, labels * 5))
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["data"].update(stream=True, block_rows=4)
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["train", str(cfg_path), "--out", str(out), "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "d.csv" in lines[0]
    assert re.search(fragment, lines[0]), lines[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- streaming parquet
def test_stream_parquet_string_labels_checked_like_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")

    def write(labels):
        n = len(labels)
        table = pa.table({"a": np.arange(n, dtype=np.float64), "y": labels})
        pq.write_table(table, tmp_path / "d.parquet", row_group_size=5)
        return {"path": str(tmp_path / "d.parquet"), "target": "y", "task": "classification"}

    labels = _mixed(20, [str(BIG + 1), str(BIG), "3"])
    b = open_stream("parquet", write(labels), SPLIT)
    assert b.classes == ["3", str(BIG), str(BIG + 1)]
    for xb, yb in b.batches("train", 8):
        assert [b.classes[c] for c in yb] == [labels[r] for r in xb[:, 0].astype(int)]
    with pytest.raises(ConfigurationError, match=r"'2\.0'.*row 7.*not an integer"):
        open_stream("parquet", write(_mixed(7, ["1", "2"]) + ["2.0"] * 3), SPLIT)
    with pytest.raises(ConfigurationError, match=r"'7'.*'07'.*same"):
        open_stream("parquet", write(["07", "1"] * 4 + ["7"]), SPLIT)
    with pytest.raises(ConfigurationError, match=r"only one class"):
        open_stream("parquet", write(["x"] * 10), SPLIT)
    ints = {"a": np.arange(20.0), "y": np.array(_mixed(20, [BIG, BIG + 1]), dtype=np.int64)}
    pq.write_table(pa.table(ints), tmp_path / "i.parquet", row_group_size=6)
    c = open_stream("parquet", {"path": str(tmp_path / "i.parquet"), "target": "y",
                                "task": "classification"}, SPLIT)
    assert c.classes == [str(BIG), str(BIG + 1)]


# ----------------------------------------------------------------------------- streaming npy
def _npy(tmp_path, y, name="y.npy"):
    n = len(y)
    x = np.column_stack([np.arange(n, dtype=np.float64), np.zeros(n)])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / name, y)
    return {"x": str(tmp_path / "x.npy"), "y": str(tmp_path / name), "task": "classification",
            "block_rows": 8}


def test_stream_npy_int64_labels_exact(tmp_path):
    y = np.array(_mixed(40, [BIG + 1, BIG, -2]), dtype=np.int64)
    b = open_stream("npy", _npy(tmp_path, y), SPLIT)
    assert b.classes == ["-2", str(BIG), str(BIG + 1)]
    values = np.array([-2, BIG, BIG + 1], dtype=np.int64)
    for xb, yb in b.batches("train", 10):
        np.testing.assert_array_equal(values[yb], y[xb[:, 0].astype(int)])


def test_stream_npy_integral_float_labels_accepted(tmp_path):
    y = np.array(_mixed(30, [3.0, -1.0, 2.0**52]))
    b = open_stream("npy", _npy(tmp_path, y), SPLIT)
    assert b.classes == ["-1", "3", str(2**52)]


NPY_BAD = {
    "fractional float": (np.array(_mixed(30, [1.0, 2.0, 1.5])), r"1\.5.*not an integer"),
    "nan float": (np.array(_mixed(30, [1.0, 2.0, np.nan])), r"nan.*not an integer|NaN"),
    "inf float": (np.array(_mixed(30, [1.0, 2.0, np.inf])), r"inf.*not an integer"),
    "float beyond exact integers": (np.array(_mixed(30, [1.0, 1e18])), r"exact|too large"),
    "huge float": (np.array(_mixed(30, [1.0, 1e300])), r"exact|too large"),
    "uint64 beyond int64": (np.array(_mixed(30, [1, 2**64 - 1]), dtype=np.uint64), r"too large"),
    "single class": (np.zeros(30, dtype=np.int64), r"only one class"),
}


@pytest.mark.parametrize("case", list(NPY_BAD))
def test_stream_npy_bad_labels_refused(tmp_path, case):
    y, fragment = NPY_BAD[case]
    with pytest.raises(ConfigurationError, match=fragment) as err:
        open_stream("npy", _npy(tmp_path, y), SPLIT)
    if case != "single class":
        assert "row 2" in str(err.value) or "row 1" in str(err.value)
    assert "y.npy" in str(err.value) or "x.npy" in str(err.value)


# ----------------------------------------------------------------------------- sklearn
_FAST = {"max_epochs": 3, "random_state": 0}


@pytest.mark.parametrize(
    "y",
    [
        np.array(_mixed(40, [BIG, BIG + 1]), dtype=np.int64),
        np.array(_mixed(40, [str(BIG), str(BIG + 1), "cat"]), dtype=object),
        np.array(_mixed(40, ["1.0", "1", "01"])),
        np.array(_mixed(40, [2**63 + 1, 2**63 + 2]), dtype=np.uint64),
        np.array(_mixed(40, [-BIG, BIG, BIG + 1])),
    ],
    ids=["int64", "object-str", "str", "uint64", "int64-negative"],
)
def test_sklearn_classes_exact(y):
    from rpnkit.sklearn import RPNClassifier

    X = np.random.default_rng(0).normal(size=(len(y), 2))
    clf = RPNClassifier(**_FAST).fit(X, y)
    np.testing.assert_array_equal(clf.classes_, np.unique(y))
    assert len(clf.classes_) == len(set(y.tolist()))
    assert set(clf.predict(X).tolist()) <= set(y.tolist())


@pytest.mark.parametrize(
    "y",
    [np.full(10, BIG, dtype=np.int64), np.array(["a"] * 10), np.array([1.5, 2.5] * 5),
     np.array([BIG, BIG + 1] * 5, dtype=object)],
    ids=["one-int-class", "one-str-class", "continuous", "object-ints"],
)
def test_sklearn_refuses_single_class_and_continuous(y):
    """scikit-learn's convention: one class, continuous targets and object arrays of
    numbers (label type "unknown") raise ValueError before any training."""
    from rpnkit.sklearn import RPNClassifier

    X = np.random.default_rng(0).normal(size=(len(y), 2))
    with pytest.raises(ValueError, match=r"only one class|Unknown label type"):
        RPNClassifier(**_FAST).fit(X, y)
