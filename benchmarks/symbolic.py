"""Symbolic recovery on the Feynman equations (dimensionless variants), rpnkit vs pykan.

Run::

    .venv/bin/python benchmarks/symbolic.py [--max-vars 2] [--pykan-seconds 60] [--quick]

For every equation of ``feynman_dimensionless`` with at most ``--max-vars`` variables:

1. samples (train 600 / test 300, the table's ranges, seed 0);
2. rpnkit: KANs ``[m, 1]``, ``[m, 1, 1]`` and ``[m, 2, 1]`` (the last with L1/entropy
   regularisation, :func:`rpnkit.prune` and more training), L-BFGS in float64 with grid
   updates, each made a formula by :func:`rpnkit.symbolic.fit_formula` (spline edges →
   ``a·f(b·x + c) + d``, constants snapped to simple numbers); the first formula that
   explains the training data (NRMSE < 1e-4) is kept, else the best one on it;
3. pykan (when installed): ``KAN(width=[m, 3, 1], grid=5)``, ``fit`` (LBFGS, 20 steps,
   ``lamb=1e-3``), ``prune``, ``auto_symbolic``, ``fit`` (10 steps), ``symbolic_formula``,
   in a subprocess with a time cap (pykan writes checkpoints and may crash: both stay out of
   this process).

A formula counts as an **exact recovery** when sympy simplifies ``formula − truth`` to 0
(after snapping), and as **within tolerance** when its test NRMSE (RMSE / std of the truth)
is below 1e-3. The ground truth is turned into sympy by walking the formula's Python AST
(an allow-list; nothing is eval'd). Results: ``benchmarks/results/symbolic.md``.
"""

from __future__ import annotations

import os

import _venv  # noqa: F401  (re-runs this script with .venv/bin/python from a fresh shell)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import ast
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sympy
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "symbolic.md"
N_TRAIN, N_TEST = 600, 300

_FUNCS = {"sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "exp": sympy.exp,
          "log": sympy.log, "ln": sympy.log, "sqrt": sympy.sqrt, "arcsin": sympy.asin,
          "arccos": sympy.acos, "arctan": sympy.atan, "tanh": sympy.tanh, "sinh": sympy.sinh,
          "cosh": sympy.cosh, "abs": sympy.Abs}


def truth_sympy(text: str, names: list[str]) -> tuple[sympy.Expr, list[sympy.Symbol]]:
    """The table's formula as sympy, by walking its AST (allow-list, no eval)."""
    syms = {n: sympy.Symbol(n) for n in names}
    consts = {"pi": sympy.pi, "e": sympy.E}

    def walk(node: ast.AST) -> sympy.Expr:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return sympy.nsimplify(node.value)
        if isinstance(node, ast.Name):
            if node.id in syms:
                return syms[node.id]
            if node.id in consts:
                return consts[node.id]
            raise ValueError(f"unknown name {node.id}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            a, b = walk(node.left), walk(node.right)
            ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                   ast.Div: lambda: a / b, ast.Pow: lambda: a**b}
            if type(node.op) in ops:
                return ops[type(node.op)]()
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in _FUNCS and len(node.args) == 1 and not node.keywords:
            return _FUNCS[node.func.id](walk(node.args[0]))
        raise ValueError(f"unsupported syntax: {ast.dump(node)[:60]}")

    return walk(ast.parse(text, mode="eval")), [syms[n] for n in names]


def equations(max_vars: int) -> list[tuple[str, dict]]:
    from rpnkit.data import equation_table

    table = equation_table("feynman_dimensionless")
    return [(k, v) for k, v in table.items() if len(v["variables"]) <= max_vars]


def sample(rec: dict, seed: int = 0):
    from rpnkit.data import parse_formula

    f = parse_formula(rec["formula"], variables=rec["variables"])
    rng = np.random.default_rng(seed)
    lo = np.array([r[0] for r in rec["ranges"]])
    hi = np.array([r[1] for r in rec["ranges"]])
    x = rng.uniform(lo, hi, (N_TRAIN + N_TEST, len(lo)))
    y = np.asarray(f(x), dtype=np.float64).reshape(-1)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


