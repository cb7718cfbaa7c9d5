"""Wavelet expansions: a per-input bank of dilated and translated copies of a mother wavelet ψ.

For input x_i, dilation index j = 0..s-1 and translation index k = 0..t-1 the column is

    a^(-j/2) · ψ(x_i / a^j - k·b)

feature-major, dilations outer and translations inner: column ``i·s·t + j·t + k``
(D = m·s·t). The defaults (s = t = 1, a = b = 1: one column ψ(x_i) per input) and the
mother wavelets follow the reference toolkit (tinybig 0.2's ``*_wavelet_expansion`` with
its ``d = 1``); its ``d > 1`` (tensor powers of the bank) is the nested expansion
``nested: [<wavelet>, {name: taylor, d: d}]`` here.

Every ψ below is bounded, so each expansion is finite for every finite input (no
:meth:`safe_abs` limit); |x| beyond a few times ``a^(s-1)·(t·b + support)`` only reaches
the wavelets' decaying tails.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import EXPANSIONS
from .base import Expansion, check_finite_number, check_positive_int
from .rbf import MAX_GRID

__all__ = ["MeyerWavelet", "RickerWavelet", "ShannonWavelet", "BetaWavelet", "HaarWavelet",
           "DoGWavelet"]

_PI = math.pi


class _Wavelet(Expansion):
    """Bank of s dilations (factor a) × t translations (step b) of the mother wavelet ψ."""

    def __init__(
        self,
        s: int = 1,
        t: int = 1,
        a: float = 1.0,
        b: float = 1.0,
        preprocess: Any = None,
        postprocess: Any = None,
    ) -> None:
        super().__init__(preprocess, postprocess)
        owner = type(self).__name__
        self.s = check_positive_int("s", s, owner)
        self.t = check_positive_int("t", t, owner)
        if self.s * self.t > MAX_GRID:
            raise ConfigurationError(
                f"{owner}: s·t (wavelets per input) must be at most {MAX_GRID:,}, got "
                f"s={self.s:,} × t={self.t:,} = {self.s * self.t:,}"
            )
        self.a = check_finite_number("a", a, owner)
        self.b = check_finite_number("b", b, owner)
        if self.a < 1:
            raise ConfigurationError(f"{owner}: a (dilation factor) must be >= 1, got {self.a!r}")
        if self.s > 1 and self.a == 1:
            raise ConfigurationError(
                f"{owner}: a (dilation factor) must be > 1 when s > 1 (a = 1 makes the s={self.s} "
                "dilations identical copies), got a=1.0"
            )
        if self.b < 0:
            raise ConfigurationError(f"{owner}: b (translation step) must be >= 0, got {self.b!r}")
        if self.t > 1 and self.b == 0:
            raise ConfigurationError(
                f"{owner}: b (translation step) must be > 0 when t > 1 (b = 0 makes the t={self.t} "
                "translations identical copies), got b=0.0"
            )

    def hparams(self) -> dict[str, Any]:
        return {"s": self.s, "t": self.t, "a": self.a, "b": self.b, **self.wavelet_params()}

    def wavelet_params(self) -> dict[str, Any]:
        """The mother wavelet's own parameters (for repr and configs)."""
        return {}

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return int(m) * self.s * self.t

    def _basis(self, m: int) -> tuple[int, str]:
        return self.s * self.t, "feature"

    def psi(self, tau: Tensor) -> Tensor:
        """The mother wavelet, elementwise."""
        raise NotImplementedError

    def psi_sympy(self, tau: Any) -> Any:
        """The mother wavelet as a sympy expression."""
        raise NotImplementedError

    def expand(self, x: Tensor) -> Tensor:
        j = torch.arange(self.s, dtype=x.dtype, device=x.device)
        k = torch.arange(self.t, dtype=x.dtype, device=x.device)
        inv = torch.pow(self.a, -j)  # a^-j: underflows to 0 (never overflows) for large j
        amp = torch.pow(self.a, -0.5 * j)
        tau = x[:, :, None, None] * inv[:, None] - self.b * k  # (B, m, s, t)
        return (amp[:, None] * self.psi(tau)).flatten(1)

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        from ..modules import sympy_number

        a, b = sympy_number(self.a), sympy_number(self.b)
        out = []
        for x in xs:
            for j in range(self.s):
                for k in range(self.t):
                    out.append(a ** sympy.Rational(-j, 2) * self.psi_sympy(x / a**j - k * b))
        return out


