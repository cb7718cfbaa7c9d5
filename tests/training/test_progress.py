"""Progress inside epochs: log lines outside a terminal (batch i/N mid-epoch, loss,
samples/s, ETA), a tqdm bar over batches in a terminal, and per-epoch seconds."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import rpnkit
from rpnkit.models import build_model

SRC = str(Path(__file__).resolve().parents[2] / "src")
LOGGER = "rpnkit.training.engine"
BATCH_LINE = re.compile(
    r"^epoch (\d+)/(\d+) batch (\d+)/(\d+) loss=\S+ \S+ samples/s ETA (\d+[hms]\S*|\?)$")
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) loss=\S+( val_loss=\S+)? \S+ samples/s ETA \S+$")


def _data(n: int = 100):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(n, 2))
    return x, (x[:, :1] * x[:, 1:]).copy()


def _model():
    torch.manual_seed(0)
    return build_model("rpn", dims=[2, 1], expansion="taylor")


CFG = {"epochs": 3, "batch_size": 20, "optimizer": {"name": "adam", "lr": 0.01}}


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER
            and r.getMessage().startswith("epoch ")]


def test_progress_lines_inside_epochs(monkeypatch, caplog, one_thread):
    """Every batch but an epoch's last gets a line (RPNKIT_PROGRESS_SECONDS=0), the epoch
    end gets one: lines come during an epoch, not only at its end."""
    monkeypatch.setenv("RPNKIT_PROGRESS_SECONDS", "0")
    x, y = _data()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        res = rpnkit.fit(_model(), x, y, CFG, progress=True)
    lines = _lines(caplog)
    assert len(lines) == 3 * 5, lines  # 4 batch lines + 1 epoch line, 3 epochs
    batch = [BATCH_LINE.match(ln) for ln in lines if " batch " in ln]
    assert all(batch), lines
    assert [(int(m[1]), int(m[3])) for m in batch] == [(e, b) for e in (1, 2, 3)
                                                       for b in (1, 2, 3, 4)]
    assert {(int(m[2]), int(m[4])) for m in batch} == {(3, 5)}
    ends = [ln for ln in lines if " batch " not in ln]
    assert [EPOCH_LINE.match(ln)[1] for ln in ends] == ["1", "2", "3"]
    # the running loss of the first batch line is the first batch's loss
    first = float(re.search(r"loss=(\S+)", lines[0])[1])
    assert first > 0
    assert res.epochs_run == 3


def test_progress_lines_respect_the_interval(monkeypatch, caplog):
    """A long interval: only the last epoch's line (always written)."""
    monkeypatch.setenv("RPNKIT_PROGRESS_SECONDS", "1e9")
    x, y = _data()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        rpnkit.fit(_model(), x, y, CFG, progress=True)
    lines = _lines(caplog)
    assert len(lines) == 1
    assert lines[0].startswith("epoch 3/3 loss=")


def test_mid_epoch_line_with_the_default_interval(monkeypatch, caplog):
    """With the default 30 s, a line comes mid-epoch once 30 s have passed (a fake clock),
    with the ETA from the time per batch so far."""
    from rpnkit.training.engine import _ProgressLines

    monkeypatch.delenv("RPNKIT_PROGRESS_SECONDS", raising=False)
    clock = {"t": 1000.0}

    def monotonic():  # each look at the clock (once per batch): 11 s later
        clock["t"] += 11.0
        return clock["t"]

    monkeypatch.setattr(_ProgressLines, "_clock", staticmethod(monotonic))
    x, y = _data()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        rpnkit.fit(_model(), x, y, {**CFG, "epochs": 1}, progress=True)
    lines = _lines(caplog)
    # 33 s after the start, after batch 3 of 5: 33 s / 3 batches x 2 batches left = 22 s
    assert lines[0].startswith("epoch 1/1 batch 3/5 loss=")
    assert lines[0].endswith("ETA 22s")
    assert BATCH_LINE.match(lines[0])
    assert len(lines) == 2
    assert lines[-1].startswith("epoch 1/1 loss=")


def test_fit_without_logging_setup_shows_progress_on_stderr(tmp_path):
    """A plain script: rpnkit.fit(..., progress=True) writes its lines to stderr even though
    the program configured no logging; nothing is left attached afterwards."""
    script = tmp_path / "s.py"
    script.write_text(
        "import logging, numpy as np, torch, rpnkit\n"
        "from rpnkit.models import build_model\n"
        "torch.manual_seed(0)\n"
        "x = np.random.default_rng(0).uniform(-1, 1, (60, 2)); y = x[:, :1] * x[:, 1:]\n"
        "res = rpnkit.fit(build_model('rpn', dims=[2, 1], expansion='taylor'), x, y,\n"
        "                 {'epochs': 2, 'batch_size': 20}, progress=True)\n"
        "quiet = rpnkit.fit(build_model('rpn', dims=[2, 1], expansion='taylor'), x, y,\n"
        "                   {'epochs': 2, 'batch_size': 20})\n"
        "log = logging.getLogger('rpnkit.training.engine')\n"
        "print(len(log.handlers), log.level, len(res.history))\n", encoding="utf-8")
    env = {**os.environ, "RPNKIT_PROGRESS_SECONDS": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                       timeout=300, check=True)
    lines = r.stderr.strip().splitlines()
    assert lines == [ln for ln in lines if ln.startswith("rpnkit: epoch ")], r.stderr
    assert len(lines) == 2 * 3  # the second fit (progress off) is silent
    assert BATCH_LINE.match(lines[0].removeprefix("rpnkit: "))
    assert r.stdout.split() == ["0", "0", "2"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_bar_over_batches(monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    x, y = _data()
    rpnkit.fit(_model(), x, y, CFG, progress=True)
    text = term.getvalue()
    assert "epoch 1/3" in text
    assert "0/15" in text  # 3 epochs x 5 batches
    assert "batch" in text


def test_history_and_metrics_csv_have_epoch_seconds(tmp_path):
    x, y = _data()
    res = rpnkit.fit(_model(), {"train": (x[:80], y[:80]), "val": (x[80:], y[80:])}, None, CFG)
    secs = [h["seconds"] for h in res.history]
    assert len(secs) == 3
    assert all(s > 0 for s in secs)
    assert sum(secs) <= res.seconds

    from rpnkit.config import parse_config
    from rpnkit.training import prepare, train_run

    cfg = parse_config({
        "data": {"name": "function", "expression": "x0*x1", "ranges": [[-1, 1], [-1, 1]],
                 "n_samples": 100, "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
        "model": {"dims": [2, 1], "expansion": "taylor"},
        "train": {"epochs": 3}, "plots": False})
    train_run(prepare(cfg), tmp_path / "run")
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert "seconds" in header
    col = header.index("seconds")
    assert len(rows) == 4
    assert all(float(r.split(",")[col]) > 0 for r in rows[1:])


@pytest.mark.parametrize("value", ["abc", "inf"])
def test_bad_interval_falls_back_to_30_seconds(monkeypatch, value):
    from rpnkit.training.engine import _ProgressLines

    monkeypatch.setenv("RPNKIT_PROGRESS_SECONDS", value)
    assert _ProgressLines(3, 0, 5).every == 30.0
