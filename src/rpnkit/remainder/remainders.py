"""Remainder functions π: R^m -> R^n."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..modules import Deferred, _call, build_module
from ..registry import REMAINDERS

__all__ = ["Remainder", "ZeroRemainder", "ConstantRemainder", "IdentityRemainder", "LinearRemainder"]


class Remainder(nn.Module):
    """Base remainder π(x). Bound to (m, n) by the head that owns it, at construction."""

    registry_name = "remainder"
    #: π(x) = 0 for every x (a head may skip it); declared by the class that computes it
    is_zero = False
    needs_square = False

    def separable(self) -> bool:
        """Whether π(x) = π(0) + Σ_i (π(x_i e_i) − π(0)): a sum of one-input functions (what
        inspection's edge functions need). Default: π is a map applied to x, then the
        activation on the outputs; separable when that map is (declared by
        :meth:`_separable_map`) and the activation is absent (an activation after mixing
        inputs couples them)."""
        return self._separable_map() and self.activation is None

    def _separable_map(self) -> bool:
        """The core map (before the activation) is a sum of one-input functions."""
        return False

    def __init__(self, activation: Any = None) -> None:
        super().__init__()
        self.m: int | None = None
        self.n: int | None = None
        self.activation = build_module(activation) if activation is not None else None
        #: ``device`` / ``dtype`` for parameters created at binding (set by the head).
        self.factory_kwargs: dict[str, Any] = {}

    def hparams(self) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        parts = [f"{k}={v!r}" for k, v in self.hparams().items()]
        if self.m is not None:
            parts.append(f"m={self.m}, n={self.n}")
        return ", ".join(parts)

    def bind(self, m: int, n: int) -> None:
        if self.m is not None and (self.m, self.n) != (m, n):
            raise ConfigurationError(
                f"{type(self).__name__} is already bound to m={self.m}, n={self.n}; cannot "
                f"rebind to m={m}, n={n}. Give each head its own remainder instance"
            )
        if self.needs_square and m != n:
            raise ConfigurationError(
                f"remainder {self.registry_name!r} needs m == n (input width equal to output "
                f"width), got m={m}, n={n}; use remainder 'linear' or 'zero' instead"
            )
        self.m, self.n = int(m), int(n)
        if isinstance(self.activation, Deferred):
            # a size-dependent activation (layer_norm, batch_norm) acts on the n outputs
            # (the KAN base remainder applies it to the m inputs)
            self.activation = self.activation.materialise(self.activation_width())

    def activation_width(self) -> int:
        """Width the activation sees (the output width n by default)."""
        return int(self.n)

    def _check(self, x: Tensor) -> None:
        if self.n is None and self.needs_square and x.dim() == 2:
            return  # an unbound square remainder (identity) works at any width m = n
        if self.n is None:
            raise RuntimeError(
                f"{type(self).__name__} is not bound to sizes yet; construct an RPNHead with it "
                "or call .bind(m, n)"
            )
        if x.dim() != 2 or x.shape[1] != self.m:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (batch, {self.m}), got "
                f"{tuple(x.shape)}"
            )

    def _act(self, y: Tensor) -> Tensor:
        return _call(self.activation, y) if self.activation is not None else y

    # -- closed form ---------------------------------------------------------------
    def sympy(self, xs: list[Any], tol: float = 0.0) -> list[Any]:
        """π as sympy expressions: the n outputs for input expressions ``xs`` (eval mode).

        ``tol``: learned weights with absolute value below it are dropped.

        Raises:
            NoClosedFormError: naming the remainder (or its activation) without a closed form.
        """
        from ..errors import NoClosedFormError

        raise NoClosedFormError(
            f"remainder {self.registry_name!r} ({type(self).__name__}) has no closed form: "
            f"{type(self).__name__} defines no sympy(xs, tol) method"
        )

    def _act_sympy(self, ys: list[Any]) -> list[Any]:
        """The activation's closed form on sympy expressions (identity when there is none)."""
        from ..modules import modules_sympy

        act = [self.activation] if self.activation is not None else []
        return modules_sympy(act, ys, f"remainder {self.registry_name!r} activation")


@REMAINDERS.register("zero")
class ZeroRemainder(Remainder):
    """π(x) = 0."""

    is_zero = True

    def separable(self) -> bool:
        return True

    def __init__(self) -> None:
        super().__init__(None)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return x.new_zeros(x.shape[0], self.n)

    def sympy(self, xs: list[Any], tol: float = 0.0) -> list[Any]:
        import sympy

        return [sympy.Integer(0)] * self.n


@REMAINDERS.register("constant")
class ConstantRemainder(Remainder):
    """π(x) = c·1_n."""

    def __init__(self, c: float = 1.0) -> None:
        super().__init__(None)
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not math.isfinite(c):
            raise ConfigurationError(f"constant remainder: c must be a finite number, got {c!r}")
        self.c = float(c)

    def hparams(self) -> dict[str, Any]:
        return {"c": self.c}

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return x.new_full((x.shape[0], self.n), self.c)

    def separable(self) -> bool:
        return True

    def sympy(self, xs: list[Any], tol: float = 0.0) -> list[Any]:
        from ..modules import sympy_number

        return [sympy_number(self.c)] * self.n


@REMAINDERS.register("identity")
class IdentityRemainder(Remainder):
    """π(x) = act(x); requires m = n."""

    needs_square = True

    def separable(self) -> bool:
        """act(x) keeps inputs apart when the activation acts entry by entry."""
        from ..structure import elementwise_chain

        return self.activation is None or elementwise_chain([self.activation])

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self._act(x)

    def sympy(self, xs: list[Any], tol: float = 0.0) -> list[Any]:
        return self._act_sympy(list(xs))


@REMAINDERS.register("linear")
class LinearRemainder(Remainder):
    """π(x) = act(x W'ᵀ + b'), W' n×m (``weight``), optional b' (``bias``, zeros at init).

    W' is initialised like ``nn.Linear`` (uniform ±1/√m) when the head binds (m, n).
    """

    def __init__(self, activation: Any = None, bias: bool = False) -> None:
        super().__init__(activation)
        self.use_bias = bool(bias)
        self.weight: nn.Parameter | None
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)

    def hparams(self) -> dict[str, Any]:
        return {"bias": self.use_bias}

    def _separable_map(self) -> bool:
        return type(self).forward is LinearRemainder.forward  # x W'ᵀ + b': a sum over inputs

    def bind(self, m: int, n: int) -> None:
        super().bind(m, n)
        if self.weight is None:
            self.weight = nn.Parameter(torch.empty(n, m, **self.factory_kwargs))
            if self.use_bias:
                self.bias = nn.Parameter(torch.empty(n, **self.factory_kwargs))
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """W' uniform(±1/√m) like ``nn.Linear``, b' zeros, and the activation's own reset."""
        if self.weight is not None:
            bound = 1.0 / math.sqrt(self.weight.shape[1])
            with torch.no_grad():
                self.weight.uniform_(-bound, bound)
                if self.bias is not None:
                    self.bias.zero_()
        if self.activation is not None and hasattr(self.activation, "reset_parameters"):
            self.activation.reset_parameters()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.weight is None and prefix + "weight" in state_dict:
            n, m = state_dict[prefix + "weight"].shape
            self.bind(int(m), int(n))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        y = x @ self.weight.to(x.dtype).transpose(0, 1)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return self._act(y)

    def _weights_sympy(self) -> tuple[Any, Any]:
        """(weight, bias or None) as float64 numpy arrays, for :meth:`sympy`."""
        from ..modules import float64_array

        bias = float64_array(self.bias) if self.bias is not None else None
        return float64_array(self.weight), bias

    def sympy(self, xs: list[Any], tol: float = 0.0) -> list[Any]:
        from ..modules import sympy_affine

        weight, bias = self._weights_sympy()
        return self._act_sympy(sympy_affine(weight, xs, bias, tol))
