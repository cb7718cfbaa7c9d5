"""Every example config validates; the small ones also build (data + model)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rpnkit.config import load_config
from rpnkit.training import prepare

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_valid(path):
    cfg = load_config(path)
    prep = prepare(cfg, "cpu")  # data included: MNIST examples read their shipped 10k file
    assert prep.model is not None


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_trains_from_another_folder(path, tmp_path, monkeypatch):
    """Quick mode: one short epoch, run from an unrelated working directory."""

    from rpnkit.cli import main

    monkeypatch.chdir(tmp_path)
    sets = ["train.epochs=1", "plots=false"]
    if "mnist" in path.name:
        sets += ["data.split.train=256", "data.split.val=64", "data.split.test=64"]
    prep = prepare(load_config(path, sets), "cpu")
    params = sum(p.numel() for p in prep.model.parameters())
    if params > 2_000_000:  # too big to train in the quick suite: one forward pass instead
        x = torch.as_tensor(prep.bundle.x["train"][:4], dtype=torch.float32)
        with torch.no_grad():
            y = prep.model(x)
        assert y.shape == (4, prep.cfg.model.dims[-1])
        assert torch.isfinite(y).all()
        return
    args = ["train", str(path), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_there_are_examples():
    assert len(EXAMPLES) >= 6
