"""Hostile inputs: YAML alias bombs, deep nesting, duplicate keys, device files, huge files,
oversized ``--set`` values and formula bombs all end as one ``rpnkit: error:`` line with
exit code 2, quickly and within a bounded amount of memory; random inputs never raise
anything but ConfigurationError."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import suppress
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpnkit.cli import main
from rpnkit.config import (
    MAX_CONFIG_BYTES,
    MAX_SET_LENGTH,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    RunConfig,
    apply_overrides,
    load_config,
    parse_config,
    read_yaml,
)
from rpnkit.data.formula import MAX_EXPONENT, MAX_LENGTH, MAX_NODES, MAX_VARIABLES, parse_formula
from rpnkit.errors import ConfigurationError, short

SECONDS = 5.0  # every refusal must come well within this
AS_LIMIT = 2 * 2**30  # address-space cap of the subprocess test (torch needs some)

BASE = """seed: 2
device: cpu
data:
  name: function
  expression: "cos(2*x0) + x0*x1"
  ranges: [[-1, 1], [-1, 1]]
  n_samples: 200
  split: {train: 0.5, val: 0.1, test: 0.4}
model:
  dims: [2, 2, 1]
train: {epochs: 1, optimizer: {name: adam, lr: 0.03}, loss: mse}
"""


def bomb_flow(levels: int = 9, width: int = 9) -> str:
    """A one-line "billion laughs": ``width ** levels`` values from a few hundred bytes."""
    parts = ["&a0 [" + ",".join(["1"] * width) + "]"]
    for i in range(1, levels):
        parts.append(f"&a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]")
    return "[" + ", ".join(parts) + f", *a{levels - 1}]"


def bomb_block(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ",".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _cases(tmp: Path) -> dict[str, list[str]]:
    """name -> CLI argv; every one must exit 2 with one error line."""

    def w(name: str, text: str | bytes) -> str:
        p = tmp / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(p)

    base = w("base.yaml", BASE)

    def train(cfg: str, *extra: str) -> list[str]:
        return ["train", cfg, "--out", str(tmp / "out"), "--quiet", *extra]

    def formula(text: str) -> list[str]:
        return train(base, "--set", "data.expression=" + json.dumps(text))

    cases = {
        "bomb_body_unknown_key": train(w("b1.yaml", bomb_block() + BASE)),
        "bomb_body_expansion": train(w("b2.yaml", BASE.replace(
            "  dims: [2, 2, 1]", "  dims: [2, 2, 1]\n  expansion: " + bomb_flow()))),
        "bomb_body_lr": train(w("b3.yaml", BASE.replace("lr: 0.03", "lr: " + bomb_flow()))),
        "recursive_alias": train(w("b4.yaml", BASE.replace("lr: 0.03", "lr: &r [*r]"))),
        "deep_flow": train(w("d1.yaml", BASE + "title: " + "[" * 900 + "]" * 900 + "\n")),
        "deep_block": train(w("d2.yaml", BASE + "title:\n  " + "- " * 5000 + "1\n")),
        "duplicate_top_key": train(w("k1.yaml", BASE + "seed: 3\n")),
        "duplicate_nested_key": train(w("k2.yaml", BASE.replace("epochs: 1,", "epochs: 1, epochs: 2,"))),
        "huge_file": train(w("h1.yaml", BASE + "title: [" + "1," * (2 * MAX_CONFIG_BYTES) + "1]\n")),
        "many_values": train(w("h2.yaml", BASE + "title: [" + "1," * (MAX_YAML_NODES + 10) + "1]\n")),
        "int_5000_digits": train(w("i1.yaml", BASE.replace("seed: 2", "seed: " + "1" * 5000))),
        "invalid_date": train(w("i2.yaml", BASE + "title: 2001-13-45\n")),
        "not_utf8": train(w("i3.yaml", BASE.encode() + b"title: \xff\xfe\n")),
        "directory": train(str(tmp)),
        "set_bomb_lr": train(base, "--set", "train.optimizer.lr=" + bomb_flow()),
        "set_bomb_expansion": train(base, "--set", "model.expansion=" + bomb_flow()),
        "set_huge_value": train(base, "--set", "title=" + "a" * (MAX_SET_LENGTH + 1)),
        "set_deep_value": train(base, "--set", "title=" + "[" * 900 + "]" * 900),
        "set_deep_key_path": train(base, "--set", "data." + ".".join(["a"] * 20000) + "=1"),
        "set_unicode_digit_index": train(base, "--set", "data.ranges.\u00b2=1"),
        "set_5000_digit_index": train(base, "--set", "data.ranges." + "1" * 5000 + "=1"),
        "set_duplicate_key": train(base, "--set", "train.optimizer={name: adam, lr: 0.1, lr: 0.2}"),
        "set_mixed_key_types": train(base, "--set", "train.optimizer={1: 2, b: 3}"),
        "set_hex_int": train(base, "--set", "data.n_samples=0x" + "f" * 5000),
        "formula_long": formula("+".join(["x0"] * 1700)),
        "formula_x99999999": formula("x99999999"),
        "formula_400_digits": formula("x0 + " + "9" * 400),
        "formula_1e400": formula("x0 * 1e400"),
        "formula_big_exponent": formula("x0**99999999"),
        "formula_deep_unary": formula("-" * 1500 + "x0"),
        "formula_nul": formula("x0\x00"),
    }
    if sys.platform.startswith("linux"):
        cases["dev_zero"] = train("/dev/zero")
    if hasattr(os, "mkfifo"):
        fifo = tmp / "fifo.yaml"
        os.mkfifo(fifo)
        cases["fifo"] = train(str(fifo))
    return cases


CASE_NAMES = sorted([  # kept in sync with _cases by test_case_list_is_complete
    "bomb_body_unknown_key", "bomb_body_expansion", "bomb_body_lr", "recursive_alias",
    "deep_flow", "deep_block", "duplicate_top_key", "duplicate_nested_key", "huge_file",
    "many_values", "int_5000_digits", "invalid_date", "not_utf8", "directory", "set_bomb_lr",
    "set_bomb_expansion", "set_huge_value", "set_deep_value", "set_deep_key_path",
    "set_unicode_digit_index", "set_5000_digit_index", "set_duplicate_key",
    "set_mixed_key_types", "set_hex_int", "formula_long", "formula_x99999999", "formula_400_digits",
    "formula_1e400", "formula_big_exponent", "formula_deep_unary", "formula_nul", "dev_zero",
    "fifo",
])


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines[:5]
    assert lines[0].startswith("rpnkit: error:"), lines[0][:300]
    assert len(lines[0]) < 400, lines[0][:400]
    return lines[0]


def test_case_list_is_complete(tmp_path):
    names = set(_cases(tmp_path))
    assert names <= set(CASE_NAMES)
    assert set(CASE_NAMES) - names <= {"dev_zero", "fifo"}


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cli_refuses_hostile_input(name, tmp_path, capsys):
    cases = _cases(tmp_path)
    if name not in cases:
        pytest.skip(f"{name} needs a platform feature (Linux /dev/zero, os.mkfifo)")
    t0 = time.perf_counter()
    rc = main(cases[name])
    elapsed = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert rc == 2, err[-500:]
    line = _one_error_line(err)
    assert elapsed < SECONDS, (name, elapsed)
    assert not (tmp_path / "out").exists()
    expected = {
        "bomb": f"more than {MAX_YAML_NODES:,} values",
        "set_bomb": f"more than {MAX_YAML_NODES:,} values",
        "many_values": f"more than {MAX_YAML_NODES:,} values",
        "deep_flow": f"deeper than {MAX_YAML_DEPTH} levels",
        "deep_block": f"deeper than {MAX_YAML_DEPTH} levels",
        "set_deep": f"deeper than {MAX_YAML_DEPTH} levels",
        "duplicate": "duplicate key",
        "set_hex_int": "integers are limited to",
        "int_5000": "integers are limited to",
        "set_duplicate": "duplicate key 'lr'",
        "huge_file": f"larger than {MAX_CONFIG_BYTES:,} bytes",
        "set_huge": f"longer than {MAX_SET_LENGTH:,} characters",
        "dev_zero": "not a regular file",
        "fifo": "not a regular file",
        "recursive": "recursive",
        "formula_x99999999": "x99999999",
        "formula_big_exponent": "exponent",
        "formula_400": "out of range",
        "formula_1e400": "out of range",
        "formula_long": f"longer than {MAX_LENGTH:,} characters",
        "formula_deep": f"more than {MAX_NODES:,}",
    }
    for prefix, text in expected.items():
        if name.startswith(prefix):
            assert text in line, line


def test_duplicate_key_message_names_key_and_lines(tmp_path, capsys):
    cases = _cases(tmp_path)
    assert main(cases["duplicate_top_key"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "k1.yaml" in line
    assert "'seed'" in line
    assert "line 12" in line
    assert "first at line 1" in line


_CHILD = r"""
import io, json, sys, time
from contextlib import redirect_stderr
import rpnkit.cli, rpnkit.config, rpnkit.training
from rpnkit.cli import main
cases = json.loads(sys.stdin.read())
results = {}
for name, argv in cases.items():
    err = io.StringIO()
    t0 = time.perf_counter()
    with redirect_stderr(err):
        try:
            rc = main(argv)
        except BaseException as exc:  # noqa: BLE001 - reported, not raised
            rc = f"uncaught {type(exc).__name__}"
    results[name] = {"rc": rc, "seconds": time.perf_counter() - t0, "stderr": err.getvalue()[-2000:]}
