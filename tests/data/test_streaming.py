"""Streaming datasets: splits, epoch orders, ranks/workers, resumption, statistics, sources."""

from __future__ import annotations

import csv
import pickle
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

from rpnkit.data.streaming import (
    STREAM_SOURCES,
    MissingPackageError,
    StreamingBundle,
    open_stream,
    split_block_counts,
)
from rpnkit.errors import ConfigurationError, UnknownNameError

SPLIT = {"train": 0.7, "val": 0.1, "test": 0.2}


def write_npy_dataset(directory, n, m, *, k=1, classes=None, seed=0):
    """x.npy (n, m) whose column 0 is the row index, y.npy (n,) or (n, k); returns paths, x, y."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, m)) * np.arange(1, m + 1) + 3.0
    x[:, 0] = np.arange(n)
    if classes is not None:
        y = rng.choice(classes, size=n)
    else:
        y = x[:, 1:2] * 2.0 + rng.normal(size=(n, k))
        y = y[:, 0] if k == 1 else y
    xp, yp = directory / "x.npy", directory / "y.npy"
    np.save(xp, x)
    np.save(yp, y)
    return {"x": str(xp), "y": str(yp)}, x, y


def collect(bundle, split, batch_size, **kw):
    out = list(bundle.batches(split, batch_size, **kw))
    return [b[0] for b in out], [b[1] for b in out]


def ids_of(xs):
    return np.concatenate(xs)[:, 0].astype(np.int64) if xs else np.empty(0, dtype=np.int64)


@pytest.fixture(scope="module")
def npy_bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("npy")
    params, x, y = write_npy_dataset(d, 1000, 3)
    return open_stream("npy", {**params, "block_rows": 64}, SPLIT, seed=5), x, y


def test_sources_listed_and_unknown_names():
    assert set(STREAM_SOURCES) == {"npy", "csv", "parquet", "function"}
    with pytest.raises(UnknownNameError, match="did you mean 'csv'"):
        open_stream("cvs", {})
    with pytest.raises(ConfigurationError, match="did you mean 'block_rows'"):
        open_stream("function", {"expression": "x0", "n": 10, "blockrows": 4})


def test_split_assignment_exact_disjoint_and_seeded(npy_bundle):
    b, _, _ = npy_bundle
    assert isinstance(b, StreamingBundle)
    assert b.streaming is True
    assert [b.size(s) for s in ("train", "val", "test")] == [700, 100, 200]
    seen = [ids_of(collect(b, s, 50, shuffle=False)[0]) for s in ("train", "val", "test")]
    allids = np.concatenate(seen)
    assert sorted(allids.tolist()) == list(range(1000))
    for ids in seen:  # natural order without shuffle
        assert (np.diff(ids) > 0).all()
    # every block holds its share of each split (even spread over the file)
    counts = split_block_counts(np.full(16, 64)[:-1].tolist() + [40], (700, 100, 200))
    assert counts.sum(axis=1).tolist() == [700, 100, 200]
    assert (counts.sum(axis=0) == [64] * 15 + [40]).all()
    assert counts[1].max() - counts[1].min() <= 1 + 64 * 0.1
    # the same seed gives the same assignment, another seed another one
    again = open_stream("npy", {"x": b.info["path"], "y": b.info["y_path"], "block_rows": 64}, SPLIT, seed=5)
    other = open_stream("npy", {"x": b.info["path"], "y": b.info["y_path"], "block_rows": 64}, SPLIT, seed=6)
    np.testing.assert_array_equal(ids_of(collect(again, "val", 1000, shuffle=False)[0]), seen[1])
    assert not np.array_equal(ids_of(collect(other, "val", 1000, shuffle=False)[0]), seen[1])


def test_split_counts_are_exact_for_odd_sizes():
    sizes = [1, 5, 3, 7, 1, 1, 2]
    for split in [(11, 5, 4), (20, 0, 0), (1, 10, 9), (0, 0, 20)]:
        c = split_block_counts(sizes, split)
        assert (c >= 0).all()
        assert c.sum(axis=1).tolist() == list(split)
        assert c.sum(axis=0).tolist() == sizes


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_row_once_per_epoch(npy_bundle, world, workers, shuffle):
    b, x, y = npy_bundle
    expected = {s: set(ids_of(collect(b, s, 1000, shuffle=False)[0]).tolist()) for s in ("train", "val")}
    for split in ("train", "val"):
        per_rank = [
            collect(b, split, 48, epoch=2, seed=1, shuffle=shuffle, rank=r, world=world,
                    num_workers=workers)
            for r in range(world)
        ]
        nb = b.num_batches(split, 48)
        assert all(len(xs) == nb for xs, _ in per_rank)
        for bi in range(nb):
            sizes = [len(xs[bi]) for xs, _ in per_rank]
            assert max(sizes) - min(sizes) <= 1
            assert sum(sizes) == min(48, b.size(split) - bi * 48)
        ids = np.concatenate([ids_of(xs) for xs, _ in per_rank])
        assert len(ids) == b.size(split)
        assert set(ids.tolist()) == expected[split]
        # targets travel with their rows
        xs0, ys0 = per_rank[0]
        rows = ids_of(xs0)
        np.testing.assert_array_equal(np.concatenate(ys0)[:, 0], y[rows])
        np.testing.assert_array_equal(np.concatenate(xs0), x[rows])


def test_output_types_and_shapes(npy_bundle):
    b, _, _ = npy_bundle
    for workers in (0, 2):
        xb, yb = next(iter(b.batches("train", 32, num_workers=workers)))
        assert isinstance(xb, np.ndarray)
        assert isinstance(yb, np.ndarray)
        assert xb.dtype == np.float64
        assert yb.dtype == np.float64
        assert xb.shape == (32, 3)
        assert yb.shape == (32, 1)
    assert b.num_batches("train", 32) == 22
    assert (b.n_features, b.n_targets, b.n_classes) == (3, 1, None)


def test_epochs_and_seeds_change_the_order(npy_bundle):
    b, _, _ = npy_bundle

    def order(**kw):
        return ids_of(collect(b, "train", 64, **kw)[0])

    e0, e0b, e1 = order(epoch=0, seed=3), order(epoch=0, seed=3), order(epoch=1, seed=3)
    np.testing.assert_array_equal(e0, e0b)
    assert not np.array_equal(e0, e1)
    assert not np.array_equal(e0, order(epoch=0, seed=4))
    assert sorted(e0.tolist()) == sorted(e1.tolist())
    assert (np.diff(order(epoch=1, shuffle=False)) > 0).all()


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_workers_do_not_change_the_output(npy_bundle):
    b, _, _ = npy_bundle
    ref = list(b.batches("train", 40, epoch=1, seed=2, rank=1, world=2))
    for workers in (2, 3):
        got = list(b.batches("train", 40, epoch=1, seed=2, rank=1, world=2, num_workers=workers))
        assert len(got) == len(ref)
        for (xa, ya), (xb, yb) in zip(ref, got):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("workers", [0, 2])
def test_start_batch_resumes_with_the_remaining_rows(npy_bundle, workers):
    b, _, _ = npy_bundle
    full = collect(b, "train", 50, epoch=3, seed=9)[0]
    for start in (0, 1, 5, len(full) - 1, len(full)):
        rest = collect(b, "train", 50, epoch=3, seed=9, start_batch=start, num_workers=workers)[0]
        assert len(rest) == len(full) - start
        for xa, xb in zip(full[start:], rest):
            np.testing.assert_array_equal(xa, xb)
    with pytest.raises(ConfigurationError, match="start_batch"):
        b.batches("train", 50, start_batch=len(full) + 1)


def test_rank_shares_union_to_the_global_batch(npy_bundle):
    b, _, _ = npy_bundle
    glob = collect(b, "train", 37, epoch=4, seed=1)[0]
    r0 = collect(b, "train", 37, epoch=4, seed=1, rank=0, world=2)[0]
    r1 = collect(b, "train", 37, epoch=4, seed=1, rank=1, world=2)[0]
    assert len(glob) == len(r0) == len(r1)
    for g, a, c in zip(glob, r0, r1):
        np.testing.assert_array_equal(g[0::2], a)
        np.testing.assert_array_equal(g[1::2], c)


def test_tiny_last_batch_gives_empty_shares(tmp_path):
    params, _, _ = write_npy_dataset(tmp_path, 21, 2)
    b = open_stream("npy", {**params, "block_rows": 4}, {"train": 0.8, "test": 0.2})
    assert b.size("train") == 17
    shares = [list(b.batches("train", 8, rank=r, world=3)) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    assert [len(s[-1][0]) for s in shares] == [1, 0, 0]
    x_empty, y_empty = shares[2][-1]
    assert x_empty.shape == (0, 2)
    assert y_empty.shape == (0, 1)


def test_standardisation_fitted_on_train_rows_only(tmp_path):
    params, x, y = write_npy_dataset(tmp_path, 3000, 4, k=2)
    raw = open_stream("npy", {**params, "block_rows": 128}, SPLIT, seed=1)
    std = open_stream("npy", {**params, "block_rows": 128}, SPLIT, seed=1, standardize=True)
    assert raw.x_mean is None
    assert raw.y_mean is None
    train = ids_of(collect(raw, "train", 10_000, shuffle=False)[0])
    np.testing.assert_allclose(std.x_mean, x[train].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std.x_std, x[train].std(axis=0), rtol=1e-10)
    np.testing.assert_allclose(std.y_mean, y[train].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std.y_std, y[train].std(axis=0), rtol=1e-10)
    assert not np.allclose(std.x_mean, x.mean(axis=0), rtol=1e-12)  # the other splits are out
    (xs, ys), (xr, yr) = next(std.batches("test", 64)), next(raw.batches("test", 64))
    np.testing.assert_allclose(xs, (xr - std.x_mean) / std.x_std)
    np.testing.assert_allclose(ys, (yr - std.y_mean) / std.y_std)
    np.testing.assert_allclose(std.inverse_y(ys), yr)
    np.testing.assert_allclose(std.transform_x(xr), xs)


def test_npy_classification_and_single_array(tmp_path):
    params, x, y = write_npy_dataset(tmp_path, 500, 2, classes=np.array([10.0, 2.0, 7.0]))
    b = open_stream("npy", {**params, "task": "classification", "block_rows": 50}, SPLIT,
                    standardize=True)
    assert b.classes == ["2", "7", "10"]
    assert b.y_mean is None
    assert b.x_mean is not None
    xb, yb = next(b.batches("train", 500, shuffle=False))
    assert yb.dtype == np.int64
    assert yb.shape == (len(xb),)
    rows = np.rint(xb * b.x_std + b.x_mean)[:, 0].astype(int)
    np.testing.assert_array_equal(np.array([2, 7, 10])[yb], y[rows])
    # one (N, m+1) array with the target in column 0
    both = np.column_stack([y, x])
    np.save(tmp_path / "both.npy", both)
    c = open_stream("npy", {"path": str(tmp_path / "both.npy"), "target": 0,
                            "task": "classification"}, SPLIT)
    xc, yc = next(c.batches("val", 100, shuffle=False))
    np.testing.assert_array_equal(np.array([2, 7, 10])[yc], y[xc[:, 0].astype(int)])
    # fractional labels are refused
    np.save(tmp_path / "frac.npy", y + 0.5)
    with pytest.raises(ConfigurationError, match=r"not an integer"):
        open_stream("npy", {"x": params["x"], "y": str(tmp_path / "frac.npy"),
                            "task": "classification"})


def test_npy_errors(tmp_path):
    params, x, y = write_npy_dataset(tmp_path, 300, 3)
    with pytest.raises(ConfigurationError, match="does not exist"):
        open_stream("npy", {"x": str(tmp_path / "nope.npy"), "y": params["y"]})
    with pytest.raises(ConfigurationError, match="needs x and y"):
        open_stream("npy", {"x": params["x"]})
    np.save(tmp_path / "short.npy", y[:10])
    with pytest.raises(ConfigurationError, match="300 rows but y has 10"):
        open_stream("npy", {"x": params["x"], "y": str(tmp_path / "short.npy")})
    np.save(tmp_path / "both.npy", np.column_stack([x, y]))
    with pytest.raises(ConfigurationError, match="out of range"):
        open_stream("npy", {"path": str(tmp_path / "both.npy"), "target": 7})
    np.save(tmp_path / "text.npy", np.array([["a", "b"]] * 300))
    with pytest.raises(ConfigurationError, match="not real numbers"):
        open_stream("npy", {"x": str(tmp_path / "text.npy"), "y": params["y"]})
    bad = x.copy()
    bad[157, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ConfigurationError, match=r"NaN value in column 'x2' at row 157"):
        open_stream("npy", {"x": str(tmp_path / "nan.npy"), "y": params["y"], "block_rows": 50})
    # without the open-time scan the block reports it when read
    lazy = open_stream("npy", {"x": str(tmp_path / "nan.npy"), "y": params["y"], "block_rows": 50,
                               "validate": False}, {"train": 0.5, "test": 0.5})
    with pytest.raises(ConfigurationError, match=r"row 157"):
        [batch for split in ("train", "test") for batch in lazy.batches(split, 64)]
    bad_y = y.copy()
    bad_y[12] = np.inf
    np.save(tmp_path / "inf.npy", bad_y)
    with pytest.raises(ConfigurationError, match=r"inf value in column 'y' at row 12"):
        open_stream("npy", {"x": params["x"], "y": str(tmp_path / "inf.npy")})


def test_bad_arguments(npy_bundle):
    b, _, _ = npy_bundle
    with pytest.raises(ConfigurationError, match="unknown split 'valid'"):
        b.size("valid")
    with pytest.raises(ConfigurationError, match="rank"):
        b.batches("train", 8, rank=2, world=2)
    with pytest.raises(ConfigurationError, match="batch_size"):
        b.batches("train", 0)
    with pytest.raises(ConfigurationError, match="sum to 1"):
        open_stream("npy", {"x": b.info["path"], "y": b.info["y_path"]}, {"train": 0.5, "test": 0.2})


# ----------------------------------------------------------------------------- csv
def write_csv(path, rows, header=None):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)


def test_csv_regression_matches_the_file(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(250, 4))
    data[:, 0] = np.arange(250)
    path = tmp_path / "d.csv"
    write_csv(path, [[repr(float(v)) for v in r] for r in data], ["id", "a", "b", "target"])
    with open(path, "a") as f:
        f.write("\n\n")  # trailing blank lines are ignored
    b = open_stream("csv", {"path": str(path), "target": "target", "features": ["id", "b"],
                            "block_rows": 16}, SPLIT, seed=2)
    assert b.feature_names == ["id", "b"]
    assert b.target_names == ["target"]
    assert sum(b.size(s) for s in ("train", "val", "test")) == 250
    seen = []
    for split in ("train", "val", "test"):
        for world_rank in range(2):
            for xb, yb in b.batches(split, 20, epoch=1, rank=world_rank, world=2):
                rows = xb[:, 0].astype(int)
                np.testing.assert_array_equal(xb[:, 1], data[rows, 2])
                np.testing.assert_array_equal(yb[:, 0], data[rows, 3])
                seen.extend(rows.tolist())
    assert sorted(seen) == list(range(250))


def test_csv_string_labels_quotes_and_no_header(tmp_path):
    names = ["setosa", "versicolor", "virginica", "10", "9"]
    rng = np.random.default_rng(1)
    labels = [names[i] for i in rng.integers(0, 3, 120)]
    rows = [[str(i), f"{v:.3f}", f"note, with comma {i}", lab] for i, (v, lab) in
            enumerate(zip(rng.normal(size=120), labels))]
    rows[5][2] = "multi\nline \"quoted\" note"
    path = tmp_path / "labels.csv"
    write_csv(path, rows, ["id", "v", "note", "species"])
    b = open_stream("csv", {"path": str(path), "features": ["id", "v"], "target": "species",
                            "task": "classification", "block_rows": 8}, SPLIT)
    assert b.classes == ["setosa", "versicolor", "virginica"]
    assert b.n_classes == 3
    got = {}
    for split in ("train", "val", "test"):
        for workers in (0, 2):
            for xb, yb in b.batches(split, 16, num_workers=workers):
                assert yb.dtype == np.int64
                for i, c in zip(xb[:, 0].astype(int).tolist(), yb.tolist()):
                    got[i] = b.classes[c]
    assert got == dict(enumerate(labels))
    # integer-looking string labels sort by value; no header: columns c0, c1, ...
    path2 = tmp_path / "nohead.csv"
    write_csv(path2, [[str(i), str(i * 0.5), ["10", "9", "007"][i % 3]] for i in range(30)])
    c = open_stream("csv", {"path": str(path2), "header": False, "task": "classification"})
    assert c.feature_names == ["c0", "c1"]
    assert c.classes == ["007", "9", "10"]


def test_csv_errors(tmp_path):
    path = tmp_path / "e.csv"
    rows = [[str(i), str(i * 2.0), str(i % 3)] for i in range(40)]
    write_csv(path, rows, ["a", "b", "label"])
    with pytest.raises(ConfigurationError, match="does not exist"):
        open_stream("csv", {"path": str(tmp_path / "missing.csv")})
    with pytest.raises(ConfigurationError, match=r"no column 'lable' \(did you mean 'label'\?\)"):
        open_stream("csv", {"path": str(path), "target": "lable"})
    with pytest.raises(ConfigurationError, match="out of range"):
        open_stream("csv", {"path": str(path), "target": 5})
    with pytest.raises(ConfigurationError, match="also a feature"):
        open_stream("csv", {"path": str(path), "target": "a", "features": ["a", "b"]})
    rows[20][1] = "twelve"
    write_csv(path, rows, ["a", "b", "label"])
    with pytest.raises(ConfigurationError, match=r"column 'b' at line 22 holds 'twelve', which is not a number"):
        open_stream("csv", {"path": str(path), "block_rows": 8})
    rows[20][1] = "nan"
    write_csv(path, rows, ["a", "b", "label"])
    with pytest.raises(ConfigurationError, match=r"NaN value in column 'b' at line 22"):
        open_stream("csv", {"path": str(path), "block_rows": 8})
    rows[20] = ["1", "2"]
    write_csv(path, rows, ["a", "b", "label"])
    with pytest.raises(ConfigurationError, match=r"line 22 has 2 fields, expected 3"):
        open_stream("csv", {"path": str(path), "block_rows": 8})
    path.write_text("a,b\n1,\"2\n")
    with pytest.raises(ConfigurationError, match="never closed"):
        open_stream("csv", {"path": str(path)})
    path.write_text("a,b\n")
    with pytest.raises(ConfigurationError, match="no data rows"):
        open_stream("csv", {"path": str(path)})


# ----------------------------------------------------------------------------- parquet
def test_parquet_regression_and_string_labels(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 300
    rng = np.random.default_rng(3)
    a = rng.normal(size=n)
    labels = np.array(["cat", "dog", "emu"])[rng.integers(0, 3, n)]
    table = pa.table({"id": np.arange(n, dtype=np.int32), "a": a, "y": a * 3.0,
                      "animal": labels, "note": ["x"] * n})
    path = tmp_path / "d.parquet"
    pq.write_table(table, path, row_group_size=32)
    b = open_stream("parquet", {"path": str(path), "target": "y", "features": ["id", "a"]},
                    SPLIT, standardize=True)
    assert b.info["row_groups"] == 10
    seen = []
    for split in ("train", "val", "test"):
        for xb, yb in b.batches(split, 25, num_workers=2 if split == "train" else 0):
            raw = xb * b.x_std + b.x_mean
            rows = np.rint(raw[:, 0]).astype(int)
            np.testing.assert_allclose(b.inverse_y(yb)[:, 0], a[rows] * 3.0)
            seen.extend(rows.tolist())
    assert sorted(seen) == list(range(n))
    c = open_stream("parquet", {"path": str(path), "target": "animal", "features": ["id"],
                                "task": "classification"}, SPLIT)
    assert c.classes == ["cat", "dog", "emu"]
    for xb, yb in c.batches("train", 64):
        np.testing.assert_array_equal(np.array(c.classes)[yb], labels[xb[:, 0].astype(int)])
    with pytest.raises(ConfigurationError, match=r"column 'note' has type string"):
        open_stream("parquet", {"path": str(path), "target": "y", "features": ["a", "note"]})
    with pytest.raises(ConfigurationError, match=r"no column 'yy'"):
        open_stream("parquet", {"path": str(path), "target": "yy"})
    with_null = pa.table({"a": pa.array([1.0, None, 3.0, 4.0]), "y": [1.0, 2.0, 3.0, 4.0]})
    pq.write_table(with_null, tmp_path / "null.parquet", row_group_size=2)
    with pytest.raises(ConfigurationError, match=r"missing value in column 'a' at row 1"):
        open_stream("parquet", {"path": str(tmp_path / "null.parquet")}, {"train": 0.5, "test": 0.5})


def test_module_imports_without_pyarrow_and_names_it_when_needed(tmp_path):
    code = (
        "import sys\n"
        "for m in ('pyarrow', 'pyarrow.parquet', 'pyarrow.compute'): sys.modules[m] = None\n"
        "from rpnkit.data.streaming import open_stream, MissingPackageError\n"
        "try:\n"
        f"    open_stream('parquet', {{'path': {str(tmp_path / 'x.parquet')!r}}})\n"
        "except MissingPackageError as exc:\n"
        "    assert isinstance(exc, ImportError)\n"
        "    print('ERR', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout
    assert "'pyarrow'" in out.stdout
    assert issubclass(MissingPackageError, ConfigurationError)


# ----------------------------------------------------------------------------- function
FN = {"expression": "exp(sin(3*x0)) * x1 + x1**2", "ranges": [[0, 1], [-1, 2]], "n": 5000,
      "block_rows": 256}


def test_function_source_is_reproducible_and_correct():
    a = open_stream("function", FN, SPLIT, seed=4)
    b = open_stream("function", FN, SPLIT, seed=4)
    c = open_stream("function", FN, SPLIT, seed=5)
    xa, ya = next(a.batches("train", 100, epoch=2))
    xb, yb = next(b.batches("train", 100, epoch=2))
    xc, _ = next(c.batches("train", 100, epoch=2))
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(xa, xc)
    np.testing.assert_allclose(ya[:, 0], np.exp(np.sin(3 * xa[:, 0])) * xa[:, 1] + xa[:, 1] ** 2)
    assert (xa[:, 1] >= -1).all()
    assert (xa[:, 1] <= 2).all()
    assert a.feature_names == ["x0", "x1"]
    assert a.formula is not None
    # the same rows whatever the worker count; pickles for spawned workers
    got = list(a.batches("val", 64, num_workers=2))
    ref = list(pickle.loads(pickle.dumps(a)).batches("val", 64))
    assert len(got) == len(ref) == a.num_batches("val", 64)
    for (x1, y1), (x2, y2) in zip(got, ref):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    noisy = open_stream("function", {**FN, "noise": 0.1}, SPLIT, seed=4)
    xn, yn = next(noisy.batches("train", 100, epoch=2))
    np.testing.assert_array_equal(xn, xa)
    assert 0 < np.abs(yn - ya).max() < 1


def test_function_source_never_materialises():
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        b = open_stream("function", {"expression": "x0 * x1 + x2", "ranges": [[0, 1]] * 3,
                                     "n": 10**9}, {"train": 0.9, "val": 0.05, "test": 0.05})
        xb, yb = next(b.batches("train", 512, epoch=7, seed=1, rank=1, world=4))
        last = list(b.batches("test", 10_000, start_batch=b.num_batches("test", 10_000) - 1))
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert b.size("train") == 900_000_000
    assert b.size("test") == 50_000_000
    assert xb.shape == (128, 3)
    np.testing.assert_allclose(yb[:, 0], xb[:, 0] * xb[:, 1] + xb[:, 2])
    assert len(last) == 1
    assert len(last[0][0]) == 10_000
    assert peak < 64 * 2**20, f"peak traced memory {peak / 2**20:.0f} MiB"
    assert elapsed < 20


def test_function_source_errors():
    with pytest.raises(ConfigurationError, match=r"NaN value in column 'y' at row 0"):
        open_stream("function", {"expression": "log(x0)", "ranges": [[-2, -1]], "n": 100})
    with pytest.raises(ConfigurationError, match="n \\(the number of rows\\) must be an integer"):
        open_stream("function", {"expression": "x0", "n": 1})
    with pytest.raises(ConfigurationError, match="not allowed"):
        open_stream("function", {"expression": "__import__('os')", "n": 100})
