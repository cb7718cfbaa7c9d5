"""The declared Structure objects (rpnkit.structure) and what reads them.

* every registered expansion declares, per column, the inputs it depends on; a numerical
  probe (here, in the test only) must never find a dependence the declaration misses;
* nobody outside a component switches on registry names or reads private buffers;
* the RPN 2 reordering follows κ's declared linearity (post-processing and user subclasses);
* batch-coupled ξ refuses input without a sites axis instead of mixing the batch.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import rpnkit
from rpnkit.expansion import Identity
from rpnkit.interdependence import InterdependentHead
from rpnkit.reconciliation import forms
from rpnkit.structure import form_homogeneity

D64 = torch.float64
SRC = Path(rpnkit.__file__).parent

EXPANSION_CASES = [
    (name, {}) for name in rpnkit.list_components()["expansion"]
    if name not in ("extended", "nested")
] + [
    ("extended", {"expansions": ["bspline", {"name": "taylor", "d": 2}]}),
    ("extended", {"expansions": ["chebyshev", "combinatorial"], "preprocess": ["tanh"]}),
    ("nested", {"expansions": ["reciprocal", "gaussian_rbf"]}),
    ("nested", {"expansions": [{"name": "taylor", "d": 2}, "trigonometric"]}),
    ("taylor", {"d": 3, "symmetric": True}),
    ("taylor", {"d": 2, "postprocess": ["tanh"]}),
    ("identity", {"preprocess": ["layer_norm"]}),
    ("bspline", {"preprocess": ["sigmoid"], "postprocess": ["layer_norm"]}),
]


def _probe_dependence(e, x):
    base = e(x)
    dep = [set() for _ in range(base.shape[1])]
    g = torch.Generator().manual_seed(1)
    for i in range(x.shape[1]):
        xi = x.clone()
        xi[:, i] = x[torch.randperm(x.shape[0], generator=g), i]
        moved = ((e(xi) - base).abs() > 1e-11).any(0)
        for c in torch.nonzero(moved).flatten().tolist():
            dep[c].add(i)
    return dep


@pytest.mark.parametrize(("name", "params"), EXPANSION_CASES,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(EXPANSION_CASES)])
def test_declared_columns_cover_the_measured_dependence(name, params):
    m = 4
    e = rpnkit.build_expansion(name, **params)
    e.bind(m)
    e = e.double()
    st = e.structure()
    assert st.D == e.calculate_D(m) == sum(seg.width for seg in st.segments)
    x = torch.rand(60, m, dtype=D64, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    dep = _probe_dependence(e, x)
    cols = st.column_inputs()
    assert len(cols) == st.D
    for c in range(st.D):
        assert dep[c] <= set(cols[c]), (name, c, dep[c], cols[c])
    if st.columns is not None:  # declared exactly: the probe finds every declared input
        found = sum(len(d) for d in dep)
        assert found >= 0.9 * sum(len(c) for c in cols)
    for b in st.bases:  # a basis block: its leaf, fed through its chain, gives its columns
        z = b.inputs(x)
        assert z.shape[1] == b.m
        leaf = b.leaf.expand(z)
        if b.offset is None:  # post-processed, or fed to a later expansion of a nested one
            assert leaf.shape[1] == b.width
            continue
        got = e(x)[:, b.offset:b.offset + b.width]
        torch.testing.assert_close(got, leaf.to(got.dtype), rtol=1e-12, atol=1e-12)


def test_monomials_of_structured_columns():
    e = rpnkit.build_expansion("taylor", d=2)
    st = e.structure(3)
    assert st.monomials[0] == (0,)
    assert st.monomials[3] == (0, 0)
    assert st.monomials[4] == (0, 1)
    sym = rpnkit.build_expansion("taylor", d=2, symmetric=True).structure(3)
    assert sym.D == 3 + 6
    assert sym.monomials[3:] == ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def test_structure_is_cheap_at_image_sizes():
    st = rpnkit.build_expansion("taylor", d=2).structure(784)
    assert st.D == 784 + 784 ** 2
    assert not st.linear


def test_linearity_is_declared_per_class():
    assert rpnkit.build_expansion("identity").structure(3).linear
    assert rpnkit.build_expansion("linear", c=2.0).structure(3).linear
    assert not rpnkit.build_expansion("identity", postprocess=["tanh"]).structure(3).linear
    assert not rpnkit.build_expansion("identity", preprocess=["layer_norm"]).structure(3).linear

    class Squash(Identity):  # inherits the name "identity", not the declaration
        def expand(self, x):
            return torch.tanh(x)

    assert Squash().registry_name == "identity"
    assert not Squash().structure(3).linear


@pytest.mark.parametrize(("form", "degree"), [
    (forms.Dense(), 1), (forms.Opaque(), None), (forms.LowRank(), 2),
    (forms.Kronecker(2, 2), 2), (forms.Kronecker(2, 2, (), (1,)), 1),
    (forms.Kronecker(2, 2, (0, 1), (2, 3)), 4), (forms.Fixed("eye"), 0),
])
def test_homogeneity_from_form(form, degree):
    assert form_homogeneity(form) == degree


def test_init_reads_the_declared_homogeneity():
    from rpnkit.init import init_homogeneity

    for name in rpnkit.list_components()["reconciliation"]:
        psi = rpnkit.build_reconciliation(name)
        assert psi.structure(4, 6).homogeneity == init_homogeneity(psi)


def test_reconciliation_structure():
    psi = rpnkit.build_reconciliation("lorr", r=2)
    st = psi.structure(4, 6)
    assert st.l == 2 * (4 + 6)
    assert st.kind == "lowrank"
    assert st.homogeneity == 2
    assert st.factor_shapes == ((4, 2), (6, 2))
    head = rpnkit.RPNHead(3, 2, expansion="taylor", reconciliation="dual_lphm",
                          reconciliation_params={"p": 1, "q": 3, "r": 1})
    hs = head.structure()
    assert hs.reconciliation.homogeneity == 4
    assert hs.path == head.contraction.path
    assert hs.expansion.D == head.D


# -- nobody outside a component switches on names or reads private buffers -----------------

COMPONENT_DIRS = ("expansion", "reconciliation", "remainder", "interdependence", "compression")
FORBIDDEN = [
    (re.compile(r"registry_name\s*(==|!=|\bin\b|\bnot in\b)"), "compares registry_name"),
    (re.compile(r"""_buffers\[\s*["']"""), "reads a named private buffer"),
    (re.compile(r"""_buffers\.get\("""), "reads a private buffer"),
]


