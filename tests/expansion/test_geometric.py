"""Geometric patch expansions (cuboid / cylinder / sphere) against an independent numpy loop.

The loop below walks the reference toolkit's definition literally: the grid cell (c, i, j, k)
is attribute c·h·w·d + i·w·d + j·d + k; the centres are range(0, h, cd_h) × range(0, w,
cd_w) × range(0, d, cd_d); a patch is the integer offsets of the shape in lexicographic
order; a cell outside the grid reads 0; the column of (channel c, offset s, centre p) is
(c·S + s)·P + p.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import sympy
import torch
import torch.nn.functional as F  # noqa: N812

import rpnkit
from rpnkit.config import read_config_text, read_yaml
from rpnkit.convert import KNOWN_CLASSES, convert
from rpnkit.errors import ConfigurationError
from rpnkit.expansion import CuboidPatch, CylinderPatch, SpherePatch

D64 = torch.float64
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "reference"


def _offsets(shape: str, **p) -> list[tuple[int, int, int]]:
    if shape == "cuboid":
        hp = p.get("p_h_prime", p["p_h"])
        wp = p.get("p_w_prime", p["p_w"])
        dp = p.get("p_d_prime", p["p_d"])
        return [(a, b, c) for a in range(-p["p_h"], hp + 1) for b in range(-p["p_w"], wp + 1)
                for c in range(-p["p_d"], dp + 1)]
    r = p["p_r"]
    out = []
    for a in range(-r, r + 1):
        for b in range(-r, r + 1):
            if shape == "cylinder":
                if a * a + b * b <= r * r:
                    out += [(a, b, c) for c in range(-p.get("p_d", 0),
                                                     p.get("p_d_prime", p.get("p_d", 0)) + 1)]
            else:
                out += [(a, b, c) for c in range(-r, r + 1) if a * a + b * b + c * c <= r * r]
    return out


def loop_reference(x: np.ndarray, channels: int, h: int, w: int, d: int, offs, cd) -> np.ndarray:
    b = x.shape[0]
    cents = [(i, j, k) for i in range(0, h, cd[0]) for j in range(0, w, cd[1])
             for k in range(0, d, cd[2])]
    out = np.zeros((b, channels * len(offs) * len(cents)))
    for c in range(channels):
        for s, (di, dj, dk) in enumerate(offs):
            for p, (i, j, k) in enumerate(cents):
                ii, jj, kk = i + di, j + dj, k + dk
                col = (c * len(offs) + s) * len(cents) + p
                if 0 <= ii < h and 0 <= jj < w and 0 <= kk < d:
                    out[:, col] = x[:, c * h * w * d + ii * w * d + jj * d + kk]
    return out


CASES = [
    ("cuboid", {"p_h": 1, "p_w": 1, "p_d": 0}, (1, 5, 4, 1), None),
    ("cuboid", {"p_h": 1, "p_w": 0, "p_d": 1, "p_h_prime": 0, "p_w_prime": 2, "p_d_prime": 2},
     (2, 3, 4, 3), None),
    ("cuboid", {"p_h": 2, "p_w": 1, "p_d": 1}, (1, 6, 5, 3), {"cd_h": 2, "cd_w": 3, "cd_d": 2}),
    ("cylinder", {"p_r": 2, "p_d": 1}, (1, 5, 5, 3), None),
    ("cylinder", {"p_r": 1, "p_d": 0, "p_d_prime": 2}, (3, 4, 3, 4), {"cd_w": 2}),
    ("sphere", {"p_r": 1}, (1, 4, 4, 4), None),
    ("sphere", {"p_r": 2}, (2, 5, 3, 4), {"cd_h": 3, "cd_d": 2}),
]
CLASSES = {"cuboid": CuboidPatch, "cylinder": CylinderPatch, "sphere": SpherePatch}


def _build(shape, patch, grid, extra, **kw):
    c, h, w, d = grid
    return CLASSES[shape](**patch, h=h, w=w, d=d, channels=c, **(extra or {}), **kw)


@pytest.mark.parametrize(("shape", "patch", "grid", "extra"), CASES)
def test_matches_the_loop_definition(shape, patch, grid, extra):
    kappa = _build(shape, patch, grid, extra)
    c, h, w, d = grid
    m = c * h * w * d
    x = np.random.default_rng(0).normal(size=(4, m))
    cd = tuple((extra or {}).get(k, 1) for k in ("cd_h", "cd_w", "cd_d"))
    want = loop_reference(x, c, h, w, d, _offsets(shape, **patch), cd)
    got = kappa(torch.tensor(x, dtype=D64))
    assert kappa.calculate_D(m) == want.shape[1]
    np.testing.assert_array_equal(got.numpy(), want)  # a selection: exact
    kappa.bind(m)  # bound: the table buffer gives the same columns
    assert "patch_table" in dict(kappa.named_buffers())
    assert "patch_table" not in kappa.state_dict()  # non-persistent
    np.testing.assert_array_equal(kappa(torch.tensor(x, dtype=D64)).numpy(), want)


def test_patch_sizes():
    assert CuboidPatch(p_h=1, p_w=1, p_d=1).patch_size == 27
    assert CuboidPatch(p_h=2, p_w=0, p_d=1, p_d_prime=0).patch_size == 5 * 2
    assert CylinderPatch(p_r=2, p_d=1).patch_size == 13 * 3  # disc of radius 2: 13 cells
    assert SpherePatch(p_r=1).patch_size == 7
    assert SpherePatch(p_r=2).patch_size == 33


def test_cuboid_on_an_image_is_unfold():
    """A symmetric cuboid on a (1, H, W) grid is F.unfold with zero padding (stride = cd)."""
    x = torch.randn(3, 1, 6, 7, dtype=D64)
    for r, stride in ((1, 1), (2, 1), (1, 2)):
        kappa = CuboidPatch(p_h=r, p_w=r, p_d=0, h=6, w=7, d=1, cd_h=stride, cd_w=stride)
        want = F.unfold(x, 2 * r + 1, padding=r, stride=stride).flatten(1)
        torch.testing.assert_close(kappa(x.flatten(1)), want, rtol=0, atol=0)


def test_packing_strategies():
    def cds(k):
        return (k.cd_h, k.cd_w, k.cd_d)

    assert cds(CuboidPatch(p_h=2, p_w=1, p_d=0, packing_strategy="complete_square")) == (4, 2, 1)
    assert cds(CuboidPatch(p_h=2, p_w=1, p_d=0, packing_strategy="sparse_square")) == (6, 3, 1)
    assert cds(CylinderPatch(p_r=2, p_d=1, packing_strategy="complete_square")) == (2, 2, 2)
    assert cds(CylinderPatch(p_r=3, p_d=1, packing_strategy="complete_hexagonal")) == (4, 5, 2)
    assert cds(SpherePatch(p_r=2, packing_strategy="sparse_face_centered_cubic")) == (4, 3, 3)
    assert cds(SpherePatch(p_r=2)) == (1, 1, 1)  # no strategy: every cell a centre
    # an explicit distance wins over the strategy's for its axis only
    assert cds(CuboidPatch(p_h=2, p_w=1, p_d=0, packing_strategy="complete_square", cd_w=5)) == (4, 5, 1)
    k = CuboidPatch(p_h=1, p_w=1, p_d=0, h=8, w=8, d=1, packing_strategy="complete_square")
    assert k.calculate_D(64) == 9 * 4 * 4


def test_height_inferred_from_the_width():
    k = CuboidPatch(p_h=1, p_w=1, p_d=0, w=4, channels=2)
    assert k.calculate_D(2 * 3 * 4) == 2 * 9 * 12
    x = torch.randn(2, 24, dtype=D64)
    want = loop_reference(x.numpy(), 2, 3, 4, 1, _offsets("cuboid", p_h=1, p_w=1, p_d=0), (1, 1, 1))
    np.testing.assert_array_equal(k(x).numpy(), want)
    with pytest.raises(ConfigurationError, match=r"m = 10 is not a multiple of channels·w·d = 2·4·1 = 8"):
        k.calculate_D(10)


def test_gradcheck_and_gradgradcheck():
    for kappa in (CuboidPatch(p_h=1, p_w=1, p_d=0, h=3, w=3, d=1),
                  CylinderPatch(p_r=1, p_d=1, h=2, w=2, d=2, cd_w=2),
                  SpherePatch(p_r=1, h=2, w=2, d=2, channels=1)):
        x = torch.randn(3, kappa.in_width, dtype=D64, requires_grad=True)
        assert torch.autograd.gradcheck(kappa, (x,))
        assert torch.autograd.gradgradcheck(kappa, (x,))


def test_declared_structure():
    kappa = CylinderPatch(p_r=1, p_d=0, h=3, w=2, d=1)
    kappa.bind(6)
    st = kappa.structure()
    assert st.linear
    assert st.D == 5 * 6
    x = torch.randn(2, 6, dtype=D64)
    y = kappa(x)
    for col, inputs in enumerate(st.columns):  # each column is its declared input, or zero
        if inputs:
            (i,) = inputs
            assert torch.equal(y[:, col], x[:, i])
        else:
            assert torch.equal(y[:, col], torch.zeros(2, dtype=D64))
    # linear: κ of a combination of samples is that combination of their κ
    torch.testing.assert_close(kappa(2 * x - 3 * x[[1, 0]]), 2 * y - 3 * y[[1, 0]])
    assert kappa.table_numel(6) == st.D


def test_sympy_is_the_selection():
    kappa = SpherePatch(p_r=1, h=2, w=1, d=2)
    xs = list(sympy.symbols("x0:4"))
    exprs = kappa.sympy(xs)
    x = np.random.default_rng(1).normal(size=(3, 4))
    got = np.array([[float(e.subs(dict(zip(xs, row)))) for e in exprs] for row in x])
    np.testing.assert_array_equal(got, kappa(torch.tensor(x)).numpy())


def test_in_a_head_on_meta_then_loaded():
    def build(device=None):
        torch.manual_seed(0)
        return rpnkit.RPNHead(24, 3, expansion=CuboidPatch(p_h=1, p_w=1, p_d=1, h=2, w=3, d=2,
                                                           channels=2),
                              reconciliation="lorr", reconciliation_params={"r": 2},
                              dtype=D64, device=device)

    ref = build()
    meta = build("meta")
    meta.to_empty(device="cpu")
    meta.load_state_dict(ref.state_dict())
    x = torch.randn(4, 24, dtype=D64)
    torch.testing.assert_close(meta(x), ref(x), rtol=0, atol=0)
    kx = ref.expansion(x)
    torch.testing.assert_close(ref(x), kx @ ref.reconciled_weights()[0].T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("build", "match"), [
    (lambda: CuboidPatch(p_h=-1), r"p_h must be an integer >= 0, got -1"),
    (lambda: CylinderPatch(p_r=1.5), r"p_r must be an integer >= 0, got 1.5"),
    (lambda: SpherePatch(h=0), r"h must be an integer >= 1, got 0"),
    (lambda: CuboidPatch(cd_h=0), r"cd_h must be an integer >= 1, got 0"),
    (lambda: SpherePatch(packing_strategy="complete_square"),
     r"unknown packing_strategy 'complete_square' for a sphere patch; valid: sparse_simple_cubic"),
    (lambda: CuboidPatch(p_h=200, p_w=200, p_d=200), r"patch spanning 401×401×401 = 64,481,201 cells is above the limit of 1,048,576"),
    (lambda: CuboidPatch(p_h=20, p_w=20, p_d=0, h=1000, w=1000, d=1),
     r"1 channels × 1,681 patch cells × 1,000,000 centres = 1,681,000,000 columns"),
])
def test_bad_settings_are_refused(build, match):
    with pytest.raises(ConfigurationError, match=match):
        build()


def test_bad_widths_and_inputs_are_refused():
    k = CuboidPatch(p_h=1, p_w=1, p_d=0, h=3, w=3, d=1)
    with pytest.raises(ConfigurationError, match=r"h=3 × w=3 × d=1 needs m = 9 attributes, got m = 8"):
        k.calculate_D(8)
    with pytest.raises(ConfigurationError, match=r"needs m = 9 attributes, got m = 8"):
        rpnkit.RPNHead(8, 2, expansion=k)
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, 9\) .* got \(2, 8\)"):
        k(torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"2-D input"):
        k(torch.randn(9))


def test_registry_names_and_listing():
    comps = rpnkit.list_components()["expansion"]
    for name, cls in (("cuboid_patch_expansion", CuboidPatch),
                      ("cylinder_patch_expansion", CylinderPatch),
                      ("sphere_patch_expansion", SpherePatch)):
        assert name in comps
        assert type(rpnkit.build_expansion(name)) is cls


def _reference_config(transformation: dict, m: int) -> dict:
    """The reference's iris config with its one head's transformation and width replaced."""
    raw = read_yaml(read_config_text(FIXTURES / "iris_configs.yaml"), source="iris")
    layer = raw["configurations"]["model_configs"]["model_parameters"]["layer_configs"][0]
    layer["layer_parameters"]["m"] = m
    head = layer["layer_parameters"]["head_configs"][0]["head_parameters"]
    head["data_transformation_configs"] = transformation
    head["remainder_configs"] = {"function_class": "tinybig.remainder.zero_remainder"}
    return raw


@pytest.mark.parametrize(("cls", "params", "ours", "size"), [
    ("tinybig.expansion.cuboid_patch_based_geometric_expansion",
     {"h": 4, "w": 4, "d": 1, "p_h": 1, "p_w": 1, "p_d": 0, "packing_strategy": "complete_square"},
     {"name": "cuboid_patch_expansion", "h": 4, "w": 4, "d": 1, "packing_strategy": "complete_square",
      "p_h": 1, "p_w": 1, "p_d": 0}, 9 * 4),
    ("tinybig.expansion.geometric_expansion.cylinder_patch_based_geometric_expansion",
     {"h": 4, "w": 4, "d": 2, "p_r": 1, "p_d": 0, "p_d_prime": 1, "cd_h": 2, "cd_w": 2, "cd_d": 2},
     {"name": "cylinder_patch_expansion", "h": 4, "w": 4, "d": 2, "cd_h": 2, "cd_w": 2, "cd_d": 2,
      "p_r": 1, "p_d": 1, "p_d_prime": 1}, 5 * 3 * 4),
    ("tinybig.expansion.sphere_patch_based_geometric_expansion",
     {"h": 3, "w": 3, "d": 3, "p_r": 1},
     {"name": "sphere_patch_expansion", "h": 3, "w": 3, "d": 3, "p_r": 1}, 7 * 27),
])
def test_convert_maps_the_reference_classes(cls, params, ours, size):
    assert cls in KNOWN_CLASSES
    m = params["h"] * params["w"] * params["d"]
    conv = convert(_reference_config({"function_class": cls, "function_parameters": params}, m))
    assert conv.config["model"]["expansion"] == ours
    if "p_d_prime" in params:  # the reference's cylinder spans -p_d'..p_d' whatever p_d is
        assert any("ignores p_d = 0" in n for n in conv.notes)
    kappa = rpnkit.build_expansion(**ours)
    assert kappa.calculate_D(m) == size  # the D the reference computes: patch size × centres
    head = rpnkit.RPNHead(m, 1, expansion=kappa)
    assert head.w.numel() == size  # identity ψ: n·D, as the reference counts it


def test_convert_refuses_partial_centre_distances():
    cfg = _reference_config({"function_class": "tinybig.expansion.sphere_patch_based_geometric_expansion",
                             "function_parameters": {"h": 2, "w": 2, "d": 1, "p_r": 1, "cd_h": 2}}, 4)
    with pytest.raises(ConfigurationError, match=r"cd_h: the reference uses cd_h, cd_w, cd_d only when all three"):
        convert(cfg)


def test_every_combination_of_small_grids():
    """All shapes × small grids × distances against the loop (exhaustive, small)."""
    rng = np.random.default_rng(3)
    for shape, (c, h, w, d), cd in itertools.product(
            ("cuboid", "cylinder", "sphere"), ((1, 1, 1, 1), (1, 2, 3, 1), (2, 3, 1, 2)),
            ((1, 1, 1), (2, 1, 2))):
        patch = {"cuboid": {"p_h": 1, "p_w": 1, "p_d": 1}, "cylinder": {"p_r": 1, "p_d": 1},
                 "sphere": {"p_r": 1}}[shape]
        kappa = CLASSES[shape](**patch, h=h, w=w, d=d, channels=c, cd_h=cd[0], cd_w=cd[1], cd_d=cd[2])
        x = rng.normal(size=(2, c * h * w * d))
        want = loop_reference(x, c, h, w, d, _offsets(shape, **patch), cd)
        np.testing.assert_array_equal(kappa(torch.tensor(x)).numpy(), want)
