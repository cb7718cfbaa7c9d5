"""Fixed overheads, measured side by side (issue 21 items 6 and 8).

    .venv/bin/python benchmarks/overheads.py [--rounds R] [--epochs E]

Two sections, each as paired interleaved rounds (A, B, A, B, ...) so that load from other
processes hits both sides alike; reported as the median [IQR] of the per-round ratios.

* **CLI start-up**: wall time of ``rpnkit --version``, ``rpnkit --help`` and ``rpnkit list``
  (each a fresh ``python -m rpnkit`` process) against ``python -c "import torch"``. Target:
  at most 0.5x ``import torch`` (the three commands import neither torch nor matplotlib).
* **fit vs a plain loop**: :func:`rpnkit.fit` against the loop a user would write by hand
  for the same work: the same model, data, optimiser (AdamW), batch size and minibatch
  order, a validation pass per epoch (to keep the best weights), and one evaluation of the
  train / val / test splits at the end. Two cases: an MLP-shaped RPN on MNIST-sized
  synthetic data for 1 epoch (784 -> 64 -> 10, 6,000 / 1,000 / 1,000 rows, batch 128,
  cross-entropy) and the 47-parameter RPN-Ext for 20 epochs (900 / 100 / 1,000 rows, batch
  100, MSE). Target: fit at most 1.10x the plain loop.

One thread (``torch.set_num_threads(1)``) in this process; the CLI subprocesses run with
``OMP_NUM_THREADS=1``. Results: printed and written to ``benchmarks/results/overheads.md``.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _venv  # noqa: F401  (re-runs this script with .venv/bin/python from a fresh shell)
import torch
from torch import nn

from rpnkit import RPN
from rpnkit.training import fit

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _q(v: list[float]) -> str:
    v = sorted(v)
    if len(v) < 4:
        return f"{statistics.median(v):.2f}"
    q = statistics.quantiles(v, n=4)
    return f"{statistics.median(v):.2f} [{q[0]:.2f}, {q[2]:.2f}]"


def _wall(cmd: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t


def cli_section(rounds: int) -> list[str]:
    py = sys.executable
    base = [py, "-c", "import torch"]
    cases = {"rpnkit --version": [py, "-m", "rpnkit", "--version"],
             "rpnkit --help": [py, "-m", "rpnkit", "--help"],
             "rpnkit list": [py, "-m", "rpnkit", "list"]}
    probe = [py, "-c", "import sys, runpy; sys.argv = ['rpnkit', '--version']\n"
             "try:\n    runpy.run_module('rpnkit', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print('loaded:' + ','.join(m for m in ('torch', 'matplotlib', 'numpy') if m in sys.modules))"]
    out = subprocess.run(probe, capture_output=True, text=True).stdout.splitlines()
    loaded = [s[len('loaded:'):] for s in out if s.startswith('loaded:')]
    _wall(base)
    for c in cases.values():  # warm the file cache
        _wall(c)
    times: dict[str, list[float]] = {k: [] for k in ("import torch", *cases)}
    ratios: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, cmd in cases.items():
            t0 = _wall(base)
            t1 = _wall(cmd)
            times["import torch"].append(t0)
            times[name].append(t1)
            ratios[name].append(t1 / t0)
    L = ["## CLI start-up (wall seconds of a fresh process)", "",
         f"Modules loaded by `rpnkit --version` among torch, matplotlib, numpy: "
         f"`{(loaded[0] if loaded and loaded[0] else 'none')}`.", "",
         "| command | seconds | ratio to `import torch` (target <= 0.5) |", "|---|---|---|"]
    L.append(f"| python -c \"import torch\" | {_q(times['import torch'])} | 1 |")
    for name in cases:
        L.append(f"| {name} | {_q(times[name])} | {_q(ratios[name])} |")
    return L + [""]


def _data(n: int, m: int, k: int, classification: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, m, generator=g)
    if classification:
        return x, torch.randint(0, k, (n,), generator=g)
    return x * 2 - 1, torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:2])


def plain_loop(model: nn.Module, splits: dict, epochs: int, batch: int, lr: float, loss_fn,
               seed: int) -> dict:
    """What a user writes by hand: AdamW, the engine's minibatch order, a validation pass
    per epoch keeping the best weights, one evaluation of every split at the end."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    x, y = splits["train"]
    best, _best_state = float("inf"), None
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            v = float(loss_fn(model(splits["val"][0]), splits["val"][1]))
        if v < best:
            best, best_state = v, copy.deepcopy(model.state_dict())
    with torch.no_grad():
        out = {k: float(loss_fn(model(xx), yy)) for k, (xx, yy) in splits.items()}
    out["best_val"] = best
    out["best_state"] = best_state
    return out


