"""DistributedDataParallel (2 CPU processes, gloo) of RPN heads: one step equals one process.

Every registered parameter of a head must be used in forward, so DDP with the default
``find_unused_parameters=False`` works; and DDP's gradient averaging must reproduce the
single-process gradient. For each (expansion, reconciliation) case (built as in
test_structured.py: small sizes, float64, a fixed seed in every rank so the ranks start
identical, ``bias=True`` so that every head, l = 0 included, has a parameter DDP can sync):

* each rank takes one SGD step (lr 0.1) on its half of a fixed global batch of 8, with
  loss = mean over its half of y.square().sum(-1); DDP's averaging then equals the gradient
  of the same loss averaged over the full batch;
* each rank compares the updated state_dict with a single-process SGD step on the full
  batch (same loss), to 1e-10 relative (float64);
* a second forward through the DDP module (after the step) must run and equal the
  single-process model's output: it raises "Expected to have finished reduction in the
  prior iteration ..." when a registered parameter got no gradient in the step.

All cases of one test run inside ONE spawned 2-process group (start-up is paid once); the
workers write their failures to JSON files that the test reports. The workers are joined
with a timeout so that a hang fails the test instead of blocking CI.

RPN 2 (slow): interdependent heads, every ξ of the catalog around (κ, ψ) pairs (built as in
test_structured.py's ξ test, ``bias=True``), and an ``RPN.from_dims`` model with chain and
attention ξ, learned head fusion and max channel fusion, under the same check. The global
batch of 8 samples splits on dimension 0; ξ acts within a sample (its nodes, tokens, patches
or attributes), so DDP's averaging again equals the full-batch step.

Default run: a representative subset (all l = 0 reconciliations included). All pairs, and
the RPN 2 cases: ``pytest -m slow tests/test_ddp.py``.
"""

from __future__ import annotations

import copy
import datetime
import json
import socket
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from _catalog_cases import (
    ALL_CASES,
    CASES,
    L0_RECONCILIATIONS,
    XI_CASES,
    inputs,
    make_xi_head,
    rel,
    xi_inputs,
    xi_model,
)

TOL = 1e-10
WORLD = 2
BATCH = 8  # global batch; each rank takes BATCH // WORLD rows
LR = 0.1
JOIN_TIMEOUT_S = 300.0
COLLECTIVE_TIMEOUT_S = 60.0  # a desynchronised collective errors instead of hanging

DEFAULT = [
    *(f"taylor-{r}" for r in L0_RECONCILIATIONS),  # l = 0: head.w is (channels, 0)
    "taylor-identity",
    "taylor-masking",
    "taylor-lorr",
    "taylor-random_matrix_adaption",
    "taylor-hypernet",
    "taylor-duplicated_padding",
    "taylor-hm",
    "taylor-lphm",
    "taylor-dual_lphm",
    "taylor_sym-lorr",
    "bspline-identity",
    "extended-lorr",
    "nested-hm",
    "fourier-constant_eye",
]

#: RPN 2 cases: "xi:<ξ>-<κ>-<ψ>" (an InterdependentHead) and "xi_model" (RPN.from_dims with ξ)
XI_DDP = [
    *(f"xi:{xi}-taylor-lorr" for xi in XI_CASES),
    "xi:graph-bspline-identity",  # linear κ: A(X)·⟨X, W⟩ after the product
    "xi:chain-identity-identity",
    "xi:grid-fourier-hm",
    "xi:attention-taylor-dual_lphm",
    "xi:parameterised-chebyshev-random_matrix_adaption",
    "xi:kernel-identity-constant_eye",  # l = 0: the bias is the only parameter
    "xi_model",
]


