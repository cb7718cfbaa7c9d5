"""Which training recipe should the function-fitting default use? Seed-to-seed spread.

Trains the default job's model (RPN-Ext [m,2,2,1], extended[bspline, taylor d2] + lorr r=1)
with rpnkit's training engine on a set of paper functions, 5 seeds each (seed s draws its
own samples and initialisation; 900 train / 100 validation / 1,000 test, raw inputs), under
each recipe. Every comparison between recipes is per function and paired by seed (seed s has
the same samples and initialisation under every recipe): per function the gain (geometric
mean over seeds of baseline MSE / recipe MSE) with its per-seed range and spread, a win named
only beyond two standard errors of the per-seed log gains, then the median and the geometric
mean of the per-function gains (never a ratio of medians), the worst-seed gain per function,
and how the seed spread of log10 MSE changes. Writes ``results/recipes.md`` (and
``recipes.json``, the per-seed MSE).

    python benchmarks/recipes.py [--seeds 5] [--functions E.1,C.6,...]
    python benchmarks/recipes.py --render-only      # re-write the page from the JSON
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
    ap.add_argument("--render-only", action="store_true",
                    help="re-write recipes.md from the JSON, no training")
    args = ap.parse_args()
    path = Path(args.json)
    if args.render_only:
        render(json.loads(path.read_text()), path.with_suffix(".md"))
        return
    torch.set_num_threads(1)
    funcs = FUNCTIONS
    if args.functions:
        want = set(args.functions.split(","))
        funcs = [f for f in FUNCTIONS if f[1] in want]
    recipes = {k: v for k, v in RECIPES.items()
               if not args.recipes or any(k.startswith(p) for p in args.recipes.split(","))}
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


BASELINE = "adam 0.02 cosine 800 (old default)"


def _mse(rec) -> np.ndarray:
    """Per-seed MSE in seed order; nan where a seed did not give a finite positive value."""
    return np.array([m if m is not None and math.isfinite(m) and m > 0 else np.nan
                     for m in rec["mse"]], dtype=float)


def _gm(v) -> float:
    """Geometric mean of positive numbers."""
    return float(10 ** np.mean(np.log10(v)))


def paired(base_rec, rec) -> dict | None:
    """Per-function paired comparison of a recipe against the baseline, seed by seed (seed s
    has the same samples and initialisation under both recipes). ``gain`` = baseline MSE /
    recipe MSE (> 1: the recipe is better). A win (or loss) is named only when the mean
    paired log10 gain exceeds two standard errors of the per-seed log10 gains and at least 3
    seeds are paired; otherwise the function is *within the seed spread*."""
    a, b = _mse(base_rec), _mse(rec)
    k = min(len(a), len(b))
    a, b = a[:k], b[:k]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2:
        return None
    d = np.log10(a[ok] / b[ok])
    n = len(d)
    se = float(np.std(d, ddof=1) / math.sqrt(n))
    mean = float(np.mean(d))
    verdict = ("within" if n < 3 or abs(mean) <= 2 * se else ("win" if mean > 0 else "loss"))
    return {"n": n, "gain": 10 ** mean, "lo": 10 ** d.min(), "hi": 10 ** d.max(),
            "sd": float(np.std(d, ddof=1)), "se": se, "verdict": verdict,
            "worst": np.nanmax(a) / np.nanmax(b),
            "spread_base": float(np.std(np.log10(a[np.isfinite(a)]))),
            "spread": float(np.std(np.log10(b[np.isfinite(b)])))}


def _x(v: float) -> str:
    return f"{v:.3g}x" if v < 1000 else f"{v:.2e}x"


def render(store, md: Path) -> None:
    L = ["# Training recipes: seed-to-seed spread and paired per-function gains", "",
         "Produced by `benchmarks/recipes.py`: the default job's model (RPN-Ext [m,2,2,1], "
         "extended[bspline, taylor d2] + lorr r=1 + zero remainder) trained with rpnkit's engine on "
         "paper functions, 5 seeds each (seed s draws its own samples and initialisation, the same "
         "under every recipe, so results are paired by seed; 900/100/1,000 split; Feynman inputs "
         "standardised). MSE = test MSE of the best-validation epoch. "
         "*spread* = standard deviation over seeds of log10 MSE, in dex."]
    head = len(L)
    L += ["", "## Per recipe (descriptive; medians over functions, not to be divided by each other)", "",
         "| recipe | functions | median over functions of the seed-median MSE | "
         "median spread (dex) | median worst/best seed | s per run |",
         "|---|---|---|---|---|---|"]
    for name, rows in store.items():
        meds, spreads, ratios, secs = [], [], [], []
        for rec in rows.values():
            v = _mse(rec)
            v = v[np.isfinite(v)]
            if len(v) < 2:
                continue
            meds.append(np.median(v))
            spreads.append(np.std(np.log10(v)))
            ratios.append(v.max() / v.min())
            secs.append(rec["seconds"])
        if meds:
            L.append(f"| {name} | {len(meds)} | {np.median(meds):.2e} | {np.median(spreads):.2f} | "
                     f"{np.median(ratios):.1f} | {np.mean(secs):.1f} |")
    keys = sorted({k for rows in store.values() for k in rows})
    base = store.get(BASELINE, {})
    others = [n for n in store if n != BASELINE]
    summary = []
    for name in others:
        rows = {k: paired(base[k], store[name][k]) for k in keys
                if k in base and k in store[name]}
        rows = {k: r for k, r in rows.items() if r is not None}
        if not rows:
            continue
        gains = np.array([r["gain"] for r in rows.values()])
        worst = np.array([r["worst"] for r in rows.values()])
        dspread = np.array([r["spread"] - r["spread_base"] for r in rows.values()])
        wins = sum(r["verdict"] == "win" for r in rows.values())
        losses = sum(r["verdict"] == "loss" for r in rows.values())
        nf = len(rows)
        summary.append(
            f"* **{name}** vs {BASELINE}, {nf} functions: per-function paired gain (geometric mean "
            f"over seeds of baseline MSE / recipe MSE) {_x(gains.min())} to {_x(gains.max())}, "
            f"median {_x(float(np.median(gains)))}, geometric mean {_x(_gm(gains))}; better "
            f"beyond the seed spread on {wins}/{nf}, worse beyond it on {losses}/{nf}, within it "
            f"on {nf - wins - losses}/{nf}. Worst seed per function: {_x(worst.min())} to "
            f"{_x(worst.max())} (median {_x(float(np.median(worst)))}, geometric mean "
            f"{_x(_gm(worst))}). Seed spread (log10 MSE) grows on "
            f"{int((dspread > 0).sum())}/{nf} functions, median change {np.median(dspread):+.2f} "
            f"dex ({np.median([r['spread_base'] for r in rows.values()]):.2f} -> "
            f"{np.median([r['spread'] for r in rows.values()]):.2f} dex, medians over functions).")
        L += ["", f"## {name} vs {BASELINE}, per function (paired by seed)", "",
              "*gain* = geometric mean over seeds of (baseline MSE / recipe MSE), > 1 means the "
              "recipe is better; *per-seed range* = smallest and largest per-seed gain; *paired "
              "spread* = standard deviation of the per-seed log10 gains; *verdict*: win / loss "
              "only when |mean log10 gain| > 2 standard errors (else *within spread*); *worst "
              "seed* = baseline's worst seed MSE / recipe's worst seed MSE; *spread* columns: "
              "seed spread of log10 MSE under the baseline -> under the recipe.", "",
              "| function | seeds | gain | per-seed range | paired spread (dex) | verdict | "
              "worst seed | spread (dex) |", "|---|---|---|---|---|---|---|---|"]
        for k, r in rows.items():
            verdict = {"win": "win", "loss": "loss", "within": "within spread"}[r["verdict"]]
            L.append(f"| {k} | {r['n']} | {_x(r['gain'])} | {_x(r['lo'])} - {_x(r['hi'])} | "
                     f"{r['sd']:.2f} | {verdict} | {_x(r['worst'])} | "
                     f"{r['spread_base']:.2f} -> {r['spread']:.2f} |")
    L = L[:head] + ["", "## Summary (every figure is a per-function paired ratio, never a "
                    "ratio of medians)", ""] + summary + L[head:]
    L += ["", "## Per function, per recipe (median MSE over seeds; seed spread in dex)", ""]
    names = list(store)
    L.append("| function | " + " | ".join(names) + " |")
    L.append("|---|" + "---|" * len(names))
    for k in keys:
        cells = []
        for n in names:
            rec = store[n].get(k)
            if not rec:
                cells.append("")
                continue
            v = _mse(rec)
            v = v[np.isfinite(v)]
            cells.append(f"{np.median(v):.1e} ({np.std(np.log10(v)):.2f})" if len(v) else "n/a")
        L.append(f"| {k} | " + " | ".join(cells) + " |")
    L += ["", "Per-seed MSE are in `recipes.json` (seed order 0..4)."]
    md.write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    sys.exit(main())
