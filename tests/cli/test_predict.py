"""From a trained run to a used model: rpnkit predict / load_run / export on raw data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import rpnkit
from rpnkit.cli import main
from rpnkit.data import load_data


def _train(tmp_path: Path, cfg: dict, name: str = "run") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = tmp_path / name
    assert main(["train", str(path), "--out", str(out), "--quiet"]) == 0
    return out


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


IRIS = {"seed": 1, "data": {"name": "iris", "standardize": True,
                            "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
        "model": {"dims": [4, 3], "expansion": "taylor"},
        "train": {"epochs": 40, "optimizer": {"name": "adam", "lr": 0.05}}, "plots": False}


def test_predict_on_raw_csv_equals_the_trained_model(tmp_path):
    import sklearn.datasets

    run = _train(tmp_path, IRIS)
    iris = sklearn.datasets.load_iris()
    raw = iris.data[::7]
    # columns in another order, plus the target column: matched by name
    names = list(iris.feature_names)
    _write_csv(tmp_path / "new.csv", ["class", *names[::-1]],
               [[t, *r[::-1]] for r, t in zip(raw, iris.target[::7])])
    assert main(["predict", str(run), str(tmp_path / "new.csv"), "--out",
                 str(tmp_path / "p.csv")]) == 0
    header, rows = _read_csv(tmp_path / "p.csv")
    assert header == ["prediction"]
    got = [r[0] for r in rows]
    # independent reference: the run's weights in a fresh model, standardised with the
    # training split's statistics of the same seeded split
    bundle = load_data("iris", {}, {"train": 0.6, "val": 0.2, "test": 0.2}, 1, True)
    model = rpnkit.RPN.from_dims([4, 3], expansion="taylor")
    model.load_state_dict(torch.load(run / "model.pt", weights_only=True)["state_dict"])
    with torch.no_grad():
        logits = model(torch.as_tensor(bundle.transform_x(raw), dtype=torch.float32))
    want = [bundle.classes[i] for i in logits.argmax(1).tolist()]
    assert got == want
    assert set(got) <= {"setosa", "versicolor", "virginica"}
    # in-process API agrees, and probabilities sum to one
    loaded = rpnkit.load_run(run)
    assert list(loaded.predict(raw)) == want
    proba = loaded.predict_proba(raw)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    assert main(["predict", str(run), str(tmp_path / "new.csv"), "--proba", "--out",
                 str(tmp_path / "q.csv")]) == 0
    header, rows = _read_csv(tmp_path / "q.csv")
    assert header == ["p(setosa)", "p(versicolor)", "p(virginica)"]
    np.testing.assert_allclose(np.array(rows, dtype=float), proba, rtol=1e-6, atol=1e-9)


def test_regression_predictions_are_in_the_raw_target_scale(tmp_path):
    cfg = {"seed": 0, "data": {"name": "function", "expression": "3 + 10*x0*x1",
                               "ranges": [[-1, 1], [-1, 1]], "n_samples": 400,
                               "standardize": True, "standardize_target": True},
           "model": {"dims": [2, 1], "expansion": "taylor", "bias": True},
           "train": {"epochs": 300, "dtype": "float64", "optimizer": {"name": "adam", "lr": 0.05}},
           "plots": False}
    run = _train(tmp_path, cfg)
    x = np.array([[0.5, 0.5], [-0.5, 0.5], [0.0, 0.0]])
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(run), str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "p.csv")]) == 0
    _, rows = _read_csv(tmp_path / "p.csv")
    got = np.array(rows, dtype=float)[:, 0]
    np.testing.assert_allclose(got, [5.5, 0.5, 3.0], atol=0.15)
    np.testing.assert_allclose(rpnkit.load_run(run).predict(x), got, rtol=1e-12)


def test_export_takes_raw_features_and_bad_inputs_exit_2(tmp_path, capsys):
    run = _train(tmp_path, IRIS)
    assert main(["export", str(run)]) == 0  # default: a torch.export program, raw data in
    program = torch.export.load(str(run / "model.pt2"))
    loaded = rpnkit.load_run(run)
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]])
    got = program.module()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, loaded.predict_proba(x), rtol=1e-6, atol=1e-9)
    assert list(loaded.classes[got.argmax(axis=1)]) == list(loaded.predict(x))
    capsys.readouterr()
    _write_csv(tmp_path / "bad.csv", ["a", "b"], [[1, 2]])
    assert main(["predict", str(run), str(tmp_path / "bad.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "not columns of the file" in err[0]
    assert main(["predict", str(tmp_path / "nope"), str(tmp_path / "bad.csv")]) == 2
    assert main(["--version"]) == 0


def test_runs_written_before_preprocessing_was_saved_still_load(tmp_path):
    run = _train(tmp_path, IRIS)
    payload = torch.load(run / "model.pt", weights_only=True)
    want = rpnkit.load_run(run).predict(np.array([[5.0, 3.4, 1.5, 0.2]]))
    payload.pop("preprocessing")
    payload.pop("sha256", None)
    from rpnkit.training.checkpoint import atomic_torch_save

    atomic_torch_save(payload, run / "model.pt")  # checksummed again, without preprocessing
    assert list(rpnkit.load_run(run).predict(np.array([[5.0, 3.4, 1.5, 0.2]]))) == list(want)


@pytest.mark.parametrize("missing", ["onnx", "onnxscript"])
def test_onnx_export_says_which_extra_is_missing(tmp_path, missing, capsys, monkeypatch):
    run = _train(tmp_path, IRIS)
    monkeypatch.setitem(__import__("sys").modules, missing, None)  # import fails
    assert main(["export", str(run), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert missing in err[0]
    assert "pip install 'rpnkit[onnx]'" in err[0]
    assert not (run / "model.onnx").exists()


def test_resume_needs_only_the_run_folder(tmp_path):
    import os
    import signal
    import subprocess

    from _pause import child_env, command, wait_for

    cfg = {"seed": 0, "data": {"name": "function", "expression": "x0*x1",
                               "ranges": [[-1, 1], [-1, 1]], "n_samples": 300},
           "model": {"dims": [2, 3, 1], "expansion": "taylor"},
           "train": {"epochs": 4000, "dtype": "float64", "checkpoint_seconds": 0.1},
           "plots": False}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out, ready = tmp_path / "run", tmp_path / "ready"
    # the child pauses after epoch 3 until the SIGINT has reached rpnkit: never a race
    proc = subprocess.Popen(command(ready, 3, "train", str(path), "--out", str(out), "--quiet",
                                    "--set", "train.epochs=40"),
                            stderr=subprocess.PIPE, text=True, env=child_env())
    wait_for(ready, proc)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    hint = err.strip().splitlines()[-1].split("continue with: ", 1)[1]
    assert hint == f"rpnkit train --resume {out}"
    # an override that differs from the saved config is refused; the hint's command works
    assert main(["train", "--resume", str(out), "--set", "train.optimizer.lr=0.5",
                 "--quiet"]) == 2
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert _read_metrics(out)["epochs_run"] == 40


def _read_metrics(run: Path) -> dict:
    import json

    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    import os
    import subprocess
    import sys

    cfg = {"seed": 0, "data": {"name": "function", "expression": "x0*x1",
                               "ranges": [[-1, 1], [-1, 1]], "n_samples": 200},
           "model": {"dims": [2, 1], "expansion": "taylor"},
           "train": {"epochs": 400}, "plots": False}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {**os.environ, "RPNKIT_PROGRESS_SECONDS": "0"}
    res = subprocess.run([sys.executable, "-m", "rpnkit", "train", str(path), "--out",
                          str(tmp_path / "run")], capture_output=True, text=True, env=env,
                         timeout=600, check=True)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("rpnkit: epoch ")]
    assert len(lines) == 400
    assert "loss=" in lines[0]
    assert "samples/s ETA" in lines[0]
    assert lines[-1].startswith("rpnkit: epoch 400/400")


def test_predict_refuses_bad_input_files_with_one_line(tmp_path, capsys):
    """predict reads with the training reader: every bad file is exit 2 and one line."""
    run = _train(tmp_path, IRIS)
    names = rpnkit.load_run(run).feature_names
    bad = {}
    (tmp_path / "utf16.csv").write_text(",".join(names) + "\n1,2,3,4\n", encoding="utf-16")
    bad["utf16.csv"] = "UTF-16"
    np.save(tmp_path / "zero_d.npy", np.float64(3.0))
    bad["zero_d.npy"] = "0-d"
    np.save(tmp_path / "complex.npy", np.ones((3, 4), dtype=np.complex128))
    bad["complex.npy"] = "complex"
    _write_csv(tmp_path / "dup.csv", [names[0], *names], [[1, 1, 2, 3, 4]])
    bad["dup.csv"] = "twice"
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    bad["empty.csv"] = "empty"
    for name, words in bad.items():
        capsys.readouterr()
        assert main(["predict", str(run), str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, (name, err)
        assert "Traceback" not in err[0]
        assert words.lower() in err[0].lower(), (name, err[0])
