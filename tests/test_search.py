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
