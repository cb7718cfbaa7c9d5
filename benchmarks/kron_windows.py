"""Kronecker lag windows as views (issue 21 item 4): the shipped MNIST dual_lphm model step
against an MLP of the same FLOPs, before vs after, in one run.

    nice -n 5 .venv/bin/python benchmarks/kron_windows.py --before /tmp/before_kron/src \
        [--after src] [--rounds R] [--reps K]

Make the "before" package with ``git archive HEAD src | tar -x -C /tmp/before_kron``.

Model: ``examples/mnist_dual_lphm.yaml``'s network (dims [784, 64, 64, 10], Taylor d=2 with
layer_norm preprocessing, dual_lphm p=q=r=2, remainder zero), one Adam step (lr 1e-3, cross
entropy) on a batch of 128 MNIST-shaped rows. Reference: an MLP [784, h, h, 10] (ReLU) whose
forward FLOPs (``torch.utils.flop_counter``, counted on the "after" model) match the RPN's.

How: two long-lived worker subprocesses (this script with ``--worker SRC``), one per package,
``OMP_WAIT_POLICY=PASSIVE`` and 1 thread, asked alternately (before, after, before, ...) for R
rounds to time K steps of the RPN and K steps of the MLP; only one worker runs at a time, so
load from other processes hits both alike. Reported: median [IQR] over rounds of the step
times and of the per-round ratio RPN / MLP (same worker, same round). Results are printed and
written to ``benchmarks/results/kron_windows.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _stats import fmt

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
RESULTS = HERE.parent / "results"
BATCH = 128
DIMS = [784, 64, 64, 10]
HEAD = {"expansion": {"name": "taylor", "d": 2, "preprocess": ["layer_norm"]},
        "reconciliation": "dual_lphm", "reconciliation_params": {"p": 2, "q": 2, "r": 2},
        "remainder": "zero"}


def _models(torch, rpnkit, hidden: int):
    from torch import nn
    torch.manual_seed(0)
    rpn = rpnkit.RPN.from_dims(DIMS, **HEAD)
    mlp = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                        nn.ReLU(), nn.Linear(hidden, 10))
    return {"rpn": rpn, "mlp": mlp}


def _flops(torch, model, x) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        model(x)
    return int(fc.get_total_flops())


def _worker(src: str, hidden: int) -> None:
    sys.path.insert(0, src)
    import torch
    torch.set_num_threads(1)
    from torch.nn import functional as F  # noqa: N812

    import rpnkit
    models = _models(torch, rpnkit, hidden)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(BATCH, 784, generator=g)
    y = torch.randint(0, 10, (BATCH,), generator=g)
    steps = {}
    for name, model in models.items():
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        for _ in range(3):
            step()
        steps[name] = step
    plan = models["rpn"].layers[0].heads[0].plan() if hasattr(models["rpn"].layers[0], "heads") else ""
    print(json.dumps({"ready": True, "plan": plan}), flush=True)
    for line in sys.stdin:
        reps = json.loads(line)["reps"]
        out = {}
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                step()
            out[name] = (time.perf_counter() - t0) / reps
        print(json.dumps(out), flush=True)


def _start(src: str, hidden: int) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(HERE), "--worker", src, "--hidden", str(hidden)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    return proc, json.loads(proc.stdout.readline())


def _fmt(values: list[float], scale: float = 1e3, digits: int = 2) -> str:
    return fmt(values, scale, digits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="/tmp/before_kron/src")
    ap.add_argument("--after", default=str(ROOT / "src"))
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--worker")
    ap.add_argument("--hidden", type=int, default=0)
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker, args.hidden)
        return
    sys.path.insert(0, args.after)
    import torch

    import rpnkit
    x = torch.rand(BATCH, 784)
    target = _flops(torch, _models(torch, rpnkit, 64)["rpn"], x)
    # MLP [784, h, h, 10]: 2 B (784 h + h² + 10 h) forward FLOPs
    hidden = 1
    while 2 * BATCH * (784 * (hidden + 1) + (hidden + 1) ** 2 + 10 * (hidden + 1)) <= target:
        hidden += 1
    mlp_flops = _flops(torch, _models(torch, rpnkit, hidden)["mlp"], x)
    workers = {}
    for label, src in (("before", args.before), ("after", args.after)):
        workers[label] = _start(src, hidden)
    times = {lab: {"rpn": [], "mlp": []} for lab in workers}
    for _ in range(args.rounds):
        for label, (proc, _ready) in workers.items():
            proc.stdin.write(json.dumps({"reps": args.reps}) + "\n")
            proc.stdin.flush()
            out = json.loads(proc.stdout.readline())
            for k, v in out.items():
                times[label][k].append(v)
    for proc, _ready in workers.values():
        proc.stdin.close()
        proc.wait()
    ratio = {lab: [r / m for r, m in zip(t["rpn"], t["mlp"])] for lab, t in times.items()}
    speed = [b / a for b, a in zip(times["before"]["rpn"], times["after"]["rpn"])]
    lines = [
        "# Kronecker lag windows: MNIST dual_lphm step vs an MLP of the same FLOPs",
        "",
        f"torch {torch.__version__}, {platform.machine()}, 1 thread, OMP_WAIT_POLICY=PASSIVE; "
        f"batch {BATCH}, Adam; {args.rounds} paired rounds (before, after, ...) of "
        f"{args.reps} steps; median [IQR].",
        f"RPN {DIMS} forward {target / 1e6:.1f} MFLOP; MLP [784, {hidden}, {hidden}, 10] "
        f"forward {mlp_flops / 1e6:.1f} MFLOP.",
        "",
        "| package | RPN step (ms) | MLP step (ms) | RPN / MLP (target <= 1.2) |",
        "|---|---|---|---|",
    ]
    for lab in workers:
        lines.append(f"| {lab} | {_fmt(times[lab]['rpn'])} | {_fmt(times[lab]['mlp'])} | "
                     f"{_fmt(ratio[lab], 1, 2)} |")
    lines += ["", f"RPN step before / after: {_fmt(speed, 1, 2)}", "",
              "First head's plan (after):", "", "```", workers["after"][1]["plan"], "```"]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kron_windows.md").write_text(text)


if __name__ == "__main__":
    main()
