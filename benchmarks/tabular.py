"""Tabular benchmark: classic models as RPNs vs scikit-learn baselines (10-fold CV).

Datasets: iris, pima diabetes, banknote, wine, breast_cancer. Every model sees the
same stratified folds and standardised inputs (``StandardScaler`` fitted inside each
training fold). The RPN paper's Table 9 figures (iris, pima, banknote) are printed
beside ours.

    nice python benchmarks/tabular.py                 # -> benchmarks/results/tabular.md
    nice python benchmarks/tabular.py --folds 3 --datasets iris wine --out /tmp/t.md

Pima and banknote are read from the package resources (``rpnkit/resources/datasets``)
when present, otherwise from ``--data-dir`` (default ``../shared/datasets``).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import _venv  # noqa: F401  (re-runs this script with .venv/bin/python from a fresh shell)
import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.naive_bayes import GaussianNB
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from rpnkit.sklearn import RPNClassifier

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "src" / "rpnkit" / "resources" / "datasets"

# RPN paper (arXiv 2407.04819) Table 9, 10-fold CV accuracy (mean, std).
PAPER = {
    "iris": {
        "RPN naive Bayes (Laplace)": (0.973, 0.0326),
        "RPN PGM (comb. normal)": (0.967, 0.0447),
        "GaussianNB": (0.953, 0.0426),
    },
    "pima": {
        "RPN naive Bayes (Laplace)": (0.774, 0.0391),
        "RPN PGM (comb. normal)": (0.780, 0.0336),
        "GaussianNB": (0.756, 0.0422),
    },
    "banknote": {
        "RPN naive Bayes (Laplace)": (0.977, 0.0227),
        "RPN PGM (comb. normal)": (0.979, 0.0218),
        "GaussianNB": (0.839, 0.0472),
    },
}
PAPER_OTHERS = {
    "NB Multinomial": {"iris": 0.900, "pima": 0.651, "banknote": 0.636},
    "Bayesian net (hill-climb, BIC)": {"iris": 0.953, "pima": 0.664, "banknote": 0.924},
    "Markov net": {"iris": 0.920, "pima": 0.709, "banknote": 0.902},
}


def _read_csv(path: Path, header: bool) -> tuple[np.ndarray, np.ndarray]:
    data = np.loadtxt(path, delimiter=",", skiprows=1 if header else 0)
    return data[:, :-1], data[:, -1].astype(int)


def load_dataset(name: str, data_dir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    if name == "iris":
        return (*load_iris(return_X_y=True), "sklearn")
    if name == "wine":
        return (*load_wine(return_X_y=True), "sklearn")
    if name == "breast_cancer":
        return (*load_breast_cancer(return_X_y=True), "sklearn")
    if name == "pima":
        for path, src in ((RESOURCES / "pima.csv", "rpnkit resources"),
                          (data_dir / "pima_diabetes" / "diabetes.csv", str(data_dir))):
            if path.exists():
                return (*_read_csv(path, header=True), src)
    if name == "banknote":
        for path, src in ((RESOURCES / "banknote.csv", "rpnkit resources"),
                          (data_dir / "banknote" / "data_banknote_authentication.txt", str(data_dir))):
            if path.exists():
                return (*_read_csv(path, header=False), src)
    raise FileNotFoundError(f"dataset {name!r} not found (data dir {data_dir})")


def models() -> dict[str, Callable[[], object]]:
    def pipe(est):
        return lambda: make_pipeline(StandardScaler(), est)

    return {
        "RPN default (RPNClassifier)": pipe(RPNClassifier(random_state=0)),
        "RPN naive Bayes (Laplace)": pipe(RPNClassifier(
            model="naive_bayes", model_params={"distribution": "laplace"}, random_state=0, max_epochs=1000)),
        "RPN naive Bayes (normal)": pipe(RPNClassifier(
            model="naive_bayes", model_params={"distribution": "normal"}, random_state=0, max_epochs=1000)),
        "RPN PGM (comb. normal)": pipe(RPNClassifier(model="pgm", random_state=0, max_epochs=1000)),
        "RPN KAN": pipe(RPNClassifier(
            model="kan", model_params={"grid": 5, "degree": 3, "grid_range": (-2.5, 2.5)},
            random_state=0, max_epochs=1000)),
        "RPN kernel SVM (RBF, hinge)": pipe(RPNClassifier(
            model="kernel_svm", model_params={"kernel": "gaussian_rbf"}, loss="hinge",
            random_state=0, max_epochs=1000)),
        "GaussianNB": pipe(GaussianNB()),
        "SVC (rbf)": pipe(SVC()),
        "LogisticRegression": pipe(LogisticRegression(max_iter=2000)),
        "MLPClassifier": pipe(MLPClassifier(max_iter=2000, random_state=0)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--datasets", nargs="+",
                    default=["iris", "pima", "banknote", "wine", "breast_cancer"])
    ap.add_argument("--models", nargs="+", default=None, help="subset of model names")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tabular.md")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (small data: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    zoo = models()
    names = args.models or list(zoo)
    results: dict[str, dict[str, tuple[float, float, float]]] = {n: {} for n in names}
    sources = {}
    t_all = time.perf_counter()
    for ds in args.datasets:
        X, y, src = load_dataset(ds, args.data_dir)
        sources[ds] = f"{X.shape[0]}×{X.shape[1]}, {len(np.unique(y))} classes ({src})"
        cv = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=0)
        for name in names:
            t0 = time.perf_counter()
            scores = cross_val_score(zoo[name](), X, y, cv=cv, n_jobs=1)
            dt = time.perf_counter() - t0
            results[name][ds] = (scores.mean(), scores.std(), dt)
            print(f"{ds:14s} {name:30s} {scores.mean():.4f} ± {scores.std():.4f}  ({dt:.1f} s)",
                  flush=True)
    total = time.perf_counter() - t_all

    lines = [
        "# Tabular benchmark: classic models as RPNs vs scikit-learn",
        "",
        f"{args.folds}-fold stratified CV accuracy (mean ± std; shuffle, seed 0; the same folds "
        "for every model), inputs standardised inside each training fold. "
        "Generated by `benchmarks/tabular.py`.",
        "",
        f"Machine: {platform.machine()}, {platform.python_version()}, torch "
        f"{torch.__version__}, CPU, torch threads {args.threads}; total wall time "
        f"{total / 60:.1f} min.",
        "",
        "Datasets: " + "; ".join(f"{k}: {v}" for k, v in sources.items()) + ".",
        "",
        "RPN models (`RPNClassifier(random_state=0)` defaults unless stated: single RPN "
        "layer, Adam lr 0.02, L2 3e-3, full batch (minibatches of 1024 above that), stop "
        "when the training loss plateaus; ≤300 epochs for the default, ≤1000 for the "
        "classic-model variants):",
        "",
        "* **RPN default** – symmetric Taylor d=2 expansion + identity ψ + zero π + bias.",
        "* **RPN naive Bayes** – `naive_laplace` / `naive_normal` expansion + identity ψ + "
        "linear π (`rpnkit.models.NaiveBayes`).",
        "* **RPN PGM** – `combinatorial_normal` d=2 + identity ψ + linear π (`rpnkit.models.PGM`).",
        "* **RPN KAN** – one KAN layer [m, classes]: bspline (grid 5, degree 3, range ±2.5) + "
        "identity ψ + SiLU base remainder (`rpnkit.models.KAN`).",
        "* **RPN kernel SVM** – `gaussian_rbf` (K=10, ε=1, range ±2) + identity ψ + bias, "
        "multi-class hinge loss (`rpnkit.models.KernelSVM`).",
        "",
        "Baselines: scikit-learn defaults (`SVC()` is rbf, `LogisticRegression(max_iter=2000)`, "
        "`MLPClassifier(max_iter=2000, random_state=0)`), same pipeline.",
        "",
    ]
    header = "| model | " + " | ".join(args.datasets) + " | time (s) |"
    lines += [header, "|" + "---|" * (len(args.datasets) + 2)]
    best = {ds: max(results[n][ds][0] for n in names) for ds in args.datasets}
    for name in names:
        cells = []
        for ds in args.datasets:
            m, s, _ = results[name][ds]
            cell = f"{m:.3f} ± {s:.3f}"
            cells.append(f"**{cell}**" if abs(m - best[ds]) < 1e-12 else cell)
        t = sum(results[name][ds][2] for ds in args.datasets)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {t:.1f} |")
    lines += ["", "Best mean per dataset in bold.", ""]
    rpn = [n for n in names if n.startswith("RPN")]
    base = [n for n in names if not n.startswith("RPN")]
    if rpn and base:
        lines += ["## Best RPN variant vs best scikit-learn baseline", "",
                  "| dataset | best RPN | best scikit-learn | difference |", "|---|---|---|---|"]
        for ds in args.datasets:
            r = max(rpn, key=lambda n: results[n][ds][0])
            b = max(base, key=lambda n: results[n][ds][0])
            rm, bm = results[r][ds][0], results[b][ds][0]
            lines.append(f"| {ds} | {rm:.3f} ({r}) | {bm:.3f} ({b}) | {rm - bm:+.3f} |")
        lines.append("")

    paper_ds = [d for d in ("iris", "pima", "banknote") if d in args.datasets]
    if paper_ds:
        lines += [
            "## Beside the paper (RPN paper Table 9, 10-fold CV)",
            "",
            "| model | " + " | ".join(f"{d} ours | {d} paper" for d in paper_ds) + " |",
            "|" + "---|" * (2 * len(paper_ds) + 1),
        ]
        for name in ("RPN naive Bayes (Laplace)", "RPN PGM (comb. normal)", "GaussianNB"):
            if name not in results:
                continue
            cells = []
            for d in paper_ds:
                m, s, _ = results[name][d]
                pm, ps = PAPER[d][name]
                cells += [f"{m:.3f} ± {s:.3f}", f"{pm:.3f} ± {ps:.3f}"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for name, vals in PAPER_OTHERS.items():
            cells = []
            for d in paper_ds:
                cells += ["–", f"{vals[d]:.3f}"]
            lines.append(f"| {name} (paper only) | " + " | ".join(cells) + " |")
        lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out} in {total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
