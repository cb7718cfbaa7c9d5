"""The rpnkit command line: train / eval / list / run, exit codes and no side effects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rpnkit.cli import main

CFG = {
    "seed": 2,
    "device": "cpu",
    "data": {
        "name": "function",
        "expression": "cos(2*x0) + x0*x1",
        "ranges": [[-1, 1], [-1, 1]],
        "n_samples": 400,
        "split": {"train": 0.5, "val": 0.1, "test": 0.4},
    },
    "model": {
        "dims": [2, 2, 1],
        "expansion": {"name": "extended", "expansions": [{"name": "bspline"}, {"name": "taylor", "d": 2}]},
        "reconciliation": {"name": "lorr", "r": 1},
    },
    "train": {"epochs": 40, "optimizer": {"name": "adam", "lr": 0.03}, "loss": "mse"},
}


def _write(tmp_path: Path, cfg=None, name="c.yaml", text=None) -> Path:
    p = tmp_path / name
    p.write_text(text if text is not None else yaml.safe_dump(cfg or CFG))
    return p


def _last_json(out: str):
    return json.loads(out.strip().splitlines()[-1])


def test_train_then_eval_reproduces_exactly(tmp_path, capsys):
    cfg = _write(tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--quiet", "--set", "train.epochs=30"]) == 0
    train_json = _last_json(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"final", "best", "history"}
    assert set(metrics["final"]) == {"train", "val", "test"}
    assert "epoch" in metrics["best"]
    assert len(metrics["history"]) == 30
    assert metrics["final"]["test"] == train_json["test"]
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 30
    assert resolved["model"]["remainder"] == "zero"
    for png in ("learning_curves.png", "fit.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    ck = torch.load(out / "model.pt", weights_only=True)
    assert set(ck) >= {"state_dict", "config"}
    assert ck["config"]["seed"] == 2
    assert (out / "best.pt").exists()
    assert not (out / "checkpoint.pt").exists()

    assert main(["eval", str(out)]) == 0
    ev = _last_json(capsys.readouterr().out)
    assert ev["test"] == metrics["final"]["test"]
    assert ev["val"] == metrics["final"]["val"]
    assert main(["eval", str(out), "--best"]) == 0
    best = _last_json(capsys.readouterr().out)
    assert best["test"] == metrics["best"]["test"]


def test_classification_run_has_confusion_matrix(tmp_path, capsys):
    cfg = {
        "seed": 0,
        "data": {"name": "iris", "split": {"train": 0.6, "val": 0.2, "test": 0.2}, "standardize": True},
        "model": {"dims": [4, 3], "expansion": "naive_laplace", "remainder": "linear", "bias": True},
        "train": {"epochs": 60, "optimizer": {"name": "adam", "lr": 0.05}},
    }
    out = tmp_path / "iris"
    assert main(["train", str(_write(tmp_path, cfg)), "--out", str(out), "--quiet"]) == 0
    res = _last_json(capsys.readouterr().out)
    assert res["test"]["accuracy"] > 0.8
    assert set(res["test"]) >= {"accuracy", "f1", "log_loss"}
    assert (out / "confusion_matrix.png").exists()
    assert (out / "learning_curves.png").exists()


BAD = {
    "unknown key": ({**CFG, "trian": {}}, "unknown key 'trian' (did you mean 'train'?)"),
    "unknown name": ({**CFG, "model": {**CFG["model"], "reconciliation": {"name": "lorrr"}}},
                     "did you mean 'lorr'"),
    "code in formula": ({**CFG, "data": {**CFG["data"], "expression": "__import__('os').getcwd()"}},
                        "not allowed"),
    "nan targets": ({**CFG, "data": {**CFG["data"], "expression": "sqrt(x0 - 5)"}}, "NaN"),
    "dims mismatch": ({**CFG, "model": {**CFG["model"], "dims": [3, 2, 1]}}, "dims[0] = 3"),
    "bad optimizer option": ({**CFG, "train": {**CFG["train"], "optimizer": {"name": "adam", "lrr": 1}}},
                             "did you mean 'lr'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exit_2_one_line_no_side_effects(tmp_path, capsys, case):
    cfg, fragment = BAD[case]
    out = tmp_path / "never"
    code = main(["train", str(_write(tmp_path, cfg)), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("seed: !!python/object/apply:os.system ['touch HACKED']\n", "YAML tags"),
        ("seed: [1, 2\n", "invalid YAML"),
        ("", "empty"),
        ("- 1\n- 2\n", "must be a mapping"),
    ],
)
def test_malformed_configs(tmp_path, capsys, text, fragment):
    out = tmp_path / "never"
    code = main(["train", str(_write(tmp_path, text=text)), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert not Path("HACKED").exists()


def test_cli_usage_errors(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["frobnicate"]) == 2
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("keep me")
    assert main(["train", str(_write(tmp_path)), "--out", str(occupied)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (occupied / "x").read_text() == "keep me"


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("taylor", "lorr", "zero", "iris", "mnist", "adamw", "cosine", "cross_entropy", "r2",
                 "interdependences (ξ, RPN 2)", "graph_pagerank", "fusions", "learned"):
        assert word in out


def test_run_prints_a_table(tmp_path, capsys):
    cfg = dict(CFG, baselines=[{"name": "torch_mlp", "dims": [2, 5, 1], "label": "tiny MLP"}])
    cfg["train"] = dict(CFG["train"], epochs=10)
    assert main(["run", str(_write(tmp_path, cfg)), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "tiny MLP" in out
    assert "final test mse" in out
    assert set(_last_json(out)) == {"RPN [2, 2, 1] extended/lorr/zero", "tiny MLP"}


def _env():
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_python_m_rpnkit_exit_codes(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rpnkit", "list"], capture_output=True, text=True,
                       env=_env(), timeout=600)
    assert r.returncode == 0
    assert "expansions" in r.stdout
    bad = _write(tmp_path, {**CFG, "sedd": 1})
    r = subprocess.run([sys.executable, "-m", "rpnkit", "train", str(bad), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1
    assert "did you mean 'seed'" in r.stderr
    assert not (tmp_path / "o").exists()


def test_sigterm_then_resume_matches_uninterrupted(tmp_path, capsys):
    """SIGTERM at the end of epoch 5 (the child pauses there until the signal arrives: it can
    neither finish first nor be hit earlier), then --resume: the metrics of an uninterrupted
    run."""
    from _pause import child_env, command, wait_for

    cfg = dict(CFG, model={"name": "torch_mlp", "dims": [2, 16, 1]})
    cfg["train"] = {"epochs": 30, "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": 50}
    cfg_path = _write(tmp_path, cfg)
    ref = tmp_path / "ref"
    assert main(["train", str(cfg_path), "--out", str(ref), "--quiet", "--set", "plots=false"]) == 0
    ref_metrics = json.loads((ref / "metrics.json").read_text())

    out, ready = tmp_path / "run", tmp_path / "ready"
    proc = subprocess.Popen(command(ready, 5, "train", str(cfg_path), "--out", str(out), "--quiet",
                                    "--set", "plots=false"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    wait_for(ready, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 5
    assert "--resume" in err
    assert not (out / "metrics.json").exists()

    assert main(["train", str(cfg_path), "--out", str(out), "--quiet", "--resume", "--set", "plots=false"]) == 0
    capsys.readouterr()
    got = json.loads((out / "metrics.json").read_text())
    assert got["final"] == ref_metrics["final"]
    assert got["best"] == ref_metrics["best"]
    assert [h["train_loss"] for h in got["history"]] == [h["train_loss"] for h in ref_metrics["history"]]
    assert not (out / "checkpoint.pt").exists()
    assert main(["train", str(cfg_path), "--out", str(out), "--resume"]) == 2  # finished: nothing to resume


def test_internal_errors_exit_1(tmp_path, capsys, monkeypatch):
    import rpnkit.training as training

    def broken(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(training, "prepare", broken)
    code = main(["train", str(_write(tmp_path)), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert "internal error: RuntimeError: simulated bug" in err
    assert len(err.strip().splitlines()) == 1


def test_non_rpn_model_run_folder_evaluates(tmp_path, capsys):
    cfg = dict(CFG, model={"name": "torch_mlp", "dims": [2, 8, 1]})
    cfg["train"] = dict(CFG["train"], epochs=5)
    out = tmp_path / "mlp"
    assert main(["train", str(_write(tmp_path, cfg)), "--out", str(out), "--quiet"]) == 0
    res = _last_json(capsys.readouterr().out)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert "expansion" not in saved["model"]
    assert main(["eval", str(out)]) == 0
    assert _last_json(capsys.readouterr().out)["test"] == res["test"]


def test_run_with_out_keeps_evaluable_folders(tmp_path, capsys):
    cfg = dict(CFG, baselines=[{"name": "torch_mlp", "dims": [2, 5, 1]}])
    cfg["train"] = dict(CFG["train"], epochs=5)
    out = tmp_path / "runs"
    assert main(["run", str(_write(tmp_path, cfg)), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    for sub in ("model", "baseline0"):
        assert (out / sub / "metrics.json").exists()
        assert main(["eval", str(out / sub)]) == 0


@pytest.mark.parametrize(
    ("train", "fragment"),
    [
        ({"optimizer": {"name": "adam", "lr": -1}}, "lr must be"),
        ({"optimizer": {"name": "adam", "betas": [0.9]}}, "betas must be"),
        ({"monitor": "accuracy"}, "monitor"),
        ({"metrics": ["accuracy"]}, "does not apply"),
        ({"scheduler": {"name": "step", "step_size": 0}}, "step_size"),
    ],
)
def test_bad_training_options_fail_before_writing(tmp_path, capsys, train, fragment):
    cfg = dict(CFG, train=dict(CFG["train"], **train))
    out = tmp_path / "never"
    assert main(["train", str(_write(tmp_path, cfg)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_early_stopping_needs_validation(tmp_path, capsys):
    cfg = dict(CFG, train=dict(CFG["train"], early_stopping=3))
    cfg["data"] = dict(CFG["data"], split={"train": 0.5, "val": 0.0, "test": 0.5})
    assert main(["train", str(_write(tmp_path, cfg)), "--out", str(tmp_path / "o")]) == 2
    assert "validation split" in capsys.readouterr().err
