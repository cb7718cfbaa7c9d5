"""torch.compile(fullgraph=True) of RPN heads: no graph breaks, and compiled == eager.

For each (expansion, reconciliation) pair of the catalog (built as in test_structured.py:
small sizes, float64), ``torch.compile(head, fullgraph=True)`` must trace the whole forward
(any graph break is an error under fullgraph) and give the eager output, and the gradients
of a fixed scalar projection of the output w.r.t. head.w (where it has elements) and x must
equal eager's, to 1e-10 relative in float64.

RPN 2: interdependent heads (ξ around a (κ, ψ) pair, built as in test_structured.py's ξ test)
and an ``RPN.from_dims`` model with ξ layers and fusion objects, under the same check.

Default run: a representative subset (a few with the inductor backend, the rest with
``aot_eager``, which runs dynamo + AOTAutograd but skips code generation). All pairs, and
every ξ of the catalog with four (κ, ψ) pairs: ``pytest -m slow tests/test_compile.py``
(aot_eager).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

import rpnkit
from _catalog_cases import ALL_CASES, CASES, XI_CASES, inputs, make_xi_head, rel, xi_model

TOL = 1e-10

# (case id, backend). Covers every structured path: dense-bilinear, lowrank-bilinear,
# kron-structured, symmetric Taylor, rowsum / eye-prefix (l = 0), materialised-κ
# (bspline, nested), fixed random buffers (random_matrix_adaption), masks, hypernet.
DEFAULT = [
    ("taylor-identity", "inductor"),
    ("bspline-identity", "aot_eager"),
    ("extended-lorr", "aot_eager"),  # extended = [bspline | taylor d=2]
    ("taylor-hm", "aot_eager"),
    ("taylor-dual_lphm", "aot_eager"),
    ("taylor_sym-lorr", "aot_eager"),
    ("taylor-constant_eye", "aot_eager"),
    ("taylor-one", "aot_eager"),
    ("taylor-random_matrix_adaption", "aot_eager"),
    ("nested-masking", "aot_eager"),  # nested = taylor d=2 ∘ linear
    ("fourier-hypernet", "aot_eager"),
]

#: RPN 2 (ξ, κ, ψ): the default subset is a sparse ξ (graph: scatter form when compiling);
#: the model test adds chain and attention ξ and fusion objects; slow: every ξ with these
#: four pairs
XI_DEFAULT = [("graph", "taylor", "lorr")]
XI_PAIRS = [("identity", "identity"), ("taylor", "lorr"), ("bspline", "dual_lphm"),
            ("fourier", "hypernet")]
XI_ALL = [(xi, e, r) for xi in XI_CASES for e, r in XI_PAIRS]


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()  # no recompile limits / cache carried between cases
    yield
    torch._dynamo.reset()


def check_compiled(module: torch.nn.Module, x: torch.Tensor, backend: str, tol: float = TOL,
                   params: list[torch.nn.Parameter] | None = None) -> None:
    """Compiled (fullgraph) forward and backward equal eager."""
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    y0 = module(x)
    y = compiled(x)
    assert y.dtype == y0.dtype
    assert y.shape == y0.shape
    assert rel(y, y0) <= tol, ("output", rel(y, y0))
    proj = torch.randn(y0.shape, generator=torch.Generator().manual_seed(7), dtype=y0.dtype)
    params = [p for p in (params or []) if p.numel() > 0]
    targets = [x, *params]
    g0 = torch.autograd.grad((y0 * proj).sum(), targets, allow_unused=True)
    g = torch.autograd.grad((y * proj).sum(), targets, allow_unused=True)
    for i, (a, b) in enumerate(zip(g, g0)):
        what = "x" if i == 0 else f"param {i - 1} {tuple(targets[i].shape)}"
        assert (a is None) == (b is None), (what, a is None, b is None)
        if a is not None:
            assert rel(a, b) <= tol, (what, rel(a, b))


def check_case(case_id: str, backend: str) -> None:
    head = CASES[case_id].build()
    check_compiled(head, inputs(head.m), backend, params=[head.w])


@pytest.mark.parametrize(("case_id", "backend"), DEFAULT, ids=[c for c, _ in DEFAULT])
def test_compile_fullgraph_matches_eager(case_id, backend):
    check_case(case_id, backend)


@pytest.mark.slow
@pytest.mark.parametrize("case_id", [c.id for c in ALL_CASES])
def test_compile_fullgraph_matches_eager_all_pairs(case_id):
    check_case(case_id, "aot_eager")


def test_compile_two_layer_model_fullgraph():
    torch.manual_seed(0)
    model = rpnkit.RPN.from_dims([3, 4, 2], expansion="taylor", reconciliation="lorr").double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    check_compiled(model, inputs(3), "inductor", params=list(model.parameters()))


def check_xi_case(xi: str, exp: str, rec: str, backend: str = "aot_eager") -> None:
    head, x = make_xi_head(xi, exp, rec, bias=True)
    check_compiled(head, x, backend, params=[p for p in head.parameters() if p.requires_grad])


@pytest.mark.parametrize(("xi", "exp", "rec"), XI_DEFAULT, ids=["-".join(t) for t in XI_DEFAULT])
def test_compile_interdependent_head_fullgraph(xi, exp, rec):
    check_xi_case(xi, exp, rec)


@pytest.mark.slow
@pytest.mark.parametrize(("xi", "exp", "rec"), XI_ALL, ids=["-".join(t) for t in XI_ALL])
def test_compile_interdependent_head_fullgraph_all(xi, exp, rec):
    check_xi_case(xi, exp, rec)


def test_compile_interdependent_model_fullgraph():
    """RPN.from_dims with chain then attention ξ, learned head fusion and max channel fusion."""
    model, x = xi_model()
    check_compiled(model, x, "aot_eager", params=list(model.parameters()))


def test_default_subset_names_exist():
    assert {c for c, _ in DEFAULT} <= set(CASES)
    assert {xi for xi, _, _ in XI_DEFAULT} <= set(XI_CASES)