def loss_fn(y: torch.Tensor) -> torch.Tensor:
    return y.square().sum(-1).mean()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_case(case_id: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The module (seeded: identical on every rank) and the global batch of a case."""
    if case_id == "xi_model":
        model, x = xi_model(BATCH)
        return model, x.detach()
    if case_id.startswith("xi:"):
        head, x = make_xi_head(*case_id[3:].split("-"), bias=True)
        return head, xi_inputs((BATCH, *x.shape[1:])).detach()
    if case_id.startswith("conf:"):  # a conformance-matrix sample (tests/_conformance.py)
        from _conformance import samples

        s = {s.id: s for s in samples()}[case_id[5:]]
        head = s.build(**({} if "bias" in s.options else {"bias": True}))
        return head, s.inputs(b=BATCH).detach()
    head = CASES[case_id].build(bias=True)  # seeded inside make_head
    return head, inputs(head.m, b=BATCH).detach()


def run_case(case_id: str, rank: int, problems: list[str]) -> None:
    """One DDP step vs one single-process step; appends the problems found to ``problems``."""
    head, x = build_case(case_id)
    ref = copy.deepcopy(head)
    half = BATCH // WORLD
    xr = x[rank * half:(rank + 1) * half]

    ddp = DDP(head)  # default find_unused_parameters=False: every parameter must get a grad
    opt = torch.optim.SGD(ddp.parameters(), lr=LR)
    opt.zero_grad()
    loss_fn(ddp(xr)).backward()
    opt.step()

    ref_opt = torch.optim.SGD(ref.parameters(), lr=LR)
    ref_opt.zero_grad()
    loss_fn(ref(x)).backward()
    ref_opt.step()

    got, want = head.state_dict(), ref.state_dict()
    if set(got) != set(want):
        problems.append(f"state_dict keys differ: {sorted(set(got) ^ set(want))}")
    for k in sorted(set(got) & set(want)):
        err = rel(got[k].double(), want[k].double())
        if got[k].shape != want[k].shape or not err <= TOL:
            problems.append(f"state_dict[{k!r}] differs from single-process step: rel {err:.3g}")
    # a second iteration's forward: DDP checks that the prior reduction finished
    y2 = ddp(xr)
    with torch.no_grad():
        err = rel(y2.detach(), ref(xr))
    if not err <= TOL:
        problems.append(f"output after the step differs from single-process: rel {err:.3g}")


def _worker(rank: int, world: int, port: int, case_ids: list[str], out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    result: dict = {"rank": rank, "failures": {}, "done": [], "seconds": None, "fatal": None}
    t0 = time.perf_counter()

    def save() -> None:  # after every case, so that a hang still leaves partial results
        result["seconds"] = time.perf_counter() - t0
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))

    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
        )
        for cid in case_ids:
            problems: list[str] = []
            try:
                run_case(cid, rank, problems)
            except Exception as e:  # reported back to the test
                msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                msg = msg if len(msg) <= 200 else msg[:200] + " ..."
                problems.append(f"{type(e).__name__}: {msg}")
            if problems:
                result["failures"][cid] = problems
            result["done"].append(cid)
            save()
        dist.barrier()
    except Exception:  # reported back to the test
        result["fatal"] = traceback.format_exc()
    finally:
        save()
        if dist.is_initialized():
            dist.destroy_process_group()


def run_group(case_ids: list[str], out_dir: Path) -> list[dict]:
    """Run all cases in one spawned 2-process group; return each rank's result."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, WORLD, port, case_ids, str(out_dir)), daemon=True)
        for r in range(WORLD)
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)
    results = []
    for r, p in enumerate(procs):
        f = out_dir / f"rank{r}.json"
        if f.exists():
            results.append(json.loads(f.read_text()))
        else:
            results.append({"rank": r, "failures": {}, "done": [], "seconds": None,
                            "fatal": f"no result (exit code {p.exitcode})"})
    if hung:
        pytest.fail(f"DDP workers {hung} still running after {JOIN_TIMEOUT_S:.0f} s; "
                    f"partial results: {results}")
    return results


def check_group(case_ids: list[str], out_dir: Path) -> None:
    results = run_group(case_ids, out_dir)
    lines = []
    for res in results:
        if res["fatal"]:
            lines.append(f"rank {res['rank']} fatal: {res['fatal']}")
        missing = [c for c in case_ids if c not in res["done"]]
        if missing and not res["fatal"]:
            lines.append(f"rank {res['rank']} did not run: {missing}")
    failed = {}
    for res in results:
        for cid, problems in res["failures"].items():
            for prob in problems:
                failed.setdefault(cid, {}).setdefault(prob, []).append(res["rank"])
    for cid in case_ids:
        for prob, ranks in failed.get(cid, {}).items():
            lines.append(f"{cid} (rank {','.join(map(str, ranks))}): {prob}")
    assert not lines, (f"{len(failed)} of {len(case_ids)} cases fail under DDP:\n"
                       + "\n".join(lines))


def test_ddp_one_step_equals_single_process(tmp_path):
    check_group(DEFAULT, tmp_path)


@pytest.mark.slow
def test_ddp_one_step_equals_single_process_all_pairs(tmp_path):
    check_group([c.id for c in ALL_CASES], tmp_path)


@pytest.mark.slow
def test_ddp_interdependent_heads_and_model_one_step_equal_single_process(tmp_path):
    check_group(XI_DDP, tmp_path)


@pytest.mark.slow
def test_ddp_conformance_samples_of_every_path(tmp_path):
    """The conformance matrix's DDP property: two samples of every planned path."""
    from _conformance import path_of, samples

    by_path: dict[str, list[str]] = {}
    for s in samples():
        try:
            by_path.setdefault(path_of(s.build()), []).append(s.id)
        except Exception:
            continue
    ids = [f"conf:{i}" for group in by_path.values() for i in group[:2]]
    check_group(ids, tmp_path)


def test_default_subset_names_exist():
    assert set(DEFAULT) <= set(CASES)
    assert {c[3:].split("-")[0] for c in XI_DDP if c.startswith("xi:")} == set(XI_CASES)
    for case_id in XI_DDP:  # every case builds, and its batch splits evenly
        module, x = build_case(case_id)
        assert x.shape[0] == BATCH
        assert module(x[: BATCH // WORLD]).shape[0] == BATCH // WORLD