def test_no_type_switches_outside_components():
    bad = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        own = rel.parts[0] in COMPONENT_DIRS and rel.name != "head.py"
        for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, what in FORBIDDEN:
                if pattern.search(code) and not (own and "_buffers" in code):
                    bad.append(f"{rel}:{k}: {what}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_no_numerical_probing_of_components():
    for name in ("inspection.py", "pruning.py", "grid.py", "symbolic_fit.py"):
        text = (SRC / name).read_text(encoding="utf-8")
        assert "randperm" not in text, name  # column dependence is declared, not measured
    assert "sep_err" not in (SRC / "inspection.py").read_text(encoding="utf-8")
    assert "torch.arange(1.0, head.l + 1" not in (SRC / "grid.py").read_text(encoding="utf-8")


@pytest.mark.parametrize(("name", "params", "separable"), [
    ("zero", {}, True), ("constant", {"c": 2.0}, True), ("linear", {}, True),
    ("linear", {"activation": "tanh"}, False), ("identity", {"activation": "tanh"}, True),
    ("identity", {"activation": "softmax"}, False),
])
def test_remainder_declares_separability(name, params, separable):
    rem = rpnkit.build_remainder(name, **params)
    rem.bind(3, 3)
    assert rem.separable() is separable
    if separable:  # the declaration holds numerically: π(x) = π(0) + Σ_i (π(x_i e_i) − π(0))
        x = torch.randn(7, 3, dtype=D64)
        rem = rem.double()
        p0 = rem(torch.zeros(1, 3, dtype=D64))
        pieces = sum(rem(x * torch.eye(3, dtype=D64)[i]) - p0 for i in range(3))
        torch.testing.assert_close(rem(x), p0 + pieces, rtol=1e-12, atol=1e-12)


# -- the RPN 2 reordering follows the declaration -------------------------------------------

EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [0, 4], [1, 5], [5, 6]])


