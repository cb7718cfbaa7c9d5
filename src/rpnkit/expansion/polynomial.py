"""Polynomial expansions: Taylor (tensor powers) and orthogonal polynomial families."""

from __future__ import annotations

from math import comb
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import EXPANSIONS
from .base import Expansion, check_finite_number, check_positive_int
from .fused import FusedPart, columns
from .layout import Segment, dense, monomial_indices, power, sympower

__all__ = ["Taylor", "Chebyshev", "Jacobi", "Legendre", "Hermite", "Laguerre", "monomial_indices"]


@EXPANSIONS.register("taylor")
class Taylor(Expansion):
    """Taylor expansion [P_1, ..., P_d], P_k = P_{k-1} ⊗ x (block-major by degree, no constant).

    Column ``a*m + c`` of ``P_k`` is ``P_{k-1}[a] * x[c]`` (row-major ordered products), so
    ``D = m + m^2 + ... + m^d``. With ``symmetric=True`` every monomial is kept once (indices
    non-decreasing, lexicographic order within each degree): ``D = Σ_k C(m+k-1, k)``.
    """

    def __init__(
        self, d: int = 2, symmetric: bool = False, preprocess: Any = None, postprocess: Any = None
    ) -> None:
        super().__init__(preprocess, postprocess)
        self.d = check_positive_int("d", d, "Taylor")
        self.symmetric = bool(symmetric)

    def hparams(self) -> dict[str, Any]:
        return {"d": self.d, "symmetric": self.symmetric}

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import itertools

        import sympy

        if self.symmetric:
            return [
                sympy.Mul(*[xs[i] for i in idx])
                for k in range(1, self.d + 1)
                for idx in itertools.combinations_with_replacement(range(len(xs)), k)
            ]
        p = list(xs)
        blocks = list(p)
        for _ in range(2, self.d + 1):
            p = [a * c for a in p for c in xs]  # row-major, as x ⊗ x in expand
            blocks.extend(p)
        return blocks

    def calculate_D(self, m: int) -> int:  # noqa: N802
        m = int(m)
        if self.symmetric:
            return sum(comb(m + k - 1, k) for k in range(1, self.d + 1))
        return sum(m**k for k in range(1, self.d + 1))

    def bind_tables(self, m: int) -> None:
        if self.symmetric:
            for k in range(2, self.d + 1):  # (k, C) columns of the unique monomials
                self.register_buffer(f"monomials_{k}", monomial_indices(m, k).t().contiguous(),
                                     persistent=False)

    def safe_abs(self, dtype: torch.dtype) -> float | None:
        return float(torch.finfo(dtype).max) ** (1.0 / self.d) if dtype.is_floating_point else None

    def table_numel(self, m: int) -> int:
        if not self.symmetric:
            return 0
        return sum(k * comb(m + k - 1, k) for k in range(2, self.d + 1))

    def cheaper(self, m: int) -> list[tuple[str, int]]:
        out = []
        if not self.symmetric:
            sym = Taylor(self.d, symmetric=True)
            out.append((f"taylor d={self.d} symmetric=True", sym.calculate_D(m)))
        if self.d > 1:
            low = Taylor(self.d - 1, symmetric=self.symmetric)
            out.append((f"taylor d={self.d - 1}" + (" symmetric=True" if self.symmetric else ""),
                        low.calculate_D(m)))
        return out

    def _layout(self, m: int) -> list[Segment]:
        if self.symmetric:
            return [dense(m, "x")] + [sympower(m, k) for k in range(2, self.d + 1)]
        if self.d == 1:
            return [dense(m, "x")]
        # degrees 1 and 2 together: [x | x⊗x] = [1; x] ⊗ x, then x^{⊗k} for k >= 3
        return [power(m, 2, tilde=True, label="[1;x]⊗x")] + [
            power(m, k) for k in range(3, self.d + 1)
        ]

    def _columns(self, m: int) -> list:
        """The dense degree-1 block: column i is x_i (the other columns are structured)."""
        return [frozenset((i,)) for i in range(m)]

    def _segment_inputs(self, z: Tensor) -> list[Tensor]:
        return [z] * (self.d if self.symmetric else max(self.d - 1, 1))

    def fused_part(self, m: int, offset: int, total: int) -> FusedPart | None:
        """The ordered blocks [x | x⊗x | ...] written into a fused head buffer (:mod:`.fused`);
        None for the symmetric form or with pre/post-processing."""
        if self.symmetric or self.has_processing():
            return None
        return _TaylorPart(m, offset, self.calculate_D(m), total, self.d)

    def degree_block(self, x: Tensor, k: int) -> Tensor:
        """The degree-k block of the expansion, (B, m^k) or (B, C(m+k-1, k))."""
        b, m = x.shape
        if self.symmetric:
            if k == 1:
                return x
            idx = self.table(f"monomials_{k}", m, lambda m, k=k: monomial_indices(m, k).t()).to(x.device)
            out = x.index_select(1, idx[0])  # column gathers: ~2x faster than x[:, idx].prod
            for j in range(1, k):
                out = out * x.index_select(1, idx[j])
            return out
        p = x
        for _ in range(k - 1):
            p = (p.unsqueeze(2) * x.unsqueeze(1)).flatten(1)
        return p

    def expand(self, x: Tensor) -> Tensor:
        if self.symmetric:
            return torch.cat([self.degree_block(x, k) for k in range(1, self.d + 1)], dim=1)
        blocks = [x]
        p = x
        for _ in range(2, self.d + 1):
            p = (p.unsqueeze(2) * x.unsqueeze(1)).flatten(1)
            blocks.append(p)
        return torch.cat(blocks, dim=1) if len(blocks) > 1 else x


