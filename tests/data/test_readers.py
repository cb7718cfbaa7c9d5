"""Every reader answers a bad file with one clear ConfigurationError (issue 22, item 4):
CSV encodings and field sizes (in memory and streamed), npy (0-d, structured, complex,
empty), parquet (corrupt, empty, text/list/timestamp columns, missing values), empty
inputs, duplicated columns, NFC/NFD class labels, values too large to standardise, and
NaN/inf in in-memory training data."""

from __future__ import annotations

import datetime
import warnings

import numpy as np
import pytest
import torch

from rpnkit.data import load_data, load_raw, open_stream
from rpnkit.data.readers import MAX_FIELD_CHARS, label_text, read_features
from rpnkit.errors import ConfigurationError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

COMPOSED, DECOMPOSED = "caf\u00e9", "cafe\u0301"  # one label, two Unicode spellings


def _write(path, data: bytes | str):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def _table(n: int = 12) -> str:
    return "a,b,y\n" + "".join(f"{i},{2 * i},{i % 3}\n" for i in range(n))


BAD_TEXT = {
    "latin1": ("a,b,y\n1,2,0\ncaf\xe9,3,1\n".encode("latin-1"),
               r"is not UTF-8 text: byte 0xe9 at line 3"),
    "utf16": ("a,b,y\n1,2,0\n".encode("utf-16"), r"is UTF-16 text; save it as UTF-8"),
    "utf32": ("a,b,y\n1,2,0\n".encode("utf-32"), r"is UTF-32 text"),
    "binary": (bytes(range(256)) * 4, r"holds a NUL byte at line 1: a binary file"),
    "field": (b"a,b,y\n1,2,0\n" + b"7" * (MAX_FIELD_CHARS + 10) + b",2,0\n",
              rf"line 3 holds a field longer than {MAX_FIELD_CHARS:,} characters"),
}


# ----------------------------------------------------------------------------- predict's reader
@pytest.mark.parametrize("case", sorted(BAD_TEXT))
def test_read_features_refuses_bad_text(tmp_path, case):
    data, match = BAD_TEXT[case]
    with pytest.raises(ConfigurationError, match=match):
        read_features(_write(tmp_path / "in.csv", data), ["a", "b"])


@pytest.mark.parametrize(("text", "match"), [
    ("", r"is empty \(no rows\)"),
    ("\n\n  \n", r"is empty \(no rows\)"),
    ("a,b\n", "has a header but no data rows"),
    ("a,a\n1,2\n", r"column 'a' appears twice in the header \(columns 1 and 2\)"),
    (f"{COMPOSED},b\n1,2\n", None),  # NFC-equal names are one column (matched below)
    (f"{COMPOSED},{DECOMPOSED}\n1,2\n", "appears twice in the header"),
    ("a,b\n1,x\n", r"line 2: column 'b' holds 'x', which is not a number"),
    ("a,b\n1,2,3\n", "line 2 has 3 fields, expected 2"),
])
def test_read_features_csv_shapes(tmp_path, text, match):
    path = _write(tmp_path / "in.csv", text)
    if match is None:
        np.testing.assert_array_equal(read_features(path, [DECOMPOSED, "b"]), [[1.0, 2.0]])
        return
    with pytest.raises(ConfigurationError, match=match):
        read_features(path, None)


def test_read_features_good_files_match_numpy(tmp_path):
    x = np.random.default_rng(0).normal(size=(7, 3))
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(read_features(tmp_path / "x.npy"), x)
    np.save(tmp_path / "xy.npy", np.column_stack([x, np.arange(7)]))
    np.testing.assert_array_equal(read_features(tmp_path / "xy.npy", ["a", "b", "c"]), x)
    np.save(tmp_path / "f.npy", np.asfortranarray(x.astype(np.float32)))
    np.testing.assert_array_equal(read_features(tmp_path / "f.npy"), x.astype(np.float32))
    np.save(tmp_path / "one.npy", x[:, 0])
    np.testing.assert_array_equal(read_features(tmp_path / "one.npy"), x[:, :1])
    text = "c,a,y,b\n" + "".join(f"{r[2]!r},{r[0]!r},0,{r[1]!r}\n" for r in x.tolist())
    _write(tmp_path / "x.csv", text)
    np.testing.assert_array_equal(read_features(tmp_path / "x.csv", ["a", "b", "c"]), x)
    _write(tmp_path / "nohead.csv", "".join(",".join(repr(v) for v in r) + ",0\n" for r in x.tolist()))
    np.testing.assert_array_equal(read_features(tmp_path / "nohead.csv", ["a", "b", "c"]), x)
    pq.write_table(pa.table({"y": np.zeros(7), "b": x[:, 1], "a": x[:, 0],
                             "c": x[:, 2].astype(np.float32),
                             "i": pa.array(np.arange(7)).dictionary_encode()}), tmp_path / "x.parquet")
    got = read_features(tmp_path / "x.parquet", ["a", "b", "c", "i"])
    np.testing.assert_array_equal(got, np.column_stack([x[:, :2], x[:, 2].astype(np.float32),
                                                        np.arange(7)]))


