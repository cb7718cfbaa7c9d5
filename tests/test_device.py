"""Device preservation on CUDA (skipped where no GPU is present)."""

from __future__ import annotations

import pytest
import torch

import rpnkit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

EXPANSIONS = {
    "taylor": {"d": 3}, "fourier": {"N": 2}, "gaussian_rbf": {"K": 4},
    "inverse_quadratic_rbf": {"K": 4}, "bspline": {}, "chebyshev": {}, "jacobi": {},
    "combinatorial": {"d": 3}, "combinatorial_normal": {"d": 2},
    "nested": {"expansions": ["chebyshev", "taylor"]},
    "extended": {"expansions": ["bspline", {"name": "taylor", "symmetric": True}]},
}  # fmt: skip
RECONCILIATIONS = {
    "identity": {}, "masking": {}, "duplicated_padding": {"q": 3}, "lorr": {}, "hm": {"q": 3},
    "lphm": {"q": 3}, "dual_lphm": {"q": 3}, "random_matrix_adaption": {},
    "hypernet": {"l": 6, "hidden": 5}, "constant": {}, "zero": {}, "one": {}, "constant_eye": {},
}  # fmt: skip


def _x(b=6, m=3, dtype=torch.float64):
    return torch.rand(b, m, generator=torch.Generator().manual_seed(0), dtype=dtype) * 1.6 - 0.8


@pytest.mark.parametrize("name", rpnkit.list_components()["expansion"])
def test_expansions_on_cuda(name):
    kappa = rpnkit.build_expansion(name, **EXPANSIONS.get(name, {}))
    x = _x()
    ref = kappa(x)
    out = kappa(x.cuda())  # buffers follow the input even before .cuda()
    assert out.device.type == "cuda"
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-9, atol=1e-10)
    kappa.cuda()
    torch.testing.assert_close(kappa(x.cuda().float()).cpu().double(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(RECONCILIATIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_heads_on_cuda(name, dtype):
    head = rpnkit.RPNHead(3, 4, expansion="taylor", reconciliation=name,
                          reconciliation_params=RECONCILIATIONS[name], remainder="linear",
                          channels=2, bias=True, output=["layer_norm"])
    x = _x(dtype=dtype)
    head = head.to(dtype)
    ref = head(x)
    head.cuda()
    assert all(t.device.type == "cuda" for t in head.state_dict().values())
    out = head(x.cuda())
    assert out.device.type == "cuda"
    assert out.dtype == dtype
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-10}
    torch.testing.assert_close(out.cpu(), ref, **tol)
    W = head.reconciled_weights()  # noqa: N806
    assert W.device.type == "cuda"
    out.sum().backward()
    if head.l > 0:
        assert head.w.grad is not None
        assert head.w.grad.device.type == "cuda"


def test_state_dict_moves_between_devices():
    head = rpnkit.RPNHead(3, 4, expansion="bspline", reconciliation="masking", remainder="linear").cuda()
    cpu = rpnkit.RPNHead(3, 4, expansion="bspline", reconciliation="masking",
                         reconciliation_params={"seed": 3}, remainder="linear")
    cpu.load_state_dict(head.state_dict())
    x = _x(dtype=torch.float32)
    torch.testing.assert_close(cpu(x), head(x.cuda()).cpu(), rtol=1e-5, atol=1e-6)


def test_mnist_sized_model_on_cuda():
    model = rpnkit.RPN.from_dims(
        [784, 64, 64, 10], expansion="taylor", reconciliation="lorr", remainder="zero",
        expansion_params={"d": 2}, reconciliation_params={"r": 2},
    ).cuda()  # fmt: skip
    x = torch.rand(32, 1, 28, 28, device="cuda")
    y = model(x)
    assert y.shape == (32, 10)
    assert torch.isfinite(y).all()
    torch.nn.functional.cross_entropy(y, torch.zeros(32, dtype=torch.long, device="cuda")).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
