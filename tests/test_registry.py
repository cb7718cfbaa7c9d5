"""Registry: SPEC names, build by name with class keyword arguments, helpful errors."""

from __future__ import annotations

import inspect

import pytest
from torch import nn

import rpnkit
from rpnkit.errors import ConfigurationError, UnknownNameError, closest, did_you_mean
from rpnkit.registry import (
    COMPRESSIONS,
    EXPANSIONS,
    FUSIONS,
    INTERDEPENDENCES,
    RECONCILIATIONS,
    REMAINDERS,
    Registry,
)

SPEC = {
    "expansion": {
        "identity": "Identity", "reciprocal": "Reciprocal", "linear": "Linear",
        "taylor": "Taylor", "fourier": "Fourier", "trigonometric": "Trigonometric",
        "hyperbolic": "Hyperbolic", "arc_trigonometric": "ArcTrigonometric",
        "arc_hyperbolic": "ArcHyperbolic", "gaussian_rbf": "GaussianRBF",
        "inverse_quadratic_rbf": "InverseQuadraticRBF", "bspline": "BSpline",
        "chebyshev": "Chebyshev", "jacobi": "Jacobi", "legendre": "Legendre",
        "hermite": "Hermite", "laguerre": "Laguerre", "naive_normal": "NaiveNormal",
        "naive_laplace": "NaiveLaplace", "naive_cauchy": "NaiveCauchy",
        "naive_gamma": "NaiveGamma", "naive_exponential": "NaiveExponential",
        "naive_chi2": "NaiveChi2", "combinatorial": "Combinatorial",
        "combinatorial_normal": "CombinatorialNormal", "nested": "Nested", "extended": "Extended",
        "gegenbauer": "Gegenbauer", "bessel": "Bessel", "reverse_bessel": "ReverseBessel",
        "fibonacci": "Fibonacci", "lucas": "Lucas", "meyer_wavelet": "MeyerWavelet",
        "ricker_wavelet": "RickerWavelet", "shannon_wavelet": "ShannonWavelet",
        "beta_wavelet": "BetaWavelet", "haar_wavelet": "HaarWavelet", "dog_wavelet": "DoGWavelet",
        "cuboid_patch_expansion": "CuboidPatch", "cylinder_patch_expansion": "CylinderPatch",
        "sphere_patch_expansion": "SpherePatch",
    },
    "reconciliation": {
        "identity": "IdentityReconciliation", "masking": "Masking",
        "duplicated_padding": "DuplicatedPadding", "lorr": "LowRank", "hm": "HM", "lphm": "LPHM",
        "dual_lphm": "DualLPHM", "random_matrix_adaption": "RandomMatrixAdaption",
        "hypernet": "HyperNet", "random_matrix_hypernet": "RandomMatrixHyperNet",
        "constant": "Constant", "zero": "Zero", "one": "One",
        "constant_eye": "ConstantEye",
    },
    "remainder": {
        "zero": "ZeroRemainder", "constant": "ConstantRemainder",
        "identity": "IdentityRemainder", "linear": "LinearRemainder",
    },
    "interdependence": {  # ξ, RPN 2
        "identity": "IdentityInterdependence", "graph": "GraphInterdependence",
        "graph_pagerank": "PageRankInterdependence", "grid": "GridInterdependence",
        "chain": "ChainInterdependence", "kernel": "KernelInterdependence",
        "parameterised": "ParameterisedInterdependence", "attention": "AttentionInterdependence",
        "hybrid": "HybridInterdependence", "kl_divergence": "KLDivergenceInterdependence",
        "pearson": "PearsonInterdependence", "rv_coefficient": "RVCoefficientInterdependence",
        "mutual_information": "MutualInformationInterdependence", "tanh": "TanhInterdependence",
        "exponential": "ExponentialInterdependence", "minkowski": "MinkowskiInterdependence",
        "manhattan": "ManhattanInterdependence", "euclidean": "EuclideanInterdependence",
        "chebyshev": "ChebyshevInterdependence", "canberra": "CanberraInterdependence",
        "laplacian": "LaplacianInterdependence", "anisotropic_rbf": "AnisotropicRBFInterdependence",
    },
    "fusion": {
        "sum": "SumFusion", "mean": "MeanFusion", "max": "MaxFusion", "concat": "ConcatFusion",
        "weighted": "WeightedFusion", "learned": "LearnedFusion", "linear": "LinearFusion",
        "min": "MinFusion", "prod": "ProdFusion", "median": "MedianFusion",
        "parameterised_concat": "ParameterisedConcatFusion",
    },
    "compression": {  # κ with D <= m, registered apart from the expansions
        "pca": "PCA", "random_projection": "RandomProjection",
        "feature_selection": "FeatureSelection", "max_pooling": "MaxPooling",
        "mean_pooling": "MeanPooling", "naive_probabilistic": "NaiveProbabilistic",
        "isomap": "Isomap", "lle": "LLE", "mds": "MDS", "spectral": "Spectral",
    },
}  # fmt: skip

