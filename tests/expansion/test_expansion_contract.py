"""Contract shared by every registered expansion: shapes, D, gradients, dtypes, modules, errors."""

from __future__ import annotations

from math import comb

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import rpnkit
from rpnkit.errors import ConfigurationError

NAMES = rpnkit.list_components()["expansion"]

SPEC_NAMES = [
    "identity", "reciprocal", "linear", "taylor", "fourier", "trigonometric", "hyperbolic",
    "arc_trigonometric", "arc_hyperbolic", "gaussian_rbf", "inverse_quadratic_rbf", "bspline",
    "chebyshev", "jacobi", "legendre", "hermite", "laguerre", "naive_normal", "naive_laplace",
    "naive_cauchy", "naive_gamma", "naive_exponential", "naive_chi2", "combinatorial",
    "combinatorial_normal", "nested", "extended",
]  # fmt: skip

#: keyword arguments used to build each expansion in the shared tests (small D)
BUILD = {
    "taylor": {"d": 3},
    "fourier": {"N": 2},
    "gaussian_rbf": {"K": 4},
    "inverse_quadratic_rbf": {"K": 4},
    "bspline": {"t": 3, "d": 2},
    "chebyshev": {"d": 3},
    "jacobi": {"d": 3},
    "legendre": {"d": 3},
    "hermite": {"d": 3},
    "laguerre": {"d": 3},
    "combinatorial": {"d": 3},
    "combinatorial_normal": {"d": 3},
    "nested": {"expansions": ["chebyshev", {"name": "taylor", "d": 2}]},
    "extended": {"expansions": ["bspline", "taylor"]},
}


def _build(name: str) -> rpnkit.expansion.Expansion:
    return rpnkit.build_expansion(name, **BUILD.get(name, {}))


