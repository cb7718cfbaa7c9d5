"""Local evaluation of the uniform B-spline basis with an analytic backward.

On a uniform grid (knots ``k_0 + j·h``) a degree-d basis is non-zero on d+1 knot intervals,
so at any x only the d+1 bases ``j−d … j`` of x's interval j are non-zero. With
``u = (x − k_0)/h``, ``j = ⌊u⌋`` and ``f = u − j ∈ [0, 1)`` their values are fixed
polynomials of f (the pieces of the cardinal B-spline):

    N_{j−d+k}(x) = Σ_e C[e, k] f^e,        k, e = 0 … d

and their x-derivatives are ``Σ_e e·C[e, k] f^{e−1} / h``. :class:`UniformBSplineBasis` uses
this with no table lookup: the column of local basis k is ``i·(t+d) + j − d + k`` (computed
from j, clamped into the feature's block and masked where the basis does not exist), the d+1
values come from Horner's rule elementwise (d fused multiply-adds over (B, d+1, m), k-major so
every op runs over contiguous rows), and one ``scatter_add`` writes them into the dense
feature-major (B, m·(t+d)) block; the backward gathers the d+1 gradient entries per feature at
the same columns and contracts them with the saved derivatives.

Everything that depends only on (m, t, d) – the coefficient matrices, the offsets k − d and
the features' first columns – is built once (:func:`spline_tables`) and held by the expansion as non-persistent buffers; the
knot values are read from the knots buffer on every call (two scalar reads), so overwriting
the knots in place keeps this path right as long as they stay uniform (see
:meth:`rpnkit.expansion.rbf.BSpline.refresh`).

Wherever PyTorch goes: under autocast the basis is evaluated in the buffers' dtype with
autocast off (:func:`autocast_off`; the GEMM that follows is autocast as usual); under
``torch.compile`` / ``torch.export`` and ``torch.func`` transforms the plain differentiable
form (:func:`uniform_basis_plain`) runs instead of the custom Function; and the Functions'
backward passes are differentiable when a higher-order gradient is asked for
(``create_graph=True``): they then recompute the derivatives from x with plain ops.
"""

from __future__ import annotations

from fractions import Fraction

import torch
from torch import Tensor

__all__ = ["cardinal_coefficients", "spline_tables", "UniformBSplineBasis", "uniform_basis",
           "uniform_basis_plain", "RadialBasis", "radial_basis", "autocast_off", "traced"]


def cardinal_coefficients(d: int) -> list[list[Fraction]]:
    """C[e][k]: coefficient of f^e in the local value of basis ``j−d+k`` (exact rationals).

    From the uniform Cox–de Boor recursion on the local offset f:
    ``N_k ← ((f + p − k) N_{k−1} + (k + 1 − f) N_k) / p`` for p = 1 … d.
    """
    # polys[k] = coefficient list (index e) of the k-th local value
    polys: list[list[Fraction]] = [[Fraction(1)]]
    for p in range(1, d + 1):
        new = []
        for k in range(p + 1):
            acc = [Fraction(0)] * (p + 1)
            if k >= 1:  # (f + p - k) * N_{k-1}
                for e, c in enumerate(polys[k - 1]):
                    acc[e] += c * (p - k)
                    acc[e + 1] += c
            if k < p:  # (k + 1 - f) * N_k
                for e, c in enumerate(polys[k]):
                    acc[e] += c * (k + 1)
                    acc[e + 1] -= c
            new.append([c / p for c in acc])
        polys = new
    return [[polys[k][e] for k in range(d + 1)] for e in range(d + 1)]


def spline_tables(m: int, t: int, d: int, device: torch.device | str | None = "cpu"
                  ) -> dict[str, Tensor]:
    """Tables of the local path for m features, t intervals, degree d >= 1 (float64 / long),
    built on ``device`` (default the CPU, whatever device context is active).

    ``coef`` (d+1, d+1): ``coef[e, k]`` is the coefficient of f^e in local basis k (Horner's
    rule runs over e); ``dcoef`` (d, d+1): the same for the derivatives in u; ``kshift``
    (d+1, 1): k − d, the offset of local basis k from the interval index j (its column in the
    feature's block is j − d + k); ``ioff`` (m,): i·(t+d), the first column of feature i.
    No column table: the columns are computed from j (a few elementwise ops).
    """
    c = cardinal_coefficients(d)
    f64 = {"dtype": torch.float64, "device": device}
    coef = torch.tensor([[float(v) for v in row] for row in c], **f64)
    dcoef = coef[1:] * torch.arange(1, d + 1, **f64).unsqueeze(1)
    return {
        "coef": coef,
        "dcoef": dcoef,
        "kshift": (torch.arange(d + 1, **f64) - d).view(d + 1, 1),
        "ioff": torch.arange(m, device=device) * (t + d),
    }


