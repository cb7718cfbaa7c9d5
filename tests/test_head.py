"""RPNHead semantics (SPEC §1, §5, §7): formula, channels, bias, binding, state, dtypes, init."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import rpnkit
from rpnkit.errors import ConfigurationError, UnknownNameError
from rpnkit.registry import EXPANSIONS

RECONCILIATIONS = {
    "identity": {},
    "masking": {"p": 0.5},
    "duplicated_padding": {"p": 2, "q": 3},
    "lorr": {"r": 2},
    "hm": {"p": 2, "q": 3},
    "lphm": {"p": 2, "q": 3, "r": 2},
    "dual_lphm": {"p": 2, "q": 3, "r": 2},
    "random_matrix_adaption": {"r": 2},
    "hypernet": {"l": 8, "hidden": 6},
    "constant": {"c": 0.5},
    "zero": {},
    "one": {},
    "constant_eye": {},
}


def _x(b: int = 6, m: int = 3, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, m, generator=g, dtype=torch.float64) * 1.6 - 0.8).to(dtype)


def _reference(head: rpnkit.RPNHead, x: torch.Tensor) -> torch.Tensor:
    """fuse_c(κ(x) ψ(w^c)ᵀ) + b + π(x), from the dense definition."""
    kx = head.expansion(x)
    W = head.reconciled_weights().to(x.dtype)  # noqa: N806
    parts = torch.einsum("bd,cnd->cbn", kx, W)
    y = parts.sum(0) if head.channel_fusion == "sum" else parts.mean(0)
    if head.bias is not None:
        y = y + head.bias.to(x.dtype)
    return y + head.remainder(x)


@pytest.mark.parametrize("psi", list(RECONCILIATIONS))
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_matches_the_definition(psi, channels):
    head = rpnkit.RPNHead(
        3, 4, expansion="taylor", reconciliation=psi, reconciliation_params=RECONCILIATIONS[psi],
        remainder="linear", channels=channels, bias=True,
    ).double()  # fmt: skip
    with torch.no_grad():
        head.bias.normal_()
    assert head.D == 12
    assert head.w.shape == (channels, head.reconciliation.calculate_l(4, 12))
    assert head.reconciled_weights().shape == (channels, 4, 12)
    x = _x()
    torch.testing.assert_close(head(x), _reference(head, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("kappa", "params"),
    [("bspline", {}), ("gaussian_rbf", {"K": 3}), ("combinatorial_normal", {"d": 2}),
     ("extended", {"expansions": ["bspline", "taylor"]}), ("fourier", {"N": 2})],
)
def test_forward_matches_the_definition_for_other_expansions(kappa, params):
    head = rpnkit.RPNHead(3, 2, expansion=kappa, expansion_params=params, reconciliation="lorr",
                          remainder="zero", channels=2, channel_fusion="mean").double()
    x = _x()
    torch.testing.assert_close(head(x), _reference(head, x), rtol=1e-10, atol=1e-12)


def test_explicit_formula_lorr_head():
    """g(x) = A Bᵀ κ(x) + π(x) written out by hand for a Taylor d=2 head."""
    head = rpnkit.RPNHead(2, 3, expansion=rpnkit.build_expansion("taylor", d=2),
                          reconciliation=rpnkit.build_reconciliation("lorr", r=1),
                          remainder="zero").double()
    x = _x(b=4, m=2)
    w = head.w[0].detach()
    a, b = w[:3].reshape(3, 1), w[3:].reshape(6, 1)
    x0, x1 = x[:, 0], x[:, 1]
    kx = torch.stack([x0, x1, x0 * x0, x0 * x1, x1 * x0, x1 * x1], dim=1)
    torch.testing.assert_close(head(x), kx @ (a @ b.T).T)


def test_channel_fusion_identities():
    torch.manual_seed(0)
    kw = {"expansion": "chebyshev", "reconciliation": "lorr", "remainder": "linear"}
    head = rpnkit.RPNHead(3, 2, channels=3, **kw).double()
    x = _x()
    singles = []
    for c in range(3):
        one = rpnkit.RPNHead(3, 2, channels=1, **kw).double()
        with torch.no_grad():
            one.w.copy_(head.w[c : c + 1])
            one.remainder.weight.copy_(head.remainder.weight)
        singles.append(one(x) - one.remainder(x))
    pi = head.remainder(x)
    torch.testing.assert_close(head(x), sum(singles) + pi)
    head.channel_fusion = "mean"
    torch.testing.assert_close(head(x), sum(singles) / 3 + pi)
    # sum is the default and the model's definition
    assert rpnkit.RPNHead(3, 2).channel_fusion == "sum"


def test_defaults_are_a_linear_map_without_bias():
    head = rpnkit.RPNHead(3, 2)
    assert head.bias is None
    assert isinstance(head.expansion, rpnkit.expansion.Identity)
    assert isinstance(head.reconciliation, rpnkit.reconciliation.IdentityReconciliation)
    assert isinstance(head.remainder, rpnkit.remainder.ZeroRemainder)
    assert isinstance(head.w, nn.Parameter)
    x = _x(dtype=torch.float32)
    torch.testing.assert_close(head(x), x @ head.w.detach().reshape(2, 3).T)
    assert head.bias is None
    assert rpnkit.RPNHead(3, 2, bias=True).bias.shape == (2,)


def test_components_given_as_modules_are_used_and_bound_at_construction():
    kappa = rpnkit.build_expansion("taylor", d=2)
    psi = rpnkit.build_reconciliation("masking")
    pi = rpnkit.build_remainder("linear")
    head = rpnkit.RPNHead(3, 4, expansion=kappa, reconciliation=psi, remainder=pi)
    assert head.expansion is kappa
    assert head.reconciliation is psi
    assert head.remainder is pi
    assert psi.mask.shape == (4, 12)  # before any forward
    assert pi.weight.shape == (4, 3)
    w = head.w[0].detach()
    torch.testing.assert_close(psi.reconcile(w, 4, 12), psi.mask * w.reshape(4, 12))
    x = _x(dtype=torch.float32)
    torch.testing.assert_close(pi(x), x @ pi.weight.detach().T)
    assert {"reconciliation.mask", "remainder.weight", "w"} <= set(head.state_dict())


def test_components_by_mapping():
    head = rpnkit.RPNHead(4, 2, expansion={"name": "taylor", "d": 3},
                          reconciliation={"name": "lorr", "params": {"r": 3}})
    assert head.expansion.d == 3
    assert head.reconciliation.r == 3
    assert head.l == 3 * (2 + 4 + 16 + 64)


@pytest.mark.parametrize(
    ("psi", "kw"),
    [("masking", {}), ("random_matrix_adaption", {}), ("hypernet", {"l": 5, "hidden": 4})],
)
def test_state_dict_round_trip_into_a_fresh_head(psi, kw):
    make = lambda seed: rpnkit.RPNHead(  # noqa: E731
        3, 2, expansion="taylor", reconciliation=psi, reconciliation_params=kw | {"seed": seed},
        remainder="linear", bias=True, channels=2,
    )  # fmt: skip
    head = make(0)
    fresh = make(5)
    x = _x(dtype=torch.float32)
    assert not torch.allclose(fresh(x), head(x))
    fresh.load_state_dict(head.state_dict())
    torch.testing.assert_close(fresh(x), head(x), rtol=0, atol=0)
    if psi == "masking":
        assert torch.equal(fresh.reconciliation.mask, head.reconciliation.mask)


def test_masking_head_reloads_the_same_mask_with_torch_save(tmp_path):
    head = rpnkit.RPNHead(5, 4, reconciliation="masking", reconciliation_params={"p": 0.3})
    path = tmp_path / "head.pt"
    torch.save(head.state_dict(), path)
    fresh = rpnkit.RPNHead(5, 4, reconciliation="masking", reconciliation_params={"p": 0.3, "seed": 9})
    fresh.load_state_dict(torch.load(path))
    assert torch.equal(fresh.reconciliation.mask, head.reconciliation.mask)
    # masked entries stay zero in W
    W = fresh.reconciled_weights()[0]  # noqa: N806
    assert torch.all(W[fresh.reconciliation.mask == 0] == 0)


@pytest.mark.parametrize("psi", ["masking", "random_matrix_adaption", "hypernet", "lorr"])
def test_double_and_to_move_parameters_and_buffers(psi):
    head = rpnkit.RPNHead(3, 2, expansion="bspline", reconciliation=psi, remainder="linear",
                          bias=True, output=["layer_norm"])
    head.to(torch.float64)
    for name, t in head.state_dict().items():
        assert t.dtype == torch.float64, name
    assert head(_x()).dtype == torch.float64
    head.float()
    assert head.w.dtype == torch.float32
    assert head(_x(dtype=torch.float32)).dtype == torch.float32


@pytest.mark.parametrize("psi", list(RECONCILIATIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_policy_the_parameters_decide(psi, dtype):
    """Input is cast once at the head's entry to the parameter dtype (README: dtype policy)."""
    head = rpnkit.RPNHead(3, 4, expansion="taylor", reconciliation=psi,
                          reconciliation_params=RECONCILIATIONS[psi], remainder="linear", bias=True)
    x = _x(dtype=dtype)
    y = head(x)
    assert y.dtype == torch.float32
    ref = _reference(head, x.float().double())
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-5)
    head.double()
    y64 = head(x)
    assert y64.dtype == torch.float64
    torch.testing.assert_close(y64, _reference(head, x.double()), rtol=1e-10, atol=1e-12)


