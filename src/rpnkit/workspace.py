"""Reusable CPU blocks for the few large per-step intermediates (the dense B-spline basis).

Why. On the CPU PyTorch takes every tensor from ``malloc``. glibc serves blocks above its mmap
threshold (at most 32 MiB, adapted at run time) with fresh ``mmap`` calls and returns them to
the system when they are freed, so a tensor of that size created on every training step is
paid again in page faults (one per 4 KiB, a few microseconds each): 6,000-13,000 faults per
step for the (B, m·(t+d)) basis of a [784, 64, 10] KAN at B = 1024-2048, as much time as the
basis itself. A :class:`BlockPool` keeps a few such blocks alive and lends one out again once
nothing uses it any more – the same idea as PyTorch's CUDA caching allocator, for one owner.

Safety. A block is lent out only as a *view* and is taken again only when no tensor besides
the pool's own references its storage (the storage's use count: every tensor, view, saved
tensor of autograd or array export holds one), so a block held by a pending backward, by a
caller who kept the output or by another thread is never written. Taking is serialised by a
lock. Copies of a module (``copy.deepcopy``, pickling) get an empty pool. Outside the CPU,
under inference mode, for small blocks, with :data:`ENABLED` False, or where this PyTorch has
no storage use count, a plain ``new_empty`` is returned.

Memory. A pool keeps at most ``cap`` blocks (two per B-spline expansion), each of the largest
batch it served – e.g. an evaluation chunk – until the owner is cast, released
(:meth:`BlockPool.release`) or freed; smaller batches reuse the larger block.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

__all__ = ["BlockPool", "ENABLED", "MIN_BYTES"]

#: set to False to give every block back after use (``new_empty`` each time): pooled blocks
#: stay allocated between steps, up to ``cap`` per owner at the largest batch seen
ENABLED = True

#: blocks smaller than this come from ``new_empty`` (malloc serves them without faults)
MIN_BYTES = 1 << 20

_use_count = getattr(torch._C, "_storage_Use_Count", None)
_baseline: int | None = None


def _count(t: Tensor) -> int:
    return int(_use_count(t.untyped_storage()._cdata))


def _free_count() -> int:
    """The use count a storage shows when only one tensor holds it (measured, not assumed:
    the temporary storage object of the query may add to it)."""
    global _baseline
    if _baseline is None:
        _baseline = _count(torch.empty(1))
    return _baseline


class BlockPool:
    """At most ``cap`` reusable CPU blocks (flat tensors) for one owner.

    :meth:`take` returns an uninitialised tensor of the asked shape and x's dtype: a view of
    a free pooled block large enough for it, else a new block (pooled while fewer than
    ``cap`` are held, replacing a free smaller one otherwise)."""

    def __init__(self, cap: int = 2) -> None:
        if cap < 1:
            raise ValueError(f"BlockPool cap must be >= 1, got {cap}")
        self.cap = cap
        self.blocks: list[Tensor] = []
        self._lock = threading.Lock()

    def __deepcopy__(self, memo) -> BlockPool:
        return BlockPool(self.cap)

    def __reduce__(self):
        return (BlockPool, (self.cap,))

    def __repr__(self) -> str:
        held = sum(b.numel() * b.element_size() for b in self.blocks)
        return f"BlockPool(cap={self.cap}, blocks={len(self.blocks)}, bytes={held})"

    def release(self) -> None:
        """Drop every pooled block (their memory goes back once no output uses it)."""
        with self._lock:
            self.blocks = []

    @staticmethod
    def enabled_for(like: Tensor, numel: int) -> bool:
        return (ENABLED and _use_count is not None and like.device.type == "cpu"
                and numel * like.element_size() >= MIN_BYTES
                and not torch.is_inference_mode_enabled())

    def take(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        numel = math.prod(shape)
        if not self.enabled_for(like, numel):
            return like.new_empty(shape)
        with self._lock:
            free = _free_count()
            spare = None
            for i, blk in enumerate(self.blocks):
                if _count(blk) > free:
                    continue
                if blk.dtype == like.dtype and blk.numel() >= numel:
                    return blk[:numel].view(shape)
                spare = i if spare is None else spare
            blk = like.new_empty(numel)
            if len(self.blocks) < self.cap:
                self.blocks.append(blk)
            elif spare is not None:  # a free block too small or of another dtype: replace it
                self.blocks[spare] = blk
            return blk.view(shape)
