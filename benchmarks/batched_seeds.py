"""Batched seeds against one seed: the cost of one training step (issue 21, item 1).

Target: 5 seeds of the paper's 47-parameter RPN-Ext [2, 2, 1] (AdamW, batch 100) trained as
one batched model (``train.seeds: 5``, :mod:`rpnkit.training.seeds`) cost at most 2x one seed
per step. Both sides train through :func:`rpnkit.training.fit` with the same config (no
validation split, so an epoch is optimizer steps only); a step's cost is the CPU time of a
whole ``fit`` divided by its steps. Paired, interleaved rounds in one process (the order of the
two sides alternates), 1 thread; the table gives the median and interquartile range over the
rounds of each side's time per step and of the per-round ratio.

    python benchmarks/batched_seeds.py [--rounds 15] [--epochs 20] [--seeds 5]

writes ``benchmarks/results/batched_seeds.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rpnkit import RPN
from rpnkit.training import count_params, fit

HERE = Path(__file__).resolve().parent


def rpn_ext(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    exp = {"name": "extended", "expansions": [{"name": "bspline"}, {"name": "taylor", "d": 2}]}
    return RPN.from_dims([2, 2, 1], expansion=exp, reconciliation={"name": "lorr", "r": 1},
                         remainder="zero")


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 5), nn.SiLU(), nn.Linear(5, 5), nn.SiLU(), nn.Linear(5, 1))


def q(v) -> str:
    a = np.asarray(v, dtype=float)
    lo, med, hi = np.percentile(a, [25, 50, 75])
    return f"{med:.3g} [{lo:.3g}, {hi:.3g}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "batched_seeds.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (args.rows, 2)).astype(np.float32)
    y = (np.sin(3 * x[:, :1]) * x[:, 1:] + x[:, 1:] ** 2).astype(np.float32)
    cfg = {"epochs": args.epochs, "batch_size": 100, "scheduler": "cosine",
           "optimizer": {"name": "adamw", "lr": 0.01}, "loss": "mse"}
    steps = args.epochs * -(-args.rows // 100)
    rows = []
    for name, make in (("RPN-Ext [2,2,1]", rpn_ext), ("MLP [2,5,5,1]", mlp)):
        def single(make=make):
            fit(make(0), (x, y), cfg, seed=0)

        def batched(make=make):
            fit(make, (x, y), cfg, seed=0, seeds=args.seeds)

        single(), batched()  # warm-up
        t1, ts, ratio = [], [], []
        for r in range(args.rounds):
            order = (single, batched) if r % 2 == 0 else (batched, single)
            got = {}
            for fn in order:
                c0 = time.process_time()
                fn()
                got[fn] = (time.process_time() - c0) / steps * 1e3
            t1.append(got[single])
            ts.append(got[batched])
            ratio.append(got[batched] / got[single])
        rows.append((name, count_params(make(0)), q(t1), q(ts), q(ratio), float(np.median(ratio))))
    L = ["# Batched seeds: one step of S seeds against one seed", "",
         f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
         f"torch.get_num_threads() = {torch.get_num_threads()}, OMP_NUM_THREADS = "
         f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs (shared machine); "
         f"{args.rounds} paired interleaved rounds, CPU time (`time.process_time`) of a whole "
         f"`fit` / {steps} steps ({args.epochs} epochs x {-(-args.rows // 100)} batches of 100 "
         f"rows, AdamW lr 0.01 + cosine, float32, no validation split).", "",
         f"Target: {args.seeds} seeds of the 47-parameter RPN-Ext cost at most 2x one seed per "
         "step. Median [IQR] over the rounds.", "",
         f"| model | params | 1 seed ms/step | {args.seeds} seeds ms/step | ratio | target "
         "<= 2x |", "|---|---|---|---|---|---|"]
    for name, p, a, b, r, med in rows:
        L.append(f"| {name} | {p} | {a} | {b} | {r} | {'met' if med <= 2 else 'not met'} |")
    L += ["", "Command: `python benchmarks/batched_seeds.py " +
          f"--rounds {args.rounds} --epochs {args.epochs} --seeds {args.seeds}`", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(L))
    print("\n".join(L))


if __name__ == "__main__":
    main()