def _interval(x: Tensor, knots: Tensor, d: int, top: int, inplace: bool
              ) -> tuple[Tensor, Tensor]:
    """(f, j) for x (B, m): u = (x − k₀)/h, j = ⌊u⌋ clamped to [−1, top] (exact small
    integers in x's dtype), f = u − j. NaN/±inf inputs: f is NaN and j = d (an interval whose
    d+1 bases all exist), so NaN reaches the output as with the recursion."""
    k0 = knots[0]
    if inplace:
        u = (x - k0).div_(knots[1] - k0)
        j = torch.floor(u)
        f = u.sub_(j)
        return f, j.nan_to_num_(nan=d, posinf=d, neginf=d).clamp_(-1, top)
    u = (x - k0) / (knots[1] - k0)
    j = torch.floor(u).detach()
    f = u - j
    return f, torch.nan_to_num(j, nan=d, posinf=d, neginf=d).clamp(-1, top)


def _horner(f: Tensor, coef: Tensor, out: Tensor | None = None) -> Tensor:
    """(B, K, m) values Σ_e coef[e, k] f^e of f (B, 1, m) by Horner's rule, elementwise (one
    fused multiply-add per degree, k-major so every op runs over contiguous rows of m);
    written into ``out`` when given (eager), out of place otherwise (differentiable)."""
    c = coef.unsqueeze(-1)  # (E, K, 1)
    n = c.shape[0]
    if n == 1:
        acc = c[0].expand(f.shape[0], c.shape[1], f.shape[2])
        return acc.clone() if out is None else out.copy_(acc)
    if out is None:
        acc = torch.addcmul(c[n - 2], f, c[n - 1])
        for e in range(n - 3, -1, -1):
            acc = torch.addcmul(c[e], acc, f)
        return acc
    torch.addcmul(c[n - 2], f, c[n - 1], out=out)
    for e in range(n - 3, -1, -1):
        torch.addcmul(c[e], out, f, out=out)
    return out


def _columns(j: Tensor, kshift: Tensor, ioff: Tensor, width: int, inplace: bool
             ) -> tuple[Tensor, Tensor]:
    """(columns (B, d+1, m) long, missing (B, d+1, m) bool) of the d+1 local bases of each
    feature: local column p = j − d + k, clamped into the feature's block [0, width) (a basis
    that does not exist – outside the t+d bases, or x outside the knots – is redirected to a
    column of its own feature and its value masked to zero, so a ``scatter_add`` is exact)."""
    p = j.unsqueeze(1) + kshift  # (B, d+1, m), exact small integers
    missing = (p < 0) | (p > width - 1)
    p = p.clamp_(0, width - 1) if inplace else p.clamp(0, width - 1)
    col = p.to(torch.long)
    return (col.add_(ioff) if inplace else col + ioff), missing


class UniformBSplineBasis(torch.autograd.Function):
    """Dense (B, m·(t+d)) B-spline basis of x on uniform knots; backward in O(B·m·(d+1)).

    No index table and no small GEMM: the interval j = ⌊u⌋ gives the d+1 columns by
    arithmetic (:func:`_columns`), Horner's rule gives their values elementwise
    (:func:`_horner`), and one ``scatter_add`` writes them into the zero block (bases that do
    not exist add a masked zero inside their own feature's block). The backward gathers the
    d+1 gradient entries per feature at the same columns and contracts them with the saved
    (masked) derivatives. It is differentiable when autograd asks for a graph of it
    (``create_graph``): the derivatives are then recomputed from x with plain ops.
    """

    @staticmethod
    def forward(ctx, x: Tensor, knots: Tensor, coef: Tensor, dcoef: Tensor,
                kshift: Tensor, ioff: Tensor, width: int) -> Tensor:
        b, m = x.shape
        d = coef.shape[0] - 1
        f, j = _interval(x, knots, d, width + d, inplace=True)
        col, missing = _columns(j, kshift, ioff, width, inplace=True)
        f = f.unsqueeze(1)  # (B, 1, m)
        vals = _horner(f, coef, out=x.new_empty(b, d + 1, m)).masked_fill_(missing, 0)
        col = col.view(b, (d + 1) * m)
        out = x.new_zeros(b, m * width).scatter_add_(1, col, vals.view(b, (d + 1) * m))
        if ctx.needs_input_grad[0]:
            # du/dx = 1/h; a basis that does not exist has derivative 0 (masked)
            dvals = _horner(f, dcoef, out=vals).masked_fill_(missing, 0)
            dvals.div_(knots[1] - knots[0])
            ctx.save_for_backward(col, dvals, x, knots, dcoef, kshift, ioff)
        ctx.width = width
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        col, dvals, x, knots, dcoef, kshift, ioff = ctx.saved_tensors
        b, m = x.shape
        if torch.is_grad_enabled():  # create_graph: a backward autograd can differentiate
            dvals = _plain_derivatives(x, knots, dcoef, kshift, ioff, ctx.width)
        g = grad.gather(1, col).view(dvals.shape)
        return (torch.linalg.vecdot(g, dvals, dim=1),) + (None,) * 6


