"""rpnkit.search and `rpnkit search`: budget, validation-only selection, outputs, errors."""

from __future__ import annotations

import csv
import json

import pytest

from rpnkit.cli import main
from rpnkit.config import ModelConfig, parse_config
from rpnkit.errors import ConfigurationError
from rpnkit.search import candidate_architectures, leaderboard_csv, search
from rpnkit.training import build_from_config, count_params

SPACE = {"expansions": [{"name": "bspline"}, {"name": "chebyshev", "d": 3}],
         "reconciliations": [{"name": "lorr", "r": 1}], "remainders": ["zero"], "depths": [1, 2],
         "recipes": ["config", "lbfgs"], "max_width": 16}


def _cfg(split=None, **extra):
    raw = {"seed": 0,
           "data": {"name": "function", "expression": "sin(2*x0) + x1**2", "ranges": [[-1, 1], [-1, 1]],
                    "n_samples": 400, "split": split or {"train": 0.5, "val": 0.2, "test": 0.3}},
           "model": {"dims": [2, 1], "expansion": "bspline"},
           "train": {"epochs": 30, "loss": "mse"}}
    raw.update(extra)
    return parse_config(raw)


def test_architectures_fit_the_budget_and_are_the_widest():
    archs = candidate_architectures(2, 1, 60, SPACE)
    assert archs, "some architecture fits 60 parameters"
    for label, sec, p in archs:
        model = build_from_config(ModelConfig.model_validate(sec), 0, 2, 1)
        assert count_params(model) == p <= 60, label
        if len(sec["dims"]) > 2:  # one unit wider would not fit
            wider = dict(sec, dims=[2] + [sec["dims"][1] + 1] * (len(sec["dims"]) - 2) + [1])
            assert count_params(build_from_config(ModelConfig.model_validate(wider), 0, 2, 1)) > 60
    # round-robin over expansions: the first two differ in expansion
    assert archs[0][1]["expansion"] != archs[1][1]["expansion"]


def test_search_selects_on_validation_and_hides_test(monkeypatch):
    import rpnkit.training as T

    seen = []
    real_fit = T.fit

    def spy(model, bundle, *a, **k):
        seen.append(bundle.size("test"))
        return real_fit(model, bundle, *a, **k)

    monkeypatch.setattr(T, "fit", spy)
    res = search(_cfg(), budget=60, max_minutes=2, space=SPACE, screen_epochs=15, finalists=1)
    assert seen, "the search trained candidates"
    assert set(seen) == {0}, "no candidate may train or evaluate on the test split"
    w = res.winner
    assert w is not None
    assert w.params <= 60
    assert w.score == min(c.score for c in res.candidates)
    assert w.test
    assert "mse" in w.test
    assert all(not c.test for c in res.candidates if c is not w)
    rows = list(csv.DictReader(leaderboard_csv(res).splitlines()))
    assert rows[0]["name"] == w.name
    assert rows[0]["recipe"] == w.recipe
    losses = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert losses == sorted(losses)


def test_search_needs_a_validation_split():
    with pytest.raises(ConfigurationError, match="validation split"):
        search(_cfg({"train": 0.7, "val": 0.0, "test": 0.3}), budget=60, max_minutes=1, space=SPACE)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"budget": 0}, "budget"), ({"budget": 60, "max_minutes": -1}, "max_minutes"),
    ({"budget": 60, "space": {"expansionz": []}}, "unknown search-space keys"),
    ({"budget": 60, "space": {"recipes": ["sgd"]}}, "unknown recipe"),
    ({"budget": 3}, "no catalog RPN fits 3 parameters"),
])
def test_search_rejects_bad_arguments(kwargs, match):
    kwargs.setdefault("max_minutes", 1)
    with pytest.raises(ConfigurationError, match=match):
        search(_cfg(), space=kwargs.pop("space", SPACE), **kwargs)