print(json.dumps(results))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS semantics are Linux's")
def test_cli_memory_bounded_subprocess(tmp_path):
    """All hostile cases and then a normal config, in one process limited to 2 GiB of
    address space: bombs are refused (no MemoryError, no kill) and the normal run succeeds."""
    import resource

    cases = _cases(tmp_path)
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    cases["normal"] = ["train", str(good), "--out", str(tmp_path / "normal_run"), "--quiet"]

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RPNKIT_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(cases), capture_output=True,
                          text=True, timeout=300, preexec_fn=limit, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    normal = results.pop("normal")
    assert normal["rc"] == 0, normal["stderr"]
    assert (tmp_path / "normal_run" / "metrics.json").is_file()
    for name, res in results.items():
        assert res["rc"] == 2, (name, res)
        _one_error_line(res["stderr"])
        assert res["seconds"] < SECONDS, (name, res["seconds"])


# ----------------------------------------------------------------------------- YAML limits
def _nested(depth: int) -> str:
    return "a: " + "[" * (depth - 1) + "]" * (depth - 1)


def test_depth_limit_is_exact():
    read_yaml(_nested(MAX_YAML_DEPTH))
    with pytest.raises(ConfigurationError, match=f"nested deeper than {MAX_YAML_DEPTH} levels"):
        read_yaml(_nested(MAX_YAML_DEPTH + 1), "c.yaml")


