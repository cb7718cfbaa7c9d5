"""rpnkit convert: reference-toolkit (tinyBIG) YAML configs -> rpnkit configs.

The fixtures in tests/fixtures/reference/ are the reference toolkit's own example configs
(MIT, see the README there); the parameter counts are the ones the reference prints for them.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from _cli_checks import one_line, refused
from rpnkit.cli import main
from rpnkit.config import parse_config, read_config_text, read_yaml
from rpnkit.convert import convert, convert_file
from rpnkit.errors import ConfigurationError
from rpnkit.models import build_model

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "reference"
EXAMPLES = ROOT / "examples" / "reference"

#: fixture stem -> parameter count the reference prints for it ("parameter num: ...")
PRINTED = {
    "elementary_configs": 47,
    "composite_configs": 2441,
    "feynman_configs": 313,
    "mnist_configs": 39_696_000,
    "mnist_configs_v0.1.1": 39_696_000,
    "mnist_dual_lphm_configs": 9_330,
    "cifar10_configs": 1_706_496,
    "kan_failure_configs": 31_099_968,
    "imdb_configs": 54_572,
    "agnews_configs": 131_593,
    "agnews_configs_v0.1.1": 131_081,
    "sst2_configs_a3c61ad": 53_237,
    "iris_configs": 8,
    "diabetes_configs": 44,
    "banknote_configs": 14,
}
#: sst2_configs.yaml at the reference's HEAD differs from the config its notebook printed
#: (53,237, kept as sst2_configs_a3c61ad.yaml); its count by the reference's formulas:
#: lorr r=1 (10325+128) + (128+32), identity 32*2
COMPUTED = {"sst2_configs": 10_453 + 160 + 64}


def _load(stem: str):
    return read_yaml(read_config_text(FIXTURES / f"{stem}.yaml"), source=stem)


def _count(config: dict) -> int:
    cfg = parse_config(config)
    with torch.device("meta"):  # sizes only: 39.7M parameters cost no memory
        model = build_model(cfg.model.name, **cfg.model.build_kwargs())
    return sum(p.numel() for p in model.parameters())


def test_every_fixture_has_a_count():
    stems = {p.stem for p in FIXTURES.glob("*.yaml")}
    assert stems == set(PRINTED) | set(COMPUTED)


@pytest.mark.parametrize("stem", sorted({**PRINTED, **COMPUTED}))
def test_parameter_count_equals_the_reference(stem):
    expected = {**PRINTED, **COMPUTED}[stem]
    assert _count(convert(_load(stem), source=stem).config) == expected


@pytest.mark.parametrize("stem", sorted({**PRINTED, **COMPUTED}))
def test_examples_are_the_conversions(stem, tmp_path):
    out = tmp_path / "out.yaml"
    convert_file(FIXTURES / f"{stem}.yaml", out)
    example = EXAMPLES / f"{stem.replace('_configs', '')}.yaml"
    assert out.read_text() == example.read_text()
    assert _count(yaml.safe_load(example.read_text())) == {**PRINTED, **COMPUTED}[stem]


def test_both_layouts_map_to_the_same_kinds():
    old = convert(_load("agnews_configs_v0.1.1")).config  # *_class keys per component
    new = convert(_load("agnews_configs")).config  # function_class everywhere
    assert old["model"]["dims"] == new["model"]["dims"] == [25985, 128, 4]
    assert old["model"]["reconciliation"] == new["model"]["reconciliation"] == {"name": "lorr", "r": 5}
    # 0.1.x: identity reconciliation with a bias; 0.2.x: a linear remainder with a bias
    assert old["model"]["layers"][1] == {"reconciliation": "identity", "bias": True}
    assert new["model"]["layers"][1] == {"reconciliation": "identity",
                                         "remainder": {"name": "linear", "bias": True}}


def test_mapped_values():
    cfg = convert(_load("composite_configs")).config
    assert cfg["model"]["dims"] == [2, 2, 2, 1]  # depth 3, depth_alloc [2, 1]
    assert cfg["model"]["expansion"] == {"name": "nested", "expansions": [
        {"name": "bspline", "range": [-1, 1], "t": 10, "d": 4}, {"name": "taylor", "d": 2}]}
    assert cfg["data"]["equation"] == "C.3"
    assert cfg["train"]["optimizer"] == {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001}
    assert cfg["train"]["scheduler"] == {"name": "exponential", "gamma": 0.999}
    feyn = convert(_load("feynman_configs")).config
    assert feyn["data"]["equation"] == "I.9.18"  # index 4 of the AI Feynman list
    assert feyn["model"]["remainder"] == {"name": "linear", "activation": "silu"}
    iris = convert(_load("iris_configs")).config
    assert iris["train"]["scheduler"] == "none"  # the reference schedules nothing unless told
    cifar = convert(_load("cifar10_configs")).config
    assert cifar["model"]["output"] == ["gelu", {"name": "batch_norm", "affine": False}]
    assert cifar["model"]["layers"][-1] == {"output": None}
    sst2 = convert(_load("sst2_configs")).config
    assert sst2["model"]["output"] == [{"name": "dropout", "p": 0.4}]


def test_postprocess_hook_at_the_wrong_level():
    raw = _load("mnist_configs_v0.1.1")  # layer 0's LayerNorm sits beside the class key
    meant = convert(copy.deepcopy(raw))
    quirks = convert(copy.deepcopy(raw), reference_quirks=True)
    ln = [{"name": "layer_norm", "elementwise_affine": False}]
    assert meant.config["model"]["expansion"] == {"name": "taylor", "d": 2, "postprocess": ln}
    assert "layers" not in meant.config["model"]
    assert any("applied as the transformation's postprocess" in n for n in meant.notes)
    assert quirks.config["model"]["expansion"] == {"name": "taylor", "d": 2}
    assert quirks.config["model"]["layers"][1]["expansion"] == {"name": "taylor", "d": 2,
                                                                "postprocess": ln}
    ignored = [n for n in quirks.notes if "ignored" in n]
    assert len(ignored) == 1
    assert "layer_configs[0]" in ignored[0]
    assert "data_transformation_configs.postprocess_function_configs" in ignored[0]
    assert _count(meant.config) == _count(quirks.config) == 39_696_000


def test_key_the_reference_ignores_is_refused_unless_quirks():
    raw = _load("elementary_configs")
    head = raw["configurations"]["model_configs"]["model_parameters"]["layer_configs"][0][
        "layer_parameters"]["head_configs"][0]["head_parameters"]
    head["remainder_configs"]["function_parameters"]["colour"] = "blue"
    with pytest.raises(ConfigurationError, match=r"remainder_configs\.parameters\.colour: the "
                                                 r"reference ignores this key"):
        convert(copy.deepcopy(raw), source="e.yaml")
    done = convert(copy.deepcopy(raw), reference_quirks=True)
    assert any("colour ignored" in n for n in done.notes)


def _with_class(stem: str, path: str):
    raw = _load(stem)
    head = raw["configurations"]["model_configs"]["model_parameters"]["layer_configs"][0][
        "layer_parameters"]["head_configs"][0]["head_parameters"]
    head["data_transformation_configs"]["function_class"] = path
    return raw


def test_foreign_class_path_refused_by_the_cli(tmp_path, capsys):
    assert "this" not in sys.modules  # importing `this` would print; convert must not
    src = tmp_path / "ref.yaml"
    src.write_text(yaml.safe_dump(_with_class("elementary_configs", "this.Zen")))
    out = tmp_path / "out.yaml"
    err = refused(capsys, ["convert", str(src), "--out", str(out)], str(src), "this.Zen",
                  "head_configs[0].head_parameters.data_transformation_configs.function_class")
    assert one_line(err)
    assert "this" not in sys.modules
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ref.yaml"]


@pytest.mark.parametrize("path", ["os.system", "tinybig.expansion.evil_expansion",
                                  "rpnkit_convert_probe_module.Thing", "torch.nn.Linear"])
def test_foreign_class_paths_never_imported(path):
    before = set(sys.modules)
    with pytest.raises(ConfigurationError, match="unknown expansion class path") as info:
        convert(_with_class("elementary_configs", path), source="ref.yaml")
    assert "ref.yaml: configurations.model_configs" in str(info.value)
    assert "\n" not in str(info.value)
    assert set(sys.modules) - before <= {"rpnkit.config"}  # nothing the file names
    assert "rpnkit_convert_probe_module" not in sys.modules


def test_foreign_optimizer_and_data_paths():
    raw = _load("elementary_configs")
    raw["configurations"]["learner_configs"]["learner_parameters"]["optimizer_configs"][
        "optimizer_class"] = "my.Optim"
    with pytest.raises(ConfigurationError, match=r"optimizer_configs\.optimizer_class: unknown "
                                                 r"optimizer class path 'my.Optim'"):
        convert(raw)
    raw = _load("elementary_configs")
    raw["configurations"]["data_configs"]["data_class"] = "tinybig.data.nowhere"
    with pytest.raises(ConfigurationError, match=r"data_configs\.data_class: unknown data"):
        convert(raw)


def test_cli_never_overwrites_the_input(tmp_path, capsys):
    src = tmp_path / "ref.yaml"
    text = (FIXTURES / "elementary_configs.yaml").read_text()
    src.write_text(text)
    refused(capsys, ["convert", str(src), "--out", str(src)], "is the input file")
    assert src.read_text() == text
    assert main(["convert", str(src), "--out", str(tmp_path / "rpn.yaml")]) == 0
    assert _count(yaml.safe_load((tmp_path / "rpn.yaml").read_text())) == 47


@pytest.mark.parametrize("stem", ["elementary", "feynman"])
def test_quick_training_of_converted_configs(stem, tmp_path, capsys):
    """Function fitting data is generated here: the converted configs train (few epochs)."""
    out = tmp_path / "run"
    code = main(["train", str(EXAMPLES / f"{stem}.yaml"), "--out", str(out), "--quiet",
                 "--set", "train.epochs=2", "--set", "data.n_samples=200", "--set", "device=cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["test"]["mse"] == pytest.approx(result["test"]["mse"])  # finite
    assert 0 <= result["test"]["mse"] < 1e3
