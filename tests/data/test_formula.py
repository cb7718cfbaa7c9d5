"""The safe formula parser: correct values, and code is rejected."""

from __future__ import annotations

import numpy as np
import pytest

from rpnkit.data import parse_formula
from rpnkit.errors import ConfigurationError


def test_evaluates_like_numpy():
    f = parse_formula("exp(sin(3*x0)) * x1 + x1**2 - -x0/2")
    x = np.random.default_rng(0).random((50, 2))
    want = np.exp(np.sin(3 * x[:, 0])) * x[:, 1] + x[:, 1] ** 2 + x[:, 0] / 2
    np.testing.assert_allclose(f(x), want, rtol=1e-12)
    assert f.variables == ["x0", "x1"]


def test_named_variables_constants_and_functions():
    f = parse_formula("arcsinh(a) + ln(b) * pi - e + sqrt(abs(a)) + arctan2(a, b)", variables=["a", "b"])
    x = np.array([[0.3, 2.0]])
    want = np.arcsinh(0.3) + np.log(2.0) * np.pi - np.e + np.sqrt(0.3) + np.arctan2(0.3, 2.0)
    np.testing.assert_allclose(f(x), [want])


def test_variable_count_from_ranges_and_constant_formula():
    f = parse_formula("x0", n_vars=3)
    assert f.n_vars == 3
    g = parse_formula("2.5", n_vars=1)
    np.testing.assert_allclose(g(np.zeros((4, 1))), 2.5)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__('os').system('echo hi')", "only calls of named math functions"),
        ("x0.__class__", "attribute"),
        ("(lambda: 1)()", "only calls of named math functions"),
        ("lambda: 1", "lambda"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("eval('1')", "unknown function 'eval'"),
        ("x0[0]", "subscripts"),
        ("'text'", "only numbers"),
        ("[x0 for x0 in x1]", "ListComp"),
        ("x0 if x1 else 1", "IfExp"),
        ("x0 < 1", "Compare"),
        ("sin(x=1)", "keyword"),
        ("sin(*x0)", "starred"),
        ("sin(x0, x1)", "exactly one argument"),
        ("x0 // 2", "operator FloorDiv"),
        ("x0 @ x1", "operator MatMult"),
        ("y + 1", "unknown name 'y'"),
        ("import os", "not valid syntax"),
        ("x0; x1", "not valid syntax"),
        ("True + x0", "only numbers"),
        ("1j * x0", "only numbers"),
        ("", "empty"),
    ],
)
def test_rejects_code(text, fragment):
    with pytest.raises(ConfigurationError) as info:
        parse_formula(text, n_vars=2)
    assert fragment in str(info.value)


def test_suggests_close_function_names():
    with pytest.raises(ConfigurationError, match=r"did you mean 'sin'"):
        parse_formula("sinn(x0)")


def test_limits_size_and_depth():
    with pytest.raises(ConfigurationError, match="longer than"):
        parse_formula("x0+" * 2000 + "x0")
    with pytest.raises(ConfigurationError, match="nested deeper"):
        parse_formula("sin(" * 100 + "x0" + ")" * 100)


def test_huge_powers_do_not_hang():
    f = parse_formula("9**9**9 + x0")
    assert np.isinf(f(np.zeros((2, 1)))).all()


def test_never_calls_eval(monkeypatch):
    import builtins

    def boom(*a, **k):
        raise AssertionError("eval/exec must not be used")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    assert parse_formula("sin(x0) + 1")(np.zeros((1, 1)))[0] == 1.0