@pytest.mark.parametrize(("array", "match"), [
    (np.array(3.0), r"a 0-d array \(one number\)"),
    (np.zeros(3, dtype=[("a", "f8"), ("b", "f8")]), r"a structured array \(fields a, b\)"),
    (np.ones((3, 2), dtype=np.complex128), r"holds complex numbers \(complex128\)"),
    (np.ones((3, 2), dtype=np.complex64), "complex"),
    (np.array(["a", "b"]), r"holds <U1, not real numbers"),
    (np.zeros((0, 2)), r"the array of shape \(0, 2\) holds no values"),
    (np.zeros((3, 0)), "holds no values"),
    (np.zeros((2, 2, 2)), r"an array of shape \(2, 2, 2\)"),
])
def test_read_features_npy_refusals(tmp_path, array, match):
    np.save(tmp_path / "x.npy", array)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the complex part is never dropped with a warning
        with pytest.raises(ConfigurationError, match=match):
            read_features(tmp_path / "x.npy")


def test_read_features_npy_corrupt(tmp_path):
    _write(tmp_path / "x.npy", b"\x93NUMPY garbage")
    with pytest.raises(ConfigurationError, match="not a readable .npy array"):
        read_features(tmp_path / "x.npy")
    np.save(tmp_path / "t.npy", np.ones((100, 4)))
    data = (tmp_path / "t.npy").read_bytes()
    _write(tmp_path / "t.npy", data[: len(data) // 2])  # truncated after its header
    with pytest.raises(ConfigurationError, match="not a readable .npy array"):
        read_features(tmp_path / "t.npy")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigurationError, match="not a readable .npy array"):
        read_features(tmp_path / "o.npy")


def _parquet(tmp_path, name, **cols):
    path = tmp_path / name
    pq.write_table(pa.table(cols), path)
    return path


def test_read_features_parquet_refusals(tmp_path):
    ts = [datetime.datetime(2020, 1, 1), datetime.datetime(2021, 1, 1)]
    cases = [
        (_write(tmp_path / "zero.parquet", b""), "not a readable parquet file"),
        (_write(tmp_path / "junk.parquet", b"PAR1 not really parquet PAR1"),
         "not a readable parquet file"),
        (_parquet(tmp_path, "rows.parquet", a=pa.array([], pa.float64()),
                  b=pa.array([], pa.float64())), "holds no rows"),
        (_parquet(tmp_path, "s.parquet", a=["x", "y"], b=[1.0, 2.0]),
         r"column 'a' has type string \(a text column\)"),
        (_parquet(tmp_path, "l.parquet", a=[[1.0], [2.0]], b=[1.0, 2.0]), r"\(a list column\)"),
        (_parquet(tmp_path, "t.parquet", a=ts, b=[1.0, 2.0]),
         r"has type timestamp\[us\] \(a timestamp/date column\)"),
        (_parquet(tmp_path, "d.parquet", a=[datetime.date(2020, 1, 1)] * 2, b=[1.0, 2.0]),
         "timestamp/date column"),
        (_parquet(tmp_path, "n.parquet", a=[1.0, None], b=[1.0, 2.0]),
         r"missing value in column 'a' at row 1"),
        (_parquet(tmp_path, "m.parquet", c=[1.0, 2.0], b=[1.0, 2.0]),
         r"the run's features 'a' are not columns"),
    ]
    for path, match in cases:
        with pytest.raises(ConfigurationError, match=match):
            read_features(path, ["a", "b"])
    dup = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["a", "a"]), dup)
    with pytest.raises(ConfigurationError, match="appears twice in the parquet schema"):
        read_features(dup, ["a"])


def test_read_features_missing_and_unknown_files(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        read_features(tmp_path / "nope.csv")
    with pytest.raises(ConfigurationError, match=r"input must be \.csv"):
        read_features(_write(tmp_path / "x.json", "{}"))


# ----------------------------------------------------------------------------- training readers
@pytest.mark.parametrize("case", sorted(BAD_TEXT))
def test_training_csv_refuses_bad_text(tmp_path, case):
    data, match = BAD_TEXT[case]
    path = _write(tmp_path / "in.csv", data)
    with pytest.raises(ConfigurationError, match=match):
        load_raw("csv", {"path": str(path)})


@pytest.mark.parametrize("case", sorted(BAD_TEXT))
def test_streamed_csv_refuses_bad_text(tmp_path, case):
    data, match = BAD_TEXT[case]
    body = _table(30).encode()
    if case in ("latin1", "field"):  # the bad line deep in the file, inside a later block
        bad = data.split(b"\n")[2]
        data = body + bad + b"\n" + b"31,62,1\n"
        match = match.replace("line 3", "line 32")
    path = _write(tmp_path / "in.csv", data)
    with pytest.raises(ConfigurationError, match=match):
        open_stream("csv", {"path": str(path), "block_rows": 8})


def _label_file(tmp_path, n: int = 24) -> str:
    labels = [COMPOSED, DECOMPOSED, "tea"]
    text = "a,y\n" + "".join(f"{i},{labels[i % 3]}\n" for i in range(n))
    return str(_write(tmp_path / "labels.csv", text))


def test_nfc_and_nfd_labels_are_one_class_in_memory(tmp_path):
    raw = load_raw("csv", {"path": _label_file(tmp_path), "task": "classification"})
    assert raw.classes == [COMPOSED, "tea"]
    np.testing.assert_array_equal(raw.y, [0 if i % 3 < 2 else 1 for i in range(24)])
    assert label_text(f"  {DECOMPOSED} ") == COMPOSED


def test_nfc_and_nfd_labels_are_one_class_when_streamed(tmp_path):
    b = open_stream("csv", {"path": _label_file(tmp_path), "task": "classification",
                            "block_rows": 5})
    assert b.classes == [COMPOSED, "tea"]
    ys = np.concatenate([y for _, y in b.batches("train", 64, shuffle=False)])
    assert set(ys.tolist()) == {0, 1}
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"a": np.arange(24.0),
                             "y": [[COMPOSED, DECOMPOSED, "tea"][i % 3] for i in range(24)]}), path)
    assert open_stream("parquet", {"path": str(path), "task": "classification"}).classes == [
        COMPOSED, "tea"]


