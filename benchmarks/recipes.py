"""Which training recipe should the function-fitting default use? Seed-to-seed spread.

Trains the default job's model (RPN-Ext [m,2,2,1], extended[bspline, taylor d2] + lorr r=1)
with rpnkit's training engine on a set of paper functions, 5 seeds each (seed s draws its
own samples and initialisation; 900 train / 100 validation / 1,000 test, raw inputs), under
each recipe, and reports per recipe: the median over functions of the median best-val test
MSE, the seed spread (standard deviation of log10 MSE over seeds, median over functions),
the worst seed/best seed ratio, and the wall time per run. Writes
``results/recipes.md`` (and ``recipes.json``).

    python benchmarks/recipes.py [--seeds 5] [--functions E.1,C.6,...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import _venv  # noqa: F401
import numpy as np
import torch

from rpnkit import RPN
from rpnkit.data import load_data
from rpnkit.training import fit

HERE = Path(__file__).resolve().parent
EXT = {"name": "extended", "expansions": [{"name": "bspline"}, {"name": "taylor", "d": 2}]}
FUNCTIONS = [("elementary", "E.1"), ("elementary", "E.3"), ("elementary", "E.9"), ("elementary", "E.16"),
             ("composite", "C.0"), ("composite", "C.3"), ("composite", "C.6"), ("composite", "C.9"),
             ("composite", "C.12"), ("composite", "C.13"), ("feynman", "I.6.2"), ("feynman", "I.9.18")]
ADAM = {"optimizer": {"name": "adam", "lr": 0.02}, "scheduler": "cosine", "epochs": 800, "loss": "mse"}
LBFGS = {"optimizer": {"name": "lbfgs", "lr": 1.0, "max_iter": 20}, "scheduler": "none", "loss": "mse"}
RECIPES = {
    "adam 0.02 cosine 800 (old default)": [ADAM],
    "lbfgs 100": [{**LBFGS, "epochs": 100}],
    "adam 800 + lbfgs polish 40": [ADAM, {**LBFGS, "epochs": 40}],
}


def run_recipe(phases, kind, eq, seed, standardize):
    bundle = load_data(kind, {"equation": eq}, {"train": 900, "val": 100, "test": 1000}, seed=seed,
                       standardize=standardize)
    torch.manual_seed(seed)
    model = RPN.from_dims([bundle.n_features, 2, 2, 1], expansion=EXT,
                          reconciliation={"name": "lorr", "r": 1}, remainder="zero")
    best_val, best_test = math.inf, math.nan
    for ph in phases:
        res = fit(model, bundle, ph, seed=seed, restore_best=True)
        v = res.best_metrics.get("val", {}).get("loss", math.nan)
        if math.isfinite(v) and v < best_val:
            best_val, best_test = v, res.best_metrics["test"]["mse"]
    return best_test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--functions", default=None)
    ap.add_argument("--recipes", default=None, help="comma list of recipe-name prefixes")
    ap.add_argument("--json", default=str(HERE / "results" / "recipes.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    funcs = FUNCTIONS
    if args.functions:
        want = set(args.functions.split(","))
        funcs = [f for f in FUNCTIONS if f[1] in want]
    recipes = {k: v for k, v in RECIPES.items()
               if not args.recipes or any(k.startswith(p) for p in args.recipes.split(","))}
    path = Path(args.json)
    store = json.loads(path.read_text()) if path.exists() else {}
    for name, phases in recipes.items():
        for kind, eq in funcs:
            key = f"{kind}/{eq}"
            rec = store.setdefault(name, {}).get(key)
            if rec and len(rec["mse"]) >= args.seeds:
                continue
            t0 = time.perf_counter()
            mse = [run_recipe(phases, kind, eq, s, kind == "feynman") for s in range(args.seeds)]
            store[name][key] = {"mse": mse, "seconds": (time.perf_counter() - t0) / args.seeds}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(store, indent=1))
            os.replace(tmp, path)
            print(f"[{time.strftime('%H:%M:%S')}] {name} {key}: median {np.median(mse):.2e}", flush=True)
    render(store, path.with_suffix(".md"))


def render(store, md: Path) -> None:
    L = ["# Training recipes: seed-to-seed spread", "",
         "Produced by `benchmarks/recipes.py`: the default job's model (RPN-Ext [m,2,2,1], "
         "extended[bspline, taylor d2] + lorr r=1 + zero remainder) trained with rpnkit's engine on "
         "paper functions, 5 seeds each (own samples and initialisation per seed; 900/100/1,000 "
         "split; Feynman inputs standardised). MSE = test MSE of the best-validation epoch. "
         "*spread* = standard deviation over seeds of log10 MSE (median over functions); "
         "*worst/best* = max/min MSE over seeds (median over functions); *worst seed* = the worst "
         "seed's MSE (median over functions); *std* = standard deviation of the MSE over seeds "
         "(median over functions).", "",
         "| recipe | functions | median MSE | worst seed | std | spread (dex) | worst/best | s per run |",
         "|---|---|---|---|---|---|---|---|"]
    for name, rows in store.items():
        meds, spreads, ratios, secs, worst, stds = [], [], [], [], [], []
        for rec in rows.values():
            v = np.array([m if m is not None and math.isfinite(m) else np.nan for m in rec["mse"]])
            v = v[np.isfinite(v) & (v > 0)]
            if len(v) < 2:
                continue
            meds.append(np.median(v))
            spreads.append(np.std(np.log10(v)))
            ratios.append(v.max() / v.min())
            worst.append(v.max())
            stds.append(np.std(v))
            secs.append(rec["seconds"])
        if meds:
            L.append(f"| {name} | {len(meds)} | {np.median(meds):.2e} | {np.median(worst):.2e} | "
                     f"{np.median(stds):.1e} | {np.median(spreads):.2f} | {np.median(ratios):.1f} | "
                     f"{np.mean(secs):.1f} |")
    L += ["", "Per function (median MSE over seeds; spread in dex):", ""]
    names = list(store)
    keys = sorted({k for rows in store.values() for k in rows})
    L.append("| function | " + " | ".join(names) + " |")
    L.append("|---|" + "---|" * len(names))
    for k in keys:
        cells = []
        for n in names:
            rec = store[n].get(k)
            if not rec:
                cells.append("")
                continue
            v = np.array([m for m in rec["mse"] if m is not None and math.isfinite(m) and m > 0])
            cells.append(f"{np.median(v):.1e} ({np.std(np.log10(v)):.2f})" if len(v) else "n/a")
        L.append(f"| {k} | " + " | ".join(cells) + " |")
    md.write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    sys.exit(main())
