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

from test_structured import (
    EXPANSION_PARAMS,
    PAIRS,
    XI_CASES,
    inputs,
    make_head,
    make_xi_head,
    recon_params,
    rel,
    xi_inputs,
)

__all__ = [
    "ALL_CASES",
    "CASES",
    "Case",
    "EXPANSION_PARAMS",
    "L0_RECONCILIATIONS",
    "XI_CASES",
    "case",
    "inputs",
    "make_head",
    "make_xi_head",
    "recon_params",
    "rel",
    "xi_inputs",
    "xi_model",
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


def xi_model(batch: int = 2):
    """An RPN 2 model from ``RPN.from_dims``: chain ξ (2 heads, learned head fusion, max channel
    fusion) then attention ξ, float64, seeded, with bias; returns (model, x (batch, 4, 3))."""
    import torch

    from rpnkit import RPN

    torch.manual_seed(0)
    model = RPN.from_dims(
        [3, 4, 2], expansion="taylor", reconciliation="lorr", reconciliation_params={"r": 2},
        interdependence={"name": "chain", "length": 4, "hops": 2, "decay": 0.7}, heads=2,
        head_fusion="learned", channels=2, channel_fusion="max", bias=True, activation="tanh",
        layers=[None, {"interdependence": "attention", "interdependence_params": {"rank": 2},
                       "heads": 1, "channels": 1, "channel_fusion": "sum"}],
    ).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model, xi_inputs((batch, 4, 3))
