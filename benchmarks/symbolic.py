"""Symbolic recovery on the Feynman equations (dimensionless variants), rpnkit vs pykan.

Run::

    .venv/bin/python benchmarks/symbolic.py [--max-vars 2] [--seeds 3] [--stride 1] [--quick]
    .venv/bin/python benchmarks/symbolic.py --render-only   # re-write the page from the JSON

For every equation of ``feynman_dimensionless`` with at most ``--max-vars`` variables (every
``--stride``-th one, in table order) and every seed s < ``--seeds``:

1. samples (train 600 / test 300, the table's ranges, seed s; the initialisation also uses s);
2. both libraries, under one protocol (:func:`candidates`): KANs ``[m, 1]``, ``[m, 1, 1]``
   and ``[m, 2, 1]`` (grid 8, cubic, grid range = data range + 5%) in float64, 40 full-batch
   L-BFGS steps each (strong Wolfe, at most 20 iterations a step), a grid update every 10
   steps for the deeper two, and for ``[m, 2, 1]`` L1/entropy regularisation, pruning at
   edge threshold 0.05 and 20 more steps; each made a formula with the same primitive library
   (rpnkit: :func:`rpnkit.symbolic.fit_formula`; pykan: ``auto_symbolic`` then its 10-step
   refit of the constants); the first formula that explains the training data (NRMSE < 1e-4)
   is kept, else the best one on it (:func:`select`). pykan (when installed; not a
   dependency of rpnkit) runs in a subprocess with a time cap (it writes checkpoints and may
   crash: both stay out of this process).

A formula counts as an **exact recovery** when sympy simplifies ``formula − truth`` to 0
(after snapping), and as **within tolerance** when its test NRMSE (RMSE / std of the truth)
is below 1e-3. The ground truth is turned into sympy by walking the formula's Python AST
(an allow-list; nothing is eval'd). The two libraries are compared per equation, paired by
seed; a lower NRMSE is named only beyond two standard errors of the per-seed log ratios.
Results: ``benchmarks/results/symbolic.md`` (per-seed runs in ``symbolic.json``).
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


# -- shared protocol -----------------------------------------------------------------------
LBFGS = {"name": "lbfgs", "lr": 1, "line_search": "strong_wolfe"}
GRID, K = 8, 3
# primitives offered to both symbolic fitters (rpnkit's default library; pykan spells them alike)
LIBRARY = ["x", "x^2", "x^3", "x^4", "sqrt", "1/x", "1/x^2", "exp", "log", "sin", "cos", "tanh",
           "gaussian", "arctan"]
PRUNE_THRESHOLD = 0.05


def candidates(m: int, quick: bool) -> list[dict]:
    """The shapes and step budget given to both libraries. ``steps``: full-batch L-BFGS
    steps (one ``optimizer.step`` of at most 20 iterations each, strong-Wolfe line search);
    ``grid_every``: grid update every that many steps (not at step 0); ``reg``: L1 and
    entropy weights; ``prune``: prune edges below the threshold, then ``steps // 2`` more
    steps without regularisation or grid updates."""
    steps = 20 if quick else 40
    return [
        {"label": "[m,1]", "dims": [m, 1], "steps": steps, "grid_every": 0, "reg": 0.0,
         "prune": False},
        {"label": "[m,1,1]", "dims": [m, 1, 1], "steps": steps, "grid_every": 10, "reg": 0.0,
         "prune": False},
        {"label": "[m,2,1]+prune", "dims": [m, 2, 1], "steps": steps, "grid_every": 10,
         "reg": 1e-4, "prune": True},
    ]


def grid_range(x: np.ndarray) -> tuple[float, float]:
    lo, hi = x.min(0).min(), x.max(0).max()
    pad = 0.05 * (hi - lo)
    return float(lo - pad), float(hi + pad)


def select(tried: list[tuple[float, str, object]]):
    """Candidates from simple to deep; the first whose formula explains the training data
    (NRMSE < 1e-4) wins, else the one with the lowest training NRMSE (a deeper one must
    halve the error to replace a simpler one)."""
    best = None
    for err, label, res in tried:
        if best is None or err < 0.5 * best[0]:
            best = (err, label, res)
        if err < 1e-4:
            break
    return best


# -- rpnkit --------------------------------------------------------------------------------
def run_rpnkit(rec: dict, data, quick: bool, seed: int) -> dict:
    import rpnkit
    from rpnkit.models import KAN
    from rpnkit.symbolic import fit_formula

    x, y, xt, yt = data
    t0 = time.perf_counter()
    base = {"optimizer": LBFGS, "scheduler": None, "dtype": "float64"}
    sd = float(np.std(y)) + 1e-12
    tried = []
    for c in candidates(x.shape[1], quick):
        torch.manual_seed(seed)
        model = KAN(c["dims"], grid=GRID, grid_range=grid_range(x))
        extra = {}
        if c["grid_every"]:
            extra["grid_update_every"] = c["grid_every"]
        if c["reg"]:
            extra.update(reg_l1=c["reg"], reg_entropy=c["reg"])
        rpnkit.fit(model, x, y, {**base, "epochs": c["steps"], **extra})
        label = c["label"]
        if c["prune"]:
            rep = rpnkit.prune(model, x, threshold=PRUNE_THRESHOLD)
            label += f" ({len(rep.pruned)} edges)"
            rpnkit.fit(model, x, y, {**base, "epochs": c["steps"] // 2})
        res = fit_formula(model, x, y, names=rec["variables"], library=LIBRARY)
        err = res.rmse_target / sd if res.rmse_target is not None else float("inf")
        tried.append((err if np.isfinite(err) else float("inf"), label, res))
        if tried[-1][0] < 1e-4:
            break
    err, label, res = select(tried)
    stage = f"{label} [{'; '.join(f'{lb}: {e:.1e}' for e, lb, _ in tried)}]"
    return {"expr": res.exprs[0], "syms": res.symbols, "seconds": time.perf_counter() - t0,
            "stage": stage}


# -- pykan (subprocess) --------------------------------------------------------------------
def pykan_worker(eq: str, seed: int, quick: bool) -> None:
    """Runs in a subprocess: prints one JSON line. The same shapes, grid, data range, step
    budget, grid-update steps, regularisation, pruning threshold, selection rule and
    primitive library as rpnkit, in float64."""
    import io
    from contextlib import redirect_stdout

    from rpnkit.data import equation_table
    from rpnkit.symbolic_fit import evaluate

    rec = equation_table("feynman_dimensionless")[eq]
    x, y, xt, yt = sample(rec, seed)
    truth, syms = truth_sympy(rec["formula"], rec["variables"])
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    t0 = time.perf_counter()
    sd = float(np.std(y)) + 1e-12
    tried = []
    buf = io.StringIO()
    with redirect_stdout(buf):
        from kan import KAN as PyKAN

        ds = {"train_input": torch.tensor(x), "train_label": torch.tensor(y[:, None]),
              "test_input": torch.tensor(xt), "test_label": torch.tensor(yt[:, None])}
        for c in candidates(x.shape[1], quick):
            label = c["label"]
            try:
                model = PyKAN(width=c["dims"], grid=GRID, k=K, seed=seed, auto_save=False,
                              grid_range=list(grid_range(x)))
                g = c["grid_every"]
                # pykan updates the grid at steps s % (stop // num) == 0, s < stop, s >= start:
                # stop=steps, num=steps // g, start=1 gives steps g, 2g, ... like rpnkit
                model.fit(ds, opt="LBFGS", steps=c["steps"], lamb=c["reg"], lamb_l1=1.0,
                          lamb_entropy=1.0, update_grid=bool(g), grid_update_num=max(
                              c["steps"] // g, 1) if g else 1, stop_grid_update_step=c["steps"],
                          start_grid_update_step=1)
                if c["prune"]:
                    model(ds["train_input"])
                    n0 = int(sum(float(layer.mask.sum()) for layer in model.act_fun))
                    model = model.prune(edge_th=PRUNE_THRESHOLD)
                    n1 = int(sum(float(layer.mask.sum()) for layer in model.act_fun))
                    label += f" ({n0 - n1} edges)"
                    model.fit(ds, opt="LBFGS", steps=c["steps"] // 2, update_grid=False)
                model.auto_symbolic(lib=LIBRARY)
                # pykan's refit of the symbolic constants (rpnkit: least squares in fit_formula)
                model.fit(ds, opt="LBFGS", steps=10, update_grid=False)
                formula = model.symbolic_formula()[0][0]
                kan_syms = sorted(formula.free_symbols, key=lambda s: s.name)
                expr = formula.xreplace(
                    {s: syms[int(s.name.split("_")[-1]) - 1] for s in kan_syms})
                pred = evaluate(expr, syms, x)
                err = float(np.sqrt(np.mean((pred - y) ** 2)) / sd)
                tried.append((err if np.isfinite(err) else float("inf"), label, expr))
            except Exception as exc:  # pykan may fail on one shape (lstsq, NaN): the others stay
                tried.append((float("inf"), f"{label} failed: {type(exc).__name__}", None))
            if tried[-1][0] < 1e-4:
                break
    seconds = time.perf_counter() - t0
    ok = [t for t in tried if t[2] is not None]
    if not ok:
        raise RuntimeError("; ".join(t[1] for t in tried))
    err, label, expr = select(ok)
    stage = f"{label} [{'; '.join(f'{lb}: {e:.1e}' for e, lb, _ in tried)}]"
    out = {"formula": str(sympy.N(expr, 4)), "seconds": seconds, "stage": stage,
           **score(expr, syms, truth, xt, yt)}
    print(json.dumps(out))


def run_pykan(eq: str, seed: int, quick: bool, cap: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:  # pykan writes ./model/ and figures
        (Path(tmp) / "model").mkdir()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--pykan-worker", eq,
               "--seed", str(seed)] + (["--quick"] if quick else [])
        try:
            proc = subprocess.run(cmd, cwd=tmp, env=env, timeout=cap, capture_output=True,
                                  text=True)
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
def run_one(eq: str, rec: dict, seed: int, args, use_pykan: bool) -> dict:
    data = sample(rec, seed)
    truth, tsyms = truth_sympy(rec["formula"], rec["variables"])
    r = run_rpnkit(rec, data, args.quick, seed)
    sc = score(r["expr"], r["syms"], truth.xreplace(dict(zip(tsyms, r["syms"]))), data[2],
               data[3])
    row = {"eq": eq, "seed": seed, "truth": rec["formula"],
           "rpn_formula": str(sympy.N(r["expr"], 4)), "rpn_seconds": r["seconds"],
           "rpn_stage": r["stage"], **{f"rpn_{k}": v for k, v in sc.items()}}
    if use_pykan:
        row.update({f"kan_{k}": v for k, v in run_pykan(eq, seed, args.quick,
                                                         args.pykan_seconds).items()})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-vars", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (samples and init)")
    ap.add_argument("--pykan-seconds", type=float, default=300.0)
    ap.add_argument("--no-pykan", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    ap.add_argument("--only", default=None, help="comma-separated equation ids")
    ap.add_argument("--stride", type=int, default=1,
                    help="keep every STRIDE-th equation of the table (a shorter run)")
    ap.add_argument("--render-only", action="store_true", help="re-write the page from the JSON")
    ap.add_argument("--pykan-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.pykan_worker:
        pykan_worker(args.pykan_worker, args.seed, args.quick)
        return
    out = Path(args.out)
    store_path = out.with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    store = json.loads(store_path.read_text()) if store_path.exists() else {"runs": {}}
    if args.render_only:
        write(store, out)
        return
    torch.set_num_threads(1)
    eqs = equations(args.max_vars)
    if args.only:
        keep = set(args.only.split(","))
        eqs = [(k, v) for k, v in eqs if k in keep]
    n_table = len(eqs)
    eqs = eqs[::args.stride]
    use_pykan = has_pykan() and not args.no_pykan
    store["settings"] = {"max_vars": args.max_vars, "seeds": args.seeds, "quick": args.quick,
                         "pykan_seconds": args.pykan_seconds, "pykan": use_pykan,
                         "equations": [eq for eq, _ in eqs], "stride": args.stride,
                         "n_table": n_table}
    for eq, rec in eqs:  # equation-major: an interrupted run leaves whole equations
        for seed in range(args.seeds):
            key = f"{eq}/{seed}"
            if key in store["runs"]:
                continue
            t0 = time.perf_counter()
            row = run_one(eq, rec, seed, args, use_pykan)
            row["wall"] = time.perf_counter() - t0
            store["runs"][key] = row
            tmp = store_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(store, indent=1))
            os.replace(tmp, store_path)
            print(f"[{time.strftime('%H:%M:%S')}] {eq:10s} seed {seed} rpn exact="
                  f"{row['rpn_exact']!s:5} nrmse={row['rpn_nrmse']:.2e} "
                  f"{row['rpn_seconds']:.0f}s | pykan {row.get('kan_status')} "
                  f"{row.get('kan_exact', '')} {row.get('kan_nrmse', float('nan')):.2e} "
                  f"{row.get('kan_seconds', float('nan')):.0f}s", flush=True)
    write(store, out)


def _fmt(v: float | None) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.1e}"


def _nth(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def _gm(v) -> float:
    return float(10 ** np.mean(np.log10(np.asarray(v, dtype=float))))


FLOOR = 1e-12  # NRMSE below this is round-off; ratios are taken on max(NRMSE, FLOOR)


def verdict(r_rpn: list[float], r_kan: list[float]) -> tuple[str, float | None, float | None]:
    """Paired over seeds: log10(pykan NRMSE / rpnkit NRMSE) per seed (failed pykan runs
    excluded); a lower NRMSE is named only when |mean| > 2 standard errors over >= 3 seeds."""
    d = [np.log10(max(b, FLOOR) / max(a, FLOOR)) for a, b in zip(r_rpn, r_kan)
         if np.isfinite(a) and np.isfinite(b)]
    if len(d) < 3:
        return f"no verdict ({len(d)} paired seeds)", (10 ** np.mean(d) if d else None), None
    mean, se = float(np.mean(d)), float(np.std(d, ddof=1) / np.sqrt(len(d)))
    if abs(mean) <= 2 * se:
        return "within seed spread", 10 ** mean, se
    return ("rpnkit lower" if mean > 0 else "pykan lower"), 10 ** mean, se


def write(store: dict, path: Path) -> None:
    st = store["settings"]
    runs = store["runs"]
    use_pykan = st["pykan"]
    eqs = [eq for eq in st["equations"] if any(f"{eq}/{s}" in runs for s in range(st["seeds"]))]
    seeds = list(range(st["seeds"]))
    by = {eq: [runs[f"{eq}/{s}"] for s in seeds if f"{eq}/{s}" in runs] for eq in eqs}
    done = {s: [r for eq in eqs for r in by[eq] if r["seed"] == s] for s in seeds}
    rpn_sec = [r["rpn_seconds"] for eq in eqs for r in by[eq]]
    kan_sec = [r["kan_seconds"] for eq in eqs for r in by[eq] if r.get("kan_status") == "ok"]
    total = sum(r.get("wall", 0.0) for eq in eqs for r in by[eq])
    lines = [
        "# Symbolic recovery on Feynman equations (dimensionless, ≤ "
        f"{st['max_vars']} variables), rpnkit vs pykan under one protocol",
        "",
        "Produced by `benchmarks/symbolic.py` (see its docstring for the protocol)"
        + (f" on every {_nth(st['stride'])} equation of the table's {st['n_table']} with ≤ "
           f"{st['max_vars']} variables, in table order (`--stride {st['stride']}`, to fit the "
           "session's time budget on a loaded 2-core machine)" if st.get("stride", 1) > 1
           else "")
        + (f"; left out for lack of time (fewer than 3 seeds finished): {', '.join(st['not_run'])}" if st.get("not_run")
           else "") + ". Per equation "
        f"and seed s ({len(seeds)} seeds; s draws the {N_TRAIN} training / {N_TEST} test samples "
        "from the table's ranges and the initialisation, the same for both libraries): **both** "
        "rpnkit and pykan 0.2.8 train the same three KAN shapes [m,1], [m,1,1] and [m,2,1] "
        f"(grid {GRID}, cubic splines, grid range = the data's range + 5%) in float64 with the "
        "same full-batch L-BFGS budget (40 steps of at most 20 iterations, strong-Wolfe line "
        "search; [m,1,1] and [m,2,1] with a grid update every 10 steps; [m,2,1] with L1 and "
        "entropy regularisation 1e-4 each, pruned at edge threshold 0.05, then 20 more steps), "
        "then turn each into a formula with the same primitive library (rpnkit: `fit_formula`, "
        "constants refined by least squares and snapped; pykan: `auto_symbolic`, then its 10-step "
        "refit of the symbolic constants), and keep by the same rule the first formula with "
        "training NRMSE < 1e-4, else the best on the training data. pykan runs in a subprocess "
        f"capped at {st['pykan_seconds']:.0f} s. Differences that remain are each library's own: "
        "the L1/entropy definitions, L-BFGS history (rpnkit 100, pykan 10), pykan's node pruning "
        "and its random-sample grid updates. **exact**: sympy simplifies formula − truth to 0 "
        "(up to constants within 1e-3); **NRMSE**: test RMSE of the formula / std of the truth. "
        "Machine: 2 shared CPU cores (loaded by other jobs), one torch thread; "
        f"run times summed {total / 60:.1f} min" + (" (quick settings)" if st["quick"] else "") + ".",
        "",
    ]
    n = len(eqs)
    ex_r = [sum(r["rpn_exact"] for r in done[s]) for s in seeds]
    wi_r = [sum(r["rpn_within"] for r in done[s]) for s in seeds]
    lines.append(f"**rpnkit** ({n} equations): exact recoveries per seed "
                 f"{', '.join(map(str, ex_r))}; within NRMSE 1e-3 per seed "
                 f"{', '.join(map(str, wi_r))}; exact on every seed: "
                 f"{sum(all(r['rpn_exact'] for r in by[eq]) for eq in eqs)}/{n}; median over "
                 f"equations of the per-equation geometric-mean test NRMSE "
                 f"{np.median([_gm([max(r['rpn_nrmse'], FLOOR) for r in by[eq]]) for eq in eqs]):.1e};"
                 f" median {np.median(rpn_sec):.0f} s per run.")
    verdicts = {}
    if use_pykan:
        ok = {eq: [r for r in by[eq] if r.get("kan_status") == "ok"] for eq in eqs}
        ex_k = [sum(r.get("kan_exact", False) for r in done[s] if r.get("kan_status") == "ok")
                for s in seeds]
        wi_k = [sum(r.get("kan_within", False) for r in done[s] if r.get("kan_status") == "ok")
                for s in seeds]
        fin = [sum(r.get("kan_status") == "ok" for r in done[s]) for s in seeds]
        gms = [_gm([max(r["kan_nrmse"], FLOOR) for r in ok[eq]]) for eq in eqs if ok[eq]
               and all(np.isfinite(r["kan_nrmse"]) for r in ok[eq])]
        lines.append(f"**pykan** ({n} equations): finished per seed {', '.join(map(str, fin))}; "
                     f"exact recoveries per seed {', '.join(map(str, ex_k))}; within NRMSE 1e-3 "
                     f"per seed {', '.join(map(str, wi_k))}; exact on every seed: "
                     f"{sum(len(ok[eq]) == len(by[eq]) and all(r['kan_exact'] for r in ok[eq]) for eq in eqs)}/{n}; "
                     "median over equations (all seeds finished) of the per-equation "
                     f"geometric-mean test NRMSE {np.median(gms) if gms else float('nan'):.1e}; "
                     f"median {np.median(kan_sec) if kan_sec else float('nan'):.0f} s per "
                     "finished run.")
        ratios = []
        for eq in eqs:
            v = verdict([r["rpn_nrmse"] for r in by[eq]],
                        [r["kan_nrmse"] if r.get("kan_status") == "ok" else float("nan")
                         for r in by[eq]])
            verdicts[eq] = v
            if v[1] is not None and v[2] is not None:
                ratios.append(v[1])
        counts = {k: sum(v[0] == k for v in verdicts.values())
                  for k in ("rpnkit lower", "pykan lower", "within seed spread")}
        rest = n - sum(counts.values())
        lines.append(
            f"**Paired per equation** (test NRMSE pykan / rpnkit, geometric mean over seeds; a "
            "lower NRMSE named only when the mean per-seed log ratio exceeds two standard errors "
            f"over >= 3 seeds): rpnkit lower on {counts['rpnkit lower']}/{n}, pykan lower on "
            f"{counts['pykan lower']}/{n}, within the seed spread on "
            f"{counts['within seed spread']}/{n}" + (f", no verdict on {rest}/{n} (fewer than 3 "
                                                     "finished pykan seeds)" if rest else "")
            + (f"; over the {len(ratios)} equations with a verdict the per-equation ratio runs "
               f"{min(ratios):.2g}x to {max(ratios):.2g}x, median {np.median(ratios):.2g}x, "
               f"geometric mean {_gm(ratios):.2g}x." if ratios else "."))
    head = "| equation | truth | rpnkit exact (seeds) | rpnkit NRMSE per seed | s |"
    sep = "|---|---|---|---|---|"
    if use_pykan:
        head += " pykan exact (seeds) | pykan NRMSE per seed | s | pykan / rpnkit NRMSE | verdict |"
        sep += "---|---|---|---|---|"
    lines += ["", head, sep]
    for eq in eqs:
        rs = by[eq]
        cells = [eq, f"`{rs[0]['truth']}`",
                 f"{sum(r['rpn_exact'] for r in rs)}/{len(rs)}",
                 ", ".join(_fmt(r["rpn_nrmse"]) for r in rs),
                 f"{np.median([r['rpn_seconds'] for r in rs]):.0f}"]
        if use_pykan:
            okr = [r for r in rs if r.get("kan_status") == "ok"]
            cells += [f"{sum(r['kan_exact'] for r in okr)}/{len(rs)}",
                      ", ".join(_fmt(r["kan_nrmse"]) if r.get("kan_status") == "ok"
                                else r.get("kan_status", "–")[:20] for r in rs),
                      f"{np.median([r['kan_seconds'] for r in okr]):.0f}" if okr else "–"]
            v = verdicts[eq]
            cells += [f"{v[1]:.2g}x" if v[1] is not None else "–", v[0]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "## Formulas (seed 0)", "",
              "| equation | rpnkit formula | rpnkit stage | "
              + ("pykan formula | pykan stage |" if use_pykan else ""),
              "|---|---|---|" + ("---|---|" if use_pykan else "")]
    for eq in eqs:
        r = by[eq][0]
        cells = [eq, f"`{r['rpn_formula']}`", r["rpn_stage"]]
        if use_pykan:
            cells += ([f"`{r['kan_formula']}`", r["kan_stage"]] if r.get("kan_status") == "ok"
                      else [r.get("kan_status", "–"), "–"])
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Per-seed results (formulas, stages, times) are in `symbolic.json`."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
