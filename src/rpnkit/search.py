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

The search runs in two stages whose work is fixed by counts, never by the clock: the first
``max_candidates`` architectures of a fixed order (round-robin over (depth, expansion family),
so that the first few already cover every depth and family) are screened with a short
``adam+lbfgs`` recipe (``screen_epochs`` epochs each), then the ``finalists`` best are trained
with every recipe for ``epochs`` epochs (default: the config's). The same config therefore
gives the same leaderboard on a quiet and on a loaded machine. ``max_minutes`` is only a
safety stop: when it is reached, the candidate in training is interrupted (the clock is read
at every optimiser step through the engine's interrupt flag) and discarded, the rest are
skipped, and :attr:`SearchResult.stopped` says so. A config without a ``model:`` section is
searched as well (:func:`search_config`). Everything a candidate needs is decided by the
same :class:`~rpnkit.config.ModelConfig` / :class:`~rpnkit.config.TrainConfig` a user
writes, so the winner's ``model`` section can be pasted into a config and trained with
``rpnkit train``.

CLI: ``rpnkit search cfg.yaml --budget N --max-candidates K --out DIR`` writes
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
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ModelConfig, RunConfig, TrainConfig
from .errors import ConfigurationError

__all__ = ["Candidate", "SearchResult", "search", "search_config", "candidate_architectures",
           "DEFAULT_SPACE", "SEARCH_OPTIONS"]

logger = logging.getLogger(__name__)

#: the search's clock (a module attribute so that tests can slow it down)
_clock = time.perf_counter

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
#: budgets of a search that a ``search:`` section may set too (command-line flags win)
SEARCH_OPTIONS: dict[str, int | None] = {"max_candidates": None, "epochs": None,
                                         "screen_epochs": 200, "finalists": 3}
#: the label of the placeholder model of a config without ``model:`` (see :func:`search_config`)
NO_MODEL = "(none: rpnkit search chooses the model)"


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
    #: why the search ended early (the ``max_minutes`` safety stop), None when it ran in full
    stopped: str | None = None

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
                            limit: int | None = None, stop: Callable[[], bool] | None = None,
                            ) -> list[tuple[str, dict[str, Any], int]]:
    """``(label, model section, parameters)`` of the architectures of ``space`` that fit
    ``budget`` parameters, with the widest hidden layers that fit.

    The order covers depths and expansion families early: the architectures are grouped by
    (depth, expansion) and taken round-robin, one from each group per round (within a group
    in the space's order of reconciliations and remainders); the groups are visited
    diagonally, (depth 1, family 1), (depth 2, family 2), ..., then (depth 1, family 2), ...,
    so that any ``len(depths)`` consecutive groups have different depths and the families
    rotate. The order depends on the space only, never on timings or costs. ``limit``: stop
    after that many (only those are built to count their parameters); ``stop()``: checked
    between builds (the search's safety stop). With ``input_range`` (training inputs outside
    [-1, 1]) the first layer's grids (B-spline, RBF centres) span that range; hidden layers
    keep the default grid."""
    sp = dict(DEFAULT_SPACE)
    sp.update(space or {})
    max_width = int(sp["max_width"])
    exps, depths = list(sp["expansions"]), [int(d) for d in sp["depths"]]

    def section(dims: list[int], exp: Any, rec: Any, rem: str) -> dict[str, Any]:
        sec = {"dims": dims, "expansion": copy.deepcopy(exp), "reconciliation": copy.deepcopy(rec),
               "remainder": rem}
        if input_range is not None:
            first = with_input_range(exp, input_range)
            if first != exp:
                sec["layers"] = [{"expansion": first}] + [None] * (len(dims) - 2)
        return sec

    def fitting(depth: int, exp: Any):
        """The group's architectures that fit, in the space's order."""
        for rec in sp["reconciliations"]:
            for rem in sp["remainders"]:
                best = None
                if depth == 1:
                    sec = section([m, n], exp, rec, rem)
                    p = _params_of(sec, m, n)
                    if p is not None and p <= budget:
                        best = (sec, p)
                else:  # parameters grow with the width: bisect for the widest that fits
                    lo, hi = 1, max_width
                    while lo <= hi:
                        if stop is not None and stop():
                            return
                        h = (lo + hi) // 2
                        sec = section([m] + [h] * (depth - 1) + [n], exp, rec, rem)
                        p = _params_of(sec, m, n)
                        if p is not None and p <= budget:
                            best, lo = (sec, p), h + 1
                        else:
                            hi = h - 1
                if best is not None:
                    sec, p = best
                    yield f"{_label(exp)} / {_label(rec)} / {rem} / dims {sec['dims']}", sec, p

    nd, ne = len(depths), len(exps)
    order = [(i, (i + shift) % ne) for shift in range(ne) for i in range(nd)] if ne else []
    groups = [fitting(depths[i], exps[j]) for i, j in order]
    out: list[tuple[str, dict[str, Any], int]] = []
    while groups:
        for g in list(groups):
            if (limit is not None and len(out) >= limit) or (stop is not None and stop()):
                return out
            item = next(g, None)
            if item is None:
                groups.remove(g)
            else:
                out.append(item)
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


def search_config(source: str | Path | Mapping[str, Any],
                  overrides: list[str] | None = None) -> RunConfig:
    """A search's :class:`~rpnkit.config.RunConfig` from a YAML file or a mapping; unlike
    :func:`rpnkit.config.load_config` the ``model:`` section may be left out (the search
    chooses the model; a placeholder labelled :data:`NO_MODEL` stands in for it)."""
    from .config import apply_overrides, parse_config, read_config_text, read_yaml, resolve_paths

    if isinstance(source, Mapping):
        raw, name = copy.deepcopy(dict(source)), "config"
    else:
        from .config import _resolve_raw_paths

        path = Path(source)
        raw, name = read_yaml(read_config_text(path), path.name), path.name
        if raw is None:
            raise ConfigurationError(f"{name}: the config file is empty")
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{name}: a config must be a mapping, got {type(raw).__name__}")
        _resolve_raw_paths(raw, path.resolve().parent)
    raw = apply_overrides(raw, overrides)
    if raw.get("model") is None:
        raw["model"] = {"dims": [1, 1], "label": NO_MODEL}
    cfg = parse_config(raw, name)
    return cfg if isinstance(source, Mapping) else resolve_paths(cfg)


def _prepare(cfg: RunConfig, own: bool):
    """:func:`rpnkit.training.prepare` for a search (without a model of its own: a plain RPN
    on the data's sizes stands in for the checks)."""
    from .training import build_from_config, prepare
    from .training.components import check_metrics
    from .training.engine import loss_name, output_width, resolve_device
    from .training.run import Prepared, _check_train, choose_threads, load_bundle

    if own:
        return prepare(cfg)
    device = resolve_device(cfg.device)
    bundle = load_bundle(cfg)
    lname = loss_name(cfg.train, bundle.task)
    width = output_width(bundle, lname)
    if cfg.train.metrics:
        check_metrics(cfg.train.metrics, bundle.task)
    stand_in = ModelConfig.model_validate({"dims": [bundle.n_features, width], "label": NO_MODEL})
    cfg = cfg.model_copy(update={"model": stand_in})
    model = build_from_config(stand_in, cfg.seed, bundle.n_features, width)
    _check_train(cfg, model, bundle, lname)
    return Prepared(cfg, bundle, model, device, lname, width,
                    choose_threads(cfg.train.threads, model, device))


def _count(value: Any, what: str, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"search: {what} must be a positive integer, got {value!r}")
    return value


def search(
    cfg: RunConfig | Mapping[str, Any],
    budget: int,
    max_minutes: float = 10.0,
    space: Mapping[str, Any] | None = None,
    screen_epochs: int | None = None,
    finalists: int | None = None,
    on_candidate: Callable[[Candidate, int, int], None] | None = None,
    screen_recipe: str = "adam+lbfgs",
    screen_share: float | None = None,
    max_candidates: int | None = None,
    epochs: int | None = None,
) -> SearchResult:
    """Search catalog RPNs with at most ``budget`` parameters on ``cfg``'s data.

    Selection uses the validation split only (a config without one is refused); the test
    split is hidden from every candidate's training and evaluated once, for the winner.
    The work is fixed by counts: the first ``max_candidates`` architectures (default: all of
    the space; :func:`candidate_architectures` gives the order) are screened with
    ``screen_recipe`` for ``screen_epochs`` epochs (default 200, at most ``epochs``), then the
    ``finalists`` (default 3) best are trained with every recipe for ``epochs`` epochs (default:
    ``cfg.train.epochs``). ``space`` (or ``cfg``'s ``search:`` section) may set these budgets
    too (:data:`SEARCH_OPTIONS`); arguments given here win. ``max_minutes`` is a safety stop
    only: reaching it interrupts the candidate in training and skips the rest
    (``SearchResult.stopped``); otherwise it changes nothing. ``cfg`` may be a mapping and may
    lack a ``model:`` section (:func:`search_config`); with one, that model (an RPN within
    the budget) is the first candidate. ``on_candidate(candidate, index, total)`` is called
    after each candidate (progress). ``screen_share`` is deprecated and ignored.
    """
    import torch

    from .training import build_from_config, count_params, fit
    from .training.engine import TrainingInterrupted, evaluate
    from .training.run import choose_threads, num_threads

    if screen_share is not None:
        warnings.warn("search(screen_share=...) is ignored: screening is fixed by max_candidates, "
                      "and max_minutes is only a safety stop", DeprecationWarning, stacklevel=2)
    if isinstance(cfg, Mapping):
        cfg = search_config(cfg)
    if space is None and cfg.search:
        space = cfg.search
    space = dict(space or {})
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigurationError(f"search: budget must be a positive number of parameters, got {budget!r}")
    if not (isinstance(max_minutes, (int, float)) and math.isfinite(max_minutes) and max_minutes > 0):
        raise ConfigurationError(f"search: max_minutes must be a positive number, got {max_minutes!r}")
    unknown = set(space) - set(DEFAULT_SPACE) - set(SEARCH_OPTIONS)
    if unknown:
        raise ConfigurationError(f"search: unknown search-space keys {sorted(unknown)}; "
                                 f"valid: {', '.join([*DEFAULT_SPACE, *SEARCH_OPTIONS])}")
    given = {"max_candidates": max_candidates, "epochs": epochs, "screen_epochs": screen_epochs,
             "finalists": finalists}
    opts = {k: _count(given[k] if given[k] is not None else space.pop(k, default), k)
            for k, default in SEARCH_OPTIONS.items()}
    for k in SEARCH_OPTIONS:
        space.pop(k, None)
    recipes = list(space.get("recipes", DEFAULT_SPACE["recipes"]))
    for r in [*recipes, screen_recipe]:
        if r not in RECIPES:
            raise ConfigurationError(f"search: unknown recipe {r!r}; valid: {', '.join(RECIPES)}")
    t0 = _clock()
    deadline = t0 + 60.0 * max_minutes
    own_given = cfg.model.label != NO_MODEL
    prep = _prepare(cfg, own_given)
    cfg = prep.cfg
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
    k_max = opts["max_candidates"]
    archs = []
    if own_given and cfg.model.name in (None, "rpn"):
        own_p = count_params(prep.model)
        if own_p <= budget:
            archs.append((f"config model ({cfg.model.title()})", cfg.model.to_dict(), own_p))
    limit = None if k_max is None else max(0, k_max - len(archs))
    archs += candidate_architectures(m, n, budget, space, input_range=rng, limit=limit,
                                     stop=lambda: _clock() >= deadline)
    if not archs and _clock() < deadline:
        raise ConfigurationError(f"search: no catalog RPN fits {budget} parameters for {m} inputs and "
                                 f"{n} outputs; raise --budget")
    dtype = getattr(torch, cfg.train.dtype)
    done: list[Candidate] = []
    best_state: dict[str, Any] = {}
    n_epochs = opts["epochs"] or cfg.train.epochs
    screen = min(opts["screen_epochs"], n_epochs)

    def run(label: str, sec: dict[str, Any], p: int, recipe: str, epochs: int, stage: str,
            index: int, total: int) -> Candidate:
        cand = Candidate(label, sec, recipe, p, stage)
        if _clock() >= deadline:
            cand.status = "skipped (time)"
            done.append(cand)
            return cand
        start = _clock()
        try:
            model = build_from_config(ModelConfig.model_validate(sec), cfg.seed, m, n)
            with num_threads(choose_threads(cfg.train.threads, model, prep.device)):
                res = fit(model, hidden, recipe_config(cfg.train, recipe, epochs), seed=cfg.seed,
                          device=prep.device, interrupt=_Deadline(deadline), restore_best=True)
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
        cand.seconds = round(_clock() - start, 2)
        done.append(cand)
        if on_candidate is not None:
            on_candidate(cand, index, total)
        return cand

    total = len(archs) + opts["finalists"] * len(recipes)
    for i, (label, sec, p) in enumerate(archs):
        run(label, sec, p, screen_recipe, screen, "screen", i + 1, total)
    ranked = sorted((c for c in done if c.stage == "screen"), key=lambda c: (c.score, c.params))
    top = [c for c in ranked if math.isfinite(c.score)][:opts["finalists"]]
    k = len(done)
    for c in top:
        for recipe in recipes:
            k += 1
            run(c.name, c.model, c.params, recipe, n_epochs, "final", k, total)
    stopped = None
    if _clock() >= deadline or any(c.status.endswith("(time)") for c in done):
        screened = sum(c.stage == "screen" and c.status == "ok" for c in done)
        stopped = (f"the max_minutes {max_minutes:g} safety stop was reached ({screened} "
                   f"candidate(s) screened in full, {len(done)} started or skipped): the result "
                   "depends on the machine's speed; raise max_minutes or lower max_candidates")
        logger.warning("search: %s", stopped)
    winner = best_state.get("cand")
    train_yaml: dict[str, Any] = {}
    if winner is not None:
        model = build_from_config(ModelConfig.model_validate(winner.model), cfg.seed, m, n)
        model.load_state_dict(best_state["state"])
        model.to(device=prep.device, dtype=dtype)
        with num_threads(choose_threads(cfg.train.threads, model, prep.device)):
            winner.test = evaluate(model, bundle, "test", loss=prep.loss, metrics=cfg.train.metrics,
                                   device=prep.device, dtype=dtype, batch_size=cfg.train.eval_batch_size)
        ep = screen if winner.stage == "screen" else n_epochs
        train_yaml = recipe_config(cfg.train, winner.recipe, ep).model_dump(mode="json", exclude_defaults=True)
    return SearchResult(winner, done, train_yaml, round(_clock() - t0, 1), budget, stopped)


class _Deadline:
    """The engine's interrupt flag for a search: true once the search's clock passes
    ``deadline``; the engine reads it at every optimiser step, so the safety stop also
    interrupts a long candidate."""

    signum = None

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __bool__(self) -> bool:
        return _clock() >= self.deadline


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
    doc = {"budget": result.budget, "seconds": result.seconds, "stopped": result.stopped,
           "winner": result.summary(),
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

