"""random_matrix_hypernet and random_matrix_adaption: the definition with the seeded buffers,
seeding, meta-device init (reset_parameters redraws the same matrices), scale and errors."""

from __future__ import annotations

import pytest
import torch

import rpnkit
from rpnkit.errors import ConfigurationError
from rpnkit.reconciliation import RandomMatrixAdaption, RandomMatrixHyperNet

D64 = torch.float64


def _head(rec, rp=None, **kw):
    return rpnkit.RPNHead(5, 4, reconciliation=rec, reconciliation_params=rp or {}, seed=3,
                          dtype=D64, **kw)


def test_hypernet_definition():
    head = _head("random_matrix_hypernet", {"r": 3, "l": 6, "hidden": 9})
    psi = head.reconciliation
    assert isinstance(psi, RandomMatrixHyperNet)
    assert head.w.shape == (1, 6)
    assert [tuple(getattr(psi, k).shape) for k in "PQST"] == [(6, 3), (9, 3), (9, 3), (20, 3)]
    w = head.w[0]
    p, q, s, t = (getattr(psi, k) for k in "PQST")
    expect = (torch.sigmoid(w @ p @ q.T) @ s @ t.T).reshape(4, 5)
    torch.testing.assert_close(psi.reconcile(w, 4, 5), expect, rtol=1e-14, atol=1e-14)
    x = torch.randn(7, 5, dtype=D64)
    torch.testing.assert_close(head(x), x @ expect.T, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda ww: psi.reconcile(ww, 4, 5), (w.detach().clone()
                                                                         .requires_grad_(True),))
    assert not any(n.startswith("reconciliation") for n, _ in head.named_parameters())
    assert psi.state_numel(4, 5) == (6 + 18 + 20) * 3


def test_hypernet_seeded_and_scaled():
    a, b = _head("random_matrix_hypernet"), _head("random_matrix_hypernet")
    assert torch.equal(a.reconciliation.T, b.reconciliation.T)
    other = rpnkit.RPNHead(5, 4, reconciliation="random_matrix_hypernet", seed=4, dtype=D64)
    assert not torch.equal(a.reconciliation.T, other.reconciliation.T)
    assert rpnkit.build_reconciliation("random_matrix_hypernet").calculate_l(4, 5) == 64
    # W = Σ_k h_k T_k with r = 2 random weights h_k, so one draw's scale varies; over seeds
    # its mean square is that of a D-input nn.Linear, 1/(3D)
    ms = [rpnkit.RPNHead(64, 32, reconciliation="random_matrix_hypernet", seed=s, dtype=D64)
          .reconciled_weights().pow(2).mean().item() for s in range(16)]
    assert 0.5 / (3 * 64) < sum(ms) / len(ms) < 2 / (3 * 64)
    ref = rpnkit.RPNHead(64, 32, reconciliation="random_matrix_hypernet",
                         reconciliation_params={"reference_scale": True}, seed=0, dtype=D64)
    assert abs(ref.reconciliation.T.std().item() - 1.0) < 0.05


@pytest.mark.parametrize("rec", ["random_matrix_hypernet", "random_matrix_adaption"])
def test_meta_init_redraws_the_same_matrices(rec):
    ref = _head(rec)
    meta = _head(rec, device="meta")
    meta.to_empty(device="cpu")
    meta.reset_parameters()
    for name, buf in ref.reconciliation.named_buffers():
        assert torch.equal(dict(meta.reconciliation.named_buffers())[name], buf), name
    meta.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, dtype=D64)
    torch.testing.assert_close(meta(x), ref(x), rtol=1e-13, atol=1e-13)


def test_rma_form_and_definition():
    head = _head("random_matrix_adaption", {"r": 2})
    psi = head.reconciliation
    assert isinstance(psi, RandomMatrixAdaption)
    w = head.w[0]
    lam1, lam2 = w[:4], w[4:]
    expect = torch.diag(lam1) @ psi.A @ torch.diag(lam2) @ psi.B.T
    torch.testing.assert_close(psi.reconcile(w, 4, 5), expect, rtol=1e-14, atol=1e-14)
    assert head.structure().reconciliation.form.kind == "lowrank"


def test_errors():
    with pytest.raises(ConfigurationError, match="r must be an integer >= 1, got 0"):
        rpnkit.build_reconciliation("random_matrix_hypernet", r=0)
    psi = rpnkit.build_reconciliation("random_matrix_hypernet", l=3)
    with pytest.raises(ConfigurationError, match="call .bind"):
        psi.reconcile(torch.zeros(3), 2, 2)
