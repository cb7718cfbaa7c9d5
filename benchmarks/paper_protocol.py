"""The RPN paper's function-approximation protocol, exactly, resumable (``paper.py --protocol paper``).

Protocol (PAPER_RESULTS.md §1.1): per function 2,000 uniform samples drawn on the paper's
ranges, split 1,000 train / 1,000 test; 100 of the 1,000 training samples are carved out as
a validation split used for selection only (so 900 samples are fitted). 2,000 full-batch
epochs, 5 seeds (seed s draws its own samples and initialisation), raw inputs (Feynman
variables keep their original ranges) and raw targets, float32 (PyTorch's default, as in the
paper's toolkit). The recipe is rpnkit's default
optimiser, Adam (lr 0.01) with cosine decay to 0 over the 2,000 epochs, for every model.
Models and sizes are the paper's (asserted): elementary MLP [2,5,5,1] 51, KAN [2,2,1,1]
grid 5 order 3 63, RPN-Ext [2,2,1] 47, RPN-Nstd [2,2,1] 547; composite and Feynman MLP
[m,10,10,1] 151, KAN [m,2,2,1] grid 10 order 4 150, RPN-Ext [m,2,2,1] 71, RPN-Nstd 821
(for m = 2; Feynman models grow with m and their RPNs carry a linear remainder).

Each epoch evaluates train/val/test MSE of the current weights (one forward pass over the
three splits; only the training rows carry gradient), and three numbers are reported per
(function, model, seed): *final* (after the last epoch), *best-val* (test MSE at the epoch
of lowest validation MSE: selection on validation only) and *best-test* (lowest test MSE
seen during training: the paper's reporting rule, never used for selection).

The five seeds of one (function, model) are trained together as one ``torch.func.vmap``
over stacked parameters. Adam and cosine decay are elementwise and the loss is the sum of
the per-seed losses, so each seed follows exactly the trajectory it would follow alone in
:func:`rpnkit.training.fit` (``tests/test_paper_protocol.py`` checks this against the
engine); the batching only removes Python overhead.

Results are cached per (function, model, seed) in ``results/paper_runs/<section>/<eq>.json``
(validation and test curves at every 50th epoch; all epochs are evaluated for the three
numbers), so a run can be
stopped at any point and resumed in a later sitting.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from rpnkit import RPN
from rpnkit.data import FEYNMAN_PAPER_IDS, equation_ids, equation_table, load_data
from rpnkit.models import KAN
from rpnkit.training import count_params

HERE = Path(__file__).resolve().parent
RUNS = HERE / "results" / "paper_runs"
SECTIONS = ("elementary", "composite", "feynman")
MODELS = ("MLP", "KAN", "RPN-Ext", "RPN-Nstd")
# trained with pykan's default recipe (full-batch L-BFGS) instead of the reference recipe
LBFGS_MODELS = ("KAN-LBFGS", "pykan")
# L-BFGS columns train one model at a time (no vmap; pykan's 100 steps x 20 iterations take
# about a minute per model on one core), so they run 3 seeds, the fewest a paired comparison uses
SEEDS_OF = {"KAN-LBFGS": 3, "pykan": 3}

PROTOCOL = {"samples": 2000, "train": 900, "val": 100, "test": 1000, "epochs": 2000, "seeds": 5,
            "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-4, "scheduler": "exponential",
            "gamma": 0.999, "batch": 100, "order": "engine", "dtype": "float32", "lbfgs_steps": 100}
# the paper's parameter counts for two-input functions (PAPER_RESULTS.md §1.1)
PAPER_PARAMS = {
    "elementary": {"MLP": 51, "KAN": 63, "RPN-Ext": 47, "RPN-Nstd": 547},
    "composite": {"MLP": 151, "KAN": 150, "RPN-Ext": 71, "RPN-Nstd": 821},
}
CURVE_EVERY = 50


def _ext(rng: tuple[float, float] | None = None) -> dict:
    bs = {"name": "bspline"} if rng is None else {"name": "bspline", "range": list(rng)}
    return {"name": "extended", "expansions": [bs, {"name": "taylor", "d": 2}]}


def _nstd(rng: tuple[float, float] | None = None) -> dict:
    bs = {"name": "bspline"} if rng is None else {"name": "bspline", "range": list(rng)}
    return {"name": "nested", "expansions": [bs, {"name": "taylor", "d": 2}]}


def input_range(kind: str, eq: str) -> tuple[float, float] | None:
    """The first-layer B-spline grid for raw inputs: the union of the variables' sampling
    ranges when it leaves [-1, 1] (Feynman), else the default grid [-1, 1]."""
    ranges = equation_table(kind)[eq]["ranges"]
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    return None if (lo >= -1 and hi <= 1) else (float(lo), float(hi))


def builders(kind: str, m: int, rng: tuple[float, float] | None) -> dict[str, Callable[[int], nn.Module]]:
    """name -> (seed -> freshly initialised model) with the paper's architectures."""
    elementary = kind == "elementary"
    rpn_dims = [m, 2, 1] if elementary else [m, 2, 2, 1]
    mlp_dims = [m, 5, 5, 1] if elementary else [m, 10, 10, 1]
    kan_dims, grid, order = ([m, 2, 1, 1], 5, 3) if elementary else ([m, 2, 2, 1], 10, 4)
    rem = "linear" if kind == "feynman" else "zero"

    def rpn(exp_fn):
        def make(seed: int) -> nn.Module:
            torch.manual_seed(seed)
            layers = [{"expansion": exp_fn(rng)}] + [None] * (len(rpn_dims) - 2)
            return RPN.from_dims(rpn_dims, expansion=exp_fn(None), reconciliation={"name": "lorr", "r": 1},
                                 remainder=rem, layers=layers)
        return make

    def kan(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = KAN(kan_dims, grid=grid, degree=order)
        if rng is not None:  # first layer's grid on the raw input range
            torch.manual_seed(seed)
            model.layers[0] = KAN(kan_dims[:2], grid=grid, degree=order, grid_range=rng).layers[0]
        return model

    def mlp(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i in range(len(mlp_dims) - 1):
            layers.append(nn.Linear(mlp_dims[i], mlp_dims[i + 1]))
            if i < len(mlp_dims) - 2:
                layers.append(nn.SiLU())
        return nn.Sequential(*layers)

    def pykan(seed: int) -> nn.Module:  # the real peer, same shape, trained the same way
        from kan import KAN as PyKAN  # optional: pip install --no-deps pykan

        grid_range = list(rng) if rng is not None else [-1, 1]
        return PyKAN(width=kan_dims, grid=grid, k=order, seed=seed, grid_range=grid_range,
                     symbolic_enabled=False, save_act=False, auto_save=False, device="cpu")

    return {"MLP": mlp, "KAN": kan, "KAN-LBFGS": kan, "RPN-Ext": rpn(_ext), "RPN-Nstd": rpn(_nstd),
            "pykan": pykan}


def check_paper_params(kind: str) -> dict[str, int]:
    """Assert that the two-input models have the paper's parameter counts."""
    counts = {k: count_params(b(0)) for k, b in builders(kind, 2, None).items() if k in MODELS}
    want = dict(PAPER_PARAMS["elementary" if kind == "elementary" else "composite"])
    if kind == "feynman":  # the same models plus a linear remainder per layer: 2·2 + 2·2 + 2·1 weights
        want = {k: v + (10 if k.startswith("RPN") else 0) for k, v in want.items()}
    if counts != want:
        raise AssertionError(f"{kind}: parameter counts {counts} differ from the paper's {want}")
    return counts


def seed_data(kind: str, eq: str, seeds: list[int], dtype=torch.float64):
    """Stacked (S, N, m) inputs and (S, N, 1) targets, rows ordered train | val | test."""
    xs, ys = [], []
    split = {"train": PROTOCOL["train"], "val": PROTOCOL["val"], "test": PROTOCOL["test"]}
    for s in seeds:
        b = load_data(kind, {"equation": eq, "n_samples": PROTOCOL["samples"]}, split, seed=s)
        xs.append(torch.cat([torch.as_tensor(b.x[k]) for k in ("train", "val", "test")]))
        ys.append(torch.cat([torch.as_tensor(b.y[k]) for k in ("train", "val", "test")]))
    return torch.stack(xs).to(dtype), torch.stack(ys).to(dtype).reshape(len(seeds), -1, 1)


def _optimiser(params: list[torch.Tensor]):
    """The reference recipe's optimiser and per-epoch schedule."""
    opt = torch.optim.AdamW(params, lr=PROTOCOL["lr"], weight_decay=PROTOCOL["weight_decay"])
    return opt, torch.optim.lr_scheduler.ExponentialLR(opt, gamma=PROTOCOL["gamma"])


def _orders(seeds: list[int], n_train: int, epochs: int) -> torch.Tensor:
    """(epochs, S, n_train) minibatch orders: seed s shuffles with the generator that
    :func:`rpnkit.training.fit` uses for ``seed=s`` (one ``randperm`` per epoch)."""
    out = torch.empty(epochs, len(seeds), n_train, dtype=torch.long)
    for j, s in enumerate(seeds):
        g = torch.Generator().manual_seed(int(s) * 7919 + 17)
        for e in range(epochs):
            out[e, j] = torch.randperm(n_train, generator=g)
    return out


def train_seeds(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, n_train: int, n_val: int,
                epochs: int, seeds: list[int] | None = None, batch: int | None = None) -> dict[str, np.ndarray]:
    """The reference recipe on S independent models at once (one vmap): AdamW, ExponentialLR
    stepped per epoch, shuffled minibatches of ``batch`` rows (each seed its own order).

    Returns per-epoch MSE curves, shape (epochs + 1, S), of the weights *after* that many
    epochs, for ``train``, ``val`` and ``test`` (rows of ``x``: train | val | test).
    """
    dtype = x.dtype
    batch = batch or PROTOCOL["batch"]
    seeds = list(range(x.shape[0])) if seeds is None else seeds
    models = [m.to(dtype) for m in models]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0])  # a shell: functional_call swaps in the stacked tensors

    def one(p, b, xx):
        return functional_call(base, (p, b), (xx,))

    fwd = vmap(one)
    opt, sched = _optimiser(list(params.values()))
    s = x.shape[0]
    curves = torch.empty(epochs + 1, 3, s, dtype=torch.float64)
    bounds = (0, n_train, n_train + n_val, x.shape[1])
    rows = torch.arange(s)[:, None]
    orders = _orders(seeds, n_train, epochs)
    xt, yt = x[:, :n_train], y[:, :n_train]
    alive = torch.ones(s, dtype=torch.bool)
    for e in range(epochs + 1):
        with torch.no_grad():
            err = (fwd(params, buffers, x) - y).pow(2).flatten(1)  # (S, N)
            split_mse = torch.stack([err[:, bounds[i]:bounds[i + 1]].mean(1) for i in range(3)])
        split_mse[:, ~alive] = math.nan
        curves[e] = split_mse
        alive &= torch.isfinite(split_mse[0])
        if e == epochs or not alive.any():
            curves[e + 1:] = math.nan
            break
        perm = orders[e]
        xe, ye = xt[rows, perm], yt[rows, perm]
        for k in range(0, n_train, batch):
            opt.zero_grad(set_to_none=True)
            out = fwd(params, buffers, xe[:, k:k + batch])
            loss_s = (out - ye[:, k:k + batch]).pow(2).flatten(1).mean(1)
            # each seed's loss depends on its own slice of the stacked parameters only
            torch.nan_to_num(loss_s, nan=0.0, posinf=0.0).sum().backward()
            opt.step()
        sched.step()
    c = curves.numpy()
    return {"train": c[:, 0], "val": c[:, 1], "test": c[:, 2]}


