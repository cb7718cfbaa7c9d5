"""scikit-learn estimators backed by RPN models: :class:`RPNClassifier`, :class:`RPNRegressor`.

Both follow the scikit-learn estimator contract (constructor stores hyperparameters
only; ``fit`` / ``predict`` / ``score``; ``get_params`` / ``set_params``; ``clone``;
pickling) and pass ``sklearn.utils.estimator_checks`` (see ``tests/test_sklearn.py``).
They train through rpnkit's one training loop, :func:`rpnkit.training.fit` (Adam with an
L2 penalty, AdamW or full-batch L-BFGS; full batch for small data or shuffled
minibatches; optional early stopping on an internal validation split that restores the
best weights), seeded by ``random_state`` without touching the global torch RNG, and
write no files. Small CPU problems run on one intra-op thread during ``fit``/``predict``
(the previous setting is restored after).

The network is ``RPN.from_dims([n_features, *dims, n_outputs], ...)`` built from the
``expansion`` / ``reconciliation`` / ``remainder`` names and their ``*_params``, or one
of the classic models of :mod:`rpnkit.models` when ``model`` names one
(``"naive_bayes"``, ``"pgm"``, ``"kan"``, ``"kernel_svm"``, ``"mlp"``, with
``model_params``).

Defaults (no tuning; inputs are standardised internally, so a ``StandardScaler`` in
front is optional): a single RPN layer with a symmetric degree-2 Taylor expansion
(every monomial x_i and x_i x_j once), identity reconciliation, zero remainder and a
bias – i.e. a quadratic logistic / polynomial regression model. The classifier trains
full-batch with Adam (lr 0.02) and an L2 penalty of 3e-3 for at most 300 epochs,
stopping when the training loss stops improving; the regressor uses full-batch L-BFGS
with an L2 penalty of 1e-5. Inputs (and regression targets) are standardised
internally.

scikit-learn's MLP names are accepted as aliases: ``max_iter`` for ``max_epochs``,
``learning_rate_init`` for ``lr`` and ``alpha`` for ``weight_decay`` (the L2 penalty,
rpnkit's scaling: ``loss + alpha/2·‖θ‖²``). An alias is an ordinary parameter (default
None, so ``get_params`` / ``set_params`` / ``clone`` keep what was given); a value given
there is used for its canonical parameter when fitting, and giving both with different
values is refused.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

try:
    import sklearn  # noqa: F401
except ImportError:  # pragma: no cover - exercised by the optional-dependency test
    raise ImportError(
        "rpnkit.sklearn needs scikit-learn: pip install 'rpnkit[sklearn]' "
        "(or pip install scikit-learn)"
    ) from None
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d
from torch import nn

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - scikit-learn < 1.6

    def validate_data(estimator, X="no_validation", y="no_validation", **kwargs):  # noqa: N803
        return estimator._validate_data(X, y, **kwargs)

from .errors import ConfigurationError
from .model import RPN
from .spec import HEAD_FIELDS

__all__ = ["RPNClassifier", "RPNRegressor"]

logger = logging.getLogger(__name__)

_LOSSES = ("log_loss", "hinge")

#: Estimator parameters that are not head options: network shape, classic model, training.
_NON_HEAD_PARAMS = (
    "dims", "activation", "model", "model_params", "loss", "max_epochs", "batch_size", "lr",
    "weight_decay", "optimizer", "early_stopping", "validation_fraction", "n_iter_no_change",
    "tol", "random_state", "device", "dtype", "standardize", "verbose",
    "max_iter", "learning_rate_init", "alpha",
)  # fmt: skip

#: scikit-learn's MLP parameter names -> the estimators' own (see the module docstring)
ALIASES = {"max_iter": "max_epochs", "learning_rate_init": "lr", "alpha": "weight_decay"}


def _resolve_device(device: Any) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def _small_work_threads(device: torch.device, n_elements: int):
    """Run small CPU problems on one intra-op thread (restored afterwards).

    For tabular-sized tensors the synchronisation of several OpenMP threads costs more
    than the arithmetic, and on a loaded machine it can make training 10x slower.
    """
    if device.type != "cpu" or n_elements > 1_000_000 or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _as_tuple_dims(dims: Any) -> list[int]:
    if dims is None:
        return []
    if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
        return [int(dims)]
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence):
        raise ConfigurationError(f"dims must be a sequence of hidden widths, got {dims!r}")
    out = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
            raise ConfigurationError(f"dims must contain positive integers, got {dims!r}")
        out.append(int(d))
    return out


class _RPNEstimatorBase(BaseEstimator):
    """Shared constructor, network construction and training loop."""

    _task = "regression"

    def __init__(
        self,
        dims: Sequence[int] = (),
        expansion: Any = "taylor",
        reconciliation: Any = "identity",
        remainder: Any = "zero",
        expansion_params: Mapping[str, Any] | None = None,
        reconciliation_params: Mapping[str, Any] | None = None,
        remainder_params: Mapping[str, Any] | None = None,
        bias: bool = True,
        activation: Any = None,
        model: str | None = None,
        model_params: Mapping[str, Any] | None = None,
        max_epochs: int = 300,
        batch_size: int | str = "auto",
        lr: float = 0.02,
        weight_decay: float = 3e-3,
        optimizer: str = "adam",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 20,
        tol: float = 1e-5,
        random_state: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
        standardize: bool = True,
        verbose: int = 0,
        max_iter: int | None = None,
        learning_rate_init: float | None = None,
        alpha: float | None = None,
    ) -> None:
        self.dims = dims
        self.expansion = expansion
        self.reconciliation = reconciliation
        self.remainder = remainder
        self.expansion_params = expansion_params
        self.reconciliation_params = reconciliation_params
        self.remainder_params = remainder_params
        self.bias = bias
        self.activation = activation
        self.model = model
        self.model_params = model_params
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.standardize = standardize
        self.verbose = verbose
        self.max_iter = max_iter
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha

    # -- scikit-learn's names ------------------------------------------------------
    def _param(self, name: str) -> Any:
        """The value of ``max_epochs`` / ``lr`` / ``weight_decay``, taken from its
        scikit-learn alias (:data:`ALIASES`) when that is set; both set differently: error."""
        alias = next(a for a, c in ALIASES.items() if c == name)
        value, given = getattr(self, name), getattr(self, alias)
        if given is None:
            return value
        default = inspect.signature(type(self).__init__).parameters[name].default
        if value != default and value != given:
            raise ValueError(
                f"{alias}={given!r} and {name}={value!r} name one setting ({alias} is "
                f"scikit-learn's name for {name}); give one of them"
            )
        return given

    # -- construction ------------------------------------------------------------
    def _expansion_params(self) -> dict[str, Any]:
        if self.expansion_params is not None:
            return dict(self.expansion_params)
        if self.expansion == "taylor":
            return {"d": 2, "symmetric": True}
        return {}

    def _head_options(self) -> dict[str, Any]:
        """The head options (:data:`_HEAD_OPTIONS`) for ``RPN.from_dims``."""
        opts = {k: getattr(self, k) for k in _HEAD_OPTIONS}
        for k in opts:
            if k.endswith("_params"):
                opts[k] = dict(opts[k] or {})
        opts["expansion_params"] = self._expansion_params()
        return opts

    def _ignored_with_model(self) -> list[str]:
        """RPN options set to non-default values although ``model`` builds its own layers."""
        defaults = inspect.signature(type(self).__init__).parameters
        out = []
        for k in (*_HEAD_OPTIONS, "activation"):
            default = defaults[k].default
            value = getattr(self, k)
            if value is not default and value != default:
                out.append(f"{k}={value!r}")
        return out

    def _build_network(self, n_in: int, n_out: int, plan_batch: int | None = None) -> nn.Module:
        """The network; an RPN's contractions are planned for ``plan_batch`` rows (the training
        batch, as ``rpnkit train`` does; None: the nominal batch)."""
        widths = [n_in, *_as_tuple_dims(self.dims), n_out]
        if self.model is not None:
            from .models import build_model

            return build_model(self.model, dims=widths, **dict(self.model_params or {}))
        return RPN.from_dims(widths, **self._head_options(), activation=self.activation,
                             plan_batch=plan_batch)

    def _check_hparams(self) -> None:
        def positive_int(name: str) -> None:
            v = self._param(name) if name in ALIASES.values() else getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                what = next((f"{a} (or {name})" for a, c in ALIASES.items()
                             if c == name and getattr(self, a) is not None), name)
                raise ValueError(f"{what} must be a positive integer, got {v!r}")

        positive_int("max_epochs")
        positive_int("n_iter_no_change")
        if not (self.batch_size == "auto" or (
            isinstance(self.batch_size, (int, np.integer)) and not isinstance(self.batch_size, bool)
            and self.batch_size >= 1
        )):
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        lr, decay = self._param("lr"), self._param("weight_decay")
        if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr (learning_rate_init) must be > 0, got {lr!r}")
        if isinstance(decay, bool) or not (isinstance(decay, (int, float)) and decay >= 0):
            raise ValueError(f"weight_decay (alpha) must be >= 0, got {decay!r}")
        if not 0.0 < float(self.validation_fraction) < 1.0:
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}"
            )
        if self.optimizer not in ("adam", "adamw", "lbfgs"):
            raise ValueError(
                f"optimizer must be 'adam', 'adamw' or 'lbfgs', got {self.optimizer!r}"
            )
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not (isinstance(self.tol, (int, float)) and not isinstance(self.tol, bool)
                and math.isfinite(self.tol) and self.tol >= 0):
            raise ValueError(f"tol must be a finite number >= 0, got {self.tol!r}")
        if self.model is None and self.model_params:
            raise ConfigurationError("model_params given without a model name")
        if self.model is not None:
            ignored = self._ignored_with_model()
            if ignored:
                raise ConfigurationError(
                    f"{type(self).__name__}(model={self.model!r}): {', '.join(ignored)} would be "
                    f"ignored, because model {self.model!r} builds its own layers; pass the "
                    "model's options in model_params, or drop model to build an RPN from "
                    "these components"
                )

    @property
    def _torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32

    # -- training ------------------------------------------------------------------
    def _loss_name(self) -> str:
        """Name of the training loss in :data:`rpnkit.training.LOSSES`."""
        raise NotImplementedError

    def _split_validation(self, X: np.ndarray, y: np.ndarray, seed: int):
        stratify = None
        if self._task == "classification":
            counts = np.bincount(y)
            n_val = math.ceil(self.validation_fraction * len(y))
            if counts.min() >= 2 and n_val >= len(counts):
                stratify = y
        return train_test_split(
            X, y, test_size=self.validation_fraction, random_state=seed, stratify=stratify
        )

    def _fit_input_scaling(self, X: np.ndarray) -> np.ndarray:
        if self.standardize:
            self.x_mean_ = X.mean(axis=0)
            scale = X.std(axis=0)
            self.x_scale_ = np.where(scale > 1e-12 * np.maximum(1.0, np.abs(self.x_mean_)), scale, 1.0)
        else:
            self.x_mean_ = np.zeros(X.shape[1])
            self.x_scale_ = np.ones(X.shape[1])
        return self._scale_inputs(X)

    def _scale_inputs(self, X: np.ndarray) -> np.ndarray:
        if not self.standardize:
            return X
        return (np.asarray(X, dtype=np.float64) - self.x_mean_) / self.x_scale_

    def _train_config(self, n_train: int) -> dict[str, Any]:
        """The ``train:`` spec (:class:`~rpnkit.config.TrainConfig`) of these hyperparameters."""
        if self.optimizer == "lbfgs":
            batch = n_train  # L-BFGS is a full-batch method
            optimizer = {"name": "lbfgs", "lr": 1.0, "max_iter": 20, "history_size": 20,
                         "tolerance_grad": 1e-10, "tolerance_change": 1e-14}
        else:
            batch = min(n_train, 1024 if self.batch_size == "auto" else int(self.batch_size))
            optimizer = {"name": self.optimizer, "lr": float(self._param("lr"))}
        optimizer["weight_decay"] = float(self._param("weight_decay"))
        return {
            "epochs": int(self._param("max_epochs")),
            "batch_size": max(1, batch),
            "optimizer": optimizer,
            "scheduler": "none",
            "loss": self._loss_name(),
            # stop after n_iter_no_change epochs without a relative improvement by tol of
            # the validation loss (early_stopping=True) or else of the training loss
            "early_stopping": int(self.n_iter_no_change),
            "tol": float(self.tol),
            "dtype": self.dtype,
        }

    def _fit_network(self, X: np.ndarray, y: np.ndarray, n_out: int) -> None:
        from .training.engine import fit

        self._check_hparams()
        X = self._fit_input_scaling(X)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(0, 2**31 - 1))
        device = _resolve_device(self.device)
        data: dict[str, Any] = {"train": (X, y)}
        if self.early_stopping and len(X) >= 4:
            X_tr, X_val, y_tr, y_val = self._split_validation(X, y, seed)
            data = {"train": (X_tr, y_tr), "val": (X_val, y_val)}
        cfg = self._train_config(len(data["train"][0]))
        name = type(self).__name__

        def log_epoch(epoch: int, rec: dict[str, Any]) -> None:
            # like scikit-learn's own estimators: verbose prints one line per epoch on stdout
            val = rec.get("val_loss")
            line = f"Epoch {epoch}, loss = {rec['train_loss']:.8f}" + (
                f", validation loss = {val:.8f}" if val is not None else "")
            logger.info("%s %s", name, line)
            sys.stdout.write(line + "\n")  # the estimator's verbose output, as scikit-learn's
            sys.stdout.flush()

        cuda_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices), _small_work_threads(device, X.size):
            torch.manual_seed(seed)
            net = self._build_network(X.shape[1], n_out, cfg["batch_size"])
            result = fit(net, data, cfg, seed=seed, device=device, progress=self.verbose > 1,
                         on_epoch_end=log_epoch if self.verbose else None, restore_best=True,
                         task=self._task)
        stopped = result.stopped or {}
        if stopped.get("cause") == "non_finite":
            raise FloatingPointError(
                f"{name}: training loss became NaN/inf at epoch {stopped['epoch']}; "
                "lower lr or standardise the inputs"
            )
        if self.early_stopping and stopped.get("cause") != "early_stopping":
            watched = "validation" if "val" in data else "training"
            warnings.warn(
                f"{name}: max_epochs={self._param('max_epochs')} reached before early stopping converged "
                f"(the {watched} loss had not stalled for n_iter_no_change="
                f"{self.n_iter_no_change} epochs); increase max_epochs",
                ConvergenceWarning,
                stacklevel=3,
            )
        net.eval()
        if device.type == "cpu" and self._torch_dtype != torch.float64:
            # float64 inference on the CPU: predictions do not depend on the batch
            # composition (float32 GEMM results can), at negligible cost for tabular data
            net = net.to(torch.float64)
        self.model_ = net
        self.n_iter_ = result.epochs_run
        self.loss_curve_ = [h["train_loss"] for h in result.history]
        self.validation_scores_ = [h["val_loss"] for h in result.history if "val_loss" in h]
        if "val" in data and result.best.get("value") is not None:
            self.best_loss_ = float(result.best["value"])
        else:
            self.best_loss_ = min(self.loss_curve_, default=math.inf)

    def _forward(self, X: np.ndarray) -> np.ndarray:
        net = self.model_
        p = next(net.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
        dtype = p.dtype if p is not None else self._torch_dtype
        out = []
        with torch.no_grad(), _small_work_threads(device, X.size):
            Xt = torch.tensor(self._scale_inputs(X), dtype=dtype, device=device)
            for chunk in Xt.split(8192):
                out.append(net(chunk).to("cpu", torch.float64))
        if not out:
            return np.zeros((0, self.n_outputs_))
        return torch.cat(out).numpy()

    # -- pickling: keep the network on the CPU in the pickle -------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        net = state.get("model_")
        if net is not None:
            p = next(net.parameters(), None)
            if p is not None and p.device.type != "cpu":
                state["model_"] = copy.deepcopy(net).to("cpu")
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        return tags


#: The estimators' head options forwarded to ``RPN.from_dims``: the parameters of the
#: estimators that are :data:`rpnkit.spec.HEAD_FIELDS` (in that order).
_HEAD_OPTIONS: tuple[str, ...] = tuple(
    f for f in HEAD_FIELDS if f in inspect.signature(_RPNEstimatorBase.__init__).parameters
)


class RPNClassifier(ClassifierMixin, _RPNEstimatorBase):
    """RPN classifier with the scikit-learn estimator contract.

    The network outputs one logit per class (``classes_`` holds the original labels,
    any hashable type) and is trained with cross-entropy (``loss="log_loss"``) or the
    multi-class hinge loss (``loss="hinge"``, the SVM objective; ``predict_proba`` is
    then a softmax of the margins, not calibrated).

    Parameters
    ----------
    dims : sequence of int, default=()
        Hidden layer widths; ``()`` is a single RPN layer ``n_features -> n_classes``.
    expansion, reconciliation, remainder : str or mapping or module
        Component names (see ``rpnkit.list_components()``). Default: symmetric
        degree-2 Taylor expansion, identity reconciliation, zero remainder.
    expansion_params, reconciliation_params, remainder_params : dict, optional
        Keyword arguments of the components (``expansion_params=None`` with
        ``expansion="taylor"`` means ``{"d": 2, "symmetric": True}``).
    bias : bool, default=True
        Learnable bias in every head.
    activation : str, optional
        Module applied after every hidden layer (e.g. ``"relu"``, ``"silu"``).
    model : str, optional
        Name of a classic model of :mod:`rpnkit.models` (``naive_bayes``, ``pgm``,
        ``kan``, ``kernel_svm``, ``mlp``, ``rpn``) used instead of the components above;
        ``model_params`` are its keyword arguments. The model builds its own layers, so
        ``fit`` raises a ``ConfigurationError`` (a ``ValueError``) when any of
        ``expansion`` ... ``activation`` is also set to a non-default value.
    max_epochs, batch_size, lr, weight_decay, optimizer :
        Training loop: at most ``max_epochs`` passes; ``batch_size="auto"`` is full
        batch up to 1024 samples, else shuffled minibatches of 1024. ``optimizer="adam"``
        (default) adds ``weight_decay`` as an L2 penalty to the gradient (a true ridge
        term, like ``alpha`` in scikit-learn); ``"adamw"`` applies decoupled decay;
        ``"lbfgs"`` runs full-batch L-BFGS (20 iterations per epoch, strong-Wolfe line
        search, ``lr`` unused) on the loss plus ``weight_decay/2·‖θ‖²``.
    max_iter, learning_rate_init, alpha : optional
        scikit-learn's MLP names for ``max_epochs``, ``lr`` and ``weight_decay``
        (aliases; None: unused).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), stop when
        the validation loss has not improved by ``tol`` (relative) for
        ``n_iter_no_change`` epochs and restore the best weights; a
        ``ConvergenceWarning`` is emitted when ``max_epochs`` is reached first. Without
        it, training stops when the training loss has not improved by ``tol``
        (relative) for ``n_iter_no_change`` epochs.
    random_state : int, RandomState or None
        Seeds initialisation, shuffling and the validation split.
    device : str, default="cpu"
        Torch device (``"auto"`` picks CUDA when available).
    dtype : {"float32", "float64"}
        Floating point type of the network (CPU predictions are computed in float64).
    standardize : bool, default=True
        Standardise the inputs internally (``x_mean_``, ``x_scale_``); the network
        ``model_`` then sees ``(X - x_mean_) / x_scale_`` and
        :func:`rpnkit.symbolic.to_sympy` folds the scaling back into the formula.
    verbose : int
        When non-zero, show a tqdm progress bar on stderr (when it is a terminal) and
        log the loss of every epoch at INFO level on the ``rpnkit.sklearn`` logger.

    Attributes
    ----------
    classes_, n_features_in_, feature_names_in_ (with pandas input), model_ (the
    fitted ``nn.Module``), x_mean_, x_scale_, n_iter_, loss_curve_,
    validation_scores_, best_loss_.
    """

    _task = "classification"

    def __init__(
        self,
        dims: Sequence[int] = (),
        expansion: Any = "taylor",
        reconciliation: Any = "identity",
        remainder: Any = "zero",
        expansion_params: Mapping[str, Any] | None = None,
        reconciliation_params: Mapping[str, Any] | None = None,
        remainder_params: Mapping[str, Any] | None = None,
        bias: bool = True,
        activation: Any = None,
        model: str | None = None,
        model_params: Mapping[str, Any] | None = None,
        loss: str = "log_loss",
        max_epochs: int = 300,
        batch_size: int | str = "auto",
        lr: float = 0.02,
        weight_decay: float = 3e-3,
        optimizer: str = "adam",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 20,
        tol: float = 1e-5,
        random_state: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
        standardize: bool = True,
        verbose: int = 0,
        max_iter: int | None = None,
        learning_rate_init: float | None = None,
        alpha: float | None = None,
    ) -> None:
        super().__init__(
            dims=dims,
            expansion=expansion,
            reconciliation=reconciliation,
            remainder=remainder,
            expansion_params=expansion_params,
            reconciliation_params=reconciliation_params,
            remainder_params=remainder_params,
            bias=bias,
            activation=activation,
            model=model,
            model_params=model_params,
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            optimizer=optimizer,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
            random_state=random_state,
            device=device,
            dtype=dtype,
            standardize=standardize,
            verbose=verbose,
            max_iter=max_iter,
            learning_rate_init=learning_rate_init,
            alpha=alpha,
        )
        self.loss = loss

    def _loss_name(self) -> str:
        return "hinge" if self.loss == "hinge" else "cross_entropy"

    def fit(self, X, y):
        """Fit the network on (X, y); y holds arbitrary class labels."""
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], y_numeric=False)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self._label_encoder = LabelEncoder().fit(y)
        self.classes_ = self._label_encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, but "
                f"the data contains only one class: {self.classes_[0]!r}"
            )
        y_enc = self._label_encoder.transform(y)
        self.n_outputs_ = len(self.classes_)
        self._fit_network(X, y_enc, self.n_outputs_)
        return self

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self._forward(X)

    def decision_function(self, X) -> np.ndarray:
        """Class scores: logits (n_samples, n_classes); for two classes the margin
        ``logit_1 - logit_0`` (n_samples,), positive for ``classes_[1]``."""
        z = self._logits(X)
        if z.shape[1] == 2:
            return z[:, 1] - z[:, 0]
        return z

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, softmax of the logits (columns ordered as ``classes_``)."""
        z = self._logits(X)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X) -> np.ndarray:
        z = self._logits(X)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, X) -> np.ndarray:
        """Most likely class label for each sample."""
        z = self._logits(X)
        if z.shape[1] == 2:
            idx = (z[:, 1] - z[:, 0] > 0).astype(int)
        else:
            idx = z.argmax(axis=1)
        return self.classes_[idx]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        return tags