MODULES = {"expansion": rpnkit.expansion, "reconciliation": rpnkit.reconciliation,
           "remainder": rpnkit.remainder, "interdependence": rpnkit.interdependence,
           "fusion": rpnkit.fusion,
           "compression": rpnkit.compression}
BUILDERS = {"expansion": rpnkit.build_expansion, "reconciliation": rpnkit.build_reconciliation,
            "remainder": rpnkit.build_remainder, "interdependence": rpnkit.build_interdependence,
            "fusion": rpnkit.build_fusion,
            "compression": rpnkit.build_compression}
#: parameters without which a component's defaults do not build (a 3×3 patch needs a grid)
REQUIRED = {("interdependence", "grid"): {"height": 4, "width": 4}}
REGISTRIES = {"expansion": EXPANSIONS, "reconciliation": RECONCILIATIONS,
              "remainder": REMAINDERS, "interdependence": INTERDEPENDENCES, "fusion": FUSIONS,
              "compression": COMPRESSIONS}

#: SPEC defaults (tables §2–§4) by registry name
DEFAULTS = {
    ("expansion", "reciprocal"): {"eps": 1e-6},
    ("expansion", "linear"): {"c": 1.0},
    ("expansion", "taylor"): {"d": 2, "symmetric": False},
    ("expansion", "fourier"): {"P": 10, "N": 5},
    ("expansion", "gaussian_rbf"): {"range": (-1, 1), "K": 10, "eps": 1},
    ("expansion", "inverse_quadratic_rbf"): {"range": (-1, 1), "K": 10, "eps": 1},
    ("expansion", "bspline"): {"range": (-1, 1), "t": 5, "d": 3},
    ("expansion", "chebyshev"): {"d": 5},
    ("expansion", "jacobi"): {"d": 5, "alpha": 1, "beta": 1},
    ("expansion", "legendre"): {"d": 5},
    ("expansion", "hermite"): {"d": 5},
    ("expansion", "laguerre"): {"d": 5},
    ("expansion", "gegenbauer"): {"d": 5, "alpha": 1},
    ("expansion", "ricker_wavelet"): {"s": 1, "t": 1, "a": 1, "b": 1, "sigma": 1},
    ("expansion", "dog_wavelet"): {"s": 1, "t": 1, "a": 1, "b": 1, "sigma_1": 1, "sigma_2": 2},
    ("expansion", "beta_wavelet"): {"s": 1, "t": 1, "a": 1, "b": 1, "alpha": 1, "beta": 1},
    ("expansion", "naive_normal"): {"loc": 0, "scale": 1},
    ("expansion", "naive_gamma"): {"concentration": 0.5, "rate": 1},
    ("expansion", "naive_exponential"): {"rate": 0.5},
    ("expansion", "naive_chi2"): {"df": 1},
    ("expansion", "combinatorial"): {"d": 2},
    ("expansion", "combinatorial_normal"): {"d": 2},
    ("reconciliation", "masking"): {"p": 0.5},
    ("reconciliation", "duplicated_padding"): {"p": 2, "q": None},
    ("reconciliation", "lorr"): {"r": 2},
    ("reconciliation", "hm"): {"p": 2, "q": None},
    ("reconciliation", "lphm"): {"p": 2, "q": None, "r": 2},
    ("reconciliation", "dual_lphm"): {"p": 2, "q": None, "r": 2},
    ("reconciliation", "random_matrix_adaption"): {"r": 2},
    ("reconciliation", "hypernet"): {"l": 64, "hidden": 128, "frozen": True},
    ("reconciliation", "random_matrix_hypernet"): {"r": 2, "l": 64, "hidden": 128},
}