def test_node_limit_counts_alias_uses():
    n = MAX_YAML_NODES // 4
    text = f"a: &x [{','.join(['1'] * n)}]\nb: [*x, *x]\n"  # about 3 * n values
    data = read_yaml(text)
    assert data["b"][0] is data["b"][1] is data["a"]  # aliases stay shared objects
    with pytest.raises(ConfigurationError, match=f"more than {MAX_YAML_NODES:,} values"):
        read_yaml(text.replace("[*x, *x]", "[*x, *x, *x, *x]"), "c.yaml")


def test_alias_bomb_refused_fast_and_names_source():
    t0 = time.perf_counter()
    with pytest.raises(ConfigurationError) as info:
        read_yaml("x: " + bomb_flow(levels=30), "bomb.yaml")
    assert time.perf_counter() - t0 < 5.0  # bound against minutes-long expansion, not a speed target
    assert str(info.value).startswith("bomb.yaml: ")


def test_merge_keys_and_anchors_still_work():
    text = "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\nlist: &l [1, 2]\nagain: *l\n"
    data = read_yaml(text)
    assert data["other"] == {"x": 3, "y": 2}
    assert data["again"] == [1, 2]


@pytest.mark.parametrize(("text", "where"), [
    ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' at line 3 (first at line 1)"),
    ("t:\n  x: 1\n  y: {z: 1, z: 2}\n", "duplicate key 'z' at line 3"),
    ("t: {1: a, 1.0: b}\n", "duplicate key 1.0"),
])
def test_duplicate_keys_refused(text, where):
    with pytest.raises(ConfigurationError, match="c.yaml: ") as info:
        read_yaml(text, "c.yaml")
    assert where in str(info.value)


def test_pure_python_loader_has_the_same_limits(monkeypatch):
    """Without libyaml (no ``yaml.CSafeLoader``) the pure-Python SafeLoader gets the same caps."""
    import rpnkit.config as config

    monkeypatch.setattr(config, "_Loader", config._make_loader(yaml.SafeLoader))
    assert read_yaml(BASE)["train"]["epochs"] == 1
    for text, match in [
        ("x: " + bomb_flow(), "more than"),
        ("x:\n  " + "- " * 5000 + "1", "deeper than"),  # the pure-Python composer recurses
        ("a: 1\na: 2\n", "duplicate key 'a'"),
        ("a: &r [*r]", "recursive"),
        ("a: !!int ", "invalid YAML value"),
        ("a: 0x" + "f" * 300, "integers are limited"),
    ]:
        with pytest.raises(ConfigurationError, match=match):
            read_yaml(text, "c.yaml")