def _inputs(dtype=torch.float64, b: int = 5, m: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    mag = torch.rand(b, m, generator=g, dtype=torch.float64) * 0.6 + 0.2  # |x| in [0.2, 0.8]
    sign = torch.where(torch.rand(b, m, generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    return (mag * sign).to(dtype)


#: registered beyond SPEC §2: the reference toolkit's families (issue 24)
REFERENCE_NAMES = [
    "gegenbauer", "bessel", "reverse_bessel", "fibonacci", "lucas", "meyer_wavelet",
    "ricker_wavelet", "shannon_wavelet", "beta_wavelet", "haar_wavelet", "dog_wavelet",
    "cuboid_patch_expansion", "cylinder_patch_expansion", "sphere_patch_expansion",
]  # fmt: skip


def test_every_spec_name_is_registered():
    assert sorted(NAMES) == sorted(SPEC_NAMES + REFERENCE_NAMES)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_shape_matches_calculate_D(name):
    kappa = _build(name)
    for m in (1, 3, 4):
        out = kappa(_inputs(m=m))
        assert out.shape == (5, kappa.calculate_D(m))
        assert isinstance(kappa.calculate_D(m), int)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_gradcheck(name):
    kappa = _build(name)
    x = _inputs().requires_grad_(True)
    assert torch.autograd.gradcheck(kappa, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", SPEC_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_preserved(name, dtype):
    kappa = _build(name)  # never .double()'d
    x = _inputs(dtype)
    out = kappa(x)
    assert out.dtype == dtype
    assert out.device == x.device
    assert torch.isfinite(out).all()
    # float32 output agrees with the float64 computation to float32 rounding
    if dtype == torch.float32:
        ref = kappa(x.double())
        torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_integer_input_is_promoted(name):
    kappa = _build(name)
    out = kappa(torch.ones(2, 3, dtype=torch.int64))
    assert out.dtype == torch.get_default_dtype()


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_no_learnable_parameters_and_batch_independence(name):
    kappa = _build(name)
    assert list(kappa.parameters()) == []
    x = _inputs(b=6)
    full = kappa(x)
    rows = torch.cat([kappa(x[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(full, rows, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_input_validation(name):
    kappa = _build(name)
    with pytest.raises(ValueError, match="2-D"):
        kappa(torch.zeros(3))
    with pytest.raises(TypeError):
        kappa([[1.0, 2.0]])


def test_grid_state_is_buffers_created_at_construction():
    rbf = rpnkit.build_expansion("gaussian_rbf", K=7)
    bs = rpnkit.build_expansion("bspline", t=4, d=2)
    assert "centres" in dict(rbf.named_buffers())
    assert rbf.centres.shape == (7,)
    assert "knots" in dict(bs.named_buffers())
    assert bs.knots.shape == (4 + 2 * 2 + 1,)
    assert set(rbf.state_dict()) == {"centres"}
    assert set(bs.state_dict()) == {"knots"}
    fresh = rpnkit.build_expansion("bspline", t=4, d=2)
    fresh.load_state_dict(bs.state_dict())
    torch.testing.assert_close(fresh.knots, bs.knots)


# -- D formulas ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 6), d=st.integers(1, 4))
def test_D_formulas(m, d):  # noqa: N802
    b = rpnkit.build_expansion
    assert b("taylor", d=d).calculate_D(m) == sum(m**k for k in range(1, d + 1))
    assert b("taylor", d=d, symmetric=True).calculate_D(m) == sum(
        comb(m + k - 1, k) for k in range(1, d + 1)
    )
    assert b("combinatorial", d=d).calculate_D(m) == sum(comb(m, r) for r in range(1, d + 1))
    assert b("combinatorial_normal", d=d).calculate_D(m) == sum(
        comb(m, r) for r in range(1, d + 1)
    )
    for name in ("chebyshev", "jacobi", "legendre", "hermite", "laguerre"):
        assert b(name, d=d).calculate_D(m) == m * d
    assert b("fourier", N=d).calculate_D(m) == 2 * m * d
    assert b("gaussian_rbf", K=d + 1).calculate_D(m) == m * (d + 1)
    assert b("bspline", t=d + 1, d=d - 1).calculate_D(m) == m * (2 * d)
    for name in ("identity", "reciprocal", "linear", "naive_normal", "naive_chi2"):
        assert b(name).calculate_D(m) == m
    for name in ("trigonometric", "hyperbolic", "arc_trigonometric", "arc_hyperbolic"):
        assert b(name).calculate_D(m) == 3 * m


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 5), d=st.integers(1, 3), symmetric=st.booleans(), b=st.integers(1, 4))
def test_output_width_property(m, d, symmetric, b):
    x = torch.rand(b, m, dtype=torch.float64)
    for kappa in (
        rpnkit.build_expansion("taylor", d=d, symmetric=symmetric),
        rpnkit.build_expansion("combinatorial", d=d),
        rpnkit.build_expansion("extended", expansions=["legendre", {"name": "taylor", "d": d}]),
        rpnkit.build_expansion("nested", expansions=[{"name": "taylor", "d": d}, "fourier"]),
    ):
        assert kappa(x).shape == (b, kappa.calculate_D(m))


def test_symmetric_taylor_spans_the_same_monomials():
    x = torch.rand(4, 3, dtype=torch.float64)
    full = rpnkit.build_expansion("taylor", d=3)(x)
    sym = rpnkit.build_expansion("taylor", d=3, symmetric=True)(x)
    assert sym.shape[1] == 3 + 6 + 10 < full.shape[1]
    assert set(torch.round(full[0], decimals=12).tolist()) == set(
        torch.round(sym[0], decimals=12).tolist()
    )


# -- pre / post processing ------------------------------------------------------------------


def test_pre_and_post_processing_are_applied_and_registered():
    pre = nn.Linear(3, 3)
    post = nn.Dropout(0.5)
    kappa = rpnkit.build_expansion("taylor", d=2, preprocess=[pre], postprocess=[nn.Tanh(), post])
    assert kappa.preprocess[0] is pre
    assert {id(p) for p in kappa.parameters()} == {id(pre.weight), id(pre.bias)}
    assert set(kappa.state_dict()) == {"preprocess.0.weight", "preprocess.0.bias"}
    kappa.eval()
    assert not post.training
    x = torch.randn(4, 3)
    ref = torch.tanh(rpnkit.build_expansion("taylor", d=2)(pre(x)))
    torch.testing.assert_close(kappa(x), ref)
    kappa.train()
    assert post.training


def test_processing_given_as_names_single_module_or_module_list():
    kappa = rpnkit.build_expansion("identity", preprocess="tanh", postprocess=nn.Sigmoid())
    x = torch.randn(3, 2)
    torch.testing.assert_close(kappa(x), torch.sigmoid(torch.tanh(x)))
    kappa = rpnkit.build_expansion("identity", postprocess=nn.ModuleList([nn.Tanh(), nn.ReLU()]))
    torch.testing.assert_close(kappa(x), torch.relu(torch.tanh(x)))
    with pytest.raises(rpnkit.UnknownNameError, match="did you mean 'tanh'"):
        rpnkit.build_expansion("identity", preprocess="tahn")


def test_sized_processing_is_created_when_a_head_binds_it():
    head = rpnkit.RPNHead(
        3, 2, expansion="taylor", expansion_params={"d": 2, "preprocess": "layer_norm",
                                                    "postprocess": ["layer_norm"]},
    )
    kappa = head.expansion
    assert isinstance(kappa.preprocess[0], nn.LayerNorm)
    assert kappa.preprocess[0].normalized_shape == (3,)
    assert kappa.postprocess[0].normalized_shape == (12,)
    names = set(head.state_dict())
    assert {"expansion.preprocess.0.weight", "expansion.postprocess.0.bias"} <= names
    assert {id(p) for p in kappa.parameters()} <= {id(p) for p in head.parameters()}
    assert head(torch.randn(4, 3)).shape == (4, 2)
    head.double()
    assert kappa.preprocess[0].weight.dtype == torch.float64
    assert head(torch.randn(4, 3, dtype=torch.float64)).dtype == torch.float64


# -- construction errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("taylor", {"d": 0}),
        ("taylor", {"d": 1.5}),
        ("chebyshev", {"d": -1}),
        ("fourier", {"N": 0}),
        ("fourier", {"P": 0.0}),
        ("gaussian_rbf", {"K": 0}),
        ("gaussian_rbf", {"range": (1.0, -1.0)}),
        ("gaussian_rbf", {"range": (0.0,)}),
        ("bspline", {"t": 0}),
        ("bspline", {"d": -1}),
        ("bspline", {"range": "ab"}),
        ("reciprocal", {"eps": 0.0}),
        ("linear", {"c": float("nan")}),
        ("naive_normal", {"scale": -1.0}),
        ("naive_gamma", {"rate": 0.0}),
        ("jacobi", {"alpha": -1.0}),
        ("combinatorial", {"d": True}),
        ("nested", {"expansions": []}),
        ("extended", {"expansions": "taylor"}),
        ("extended", {"expansions": [nn.Linear(2, 2)]}),
    ],
)
def test_bad_hyperparameters_raise(name, kwargs):
    with pytest.raises(ConfigurationError):
        rpnkit.build_expansion(name, **kwargs)


def test_bound_processing_rejects_other_widths():
    head = rpnkit.RPNHead(3, 2, expansion="identity", expansion_params={"preprocess": "layer_norm"})
    with pytest.raises(ValueError, match="m=3"):
        head.expansion(torch.randn(2, 4))
    with pytest.raises(ConfigurationError, match="cannot rebind"):
        head.expansion.bind(4)
    plain = rpnkit.build_expansion("taylor")
    plain.bind(3)
    plain.bind(5)  # no size-bound state: reusable at another width
    assert plain(torch.randn(2, 5)).shape == (2, 30)


def test_nested_binds_inner_sized_processing_along_the_chain():
    inner = rpnkit.build_expansion("taylor", d=2, postprocess="layer_norm")
    kappa = rpnkit.build_expansion("nested", expansions=[inner, "chebyshev"],
                                   postprocess=["layer_norm"])
    head = rpnkit.RPNHead(3, 2, expansion=kappa)
    assert inner.postprocess[0].normalized_shape == (12,)
    assert kappa.postprocess[0].normalized_shape == (60,)
    assert head.D == 60
    x = torch.randn(4, 3)
    ref = nn.functional.layer_norm(
        rpnkit.build_expansion("chebyshev")(nn.functional.layer_norm(
            rpnkit.build_expansion("taylor", d=2)(x), (12,))), (60,))
    torch.testing.assert_close(kappa(x), ref)


@pytest.mark.parametrize("symmetric", [False, True])
def test_taylor_degree_blocks(symmetric):
    kappa = rpnkit.build_expansion("taylor", d=3, symmetric=symmetric)
    x = torch.randn(4, 3, dtype=torch.float64)
    blocks = [kappa.degree_block(x, k) for k in (1, 2, 3)]
    torch.testing.assert_close(torch.cat(blocks, dim=1), kappa(x))
    assert [b.shape[1] for b in blocks] == ([3, 6, 10] if symmetric else [3, 9, 27])


def test_hparams_and_repr():
    kappa = rpnkit.build_expansion("bspline", t=4)
    assert kappa.hparams() == {"range": (-1.0, 1.0), "t": 4, "d": 3}
    assert "t=4" in repr(kappa)
    assert rpnkit.build_expansion("identity").hparams() == {}