@pytest.mark.parametrize("kind", list(SPEC))
def test_spec_names_and_classes(kind):
    assert sorted(rpnkit.list_components()[kind]) == sorted(SPEC[kind])
    for name, cls_name in SPEC[kind].items():
        cls = getattr(MODULES[kind], cls_name)
        obj = BUILDERS[kind](name, **REQUIRED.get((kind, name), {}))
        assert type(obj) is cls
        assert cls.registry_name == name
        assert isinstance(obj, nn.Module)


def test_list_components_shape():
    comps = rpnkit.list_components()
    assert set(comps) == {"expansion", "reconciliation", "remainder", "interdependence", "fusion",
                          "compression"}
    assert list(comps) == list(SPEC)  # κ, ψ, π, RPN 2's ξ, the fusion objects, compressions
    assert all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in comps.values())


@pytest.mark.parametrize(("key", "defaults"), list(DEFAULTS.items()), ids=lambda v: str(v))
def test_spec_defaults(key, defaults):
    kind, name = key
    reg = {"expansion": EXPANSIONS, "reconciliation": RECONCILIATIONS}[kind]
    params = reg.parameters(name)
    for p, v in defaults.items():
        assert params[p] == v, (name, p)


@pytest.mark.parametrize("kind", list(SPEC))
def test_build_by_name_accepts_the_class_keyword_arguments(kind):
    reg = REGISTRIES[kind]
    for name in reg.names():
        sig = inspect.signature(reg.get(name).__init__)
        kwargs = {
            p.name: p.default
            for p in list(sig.parameters.values())[1:]
            if p.default is not inspect.Parameter.empty
        }
        obj = reg.build(name, **{**kwargs, **REQUIRED.get((kind, name), {})})
        assert type(obj) is reg.get(name)


@pytest.mark.parametrize(
    ("kind", "bad", "good"),
    [("expansion", "taylr", "taylor"), ("expansion", "bsplin", "bspline"),
     ("reconciliation", "dual_lpmh", "dual_lphm"), ("reconciliation", "lowrank", "lorr"),
     ("remainder", "lienar", "linear"), ("interdependence", "chian", "chain"),
     ("interdependence", "grpah", "graph"), ("fusion", "learnd", "learned")],
)
def test_unknown_name_did_you_mean(kind, bad, good):
    with pytest.raises(UnknownNameError, match=f"did you mean '{good}'") as info:
        BUILDERS[kind](bad)
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, ValueError)
    assert "valid names" in str(info.value)
    assert not str(info.value).startswith("'")  # no KeyError quoting


def test_unknown_keyword_argument():
    with pytest.raises(ConfigurationError, match=r"unknown parameter 'degree'.*valid parameters: d"):
        rpnkit.build_expansion("taylor", degree=3)
    with pytest.raises(ConfigurationError, match="did you mean 'r'"):
        rpnkit.build_reconciliation("lorr", rr=3)
    with pytest.raises(ConfigurationError, match=r"\(none\)"):
        rpnkit.build_remainder("zero", c=1)


def test_non_string_name():
    with pytest.raises(ConfigurationError, match="must be a string"):
        rpnkit.build_expansion(3)