def test_float64_input_to_a_float32_head_is_computed_in_float32():
    head = rpnkit.RPNHead(3, 2, expansion="taylor", reconciliation="lorr", remainder="linear")
    x = _x()
    y = head(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, head(x.float()), rtol=0, atol=0)


def test_integer_input_is_accepted():
    head = rpnkit.RPNHead(3, 2, expansion="taylor")
    assert head(torch.ones(2, 3, dtype=torch.int64)).dtype == torch.float32


@pytest.mark.parametrize("psi", [p for p in RECONCILIATIONS if p not in ("constant", "zero", "one", "constant_eye")])
def test_gradcheck_through_the_head(psi):
    head = rpnkit.RPNHead(3, 4, expansion="taylor", reconciliation=psi,
                          reconciliation_params=RECONCILIATIONS[psi], remainder="linear",
                          channels=2, bias=True).double()
    x = _x(b=3).requires_grad_(True)
    assert torch.autograd.gradcheck(head, (x,))
    w0 = head.w.detach().clone().requires_grad_(True)

    def with_w(w):
        return torch.func.functional_call(head, {"w": w}, (x.detach(),))

    assert torch.autograd.gradcheck(with_w, (w0,))


def test_output_modules_are_registered_and_follow_eval():
    drop = nn.Dropout(0.9)
    head = rpnkit.RPNHead(3, 4, output=["layer_norm", drop, "relu"])
    assert isinstance(head.output[0], nn.LayerNorm)
    assert head.output[0].normalized_shape == (4,)
    assert {"output.0.weight", "output.0.bias"} <= set(head.state_dict())
    head.eval()
    assert not drop.training
    x = _x(dtype=torch.float32)
    lin = x @ head.w.detach().reshape(4, 3).T
    torch.testing.assert_close(head(x), torch.relu(nn.functional.layer_norm(lin, (4,))))
    head.train()
    assert drop.training


