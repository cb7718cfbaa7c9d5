"""Exports for deployment: ``rpnkit export RUN`` takes RAW features and gives raw predictions.

Every model family is trained on its own CSV, exported (torch.export ``.pt2`` by default, and
ONNX), and each artefact is loaded in a FRESH Python process that imports only torch /
onnxruntime (no rpnkit): its outputs on raw rows must equal ``rpnkit predict`` on the same
raw CSV, and the metadata must name the features, the task and the typed class labels."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from rpnkit.cli import main
from rpnkit.predict import read_export_metadata

RNG = np.random.default_rng(0)

# what a deployment does: no rpnkit, raw float64 rows in
LOADER = r"""
import json, sys
import numpy as np
import torch
path, data = sys.argv[1], sys.argv[2]
x = np.load(data)
if path.endswith(".onnx"):
    import onnx, onnxruntime as ort
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}["rpnkit.json"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": x})[0]
elif path.endswith(".ts"):
    extra = {"rpnkit.json": ""}
    y = torch.jit.load(path, _extra_files=extra)(torch.from_numpy(x)).detach().numpy()
    meta = extra["rpnkit.json"]
else:
    extra = {"rpnkit.json": ""}
    program = torch.export.load(path, extra_files=extra)
    y = program.module()(torch.from_numpy(x)).detach().numpy()
    meta = extra["rpnkit.json"]
assert "rpnkit" not in sys.modules
print(json.dumps({"y": np.asarray(y, dtype=np.float64).tolist(), "meta": json.loads(meta)}))
"""


def _csv(path: Path, header: list[str], x: np.ndarray, y) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row, t in zip(x, y):
            w.writerow([repr(float(v)) for v in row] + [t if isinstance(t, str) else repr(t)])
    return path


def _regression_csv(tmp: Path) -> Path:
    x = RNG.uniform([-1, 10], [1, 30], size=(160, 2))  # raw units far from standardised
    y = 100.0 + 20.0 * x[:, 0] * np.sin(x[:, 1] / 5)
    return _csv(tmp / "reg.csv", ["speed", "temp", "power"], x, [float(v) for v in y])


def _classification_csv(tmp: Path, classes: list[int]) -> Path:
    x = RNG.normal(size=(150, 4)) * [1, 5, 0.1, 2] + [0, 50, 1, -3]
    score = x[:, 0] + (x[:, 1] - 50) / 5 + 10 * (x[:, 2] - 1)
    idx = np.digitize(score, np.quantile(score, np.linspace(0, 1, len(classes) + 1)[1:-1]))
    labels = [int(classes[i]) for i in idx]
    name = f"cls{len(classes)}.csv"
    return _csv(tmp / name, ["a", "b", "c", "d", "label"], x, labels)


REG = {"expansion": {"name": "extended", "expansions": [{"name": "bspline"},
                                                      {"name": "taylor", "d": 2}]},
       "reconciliation": {"name": "lorr", "r": 1}}
FAMILIES = {  # name: (data, model, extra train options)
    "rpn_ext": ("reg", {"dims": [2, 2, 1], **REG}, {}),
    "kan": ("reg", {"name": "kan", "dims": [2, 3, 1]}, {}),
    "taylor_lorr": ("reg", {"dims": [2, 3, 1], "expansion": {"name": "taylor", "d": 2},
                            "reconciliation": {"name": "lorr", "r": 1}}, {}),
    "kronecker": ("cls3", {"dims": [4, 6, 3], "expansion": {"name": "taylor", "d": 2},
                           "reconciliation": {"name": "dual_lphm", "p": 3, "q": 2}}, {}),
    "classifier_int": ("cls2", {"dims": [4, 1], "expansion": "taylor"}, {"loss": "bce"}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    data = {"reg": _regression_csv(tmp), "cls3": _classification_csv(tmp, [3, 7, 11]),
            "cls2": _classification_csv(tmp, [0, 5])}
    out = {}
    for name, (which, model, train) in FAMILIES.items():
        target = "power" if which == "reg" else "label"
        cfg = {"seed": 0, "data": {"name": "csv", "path": str(data[which]), "target": target,
                                   "standardize": True,
                                   "split": {"train": 0.8, "val": 0.0, "test": 0.2}},
               "model": model,
               "train": {"epochs": 3, "optimizer": {"name": "adam", "lr": 0.02}, **train},
               "plots": False}
        if which == "reg":
            cfg["data"]["standardize_target"] = True
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        assert main(["train", str(path), "--out", str(tmp / name), "--quiet"]) == 0
        out[name] = (tmp / name, data[which])
    return out


def _predict(run: Path, data: Path, out: Path, proba: bool) -> tuple[list[str], np.ndarray]:
    args = ["predict", str(run), str(data), "--out", str(out)] + (["--proba"] if proba else [])
    assert main(args) == 0
    with open(out, encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=float)


def _fresh(path: Path, x: np.ndarray, tmp: Path) -> dict:
    np.save(tmp / "x.npy", x)
    res = subprocess.run([sys.executable, "-c", LOADER, str(path), str(tmp / "x.npy")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_exports_take_raw_data_and_match_rpnkit_predict(runs, family, tmp_path, capsys):
    run, data = runs[family]
    classify = FAMILIES[family][0] != "reg"
    with open(data, encoding="utf-8") as f:
        rows = list(csv.reader(f))
    x = np.array([r[:-1] for r in rows[1:]], dtype=np.float64)[:40]  # raw, unstandardised
    _csv(tmp_path / "in.csv", rows[0], x, [r[-1] for r in rows[1:41]])
    header, want = _predict(run, tmp_path / "in.csv", tmp_path / "p.csv", proba=classify)
    assert main(["export", str(run), "--out", str(tmp_path / "m.pt2")]) == 0
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    for art in ("m.pt2", "m.onnx"):
        got = _fresh(tmp_path / art, x, tmp_path)
        y = np.array(got["y"])
        assert y.shape == (len(x), want.shape[1])
        # pt2 runs the same float ops as predict; ONNX Runtime may fuse them differently
        tol = 1e-6 if art.endswith(".pt2") else 1e-5
        np.testing.assert_allclose(y, want, rtol=tol, atol=tol * np.abs(want).max())
        meta = got["meta"]
        assert meta == read_export_metadata(tmp_path / art)
        assert meta["task"] == ("classification" if classify else "regression")
        assert meta["feature_names"] == rows[0][:-1]
        assert meta["input"]["dtype"] == "float64"
        if classify:
            assert header == [f"p({c})" for c in meta["classes"]]
            assert meta["class_dtype"] == np.dtype(np.int64).str
            assert all(isinstance(c, int) for c in meta["classes"])
            np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-9)
        else:
            assert meta["target_names"] == ["power"]
            assert abs(y.mean() - 100.0) < 60  # raw units (standardised would be near 0)


def test_default_export_is_pt2_and_never_replaces_run_files(runs, capsys):
    run, _ = runs["taylor_lorr"]
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["export", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "model.pt2")
    assert read_export_metadata(run / "model.pt2")["format"] == "rpnkit-export/1"
    assert main(["export", str(run), "--out", str(run / "model.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "never replaces" in err[0]
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != "model.pt2"} == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp") or ".tmp." in p.name]


def test_torchscript_where_it_works_and_one_line_naming_the_component(runs, tmp_path, capsys):
    run, data = runs["taylor_lorr"]
    assert main(["export", str(run), "--format", "torchscript",
                 "--out", str(tmp_path / "m.ts")]) == 0
    x = np.array([[0.5, 20.0], [-0.3, 12.0]])
    got = _fresh(tmp_path / "m.ts", x, tmp_path)
    import rpnkit

    np.testing.assert_allclose(np.array(got["y"])[:, 0], rpnkit.load_run(run).predict(x),
                               rtol=1e-6)
    assert got["meta"]["feature_names"] == ["speed", "temp"]
    capsys.readouterr()
    # B-spline bases are a custom autograd Function that TorchScript cannot save
    ext, _ = runs["rpn_ext"]
    assert main(["export", str(ext), "--format", "torchscript",
                 "--out", str(tmp_path / "e.ts")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "torchscript export failed" in err[0]
    assert "(bspline, BSpline)" in err[0]
    assert "torch.export" in err[0]
    assert not (tmp_path / "e.ts").exists()
    assert not list(tmp_path.glob(".e.ts*"))