class RPNRegressor(RegressorMixin, _RPNEstimatorBase):
    """RPN regressor with the scikit-learn estimator contract.

    Same parameters as :class:`RPNClassifier` (without ``loss``); trained with mean
    squared error on internally standardised targets (``y_mean_``, ``y_scale_``;
    predictions are mapped back, and :func:`rpnkit.symbolic.to_sympy` folds the
    scaling into the formula). Multi-output targets (2-D ``y``) are supported.

    Defaults differ from the classifier in two places: full-batch L-BFGS
    (``optimizer="lbfgs"``, strong-Wolfe line search; ``lr`` and ``batch_size`` are then
    unused – pick ``"adam"`` with a ``batch_size`` for large data) and an L2 penalty of
    1e-5, so that a well-specified model converges to its least-squares coefficients
    (read them with :func:`rpnkit.symbolic.to_sympy`).
    """

    def __init__(
        self,
        dims: Sequence[int] = (),
        expansion: Any = "taylor",
        reconciliation: Any = "identity",
        remainder: Any = "zero",
        expansion_params: Mapping[str, Any] | None = None,
        reconciliation_params: Mapping[str, Any] | None = None,
        remainder_params: Mapping[str, Any] | None = None,
        bias: bool = True,
        activation: Any = None,
        model: str | None = None,
        model_params: Mapping[str, Any] | None = None,
        max_epochs: int = 300,
        batch_size: int | str = "auto",
        lr: float = 0.02,
        weight_decay: float = 1e-5,
        optimizer: str = "lbfgs",
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 20,
        tol: float = 1e-5,
        random_state: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
        standardize: bool = True,
        verbose: int = 0,
        max_iter: int | None = None,
        learning_rate_init: float | None = None,
        alpha: float | None = None,
    ) -> None:
        super().__init__(
            dims=dims,
            expansion=expansion,
            reconciliation=reconciliation,
            remainder=remainder,
            expansion_params=expansion_params,
            reconciliation_params=reconciliation_params,
            remainder_params=remainder_params,
            bias=bias,
            activation=activation,
            model=model,
            model_params=model_params,
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            optimizer=optimizer,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
            random_state=random_state,
            device=device,
            dtype=dtype,
            standardize=standardize,
            verbose=verbose,
            max_iter=max_iter,
            learning_rate_init=learning_rate_init,
            alpha=alpha,
        )

    def fit(self, X, y):
        """Fit the network on (X, y); y of shape (n,) or (n, n_outputs)."""
        X, y = validate_data(
            self, X, y, dtype=[np.float64, np.float32], y_numeric=True, multi_output=True
        )
        y = np.asarray(y, dtype=np.float64)
        self._y_1d = y.ndim == 1
        Y = y.reshape(len(y), -1)
        self.y_mean_ = Y.mean(axis=0)
        scale = Y.std(axis=0)
        self.y_scale_ = np.where(scale > 1e-12, scale, 1.0)
        self.n_outputs_ = Y.shape[1]
        self._fit_network(X, (Y - self.y_mean_) / self.y_scale_, self.n_outputs_)
        return self

    def _loss_name(self) -> str:
        return "mse"

    def predict(self, X) -> np.ndarray:
        """Predicted targets, shape (n,) for 1-D training targets else (n, n_outputs)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        out = self._forward(X) * self.y_scale_ + self.y_mean_
        return out[:, 0] if self._y_1d else out

    def _more_tags(self) -> dict[str, Any]:  # scikit-learn < 1.6
        return {"multioutput": True}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