class _TaylorPart(FusedPart):
    """Ordered Taylor blocks in a fused head buffer: P_1 = x, P_k = P_{k-1} ⊗ x written in
    place by one product each. Backward from the top degree down, reading P_{k-1} from the
    buffer: dL/dP_{k-1} += G_k x and dL/dx += P_{k-1}ᵀ G_k per sample (G_k = dL/dP_k as
    m^{k-1}×m), two batched products per degree."""

    def __init__(self, m: int, offset: int, width: int, total: int, d: int) -> None:
        super().__init__(m, offset, width, total)
        self.d = d
        self.starts = [offset + sum(m**j for j in range(1, k)) for k in range(1, d + 2)]

    def fill(self, x: Tensor, out: Tensor, need_grad: bool):
        b, m = x.shape
        s = self.starts
        columns(out, s[0], m).copy_(x)
        for k in range(2, self.d + 1):
            prev = x if k == 2 else columns(out, s[k - 2], m ** (k - 1))
            torch.mul(prev.unsqueeze(-1), x.unsqueeze(1),
                      out=columns(out, s[k - 1], m ** (k - 1), m))
        return None

    def grad(self, state, gk: Tensor, out: Tensor, x: Tensor) -> Tensor:
        b, m = x.shape
        s = self.starts
        xc = x.unsqueeze(2)
        if self.d == 2:  # dL/dx = g_1 + (G + Gᵀ) x, one batched product
            g = columns(gk, s[1], m, m)
            return torch.baddbmm(columns(gk, s[0], m).unsqueeze(2), g + g.transpose(1, 2),
                                 xc).view(b, m)
        gx = None
        gp = columns(gk, s[self.d - 1], m ** self.d)
        for k in range(self.d, 1, -1):
            g = gp.reshape(b, m ** (k - 1), m)  # (B, m^{k-1}, m); also for B = 0
            prev = columns(out, s[k - 2], m ** (k - 1))
            part = torch.bmm(prev.unsqueeze(1), g).view(b, m)
            gx = part if gx is None else gx + part
            gp = torch.baddbmm(columns(gk, s[k - 2], m ** (k - 1)).unsqueeze(2), g, xc).view(
                b, m ** (k - 1))
        return gp if gx is None else gx + gp