def test_streamed_parquet_refuses_timestamp_and_list_columns(tmp_path):
    n = 12
    ts = [datetime.datetime(2020, 1, 1 + i) for i in range(n)]
    cases = [
        ({"a": np.arange(n, dtype=float), "y": ts}, "classification",
         r"class label column 'y' has type timestamp\[us\]"),
        ({"a": np.arange(n, dtype=float), "y": [[1]] * n}, "classification",
         "class label column 'y' has type list"),
        ({"a": ts, "y": np.arange(n, dtype=float)}, "regression",
         r"column 'a' has type timestamp\[us\], not numbers \(timestamps are refused"),
    ]
    for i, (cols, task, match) in enumerate(cases):
        path = tmp_path / f"p{i}.parquet"
        pq.write_table(pa.table(cols), path)
        with pytest.raises(ConfigurationError, match=match):
            open_stream("parquet", {"path": str(path), "task": task})
    dup = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(np.arange(n, dtype=float))] * 2,
                                        names=["a", "a"]), dup)
    with pytest.raises(ConfigurationError, match="appears twice in the parquet schema"):
        open_stream("parquet", {"path": str(dup)})


# ----------------------------------------------------------------------------- standardisation
def _huge_csv(tmp_path) -> str:
    text = "a,b,y\n" + "".join(f"{1e308 if i % 2 else -1e308},{i},{0.5 * i}\n" for i in range(40))
    return str(_write(tmp_path / "huge.csv", text))


def test_standardising_overflowing_values_is_refused_without_warnings(tmp_path):
    path = _huge_csv(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning escapes before the error
        with pytest.raises(ConfigurationError, match=r"feature 'a' holds values too large to "
                                                     r"standardise in float64 \(\|value\| up to 1e\+308\)"):
            load_data("csv", {"path": path, "target": "y"}, standardize=True)
        with pytest.raises(ConfigurationError, match="feature 'a' holds values too large"):
            open_stream("csv", {"path": path, "target": "y"}, standardize=True)


def test_standardising_ordinary_values_is_unchanged(tmp_path):
    path = _write(tmp_path / "ok.csv", _table(40))
    b = load_data("csv", {"path": str(path), "target": "y", "task": "regression"},
                  standardize=True, standardize_target=True, seed=3)
    raw = load_raw("csv", {"path": str(path), "target": "y", "task": "regression"})
    xt = raw.x[np.isin(raw.x[:, 0], b.x["train"][:, 0] * b.x_std[0] + b.x_mean[0])]
    np.testing.assert_allclose(b.x_mean, xt.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(b.x["train"].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(b.y["train"].std(axis=0), 1, rtol=1e-12)


# ----------------------------------------------------------------------------- rpnkit.fit
@pytest.mark.parametrize("where", ["x_nan", "y_inf", "tensor_y_nan", "val_x_inf"])
def test_fit_refuses_non_finite_arrays(where):
    import rpnkit
    from rpnkit.models import build_model

    x = np.random.default_rng(0).random((20, 2))
    y = x.sum(axis=1)
    data: object
    if where == "x_nan":
        x[4, 1] = np.nan
        data, match = (x, y), r"X of split 'train' holds NaN or inf \(first at row 4\)"
    elif where == "y_inf":
        y[7] = np.inf
        data, match = (x, y), r"y of split 'train' holds NaN or inf \(first at row 7\)"
    elif where == "tensor_y_nan":
        yt = torch.tensor(y)
        yt[2] = float("nan")
        data, match = (torch.tensor(x), yt), r"y of split 'train' .* row 2"
    else:
        xv = x.copy()
        xv[0, 0] = -np.inf
        data, match = {"train": (x, y), "val": (xv, y)}, r"X of split 'val' .* row 0"
    model = build_model("rpn", dims=[2, 1])
    args = (data, None) if isinstance(data, dict) else data
    with pytest.raises(ConfigurationError, match=match):
        rpnkit.fit(model, *args, {"epochs": 1})
