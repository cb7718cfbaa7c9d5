"""Config schema: strict keys with suggestions, registry names only, safe YAML."""

from __future__ import annotations

import pytest

from rpnkit.config import apply_overrides, dump_config, load_config, parse_config, read_yaml
from rpnkit.errors import ConfigurationError
from rpnkit.training import prepare


def test_valid_config_round_trips(base_config):
    cfg = parse_config(base_config)
    assert cfg.train.optimizer.name == "adam"
    assert cfg.train.optimizer.params() == {"lr": 0.02}
    again = parse_config(read_yaml(dump_config(cfg)))
    assert again.to_dict() == cfg.to_dict()
    assert again.to_dict()["data"]["expression"] == base_config["data"]["expression"]


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    [
        ((), "sed", "did you mean 'seed'"),
        (("train",), "epochz", "did you mean 'epochs'"),
        (("data", "split"), "tran", "did you mean 'train'"),
        (("model",), "expansions", "did you mean 'expansion'"),
        (("data",), "n_sample", "did you mean 'n_samples'"),
        (("train", "optimizer"), "weight_decai", "did you mean 'weight_decay'"),
        (("train", "scheduler"), "gama", None),
    ],
)
def test_unknown_keys_name_the_key_and_closest(base_config, path, key, expected):
    node = base_config
    for p in path:
        node = node[p]
    if path == ("train", "scheduler"):
        base_config["train"]["scheduler"] = {"name": "exponential", key: 0.9}
        expected = "did you mean 'gamma'"
    else:
        node[key] = 1
    with pytest.raises(ConfigurationError) as info:
        parse_config(base_config)
    msg = str(info.value)
    assert repr(key) in msg
    assert expected in msg


@pytest.mark.parametrize(
    ("section", "value", "expected"),
    [
        (("data", "name"), "irsi", "did you mean 'iris'"),
        (("train", "optimizer"), {"name": "adamm"}, "did you mean 'adam'"),
        (("train", "scheduler"), "cosin", "did you mean 'cosine'"),
        (("train", "loss"), "cross_entropi", "did you mean 'cross_entropy'"),
        (("model", "name"), "rpnn", "did you mean 'rpn'"),
    ],
)
def test_unknown_registry_names(base_config, section, value, expected):
    base_config[section[0]][section[1]] = value
    with pytest.raises(ConfigurationError, match=expected):
        parse_config(base_config)


def test_component_names_are_checked_when_building(base_config):
    base_config["model"]["expansion"] = {"name": "taylr"}
    cfg = parse_config(base_config)
    with pytest.raises(ConfigurationError, match="did you mean 'taylor'"):
        prepare(cfg)


def test_python_paths_are_not_importable(base_config):
    base_config["model"]["expansion"] = "os.system"
    with pytest.raises(ConfigurationError, match="unknown expansion 'os.system'"):
        prepare(parse_config(base_config))


@pytest.mark.parametrize(
    "text",
    [
        "seed: !!python/object/apply:os.system ['echo hacked']",
        "seed: !!python/name:os.system",
        "data: !!python/object:collections.OrderedDict {}",
    ],
)
def test_yaml_python_tags_are_refused(text):
    with pytest.raises(ConfigurationError, match="YAML tags"):
        read_yaml(text)


