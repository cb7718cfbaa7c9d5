"""Issue 22, last parts: inputs larger than memory (predict streams csv/npy/parquet in
chunks and writes --out incrementally and atomically; an in-memory csv too large for memory
is refused before it is read), plot output through a renamed temporary file, bounded
budget messages for huge widths, torchrun's report naming rpnkit's line, train.epochs
bounded, no RuntimeWarning before a predict refusal."""

from __future__ import annotations

import csv
import json
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

import rpnkit
from rpnkit.cli import main
from rpnkit.data import load_data, readers
from rpnkit.data.readers import iter_features, memory_estimate, read_features
from rpnkit.errors import ConfigurationError

CFG = {
    "seed": 2, "device": "cpu", "plots": False,
    "data": {"name": "function", "expression": "cos(2*x0) + x0*x1",
             "ranges": [[-1, 1], [-1, 1]], "n_samples": 200,
             "split": {"train": 0.5, "val": 0.1, "test": 0.4},
             "standardize": True, "standardize_target": True},
    "model": {"name": "torch_mlp", "dims": [2, 8, 1]},
    "train": {"epochs": 3, "batch_size": 20, "dtype": "float64",
              "optimizer": {"name": "adam", "lr": 0.01}},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    cfg = root / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG), encoding="utf-8")
    assert main(["train", str(cfg), "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


def _peak(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _big_csv(path: Path, rows: int, header: str = "x0,x1,y") -> np.ndarray:
    x = np.random.default_rng(0).uniform(-1, 1, size=(rows, 3))
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + "\n")
        np.savetxt(f, x, delimiter=",", fmt="%.17g")
    return x


# ----------------------------------------------------------------------------- readers
def test_csv_is_read_in_chunks_with_bounded_memory(tmp_path):
    path = tmp_path / "big.csv"
    x = _big_csv(path, 300_000)  # ~17 MB
    size = path.stat().st_size

    def consume():
        total, n = np.zeros(2), 0
        for chunk in iter_features(path, ["x1", "x0"], chunk_rows=4096):
            assert chunk.shape[1] == 2
            assert len(chunk) <= 4096
            total += chunk.sum(axis=0)
            n += len(chunk)
        return total, n

    (total, n), peak = _peak(consume)
    assert n == len(x)
    np.testing.assert_allclose(total, x[:, [1, 0]].sum(axis=0), rtol=1e-12)
    assert peak < min(size / 4, 6 * 2**20), (peak, size)  # a few blocks, whatever the size


def test_csv_chunks_keep_line_numbers_and_checks(tmp_path):
    path = tmp_path / "bad.csv"
    lines = ["a,b"] + [f"{i},{i}" for i in range(10_000)]
    lines[9_001] = "1,x"  # file line 9002
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    chunks = iter_features(path, None, chunk_rows=1000)
    got = [next(chunks) for _ in range(9)]  # the chunks before the bad line are served
    assert sum(len(c) for c in got) == 9000
    with pytest.raises(ConfigurationError, match="line 9002: column 'b' holds 'x'"):
        next(chunks)
    # a bad byte far into the file is reported at its line, not the block's
    data = ("a,b\n" + "".join(f"{i},{i}\n" for i in range(200_000))).encode()
    k = data.index(b"\n150000,") + 1
    (tmp_path / "latin.csv").write_bytes(data[:k] + b"\xe9" + data[k:])
    with pytest.raises(ConfigurationError, match="byte 0xe9 at line 150002"):
        read_features(tmp_path / "latin.csv")
    (tmp_path / "long.csv").write_bytes(b"a,b\n" + b"1" * (readers.MAX_LINE_BYTES + 10))
    with pytest.raises(ConfigurationError, match="line 2 is longer than 64 MiB"):
        read_features(tmp_path / "long.csv")


@pytest.mark.parametrize("order", ["C", "F"])
def test_npy_is_read_in_row_chunks_with_bounded_memory(tmp_path, order):
    x = np.random.default_rng(1).normal(size=(400_000, 9)).astype(">f8")  # ~29 MB
    np.save(tmp_path / "x.npy", np.asfortranarray(x) if order == "F" else x)
    size = (tmp_path / "x.npy").stat().st_size
    names = [f"f{i}" for i in range(8)]  # a trailing target column is dropped

    def consume():
        total, n = np.zeros(8), 0
        for chunk in iter_features(tmp_path / "x.npy", names, chunk_rows=8192):
            assert chunk.dtype == np.float64
            assert len(chunk) <= 8192
            total += chunk.sum(axis=0)
            n += len(chunk)
        return total, n

    (total, n), peak = _peak(consume)
    assert n == len(x)
    np.testing.assert_allclose(total, x[:, :8].astype(np.float64).sum(axis=0), rtol=1e-9)
    assert peak < size / 8, (peak, size)
    np.testing.assert_array_equal(read_features(tmp_path / "x.npy", names)[:1000], x[:1000, :8])


def test_parquet_is_read_by_row_groups_with_bounded_memory(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    x = np.random.default_rng(2).normal(size=(600_000, 4))  # ~19 MB
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": x[:, 3]}),
                   tmp_path / "x.parquet", row_group_size=20_000)
    size = (tmp_path / "x.parquet").stat().st_size

    def consume():
        total, n = np.zeros(2), 0
        for chunk in iter_features(tmp_path / "x.parquet", ["c", "a"], chunk_rows=8192):
            total += chunk.sum(axis=0)
            n += len(chunk)
        return total, n

    (total, n), peak = _peak(consume)
    assert n == len(x)
    np.testing.assert_allclose(total, x[:, [2, 0]].sum(axis=0), rtol=1e-9)
    assert peak < size / 4, (peak, size)
    # a missing value is reported at its row in the whole file
    col = pa.array(np.r_[np.ones(50_000), [np.nan]], mask=np.r_[np.zeros(50_000, bool), [True]])
    pq.write_table(pa.table({"a": col}), tmp_path / "m.parquet", row_group_size=7_000)
    with pytest.raises(ConfigurationError, match="missing value in column 'a' at row 50000"):
        read_features(tmp_path / "m.parquet", ["a"])


# ----------------------------------------------------------------------------- predict
def test_predict_streams_a_large_csv_to_out_with_bounded_memory(run, tmp_path, capsys):
    data = tmp_path / "in.csv"
    x = _big_csv(data, 150_000)  # ~8 MB of text
    size = data.stat().st_size
    out = tmp_path / "p.csv"
    rc, peak = _peak(lambda: main(["predict", str(run), str(data), "--out", str(out)]))
    assert rc == 0, capsys.readouterr().err
    assert peak < size, (peak, size)  # reading it whole took ~8x its size
    with open(out, encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["y"]
    assert len(rows) == len(x) + 1
    want = rpnkit.load_run(run).predict(x[:, :2])
    np.testing.assert_allclose(np.array(rows[1:], dtype=float)[:, 0], want, rtol=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "p.csv"]


def test_predict_error_late_in_the_file_leaves_no_out(run, tmp_path, capsys):
    data = tmp_path / "in.csv"
    text = "x0,x1\n" + "".join(f"{i / 1e5},0.5\n" for i in range(30_000)) + "1e400,0\n"
    data.write_text(text, encoding="utf-8")
    out = tmp_path / "p.csv"
    out.write_text("old\n")
    assert main(["predict", str(run), str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rpnkit: error: input row 30000 holds NaN or inf"], err
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "p.csv"]


def test_predict_overflowing_standardisation_is_refused_without_warnings(run, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.array([[0.1, 0.2]] * 5 + [[1.7e308, -1.7e308]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["predict", str(run), str(tmp_path / "x.npy")]) == 2
        with pytest.raises(ConfigurationError, match="input row 0 holds values too large"):
            rpnkit.load_run(run).predict(np.array([[1.7e308, -1.7e308]]))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "input row 5 holds values too large to standardise" in err[0], err


# ----------------------------------------------------------------------------- training
def test_csv_estimate_bounds_the_real_peak(tmp_path):
    path = tmp_path / "t.csv"
    _big_csv(path, 40_000)
    params = {"path": str(path), "target": "y", "task": "regression"}
    _, peak = _peak(lambda: load_data("csv", params, {"train": 0.8, "val": 0.1, "test": 0.1},
                                      0, True))
    need = memory_estimate(path)
    assert peak <= need <= 3 * peak, (peak, need)


def test_csv_too_large_for_memory_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "t.csv"
    _big_csv(path, 200_000)  # ~11 MB
    size = path.stat().st_size
    monkeypatch.setattr(readers, "available_memory", lambda: 20 * 2**20)
    params = {"path": str(path), "target": "y", "task": "regression"}

    def load():
        with pytest.raises(ConfigurationError) as info:
            load_data("csv", params, {"train": 0.8, "val": 0.1, "test": 0.1}, 0, True)
        return str(info.value)

    msg, peak = _peak(load)
    assert "more than the 21.0 MB available" in msg, msg
    assert "data.stream: true" in msg, msg
    assert "\n" not in msg
    assert peak < size / 4, (peak, size)  # refused from the file's size, not after reading it
    # the streaming reader it suggests reads the same file
    from rpnkit.data import open_stream

    bundle = open_stream("csv", params, {"train": 0.8, "val": 0.1, "test": 0.1}, 0, True)
    assert bundle.n_rows == 200_000


# ----------------------------------------------------------------------------- plot
def test_model_view_replaces_a_link_at_the_target_and_never_follows_it(tmp_path):
    pytest.importorskip("matplotlib")
    from rpnkit.inspection import model_view

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "view.png"
    out.symlink_to(victim)
    model = rpnkit.RPN.from_dims([2, 1], expansion="taylor")
    x = np.random.default_rng(0).uniform(-1, 1, size=(50, 2))
    assert model_view(model, out, x=x) == out
    assert victim.read_text() == "keep me"
    assert not out.is_symlink()
    assert out.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt", "view.png"]


def test_model_view_failed_save_leaves_nothing(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from rpnkit.inspection import model_view

    def broken(self, *args, **kwargs):
        Path(args[0]).write_bytes(b"half a png")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", broken)
    model = rpnkit.RPN.from_dims([2, 1], expansion="taylor")
    with pytest.raises(KeyboardInterrupt):
        model_view(model, tmp_path / "v.svg", x=np.zeros((4, 2)))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- smaller items
def test_huge_width_message_is_short_and_complete(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    code = main(["train", str(cfg), "--out", str(tmp_path / "o"), "--set",
                 f"model.dims=[2,{'9' * 99},1]", "--set", "model.name=rpn"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err, err
    assert len(err) < 500, err
    assert not err.endswith("..."), err  # nothing cut: the cheaper alternatives are all there
    assert "e+99 learnable numbers" in err, err
    assert "Cheaper:" in err, err


def test_torchrun_report_shows_rpnkits_line(tmp_path, monkeypatch, capsys):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    efile = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(efile))
    assert main(["predict", str(tmp_path / "nope"), str(tmp_path / "x.csv")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("rpnkit: error: ")
    assert "\n" not in line
    json.loads(efile.read_text())
    failure = ProcessFailure(local_rank=0, pid=1, exitcode=2, error_file=str(efile))
    report = ChildFailedError("rpnkit", {0: failure}).format_msg()
    assert f"traceback : {line}" in report
    assert "To enable traceback" not in report


def test_train_epochs_are_bounded(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    assert main(["train", str(cfg), "--out", str(tmp_path / "o"), "--set",
                 "train.epochs=100000000000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.epochs" in err, err
    assert "10000000" in err, err
    assert not (tmp_path / "o").exists()
