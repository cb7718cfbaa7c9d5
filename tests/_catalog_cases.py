"""Catalog cases shared by the PyTorch-tooling tests (test_compile.py, test_ddp.py).

Reuses test_structured.py's case construction unchanged (``make_head``: small sizes, float64,
fixed seed, non-trivial w for every channel; ``inputs``: a fixed float64 batch away from 0 and
inside the spline ranges) so that every (expansion, reconciliation) pair of the catalog is built
exactly as in the dense-definition equality test.

A case is named ``"<expansion>-<reconciliation>"``; ``taylor_sym`` is Taylor with
``symmetric=True`` (d = 2). Not a test module (leading underscore): pytest does not collect it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from test_structured import EXPANSION_PARAMS, PAIRS, inputs, make_head, recon_params, rel

__all__ = [
    "ALL_CASES",
    "CASES",
    "Case",
    "EXPANSION_PARAMS",
    "L0_RECONCILIATIONS",
    "case",
    "inputs",
    "make_head",
    "recon_params",
    "rel",
]

# reconciliations with l = 0 (no learnable numbers): head.w is a (channels, 0) parameter
L0_RECONCILIATIONS = ("constant", "zero", "one", "constant_eye")


@dataclass(frozen=True)
class Case:
    exp: str
    rec: str
    ep: dict | None = field(default=None, compare=False)  # None: EXPANSION_PARAMS default
    name: str = ""

    @property
    def id(self) -> str:
        return self.name or f"{self.exp}-{self.rec}"

    def build(self, **kw):
        """The head of test_structured.make_head (float64, seeded, w ~ N(0, 1))."""
        return make_head(self.exp, self.rec, None if self.ep is None else dict(self.ep), **kw)


ALL_CASES: list[Case] = [Case(e, r) for e, r in PAIRS]
ALL_CASES += [
    Case("taylor", r, {"d": 2, "symmetric": True}, f"taylor_sym-{r}")
    for r in ("identity", "lorr", "random_matrix_adaption", "one")
]
CASES: dict[str, Case] = {c.id: c for c in ALL_CASES}
assert len(CASES) == len(ALL_CASES), "duplicate case ids"


def case(case_id: str) -> Case:
    return CASES[case_id]