@EXPANSIONS.register("haar_wavelet")
class HaarWavelet(_Wavelet):
    """Haar wavelet bank, ψ(τ) = 1 on [0, 1/2), -1 on [1/2, 1), 0 elsewhere (D = m·s·t).

    Piecewise constant: its derivative is 0 wherever it exists (x-gradients are zeros, the
    jumps carry no gradient). Finite for every finite input.
    """

    def psi(self, tau: Tensor) -> Tensor:
        up = ((tau >= 0) & (tau < 0.5)).to(tau.dtype)
        down = ((tau >= 0.5) & (tau < 1)).to(tau.dtype)
        # sign(τ)·0 keeps τ in the graph with its true derivative 0 (and NaN stays NaN)
        return up - down + torch.sign(tau) * 0

    def psi_sympy(self, tau: Any) -> Any:
        import sympy

        return sympy.Piecewise((1, (tau >= 0) & (tau < sympy.Rational(1, 2))),
                               (-1, (tau >= sympy.Rational(1, 2)) & (tau < 1)), (0, True))


@EXPANSIONS.register("ricker_wavelet")
class RickerWavelet(_Wavelet):
    """Ricker (Mexican hat) wavelet bank, ψ(τ) ∝ (1 - (τ/σ)²) exp(-τ²/(2σ²)) (D = m·s·t).

    ψ(τ) = 2 / (√(3σ) π^(1/4)) · (1 - (τ/σ)²) · exp(-τ² / (2σ²)), σ > 0 (default 1).

    Bounded by 2 / (√(3σ) π^(1/4)); finite for every finite input.
    """

    def __init__(self, s: int = 1, t: int = 1, a: float = 1.0, b: float = 1.0,
                 sigma: float = 1.0, preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__(s, t, a, b, preprocess, postprocess)
        self.sigma = check_finite_number("sigma", sigma, "RickerWavelet", positive=True)

    def wavelet_params(self) -> dict[str, Any]:
        return {"sigma": self.sigma}

    def psi(self, tau: Tensor) -> Tensor:
        sig = self.sigma
        # |z| > 40: (1 - z²)·exp(-z²/2) < 1e-340 is 0 in every float dtype; the clamp keeps z²
        # from overflowing into inf·0 = NaN for huge inputs
        z = (tau / sig).clamp(-40.0, 40.0)
        c = 2.0 / (math.sqrt(3.0 * sig) * math.pi ** 0.25)
        return c * (1 - z * z) * torch.exp(-0.5 * z * z)

    def psi_sympy(self, tau: Any) -> Any:
        import sympy

        from ..modules import sympy_number

        sig = sympy_number(self.sigma)
        z = tau / sig
        return 2 / (sympy.sqrt(3 * sig) * sympy.pi ** sympy.Rational(1, 4)) * (1 - z**2) * \
            sympy.exp(-z**2 / 2)


@EXPANSIONS.register("dog_wavelet")
class DoGWavelet(_Wavelet):
    """Difference-of-Gaussians wavelet bank, ψ(τ) = N(τ; 0, σ₁²) - N(τ; 0, σ₂²) (D = m·s·t).

    N the normal densities, σ₁ ≠ σ₂ both > 0 (defaults 1, 2).

    Bounded by the larger density's peak; finite for every finite input.
    """

    def __init__(self, s: int = 1, t: int = 1, a: float = 1.0, b: float = 1.0,
                 sigma_1: float = 1.0, sigma_2: float = 2.0, preprocess: Any = None,
                 postprocess: Any = None) -> None:
        super().__init__(s, t, a, b, preprocess, postprocess)
        self.sigma_1 = check_finite_number("sigma_1", sigma_1, "DoGWavelet", positive=True)
        self.sigma_2 = check_finite_number("sigma_2", sigma_2, "DoGWavelet", positive=True)
        if self.sigma_1 == self.sigma_2:
            raise ConfigurationError(
                f"DoGWavelet: sigma_1 and sigma_2 must differ (equal ones give ψ = 0), got "
                f"{self.sigma_1!r} for both"
            )

    def wavelet_params(self) -> dict[str, Any]:
        return {"sigma_1": self.sigma_1, "sigma_2": self.sigma_2}

    def psi(self, tau: Tensor) -> Tensor:
        out = 0
        for sig, sign in ((self.sigma_1, 1.0), (self.sigma_2, -1.0)):
            z = tau / sig
            out = out + (sign / math.sqrt(2 * math.pi * sig * sig)) * torch.exp(-0.5 * z * z)
        return out

    def psi_sympy(self, tau: Any) -> Any:
        import sympy

        from ..modules import sympy_number

        def g(sig):
            sig = sympy_number(sig)
            return sympy.exp(-(tau / sig) ** 2 / 2) / sympy.sqrt(2 * sympy.pi * sig**2)

        return g(self.sigma_1) - g(self.sigma_2)


@EXPANSIONS.register("shannon_wavelet")
class ShannonWavelet(_Wavelet):
    """Shannon wavelet bank, ψ(τ) = (sin 2πτ - sin πτ) / (πτ) (D = m·s·t).

    ψ(τ) = 2 sinc(2τ) - sinc(τ) with the normalised sinc; ψ(0) = 1.

    The removable singularity at τ = 0 is taken by its Taylor polynomial for |τ| < 1e-4 (the
    reference toolkit returns NaN at 0), so values and first and second derivatives are
    finite everywhere. |ψ| <= 3; finite for every finite input.
    """

    def psi(self, tau: Tensor) -> Tensor:
        # |τ| < 1e-4: 1 - 7π²τ²/6 + 31π⁴τ⁴/120 (error O(τ⁶)); torch.sinc's second derivative
        # is NaN at 0, so the quotient only ever sees τ away from 0
        near0 = tau.abs() < 1e-4
        safe = torch.where(near0, torch.ones_like(tau), tau)
        quotient = (torch.sin((2 * _PI) * safe) - torch.sin(_PI * safe)) / (_PI * safe)
        t2 = tau * tau
        series = 1 - (7 * _PI**2 / 6) * t2 + (31 * _PI**4 / 120) * t2 * t2
        return torch.where(near0, series, quotient)

    def psi_sympy(self, tau: Any) -> Any:
        import sympy

        return (sympy.sin(2 * sympy.pi * tau) - sympy.sin(sympy.pi * tau)) / (sympy.pi * tau)


# Meyer: removable singularities at τ = 0 and τ = ±3/4; Taylor coefficients there (exact)
_MEYER_0 = (2 / 3 + 4 / (3 * _PI), -32 * _PI / 27 - 4 * _PI**2 / 81 + 64 / (27 * _PI) + 32 / 27)
_MEYER_34 = (2 / (3 * _PI), -_PI / 3 - 4 / (3 * _PI), 2 * _PI / 27 + 56 / (27 * _PI),
             -80 / (27 * _PI) + 4 * _PI / 27 + 5 * _PI**3 / 81)
#: half-widths of the windows where the Taylor polynomials replace the quotient: inside them
#: the quotient loses digits to cancellation (about 1e-16/δ), the truncation errs by O(δ⁴)
_MEYER_WIN_0, _MEYER_WIN_34 = 1e-4, 1e-3


@EXPANSIONS.register("meyer_wavelet")
class MeyerWavelet(_Wavelet):
    """Meyer wavelet bank, the reference toolkit's closed form (D = m·s·t).

    The mother function is

        ψ(τ) = (sin(2πτ/3) + (4τ/3) cos(4πτ/3)) / (πτ - (16π/9) τ³)

    (Meyer's scaling function in closed form, which the reference toolkit names the Meyer
    wavelet). Even; its removable singularities at τ = 0
    (ψ = 2/3 + 4/(3π)) and τ = ±3/4 (ψ = 2/(3π)) are taken by Taylor polynomials in small
    windows, so values and first and second derivatives are finite everywhere (the
    reference returns NaN at ±3/4). Bounded; finite for every finite input.
    """

    def psi(self, tau: Tensor) -> Tensor:
        u = tau.abs()
        near0 = u < _MEYER_WIN_0
        d = u - 0.75
        near34 = d.abs() < _MEYER_WIN_34
        safe = torch.where(near0 | near34, torch.full_like(tau, 0.5), tau)
        num = torch.sin((2 * _PI / 3) * safe) + (4 / 3) * safe * torch.cos((4 * _PI / 3) * safe)
        quotient = num / (_PI * safe * (1 - (16 / 9) * safe * safe))
        c0, c2 = _MEYER_0
        s0 = c0 + c2 * tau * tau
        a0, a1, a2, a3 = _MEYER_34
        dd = torch.where(near34, d, torch.zeros_like(d))
        s34 = a0 + dd * (a1 + dd * (a2 + dd * a3))
        return torch.where(near0, s0, torch.where(near34, s34, quotient))

    def psi_sympy(self, tau: Any) -> Any:
        import sympy

        p = sympy.pi
        return (sympy.sin(2 * p * tau / 3) + sympy.Rational(4, 3) * tau * sympy.cos(4 * p * tau / 3)) \
            / (p * tau - 16 * p / 9 * tau**3)


@EXPANSIONS.register("beta_wavelet")
class BetaWavelet(_Wavelet):
    """Beta wavelet bank, ψ(τ) = u^(α-1) (1 - u)^(β-1) / B(α, β) at u = σ(τ) (D = m·s·t).

    α, β >= 1 (defaults 1, 1 as in the reference toolkit, where ψ is the constant 1: pass
    α, β > 1 for a non-trivial basis).

    The reference applies the sigmoid only when some value of the whole batch lies outside
    [0, 1], which makes a sample's columns depend on its batch-mates; here u = σ(τ) always
    (batch-independent; the same values whenever the reference's batch has a value outside
    [0, 1]). Computed as exp((α-1) log σ(τ) + (β-1) log σ(-τ) - log B(α, β)); bounded, finite
    for every finite input.
    """

    def __init__(self, s: int = 1, t: int = 1, a: float = 1.0, b: float = 1.0,
                 alpha: float = 1.0, beta: float = 1.0, preprocess: Any = None,
                 postprocess: Any = None) -> None:
        super().__init__(s, t, a, b, preprocess, postprocess)
        self.alpha = check_finite_number("alpha", alpha, "BetaWavelet")
        self.beta = check_finite_number("beta", beta, "BetaWavelet")
        if self.alpha < 1 or self.beta < 1:
            raise ConfigurationError(
                f"BetaWavelet: alpha and beta must be >= 1, got alpha={self.alpha!r}, "
                f"beta={self.beta!r}"
            )
        self.log_beta = math.lgamma(self.alpha) + math.lgamma(self.beta) - \
            math.lgamma(self.alpha + self.beta)

    def wavelet_params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta}

    def psi(self, tau: Tensor) -> Tensor:
        log = torch.zeros_like(tau) - self.log_beta
        if self.alpha != 1:
            log = log + (self.alpha - 1) * torch.nn.functional.logsigmoid(tau)
        if self.beta != 1:
            log = log + (self.beta - 1) * torch.nn.functional.logsigmoid(-tau)
        if self.alpha == 1 and self.beta == 1:
            return torch.exp(log) + torch.sign(tau) * 0  # the constant 1, τ kept in the graph
        return torch.exp(log)

    def psi_sympy(self, tau: Any) -> Any:
        import sympy

        from ..modules import sympy_number, sympy_sigmoid

        u = sympy_sigmoid(tau)
        al, be = sympy_number(self.alpha), sympy_number(self.beta)
        return u ** (al - 1) * (1 - u) ** (be - 1) / sympy.beta(al, be)

    def _core_structure(self, m: int):
        linear, columns, monomials, bases = super()._core_structure(m)
        if self.alpha == 1 and self.beta == 1:  # ψ = 1: no column depends on its input
            def columns():
                return [frozenset()] * self.calculate_D(m)
        return linear, columns, monomials, bases