class _Orthogonal(Expansion):
    """Feature-major polynomial family P_1..P_d: output (B, m, d) flattened."""

    family = "orthogonal"

    def __init__(self, d: int = 5, preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__(preprocess, postprocess)
        self.d = check_positive_int("d", d, type(self).__name__)

    def hparams(self) -> dict[str, Any]:
        return {"d": self.d}

    def safe_abs(self, dtype: torch.dtype) -> float | None:
        # the degree-d polynomial grows like c·|x|^d; keep a margin for the coefficients
        return (float(torch.finfo(dtype).max) / 1e6) ** (1.0 / self.d)

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return int(m) * self.d

    def _basis(self, m: int) -> tuple[int, str]:
        return self.d, "feature"

    def p0(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)

    def p1(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def step(self, k: int, x: Tensor, pk1: Tensor, pk2: Tensor) -> Tensor:
        """P_k from P_{k-1} (pk1) and P_{k-2} (pk2)."""
        raise NotImplementedError

    def polys(self, x: Tensor) -> list[Tensor]:
        prev, cur = self.p0(x), self.p1(x)
        out = [cur]
        for k in range(2, self.d + 1):
            prev, cur = cur, self.step(k, x, cur, prev)
            out.append(cur)
        return out

    def expand(self, x: Tensor) -> Tensor:
        return torch.stack(self.polys(x), dim=-1).flatten(1)

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        out = []
        for x in xs:  # feature-major: P_1(x_i) .. P_d(x_i) for each i
            prev, cur = sympy.Integer(1), self.p1(x)
            polys = [cur]
            for k in range(2, self.d + 1):
                prev, cur = cur, self.step(k, x, cur, prev)
                polys.append(cur)
            out.extend(sympy.expand(p) for p in polys)
        return out


@EXPANSIONS.register("chebyshev")
class Chebyshev(_Orthogonal):
    """Chebyshev polynomials of the first kind T_1..T_d (feature-major)."""

    def p1(self, x: Tensor) -> Tensor:
        return x

    def step(self, k, x, pk1, pk2):
        return 2 * x * pk1 - pk2


@EXPANSIONS.register("legendre")
class Legendre(_Orthogonal):
    """Legendre polynomials P_1..P_d (feature-major)."""

    def p1(self, x: Tensor) -> Tensor:
        return x

    def step(self, k, x, pk1, pk2):
        return ((2 * k - 1) * x * pk1 - (k - 1) * pk2) / k


@EXPANSIONS.register("hermite")
class Hermite(_Orthogonal):
    """Physicists' Hermite polynomials H_1..H_d (H_1 = 2x; feature-major)."""

    def p1(self, x: Tensor) -> Tensor:
        return 2 * x

    def step(self, k, x, pk1, pk2):
        return 2 * x * pk1 - 2 * (k - 1) * pk2


@EXPANSIONS.register("laguerre")
class Laguerre(_Orthogonal):
    """Laguerre polynomials L_1..L_d (L_1 = 1 - x; feature-major)."""

    def p1(self, x: Tensor) -> Tensor:
        return 1 - x

    def step(self, k, x, pk1, pk2):
        return ((2 * k - 1 - x) * pk1 - (k - 1) * pk2) / k


@EXPANSIONS.register("jacobi")
class Jacobi(_Orthogonal):
    """Jacobi polynomials P_1^(α,β)..P_d^(α,β) (standard normalisation; feature-major)."""

    def __init__(
        self,
        d: int = 5,
        alpha: float = 1.0,
        beta: float = 1.0,
        preprocess: Any = None,
        postprocess: Any = None,
    ) -> None:
        super().__init__(d, preprocess, postprocess)
        self.alpha = check_finite_number("alpha", alpha, "Jacobi")
        self.beta = check_finite_number("beta", beta, "Jacobi")
        if self.alpha <= -1 or self.beta <= -1:
            raise ConfigurationError(
                f"Jacobi: alpha and beta must be > -1, got {self.alpha}, {self.beta}"
            )

    def hparams(self) -> dict[str, Any]:
        return {"d": self.d, "alpha": self.alpha, "beta": self.beta}

    def p1(self, x: Tensor) -> Tensor:
        a, b = self.alpha, self.beta
        return (a + 1) + (a + b + 2) * (x - 1) / 2

    def step(self, k, x, pk1, pk2):
        a, b = self.alpha, self.beta
        s = 2 * k + a + b
        c0 = 2 * k * (k + a + b) * (s - 2)
        c1 = (s - 1) * (s * (s - 2) * x + a * a - b * b)
        c2 = 2 * (k + a - 1) * (k + b - 1) * s
        return (c1 * pk1 - c2 * pk2) / c0