class _SympyTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise _SympyTimeout


def _equal(expr, truth, seconds: int = 20) -> bool:
    """sympy proves expr == truth (plainly, or with tanh/trig rewritten as exponentials)
    within ``seconds`` each (simplify can run for minutes on a large expression)."""
    import signal

    diff = expr - truth
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for form in (lambda d: d, lambda d: d.rewrite(sympy.exp)):
            signal.alarm(seconds)
            try:
                if sympy.simplify(form(diff)) == 0:
                    return True
            except Exception:  # sympy may give up on odd expressions; the time cap
                continue
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    return False


def score(expr, syms, truth, xt, yt) -> dict:
    from rpnkit.symbolic_fit import evaluate

    pred = evaluate(expr, syms, xt)
    nrmse = float(np.sqrt(np.mean((pred - yt) ** 2)) / (np.std(yt) + 1e-12))
    if not np.isfinite(nrmse):
        nrmse = float("inf")
    # a formula that differs on the data cannot be equal: sympy is asked only when it is close
    # (simplify can take minutes on a large wrong expression)
    exact = nrmse < 1e-2 and _equal(expr, truth)
    if not exact and nrmse < 1e-3:  # sympy-equal up to constants within tolerance
        exact = _equal(sympy.nsimplify(expr, tolerance=1e-3, rational=True), truth)
    return {"nrmse": nrmse, "exact": bool(exact), "within": nrmse < 1e-3}


# -- rpnkit --------------------------------------------------------------------------------
LBFGS = {"name": "lbfgs", "lr": 1, "line_search": "strong_wolfe"}


