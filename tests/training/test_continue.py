"""Continue and fine-tune: ``rpnkit train --resume RUN --set train.epochs=N`` continues a
finished run to N epochs (history, best-so-far, optimizer state and random streams kept);
``rpnkit train CONFIG --init-from RUN --out NEW`` starts a new run from another run's
weights. Every other change is refused with one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from _cli_checks import refused
from rpnkit.cli import main
from rpnkit.training.rundir import TRAIN_STATE, inspect


def _cfg(epochs: int, scheduler: str = "none", dims=(2, 3, 1)) -> dict:
    return {"seed": 0, "data": {"name": "function", "expression": "x0*x1 + x0",
                                "ranges": [[-1, 1], [-1, 1]], "n_samples": 200,
                                "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
            "model": {"dims": list(dims), "expansion": "taylor",
                      "reconciliation": {"name": "lorr", "r": 1}},
            "train": {"epochs": epochs, "batch_size": 32, "dtype": "float64",
                      "optimizer": {"name": "adam", "lr": 0.01}, "scheduler": scheduler},
            "plots": False}


def _train(tmp: Path, name: str, cfg: dict, *extra: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = tmp / name
    assert main(["train", str(path), "--out", str(out), "--quiet", *extra]) == 0
    return out


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))


def _weights(run: Path, name: str = "model.pt") -> dict:
    return torch.load(run / name, weights_only=True)["state_dict"]


def _csv_rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_a_finished_run_continued_equals_the_longer_run(tmp_path, capsys):
    short = _train(tmp_path, "short", _cfg(4))
    assert (short / TRAIN_STATE).is_file()  # the state training ended with is kept
    assert inspect(short).kind == "finished"
    before = _metrics(short)["history"]
    assert main(["train", "--resume", str(short), "--set", "train.epochs=7", "--quiet"]) == 0
    long = _train(tmp_path, "long", _cfg(7))
    got, want = _metrics(short), _metrics(long)
    assert len(got["history"]) == 7
    drop = ("seconds",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in got["history"][:4]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in before]  # history kept
    # same weights, optimizer moments and shuffling streams: the numbers of one 7-epoch run
    for k, v in _weights(long).items():
        torch.testing.assert_close(_weights(short)[k], v, rtol=0, atol=0)
    assert got["best"]["epoch"] == want["best"]["epoch"]
    assert got["final"]["test"] == pytest.approx(want["final"]["test"], rel=1e-12)
    assert [r["epoch"] for r in _csv_rows(short)] == [str(i) for i in range(1, 8)]
    assert yaml.safe_load((short / "config.yaml").read_text())["train"]["epochs"] == 7
    assert not (short / "checkpoint.pt").exists()
    assert inspect(short).kind == "finished"
    # and once more
    assert main(["train", "--resume", str(short), "--set", "train.epochs=8", "--quiet"]) == 0
    assert _metrics(short)["history"][-1]["epoch"] == 8
    capsys.readouterr()


def test_continuing_a_cosine_run_follows_the_longer_schedule(tmp_path, capsys):
    short = _train(tmp_path, "short", _cfg(3, "cosine"))
    assert main(["train", "--resume", str(short), "--set", "train.epochs=6", "--quiet"]) == 0
    long = _train(tmp_path, "long", _cfg(6, "cosine"))
    lrs = [float(r["lr"]) for r in _csv_rows(short)]
    want = [float(r["lr"]) for r in _csv_rows(long)]
    assert lrs[3:] == pytest.approx(want[3:], rel=1e-12)  # the 6-epoch cosine from epoch 4
    assert lrs[3] > lrs[2]  # the 3-epoch schedule had decayed: it is not continued as is
    capsys.readouterr()


def test_resume_refuses_other_changes_with_one_line(tmp_path, capsys):
    run = _train(tmp_path, "run", _cfg(3))
    capsys.readouterr()
    snapshot = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    refused(capsys, ["train", "--resume", str(run), "--set", "train.optimizer.lr=0.5"],
            "train.optimizer.lr differs", "only train.epochs")
    refused(capsys, ["train", "--resume", str(run)], "holds a finished run",
            "--set train.epochs=N")
    refused(capsys, ["train", "--resume", str(run), "--set", "train.epochs=2"],
            "trained 3 epochs", "above 3")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == snapshot
    # a finished run without its training state (written with checkpoints off)
    (run / TRAIN_STATE).unlink()
    refused(capsys, ["train", "--resume", str(run), "--set", "train.epochs=5"],
            "kept no training state", "--init-from")
    assert not (run / "checkpoint.pt").exists()


def test_init_from_starts_a_new_run_from_another_runs_weights(tmp_path, capsys):
    source = _train(tmp_path, "source", _cfg(5))
    cfg = _cfg(1)
    cfg["train"]["optimizer"] = {"name": "sgd", "lr": 1e-12}  # the weights barely move
    new = _train(tmp_path, "new", cfg, "--init-from", str(source))
    for k, v in _weights(source).items():
        torch.testing.assert_close(_weights(new)[k], v, rtol=1e-9, atol=1e-9)
    assert len(_metrics(new)["history"]) == 1  # a new run: its own history
    fresh = _train(tmp_path, "fresh", cfg)
    assert _metrics(new)["final"]["test"]["mse"] < _metrics(fresh)["final"]["test"]["mse"]
    capsys.readouterr()
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(_cfg(1, dims=(2, 4, 1))), encoding="utf-8")
    refused(capsys, ["train", str(path), "--out", str(tmp_path / "wide"), "--init-from",
                     str(source)], "--init-from", "has shape", "in this config's model")
    assert not (tmp_path / "wide").exists()
    refused(capsys, ["train", str(path), "--out", str(tmp_path / "w2"), "--init-from",
                     str(tmp_path / "nowhere")], "not a finished run folder")
    refused(capsys, ["train", "--resume", str(source), "--init-from", str(source)],
            "cannot be combined")


def test_help_shows_out_as_required(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "usage: rpnkit train CONFIG --out RUN" in text
    assert "[--out" not in text.split("\n\n")[0]
    assert "--init-from RUN" in text


def test_an_interrupted_run_continues_to_more_epochs(tmp_path, capsys):
    """An unfinished folder (its checkpoint at epoch 4, the results not yet written) resumed
    with --set train.epochs=7 ends with the numbers of one 7-epoch run."""
    import os

    run = _train(tmp_path, "run", _cfg(4))
    os.replace(run / TRAIN_STATE, run / "checkpoint.pt")
    for name in ("metrics.json", "model.pt", "best.pt"):
        (run / name).unlink()
    assert inspect(run).kind == "unfinished"
    refused(capsys, ["train", "--resume", str(run), "--set", "train.epochs=3"],
            "trained 4 epochs")
    assert main(["train", "--resume", str(run), "--set", "train.epochs=7", "--quiet"]) == 0
    long = _train(tmp_path, "long", _cfg(7))
    for k, v in _weights(long).items():
        torch.testing.assert_close(_weights(run)[k], v, rtol=0, atol=0)
    assert len(_metrics(run)["history"]) == 7
    capsys.readouterr()