def _graph_head(**exp):
    torch.manual_seed(0)
    return InterdependentHead(3, 2, "graph", {"edges": EDGES, "num_nodes": 7}, dtype=D64, **exp)


def _definition(head, x):
    z = head.xi(x)
    w = head.reconciled_weights().sum(0)
    return head.expansion(z) @ w.T


@pytest.mark.parametrize("post", [["tanh"], ["layer_norm"], ["sigmoid", "tanh"]])
def test_postprocessed_identity_with_a_graph_equals_the_definition(post):
    head = _graph_head(expansion="identity", expansion_params={"postprocess": post})
    assert not head.reorder
    x = torch.randn(7, 3, dtype=D64)
    torch.testing.assert_close(head(x), _definition(head, x), rtol=1e-12, atol=1e-12)


def test_user_subclass_of_identity_is_not_reordered():
    class Shifted(Identity):
        def expand(self, x):
            return torch.sin(x) + x

    head = _graph_head(expansion=Shifted())
    assert not head.reorder
    x = torch.randn(7, 3, dtype=D64)
    torch.testing.assert_close(head(x), _definition(head, x), rtol=1e-12, atol=1e-12)
    plain = _graph_head(expansion="identity")
    assert plain.reorder  # the exact A(XW) order stays for the real identity
    torch.testing.assert_close(plain(x), _definition(plain, x), rtol=1e-12, atol=1e-12)


# -- batch-coupled ξ never mixes a batch ----------------------------------------------------

@pytest.mark.parametrize(("xi", "params"), [
    ("kernel", {}), ("kernel", {"level": "attribute", "kernel": "cosine"}),
    ("attention", {"rank": 2}), ("chain", {"length": 6}),
])
def test_coupling_xi_refuses_a_bare_batch(xi, params):
    head = InterdependentHead(3, 2, xi, params, dtype=D64)
    assert head.xi_structure.couples_rows
    assert head.xi_structure.min_rank == 3
    with pytest.raises(ValueError, match="would mix the rows of the batch"):
        head(torch.randn(6, 3, dtype=D64))
    x = torch.randn(6, 6, 3, dtype=D64)
    alone = head(x[2:3])
    torch.testing.assert_close(head(x)[2:3], alone, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(head(x[:3])[2:3], alone, rtol=1e-12, atol=1e-12)


def test_coupling_xi_refused_in_a_model_on_tabular_rows():
    model = rpnkit.RPN.from_dims([3, 4, 2], interdependence={"name": "kernel", "kernel": "cosine"})
    with pytest.raises(ValueError, match="would mix the rows of the batch"):
        model(torch.randn(5, 3))
    assert model(torch.randn(5, 1, 3)).shape == (5, 1, 2)


def test_graph_is_declared_transductive():
    head = _graph_head(expansion="identity")
    assert head.xi_structure.transductive
    assert head.xi_structure.min_rank == 2
    assert "transductive" in head.plan()


def test_edge_index_tensor_with_two_edges():
    from rpnkit.interdependence.graph import normalised_edges

    index = torch.tensor([[0, 1], [2, 2]])  # (2, E) with E = 2: edges 0->2 and 1->2
    rows, cols, _ = normalised_edges(index, 3, "none", self_loops=False, directed=True)
    assert sorted(zip(rows.tolist(), cols.tolist())) in ([(0, 2), (1, 2)], [(2, 0), (2, 1)])
    pairs = [[0, 1], [1, 2]]  # a list is a list of pairs: 0->1 and 1->2
    rows, cols, _ = normalised_edges(pairs, 3, "none", self_loops=False, directed=True)
    got = set(zip(rows.tolist(), cols.tolist()))
    assert got in ({(0, 1), (1, 2)}, {(1, 0), (2, 1)})


def test_module_declares_elementwise():
    from rpnkit.structure import elementwise_chain

    assert elementwise_chain([nn.Tanh(), nn.SiLU()])
    assert not elementwise_chain([nn.LayerNorm(3)])
