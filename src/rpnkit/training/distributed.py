"""Multi-process training on PyTorch's own engine (``torchrun`` + DistributedDataParallel).

``torchrun --nproc_per_node=N -m rpnkit train cfg.yaml --out RUN`` starts N processes with
the usual ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` variables;
:func:`init_from_env` joins them into one process group (``nccl`` for CUDA, ``gloo`` for
CPU). The engine then

* wraps the model in ``DistributedDataParallel``;
* cuts every *global* batch (the configured ``batch_size``, formed from one permutation that
  every rank draws from the same seed) into per-rank shares – rows ``rank, rank+world, ...``
  of the batch – so that each sample of an epoch is seen exactly once across ranks, like a
  ``DistributedSampler``, and a run with any number of processes follows the same sequence of
  global batches (the training state is independent of the world size: resume with another
  N works);
* has each rank back-propagate its part of the global mean loss (Σ over its rows / global
  batch size) and multiplies DDP's averaged gradients by N, so the gradient is that of the
  mean loss over the global batch and every intermediate gradient has its 1-process scale
  (fp16 loss scaling skips the same steps): 1 process and N processes reach the same weights,
  up to floating-point summation order;
* evaluates each split in per-rank shards and gathers the outputs, so validation and test
  metrics are those of the whole split on every rank;
* writes files (checkpoints, run folder) on rank 0 only.

A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) runs exactly as before.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
from torch import Tensor
from torch import distributed as dist

from ..errors import ConfigurationError

__all__ = ["World", "world", "env_world_size", "init_from_env", "shutdown", "all_sum",
           "all_agree", "gather_rows", "gather_cat", "shard_range", "broadcast_object",
           "record_error"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """The current process group (a 1-process world when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(),
                     int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return World()


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when absent)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        raise ConfigurationError(
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} is not an integer"
        ) from None


def init_from_env(device: torch.device) -> World:
    """Join the process group torchrun describes (no-op for one process); returns the world.

    The backend follows the device: ``nccl`` for CUDA, ``gloo`` otherwise. Collective calls
    time out after ``RPNKIT_DIST_TIMEOUT`` seconds (default 600) instead of hanging forever.
    """
    if env_world_size() <= 1:
        return World()
    if not dist.is_available():
        raise ConfigurationError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if not dist.is_initialized():
        for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise ConfigurationError(
                    f"WORLD_SIZE > 1 but {var} is not set; start the processes with torchrun"
                )
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        timeout = datetime.timedelta(seconds=float(os.environ.get("RPNKIT_DIST_TIMEOUT", "600")))
        dist.init_process_group(backend, timeout=timeout)
    return world()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(t: Tensor) -> Tensor:
    """Sum of ``t`` over ranks (in place; returned for chaining)."""
    if world().distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_agree(ok: bool) -> bool:
    """True on every rank iff ``ok`` is true on every rank (one small all-reduce)."""
    if not world().distributed:
        return bool(ok)
    t = torch.tensor([0 if ok else 1], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item()) == 0


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank."""
    if not world().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shard_range(n: int, rank: int, size: int) -> tuple[int, int]:
    """Contiguous rows [start, stop) of rank ``rank`` when n rows are cut into ``size`` shards."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def gather_rows(t: Tensor, n_total: int) -> Tensor:
    """Concatenate every rank's rows of ``t`` (shards of :func:`shard_range`) in rank order."""
    w = world()
    if not w.distributed:
        return t
    sizes = [shard_range(n_total, r, w.size) for r in range(w.size)]
    biggest = max(stop - start for start, stop in sizes)
    pad = t.new_zeros((biggest - t.shape[0], *t.shape[1:]))
    padded = torch.cat([t, pad]) if pad.shape[0] else t.contiguous()
    bufs = [torch.empty_like(padded) for _ in range(w.size)]
    dist.all_gather(bufs, padded)
    return torch.cat([b[: stop - start] for b, (start, stop) in zip(bufs, sizes)])


def gather_cat(t: Tensor) -> Tensor:
    """Concatenate every rank's ``t`` (any number of rows each) in rank order."""
    w = world()
    if not w.distributed:
        return t
    n = torch.tensor([t.shape[0]], dtype=torch.int64)
    sizes = [torch.zeros_like(n) for _ in range(w.size)]
    dist.all_gather(sizes, n)
    sizes_i = [int(s.item()) for s in sizes]
    biggest = max(sizes_i)
    pad = t.new_zeros((biggest - t.shape[0], *t.shape[1:]))
    padded = torch.cat([t, pad]) if pad.shape[0] else t.contiguous()
    bufs = [torch.empty_like(padded) for _ in range(w.size)]
    dist.all_gather(bufs, padded)
    return torch.cat([b[:k] for b, k in zip(bufs, sizes_i)])


def record_error(line: str) -> None:
    """Under ``torchrun``: write ``line`` (rpnkit's one-line error) into this worker's
    elastic error file (``TORCHELASTIC_ERROR_FILE``, the file
    :func:`torch.distributed.elastic.multiprocessing.errors.record` writes), so that
    torchrun's failure report names it as the root cause – one line instead of "To enable
    traceback see ...". Nothing happens outside torchrun; a file that cannot be written is
    left alone (the line was printed already)."""
    import json
    import time

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": line, "extraInfo": {"py_callstack": line,
                                                       "timestamp": str(int(time.time()))}}}
    try:
        # a fresh file: torch's agent creates none, and an existing one is never followed
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0),
                     0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
    except OSError:
        pass
