"""Property tests: the CSV reader and checkpoint loading either succeed or raise a
ConfigurationError (one clear message), never another exception; a training state crafted
anywhere and re-checksummed is refused with one line or resumes soundly."""

from __future__ import annotations

import copy
import math
import os
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpnkit.data import load_data
from rpnkit.errors import ConfigurationError
from rpnkit.training import InterruptFlag, TrainingInterrupted
from rpnkit.training.checkpoint import CHECKSUM_KEY, atomic_torch_save, content_digest, load_checked

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


# --------------------------------------------------------------------------- crafted states
# A training state edited anywhere (a field, a tensor, an optimizer or scheduler entry) and
# given a valid checksum again: it is refused with one line naming the file, or it is sound
# and training resumes from it without any other exception.

_CFG = {"seed": 1, "device": "cpu", "plots": False,
        "data": {"name": "function", "expression": "x0*x1", "ranges": [[-1, 1], [-1, 1]],
                 "n_samples": 100, "split": {"train": 0.5, "val": 0.2, "test": 0.3}},
        "model": {"name": "torch_mlp", "dims": [2, 4, 1]},
        "train": {"epochs": 3, "batch_size": 10, "dtype": "float64",
                  "optimizer": {"name": "adam", "lr": 0.01}}}
_VALUES = [None, True, -1, 0, 3, 2**70, math.nan, math.inf, -math.inf, 0.5, "x", [], {},
           "same-shape-nan", "same-shape-float32", "same-shape-int", "bigger", "scalar",
           torch.zeros(0), torch.zeros(7, dtype=torch.uint8)]


@pytest.fixture(scope="module")
def crafted_base(tmp_path_factory):
    """A state saved in the middle of epoch 2 (with a permutation and last good weights)."""
    from rpnkit.config import parse_config
    from rpnkit.training import fit, prepare

    folder = tmp_path_factory.mktemp("crafted")
    cfg = parse_config(copy.deepcopy(_CFG))
    prep = prepare(cfg)
    flag = InterruptFlag()

    def stop(epoch, rec):
        if epoch == 1:
            flag.set()

    good = folder / "checkpoint.pt"
    with pytest.raises(TrainingInterrupted):
        fit(prep.model, prep.bundle, cfg.train, seed=1, checkpoint_path=good, interrupt=flag,
            on_epoch_end=stop)
    return prep, good


def _paths(obj, path=()):
    """Every place in a nested state: (keys ...) tuples, the containers' too."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return
    for k, v in items:
        yield (*path, k)
        yield from _paths(v, (*path, k))


def _value(token, old):
    if isinstance(token, str) and token.startswith(("same-shape", "bigger", "scalar")):
        ref = old if isinstance(old, torch.Tensor) else torch.zeros(3)
        if token == "same-shape-nan":
            return torch.full_like(ref.double(), math.nan)
        if token == "same-shape-float32":
            return torch.zeros(ref.shape, dtype=torch.float32)
        if token == "same-shape-int":
            return torch.zeros(ref.shape, dtype=torch.int64)
        if token == "bigger":
            return torch.zeros(ref.numel() + 5, dtype=ref.dtype if ref.dtype.is_floating_point
                               else torch.float64)
        return torch.tensor(1.0, dtype=torch.float64)
    return copy.deepcopy(token)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_crafted_training_state_is_refused_or_resumes(crafted_base, tmp_path, data):
    from rpnkit.training import fit
    from rpnkit.training.run import load_train_state

    prep, good = crafted_base
    body = {k: v for k, v in torch.load(good, weights_only=True).items() if k != CHECKSUM_KEY}
    where = data.draw(st.sampled_from(sorted(_paths(body), key=repr)), label="where")
    token = data.draw(st.sampled_from(_VALUES), label="value")
    parent = body
    for k in where[:-1]:
        parent = parent[k]
    parent[where[-1]] = _value(token, parent[where[-1]])
    path = tmp_path / f"c{abs(hash((where, repr(token)))) % 10**9}.pt"
    torch.save({**body, CHECKSUM_KEY: content_digest(body)}, path)
    message = None
    try:
        state = load_train_state(path, prep)
    except ConfigurationError as exc:
        message = str(exc)
    if message is not None:
        assert str(path) in message
        assert "\n" not in message
        return
    try:  # accepted: training resumes from it (or refuses it with a CheckpointError)
        fit(prep.model, prep.bundle, prep.cfg.train, seed=1, resume=state)
    except ConfigurationError as exc:
        message = str(exc)
    assert message is None or "\n" not in message
