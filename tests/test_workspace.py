"""rpnkit.workspace.BlockPool: the dense B-spline block is reused across steps on the CPU only
when nothing uses it any more, so reuse never changes a value or a gradient."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest
import torch

import rpnkit
from rpnkit import workspace
from rpnkit.workspace import BlockPool

BIG = (128, 4096)  # 2 MiB of float32: pooled


def test_small_blocks_and_inference_mode_are_not_pooled():
    pool = BlockPool()
    x = torch.zeros(1)
    pool.take((4, 4), x)
    assert pool.blocks == []
    with torch.inference_mode():
        pool.take(BIG, x)
    assert pool.blocks == []
    pool.take(BIG, x)
    assert len(pool.blocks) == 1


def test_disabled_pools_keep_nothing(monkeypatch):
    monkeypatch.setattr(workspace, "ENABLED", False)
    pool = BlockPool()
    assert pool.take(BIG, torch.zeros(1)).shape == BIG
    assert pool.blocks == []


def test_a_block_is_lent_again_only_when_free():
    pool = BlockPool(cap=2)
    x = torch.zeros(1)
    a = pool.take(BIG, x)
    b = pool.take(BIG, x)  # a is still held: a second block
    assert a.data_ptr() != b.data_ptr()
    c = pool.take(BIG, x)  # both held and the pool is full: a plain new tensor
    assert c.data_ptr() not in (a.data_ptr(), b.data_ptr())
    assert len(pool.blocks) == 2
    ptr = a.data_ptr()
    del a
    assert pool.take(BIG, x).data_ptr() == ptr  # free again: reused
    view = b[:2]  # a view keeps the storage in use
    del b
    assert pool.take(BIG, x).data_ptr() != view.data_ptr()


def test_smaller_requests_reuse_a_larger_block_and_other_dtypes_replace_it():
    pool = BlockPool(cap=1)
    x = torch.zeros(1)
    ptr = pool.take(BIG, x).data_ptr()
    small = pool.take((64, 4096), x)  # 1 MiB: pooled, fits in the 2 MiB block
    assert small.data_ptr() == ptr
    assert small.shape == (64, 4096)
    del small
    d = pool.take(BIG, x.double())
    assert d.dtype == torch.float64
    assert pool.blocks[0].dtype == torch.float64


def test_copies_and_pickles_get_an_empty_pool():
    pool = BlockPool(cap=3)
    keep = pool.take(BIG, torch.zeros(1))
    for other in (copy.deepcopy(pool), pickle.loads(pickle.dumps(pool))):
        assert other.cap == 3
        assert other.blocks == []
    assert keep.shape == BIG
    with pytest.raises(ValueError, match="cap must be >= 1"):
        BlockPool(cap=0)


def test_threads_never_share_a_block():
    pool = BlockPool(cap=4)
    x = torch.zeros(1)
    held, lock = [], threading.Lock()

    def work():
        t = pool.take(BIG, x)
        with lock:
            held.append(t)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({t.data_ptr() for t in held}) == 8


def _kan_grads(model, xs):
    model.zero_grad()
    loss = sum(model(x).square().mean() for x in xs)  # forwards pending together
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_reuse_never_changes_values_or_gradients(monkeypatch):
    monkeypatch.setattr(workspace, "MIN_BYTES", 1)  # pool even these small blocks
    torch.manual_seed(0)
    model = rpnkit.models.KAN([300, 4, 2]).double()
    xs = [torch.rand(16, 300, dtype=torch.float64) * 2 - 1 for _ in range(3)]
    exp = model.layers[0].heads[0].expansion
    held = exp.local_basis(xs[0])  # an output the caller keeps
    snapshot = held.clone()
    first = _kan_grads(model, xs)  # three forwards before one backward
    assert exp._pool.blocks  # the pool is in use
    again = _kan_grads(model, xs)  # blocks reused once free
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(held, snapshot, rtol=0, atol=0)  # never overwritten
    monkeypatch.setattr(workspace, "MIN_BYTES", 1 << 60)  # no pooling: the same gradients
    for a, b in zip(first, _kan_grads(model, xs)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_cast_releases_the_pool(monkeypatch):
    monkeypatch.setattr(workspace, "MIN_BYTES", 1)
    e = rpnkit.build_expansion("bspline", t=5, d=3)
    x = torch.rand(8, 20) * 2 - 1
    e.local_basis(x)
    assert e._pool.blocks
    e.double()
    assert e._pool.blocks == []
    torch.testing.assert_close(e.local_basis(x.double()), e.expand(x.double()), rtol=0,
                               atol=1e-13)
    assert copy.deepcopy(e)._pool.blocks == []