def run_rpnkit(rec: dict, data, quick: bool) -> dict:
    """Candidates from simple to deep; the first whose formula explains the training data
    (NRMSE < 1e-4) wins, else the one with the lowest training NRMSE (ties: the simpler)."""
    import rpnkit
    from rpnkit.models import KAN
    from rpnkit.symbolic import fit_formula

    x, y, xt, yt = data
    m = x.shape[1]
    t0 = time.perf_counter()
    lo, hi = x.min(0).min(), x.max(0).max()
    pad = 0.05 * (hi - lo)
    rng_ = (float(lo - pad), float(hi + pad))
    epochs = 20 if quick else 40
    base = {"optimizer": LBFGS, "scheduler": None, "dtype": "float64"}
    candidates = [
        ("[m,1]", [m, 1], {}, False),
        ("[m,1,1]", [m, 1, 1], {"grid_update_every": 10}, False),
        ("[m,2,1]+prune", [m, 2, 1], {"grid_update_every": 10, "reg_l1": 1e-4,
                                      "reg_entropy": 1e-4}, True),
    ]
    best = None
    tried = []
    sd = float(np.std(y)) + 1e-12
    for label, dims, extra, do_prune in candidates:
        torch.manual_seed(0)
        model = KAN(dims, grid=8, grid_range=rng_)
        rpnkit.fit(model, x, y, {**base, "epochs": epochs, **extra})
        if do_prune:
            rep = rpnkit.prune(model, x, threshold=0.05)
            label += f" ({len(rep.pruned)} edges)"
            rpnkit.fit(model, x, y, {**base, "epochs": epochs // 2})
        res = fit_formula(model, x, y, names=rec["variables"])
        err = res.rmse_target / sd if res.rmse_target is not None else float("inf")
        if not np.isfinite(err):
            err = float("inf")
        tried.append(f"{label}: {err:.1e}")
        if best is None or err < 0.5 * best[0]:
            best = (err, label, res)
        if err < 1e-4:
            break
    err, label, res = best
    return {"expr": res.exprs[0], "syms": res.symbols, "seconds": time.perf_counter() - t0,
            "stage": f"{label} [{'; '.join(tried)}]", "edge_r2": res.min_edge_r2}


# -- pykan (subprocess) --------------------------------------------------------------------
def pykan_worker(eq: str) -> None:
    """Runs in a subprocess: prints one JSON line."""
    import io
    from contextlib import redirect_stdout

    from rpnkit.data import equation_table

    rec = equation_table("feynman_dimensionless")[eq]
    x, y, xt, yt = sample(rec)
    truth, syms = truth_sympy(rec["formula"], rec["variables"])
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    buf = io.StringIO()
    with redirect_stdout(buf):
        from kan import KAN as PyKAN

        m = x.shape[1]
        model = PyKAN(width=[m, 3, 1], grid=5, k=3, seed=0, auto_save=False)
        ds = {"train_input": torch.tensor(x, dtype=torch.float32),
              "train_label": torch.tensor(y[:, None], dtype=torch.float32),
              "test_input": torch.tensor(xt, dtype=torch.float32),
              "test_label": torch.tensor(yt[:, None], dtype=torch.float32)}
        model.fit(ds, opt="LBFGS", steps=20, lamb=1e-3)
        model = model.prune()
        model.auto_symbolic(lib=["x", "x^2", "x^3", "exp", "log", "sqrt", "sin", "tanh",
                                 "1/x", "abs"])
        model.fit(ds, opt="LBFGS", steps=10)
        formula = model.symbolic_formula()[0][0]
    seconds = time.perf_counter() - t0
    kan_syms = sorted(formula.free_symbols, key=lambda s: s.name)
    subs = {s: syms[int(s.name.split("_")[-1]) - 1] for s in kan_syms}
    expr = formula.xreplace(subs)
    out = {"formula": str(sympy.N(expr, 4)), "seconds": seconds, **score(expr, syms, truth, xt, yt)}
    print(json.dumps(out))


def run_pykan(eq: str, cap: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:  # pykan writes ./model/ and figures
        (Path(tmp) / "model").mkdir()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        try:
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()),
                                   "--pykan-worker", eq], cwd=tmp, env=env, timeout=cap,
                                  capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {"status": f"timeout > {cap:.0f} s"}
    line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0 or not line.startswith("{"):
        err = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"status": f"crashed: {err[:80]}"}
    return {"status": "ok", **json.loads(line)}


def has_pykan() -> bool:
    import importlib.util

    return importlib.util.find_spec("kan") is not None