def test_yaml_text_size_limit():
    with pytest.raises(ConfigurationError, match="longer than"):
        read_yaml("# " + "x" * MAX_CONFIG_BYTES)


def test_tags_still_refused():
    with pytest.raises(ConfigurationError, match="YAML tags"):
        read_yaml("seed: !!python/object/apply:os.system ['touch HACKED']\n")


def test_set_value_limits():
    raw = yaml.safe_load(BASE)
    assert apply_overrides(raw, ["train.optimizer.lr=0.5"])["train"]["optimizer"]["lr"] == 0.5
    assert apply_overrides(raw, ["data.ranges.1=[0, 2]"])["data"]["ranges"][1] == [0, 2]
    for bad, match in [
        ("title=" + "a" * MAX_SET_LENGTH, "longer than"),
        ("train.optimizer.lr=" + bomb_flow(), "more than"),
        ("title=" + "[" * 60 + "]" * 60, "deeper than"),
        ("a." * 60 + "b=1", "key path is deeper"),
        ("data.ranges.\u0663=1", "not an index"),
        ("data.ranges.99999999999999999999999=1", "not an index"),
        ("title={a: 1, a: 2}", "duplicate key 'a'"),
    ]:
        with pytest.raises(ConfigurationError, match=match):
            apply_overrides(raw, [bad])


def test_normal_config_loads(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(BASE)
    cfg = load_config(p, ["train.epochs=3"])
    assert isinstance(cfg, RunConfig)
    assert cfg.train.epochs == 3


# ----------------------------------------------------------------------------- short()
def test_short_is_bounded():
    bomb = [1] * 9
    for _ in range(30):  # 9**31 elements when walked in full
        bomb = [bomb] * 9
    loop: list = []
    loop.append(loop)
    d: dict = {}
    d["self"] = d
    t0 = time.perf_counter()
    for value in (bomb, loop, d, "x" * 10**7, 10**5000, -(10**5000), b"y" * 10**6,
                  {i: i for i in range(10**5)}, set(range(10**5)), object()):
        for limit in (10, 80, 200):
            text = short(value, limit)
            assert len(text) <= limit, (limit, text)
    assert time.perf_counter() - t0 < 5.0
    assert short([1, "a", None]) == "[1, 'a', None]"
    assert short("x" * 100, 20).endswith("...")
    assert "digits" in short(10**5000)


# ----------------------------------------------------------------------------- formula limits
@pytest.mark.parametrize(("text", "kwargs", "match"), [
    ("x99999999", {}, "x99999999"),
    ("x99999999", {"n_vars": 2}, "the formula has 2 variables"),
    (f"x{MAX_VARIABLES}", {}, f"{MAX_VARIABLES:,} variables"),
    ("x0 + " + "9" * 400, {}, "out of range"),
    ("x0 * 1e400", {}, "out of range"),
    ("x0**99999999", {}, "exponent 99999999 is too large"),
    (f"x0**-{MAX_EXPONENT + 1}", {}, "too large"),
    ("-" * 1500 + "x0", {}, f"more than {MAX_NODES:,}"),
    ("+".join(["x0"] * 1000), {}, f"longer than {MAX_LENGTH:,} characters"),
    ("x0\x00", {}, "NUL"),
    ("sin(" * 70 + "x0" + ")" * 70, {}, "nested deeper"),
])
def test_formula_limits(text, kwargs, match):
    t0 = time.perf_counter()
    with pytest.raises(ConfigurationError, match=match) as info:
        parse_formula(text, **kwargs)
    assert time.perf_counter() - t0 < 5.0
    assert len(str(info.value)) < 400


def test_formula_limits_keep_normal_formulas():
    f = parse_formula("x0**0.5 + x1**-3 + 1e300*0 + 2**10 * x2 + atan2(x0, x1)")
    assert f.n_vars == 3
    assert parse_formula(f"x0**{MAX_EXPONENT}").n_vars == 1
    assert parse_formula("x5", n_vars=6).n_vars == 6
    assert parse_formula("x9999").n_vars == MAX_VARIABLES
    y = f(np.full((4, 3), 0.5))
    assert y.shape == (4,)
    assert np.isfinite(y).all()


# ----------------------------------------------------------------------------- properties
# RPNKIT_HYPOTHESIS_EXAMPLES=5000 for a longer search
_FAST = settings(max_examples=int(os.environ.get("RPNKIT_HYPOTHESIS_EXAMPLES", "150")),
                 deadline=timedelta(seconds=2),
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_YAML_TOKENS = [
    "[", "]", "{", "}", ":", ": ", "- ", "\n", "  ", "&a ", "*a", "&b ", "*b", "<<: ", ",", "? ",
    "|", ">", "---\n", "...\n", "%YAML 1.1\n", "\t", "#", "'", '"', "!!python/object:os.system ",
    "!!binary ", "!!int ", "!!timestamp ", "!x ", "seed", "data", "model", "train", "name",
    "function", "expression", "x0", "1", "1e400", "9" * 50, "2001-13-45", "0x1F", "null", "true",
    "~", "\x00", "\ufeff", "é", "\\", "=",
]
yamlish = st.one_of(
    st.lists(st.sampled_from(_YAML_TOKENS), max_size=40).map("".join),
    st.text(max_size=200),
)

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                     st.text(max_size=12), st.sampled_from(["adam", "function", "rpn", "mse", "x0"]))
nested = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(
                                ["name", "lr", "dims", "expression", "ranges", "epochs", "split"])),
                                inner, max_size=4)),
    max_leaves=25,
)