def test_input_validation():
    head = rpnkit.RPNHead(3, 2)
    with pytest.raises(ValueError, match=r"\(\*, 3\)"):
        head(torch.zeros(2, 4))
    assert head(torch.zeros(3)).shape == (2,)  # (*, m) like nn.Linear
    assert head(torch.zeros(4, 5, 3)).shape == (4, 5, 2)
    with pytest.raises(ValueError):
        head(torch.zeros(()))
    with pytest.raises(TypeError):
        head([[0.0, 1.0, 2.0]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"m": 0}, "m must be a positive integer"),
        ({"n": 2.5}, "n must be a positive integer"),
        ({"channels": 0}, "channels"),
        ({"channel_fusion": "max"}, "channel_fusion"),
        ({"expansion": nn.Linear(3, 3)}, "expansion must be an rpnkit Expansion"),
        ({"expansion": rpnkit.build_expansion("taylor"), "expansion_params": {"d": 3}}, "already-built"),
        ({"expansion": "taylr"}, "did you mean 'taylor'"),
        ({"reconciliation": "lor"}, "did you mean 'lorr'"),
        ({"remainder": "lineer"}, "did you mean 'linear'"),
        ({"expansion": "taylor", "expansion_params": {"degree": 2}}, "unknown parameter 'degree'"),
        ({"remainder": "identity", "n": 5}, "needs m == n"),
        ({"reconciliation": "hm", "reconciliation_params": {"p": 4}}, r"p=4 must divide n=2.*\[1, 2\]"),
        ({"init": "xavier_unifrom"}, "did you mean 'xavier_uniform'"),
        ({"expansion": 3}, "cannot build"),
    ],
)
def test_construction_errors(kwargs, match):
    args = {"m": 3, "n": 2} | kwargs
    with pytest.raises(ConfigurationError, match=match):
        rpnkit.RPNHead(**args)