def test_resolve_forms():
    reg = EXPANSIONS
    a = reg.resolve("taylor", {"d": 3})
    b = reg.resolve({"name": "taylor", "d": 3})
    c = reg.resolve({"name": "taylor", "params": {"d": 3}})
    assert a.d == b.d == c.d == 3
    mod = rpnkit.build_expansion("taylor")
    copy = reg.resolve(mod)
    assert copy is not mod
    assert isinstance(copy, type(mod))
    with pytest.raises(ConfigurationError, match="'name' key"):
        reg.resolve({"d": 3})
    with pytest.raises(ConfigurationError, match="already-built module"):
        reg.resolve(mod, {"d": 2})
    with pytest.raises(ConfigurationError, match="cannot build"):
        reg.resolve(1.5)


def test_no_dotted_python_paths():
    with pytest.raises(UnknownNameError):
        rpnkit.build_expansion("torch.nn.Linear")
    with pytest.raises(UnknownNameError):
        rpnkit.build_remainder("os.system")


def test_registry_register_and_describe():
    reg = Registry("thing")

    @reg.register("foo")
    class Foo(nn.Module):
        """A foo.

        More text.
        """

        def __init__(self, a: int = 1, b=None) -> None:
            super().__init__()
            self.a = a

    assert reg.names() == ["foo"]
    assert "foo" in reg
    assert reg.describe("foo") == "A foo."
    assert reg.parameters("foo") == {"a": 1, "b": None}
    assert reg.build("foo", a=3).a == 3
    with pytest.raises(ConfigurationError, match="already registered"):
        reg.register("foo")(Foo)


def test_every_component_has_a_one_line_doc():
    for reg in (EXPANSIONS, RECONCILIATIONS, REMAINDERS):
        for name in reg.names():
            assert reg.describe(name), name


def test_did_you_mean_helpers():
    assert closest("taylr", ["taylor", "fourier"]) == "taylor"
    assert closest("zzzzzz", ["taylor"]) is None
    assert did_you_mean("zzzzzz", ["taylor"]) == ""
    assert did_you_mean("lor", ["lorr"]) == " (did you mean 'lorr'?)"


def test_numpy_and_torch_scalars_are_accepted_as_hyperparameters():
    import numpy as np
    import torch

    kappa = rpnkit.build_expansion("gaussian_rbf", range=np.array([-2.0, 2.0]), K=np.int64(3),
                                   eps=np.float32(0.5))
    assert kappa.range == (-2.0, 2.0)
    assert kappa.K == 3
    assert kappa.eps == 0.5
    assert rpnkit.build_expansion("bspline", range=torch.tensor([0.0, 1.0])).range == (0.0, 1.0)
    assert rpnkit.build_reconciliation("masking", p=np.float32(0.25)).p == 0.25
    assert rpnkit.build_reconciliation("hm", p=np.int64(2)).p == 2
    model = rpnkit.RPN.from_dims(np.array([3, 4, 2]), reconciliation="lorr",
                                 reconciliation_params={"r": np.int32(1)})
    assert model.dims == [3, 4, 2]
    assert all(type(d) is int for d in model.dims)


@pytest.mark.parametrize("kind", ["expansion", "reconciliation", "remainder"])  # RPN 1's kinds
def test_hparams_round_trip_through_the_registry(kind):
    """``hparams()`` holds constructor arguments: building from them gives an equal component."""
    reg = REGISTRIES[kind]
    for name in reg.names():
        obj = reg.build(name)
        hp = obj.hparams()
        assert isinstance(hp, dict)
        assert set(hp) <= set(reg.parameters(name)) | {"bias"}, name
        assert isinstance(repr(obj), str)
        if kind != "remainder":
            assert reg.build(name, **hp).hparams() == hp


def test_abstract_bases_raise_not_implemented():
    import torch

    e = rpnkit.expansion.Expansion()
    with pytest.raises(NotImplementedError):
        e.calculate_D(3)
    with pytest.raises(NotImplementedError):
        e.expand(torch.zeros(1, 1))
    r = rpnkit.reconciliation.Reconciliation()
    with pytest.raises(NotImplementedError):
        r.calculate_l(1, 1)
    with pytest.raises(NotImplementedError):
        r.reconcile(torch.zeros(1), 1, 1)