def fit_section(rounds: int, epochs_small: int) -> list[str]:
    cases = {}
    xs, ys = _data(8000, 784, 10, True, 0)
    cases["RPN [784,64,10] identity, 1 epoch, batch 128, 6,000 rows"] = {
        "make": lambda: RPN.from_dims([784, 64, 10], expansion="identity", remainder="zero"),
        "splits": {"train": (xs[:6000], ys[:6000]), "val": (xs[6000:7000], ys[6000:7000]),
                "test": (xs[7000:], ys[7000:])},
        "epochs": 1, "batch": 128, "lr": 1e-3, "loss": "cross_entropy", "fn": nn.functional.cross_entropy}
    xs, ys = _data(2000, 2, 1, False, 1)
    cases[f"RPN-Ext [2,2,1] (47 params), {epochs_small} epochs, batch 100, 900 rows"] = {
        "make": lambda: RPN.from_dims([2, 2, 1], expansion={"name": "extended", "expansions": [
            "bspline", {"name": "taylor", "d": 2}]}, reconciliation={"name": "lorr", "r": 1}, remainder="zero"),
        "splits": {"train": (xs[:900], ys[:900]), "val": (xs[900:1000], ys[900:1000]), "test": (xs[1000:], ys[1000:])},
        "epochs": epochs_small, "batch": 100, "lr": 3e-3, "loss": "mse", "fn": nn.functional.mse_loss}
    L = ["## rpnkit.fit vs a plain loop (same work), seconds", "",
         "| case | plain loop | fit | fit / plain (target <= 1.10) |", "|---|---|---|---|"]
    for name, c in cases.items():
        tp, tf, r = [], [], []
        bundle = {k: (v[0].numpy(), v[1].numpy()) for k, v in c["splits"].items()}
        cfg = {"epochs": c["epochs"], "batch_size": c["batch"], "loss": c["loss"],
               "optimizer": {"name": "adamw", "lr": c["lr"]}, "scheduler": "none"}
        for i in range(rounds + 1):
            torch.manual_seed(0)
            m1 = c["make"]()
            torch.manual_seed(0)
            m2 = c["make"]()
            t = time.perf_counter()
            plain_loop(m1, c["splits"], c["epochs"], c["batch"], c["lr"], c["fn"], seed=0)
            a = time.perf_counter() - t
            t = time.perf_counter()
            fit(m2, bundle, cfg, seed=0)
            b = time.perf_counter() - t
            if i:  # round 0 warms up
                tp.append(a)
                tf.append(b)
                r.append(b / a)
        L.append(f"| {name} | {_q(tp)} | {_q(tf)} | {_q(r)} |")
    return L + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=20, help="epochs of the small fit case")
    ap.add_argument("--out", default=str(RESULTS / "overheads.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    L = ["# Fixed overheads: CLI start-up and fit vs a plain loop (issue 21 items 6 and 8)", "",
         f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} logical cores (shared with "
         "other processes: absolute times are noisy, ratios are per round), torch.set_num_threads(1), "
         f"OMP_NUM_THREADS=1 for the CLI processes; {args.rounds} paired interleaved rounds, median "
         "[IQR]. Generated by `benchmarks/overheads.py`.", ""]
    L += cli_section(args.rounds)
    L += fit_section(args.rounds, args.epochs)
    text = "\n".join(L) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