def test_unknown_name_error_is_also_a_key_error():
    with pytest.raises(KeyError):
        rpnkit.RPNHead(3, 2, expansion="nope")
    with pytest.raises(UnknownNameError):
        rpnkit.RPNHead(3, 2, init="nope")


def test_shared_component_cannot_be_bound_to_two_sizes():
    psi = rpnkit.build_reconciliation("masking")
    rpnkit.RPNHead(3, 2, reconciliation=psi)
    with pytest.raises(ConfigurationError, match="already bound"):
        rpnkit.RPNHead(3, 5, reconciliation=psi)


def test_plan_and_repr_are_strings():
    head = rpnkit.RPNHead(3, 2, expansion="taylor", reconciliation="lorr")
    assert isinstance(head.plan(), str)
    assert "D=12" in repr(head)


# -- initialisation (SPEC §5) -----------------------------------------------------------------


def _rms(head):
    return head.reconciled_weights().pow(2).mean().sqrt().item()


def test_default_init_identity_matches_nn_linear_scale():
    torch.manual_seed(0)
    D = 400  # noqa: N806
    head = rpnkit.RPNHead(D, 50)
    W = head.reconciled_weights()  # noqa: N806
    bound = 1 / math.sqrt(D)
    assert W.abs().max().item() <= bound
    assert _rms(head) == pytest.approx(1 / math.sqrt(3 * D), rel=0.03)


@pytest.mark.parametrize(
    ("psi", "kw"),
    [("lorr", {"r": 2}), ("hm", {"p": 2, "q": 5}), ("lphm", {"p": 2, "q": 5}),
     ("dual_lphm", {"p": 2, "q": 5}), ("random_matrix_adaption", {})],
)
def test_default_init_structured_forms_hit_the_fan_in_scale(psi, kw):
    head = rpnkit.RPNHead(10, 8, expansion="taylor", reconciliation=psi,
                          reconciliation_params=kw, channels=2)
    D = head.D  # noqa: N806
    for c in range(2):
        rms = head.reconciled_weights()[c].pow(2).mean().sqrt().item()
        assert rms == pytest.approx(1 / math.sqrt(3 * D), rel=1e-4)


def test_init_depends_on_fan_in_not_parameter_count():
    a = rpnkit.RPNHead(20, 4, reconciliation="lorr", reconciliation_params={"r": 1})
    b = rpnkit.RPNHead(20, 400, reconciliation="lorr", reconciliation_params={"r": 8})
    assert _rms(a) == pytest.approx(_rms(b), rel=1e-4)


@pytest.mark.parametrize(
    ("scheme", "std"),
    [("xavier_uniform", lambda n, d: math.sqrt(2 / (n + d))),
     ("xavier_normal", lambda n, d: math.sqrt(2 / (n + d))),
     ("kaiming_uniform", lambda n, d: math.sqrt(2 / d)),
     ("kaiming_normal", lambda n, d: math.sqrt(2 / d))],
)
def test_named_schemes(scheme, std):
    torch.manual_seed(1)
    head = rpnkit.RPNHead(300, 100, init=scheme)
    assert _rms(head) == pytest.approx(std(100, 300), rel=0.05)
    if scheme.endswith("uniform"):
        bound = math.sqrt(3) * std(100, 300)
        assert head.w.abs().max().item() <= bound + 1e-7
    lorr = rpnkit.RPNHead(30, 10, reconciliation="lorr", init=scheme)
    assert _rms(lorr) == pytest.approx(std(10, 30), rel=1e-4)


def test_zeros_init_and_reset_parameters():
    head = rpnkit.RPNHead(4, 3, reconciliation="lorr", bias=True, init="zeros")
    assert torch.all(head.w == 0)
    head.reset_parameters("default")
    assert _rms(head) == pytest.approx(1 / math.sqrt(12), rel=1e-4)
    with torch.no_grad():
        head.bias.fill_(1.0)
    head.reset_parameters()
    assert torch.all(head.w == 0)
    assert torch.all(head.bias == 0)


