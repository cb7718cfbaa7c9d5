"""DDP (2 CPU processes, gloo) of the structured RPN 2 models: one step equals one process.

Each rank takes one SGD step on its half of a fixed batch (graph models: half of the node
ids, answered from the whole graph); DDP's gradient averaging must reproduce the
single-process step on the full batch, every parameter must get a gradient (default
``find_unused_parameters=False``) and the index / adjacency buffers must survive DDP's
buffer broadcast. Pattern as in tests/test_ddp.py (one spawned group, results as JSON).
"""

from __future__ import annotations

import copy
import datetime
import json
import socket
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

WORLD, TOL = 2, 1e-10
EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [0, 4], [1, 5], [5, 6], [6, 7]])


def build(case: str):
    from rpnkit.models import AttentionRPN, ChainRPN, GraphRPN, GridRPN

    torch.manual_seed(0)
    if case == "graph":
        feats = np.random.default_rng(0).normal(size=(8, 4))
        model = GraphRPN([4, 6, 3], graph=None, edges=EDGES, num_nodes=8, features=feats,
                         dropout=0.0, normalize_features=False)
        x = torch.arange(8, dtype=torch.float64)[:, None]
    elif case == "grid":
        model, x = GridRPN([64, 3, 5], image=(1, 8, 8)), torch.randn(8, 64)
    elif case == "chain":
        model = ChainRPN([5, 4, 3], vocab_size=12, embed_dim=4)
        x = torch.randint(1, 12, (8, 5)).double()
    else:
        model = AttentionRPN([5, 4, 3], vocab_size=12, embed_dim=4, heads=2)
        x = torch.randint(1, 12, (8, 5)).double()
    return model.double(), x.double()


def run_case(case: str, rank: int, problems: list[str]) -> None:
    model, x = build(case)
    ref = copy.deepcopy(model)
    half = x.shape[0] // WORLD
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    ddp(x[rank * half:(rank + 1) * half]).square().sum(-1).mean().backward()
    opt.step()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    ref(x).square().sum(-1).mean().backward()
    ref_opt.step()
    for (k, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        err = float((a - b).abs().max() / (b.abs().max() + 1e-30))
        if err > TOL:
            problems.append(f"{k} differs from the single-process step (rel {err:.3g})")
    y2 = ddp(x[:half])  # DDP checks that the previous reduction finished
    if float((y2 - ref(x[:half])).abs().max()) > 1e-9:
        problems.append("output after the step differs")


def _worker(rank: int, port: int, cases: list[str], out_dir: str) -> None:
    torch.set_num_threads(1)
    res: dict = {"failures": {}, "fatal": None}
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=WORLD, timeout=datetime.timedelta(seconds=60))
        for case in cases:
            problems: list[str] = []
            try:
                run_case(case, rank, problems)
            except Exception as e:  # reported back to the test
                problems.append(f"{type(e).__name__}: {str(e)[:300]}")
            if problems:
                res["failures"][case] = problems
        dist.barrier()
    except Exception:  # reported back to the test
        res["fatal"] = traceback.format_exc()
    finally:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(res))
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_structured_models_under_ddp(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    cases = ["graph", "grid", "chain", "attention"]
    procs = [ctx.Process(target=_worker, args=(r, port, cases, str(tmp_path)), daemon=True)
             for r in range(WORLD)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 240
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
    results = [json.loads((tmp_path / f"rank{r}.json").read_text())
               if (tmp_path / f"rank{r}.json").exists() else {"fatal": "no result", "failures": {}}
               for r in range(WORLD)]
    assert all(r["fatal"] is None for r in results), results
    assert not any(r["failures"] for r in results), results
