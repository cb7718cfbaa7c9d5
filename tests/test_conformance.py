"""The conformance matrix: every planned path × every PyTorch property, against the definition.

Samples (tests/_conformance.py) cover every (expansion, reconciliation) pair of the catalog at
sizes that reach every path of the planner. Each property below is checked against the dense
definition fuse_c(κ(x) ψ(w^c)ᵀ) + b + π(x) in float64 (or against float32 under autocast):
forward, backward, double backward (a gradient penalty), autocast bf16 / fp16 forward+backward,
``torch.export``, meta → ``to_empty`` → ``load_state_dict``, ``state_dict`` round trip,
deepcopy / pickle, non-contiguous and ``(*, m)`` input, empty batch, batch independence and
float32 against float64. ``torch.compile(fullgraph=True)`` and DDP run in the ``slow`` suite
(with tests/test_compile.py and tests/test_ddp.py).

The default suite runs a sample of the matrix: up to ``PER_PATH`` samples of every path
(spread over the list); ``-m slow`` runs all of it. ``test_coverage_table`` prints the
path × sample table and fails when a path is reached by fewer than 5 samples.
"""

from __future__ import annotations

import collections
import copy
import io
import pickle

import pytest
import torch

from _conformance import D64, definition, path_of, samples

ALL = samples()
PER_PATH = 2
#: paths every conformant head must reach (kron-structured by method; local B-spline bases)
REQUIRED = ("dense-bilinear", "sym-bilinear", "lowrank-bilinear", "kron-structured/gemm",
            "kron-structured/fft", "kron-structured/rank-one", "rowsum", "eye-prefix", "zero",
            "materialised-κ", "local-spline", "fused")


def _paths():
    table = {}
    for s in ALL:
        try:
            head = s.build()
        except Exception:
            continue
        table[s] = path_of(head)
    return table


PATHS_OF = _paths()
BUILT = list(PATHS_OF)


def _sampled():
    by_path = collections.defaultdict(list)
    for s, p in PATHS_OF.items():
        by_path[p].append(s)
    picked = []
    for p in sorted(by_path):
        group = by_path[p]
        step = max(1, len(group) // PER_PATH)
        picked.extend(group[::step][:PER_PATH])
    return picked


SAMPLED = _sampled()
SAMPLED_IDS = {s.id for s in SAMPLED}


def matrix():
    """Default suite: the sampled subset; ``-m slow``: every sample not already sampled."""
    params = [pytest.param(s, id=s.id) for s in SAMPLED]
    params += [pytest.param(s, id=s.id, marks=pytest.mark.slow) for s in BUILT
               if s.id not in SAMPLED_IDS]
    return params


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().to(D64), b.detach().to(D64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-3)) if b.numel() else 0.0


def test_coverage_table(capsys):
    count = collections.Counter(PATHS_OF.values())
    rows = collections.Counter()
    for p, c in count.items():
        rows[p.split("+")[0]] += c
        if p.endswith("+local-spline"):
            rows["local-spline"] += c
    with capsys.disabled():
        print("\nconformance coverage (path: samples | sampled in the default suite)")
        sampled = collections.Counter(PATHS_OF[s].split("+")[0] for s in SAMPLED)
        sampled["local-spline"] = sum(1 for s in SAMPLED if PATHS_OF[s].endswith("local-spline"))
        for p in REQUIRED:
            print(f"  {p:28s} {rows[p]:4d} | {sampled[p]}")
        print(f"  {'samples':28s} {len(BUILT):4d} | {len(SAMPLED)}")
    thin = {p: rows[p] for p in REQUIRED if rows[p] < 5}
    assert not thin, f"paths reached by fewer than 5 samples: {thin}"


@pytest.mark.parametrize("s", matrix())
def test_forward_backward_double_backward(s):
    head = s.build()
    x = s.inputs().requires_grad_(True)
    y, ref = head(x), definition(head, x)
    assert rel(y, ref) < 1e-10
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=D64)
    params = [p for p in head.parameters() if p.requires_grad]
    g = torch.autograd.grad((y * r).sum(), [x, *params], allow_unused=True)
    gr = torch.autograd.grad((ref * r).sum(), [x, *params], allow_unused=True)
    for a, b in zip(g, gr):
        if a is not None or b is not None:
            assert a is not None
            assert b is not None
            assert rel(a, b) < 1e-9
    # the gradient-penalty pattern (PINN, WGAN-GP): L = Σ y r + |∂(Σ y r)/∂x|²

    def penalty(out):
        (dx,) = torch.autograd.grad((out * r).sum(), x, create_graph=True)
        return (out * r).sum() + (dx ** 2).sum()

    if not params:
        return
    gp = torch.autograd.grad(penalty(head(x)), params, allow_unused=True)
    gpr = torch.autograd.grad(penalty(definition(head, x)), params, allow_unused=True)
    for a, b in zip(gp, gpr):
        if a is not None and b is not None:
            assert rel(a, b) < 1e-8


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("s", matrix())
def test_autocast(s, dtype):
    head = s.build(dtype=torch.float32)
    x = s.inputs(b=6, dtype=torch.float32).requires_grad_(True)
    ref = head(x).detach()
    with torch.autocast("cpu", dtype=dtype):
        y = head(x)
    assert y.shape == ref.shape
    assert torch.isfinite(y).all()
    # documented accuracy: a half-precision GEMM of D terms, relative to the output's scale
    assert rel(y.float(), ref) < 0.1
    y.float().sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in head.parameters())
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("s", matrix())
def test_export(s):
    head = s.build()
    x = s.inputs()
    ep = torch.export.export(head, (x,))
    got = ep.module()(s.inputs(seed=7))
    assert rel(got, head(s.inputs(seed=7))) < 1e-10
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    again = torch.export.load(buf).module()(x)
    assert rel(again, head(x)) < 1e-10


