"""Multi-process training (torchrun + DDP, gloo on CPU) against one process.

* ``torchrun --nproc_per_node=2 -m rpnkit train`` reaches the weights and metrics of a
  1-process run on the same global batches (float64, 1e-6 and tighter);
* a 2-process run interrupted (SIGTERM) and resumed with 1 process ends with the metrics of
  an uninterrupted run;
* every sample of an epoch is seen exactly once across ranks;
* bad input fails on every rank with one line and exit 2, without a hang.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

CONFIG = {
    "seed": 3,
    "data": {"name": "function", "expression": "sin(x0)*x1 + x0**2",
             "ranges": [[-1, 1], [-1, 1]], "n_samples": 600,
             "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "model": {"dims": [2, 3, 1], "expansion": "taylor", "reconciliation": "lorr",
              "remainder": "linear"},
    "train": {"epochs": 6, "batch_size": 45, "dtype": "float64",
              "optimizer": {"name": "adam", "lr": 0.01}},
    "plots": False,
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "RPNKIT_DIST_TIMEOUT": "60",
                "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")})
    return env


def _write(tmp_path: Path, cfg: dict, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmd(nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "rpnkit"]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
            f"--nproc_per_node={nproc}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "-m", "rpnkit"]


def _train(nproc: int, cfg: Path, out: Path, *extra: str, timeout: int = 600):
    return subprocess.run([*_cmd(nproc), "train", str(cfg), "--out", str(out), "--quiet", *extra],
                          capture_output=True, text=True, timeout=timeout, env=_env())


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", map_location="cpu", weights_only=True)["state_dict"]


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))


def _close(a: dict, b: dict, rel: float = 1e-9) -> None:
    for split in ("train", "val", "test"):
        for key, value in a[split].items():
            assert abs(value - b[split][key]) <= rel * max(1.0, abs(value)), (split, key)


def test_two_processes_match_one(tmp_path):
    cfg = _write(tmp_path, CONFIG)
    one = _train(1, cfg, tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = _train(2, cfg, tmp_path / "two")
    assert two.returncode == 0, two.stderr
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert w1.keys() == w2.keys()
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=0, atol=1e-6)
        assert (w2[key] - w1[key]).abs().max() < 1e-12  # same global batches: rounding only
    m1, m2 = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    _close(m1["final"], m2["final"])  # validation/test metrics of the whole split, not a shard
    assert [h["train_loss"] for h in m1["history"]] == pytest.approx(
        [h["train_loss"] for h in m2["history"]], rel=1e-12)
    assert (m1["world_size"], m2["world_size"]) == (1, 2)
    assert m1["global_batch_size"] == m2["global_batch_size"] == 45
    # one writer: the folder holds exactly one copy of each file
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "best.pt", "config.yaml", "metrics.csv", "metrics.json", "model.pt", "train_state.pt"]


def test_interrupted_two_process_run_resumes_with_one(tmp_path):
    """SIGTERM to every process at the end of epoch 4 (rank 0 pauses there until the signal
    has arrived: the run can neither finish first nor be hit earlier), then --resume with
    one process: the metrics of an uninterrupted run."""
    from _pause import child_env, wait_for

    cfg_dict = {**CONFIG, "train": {**CONFIG["train"], "epochs": 12, "checkpoint_every": 1,
                                    "batch_size": 60}}
    cfg = _write(tmp_path, cfg_dict)
    ref = _train(1, cfg, tmp_path / "ref", timeout=600)
    assert ref.returncode == 0, ref.stderr
    out, ready = tmp_path / "run", tmp_path / "ready"
    cmd = [*_cmd(2)[:-1], "_pause", str(ready), "4", "train", str(cfg), "--out", str(out),
           "--quiet"]  # torchrun ... -m _pause READY 4 train ...
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(RPNKIT_DIST_TIMEOUT="600"), start_new_session=True)
    wait_for(ready, proc)
    os.killpg(proc.pid, signal.SIGTERM)  # as a cluster scheduler would: every process
    _, err = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert not (out / "metrics.json").exists()
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 4, err
    resumed = _train(1, cfg, out, "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stderr + err
    _close(_metrics(tmp_path / "ref")["final"], _metrics(out)["final"], rel=1e-8)
    assert _metrics(out)["epochs_run"] == 12


def test_bad_config_fails_on_every_rank_with_one_line(tmp_path):
    bad = {**CONFIG, "model": {**CONFIG["model"], "reconciliation": "lorrr"}}
    cfg = _write(tmp_path, bad)
    res = _train(2, cfg, tmp_path / "out", timeout=600)  # the hang guard: a generous timeout
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("rpnkit:")]
    assert len(lines) == 1  # every rank validates and exits 2; rank 0 says it once
    assert "did you mean 'lorr'" in lines[0]
    assert not (tmp_path / "out").exists()
    # an output folder that rank 0 refuses stops the other rank too (a collective check)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    res = _train(2, _write(tmp_path, CONFIG, "good.yaml"), tmp_path / "busy", timeout=600)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("rpnkit:")]
    assert lines == [lines[0]]
    assert "already exists" in lines[0]


def _record_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch import nn

    from rpnkit.training import fit

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    torch.manual_seed(0)

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)
            self.seen: list[float] = []

        def forward(self, x):
            if self.training:
                self.seen.extend(x[:, 0].tolist())
            return self.lin(x)

    n = 103
    x = torch.stack([torch.arange(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)], 1)
    y = torch.zeros(n, 1, dtype=torch.float64)
    model = Recorder()
    fit(model, (x, y), {"epochs": 3, "batch_size": 10, "dtype": "float64",
                        "optimizer": {"name": "sgd", "lr": 1e-9}}, seed=1)
    torch.save(model.seen, Path(out) / f"seen{rank}.pt")
    dist.barrier()  # neither rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


def test_every_sample_seen_once_per_epoch_across_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_record_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    seen = [torch.load(tmp_path / f"seen{r}.pt") for r in range(2)]
    assert abs(len(seen[0]) - len(seen[1])) <= 3  # at most one row per batch apart
    # batches of 10 rows: rank r holds rows r, r+2, ... of each; epochs are 11 batches long
    per_epoch = []
    for r in range(2):
        rows, i = [], 0
        for _ in range(3):
            take = sum(len(range(r, min(10, 103 - b * 10), 2)) for b in range(11))
            rows.append(seen[r][i : i + take])
            i += take
        per_epoch.append(rows)
    for e in range(3):
        ids = sorted(per_epoch[0][e] + per_epoch[1][e])
        assert ids == [float(i) for i in range(103)], f"epoch {e}"
    assert per_epoch[0][0] != per_epoch[0][1]  # reshuffled every epoch