def test_fixed_reconciliations_have_no_parameters():
    head = rpnkit.RPNHead(3, 2, reconciliation="constant_eye")
    assert head.w.shape == (1, 0)
    x = _x(dtype=torch.float32)
    torch.testing.assert_close(head(x), x[:, :2])


@pytest.mark.parametrize("p", [0.25, 0.5, 1.0])
def test_masking_init_keeps_the_dense_rms(p):
    torch.manual_seed(0)
    head = rpnkit.RPNHead(400, 100, reconciliation="masking", reconciliation_params={"p": p})
    assert _rms(head) == pytest.approx(1 / math.sqrt(3 * 400), rel=0.05)
    kept = head.reconciled_weights()[0][head.reconciliation.mask == 1]
    assert kept.abs().max().item() <= 1 / math.sqrt(p * 400) + 1e-7


def test_float64_input_through_float32_processing_and_output_modules():
    """No cast copies: modules see the model dtype, so BatchNorm running stats update."""
    make = lambda: rpnkit.RPNHead(  # noqa: E731
        3, 4, expansion="taylor",
        expansion_params={"preprocess": "batch_norm", "postprocess": [nn.Linear(12, 12)]},
        reconciliation="lorr", remainder="linear", output=["layer_norm", "relu"],
    )  # fmt: skip
    head = make()
    x = _x()
    y = head(x)
    assert y.dtype == torch.float32
    assert head.expansion.preprocess[0].num_batches_tracked.item() == 1
    assert not torch.equal(head.expansion.preprocess[0].running_mean, torch.zeros(3))
    y.sum().backward()
    assert head.output[0].weight.grad.dtype == torch.float32
    assert head.expansion.postprocess[0].weight.grad is not None
    layer = rpnkit.RPNLayer(3, 4, heads=[make(), make()], fusion="linear", output="layer_norm")
    assert layer(x).dtype == torch.float32
    assert layer.double()(x).dtype == torch.float64


def _divisor(k: int, pick: int) -> int:
    divs = [i for i in range(1, k + 1) if k % i == 0]
    return divs[pick % len(divs)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    m=st.integers(1, 4), n=st.integers(1, 4), d=st.integers(1, 3), symmetric=st.booleans(),
    kappa=st.sampled_from(["taylor", "extended", "nested", "bspline"]),
    psi=st.sampled_from(["identity", "masking", "lorr", "hm", "lphm", "dual_lphm",
                         "duplicated_padding", "random_matrix_adaption", "constant_eye"]),
    channels=st.integers(1, 3), fusion=st.sampled_from(["sum", "mean"]),
    pick=st.integers(0, 7), remainder=st.sampled_from(["zero", "linear"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)  # fmt: skip
def test_head_equals_the_dense_definition_property(
    m, n, d, symmetric, kappa, psi, channels, fusion, pick, remainder, dtype
):
    taylor = {"name": "taylor", "d": d, "symmetric": symmetric}
    exp_spec = {
        "taylor": taylor,
        "extended": {"name": "extended", "expansions": [{"name": "bspline", "t": 2}, taylor]},
        "nested": {"name": "nested", "expansions": [{"name": "chebyshev", "d": 2}, taylor]},
        "bspline": {"name": "bspline", "t": 3, "d": d},
    }[kappa]
    D = EXPANSIONS.resolve(exp_spec).calculate_D(m)  # noqa: N806
    params = {}
    if psi in ("hm", "lphm", "dual_lphm", "duplicated_padding"):
        params = {"p": _divisor(n, pick), "q": _divisor(D, pick // 2 + pick)}
    if psi in ("lorr", "lphm", "dual_lphm"):
        params["r"] = 1 + pick % 2
    head = rpnkit.RPNHead(m, n, expansion=exp_spec, reconciliation=psi, reconciliation_params=params,
                          remainder=remainder, channels=channels, channel_fusion=fusion, bias=True)
    head.to(dtype)
    with torch.no_grad():
        head.bias.uniform_(-1, 1)
    x = _x(b=5, m=m, dtype=dtype, seed=pick)
    y = head(x)
    assert y.dtype == dtype
    assert y.shape == (5, n)
    ref = _reference(head.double(), x.double())
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(y.double(), ref, **tol)
