"""Which RPN wins? `rpnkit.search` on every paper function at the paper's RPN-Ext budget.

For each function: the seed-0 data of the paper protocol (2,000 samples, 900 train / 100
validation / 1,000 test, raw inputs: exactly the split of seed 0 in paper_protocol.py), a
search over catalog RPNs with at most as many parameters as the paper's RPN-Ext for that
function (47 elementary, 71 composite, 81 Feynman with two inputs, more with more
variables), selected on validation only; the test MSE of the winner is compared with the
same-protocol MLP and KAN of seed 0 (best-val, from results/paper_runs/).

Results are cached per function in results/paper_search.json; functions are visited
round-robin over the three groups so a partial run covers all of them.

    python benchmarks/paper_search.py [--minutes 2] [--only E.1,C.3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import _venv  # noqa: F401
import paper_protocol as PP
import torch

from rpnkit.config import TrainConfig, parse_config
from rpnkit.search import recipe_config, search
from rpnkit.training import count_params, fit, prepare

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "paper_search.json"
# the catalog part searched here (a subset of rpnkit.search.DEFAULT_SPACE, to fit 61 searches
# into a sitting on two cores)
SPACE = {
    "expansions": [
        {"name": "extended", "expansions": [{"name": "bspline"}, {"name": "taylor", "d": 2}]},
        {"name": "bspline"}, {"name": "taylor", "d": 2}, {"name": "chebyshev", "d": 5},
        {"name": "gaussian_rbf"},
    ],
    "reconciliations": [{"name": "lorr", "r": 1}, {"name": "identity"}],
    "remainders": ["zero", "linear"],
    "depths": [1, 2, 3],
    "recipes": ["config", "lbfgs", "adam+lbfgs"],
}


def order() -> list[tuple[str, str]]:
    groups = [[(k, eq) for eq in PP.section_ids(k)] for k in PP.SECTIONS]
    out, i = [], 0
    while any(i < len(g) for g in groups):
        out.extend(g[i] for g in groups if i < len(g))
        i += 1
    return out


def budget_of(kind: str, eq: str, m: int) -> int:
    return count_params(PP.builders(kind, m, PP.input_range(kind, eq))["RPN-Ext"](0))


def recipe_baselines(kind: str, eq: str, epochs: int) -> dict:
    """Seed-0 MLP and KAN (the paper's shapes) trained with each of the search's recipes,
    the recipe chosen on validation: the search winner's like-for-like opponents."""
    cfg = parse_config({
        "seed": 0,
        "data": {"name": kind, "equation": eq, "n_samples": PP.PROTOCOL["samples"],
                 "split": {"train": PP.PROTOCOL["train"], "val": PP.PROTOCOL["val"],
                           "test": PP.PROTOCOL["test"]}},
        "model": {"dims": [1, 1]},
    })
    bundle = prepare(cfg.model_copy(update={"model": cfg.model.model_copy(
        update={"dims": [len(PP.equation_table(kind)[eq]["ranges"]), 1]})})).bundle
    m = bundle.n_features
    build = PP.builders(kind, m, PP.input_range(kind, eq))
    base = TrainConfig.model_validate({"epochs": epochs, "optimizer": {"name": "adam", "lr": 0.01},
                                       "scheduler": "cosine", "loss": "mse"})
    out = {}
    for name in ("MLP", "KAN"):
        best = None
        for recipe in ("adam+lbfgs", "lbfgs", "config"):
            res = fit(build[name](0), bundle, recipe_config(base, recipe, epochs), seed=0)
            v = res.best_metrics.get("val", {}).get("loss", float("inf"))
            if v == v and (best is None or v < best[0]):
                best = (v, res.best_metrics["test"]["mse"], recipe)
        out[name] = {"val": best[0], "test": best[1], "recipe": best[2]} if best else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=2.0, help="search time per function")
    ap.add_argument("--epochs", type=int, default=600, help="epochs of the finalists' config recipe")
    ap.add_argument("--only", default=None)
    ap.add_argument("--json", default=str(OUT))
    ap.add_argument("--baselines", action="store_true",
                    help="only add recipe-matched MLP/KAN baselines to functions already searched")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = Path(args.json)
    store = json.loads(path.read_text()) if path.exists() else {}
    only = set(args.only.split(",")) if args.only else None
    if args.baselines:  # a file of its own: it may run beside the search
        bpath = path.with_name("paper_baselines.json")
        bstore = json.loads(bpath.read_text()) if bpath.exists() else {}
        for key in list(store):
            if key in bstore or (only and key.split("/", 1)[1] not in only):
                continue
            kind, eq = key.split("/", 1)
            t0 = time.perf_counter()
            bstore[key] = recipe_baselines(kind, eq, args.epochs)
            tmp = bpath.with_suffix(".tmp")
            tmp.write_text(json.dumps(bstore, indent=1))
            os.replace(tmp, bpath)
            b = bstore[key]
            print(f"[{time.strftime('%H:%M:%S')}] {key}: MLP {b['MLP']['test']:.2e} [{b['MLP']['recipe']}], "
                  f"KAN {b['KAN']['test']:.2e} [{b['KAN']['recipe']}] ({time.perf_counter() - t0:.0f}s)",
                  flush=True)
        return
    for kind, eq in order():
        if (only and eq not in only) or f"{kind}/{eq}" in store:
            continue
        m = len(PP.equation_table(kind)[eq]["ranges"])
        budget = budget_of(kind, eq, m)
        cfg = parse_config({
            "seed": 0,
            "data": {"name": kind, "equation": eq, "n_samples": PP.PROTOCOL["samples"],
                     "split": {"train": PP.PROTOCOL["train"], "val": PP.PROTOCOL["val"],
                               "test": PP.PROTOCOL["test"]}},
            "model": {"dims": [m, 1]},
            "train": {"epochs": args.epochs, "optimizer": {"name": "adam", "lr": 0.01},
                      "scheduler": "cosine", "loss": "mse"},
        })
        t0 = time.perf_counter()
        res = search(cfg, budget, args.minutes, space=SPACE, screen_epochs=100, finalists=2,
                     screen_recipe="config", screen_share=1.0)  # as run for results/paper_search.json
        top = [{"name": c.name, "recipe": c.recipe, "params": c.params, "val": c.val.get("loss")}
               for c in res.leaderboard()[:5]]
        store[f"{kind}/{eq}"] = {"budget": budget, "winner": res.summary(),
                                 "winner_name": res.winner.name if res.winner else None,
                                 "candidates": len(res.candidates), "top": top,
                                 "seconds": round(time.perf_counter() - t0, 1)}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(store, indent=1))
        os.replace(tmp, path)
        w = store[f"{kind}/{eq}"]
        print(f"[{time.strftime('%H:%M:%S')}] {kind} {eq}: budget {budget}, winner "
              f"{w['winner_name']} [{w['winner'].get('recipe')}] test mse "
              f"{w['winner']['test'].get('mse', float('nan')):.2e} ({w['seconds']}s)", flush=True)


if __name__ == "__main__":
    main()
