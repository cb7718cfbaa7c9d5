"""Class labels as trained: integers stay integers, text stays text (with the numpy dtype)
through model.pt, load_run, predict (Python and CLI) and the label metadata."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import accuracy_score

import rpnkit
from rpnkit.cli import main
from rpnkit.predict import class_labels, label_metadata, preprocessing_of
from rpnkit.training.engine import as_bundle


def _data(n: int = 90) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.4).astype(int)
    return x, y


def _csv(path: Path, x: np.ndarray, labels) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "label"])
        for r, t in zip(x, labels):
            w.writerow([repr(float(r[0])), repr(float(r[1])), t])
    return path


def _train(tmp_path: Path, data: Path, name: str = "run") -> Path:
    cfg = {"seed": 0, "data": {"name": "csv", "path": str(data), "target": "label",
                               "standardize": True},
           "model": {"dims": [2, 3], "expansion": "taylor"},
           "train": {"epochs": 30, "optimizer": {"name": "adam", "lr": 0.05}}, "plots": False}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = tmp_path / name
    assert main(["train", str(path), "--out", str(out), "--quiet"]) == 0
    return out


def _predict_csv(run: Path, data: Path, out: Path, *extra: str) -> tuple[list[str], list[list[str]]]:
    assert main(["predict", str(run), str(data), "--out", str(out), *extra]) == 0
    with open(out, encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def int_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int_labels")
    x, y = _data()
    data = _csv(tmp / "train.csv", x, y)
    return _train(tmp, data), data, x, y


def test_integer_labels_come_back_as_integers(int_run, tmp_path, capsys):
    run, data, x, y = int_run
    loaded = rpnkit.load_run(run)
    assert loaded.classes.dtype == np.int64
    assert loaded.classes.tolist() == [0, 1, 2]
    pred = loaded.predict(x)
    assert pred.dtype == np.int64  # was object strings '0', '1', '2'
    assert (pred == y).mean() > 0.6  # was 0.0: '1' != 1
    assert accuracy_score(y, pred) == pytest.approx((pred == y).mean())  # no "Mix of label types"
    header, rows = _predict_csv(run, data, tmp_path / "p.csv")
    capsys.readouterr()
    assert header == ["prediction"]
    assert [r[0] for r in rows] == [str(v) for v in pred]  # "1", as in the input, not "1.0"
    header, _ = _predict_csv(run, data, tmp_path / "q.csv", "--proba")
    assert header == ["p(0)", "p(1)", "p(2)"]


def test_model_file_stores_labels_with_their_dtype(int_run):
    from rpnkit.training.checkpoint import load_checked

    pre = load_checked(int_run[0] / "model.pt")["preprocessing"]
    assert pre["classes"] == [0, 1, 2]
    assert np.dtype(pre["class_dtype"]) == np.int64


def test_text_labels_stay_text_as_written(tmp_path, capsys):
    x, y = _data()
    names = np.array(["007", "9", "10"])  # 007 is not a plain integer: all stay text
    data = _csv(tmp_path / "train.csv", x, names[y])
    run = _train(tmp_path, data)
    loaded = rpnkit.load_run(run)
    assert loaded.classes.dtype.kind == "U"
    assert loaded.classes.tolist() == ["007", "9", "10"]
    pred = loaded.predict(x)
    assert pred.dtype.kind == "U"
    assert set(pred.tolist()) <= {"007", "9", "10"}
    _, rows = _predict_csv(run, data, tmp_path / "p.csv")
    capsys.readouterr()
    assert [r[0] for r in rows] == pred.tolist()  # "007" written as in the input


def test_string_labels_keep_str_dtype(tmp_path, capsys):
    x, y = _data()
    data = _csv(tmp_path / "train.csv", x, np.array(["cat", "dog", "emu"])[y])
    run = _train(tmp_path, data)
    pred = rpnkit.load_run(run).predict(x)
    assert pred.dtype == np.dtype("<U3")
    assert (pred == np.array(["cat", "dog", "emu"])[y]).mean() > 0.6
    capsys.readouterr()


def test_old_model_file_without_dtype_loads_strings(int_run, tmp_path):
    import shutil

    from rpnkit.training.checkpoint import atomic_torch_save, load_checked

    run = tmp_path / "old"
    shutil.copytree(int_run[0], run)
    payload = load_checked(run / "model.pt")
    payload.pop("sha256", None)
    pre = payload["preprocessing"]
    pre.pop("class_dtype")
    pre["classes"] = [str(c) for c in pre["classes"]]  # as written before
    atomic_torch_save(payload, run / "model.pt")
    loaded = rpnkit.load_run(run)
    assert loaded.classes.tolist() == ["0", "1", "2"]
    assert loaded.predict(int_run[2][:4]).dtype == object


def test_bundle_labels_from_text_and_from_arrays():
    class B:  # a bundle read from text: integer labels when all are plain integers
        def __init__(self, classes):
            self.classes, self.task = classes, "classification"
            self.feature_names, self.target_names = ["a"], ["y"]
            self.x_mean = self.x_std = self.y_mean = self.y_std = None

    pre = preprocessing_of(B(["-3", "0", "12"]), "cross_entropy")
    assert pre["classes"] == [-3, 0, 12]
    assert np.dtype(pre["class_dtype"]) == np.int64
    for text in (["+1", "2"], ["01", "2"], ["a", "1"], [str(2**63), "1"]):
        labels = class_labels(text)
        assert labels.dtype.kind == "U"
        assert labels.tolist() == text
    for dtype in (np.int32, np.uint8, np.bool_, np.int64):
        y = (np.arange(10) % 2).astype(dtype)
        bundle = as_bundle((np.zeros((10, 1)), y))
        labels = class_labels(bundle.classes, bundle.class_dtype)
        assert labels.dtype == np.dtype(dtype)
        assert labels.tolist() == np.unique(y).tolist()
        meta = label_metadata(labels)  # JSON-able, read back with its dtype
        again = class_labels(meta["classes"], meta["class_dtype"])
        assert again.dtype == labels.dtype
        assert again.tolist() == labels.tolist()
    assert label_metadata(None) == {"classes": None, "class_dtype": None}