def test_cli_search_writes_leaderboard_and_prints_winner_json(tmp_path, capsys):
    import yaml

    cfg = tmp_path / "cfg.yaml"
    raw = _cfg().model_dump(mode="json")
    raw["model"] = {"dims": [2, 1], "expansion": "bspline"}
    raw["search"] = SPACE
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    rc = main(["search", str(cfg), "--budget", "60", "--max-minutes", "2", "--out", str(out),
               "--screen-epochs", "10", "--finalists", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    last = json.loads(captured.out.strip().splitlines()[-1])
    assert set(last) >= {"params", "config", "val", "test"}
    assert last["params"] <= 60
    assert last["config"]["dims"][0] == 2
    assert (out / "leaderboard.csv").is_file()
    assert (out / "winner.yaml").is_file()
    winner = yaml.safe_load((out / "winner.yaml").read_text())
    assert winner["model"] == last["config"]
    # the winner's config trains as it is
    parse_config(winner)
    # a second search into the same folder is refused without --overwrite
    rc = main(["search", str(cfg), "--budget", "60", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--overwrite" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "match"), [
    (["--budget", "abc"], "positive integer"), (["--budget", "0"], "positive integer"),
    (["--budget", "10", "--max-minutes", "nan"], "positive finite"),
])
def test_cli_search_bad_flags(tmp_path, capsys, argv, match):
    rc = main(["search", "cfg.yaml", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert match in err
    assert "Traceback" not in err


def test_grids_follow_raw_input_ranges():
    from rpnkit.search import with_input_range

    ext = {"name": "extended", "expansions": [{"name": "bspline"}, {"name": "taylor", "d": 2}]}
    got = with_input_range(ext, (1.0, 5.0))
    assert got["expansions"][0]["range"] == [1.0, 5.0]
    assert "range" not in got["expansions"][1]
    nested = {"name": "nested", "expansions": [{"name": "gaussian_rbf"}, {"name": "bspline"}]}
    got = with_input_range(nested, (0.0, 3.0))
    assert got["expansions"][0]["range"] == [0.0, 3.0]
    assert "range" not in got["expansions"][1]  # the second stage sees basis values, not x
    archs = candidate_architectures(2, 1, 80, SPACE, input_range=(1.0, 5.0))
    deep = next(sec for _, sec, _ in archs if len(sec["dims"]) > 2 and sec["expansion"] == {"name": "bspline"})
    assert deep["layers"][0]["expansion"]["range"] == [1.0, 5.0]
    assert deep["layers"][1:] == [None] * (len(deep["dims"]) - 2)
    model = build_from_config(ModelConfig.model_validate(deep), 0, 2, 1)
    first = model.layers[0].heads[0].expansion
    assert tuple(first.range) == (1.0, 5.0)


# ----------------------------------------------------------------------------- issue 20 item 3
def _order_space(depths=(1, 2, 3)):
    return {"expansions": [{"name": "bspline"}, {"name": "chebyshev", "d": 3}, {"name": "taylor", "d": 2}],
            "reconciliations": [{"name": "lorr", "r": 1}, {"name": "identity"}], "remainders": ["zero"],
            "depths": list(depths), "max_width": 8}


def _family_depth(sec):
    return sec["expansion"]["name"], len(sec["dims"]) - 1


def test_order_covers_depths_and_families_first_not_cheapest_first():
    archs = candidate_architectures(2, 1, 10_000, _order_space())
    keys = [_family_depth(sec) for _, sec, _ in archs]
    # the first round takes one architecture of every (family, depth) group
    assert len(set(keys[:9])) == 9
    assert set(keys[:9]) == {(f, d) for f in ("bspline", "chebyshev", "taylor") for d in (1, 2, 3)}
    # any three consecutive entries of a round have three depths, and the first three three families
    for i in range(0, 9, 3):
        assert {d for _, d in keys[i:i + 3]} == {1, 2, 3}
    assert {f for f, _ in keys[:3]} == {"bspline", "chebyshev", "taylor"}
    # within a group: the space's order (lorr before identity), not the parameter count
    assert [sec["reconciliation"]["name"] for _, sec, _ in archs if _family_depth(sec) == ("bspline", 1)] \
        == ["lorr", "identity"]
    params = [p for _, _, p in archs]
    assert params != sorted(params)
    # limit: the first K of the same order, and only those are built
    assert candidate_architectures(2, 1, 10_000, _order_space(), limit=4) == archs[:4]


class _CountingClock:
    """A clock for the search: the real one (counting its readings), or one that advances a
    fixed ``step`` per reading whatever the machine does (a loaded machine, deterministically)."""

    def __init__(self, step=None):
        import time

        self.step, self.calls, self.real, self.t = step, 0, time.perf_counter, 0.0

    def __call__(self):
        self.calls += 1
        if self.step is None:
            return self.real()
        self.t += self.step
        return self.t


def _rows(res):
    return [(c.name, c.recipe, c.stage, c.params, c.status, c.epochs, c.val.get("loss"))
            for c in res.leaderboard()]


SMALL = {"expansions": [{"name": "bspline"}, {"name": "chebyshev", "d": 3}],
         "reconciliations": [{"name": "lorr", "r": 1}], "remainders": ["zero"], "depths": [1, 2],
         "recipes": ["config"], "max_width": 6}


def test_same_leaderboard_on_a_quiet_and_on_a_loaded_machine(monkeypatch):
    import rpnkit.search as S

    kw = {"budget": 60, "max_minutes": 5, "space": SMALL, "max_candidates": 4, "screen_epochs": 8,
          "epochs": 12, "finalists": 2}
    quiet = _CountingClock()
    monkeypatch.setattr(S, "_clock", quiet)
    res_quiet = search(_cfg(), **kw)
    assert res_quiet.stopped is None
    # the loaded machine: the same readings span 90% of max_minutes (the old search stopped
    # screening at 60% of it and so saw fewer, cheaper candidates)
    loaded = _CountingClock(step=0.9 * 60 * kw["max_minutes"] / quiet.calls)
    monkeypatch.setattr(S, "_clock", loaded)
    res_loaded = search(_cfg(), **kw)
    assert loaded.calls == quiet.calls
    assert res_loaded.seconds > 0.6 * 60 * kw["max_minutes"]
    assert res_loaded.stopped is None
    assert _rows(res_loaded) == _rows(res_quiet)
    assert sum(c.stage == "screen" for c in res_quiet.candidates) == 4
    assert sum(c.stage == "final" for c in res_quiet.candidates) == 2
    assert res_loaded.winner.name == res_quiet.winner.name
    assert res_loaded.winner.test == res_quiet.winner.test


def test_the_safety_stop_interrupts_a_long_candidate(monkeypatch, caplog):
    import rpnkit.search as S
    import rpnkit.training as T

    epochs_started = []
    real_fit = T.fit

    def spy(model, bundle, cfg, *a, **k):
        epochs_started.append(cfg.epochs)
        return real_fit(model, bundle, cfg, *a, **k)

    monkeypatch.setattr(T, "fit", spy)
    clock = _CountingClock(step=1.0)  # every reading of the clock is one second later
    monkeypatch.setattr(S, "_clock", clock)
    res = search(_cfg(), budget=60, max_minutes=1, space=SMALL, max_candidates=3,
                 screen_epochs=5000, epochs=5000, finalists=1)
    first, *rest = res.candidates
    assert first.status == "stopped (time)"  # interrupted inside its training
    assert epochs_started == [5000]
    assert clock.calls < 100  # ... after about 60 of its 5000 steps, not at its end
    assert [c.status for c in rest] == ["skipped (time)", "skipped (time)"]
    assert res.winner is None
    assert "safety stop" in res.stopped
    assert "safety stop" in caplog.text


def test_search_options_from_the_search_section_and_flags_win():
    space = dict(SMALL, max_candidates=2, screen_epochs=5, finalists=1, epochs=7)
    res = search(_cfg(), budget=60, max_minutes=5, space=space)
    screened = [c for c in res.candidates if c.stage == "screen"]
    assert len(screened) == 2  # the config's own model and one catalog architecture
    assert screened[0].name.startswith("config model")
    assert all(c.epochs <= 5 + 5 for c in screened)  # 5 epochs, at most 5 of L-BFGS polish
    finals = [c for c in res.candidates if c.stage == "final"]
    assert [c.epochs for c in finals] == [7]
    res = search(_cfg(), budget=60, max_minutes=5, space=space, max_candidates=1, epochs=3)
    assert [c.stage for c in res.candidates] == ["screen", "final"]
    assert res.candidates[1].epochs == 3
    with pytest.raises(ConfigurationError, match="max_candidates must be a positive integer, got 0"):
        search(_cfg(), budget=60, space=dict(space, max_candidates=0))


def test_screen_share_is_deprecated():
    with pytest.warns(DeprecationWarning, match="screen_share"), \
            pytest.raises(ConfigurationError, match="budget"):
        search(_cfg(), budget=0, screen_share=1.0)


def test_search_without_a_model_section(tmp_path, capsys):
    import yaml

    from rpnkit.search import NO_MODEL, search_config

    raw = _cfg().model_dump(mode="json")
    del raw["model"], raw["baselines"]
    cfg = search_config(raw)
    assert cfg.model.label == NO_MODEL
    res = search(raw, budget=60, max_minutes=5, space=SMALL, max_candidates=2, screen_epochs=5,
                 finalists=1, epochs=6)
    assert not any(c.name.startswith("config model") for c in res.candidates)
    assert res.winner is not None
    path = tmp_path / "nomodel.yaml"
    path.write_text(yaml.safe_dump({**raw, "search": SMALL}))
    out = tmp_path / "out"
    rc = main(["search", str(path), "--budget", "60", "--max-candidates", "2", "--epochs", "6",
               "--screen-epochs", "5", "--finalists", "1", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    winner = yaml.safe_load((out / "winner.yaml").read_text())
    assert winner["model"] == json.loads(captured.out.strip().splitlines()[-1])["config"]
    assert winner["model"].get("label") != NO_MODEL
    assert parse_config(winner).model.dims[0] == 2
    assert json.loads((out / "search.json").read_text())["stopped"] is None