_FORMULA_TOKENS = [
    "x0", "x1", "x2", "x99999999", "x01", "y", "pi", "e", "(", ")", "+", "-", "*", "/", "**",
    "sin", "exp", "log", "atan2", "min", ",", " ", "1", "2.5", "1e400", "9" * 400, "0x10", "1j",
    ".", "[", "]", "lambda", ":", "__import__", "'a'", "not ", "if", "==", "\x00", "\n",
]
formulaish = st.one_of(
    st.lists(st.sampled_from(_FORMULA_TOKENS), max_size=30).map("".join),
    st.text(max_size=60),
)


@_FAST
@given(yamlish)
def test_property_read_yaml_never_crashes(text):
    with suppress(ConfigurationError):
        read_yaml(text, "p.yaml")


@_FAST
@given(yamlish)
def test_property_load_config_never_crashes(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "prop.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with suppress(ConfigurationError):
        load_config(path)


@_FAST
@given(data=nested, model=nested, train=nested, expression=formulaish,
       mode=st.sampled_from(["raw", "function", "yaml"]))
def test_property_parse_config_never_crashes(data, model, train, expression, mode):
    if mode == "raw":
        cfg = {"data": data, "model": model, "train": train}
    else:
        extra = data if isinstance(data, dict) else {}
        cfg = {"data": {**extra, "name": "function", "expression": expression},
               "model": {"dims": [2, 1], **(model if isinstance(model, dict) else {})},
               "train": train if isinstance(train, dict) else {"epochs": 1}}
    try:
        if mode == "yaml":
            parse_config(read_yaml(yaml.safe_dump(cfg)))
        else:
            parse_config(cfg)
    except ConfigurationError:
        pass


@_FAST
@given(st.lists(st.tuples(st.sampled_from(["title", "seed", "train.optimizer.lr", "data.ranges.0",
                                           "model.dims.5", "a.b.c", "", "data.ranges.\u00b2"]),
                          yamlish), max_size=3))
def test_property_set_never_crashes(items):
    raw = yaml.safe_load(BASE)
    with suppress(ConfigurationError):
        apply_overrides(raw, [f"{k}={v}" for k, v in items])


@_FAST
@given(formulaish, st.sampled_from([None, 0, 1, 3]))
def test_property_parse_formula_never_crashes(text, n_vars):
    try:
        f = parse_formula(text, n_vars=n_vars)
    except ConfigurationError:
        return
    y = f(np.full((3, f.n_vars), 0.25))
    assert y.shape == (3,)


@_FAST
@given(nested, st.integers(8, 120))
def test_property_short_is_bounded(value, limit):
    assert len(short(value, limit)) <= limit


# ----------------------------------------------------------------------------- odd --out / --set
@pytest.mark.parametrize(("out", "expected"), [
    ("x\x00y", "contains a NUL character"),
    ("a" * 5000, "cannot be used: File name too long"),
])
def test_train_out_with_nul_or_a_huge_name_is_one_bounded_line(tmp_path, capsys, out, expected):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(BASE)
    rc = main(["train", str(cfg), "--out", str(tmp_path / out)])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert expected in line, line
    assert len(line) < 400


def test_set_value_with_a_lone_surrogate_is_refused(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(BASE)
    rc = main(["train", str(cfg), "--out", str(tmp_path / "out"), "--set",
               "data.expression=x0\udcff"])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2
    assert "--set data.expression: the text holds '\\udcff' at position 2" in line
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigurationError, match="lone surrogate"):
        read_yaml("a: \udcff")
