"""Property tests: the CSV reader and checkpoint loading either succeed or raise a
ConfigurationError (one clear message), never another exception, within a time bound."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpnkit.data import load_data
from rpnkit.errors import ConfigurationError
from rpnkit.training.checkpoint import atomic_torch_save, load_checked

EXAMPLES = int(os.environ.get("RPNKIT_HYPOTHESIS_EXAMPLES", "60"))
CELL = st.one_of(
    st.sampled_from(["", "nan", "inf", "-inf", "1", "1.0", "1.5", "007", "7", "x", "a,b", '"q"',
                     "1e400", "-0", " 2 ", "10000000000000000000001"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**20, 10**20).map(str),
    st.text(max_size=6),
)


@settings(max_examples=EXAMPLES, deadline=3000,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(CELL, min_size=1, max_size=4), min_size=0, max_size=12),
       header=st.booleans(), task=st.sampled_from(["auto", "classification", "regression"]))
def test_csv_reader_succeeds_or_refuses_cleanly(rows, header, task):
    width = max((len(r) for r in rows), default=2)
    lines = ([",".join(f"c{i}" for i in range(width))] if header else []) + [
        ",".join(r) for r in rows]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "data.csv"
        path.write_text("\n".join(lines), encoding="utf-8")
        message = None
        try:
            b = load_data("csv", {"path": str(path), "header": header, "task": task},
                          {"train": 0.5, "test": 0.5})
        except ConfigurationError as exc:
            message = str(exc)
        if message is not None:
            assert "\n" not in message.strip()
            return
        assert b.size("train") > 0
        assert torch.isfinite(torch.as_tensor(b.x["train"])).all()


@settings(max_examples=EXAMPLES, deadline=3000,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096), cut=st.integers(0, 5000), flip=st.integers(0, 40000))
def test_checkpoint_loading_refuses_damage_cleanly(data, cut, flip):
    with tempfile.TemporaryDirectory() as d:
        good = Path(d) / "good.pt"
        atomic_torch_save({"format": "rpnkit-train-state-2", "epoch": 1,
                           "model": {"w": torch.arange(6.0)}}, good)
        raw = good.read_bytes()
        for name, blob in (("random.pt", data), ("cut.pt", raw[: cut % (len(raw) + 1)])):
            p = Path(d) / name
            p.write_bytes(blob)
            message = ""
            try:
                load_checked(p)
            except ConfigurationError as exc:
                message = str(exc)
            assert not message or str(p) in message
        flipped = bytearray(raw)
        i = flip % len(flipped)
        flipped[i] ^= 0x10
        p = Path(d) / "flip.pt"
        p.write_bytes(bytes(flipped))
        try:
            state = load_checked(p)
        except ConfigurationError:
            return
        # accepted only when the content is intact (the flip hit padding or unused bytes)
        assert torch.equal(state["model"]["w"], torch.arange(6.0))
