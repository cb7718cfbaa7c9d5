"""Kronecker lag windows as views (issue 21 item 4): the shipped MNIST dual_lphm model step
against an MLP of the same FLOPs, before vs after, in one run.

    nice -n 5 .venv/bin/python benchmarks/kron_windows.py --before /tmp/before_kw/src \
        [--after src] [--rounds R] [--reps K]

Make the "before" package with ``git archive HEAD src | tar -x -C /tmp/before_kw``.

Model: ``examples/mnist_dual_lphm.yaml``'s network (dims [784, 64, 64, 10], Taylor d=2 with
layer_norm preprocessing, dual_lphm p=q=r=2, remainder zero), one Adam step (lr 1e-3, cross
entropy) on a batch of 128 MNIST-shaped rows. Reference: an MLP [784, h, h, 10] (ReLU) whose
forward FLOPs (``torch.utils.flop_counter``, counted on the "after" model) match the RPN's.

How: long-lived worker subprocesses (this script with ``--worker SRC --model NAME``), one per
model and package (the RPN of "before", the RPN of "after", and the MLP twice), each with
``OMP_WAIT_POLICY=PASSIVE`` and 1 thread and nothing else in its process (one model's
allocations change the page faults of another's in a shared process), asked in turn (RPN
before, MLP, RPN after, MLP) for R rounds to time K steps in CPU time of the worker's thread
(``time.thread_time``: the machine is shared); only one worker runs at a time. Reported:
median [IQR] over rounds of the step times and of the per-round ratio RPN / MLP (each RPN
against the MLP timed right after it). Results are printed and written to
``benchmarks/results/kron_windows.md``.
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


def _worker(src: str, hidden: int, only: str) -> None:
    sys.path.insert(0, src)
    import torch
    torch.set_num_threads(1)
    from torch.nn import functional as F  # noqa: N812

    import rpnkit
    models = {only: _models(torch, rpnkit, hidden)[only]}
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
    plan = models["rpn"].layers[0].heads[0].plan() if only == "rpn" else ""
    print(json.dumps({"ready": True, "plan": plan}), flush=True)
    for line in sys.stdin:
        reps = json.loads(line)["reps"]
        out = {}
        for name, step in steps.items():
            t0 = time.thread_time()
            for _ in range(reps):
                step()
            out[name] = (time.thread_time() - t0) / reps
        print(json.dumps(out), flush=True)


#: glibc malloc settings that keep freed large buffers in the heap: no mmap / munmap and
#: page faults per step for the MB-sized activations, gradients and Adam temporaries
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 26), "MALLOC_TRIM_THRESHOLD_": str(1 << 28)}


def _start(src: str, hidden: int, model: str, steady: bool) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", **(STEADY_MALLOC if steady else {})}
    proc = subprocess.Popen([sys.executable, str(HERE), "--worker", src, "--hidden", str(hidden),
                             "--model", model],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    return proc, json.loads(proc.stdout.readline())


def _fmt(values: list[float], scale: float = 1e3, digits: int = 2) -> str:
    return fmt(values, scale, digits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="/tmp/before_kw/src")
    ap.add_argument("--after", default=str(ROOT / "src"))
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--worker")
    ap.add_argument("--hidden", type=int, default=0)
    ap.add_argument("--model", default="rpn")
    ap.add_argument("--steady-malloc", action="store_true",
                    help="workers run with STEADY_MALLOC (no per-step page faults)")
    ap.add_argument("--out", default=str(RESULTS / "kron_windows.md"))
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker, args.hidden, args.model)
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
        workers[label, "rpn"] = _start(src, hidden, "rpn", args.steady_malloc)
        workers[label, "mlp"] = _start(args.after, hidden, "mlp", args.steady_malloc)
    times = {lab: {"rpn": [], "mlp": []} for lab in ("before", "after")}
    for _ in range(args.rounds):
        for (label, model), (proc, _ready) in workers.items():
            proc.stdin.write(json.dumps({"reps": args.reps}) + "\n")
            proc.stdin.flush()
            out = json.loads(proc.stdout.readline())
            times[label][model].append(out[model])
    for proc, _ready in workers.values():
        proc.stdin.close()
        proc.wait()
    ratio = {lab: [r / m for r, m in zip(t["rpn"], t["mlp"])] for lab, t in times.items()}
    speed = [b / a for b, a in zip(times["before"]["rpn"], times["after"]["rpn"])]
    lines = [
        "# Kronecker lag windows: MNIST dual_lphm step vs an MLP of the same FLOPs",
        "",
        f"torch {torch.__version__}, {platform.machine()}, 1 thread, OMP_WAIT_POLICY=PASSIVE; "
        f"batch {BATCH}, Adam; {args.rounds} rounds (RPN before, MLP, RPN after, MLP; one "
        f"process each) of {args.reps} steps, CPU time of the worker thread; median [IQR]; "
        + ("glibc malloc " + ", ".join(f"{k}={v}" for k, v in STEADY_MALLOC.items())
           if args.steady_malloc else "default glibc malloc") + ".",
        f"RPN {DIMS} forward {target / 1e6:.1f} MFLOP; MLP [784, {hidden}, {hidden}, 10] "
        f"forward {mlp_flops / 1e6:.1f} MFLOP.",
        "",
        "| package | RPN step (ms) | MLP step (ms) | RPN / MLP (target <= 1.2) |",
        "|---|---|---|---|",
    ]
    for lab in times:
        lines.append(f"| {lab} | {_fmt(times[lab]['rpn'])} | {_fmt(times[lab]['mlp'])} | "
                     f"{_fmt(ratio[lab], 1, 2)} |")
    lines += ["", f"RPN step before / after: {_fmt(speed, 1, 2)}", "",
              "First head's plan (after):", "", "```", workers["after", "rpn"][1]["plan"], "```"]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    RESULTS.mkdir(exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
