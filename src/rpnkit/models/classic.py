"""Classic models expressed as RPNs (SPEC §6): MLP, KAN, kernel SVM, naive Bayes, PGM.

Every model here is a plain :class:`~rpnkit.RPN` (an ``nn.Module``) whose layers are
ordinary :class:`~rpnkit.RPNHead` / :class:`~rpnkit.RPNLayer` objects built from the
registered components; the classes only choose κ, ψ and π. Each docstring states
the equivalence the model realises; ``tests/models`` checks them numerically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigurationError
from ..head import RPNHead
from ..layer import RPNLayer
from ..model import MAX_LAYERS, RPN
from ..remainder.remainders import LinearRemainder

__all__ = [
    "MLP",
    "KAN",
    "KernelSVM",
    "NaiveBayes",
    "PGM",
    "KANBaseRemainder",
    "KERNELS",
    "DISTRIBUTIONS",
]

KERNELS = ("linear", "gaussian_rbf", "inverse_quadratic_rbf")
DISTRIBUTIONS = ("normal", "laplace", "cauchy", "gamma", "exponential", "chi2")


def _check_dims(dims: Any, owner: str) -> list[int]:
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence):
        raise ConfigurationError(f"{owner}: dims must be a list of integers, got {dims!r}")
    dims = list(dims)
    if len(dims) - 1 > MAX_LAYERS:
        raise ConfigurationError(
            f"{owner}: dims lists {len(dims):,} sizes, i.e. {len(dims) - 1:,} layers; at most "
            f"{MAX_LAYERS:,} layers are allowed"
        )
    if len(dims) < 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ConfigurationError(
            f"{owner}: dims must be a list of at least two positive integers [m, ..., n], "
            f"got {dims!r}"
        )
    return dims


def _chain(dims: list[int], make_layer) -> list[RPNLayer]:
    return [make_layer(i, dims[i], dims[i + 1]) for i in range(len(dims) - 1)]


class MLP(RPN):
    """Multi-layer perceptron as an RPN.

    Every layer is one head with κ = identity, ψ = identity, a bias and π = zero, i.e.
    ``x ↦ x Wᵀ + b``; ``activation`` is applied as the output module of every layer but
    the last. With the same weights the model equals
    ``nn.Sequential(nn.Linear(d0, d1), act, ..., nn.Linear(d_{k-1}, d_k))`` exactly
    (``head.w`` holds ``vec(W)`` row-major, ``head.bias`` holds ``b``).

    Args:
        dims: widths ``[m, h_1, ..., n]``.
        activation: module name (``"relu"``, ``"tanh"``, ``"silu"``, ...) or module used
            between layers; ``None`` for a purely linear stack.
        bias: learnable bias per layer (default ``True``, as in ``nn.Linear``).
        output: optional module(s) applied after the last layer (e.g. ``"softmax"``).
    """

    def __init__(
        self,
        dims: Sequence[int],
        activation: Any = "relu",
        bias: bool = True,
        output: Any = None,
        init: str = "default",
    ) -> None:
        dims = _check_dims(dims, "MLP")
        last = len(dims) - 2

        def make(i: int, m: int, n: int) -> RPNLayer:
            out = output if i == last else activation
            head = RPNHead(m, n, "identity", "identity", "zero", bias=bias, init=init)
            return RPNLayer(m, n, heads=[head], output=out)

        super().__init__(_chain(dims, make))


class KANBaseRemainder(LinearRemainder):
    """KAN's residual ("base") branch π(x) = act(x) W'ᵀ [+ b'] (activation *before* the map).

    A :class:`~rpnkit.remainder.LinearRemainder` whose activation is applied to the input
    rather than the output; with ``activation="silu"`` it is exactly the ``w_b·silu(x)``
    term of a KAN edge, summed over the inputs.
    """

    registry_name = "kan_base"

    def __init__(self, activation: Any = "silu", bias: bool = False) -> None:
        super().__init__(activation=activation, bias=bias)

    def hparams(self) -> dict[str, Any]:
        return {"bias": self.use_bias, "activation": type(self.activation).__name__}

    def activation_width(self) -> int:
        return int(self.m)  # the activation acts on the inputs

    def separable(self) -> bool:
        """Σ_i W'_ji act(x_i): separable when the activation acts entry by entry."""
        from ..structure import elementwise_chain

        return self.activation is None or elementwise_chain([self.activation])

    def fused_input_activation(self) -> str | None:
        """``"silu"`` / ``"identity"`` when a tiny head's fused product may compute this
        branch in its own autograd node (:mod:`rpnkit.fused_remainder`): the activation is
        exactly ``nn.SiLU`` or absent; None otherwise (the head adds :meth:`forward`)."""
        if self.activation is None:
            return "identity"
        return "silu" if type(self.activation) is nn.SiLU else None

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        y = self._act(x) @ self.weight.transpose(0, 1)
        if self.bias is not None:
            y = y + self.bias
        return y

    def sympy(self, xs: list[Any], tol: float = 0.0) -> list[Any]:
        from ..modules import sympy_affine

        weight, bias = self._weights_sympy()
        return sympy_affine(weight, self._act_sympy(list(xs)), bias, tol)


class KAN(RPN):
    """Kolmogorov–Arnold network as an RPN.

    Each layer is one head with κ = bspline (``t = grid`` intervals on ``grid_range``,
    degree ``degree``; D = m(grid+degree)), ψ = identity and a linear remainder with SiLU
    (SPEC §6). The layer computes, for output j,

        y_j = Σ_i [ Σ_k c_{j,i,k} B_k(x_i) + w^b_{j,i} silu(x_i) ]

    which is the KAN layer Σ_i φ_{j,i}(x_i) with learnable edge functions
    φ_{j,i}(u) = w^b_{j,i} silu(u) + spline_{j,i}(u): ``head.w`` holds the spline
    coefficients c (n × m(grid+degree), feature-major) and ``head.remainder.weight``
    holds w^b. The SiLU is applied to the remainder's *input*
    (:class:`KANBaseRemainder`), as in KAN, rather than to the output of the linear map.
    Nothing is inserted between layers. The per-edge spline scale of some KAN
    implementations is absorbed into c (the same function class).
    """

    def __init__(
        self,
        dims: Sequence[int],
        grid: int = 5,
        degree: int = 3,
        grid_range: Sequence[float] = (-1.0, 1.0),
        base_activation: Any = "silu",
        bias: bool = False,
        init: str = "default",
    ) -> None:
        dims = _check_dims(dims, "KAN")
        expansion = {"name": "bspline", "range": tuple(grid_range), "t": grid, "d": degree}

        def make(i: int, m: int, n: int) -> RPNLayer:
            rem = KANBaseRemainder(activation=base_activation) if base_activation else "zero"
            head = RPNHead(m, n, expansion, "identity", rem, bias=bias, init=init)
            return RPNLayer(m, n, heads=[head])

        super().__init__(_chain(dims, make))
        self.grid, self.degree, self.grid_range = grid, degree, tuple(grid_range)


class KernelSVM(RPN):
    """Kernel SVM (primal form on a fixed basis) as an RPN.

    κ = identity (``kernel="linear"``), ``gaussian_rbf`` or ``inverse_quadratic_rbf``;
    ψ = identity; π = zero; plus a bias. The decision function is

        f_j(x) = Σ_{i,k} α_{j,i,k} k(x_i, c_k) + b_j

    with ``k(u, c) = exp(-(ε(u - c))²)`` or ``1/(1 + (ε(u - c))²)`` on K centres
    ``c = linspace(lo, hi, K)`` per feature (an additive RBF kernel with fixed landmarks,
    the finite-basis primal of the kernel machine), or ``f(x) = wᵀx + b`` for the linear
    kernel. Trained with a hinge loss (``RPNClassifier(loss="hinge")``) it is a
    (multi-class, Crammer–Singer-style) soft-margin SVM; weight decay plays the role of
    the margin term ½‖α‖².

    Args:
        dims: ``[m, n]`` for the classic single-layer machine; longer lists stack layers.
        kernel: ``"linear"``, ``"gaussian_rbf"`` (alias ``"rbf"``) or ``"inverse_quadratic_rbf"``.
        K, eps, range: RBF centres and width (SPEC §2 ``gaussian_rbf``); defaults
            K=10, eps=1, range=(-2, 2) – suited to standardised inputs.
    """

    def __init__(
        self,
        dims: Sequence[int],
        kernel: str = "gaussian_rbf",
        K: int = 10,  # noqa: N803
        eps: float = 1.0,
        range: Sequence[float] = (-2.0, 2.0),  # noqa: A002
        bias: bool = True,
        init: str = "default",
    ) -> None:
        dims = _check_dims(dims, "KernelSVM")
        if kernel == "rbf":
            kernel = "gaussian_rbf"
        if kernel not in KERNELS:
            raise ConfigurationError(
                f"KernelSVM: kernel must be one of {KERNELS} (or 'rbf'), got {kernel!r}"
            )
        if kernel == "linear":
            expansion: Any = "identity"
        else:
            expansion = {"name": kernel, "K": K, "eps": eps, "range": tuple(range)}

        def make(i: int, m: int, n: int) -> RPNLayer:
            head = RPNHead(m, n, expansion, "identity", "zero", bias=bias, init=init)
            return RPNLayer(m, n, heads=[head])

        super().__init__(_chain(dims, make))
        self.kernel = kernel


class NaiveBayes(RPN):
    """Naive Bayes classifier as an RPN.

    κ = ``naive_<distribution>`` (elementwise log-densities log p(x_i)), ψ = identity,
    π = linear (default) or zero, plus a bias. The logit of class j is

        s_j(x) = Σ_i w_{j,i} log p(x_i) + (x W'ᵀ)_j + b_j

    i.e. a class prior (b_j) plus a sum of per-feature log-likelihood terms, the naive
    Bayes factorisation log p(y=j) + Σ_i log p(x_i | y=j) up to a class-independent
    constant. For ``distribution="normal"`` with the linear remainder, the logits span
    exactly the Gaussian naive Bayes family: setting w_{j,i} = 1/σ²_{j,i},
    W'_{j,i} = μ_{j,i}/σ²_{j,i} and the matching b_j reproduces
    ``GaussianNB.predict_joint_log_proba`` (tested).

    Args:
        dims: ``[m, n_classes]`` (longer lists stack layers).
        distribution: ``normal``, ``laplace``, ``cauchy``, ``gamma``, ``exponential``, ``chi2``.
        remainder: ``"linear"`` (default) or ``"zero"``.
        distribution_params: keyword arguments of the naive expansion (``loc``, ``scale``, ...).
    """

    def __init__(
        self,
        dims: Sequence[int],
        distribution: str = "normal",
        remainder: str = "linear",
        distribution_params: Mapping[str, Any] | None = None,
        bias: bool = True,
        init: str = "default",
    ) -> None:
        dims = _check_dims(dims, "NaiveBayes")
        if distribution not in DISTRIBUTIONS:
            raise ConfigurationError(
                f"NaiveBayes: distribution must be one of {DISTRIBUTIONS}, got {distribution!r}"
            )
        if remainder not in ("linear", "zero"):
            raise ConfigurationError(
                f"NaiveBayes: remainder must be 'linear' or 'zero', got {remainder!r}"
            )
        expansion = {"name": f"naive_{distribution}", **dict(distribution_params or {})}

        def make(i: int, m: int, n: int) -> RPNLayer:
            head = RPNHead(m, n, expansion, "identity", remainder, bias=bias, init=init)
            return RPNLayer(m, n, heads=[head])

        super().__init__(_chain(dims, make))
        self.distribution = distribution


class PGM(RPN):
    """Probabilistic-graphical-model-like classifier (Bayesian / Markov network) as an RPN.

    κ = ``combinatorial_normal`` with d = 2: one Gaussian log-potential per feature and
    per pair of features, log N_r(x_S; 0, I_r) = -(r/2) log 2π - ½‖x_S‖² for every
    subset S with |S| ≤ 2; ψ = identity; π = linear; plus a bias. The logit of class j,

        s_j(x) = Σ_{|S|≤2} w_{j,S} log φ_S(x_S) + (x W'ᵀ)_j + b_j,

    is a log-linear model (product of unary and pairwise factors, the factorisation of
    a pairwise Markov network / a Bayesian network with parent sets of size ≤ 1) whose
    factor weights are learned per class. Note that with unit-covariance potentials the
    pairwise factors are sums of unary ones, so this class spans the same functions as
    :class:`NaiveBayes` with ``distribution="normal"``; it is kept as in the RPN paper
    (Table 9 "comb. Gaussian expansion + identity + linear remainder").
    """

    def __init__(
        self,
        dims: Sequence[int],
        d: int = 2,
        remainder: str = "linear",
        bias: bool = True,
        init: str = "default",
    ) -> None:
        dims = _check_dims(dims, "PGM")
        expansion = {"name": "combinatorial_normal", "d": d}

        def make(i: int, m: int, n: int) -> RPNLayer:
            head = RPNHead(m, n, expansion, "identity", remainder, bias=bias, init=init)
            return RPNLayer(m, n, heads=[head])

        super().__init__(_chain(dims, make))