def test_malformed_yaml_names_the_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 1\ndata: [1, 2\n")
    with pytest.raises(ConfigurationError, match="invalid YAML at line"):
        load_config(p)


def test_overrides(base_config, tmp_path):
    raw = apply_overrides(base_config, ["train.epochs=7", "model.dims=[2, 3, 1]",
                                        "train.optimizer.lr=0.5", "train.scheduler.name=cosine",
                                        "train.grad_clip=null"])
    cfg = parse_config(raw)
    assert cfg.train.epochs == 7
    assert cfg.model.dims == [2, 3, 1]
    assert cfg.train.optimizer.params()["lr"] == 0.5
    assert cfg.train.scheduler.name == "cosine"
    with pytest.raises(ConfigurationError, match="key.path=value"):
        apply_overrides(base_config, ["train.epochs"])
    with pytest.raises(ConfigurationError, match="YAML tags"):
        apply_overrides(base_config, ["seed=!!python/name:os.system"])


def test_value_errors_are_located(base_config):
    base_config["train"]["epochs"] = -1
    with pytest.raises(ConfigurationError, match=r"train\.epochs"):
        parse_config(base_config)
    base_config["train"]["epochs"] = 1
    base_config["data"]["split"] = {"train": 0.5, "val": 0.1, "test": 0.1}
    with pytest.raises(ConfigurationError, match="sum to 1"):
        parse_config(base_config)


def test_dims_mismatch_is_reported(base_config):
    base_config["model"]["dims"] = [3, 2, 1]
    with pytest.raises(ConfigurationError, match=r"dims\[0\] = 3 but the data has 2 input features"):
        prepare(parse_config(base_config))
    base_config["model"]["dims"] = [2, 2, 3]
    with pytest.raises(ConfigurationError, match=r"dims\[-1\] = 3 .* need 1 outputs"):
        prepare(parse_config(base_config))


def test_other_registered_models(base_config):
    base_config["model"] = {"name": "torch_mlp", "dims": [2, 8, 1], "activation": "tanh"}
    prep = prepare(parse_config(base_config))
    assert sum(p.numel() for p in prep.model.parameters()) == 2 * 8 + 8 + 8 + 1
    base_config["model"] = {"name": "rpn", "dims": [2, 1], "activaton": "relu"}
    with pytest.raises(ConfigurationError, match="did you mean 'activation'"):
        parse_config(base_config)


def test_loss_must_fit_task(base_config):
    base_config["train"]["loss"] = "cross_entropy"
    with pytest.raises(ConfigurationError, match="is for classification"):
        prepare(parse_config(base_config))


def test_relative_data_paths_are_resolved(base_config, tmp_path, monkeypatch):
    (tmp_path / "d.csv").write_text("x,y\n1,2\n2,3\n3,4\n4,5\n5,6\n")
    base_config["data"] = {"name": "csv", "path": "d.csv", "target": "y"}
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "c.yaml"
    import yaml

    p.write_text(yaml.safe_dump(base_config))
    cfg = load_config(p)
    assert cfg.data.params()["path"] == str(tmp_path / "d.csv")


def test_sample_count_is_bounded(base_config):
    base_config["data"]["n_samples"] = 10**12
    with pytest.raises(ConfigurationError, match="n_samples"):
        prepare(parse_config(base_config))


def test_model_keys_come_from_the_head_spec(base_config):
    from rpnkit.config import _RPN_FIELDS, ModelConfig
    from rpnkit.spec import HEAD_FIELDS, LAYER_FIELDS, head_defaults

    assert set(_RPN_FIELDS) == {*HEAD_FIELDS, *LAYER_FIELDS, "activation", "layers"}
    assert set(_RPN_FIELDS) <= set(ModelConfig.model_fields)
    fields = ModelConfig.model_fields
    for key, default in head_defaults().items():
        if default is not None:  # the *_params default to {} (same meaning as None)
            assert fields[key].get_default(call_default_factory=True) == default, key
    # new head / layer options (seed, output) are accepted and passed on when set
    base_config["model"].update(seed=7, output="relu", channels=2)
    mc = parse_config(base_config).model
    kw = mc.build_kwargs()
    assert kw["seed"] == 7
    assert kw["output"] == "relu"
    assert kw["channels"] == 2
    assert "head_output" not in kw
    assert "heads" not in kw
    again = parse_config(read_yaml(dump_config(parse_config(base_config)))).model
    assert again.build_kwargs() == kw
    base_config["model"]["sed"] = 1
    with pytest.raises(ConfigurationError, match="did you mean 'seed'"):
        parse_config(base_config)