def train_one(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_train: int, n_val: int,
              epochs: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The same recipe as :func:`train_seeds` for one model that ``vmap`` cannot batch
    (pykan); curves of shape (epochs + 1, 1)."""
    model = model.to(x.dtype)
    opt, sched = _optimiser([p for p in model.parameters() if p.requires_grad])
    curves = torch.full((epochs + 1, 3, 1), math.nan, dtype=torch.float64)
    bounds = (0, n_train, n_train + n_val, x.shape[0])
    orders = _orders([seed], n_train, epochs)
    batch = PROTOCOL["batch"]
    for e in range(epochs + 1):
        with torch.no_grad():
            err = (model(x) - y).pow(2).flatten()
            split_mse = torch.stack([err[bounds[i]:bounds[i + 1]].mean() for i in range(3)])
        curves[e, :, 0] = split_mse
        if e == epochs or not torch.isfinite(split_mse[0]):
            break
        perm = orders[e, 0]
        for k in range(0, n_train, batch):
            idx = perm[k:k + batch]
            opt.zero_grad(set_to_none=True)
            (model(x[idx]) - y[idx]).pow(2).mean().backward()
            opt.step()
        sched.step()
    c = curves.numpy()
    return {"train": c[:, 0], "val": c[:, 1], "test": c[:, 2]}


def train_lbfgs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_train: int, n_val: int,
                steps: int | None = None) -> dict[str, np.ndarray]:
    """pykan's own default recipe (``KAN.fit``): full-batch L-BFGS, lr 1, history 10, strong
    Wolfe line search, ``steps`` outer steps (pykan's default 100); curves (steps + 1, 1)."""
    steps = steps or PROTOCOL["lbfgs_steps"]
    model = model.to(x.dtype)
    opt = torch.optim.LBFGS([p for p in model.parameters() if p.requires_grad], lr=1.0, history_size=10,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-32, tolerance_change=1e-32)
    curves = torch.full((steps + 1, 3, 1), math.nan, dtype=torch.float64)
    bounds = (0, n_train, n_train + n_val, x.shape[0])
    xt, yt = x[:n_train], y[:n_train]

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = (model(xt) - yt).pow(2).mean()
        loss.backward()
        return loss

    for e in range(steps + 1):
        with torch.no_grad():
            err = (model(x) - y).pow(2).flatten()
            split_mse = torch.stack([err[bounds[i]:bounds[i + 1]].mean() for i in range(3)])
        curves[e, :, 0] = split_mse
        if e == steps or not torch.isfinite(split_mse[0]):
            break
        opt.step(closure)
    c = curves.numpy()
    return {"train": c[:, 0], "val": c[:, 1], "test": c[:, 2]}


def summarise(curves: dict[str, np.ndarray], j: int) -> dict[str, Any]:
    """Final, best-on-validation and best-test (paper's rule) numbers of seed column j."""
    val, test = curves["val"][1:, j], curves["test"][1:, j]  # epochs 1..E
    finite = np.isfinite(val) & np.isfinite(test)
    rec: dict[str, Any] = {"final": _f(test[-1]), "diverged": bool(not np.isfinite(test[-1]))}
    if finite.any():
        iv = int(np.nanargmin(np.where(finite, val, np.inf)))
        it = int(np.nanargmin(np.where(finite, test, np.inf)))
        rec.update(best_val=_f(test[iv]), best_val_epoch=iv + 1, best_test=_f(test[it]), best_test_epoch=it + 1)
    else:
        rec.update(best_val=None, best_val_epoch=None, best_test=None, best_test_epoch=None)
    rec["val_curve"] = [_f(v, 4) for v in curves["val"][::CURVE_EVERY, j]]
    rec["test_curve"] = [_f(v, 4) for v in curves["test"][::CURVE_EVERY, j]]
    return rec


def _f(v: float, digits: int = 6) -> float | None:
    v = float(v)
    return float(f"{v:.{digits}g}") if math.isfinite(v) else None


def _sig() -> dict:
    return dict(PROTOCOL)


def run_file(kind: str, eq: str) -> Path:
    return RUNS / kind / f"{eq}.json"


def load_runs(kind: str, eq: str) -> dict:
    p = run_file(kind, eq)
    if p.exists():
        d = json.loads(p.read_text())
        if d.get("protocol") == _sig():
            return d
    return {"protocol": _sig(), "models": {}}


def save_runs(kind: str, eq: str, d: dict) -> None:
    p = run_file(kind, eq)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(d, separators=(",", ":")))
    os.replace(tmp, p)


def _save_model(kind: str, eq: str, name: str, rec: dict) -> None:
    """Merge one model's record into the function's cache file under a file lock, so that
    several processes may train different models of the same function."""
    import fcntl

    lock = run_file(kind, eq).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        d = load_runs(kind, eq)
        d["formula"] = equation_table(kind)[eq]["formula"]
        rng = input_range(kind, eq)
        d["input_grid"] = list(rng) if rng else [-1.0, 1.0]
        d["models"].setdefault(name, {"params": rec["params"], "seeds": {}})["seeds"].update(rec["seeds"])
        save_runs(kind, eq, d)


def missing(kind: str, eq: str, name: str, seeds: int) -> bool:
    return len(load_runs(kind, eq)["models"].get(name, {}).get("seeds", {})) < seeds


def run_group(kind: str, eqs: list[str], name: str, seeds: int,
              log: Callable[[str], None] = print) -> None:
    """Train ``name`` on every function of ``eqs`` whose seeds are not all cached.

    Functions of one section with the same input dimension share the architecture (the
    first layer's grid range lives in buffers), so all their (function, seed) models train as
    one vmap: the per-step cost grows far less than the number of models. Each model still
    follows exactly the trajectory it would follow alone (its own data, initialisation and
    minibatch order). L-BFGS columns (pykan's recipe) train one model at a time.
    """
    eqs = [eq for eq in eqs if missing(kind, eq, name, seeds)]
    if not eqs:
        return
    if name in LBFGS_MODELS and len(eqs) > 1:  # nothing to batch: save function by function
        for eq in eqs:
            run_group(kind, [eq], name, seeds, log=log)
        return
    ss = list(range(seeds))
    t0, c0 = time.perf_counter(), time.process_time()
    xs, ys, nets, owners = [], [], [], []
    for eq in eqs:
        x, y = seed_data(kind, eq, ss, getattr(torch, PROTOCOL["dtype"]))
        build = builders(kind, x.shape[-1], input_range(kind, eq))
        try:
            nets += [build[name](s) for s in ss]
        except ImportError:
            log("pykan is not installed (pip install --no-deps pykan): column skipped")
            return
        xs.append(x)
        ys.append(y)
        owners += [(eq, s) for s in ss]
    x, y = torch.cat(xs), torch.cat(ys)
    if name in LBFGS_MODELS:  # pykan's own default recipe, one model at a time
        parts = [train_lbfgs(net, x[i], y[i], PROTOCOL["train"], PROTOCOL["val"]) for i, net in enumerate(nets)]
        curves = {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}
    else:
        curves = train_seeds(nets, x, y, PROTOCOL["train"], PROTOCOL["val"], PROTOCOL["epochs"],
                             seeds=[s for _, s in owners])
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    for eq in eqs:
        rec = {"params": count_params(nets[owners.index((eq, 0))]), "seeds": {}}
        for j, (e, s) in enumerate(owners):
            if e == eq:
                r = summarise(curves, j)
                r["seconds"] = round(secs / len(owners), 2)
                r["cpu_seconds"] = round(cpu / len(owners), 2)
                rec["seeds"][str(s)] = r
        _save_model(kind, eq, name, rec)
    log(f"{kind} {name} on {len(eqs)} functions x {seeds} seeds: {secs:.0f}s")


def run_function(kind: str, eq: str, seeds: int, models: tuple[str, ...] = MODELS,
                 log: Callable[[str], None] = print) -> dict:
    """Train every missing (model, seed) of one function; return the cached record."""
    for name in models:
        run_group(kind, [eq], name, seeds, log=log)
    return load_runs(kind, eq)


def groups(kind: str) -> list[list[str]]:
    """The section's functions grouped by input dimension (one vmap per group)."""
    by_m: dict[int, list[str]] = {}
    for eq in section_ids(kind):
        by_m.setdefault(len(equation_table(kind)[eq]["ranges"]), []).append(eq)
    return list(by_m.values())


def section_ids(kind: str) -> list[str]:
    return list(FEYNMAN_PAPER_IDS) if kind == "feynman" else list(equation_ids(kind))


# ----------------------------------------------------------------------------- report
def _stats(vals: list[float | None]) -> tuple[float, float, int]:
    v = [x for x in vals if x is not None and math.isfinite(x)]
    if not v:
        return math.nan, math.nan, 0
    return float(np.mean(v)), float(np.std(v)), len(v)


def _med(vals: list[float | None]) -> float:
    v = [x for x in vals if x is not None and math.isfinite(x)]
    return float(np.median(v)) if v else math.nan


def _cell(vals: list[float | None], seeds: int) -> str:
    """'mean±std (med median)' over the finite seeds; (k/S) when seeds are missing."""
    mean, std, n = _stats(vals)
    if n == 0:
        return "n/a" if vals else ""
    s = f"{mean:.2e}" if n == 1 else f"{mean:.2e}±{std:.0e} (med {_med(vals):.1e})"
    return s if n >= seeds else f"{s} ({n}/{seeds})"


def _verdict(ours: float, paper: float) -> str:
    if not math.isfinite(ours):
        return "trail"
    return "beat" if ours <= paper else ("match" if ours <= 3 * paper else "trail")


# models in table order; the paper column each one is compared with
REPORT_MODELS = ("MLP", "KAN", "KAN-LBFGS", "pykan", "RPN-Ext", "RPN-Nstd")
PAPER_COLUMN = {"MLP": "MLP", "KAN": "KAN", "KAN-LBFGS": "KAN", "pykan": "KAN", "RPN-Ext": "RPN-Ext",
                "RPN-Nstd": "RPN-Nstd"}
PAPER_COLS = {"elementary": ("MLP", "KAN", "RPN-Ext", "RPN-Nstd"),
              "composite": ("MLP", "KAN", "RPN-Ext", "RPN-Nstd"), "feynman": ("MLP", "KAN", "RPN-Ext")}
# equal-budget pairs: (ours, opponent, primary?) — primary pairs share the recipe and are the
# paper's own sizes (RPN-Ext has fewer parameters than its opponents)
PAIRS = (("RPN-Ext", "MLP", True), ("RPN-Ext", "KAN", True), ("RPN-Nstd", "MLP", False),
         ("RPN-Nstd", "KAN", False), ("better RPN", "MLP", False))


def _seed_values(d: dict, model: str, key: str) -> dict[str, float]:
    """seed -> value (finite only); 'better RPN' is the per-seed better of Ext and Nstd."""
    if model == "better RPN":
        a, b = _seed_values(d, "RPN-Ext", key), _seed_values(d, "RPN-Nstd", key)
        return {s: min(a[s], b[s]) for s in a.keys() & b.keys()}
    out = {}
    for s, r in d["models"].get(model, {}).get("seeds", {}).items():
        v = r.get(key)
        if v is not None and math.isfinite(v) and v > 0:
            out[s] = float(v)
    return out


def paired(d: dict, ours: str, other: str, key: str = "best_val") -> dict | None:
    """Per-function paired comparison over the seeds both models finished (same data per seed).

    ``ratio`` is the geometric mean of the per-seed ratios ours/other; ``lo``/``hi`` their
    range; ``p`` a two-sided paired t-test on log MSE. A win (loss) is counted only when the
    whole seed range lies below (above) 1 and p < 0.05, i.e. beyond the seed-to-seed spread.
    """
    from scipy import stats

    a, b = _seed_values(d, ours, key), _seed_values(d, other, key)
    common = sorted(a.keys() & b.keys())
    if len(common) < 3:
        return None
    la = np.log([a[s] for s in common])
    lb = np.log([b[s] for s in common])
    lr = la - lb
    p = 1.0 if np.allclose(lr, lr[0]) and abs(lr[0]) < 1e-12 else float(stats.ttest_rel(la, lb).pvalue)
    if not math.isfinite(p):  # identical differences: the sign is certain
        p = 0.0
    verdict = "tie"
    if p < 0.05 and lr.max() < 0:
        verdict = "win"
    elif p < 0.05 and lr.min() > 0:
        verdict = "loss"
    return {"ratio": float(np.exp(lr.mean())), "lo": float(np.exp(lr.min())), "hi": float(np.exp(lr.max())),
            "p": p, "n": len(common), "verdict": verdict}


def _gm(v: list[float]) -> float:
    return float(np.exp(np.mean(np.log(v)))) if v else math.nan


def render_sections(ref: dict[str, dict[str, tuple]], search: dict | None = None,
                    seeds: int = PROTOCOL["seeds"], baselines: dict | None = None
                    ) -> tuple[list[str], list[str]]:
    """Markdown of the three function sections (from the cache), the summary table per model
    and set, the equal-budget comparisons, and the conclusion lines."""
    L: list[str] = []
    notes: list[str] = []
    summary: list[tuple] = []      # (set, model, n, beat, match, trail, within-3x by median, by best-val)
    comparisons: list[tuple] = []  # (set, ours, other, primary, [paired results], per-function rows)
    all_runs: dict[str, dict] = {}
    for kind in SECTIONS:
        ids = section_ids(kind)
        runs = {eq: load_runs(kind, eq) for eq in ids if run_file(kind, eq).exists()}
        runs = {eq: d for eq, d in runs.items() if d["models"]}
        all_runs[kind] = runs
        if not runs:
            continue
        models = [m for m in REPORT_MODELS if any(m in d["models"] for d in runs.values())]
        L += [f"## {kind.capitalize()} functions (test MSE)", ""]
        want = {m: SEEDS_OF.get(m, seeds) for m in models}
        done = {m: sum(1 for d in runs.values() if len(d["models"].get(m, {}).get("seeds", {})) >= want[m])
                for m in models}
        L.append("Coverage: functions with all seeds done — "
                 + ", ".join(f"{m} {done[m]}/{len(ids)}" + (f" ({want[m]} seeds)" if want[m] != seeds else "")
                             for m in models)
                 + f". Cells are mean±std over seeds (med = median); (k/{seeds}) marks a cell with fewer "
                 "seeds; an empty cell was not run.")
        if kind == "feynman":
            L.append("Raw variable ranges; the first layer's B-spline grid (RPN-Ext, KAN) spans "
                     "the union of the variables' ranges, later layers keep [-1, 1]. RPNs carry a "
                     "linear remainder, as in the paper; the paper reports no RPN-Nstd here.")
        first = max(runs.values(), key=lambda d: len(d["models"]))
        L.append("Parameters (first function): " + ", ".join(
            f"{m} {first['models'][m]['params']}" for m in models if m in first["models"]) + ".")
        L.append("")
        head = ["Eq", "f"]
        for m in models:
            head += [f"{m} final", f"{m} best-val", f"{m} best-test"]
        pc = PAPER_COLS[kind]
        head += [f"paper {c}" for c in pc]
        L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        cnt = {m: {"beat": 0, "match": 0, "trail": 0, "med": 0, "bv": 0} for m in models}
        for eq in ids:
            d = runs.get(eq)
            if d is None:
                continue
            cells = [eq, f"`{d.get('formula', '')}`"]
            for m in models:
                ss = list(d["models"].get(m, {}).get("seeds", {}).values())
                for key in ("final", "best_val", "best_test"):
                    cells.append(_cell([r.get(key) for r in ss], want[m]) if ss else "")
            r = ref.get(eq)
            cells += [f"{v:.2e}" for v in r] if r else [""] * len(pc)
            L.append("| " + " | ".join(cells) + " |")
            if not r:
                continue
            for m in models:
                ss = list(d["models"].get(m, {}).get("seeds", {}).values())
                if len(ss) < want[m] or PAPER_COLUMN[m] not in pc:
                    continue
                paper = r[pc.index(PAPER_COLUMN[m])]
                bt = [r_.get("best_test") for r_ in ss]
                mean = _stats(bt)[0]
                cnt[m][_verdict(mean if _stats(bt)[2] == len(ss) else math.inf, paper)] += 1
                cnt[m]["med"] += _med(bt) <= 3 * paper
                cnt[m]["bv"] += _stats([r_.get("best_val") for r_ in ss])[0] <= 3 * paper
        L.append("")
        for m in models:
            c = cnt[m]
            n = c["beat"] + c["match"] + c["trail"]
            if n:
                summary.append((kind, m, n, c["beat"], c["match"], c["trail"], c["med"], c["bv"]))
        for ours, other, primary in PAIRS:
            res = [(eq, paired(d, ours, other)) for eq, d in runs.items()]
            res = [(eq, p) for eq, p in res if p is not None]
            if res:
                comparisons.append((kind, ours, other, primary, res))

    if summary:
        L += ["## Summary: within 3x of the paper, per model and set", "",
              "A function counts as *within 3x or better* when our mean best-test MSE over the "
              f"{seeds} seeds (3 for the L-BFGS column; the paper's reporting rule, compared with the paper's mean) is at most 3x "
              "the paper's figure; *better* when it is at most the paper's. The last two columns apply "
              "the same 3x test to the median best-test and to the honest best-val mean. Only "
              f"functions with all {seeds} seeds count. KAN-LBFGS and pykan are compared with the "
              "paper's KAN column.", "",
              "| set | model | functions | within 3x or better (mean best-test) | of which better | "
              "more than 3x worse | within 3x (median best-test) | within 3x (mean best-val) |",
              "|---|---|---|---|---|---|---|---|"]
        tot: dict[str, list[int]] = {}
        for kind, m, n, beat, match, trail, med, bv in summary:
            L.append(f"| {kind} | {m} | {n} | {beat + match} | {beat} | {trail} | {med} | {bv} |")
            t = tot.setdefault(m, [0, 0, 0, 0, 0])
            for i, v in enumerate((n, beat + match, beat, med, bv)):
                t[i] += v
        for m, (n, w, beat, med, bv) in tot.items():
            L.append(f"| **all** | {m} | {n} | {w} | {beat} | {n - w} | {med} | {bv} |")
        L.append("")
        for m, (n, w, beat, med, bv) in tot.items():
            notes.append(f"{m}: within 3x of the paper's {PAPER_COLUMN[m]} figure or better on {w} of {n} "
                         f"functions (better on {beat}); by the median over seeds {med} of {n}; by the honest best-val "
                         f"mean {bv} of {n}")

    L += _gaps(all_runs, ref, seeds)
    if comparisons:
        L += ["## Comparisons at equal budgets", "",
              "Every contender is one configuration (the paper's architecture and size), trained with the "
              f"same recipe (the reference recipe above) on the same data for each of the {seeds} seeds, "
              "and selected the same way (test MSE at the best-validation epoch). Per function the "
              "paired per-seed ratios ours/opponent give a geometric mean and a range; a *win* (loss) "
              "counts only when every seed's ratio is below (above) 1 and a paired t-test on log MSE "
              "gives p < 0.05, i.e. beyond the seed-to-seed spread; everything else is a tie. Across "
              "functions we report the median and the geometric mean of the per-function ratios (< 1: "
              "ours lower), never a ratio of medians. Primary lines compare RPN-Ext with the "
              "MLP and KAN of the paper's sizes (RPN-Ext has fewer parameters: 47 vs 51/63 elementary, "
              "71 vs 151/150 composite). Secondary lines compare models of unequal size (RPN-Nstd has "
              "547/821 parameters) or the per-seed better of RPN-Ext and RPN-Nstd (a mixed contender "
              "with two configurations against one).", "",
              "| set | comparison | kind | functions | wins | ties | losses | median ratio | geo-mean ratio | "
              "IQR of ratios |", "|---|---|---|---|---|---|---|---|---|---|"]
        for kind, ours, other, primary, res in comparisons:
            rs = [p["ratio"] for _, p in res]
            v = [p["verdict"] for _, p in res]
            q1, q3 = np.percentile(rs, [25, 75])
            L.append(f"| {kind} | {ours} vs {other} | {'primary' if primary else 'secondary'} | {len(res)} | "
                     f"{v.count('win')} | {v.count('tie')} | {v.count('loss')} | {np.median(rs):.2g} | "
                     f"{_gm(rs):.2g} | {q1:.2g}–{q3:.2g} |")
            if primary:
                notes.append(f"{kind}: {ours} vs {other} (same recipe, best-val, paired seeds): "
                             f"{v.count('win')} wins, {v.count('tie')} ties, {v.count('loss')} losses of "
                             f"{len(res)}; median ratio {np.median(rs):.2g}, geometric mean {_gm(rs):.2g}")
        L += ["", "<details><summary>Per-function paired ratios (primary comparisons)</summary>", "",
              "| set | function | comparison | geo-mean ratio | seed range | p | verdict |",
              "|---|---|---|---|---|---|---|"]
        for kind, ours, other, primary, res in comparisons:
            if primary:
                for eq, p in res:
                    L.append(f"| {kind} | {eq} | {ours} / {other} | {p['ratio']:.2g} | {p['lo']:.2g}–{p['hi']:.2g} | "
                             f"{p['p']:.2g} | {p['verdict']} |")
        L += ["", "</details>", ""]
    if search:
        L += search_section(search, baselines or {})
    return L, notes


def _gaps(all_runs: dict[str, dict], ref: dict[str, tuple], seeds: int, model: str = "RPN-Ext") -> list[str]:
    """Function by function, why ``model`` is not within 3x of the paper (mean best-test)."""
    rows = []
    kinds = {"outlier": 0, "spread": 0, "systematic": 0}
    for kind, runs in all_runs.items():
        pc = PAPER_COLS[kind]
        for eq, d in runs.items():
            r = ref.get(eq)
            ss = list(d["models"].get(model, {}).get("seeds", {}).values())
            if not r or len(ss) < seeds:
                continue
            paper = r[pc.index(model)]
            bt = [x.get("best_test") for x in ss]
            vals = sorted(math.inf if v is None or not math.isfinite(v) else v for v in bt)
            mean = float(np.mean(vals))
            if mean <= 3 * paper:
                continue
            med = float(np.median(vals))
            within = sum(v <= 3 * paper for v in vals)
            if med <= 3 * paper:
                why = (f"outlier seeds: the median is within 3x; {seeds - within} of {seeds} seeds are above 3x "
                       f"(the worst {vals[-1] / med:.0f}x the median) and pull the mean up")
                kinds["outlier"] += 1
            elif within:
                why = (f"seed spread: {within} of {seeds} seeds within 3x, the median {med / paper:.1f}x the paper")
                kinds["spread"] += 1
            else:
                why = (f"systematic: every seed above 3x (best seed {vals[0] / paper:.1f}x, median "
                       f"{med / paper:.1f}x the paper)")
                kinds["systematic"] += 1
            rows.append(f"| {kind} | {eq} | `{d.get('formula', '')}` | {paper:.2e} | {mean:.2e} | {med:.2e} | "
                        f"{vals[0]:.2e} | {vals[-1]:.2e} | {why} |")
    if not rows:
        return []
    return [f"## Where {model} is not within 3x of the paper, function by function", "",
            f"Every function whose mean best-test MSE over the {seeds} seeds is more than 3x the paper's figure, "
            "with the reason read off its seeds: *outlier seeds* (the median is within 3x; one or two seeds "
            "stall on a plateau and dominate the mean — the paper's own standard deviations show the same), "
            "*seed spread* (some seeds within 3x, the median not), *systematic* (no seed within 3x). "
            f"Counts: {kinds['outlier']} outlier, {kinds['spread']} spread, {kinds['systematic']} systematic.", "",
            "| set | function | f | paper | our mean | our median | best seed | worst seed | reading |",
            "|---|---|---|---|---|---|---|---|---|", *rows, ""]


def search_section(search: dict, baselines: dict) -> list[str]:
    """What `rpnkit search` picks at the paper's RPN-Ext budget (results/paper_search.json),
    described, not counted as wins: its selection budget is not the opponents'."""
    from collections import Counter

    L = ["## What `rpnkit search` picks at the paper's RPN-Ext budget (not a comparison)", "",
         "Per function (`benchmarks/paper_search.py`; every candidate runs, so the result does not "
         "depend on machine load), `rpnkit.search` over catalog RPNs (expansions extended[bspline, "
         "taylor d2], bspline, taylor d2, chebyshev d5, gaussian_rbf; lorr r=1 or identity; zero or "
         "linear remainder; 1–3 layers at the widest width that fits; screened with Adam for 100 epochs, "
         "the 2 best then trained with each of three recipes: Adam+cosine 600 epochs, L-BFGS, Adam "
         "then L-BFGS), at most the parameters of the paper's RPN-Ext, seed 0 only, selected on "
         "validation. The MLP and KAN beside it are the paper's shapes trained with each of the same "
         "three recipes, the recipe chosen on validation (`paper_search.py --baselines`). **The "
         "selection budgets differ** (about 60 architectures x 3 recipes for the search, 1 architecture "
         "x 3 recipes for each baseline) and only one seed was searched (search results moved up to "
         "7x between seeds in an earlier check), so no win is claimed from this section: the ratios "
         "below say how much a search over architectures and recipes buys on one seed, nothing more.",
         "", "| group | searched | median search / recipe-matched MLP | geo-mean | median search / "
         "recipe-matched KAN | geo-mean |", "|---|---|---|---|---|---|"]
    wins = Counter()
    rows_all = []
    for kind in SECTIONS:
        r_mlp, r_kan = [], []
        n = 0
        for key, rec in search.items():
            k, eq = key.split("/", 1)
            if k != kind or not rec.get("winner", {}).get("test"):
                continue
            t = rec["winner"]["test"]["mse"]
            n += 1
            bl = baselines.get(key) or {}
            mm = (bl.get("MLP") or {}).get("test")
            mk = (bl.get("KAN") or {}).get("test")
            if mm:
                r_mlp.append(t / mm)
            if mk:
                r_kan.append(t / mk)
            name = rec.get("winner_name") or ""
            wins[(name.split(" / dims")[0], rec["winner"].get("recipe"))] += 1
            rows_all.append((key, rec, t))
        if n:
            f = lambda v: f"{np.median(v):.2g}" if v else ""  # noqa: E731
            g = lambda v: f"{_gm(v):.2g}" if v else ""  # noqa: E731
            L.append(f"| {kind} | {n} | {f(r_mlp)} | {g(r_mlp)} | {f(r_kan)} | {g(r_kan)} |")
    L += ["", "Configurations the search chose (architecture without widths, recipe: functions):", ""]
    for (arch, recipe), c in wins.most_common():
        L.append(f"* {arch} [{recipe}]: {c}")
    L += ["", "<details><summary>Per function</summary>", "",
          "| function | budget | chosen | recipe | params | test MSE | recipe-matched MLP | recipe-matched KAN |",
          "|---|---|---|---|---|---|---|---|"]
    for key, rec, t in rows_all:
        w = rec["winner"]
        bl = baselines.get(key) or {}
        mm = "" if not bl.get("MLP") else f"{bl['MLP']['test']:.2e} [{bl['MLP']['recipe']}]"
        mk = "" if not bl.get("KAN") else f"{bl['KAN']['test']:.2e} [{bl['KAN']['recipe']}]"
        L.append(f"| {key} | {rec['budget']} | {rec.get('winner_name')} | {w.get('recipe')} | {w.get('params')} | "
                 f"{t:.2e} | {mm} | {mk} |")
    L += ["", "</details>", ""]
    return L
