"""Fused parts: an expansion that writes κ(x) straight into columns of one head buffer.

A tiny head (a few inputs, D of tens of columns) spends its step on kernel launches and
Python, not on arithmetic. Its fastest exact form is to write every segment of κ(x) into one
preallocated (B, D + 1) buffer K (column D is a discard column that stays zero in the
gradient), contract it with ψ(w)'s factors by one or two GEMMs, and differentiate all of it
in one analytic backward (:class:`rpnkit.contract.FusedHeadProduct`).

An expansion takes part by returning a :class:`FusedPart` from
:meth:`~rpnkit.expansion.base.Expansion.fused_part` (``None``: not supported, the head keeps
its planned path). The part is built once, when the head is built, for the columns
``[offset, offset + width)`` of K; its index tables are non-persistent buffers computed for
those absolute columns. It implements

* :meth:`FusedPart.fill` ``(x, K, need_grad) -> state``: write its columns of K, every one
  of them (K is not zeroed before; its discard column is never read). Parts are filled left
  to right, and a part may write K's column ``offset + width`` (the next part's
  first column, or the discard column) as scratch: the next part overwrites it.
* :meth:`FusedPart.grad` ``(state, gK, K, x) -> dL/dx`` (B, m) from the gradient of K
  (gK is (B, D + 1) with a zero discard column).
* :meth:`FusedPart.available` ``() -> bool``: whether the part can run now (e.g. a B-spline's
  knots are still uniform); read on every call, so state changed in place is followed.
* :meth:`FusedPart.tensors` ``() -> list``: every tensor it reads (under ``torch.func.vmap``
  the batched rule of :mod:`rpnkit.fused_stacked` needs them unbatched). ``fill`` and ``grad``
  must treat rows independently: the batched rule fills S·B rows at once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FusedPart", "ConcatPart", "DensePart", "columns"]


def columns(buf: Tensor, start: int, width: int, inner: int | None = None) -> Tensor:
    """Columns ``[start, start + width·inner)`` of every row of the row-major buffer ``buf``
    (B, C) as a (B, width) view, or (B, width, inner) with ``inner``: one ``as_strided``
    (a slice and a view are two or three ops, and these are a tiny head's hot path)."""
    if inner is None:
        return buf.as_strided((buf.shape[0], width), (buf.stride(0), 1),
                              buf.storage_offset() + start)
    return buf.as_strided((buf.shape[0], width, inner), (buf.stride(0), inner, 1),
                          buf.storage_offset() + start)


class FusedPart(nn.Module):
    """One expansion's columns ``[offset, offset + width)`` of a fused head buffer."""

    def __init__(self, m: int, offset: int, width: int, total: int) -> None:
        super().__init__()
        self.m, self.offset, self.width, self.total = int(m), int(offset), int(width), int(total)

    def _build(self) -> None:
        """Register the part's index tables (non-persistent buffers, on the CPU)."""

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Recompute the index tables in place (after ``to_empty()`` they hold garbage)."""
        old = {k: v for k, v in self._buffers.items() if v is not None}
        with torch.device("cpu"):
            self._build()
        for k, fresh in list(self._buffers.items()):
            have = old.get(k)
            if have is None or fresh is None or have.is_meta:
                if have is not None:
                    self._buffers[k] = have
                continue
            self._buffers[k] = (have.copy_(fresh) if have.shape == fresh.shape
                                else fresh.to(device=have.device, dtype=have.dtype))

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        """After a move or cast, rebuild the tables from their exact (float64) source in the
        new dtype: a float32 → float64 round trip keeps no float32 rounding of 1/6."""
        super()._apply(fn, recurse)
        self.reset_parameters()
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.reset_parameters()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def available(self) -> bool:
        return True

    def tensors(self) -> list[Tensor]:
        """Every tensor the part reads (its own and those of modules it reads from): under
        ``vmap`` the batched rule runs only while none of them is batched."""
        return [*self.buffers(), *self.parameters()]

    def fill(self, x: Tensor, out: Tensor, need_grad: bool) -> Any:
        raise NotImplementedError

    def grad(self, state: Any, gk: Tensor, out: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"columns=[{self.offset}, {self.offset + self.width})"


class DensePart(FusedPart):
    """κ(x) = x (the identity's columns, or a Taylor expansion's degree-1 block)."""

    def fill(self, x: Tensor, out: Tensor, need_grad: bool) -> Any:
        columns(out, self.offset, self.width).copy_(x)
        return None

    def grad(self, state: Any, gk: Tensor, out: Tensor, x: Tensor) -> Tensor:
        return columns(gk, self.offset, self.width)


class ConcatPart(FusedPart):
    """The parts of a concatenation, filled left to right; their x-gradients add."""

    def __init__(self, parts: list[FusedPart], m: int, offset: int, total: int) -> None:
        super().__init__(m, offset, sum(p.width for p in parts), total)
        self.parts = nn.ModuleList(parts)
        self.seq = tuple(parts)  # the same modules, iterated per call without ModuleList

    def reset_parameters(self) -> None:
        for p in self.parts:
            p.reset_parameters()

    def available(self) -> bool:
        return all(p.available() for p in self.seq)

    def tensors(self) -> list[Tensor]:
        return [t for p in self.seq for t in p.tensors()]

    def fill(self, x: Tensor, out: Tensor, need_grad: bool) -> Any:
        return [p.fill(x, out, need_grad) for p in self.seq]

    def grad(self, state: Any, gk: Tensor, out: Tensor, x: Tensor) -> Tensor:
        gx = None
        for p, s in zip(self.seq, state):
            g = p.grad(s, gk, out, x)
            gx = g if gx is None else gx + g
        return gx