# -- main ----------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-vars", type=int, default=2)
    ap.add_argument("--pykan-seconds", type=float, default=45.0)
    ap.add_argument("--no-pykan", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    ap.add_argument("--only", default=None, help="comma-separated equation ids")
    ap.add_argument("--pykan-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.pykan_worker:
        pykan_worker(args.pykan_worker)
        return
    torch.set_num_threads(1)
    eqs = equations(args.max_vars)
    if args.only:
        keep = set(args.only.split(","))
        eqs = [(k, v) for k, v in eqs if k in keep]
    use_pykan = has_pykan() and not args.no_pykan
    rows = []
    t_all = time.perf_counter()
    for eq, rec in eqs:
        data = sample(rec)
        truth, _ = truth_sympy(rec["formula"], rec["variables"])
        r = run_rpnkit(rec, data, args.quick)
        truth_r = truth.xreplace(dict(zip(truth_sympy(rec["formula"], rec["variables"])[1],
                                          r["syms"])))
        sc = score(r["expr"], r["syms"], truth_r, data[2], data[3])
        row = {"eq": eq, "truth": rec["formula"], "rpn_formula": str(sympy.N(r["expr"], 4)),
               "rpn_seconds": r["seconds"], "rpn_stage": r["stage"],
               "rpn_edge_r2": r["edge_r2"], **{
                   f"rpn_{k}": v for k, v in sc.items()}}
        if use_pykan:
            row.update({f"kan_{k}": v for k, v in run_pykan(eq, args.pykan_seconds).items()})
        rows.append(row)
        print(f"{eq:10s} rpn exact={sc['exact']!s:5} nrmse={sc['nrmse']:.2e} "
              f"{r['seconds']:.0f}s  {row['rpn_formula'][:70]}"
              + (f" | pykan {row.get('kan_status')} {row.get('kan_exact', '')} "
                 f"{row.get('kan_nrmse', float('nan')):.2e}" if use_pykan else ""), flush=True)
    write(rows, Path(args.out), use_pykan, time.perf_counter() - t_all, args)


def _fmt(v: float) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.1e}"


def write(rows: list[dict], path: Path, use_pykan: bool, total: float, args) -> None:
    n = len(rows)
    ex = sum(r["rpn_exact"] for r in rows)
    wi = sum(r["rpn_within"] for r in rows)
    med = float(np.median([r["rpn_nrmse"] for r in rows])) if rows else float("nan")
    lines = [
        "# Symbolic recovery on Feynman equations (dimensionless, ≤ "
        f"{args.max_vars} variables)",
        "",
        "Produced by `benchmarks/symbolic.py` (see its docstring for the protocol): "
        f"{N_TRAIN} training / {N_TEST} test samples per equation from the table's ranges; "
        "rpnkit: KAN [m,1], [m,1,1] and [m,2,1] (the last with L1/entropy regularisation "
        "and `prune`, then more training), L-BFGS in float64 with `grid_update_every`, "
        "each turned into a formula by `fit_formula` (spline edges → a·f(b·x+c)+d, "
        "constants snapped); the first formula with training NRMSE < 1e-4 is kept, else the "
        "best on the training data. pykan 0.2.8: "
        "KAN([m,3,1], grid=5), fit (LBFGS 20 steps, lamb=1e-3), prune, auto_symbolic, fit "
        f"(10 steps), in a subprocess capped at {args.pykan_seconds:.0f} s. "
        "**exact**: sympy simplifies formula − truth to 0 (up to constants within 1e-3); "
        "**NRMSE**: test RMSE of the formula / std of the truth. Machine: 2 shared CPU "
        f"cores (loaded by other jobs), one torch thread; total {total / 60:.1f} min"
        + (" (quick settings)" if args.quick else "") + ".",
        "",
        f"**rpnkit: {ex}/{n} exact, {wi}/{n} within NRMSE 1e-3, median NRMSE {med:.1e}.**",
    ]
    if use_pykan:
        ok = [r for r in rows if r.get("kan_status") == "ok"]
        kex = sum(r["kan_exact"] for r in ok)
        kwi = sum(r["kan_within"] for r in ok)
        kmed = float(np.median([r["kan_nrmse"] for r in ok])) if ok else float("nan")
        lines.append(f"**pykan: finished {len(ok)}/{n}, {kex}/{n} exact, {kwi}/{n} within "
                     f"NRMSE 1e-3, median NRMSE {kmed:.1e} (finished runs).**")
    lines += ["", "| equation | truth | rpnkit formula | exact | NRMSE | min edge R² | s |"
              + (" pykan formula | exact | NRMSE | s |" if use_pykan else ""),
              "|---|---|---|---|---|---|---|" + ("---|---|---|---|" if use_pykan else "")]
    for r in rows:
        cells = [r["eq"], f"`{r['truth']}`", f"`{r['rpn_formula']}`",
                 "yes" if r["rpn_exact"] else "no", _fmt(r["rpn_nrmse"]),
                 f"{r['rpn_edge_r2']:.5f}", f"{r['rpn_seconds']:.0f}"]
        if use_pykan:
            if r.get("kan_status") == "ok":
                cells += [f"`{r['kan_formula']}`", "yes" if r["kan_exact"] else "no",
                          _fmt(r["kan_nrmse"]), f"{r['kan_seconds']:.0f}"]
            else:
                cells += [r.get("kan_status", "–"), "–", "–", "–"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Stages used by rpnkit: " + ", ".join(
        f"{r['eq']}: {r['rpn_stage']}" for r in rows) + "."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
