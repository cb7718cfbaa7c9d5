"""Every example config validates; the small ones also build (data + model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rpnkit.config import load_config
from rpnkit.training import prepare

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_valid(path):
    cfg = load_config(path)
    if cfg.data.name != "mnist":
        prep = prepare(cfg, "cpu")
        assert prep.model is not None


def test_there_are_examples():
    assert len(EXAMPLES) >= 6