@pytest.mark.parametrize("s", matrix())
def test_meta_init_then_load(s):
    ref = s.build()
    x = s.inputs()
    meta = s.build(device="meta")
    meta.to_empty(device="cpu")
    meta.load_state_dict(ref.state_dict())
    assert rel(meta(x), ref(x)) < 1e-12
    again = s.build(device="meta")
    again.to_empty(device="cpu")
    again.reset_parameters()
    again.load_state_dict(ref.state_dict())
    assert rel(again(x), ref(x)) < 1e-12
    assert again.plan() == ref.plan()


@pytest.mark.parametrize("s", matrix())
def test_state_dict_copy_pickle(s):
    head = s.build()
    x = s.inputs()
    y = head(x)
    other = s.build()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    other.load_state_dict(head.state_dict())
    assert rel(other(x), y) < 1e-12
    assert rel(copy.deepcopy(head)(x), y) < 1e-12
    assert rel(pickle.loads(pickle.dumps(head))(x), y) < 1e-12


@pytest.mark.parametrize("s", matrix())
def test_input_layouts_and_batch_independence(s):
    head = s.build()
    x = s.inputs(b=6)
    y = head(x)
    wide = torch.stack([x, x], dim=2)[..., 0]  # a non-contiguous view with the same values
    assert not wide.is_contiguous()
    assert rel(head(wide), y) < 1e-12
    assert rel(head(x.reshape(2, 3, s.m)), y.reshape(2, 3, -1)) < 1e-12
    assert head(x[:0]).shape == (0, head.n)
    for i in (0, 4):
        assert rel(head(x[i:i + 1]), y[i:i + 1]) < 1e-10
    assert rel(head(x[:3]), y[:3]) < 1e-10


@pytest.mark.parametrize("s", matrix())
def test_float32_matches_float64(s):
    h64 = s.build()
    h32 = copy.deepcopy(h64).float()
    x = s.inputs()
    y32 = h32(x.float())
    assert y32.dtype == torch.float32
    assert rel(y32, h64(x)) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("s", [pytest.param(s, id=s.id) for s in SAMPLED])
def test_compile_fullgraph(s):
    torch._dynamo.reset()  # every sample compiles afresh: no recompile limit carried over
    head = s.build()
    x = s.inputs()
    compiled = torch.compile(head, fullgraph=True, dynamic=False)
    try:
        assert rel(compiled(x), head(x)) < 1e-10
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("s", matrix())
def test_vmap_over_stacked_copies(s):
    """Batched seeds (rpnkit.training.seeds): two copies of the head stacked and run under
    ``torch.func.vmap(functional_call)`` equal the two heads run alone, values and gradients
    (fused small heads take their batched vmap rule, every other path vmaps op by op)."""
    heads = [s.build(), s.build()]
    with torch.no_grad():
        g = torch.Generator().manual_seed(11)
        for p in heads[1].parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    params, buffers = torch.func.stack_module_state(heads)
    params = {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in params.items()}
    x = torch.stack([s.inputs(b=5), s.inputs(b=5) * 0.5])
    base = copy.deepcopy(heads[0])
    y = torch.func.vmap(lambda p, b, xx: torch.func.functional_call(base, (p, b), (xx,)))(
        params, buffers, x)
    ref = torch.stack([h(xx) for h, xx in zip(heads, x)])
    assert rel(y, ref) < 1e-10
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=y.dtype)
    names = [k for k, v in params.items() if v.requires_grad]
    if not names:
        return
    got = torch.autograd.grad((y * r).sum(), [params[k] for k in names])
    want = torch.autograd.grad((ref * r).sum(), [dict(h.named_parameters())[k] for h in heads
                                                 for k in names])
    for i, k in enumerate(names):
        assert rel(got[i], torch.stack([want[i], want[len(names) + i]])) < 1e-9, k