def _plain_derivatives(x: Tensor, knots: Tensor, dcoef: Tensor, kshift: Tensor, ioff: Tensor,
                       width: int) -> Tensor:
    """(B, d+1, m) x-derivatives of the d+1 local bases (masked where a basis does not
    exist), out-of-place differentiable ops (the backward's form when a higher-order gradient
    is asked for): Σ_e e·C[e, k] f^{e−1} / h; ⌊u⌋ has derivative 0, so df/dx = 1/h."""
    f, j = _interval(x, knots, dcoef.shape[0], width + dcoef.shape[0], inplace=False)
    _col, missing = _columns(j, kshift, ioff, width, inplace=False)
    return _horner(f.unsqueeze(1), dcoef).masked_fill(missing, 0) / (knots[1] - knots[0])


def functorch_active() -> bool:
    """True inside ``torch.func`` transforms (vmap, grad, jacrev, …): the custom autograd
    Functions here are eager-only, so callers take their plain differentiable form there."""
    return bool(torch._C._are_functorch_transforms_active())


def traced() -> bool:
    """True where the custom Functions give way to plain differentiable code: inside
    ``torch.func`` transforms, ``torch.compile`` and ``torch.export`` (no ``out=``, no
    in-place writes into views, a graph the tracer sees whole)."""
    return functorch_active() or torch.compiler.is_compiling()


def autocast_off(x: Tensor) -> bool:
    """Whether autocast is on for x's device (the basis is then evaluated with autocast off,
    in its buffers' dtype: exact tables and knots, and no dtype mixed into one scatter)."""
    dev = x.device.type
    return torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev)


def uniform_basis_plain(x: Tensor, knots: Tensor, tables: dict[str, Tensor],
                        width: int) -> Tensor:
    """The same basis with out-of-place differentiable ops (autograd derives the backward, to
    any order), for ``torch.func`` transforms, ``torch.compile`` and ``torch.export``."""
    b, m = x.shape
    coef = tables["coef"]
    d = coef.shape[0] - 1
    f, j = _interval(x, knots, d, width + d, inplace=False)
    col, missing = _columns(j, tables["kshift"], tables["ioff"], width, inplace=False)
    vals = _horner(f.unsqueeze(1), coef).masked_fill(missing, 0)
    out = torch.zeros(b, m * width, dtype=x.dtype, device=x.device)
    return out.scatter_add(1, col.reshape(b, -1), vals.reshape(b, -1))


def uniform_basis(x: Tensor, knots: Tensor, tables: dict[str, Tensor], width: int) -> Tensor:
    """Dense feature-major basis (B, m·width) of x (B, m) on uniform ``knots`` (x, knots and
    the floating tables in one dtype; callers handle autocast, see :func:`autocast_off`)."""
    if traced():
        return uniform_basis_plain(x, knots, tables, width)
    return UniformBSplineBasis.apply(
        x, knots, tables["coef"], tables["dcoef"], tables["kshift"], tables["ioff"], width,
    )


def _radial(x: Tensor, centres: Tensor, eps: float, gaussian: bool) -> tuple[Tensor, Tensor]:
    """(z, φ(z)) with z = ε(x_i − c_k), (B, m, K), out-of-place differentiable ops."""
    z = (x.unsqueeze(-1) - centres) * eps
    s = z * z
    return z, torch.exp(-s) if gaussian else 1.0 / (1.0 + s)


class RadialBasis(torch.autograd.Function):
    """φ(ε(x_i − c_k)) for Gaussian (exp(−z²)) or inverse quadratic (1/(1+z²)) bumps, (B, m·K).

    Forward in place on one (B, m, K) buffer; backward ``Σ_k g·φ'(z)·ε`` from the saved
    output, with z recomputed (no autograd graph of five elementwise ops, no saved z). Under
    ``create_graph`` the backward recomputes φ from x with plain ops, so it is differentiable.
    """

    @staticmethod
    def forward(ctx, x: Tensor, centres: Tensor, eps: float, gaussian: bool) -> Tensor:
        z = (x.unsqueeze(-1) - centres).mul_(eps)
        s = z.square_()
        out = s.neg_().exp_() if gaussian else s.add_(1.0).reciprocal_()
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x, centres, out)
        ctx.eps, ctx.gaussian = eps, gaussian
        return out.flatten(1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        x, centres, out = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiable in grad and x
            z, phi = _radial(x, centres, ctx.eps, ctx.gaussian)
            dphi = phi if ctx.gaussian else phi * phi  # d/dz: −2z·(φ or φ²)
            gx = (grad.reshape(phi.shape) * dphi * z).sum(-1) * (-2.0 * ctx.eps)
            return gx, None, None, None
        z = (x.unsqueeze(-1) - centres).mul_(ctx.eps)
        g = grad.reshape(out.shape) * out
        if not ctx.gaussian:  # d/dz 1/(1+z²) = −2z φ²
            g.mul_(out)
        gx = torch.linalg.vecdot(g, z).mul_(-2.0 * ctx.eps)
        return gx, None, None, None


def radial_basis(x: Tensor, centres: Tensor, eps: float, gaussian: bool) -> Tensor:
    """(B, m·K) Gaussian or inverse quadratic bumps of x (B, m), centres in x's dtype: the
    analytic Function eagerly, plain differentiable ops when traced (:func:`traced`)."""
    if traced():
        return _radial(x, centres, eps, gaussian)[1].flatten(1)
    return RadialBasis.apply(x, centres, eps, gaussian)
