"""Search the component catalog for the best RPN under a parameter budget.

:func:`search` trains candidate RPNs built from catalog components on a config's data and
picks the one with the lowest *validation* loss; the test split is evaluated once, for the
winner only. A candidate is an architecture (expansion, reconciliation, remainder, depth;
hidden widths are the largest that keep the parameter count within the budget) trained
with a recipe:

* ``config``: the config's own ``train`` section (rpnkit's default: Adam, cosine decay);
* ``lbfgs``: full-batch L-BFGS with a strong-Wolfe line search;
* ``adam+lbfgs``: the config's recipe, then an L-BFGS polish from its best-on-validation
  weights.

The search runs in two stages: every architecture is screened with a short ``adam+lbfgs``
recipe (``screen_epochs`` epochs, cheapest first, round-robin over expansions so that an
early deadline still covers the catalog; no new candidate after 60% of the time), then the
best ``finalists`` architectures are trained with every recipe for the config's full epoch
count. The deadline
(``max_minutes``) is checked between candidates and also interrupts a candidate that
overruns it (that candidate is discarded). Everything a candidate needs is decided by the
same :class:`~rpnkit.config.ModelConfig` / :class:`~rpnkit.config.TrainConfig` a user
writes, so the winner's ``model`` section can be pasted into a config and trained with
``rpnkit train``.

CLI: ``rpnkit search cfg.yaml --budget N --max-minutes M --out DIR`` writes
``DIR/leaderboard.csv`` (every candidate, best first), ``DIR/search.json`` and
``DIR/winner.yaml`` (the config with the winning model and recipe) and prints, as its
last line, ``{"params": …, "config": {…model section…}, "train": {…}, "val": {…}, "test": {…}}``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ModelConfig, RunConfig, TrainConfig
from .errors import ConfigurationError

__all__ = ["Candidate", "SearchResult", "search", "candidate_architectures", "DEFAULT_SPACE"]

logger = logging.getLogger(__name__)

_EXT = {"name": "extended", "expansions": [{"name": "bspline"}, {"name": "taylor", "d": 2}]}
# the catalog configurations searched by default (a ``search:`` mapping may replace any key)
DEFAULT_SPACE: dict[str, Any] = {
    "expansions": [
        _EXT,
        {"name": "bspline"},
        {"name": "taylor", "d": 2},
        {"name": "chebyshev", "d": 5},
        {"name": "gaussian_rbf"},
        {"name": "fourier"},
        {"name": "nested", "expansions": [{"name": "bspline"}, {"name": "taylor", "d": 2}]},
    ],
    "reconciliations": [{"name": "lorr", "r": 1}, {"name": "lorr", "r": 2}, {"name": "identity"}],
    "remainders": ["zero", "linear"],
    "depths": [1, 2, 3],
    "recipes": ["adam+lbfgs", "lbfgs", "config"],
    "max_width": 64,
}
RECIPES = ("config", "lbfgs", "adam+lbfgs")


@dataclass
class Candidate:
    """One trained candidate: its model section, recipe and validation/test results."""

    name: str
    model: dict[str, Any]
    recipe: str
    params: int
    stage: str
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    status: str = "ok"
    epochs: int = 0

    @property
    def score(self) -> float:
        v = self.val.get("loss", math.inf)
        return v if (self.status == "ok" and math.isfinite(v)) else math.inf


@dataclass
class SearchResult:
    winner: Candidate | None
    candidates: list[Candidate]
    train: dict[str, Any]
    seconds: float
    budget: int

    def leaderboard(self) -> list[Candidate]:
        return sorted(self.candidates, key=lambda c: (c.score, c.params))

    def summary(self) -> dict[str, Any]:
        w = self.winner
        if w is None:
            return {"params": None, "config": None, "train": None, "val": {}, "test": {}}
        return {"params": w.params, "config": w.model, "train": self.train, "recipe": w.recipe,
                "val": w.val, "test": w.test}


# ----------------------------------------------------------------------------- space
def _label(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    name = spec.get("name", "?")
    if "expansions" in spec:
        inner = ",".join(_label(e) for e in spec["expansions"])
        return f"{name}[{inner}]"
    extra = ",".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{name}({extra})" if extra else name


def _params_of(model: dict[str, Any], m: int, n: int) -> int | None:
    from .training import build_from_config, count_params

    try:
        return count_params(build_from_config(ModelConfig.model_validate(model), 0, m, n))
    except (ConfigurationError, ValueError):
        return None


_GRID_EXPANSIONS = ("bspline", "gaussian_rbf", "inverse_quadratic_rbf")


def with_input_range(exp: Any, rng: tuple[float, float]) -> Any:
    """``exp`` with every grid-based component that sees the raw input placed on ``rng``
    (all parts of an ``extended`` expansion, the first stage of a ``nested`` one)."""
    if isinstance(exp, str):
        exp = {"name": exp}
    exp = copy.deepcopy(exp)
    name = exp.get("name")
    if name in _GRID_EXPANSIONS and "range" not in exp:
        exp["range"] = [float(rng[0]), float(rng[1])]
    elif name == "extended":
        exp["expansions"] = [with_input_range(e, rng) for e in exp.get("expansions", [])]
    elif name == "nested" and exp.get("expansions"):
        exp["expansions"] = [with_input_range(exp["expansions"][0], rng)] + exp["expansions"][1:]
    return exp


def candidate_architectures(m: int, n: int, budget: int, space: Mapping[str, Any] | None = None,
                            input_range: tuple[float, float] | None = None,
                            ) -> list[tuple[str, dict[str, Any], int]]:
    """``(label, model section, parameters)`` of every architecture of ``space`` that fits
    ``budget`` parameters, with the widest hidden layers that fit; ordered round-robin over
    expansions, cheapest first within each. With ``input_range`` (training inputs outside
    [-1, 1]) the first layer's grids (B-spline, RBF centres) span that range; hidden layers
    keep the default grid."""
    sp = dict(DEFAULT_SPACE)
    sp.update(space or {})
    max_width = int(sp["max_width"])
    per_exp: list[list[tuple[str, dict[str, Any], int]]] = []

    def section(dims: list[int], exp: Any, rec: Any, rem: str) -> dict[str, Any]:
        sec = {"dims": dims, "expansion": copy.deepcopy(exp), "reconciliation": copy.deepcopy(rec),
               "remainder": rem}
        if input_range is not None:
            first = with_input_range(exp, input_range)
            if first != exp:
                sec["layers"] = [{"expansion": first}] + [None] * (len(dims) - 2)
        return sec

    for exp in sp["expansions"]:
        found = []
        for rec in sp["reconciliations"]:
            for rem in sp["remainders"]:
                for depth in sp["depths"]:
                    depth = int(depth)
                    best = None
                    if depth == 1:
                        sec = section([m, n], exp, rec, rem)
                        p = _params_of(sec, m, n)
                        if p is not None and p <= budget:
                            best = (sec, p)
                    else:  # parameters grow with the width: bisect for the widest that fits
                        lo, hi = 1, max_width
                        while lo <= hi:
                            h = (lo + hi) // 2
                            sec = section([m] + [h] * (depth - 1) + [n], exp, rec, rem)
                            p = _params_of(sec, m, n)
                            if p is not None and p <= budget:
                                best, lo = (sec, p), h + 1
                            else:
                                hi = h - 1
                    if best is not None:
                        sec, p = best
                        label = (f"{_label(exp)} / {_label(rec)} / {rem} / "
                                 f"dims {sec['dims']}")
                        found.append((label, sec, p))
        found.sort(key=lambda t: t[2])
        per_exp.append(found)
    out, i = [], 0
    while any(i < len(f) for f in per_exp):
        out.extend(f[i] for f in per_exp if i < len(f))
        i += 1
    return out


def recipe_config(base: TrainConfig, recipe: str, epochs: int | None = None) -> TrainConfig:
    """The TrainConfig of a recipe built on ``base`` (``epochs``: the main schedule's length).

    ``config``: ``base`` itself; ``lbfgs``: full-batch L-BFGS for epochs/8 epochs (at least
    10); ``adam+lbfgs``: ``base`` followed by ``polish: epochs/20`` (at least 5) L-BFGS epochs
    from its best-on-validation weights.
    """
    epochs = base.epochs if epochs is None else epochs
    main = base.model_copy(update={"epochs": epochs, "polish": 0})
    if recipe == "config":
        return main
    if recipe == "adam+lbfgs":
        return main.model_copy(update={"polish": max(5, epochs // 20)})
    if recipe == "lbfgs":
        from .training.engine import polish_config

        return polish_config(main.model_copy(update={"polish": max(10, epochs // 8)}))
    raise ConfigurationError(f"search: unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")


# ----------------------------------------------------------------------------- search
def _without_test(bundle):
    x = dict(bundle.x)
    y = dict(bundle.y)
    x["test"], y["test"] = x["test"][:0], y["test"][:0]
    return dataclasses.replace(bundle, x=x, y=y)


def search(
    cfg: RunConfig,
    budget: int,
    max_minutes: float = 10.0,
    space: Mapping[str, Any] | None = None,
    screen_epochs: int = 200,
    finalists: int = 3,
    on_candidate: Callable[[Candidate, int, int], None] | None = None,
    screen_recipe: str = "adam+lbfgs",
    screen_share: float = 0.6,
) -> SearchResult:
    """Search catalog RPNs with at most ``budget`` parameters on ``cfg``'s data.

    Selection uses the validation split only (a config without one is refused); the test
    split is hidden from every candidate's training and evaluated once, for the winner.
    Screening (``screen_recipe`` for ``screen_epochs``) starts no new candidate after
    ``screen_share`` of ``max_minutes``, so that the finalists get the rest.
    ``on_candidate(candidate, index, total)`` is called after each candidate (progress).
    """
    import torch

    from .training import build_from_config, count_params, fit, prepare
    from .training.engine import InterruptFlag, TrainingInterrupted, evaluate
    from .training.run import num_threads

    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigurationError(f"search: budget must be a positive number of parameters, got {budget!r}")
    if not (isinstance(max_minutes, (int, float)) and math.isfinite(max_minutes) and max_minutes > 0):
        raise ConfigurationError(f"search: max_minutes must be a positive number, got {max_minutes!r}")
    unknown = set(space or {}) - set(DEFAULT_SPACE)
    if unknown:
        raise ConfigurationError(f"search: unknown search-space keys {sorted(unknown)}; "
                                 f"valid: {', '.join(DEFAULT_SPACE)}")
    recipes = list((space or {}).get("recipes", DEFAULT_SPACE["recipes"]))
    if not 0.0 < screen_share <= 1.0:
        raise ConfigurationError(f"search: screen_share must be in (0, 1], got {screen_share!r}")
    for r in [*recipes, screen_recipe]:
        if r not in RECIPES:
            raise ConfigurationError(f"search: unknown recipe {r!r}; valid: {', '.join(RECIPES)}")
    t0 = time.perf_counter()
    deadline = t0 + 60.0 * max_minutes
    screen_deadline = t0 + 60.0 * max_minutes * screen_share
    prep = prepare(cfg)
    bundle = prep.bundle
    if getattr(bundle, "streaming", False):
        raise ConfigurationError("search trains many candidates on in-memory data; a streamed "
                                 "dataset (data.stream: true) is not supported: use a sample of it")
    if bundle.size("val") == 0:
        raise ConfigurationError("search selects on the validation split, and this config has none: "
                                 "give data.split a val share, e.g. {train: 0.45, val: 0.05, test: 0.5}")
    hidden = _without_test(bundle)
    m, n = bundle.n_features, prep.out_width
    x_tr = bundle.x["train"]
    lo, hi = float(x_tr.min()), float(x_tr.max())
    rng = None
    if lo < -1.0 or hi > 1.0:  # grids on the raw input range (a little margin for unseen rows)
        pad = 0.05 * (hi - lo)
        rng = (lo - pad, hi + pad)
    archs = candidate_architectures(m, n, budget, space, input_range=rng)
    own = cfg.model.to_dict()
    own_p = count_params(prep.model)
    if own_p <= budget and cfg.model.name in (None, "rpn"):
        archs.insert(0, (f"config model ({cfg.model.title()})", own, own_p))
    if not archs:
        raise ConfigurationError(f"search: no catalog RPN fits {budget} parameters for {m} inputs and "
                                 f"{n} outputs; raise --budget")
    dtype = getattr(torch, cfg.train.dtype)
    done: list[Candidate] = []
    best_state: dict[str, Any] = {}

    def run(label: str, sec: dict[str, Any], p: int, recipe: str, epochs: int, stage: str,
            index: int, total: int) -> Candidate:
        cand = Candidate(label, sec, recipe, p, stage)
        if time.perf_counter() >= deadline:
            cand.status = "skipped (time)"
            return cand
        flag = InterruptFlag()
        timer = threading.Timer(max(0.0, deadline - time.perf_counter()), flag.set)
        timer.daemon = True
        timer.start()
        start = time.perf_counter()
        try:
            model = build_from_config(ModelConfig.model_validate(sec), cfg.seed, m, n)
            with num_threads(prep.threads):
                res = fit(model, hidden, recipe_config(cfg.train, recipe, epochs), seed=cfg.seed,
                          device=prep.device, interrupt=flag, restore_best=True)
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                cand.epochs = res.epochs_run
            cand.val = dict(res.best_metrics.get("val", {}))
            if not math.isfinite(cand.val.get("loss", math.nan)):
                cand.status = "diverged"
            if cand.score < min((c.score for c in done), default=math.inf):
                best_state.clear()
                best_state.update(state=state, cand=cand)
        except TrainingInterrupted:
            cand.status = "stopped (time)"
        except (ConfigurationError, ValueError, RuntimeError) as exc:
            cand.status = "failed: " + " ".join(str(exc).split())[:160]
        finally:
            timer.cancel()
        cand.seconds = round(time.perf_counter() - start, 2)
        done.append(cand)
        if on_candidate is not None:
            on_candidate(cand, index, total)
        return cand

    total = len(archs) + finalists * len(recipes)
    screen = min(screen_epochs, cfg.train.epochs)
    for i, (label, sec, p) in enumerate(archs):
        if time.perf_counter() >= screen_deadline:
            break
        run(label, sec, p, screen_recipe, screen, "screen", i + 1, total)
    ranked = sorted((c for c in done if c.stage == "screen"), key=lambda c: (c.score, c.params))
    top = [c for c in ranked if math.isfinite(c.score)][:finalists]
    k = len(done)
    for c in top:
        for recipe in recipes:
            if time.perf_counter() >= deadline:
                break
            k += 1
            run(c.name, c.model, c.params, recipe, cfg.train.epochs, "final", k, total)
    winner = best_state.get("cand")
    train_yaml: dict[str, Any] = {}
    if winner is not None:
        model = build_from_config(ModelConfig.model_validate(winner.model), cfg.seed, m, n)
        model.load_state_dict(best_state["state"])
        model.to(device=prep.device, dtype=dtype)
        with num_threads(prep.threads):
            winner.test = evaluate(model, bundle, "test", loss=prep.loss, metrics=cfg.train.metrics,
                                   device=prep.device, dtype=dtype, batch_size=cfg.train.eval_batch_size)
        epochs = min(screen_epochs, cfg.train.epochs) if winner.stage == "screen" else cfg.train.epochs
        train_yaml = recipe_config(cfg.train, winner.recipe, epochs).model_dump(mode="json", exclude_defaults=True)
    return SearchResult(winner, done, train_yaml, round(time.perf_counter() - t0, 1), budget)


# ----------------------------------------------------------------------------- output
LEADERBOARD_FIELDS = ("rank", "name", "recipe", "stage", "params", "val_loss", "val_metrics",
                      "seconds", "epochs", "status", "model")


def leaderboard_csv(result: SearchResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LEADERBOARD_FIELDS)
    for i, c in enumerate(result.leaderboard(), 1):
        vl = c.val.get("loss")
        w.writerow([i, c.name, c.recipe, c.stage, c.params,
                    "" if vl is None or not math.isfinite(vl) else f"{vl:.6g}",
                    json.dumps({k: float(f"{v:.6g}") for k, v in c.val.items() if k != "loss"}),
                    c.seconds, c.epochs, c.status, json.dumps(c.model, separators=(",", ":"))])
    return buf.getvalue()


def write_outputs(result: SearchResult, cfg: RunConfig, out: Path) -> None:
    """``leaderboard.csv``, ``search.json`` and (with a winner) ``winner.yaml`` in ``out``."""
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / "leaderboard.csv", leaderboard_csv(result))
    doc = {"budget": result.budget, "seconds": result.seconds, "winner": result.summary(),
           "candidates": [dataclasses.asdict(c) for c in result.leaderboard()]}
    _atomic(out / "search.json", json.dumps(doc, indent=1, default=_json_default))
    if result.winner is not None:
        conf = cfg.to_dict()
        conf["model"] = result.winner.model
        conf["train"] = dict(result.train)
        conf["baselines"] = []
        conf.pop("search", None)
        text = ("# the winner of `rpnkit search` (validation loss "
                f"{result.winner.val.get('loss', float('nan')):.4g}, {result.winner.params} parameters, "
                f"recipe {result.winner.recipe}): train it with `rpnkit train winner.yaml --out RUN`\n")
        _atomic(out / "winner.yaml", text + yaml.safe_dump(conf, sort_keys=False))


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def _atomic(path: Path, text: str) -> None:
    import os

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

