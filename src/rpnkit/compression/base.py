"""Base classes of compression functions κ: R^m -> R^d with d <= m.

A compression is a data transformation used in place of an expansion (the reference
toolkit's "compression functions"): it *is* an :class:`~rpnkit.expansion.Expansion` whose D
is at most m, so it plugs into heads, the planner, pre/post-processing and the declared
Structure unchanged; it is registered in its own registry ``COMPRESSIONS`` (``rpnkit list``
shows it under ``compressions``), and a head's ``expansion`` option accepts its name.

Fitted compressions (:class:`FittedCompression`: PCA, feature selection, Isomap, LLE, ...)
learn their state from training data with an explicit :meth:`FittedCompression.fit`, never
in ``forward``. Their state lives in persistent buffers created when the sizes bind (m and d
known), so it is saved, loaded, moved and cast with the model. A compression that was never
fitted (nor loaded from a fitted state dict) refuses ``forward`` with a ConfigurationError.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..expansion.base import Expansion, check_positive_int
from ..modules import apply_list

__all__ = ["Compression", "FittedCompression", "as_matrix"]


def as_matrix(x: Any, owner: str) -> Tensor:
    """``x`` (a tensor or array of shape (N, m)) as a float64 CPU tensor, refused otherwise."""
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{owner}.fit expects a numeric (N, m) array or tensor, got "
                            f"{type(x).__name__}") from exc
    if t.dim() != 2:
        raise ValueError(f"{owner}.fit expects a 2-D input (N, m), got shape {tuple(t.shape)}")
    t = t.to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{owner}.fit: the data hold NaN or infinite values")
    return t


class Compression(Expansion):
    """Compression κ: R^m -> R^D with D <= m (an expansion that shrinks its input)."""

    registry_name = "compression"

    def _target(self, d: Any) -> int:
        return check_positive_int("d", d, type(self).__name__)

    def check_input(self, x: Tensor) -> Tensor:
        x = super().check_input(x)
        if self.m is not None and x.shape[1] != self.m:
            raise ValueError(f"{type(self).__name__} is bound to m={self.m} features, got input "
                             f"with {x.shape[1]} (shape {tuple(x.shape)})")
        return x

    def check_width(self, m: int, D: int) -> int:  # noqa: N803
        if m < D:
            raise ConfigurationError(
                f"{type(self).__name__}: a compression maps R^m to R^d with d <= m, got d={D} "
                f"for m={m}; choose d <= {m} (or an expansion for d > m)"
            )
        return D


class FittedCompression(Compression):
    """A compression whose state is learned from training data by :meth:`fit`.

    ``fit(x)`` binds to x's width (state in x's float dtype) when not bound yet (a head binds
    it otherwise, and the head's dtype decides), runs the
    pre-processing and stores the learned state in persistent buffers. ``forward`` before
    ``fit`` (or before loading a fitted state dict) raises a ConfigurationError.
    """

    def __init__(self, d: int, preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__(preprocess, postprocess)
        self.d = self._target(d)
        self._fitted = False
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return self.check_width(int(m), self.d)

    def hparams(self) -> dict[str, Any]:
        return {"d": self.d}

    @property
    def is_fitted(self) -> bool:
        return self._fitted

    def bind(self, m: int) -> None:
        if self.m is not None and self.m != int(m):
            self._set_fitted(False)  # state learned for another width is void
        super().bind(m)

    def _set_fitted(self, value: bool) -> None:
        self._fitted = bool(value)
        self.fitted = torch.full((), bool(value), dtype=torch.bool, device=self.fitted.device)

    def fit(self, x: Any, y: Any = None) -> FittedCompression:
        """Learn the compression from training data x of shape (N, m); returns self."""
        owner = type(self).__name__
        data = as_matrix(x, owner)
        if self.m is None:  # a standalone compression: its state takes x's float dtype
            self.bind(data.shape[1])
            dtype = x.dtype if isinstance(x, Tensor) and x.is_floating_point() else None
            for name, buf in self._buffers.items():
                if dtype is not None and buf is not None and buf.is_floating_point():
                    self._buffers[name] = buf.to(dtype)
        elif data.shape[1] != self.m:
            raise ValueError(f"{owner} is bound to m={self.m} features, fit got data with "
                             f"{data.shape[1]} (shape {tuple(data.shape)})")
        with torch.no_grad():
            z = apply_list(self.preprocess, data.to(self._state_dtype())).to(torch.float64)
            self._fit(z, y)
        self._set_fitted(True)
        return self

    def _state_dtype(self) -> torch.dtype:
        """The dtype the pre-processing runs in during fit: its parameters' (float64 if none)."""
        floats = [p.dtype for p in self.parameters() if p.is_floating_point()]
        return floats[0] if floats else torch.float64

    def _fit(self, z: Tensor, y: Any) -> None:
        raise NotImplementedError

    def check_fitted(self) -> None:
        if not self._fitted:
            raise ConfigurationError(
                f"compression {self.registry_name!r} is not fitted: call .fit(x_train) on it "
                f"(e.g. head.expansion.fit(x_train)) or load a fitted state dict before using it"
            )

    def forward(self, x: Tensor) -> Tensor:
        self.check_fitted()
        return super().forward(x)

    def segment_inputs(self, x: Tensor) -> list[Tensor]:
        self.check_fitted()
        return super().segment_inputs(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "fitted"
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if key in state_dict:
            self._fitted = bool(state_dict[key].reshape(()).item())

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype | None = None,
                fill: float = 0.0) -> None:
        """(Re)create persistent buffer ``name`` of ``shape`` unless it already has it."""
        old = self._buffers.get(name)
        if old is not None and tuple(old.shape) == tuple(shape) and (dtype is None
                                                                      or old.dtype == dtype):
            return
        device = None if old is None else old.device
        dt = dtype or (old.dtype if old is not None and old.is_floating_point()
                       else torch.get_default_dtype())
        self.register_buffer(name, torch.full(shape, fill, dtype=dt, device=device))
