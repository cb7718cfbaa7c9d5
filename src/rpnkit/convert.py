"""Convert a reference-toolkit (tinyBIG) YAML config into an rpnkit run config.

The reference toolkit describes an experiment as nested ``*_class`` / ``*_parameters``
sections whose class paths it imports and calls. :func:`convert` reads such a file as plain
data (a safe YAML loader, the same limits as rpnkit configs) and maps every class path it
knows through the tables below to the registry name of the rpnkit component or option it
names. It never imports, resolves or calls anything the file names: a class path missing
from the tables is refused with a :class:`~rpnkit.errors.ConfigurationError` naming the
file and the key.

Both layouts are read:

* 0.1.x: ``data_transformation_class`` / ``data_transformation_parameters``,
  ``parameter_fabrication_class`` / ``..._parameters``, ``remainder_class`` /
  ``remainder_parameters``, ``expansion_function_configs`` of ``expansion_class`` /
  ``expansion_parameters``, a layer's ``fusion_strategy``;
* 0.2.x: ``function_class`` / ``function_parameters`` everywhere,
  ``composition_function_configs``, ``head_fusion_configs`` / ``channel_fusion_configs``.

Sizes follow the reference: ``depth`` / ``depth_alloc`` repeat layer configs and ``width``
/ ``width_alloc`` head configs; several channels or heads are fused by their mean (the
reference's default) unless a fusion is named. The written config builds a model with the
reference's parameter count. Modules the reference keeps in plain Python lists (expansion
post-processing, head output processing) are not registered there, so their affine weights
are neither counted nor trained; they are written with their affine part off, which is the
same function.

Reference quirks are reproduced only when asked (``reference_quirks=True``,
``rpnkit convert --reference-quirks``): keys the reference silently ignores, such as a
``postprocess_function_configs`` indented beside a transformation's class instead of inside
its parameters, are then dropped and reported as ignored. Without the flag such a hook is
moved to where its author meant it (and reported), and any other key the reference would
ignore is refused.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigurationError, short

__all__ = ["convert", "convert_file", "Conversion", "KNOWN_CLASSES"]

_EXP, _REC, _REM = "tinybig.expansion.", "tinybig.reconciliation.", "tinybig.remainder."

# reference class name -> (rpnkit name, {reference parameter: (rpnkit parameter, reference
# default)}, {reference parameter: (only value rpnkit supports, reference default)})
_D2 = {"d": ("d", 2)}
EXPANSIONS: dict[str, tuple[str, dict[str, tuple[str, Any]], dict[str, tuple[Any, Any]]]] = {
    "identity_expansion": ("identity", {}, {}),
    "reciprocal_expansion": ("reciprocal", {}, {}),
    "linear_expansion": ("linear", {"c": ("c", 1.0)}, {"pre_C": (None, None), "post_C": (None, None)}),
    "taylor_expansion": ("taylor", _D2, {}),
    "fourier_expansion": ("fourier", {"P": ("P", 10), "N": ("N", 5)}, {}),
    "hyperbolic_expansion": ("hyperbolic", {}, {}),
    "arc_hyperbolic_expansion": ("arc_hyperbolic", {}, {}),
    "trigonometric_expansion": ("trigonometric", {}, {}),
    "arc_trigonometric_expansion": ("arc_trigonometric", {}, {}),
    "naive_normal_expansion": ("naive_normal", {}, {}),
    "naive_cauchy_expansion": ("naive_cauchy", {}, {}),
    "naive_chi2_expansion": ("naive_chi2", {}, {}),
    "naive_gamma_expansion": ("naive_gamma", {}, {}),
    "naive_exponential_expansion": ("naive_exponential", {}, {}),
    "naive_laplace_expansion": ("naive_laplace", {}, {}),
    "gaussian_rbf_expansion": ("gaussian_rbf", {"base_range": ("range", [-1, 1]),
                                                "num_interval": ("K", 10),
                                                "epsilon": ("eps", 1.0)}, {"base": (None, None)}),
    "inverse_quadratic_rbf_expansion": ("inverse_quadratic_rbf",
                                        {"base_range": ("range", [-1, 1]), "num_interval": ("K", 10),
                                         "epsilon": ("eps", 1.0)}, {"base": (None, None)}),
    "bspline_expansion": ("bspline", {"grid_range": ("range", [-1, 1]), "t": ("t", 5),
                                      "d": ("d", 3)}, {}),
    "chebyshev_expansion": ("chebyshev", _D2, {}),
    "jacobi_expansion": ("jacobi", {"d": ("d", 2), "alpha": ("alpha", 1.0), "beta": ("beta", 1.0)}, {}),
    "hermite_expansion": ("hermite", _D2, {}),
    "legendre_expansion": ("legendre", _D2, {}),
    # rpnkit's Laguerre family is the plain one (alpha 0); the reference defaults to alpha 1
    "laguerre_expansion": ("laguerre", _D2, {"alpha": (0.0, 1.0)}),
    "gegenbauer_expansion": ("gegenbauer", {"d": ("d", 2), "alpha": ("alpha", 1.0)}, {}),
    "bessel_expansion": ("bessel", _D2, {}),
    "reverse_bessel_expansion": ("reverse_bessel", _D2, {}),
    "fibonacci_expansion": ("fibonacci", _D2, {}),
    "lucas_expansion": ("lucas", _D2, {}),
    "combinatorial_expansion": ("combinatorial", _D2, {"with_replacement": (False, False)}),
    "combinatorial_normal_expansion": ("combinatorial_normal", {"d": ("d", 1)},
                                       {"with_replacement": (False, False)}),
}
_WAVELET = {"d": ("d", 1), "s": ("s", 1), "t": ("t", 1), "a": ("a", 1.0), "b": ("b", 1.0)}
for _ref, _ours, _extra in (
    ("meyer_wavelet_expansion", "meyer_wavelet", {}),
    ("ricker_wavelet_expansion", "ricker_wavelet", {"sigma": ("sigma", 1.0)}),
    ("shannon_wavelet_expansion", "shannon_wavelet", {}),
    ("beta_wavelet_expansion", "beta_wavelet", {"alpha": ("alpha", 1.0), "beta": ("beta", 1.0)}),
    ("harr_wavelet_expansion", "haar_wavelet", {}),
    ("dog_wavelet_expansion", "dog_wavelet", {"sigma_1": ("sigma_1", 1.0), "sigma_2": ("sigma_2", 2.0)}),
):
    EXPANSIONS[_ref] = (_ours, {**_WAVELET, **_extra}, {})
#: geometric patch expansions (tinybig 0.2), by package and by module path
_GEOMETRY = {k: (k, None) for k in ("h", "w", "d", "packing_strategy", "cd_h", "cd_w", "cd_d")}
for _ref, _ours, _patch in (
    ("cuboid_patch_based_geometric_expansion", "cuboid_patch_expansion",
     ("p_h", "p_w", "p_d", "p_h_prime", "p_w_prime", "p_d_prime")),
    ("cylinder_patch_based_geometric_expansion", "cylinder_patch_expansion", ("p_r", "p_d", "p_d_prime")),
    ("sphere_patch_based_geometric_expansion", "sphere_patch_expansion", ("p_r",)),
):
    for _path in (_ref, "geometric_expansion." + _ref):
        EXPANSIONS[_path] = (_ours, {**_GEOMETRY, **{k: (k, None) for k in _patch}}, {})
_COMPOSED = {"nested_expansion": "nested", "extended_expansion": "extended"}

RECONCILIATIONS: dict[str, tuple[str, dict[str, tuple[str, Any]], dict[str, tuple[Any, Any]]]] = {
    "identity_reconciliation": ("identity", {}, {}),
    "constant_reconciliation": ("constant", {"c": ("c", 1.0)}, {}),
    "zero_reconciliation": ("zero", {}, {}),
    "one_reconciliation": ("one", {}, {}),
    "constant_eye_reconciliation": ("constant_eye", {}, {}),
    "masking_reconciliation": ("masking", {"p": ("p", 0.5)}, {"fixed_mask": (True, True)}),
    "duplicated_padding_reconciliation": ("duplicated_padding", {"p": ("p", 2), "q": ("q", None)}, {}),
    "lorr_reconciliation": ("lorr", {"r": ("r", 2)}, {}),
    "hm_reconciliation": ("hm", {"p": ("p", None), "q": ("q", None)}, {}),
    "lphm_reconciliation": ("lphm", {"p": ("p", None), "q": ("q", None), "r": ("r", 2)}, {}),
    "dual_lphm_reconciliation": ("dual_lphm", {"p": ("p", None), "q": ("q", None), "r": ("r", 2)}, {}),
    "hypernet_reconciliation": ("hypernet", {"l": ("l", 64), "hidden_dim": ("hidden", 128),
                                             "static": ("frozen", True)}, {"net": (None, None)}),
    "random_matrix_adaption_reconciliation": ("random_matrix_adaption", {"r": ("r", 2)}, {}),
    "random_matrix_hypernet_reconciliation": ("random_matrix_hypernet",
                                              {"r": ("r", 2), "l": ("l", 64),
                                               "hidden_dim": ("hidden", 128)}, {}),
}

#: reference remainder -> (rpnkit remainder, fixed rpnkit options)
REMAINDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "zero_remainder": ("zero", {}),
    "one_remainder": ("constant", {"c": 1.0}),
    "constant_remainder": ("constant", {}),
    "identity_remainder": ("identity", {}),
    "linear_remainder": ("linear", {}),
}

#: torch / reference functions (pre/post/output processing, activations) -> rpnkit modules
FUNCTIONS: dict[str, str] = {
    "torch.nn.GELU": "gelu", "torch.nn.ReLU": "relu", "torch.nn.SiLU": "silu",
    "torch.nn.Sigmoid": "sigmoid", "torch.nn.Tanh": "tanh", "torch.nn.Softplus": "softplus",
    "torch.nn.ELU": "elu", "torch.nn.LeakyReLU": "leaky_relu", "torch.nn.Identity": "identity",
    "torch.nn.Dropout": "dropout", "torch.nn.LayerNorm": "layer_norm",
    "torch.nn.BatchNorm1d": "batch_norm",
    "torch.nn.functional.gelu": "gelu", "torch.nn.functional.relu": "relu",
    "torch.nn.functional.silu": "silu", "torch.nn.functional.sigmoid": "sigmoid",
    "torch.nn.functional.tanh": "tanh", "torch.nn.functional.softplus": "softplus",
    "torch.nn.functional.elu": "elu", "torch.sigmoid": "sigmoid", "torch.tanh": "tanh",
    "torch.relu": "relu",
}
_FUNCTION_PARAMS = {
    "dropout": {"p": "p"}, "leaky_relu": {"negative_slope": "negative_slope"},
    "elu": {"alpha": "alpha"}, "softplus": {"beta": "beta", "threshold": "threshold"},
    "gelu": {"approximate": "approximate"},
    "layer_norm": {"eps": "eps", "elementwise_affine": "elementwise_affine", "bias": "bias"},
    "batch_norm": {"eps": "eps", "momentum": "momentum", "affine": "affine",
                   "track_running_stats": "track_running_stats"},
}
_SIZE_KEYS = {"layer_norm": "normalized_shape", "batch_norm": "num_features"}
_AFFINE = {"layer_norm": "elementwise_affine", "batch_norm": "affine"}

#: reference fusion -> rpnkit fusion (head / channel fusion)
FUSIONS: dict[str, str] = {
    "tinybig.fusion.mean_fusion": "mean", "tinybig.fusion.average_fusion": "mean",
    "tinybig.fusion.sum_fusion": "sum", "tinybig.fusion.summation_fusion": "sum",
    "tinybig.fusion.max_fusion": "max", "tinybig.fusion.min_fusion": "min",
    "tinybig.fusion.median_fusion": "median", "tinybig.fusion.prod_fusion": "prod",
    "tinybig.fusion.concatenation_fusion": "concat",
    "tinybig.fusion.weighted_summation_fusion": "weighted",
}
_FUSION_STRATEGIES = {"average": "mean", "mean": "mean", "sum": "sum", "summation": "sum",
                      "add": "sum", "plus": "sum", "linear": "linear"}

MODELS = {"tinybig.model.rpn"}
LAYERS = {"tinybig.module.rpn_layer", "tinybig.module.layer", "tinybig.layer.rpn_layer"}
HEADS = {"tinybig.module.rpn_head", "tinybig.module.head", "tinybig.head.rpn_head"}
LEARNERS = {"tinybig.learner.backward_learner"}
OUTPUTS = {"tinybig.output.rpn_output"}
#: torch optimizer -> (rpnkit optimizer, {torch parameter: rpnkit parameter}, torch's lr default)
OPTIMIZERS: dict[str, tuple[str, dict[str, str], float]] = {
    "torch.optim.Adam": ("adam", {"lr": "lr", "betas": "betas", "eps": "eps",
                                  "weight_decay": "weight_decay", "amsgrad": "amsgrad"}, 1e-3),
    "torch.optim.AdamW": ("adamw", {"lr": "lr", "betas": "betas", "eps": "eps",
                                    "weight_decay": "weight_decay", "amsgrad": "amsgrad"}, 1e-3),
    "torch.optim.SGD": ("sgd", {"lr": "lr", "momentum": "momentum", "weight_decay": "weight_decay",
                                "nesterov": "nesterov", "dampening": "dampening"}, 1e-3),
    "torch.optim.LBFGS": ("lbfgs", {"lr": "lr", "max_iter": "max_iter", "history_size": "history_size",
                                    "line_search_fn": "line_search",
                                    "tolerance_grad": "tolerance_grad",
                                    "tolerance_change": "tolerance_change"}, 1.0),
}
SCHEDULERS: dict[str, tuple[str, dict[str, str]]] = {
    "torch.optim.lr_scheduler.ExponentialLR": ("exponential", {"gamma": "gamma"}),
    "torch.optim.lr_scheduler.StepLR": ("step", {"step_size": "step_size", "gamma": "gamma"}),
    "torch.optim.lr_scheduler.CosineAnnealingLR": ("cosine", {"T_max": "t_max", "eta_min": "eta_min"}),
}
LOSSES: dict[str, tuple[str, dict[str, str]]] = {
    "torch.nn.MSELoss": ("mse", {}),
    "torch.nn.L1Loss": ("mae", {}),
    "torch.nn.CrossEntropyLoss": ("cross_entropy", {"label_smoothing": "label_smoothing"}),
    "torch.nn.BCELoss": ("bce", {}),
}
METRICS = {"tinybig.metric.accuracy": "accuracy", "tinybig.metric.f1": "f1", "tinybig.metric.mse": "mse"}

#: data classes of the reference -> rpnkit dataset (None: not bundled with rpnkit; written as a
#: ``csv`` source the user points at an export of the data)
DATA: dict[str, str | None] = {
    "tinybig.data.elementary_function": "elementary", "tinybig.data.composite_function": "composite",
    "tinybig.data.feynman_function": "feynman", "tinybig.data.dimensionless_feynman_function": "feynman",
    "tinybig.data.iris": "iris", "tinybig.data.banknote": "banknote", "tinybig.data.diabetes": "pima",
    # rpnkit's ag_news / sst2 sources give token ids (for sequence models); the reference's RPNs
    # read bag-of-words vectors, so those are written as csv sources too
    "tinybig.data.mnist": "mnist", "tinybig.data.agnews": None, "tinybig.data.sst2": None,
    "tinybig.data.cora": "cora", "tinybig.data.citeseer": "citeseer",
    "tinybig.data.cifar10": None, "tinybig.data.imdb": None, "tinybig.data.pubmed": None,
}


def _all_known() -> frozenset[str]:
    known = {_EXP + k for k in (*EXPANSIONS, *_COMPOSED)}
    known |= {_REC + k for k in RECONCILIATIONS} | {_REM + k for k in REMAINDERS}
    for table in (FUNCTIONS, FUSIONS, OPTIMIZERS, SCHEDULERS, LOSSES, METRICS, DATA):
        known |= set(table)
    return frozenset(known | MODELS | LAYERS | HEADS | LEARNERS | OUTPUTS)


#: every class path :func:`convert` maps (anything else is refused)
KNOWN_CLASSES: frozenset[str] = _all_known()

# keys the reference accepts and that change nothing rpnkit writes
_IGNORED = {"name", "device", "require_parameters", "require_data"}


class Conversion:
    """The result of :func:`convert`: ``config`` (plain data for :func:`rpnkit.config.parse_config`)
    and ``notes`` (one line each: what was mapped by choice, moved or ignored)."""

    def __init__(self, config: dict[str, Any], notes: list[str]) -> None:
        self.config = config
        self.notes = notes

    def to_yaml(self, header: str | None = None) -> str:
        lines = [f"# {header}"] if header else []
        lines += [f"# note: {n}" for n in self.notes]
        body = yaml.safe_dump(self.config, sort_keys=False, default_flow_style=None, width=100)
        return "\n".join(lines) + ("\n" if lines else "") + body


class _Converter:
    def __init__(self, source: str, quirks: bool) -> None:
        self.source = source
        self.quirks = quirks
        self.notes: list[str] = []

    # -- helpers ------------------------------------------------------------------------
    def fail(self, key: str, msg: str):
        raise ConfigurationError(f"{self.source}: {key}: {msg}")

    def unknown_class(self, key: str, cls: Any, what: str):
        self.fail(key, f"unknown {what} class path {short(cls, 80)}; rpnkit convert knows only "
                       f"the reference toolkit's own {what} classes and never imports a class path")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(key, f"expected a mapping, got {type(value).__name__} {short(value, 60)}")
        return dict(value)

    def extra(self, key: str, why: str) -> None:
        """A key the reference ignores: refused, or (quirks) reported as ignored."""
        if self.quirks:
            self.notes.append(f"{key} ignored, as the reference ignores it ({why})")
            return
        self.fail(key, f"the reference ignores this key ({why}); remove it, or pass "
                       "--reference-quirks to ignore it as the reference does")

    def component(self, node: Any, key: str, stems: tuple[str, ...]) -> tuple[str, dict, str, dict]:
        """(class path, parameters, key of the class, leftover keys) of a ``*_class`` section."""
        node = self.mapping(node, key)
        for stem in stems:
            if f"{stem}_class" in node:
                cls = node.pop(f"{stem}_class")
                params = self.mapping(node.pop(f"{stem}_parameters", None), f"{key}.{stem}_parameters")
                if not isinstance(cls, str):
                    self.fail(f"{key}.{stem}_class", f"expected a class path string, got {short(cls, 60)}")
                return cls, params, f"{key}.{stem}_class", node
        self.fail(key, f"no class key (expected one of {', '.join(s + '_class' for s in stems)})")
        raise AssertionError  # pragma: no cover

    def params(self, params: dict, key: str, table: dict[str, tuple[str, Any]],
               only: dict[str, tuple[Any, Any]], handled: tuple[str, ...] = ()) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for ref, (ours, default) in table.items():
            value = params.get(ref, default)
            if value is not None:
                out[ours] = list(value) if isinstance(value, (list, tuple)) else value
        for ref, (allowed, default) in only.items():
            value = params.get(ref, default)
            if value != allowed:
                self.fail(f"{key}.{ref}", f"value {short(value, 40)} has no rpnkit counterpart "
                                          f"(rpnkit supports only {ref}={allowed!r}"
                                          + ("" if ref in params else f"; the reference default is {default!r}") + ")")
        for k in params:
            if k not in table and k not in only and k not in _IGNORED and k not in handled:
                self.extra(f"{key}.{k}", "unknown parameter")
        return out

    # -- functions (pre/post/output processing, activations) ------------------------------
    def functions(self, value: Any, key: str, registered: bool | None = None) -> list[Any]:
        """Module specs of a ``*_function_configs`` value (a list, or one mapping)."""
        if value is None:
            return []
        if registered is None:  # the reference registers a single module, never a list's items
            registered = isinstance(value, Mapping)
        items = list(value) if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            k = f"{key}[{i}]" if isinstance(value, list) else key
            if isinstance(item, str):
                out.append(self.function(item, {}, f"{k}", registered))
                continue
            cls, params, ckey, rest = self.component(item, k, ("function",))
            for extra in rest:
                self.extra(f"{k}.{extra}", "unknown key")
            out.append(self.function(cls, params, ckey, registered))
        return out

    def function(self, cls: str, params: dict, key: str, registered: bool) -> Any:
        name = FUNCTIONS.get(cls) or FUNCTIONS.get(f"torch.nn.functional.{cls}")
        if name is None:
            self.unknown_class(key, cls, "function")
        spec: dict[str, Any] = {}
        renames = _FUNCTION_PARAMS.get(name, {})
        for k, v in params.items():
            if k in renames:
                spec[renames[k]] = v
            elif k == _SIZE_KEYS.get(name) or k in _IGNORED or (k == "inplace"):
                continue  # the size is bound by rpnkit when the head is built
            else:
                self.extra(f"{key.rsplit('.', 1)[0]}.function_parameters.{k}", "unknown parameter")
        if name in _AFFINE and not registered and spec.get(_AFFINE[name], True):
            spec[_AFFINE[name]] = False
            self.notes.append(f"{key}: {name} without affine weights (the reference keeps this "
                              "module in a plain list: its weights are neither counted nor trained)")
        return {"name": name, **spec} if spec else name

    # -- κ, ψ, π ------------------------------------------------------------------------
    def expansion(self, node: Any, key: str) -> dict[str, Any]:
        cls, params, ckey, rest = self.component(node, key, ("function", "data_transformation", "expansion"))
        hooks = ("preprocess_function_configs", "postprocess_function_configs")
        for extra in list(rest):
            if extra in hooks:
                where = f"{key}.{extra}"
                if self.quirks:
                    self.notes.append(f"{where} ignored, as the reference ignores it (indented beside "
                                      "the class, not inside its parameters)")
                else:
                    params.setdefault(extra, rest[extra])
                    self.notes.append(f"{where} applied as the transformation's {extra[:-17]} (the "
                                      "reference ignores it there; --reference-quirks reproduces that)")
            else:
                self.extra(f"{key}.{extra}", "unknown key")
        if not cls.startswith(_EXP):
            self.unknown_class(ckey, cls, "expansion")
        ref = cls[len(_EXP):]
        out: dict[str, Any]
        if ref in _COMPOSED:
            inner_key = next((k for k in ("composition_function_configs", "expansion_function_configs")
                              if k in params), None)
            inner = params.get(inner_key) if inner_key else None
            if not isinstance(inner, list) or not inner:
                self.fail(f"{key}.composition_function_configs", "a nested/extended expansion needs a "
                                                                 "non-empty list of expansions")
            out = {"name": _COMPOSED[ref],
                   "expansions": [self.expansion(c, f"{key}.{inner_key}[{i}]") for i, c in enumerate(inner)]}
            table: dict = {}
            handled = ("composition_function_configs", "expansion_function_configs", *hooks)
            self.params(params, ckey.rsplit(".", 1)[0] + ".parameters", table, {}, handled)
        elif ref in EXPANSIONS:
            ours, table, only = EXPANSIONS[ref]
            out = {"name": ours, **self.params(params, ckey.rsplit(".", 1)[0] + ".parameters",
                                                table, only, hooks)}
            if ours.endswith("_patch_expansion"):
                self.geometric(out, ckey.rsplit(".", 1)[0] + ".parameters")
        else:
            self.unknown_class(ckey, cls, "expansion")
        for hook, ours in zip(hooks, ("preprocess", "postprocess")):
            mods = self.functions(params.get(hook), f"{key}.{hook}")
            if mods:
                out[ours] = mods
        return out

    def geometric(self, out: dict[str, Any], key: str) -> None:
        """What the reference's geometric patch expansions do with their parameters: centre
        distances count only when all three are given, and a cylinder's depth runs from
        -p_d' to p_d' (its p_d is unused when p_d' is given)."""
        cds = [k for k in ("cd_h", "cd_w", "cd_d") if k in out]
        if 0 < len(cds) < 3:
            self.fail(f"{key}.{cds[0]}", "the reference uses cd_h, cd_w, cd_d only when all three "
                                         "are given (else its packing_strategy); give all three or none")
        if out["name"] == "cylinder_patch_expansion" and "p_d_prime" in out:
            if out.get("p_d", 0) != out["p_d_prime"]:
                self.notes.append(f"{key}.p_d: the reference's cylinder spans depth -p_d'..p_d' "
                                  f"(p_d' = {out['p_d_prime']}) and ignores p_d = {out.get('p_d', 0)}; "
                                  "written as that patch")
            out["p_d"] = out["p_d_prime"]

    def reconciliation(self, node: Any, key: str) -> tuple[dict[str, Any], bool]:
        cls, params, ckey, rest = self.component(node, key, ("function", "parameter_fabrication"))
        for extra in rest:
            self.extra(f"{key}.{extra}", "unknown key")
        ref = cls[len(_REC):] if cls.startswith(_REC) else None
        if ref not in RECONCILIATIONS:
            self.unknown_class(ckey, cls, "reconciliation")
        ours, table, only = RECONCILIATIONS[ref]
        pkey = ckey.rsplit(".", 1)[0] + ".parameters"
        out = {"name": ours, **self.params(params, pkey, table, only, ("enable_bias",))}
        return out, bool(params.get("enable_bias", False))

    def remainder(self, node: Any, key: str) -> dict[str, Any]:
        if node is None:
            return {"name": "zero"}
        cls, params, ckey, rest = self.component(node, key, ("function", "remainder"))
        for extra in rest:
            self.extra(f"{key}.{extra}", "unknown key")
        ref = cls[len(_REM):] if cls.startswith(_REM) else None
        if ref not in REMAINDERS:
            self.unknown_class(ckey, cls, "remainder")
        ours, fixed = REMAINDERS[ref]
        pkey = ckey.rsplit(".", 1)[0] + ".parameters"
        out: dict[str, Any] = {"name": ours, **fixed}
        if ref == "constant_remainder":
            out["c"] = params.get("c", 1.0)
        acts = self.functions(params.get("activation_function_configs"), f"{pkey}.activation_function_configs",
                              registered=True)
        fns = params.get("activation_functions")
        if fns is not None:
            items = fns if isinstance(fns, list) else [fns]
            acts += [self.function(f, {}, f"{pkey}.activation_functions", True) for f in items]
        if acts:
            if ours not in ("linear", "identity") or len(acts) > 1:
                self.fail(f"{pkey}.activation_function_configs",
                          f"rpnkit's {ours} remainder takes at most one activation, got {len(acts)}")
            out["activation"] = acts[0]
        if params.get("enable_bias"):
            if ours != "linear":
                self.fail(f"{pkey}.enable_bias", f"rpnkit's {ours} remainder has no bias")
            out["bias"] = True
        if ours == "linear" and params.get("require_parameters", True) is False:
            self.fail(f"{pkey}.require_parameters", "a linear remainder needs its parameters")
        table = {"c": ("c", 1.0)} if ref == "constant_remainder" else {}
        self.params(params, pkey, table, {},
                    ("activation_function_configs", "activation_functions", "enable_bias"))
        return out

    def fusion(self, node: Any, key: str) -> str:
        cls, params, ckey, rest = self.component(node, key, ("function", "fusion"))
        if cls not in FUSIONS:
            self.unknown_class(ckey, cls, "fusion")
        for k in [*rest, *params]:
            if k not in _IGNORED and k != "dims":
                self.extra(f"{key}.{k}", "unknown fusion option")
        return FUSIONS[cls]

    # -- heads, layers, model -----------------------------------------------------------
    def head(self, node: Any, key: str, m: int, n: int) -> dict[str, Any]:
        cls, p, ckey, rest = self.component(node, key, ("head",))
        if cls not in HEADS:
            self.unknown_class(ckey, cls, "head")
        for extra in rest:
            self.extra(f"{key}.{extra}", "unknown key")
        pkey = f"{key}.head_parameters"
        for k in ("m", "n"):
            if p.get(k) is not None and p[k] != {"m": m, "n": n}[k]:
                self.fail(f"{pkey}.{k}", f"{p[k]} differs from the layer's {k}={ {'m': m, 'n': n}[k]}")
        if p.get("l") is not None:
            self.fail(f"{pkey}.l", "a fixed parameter length l is not supported (rpnkit derives l "
                                   "from the reconciliation); use l: null")
        for k in ("attribute_interdependence_configs", "instance_interdependence_configs",
                  "input_process_function_configs"):
            if p.get(k) is not None:
                self.fail(f"{pkey}.{k}", "not supported by rpnkit convert (RPN 2 interdependence "
                                         "and input processing are written by hand in rpnkit)")
        spec: dict[str, Any] = {}
        spec["expansion"] = self.expansion(p.get("data_transformation_configs")
                                           or {"function_class": _EXP + "identity_expansion"},
                                           f"{pkey}.data_transformation_configs")
        if p.get("parameter_fabrication_configs") is None:
            self.fail(f"{pkey}.parameter_fabrication_configs", "required key is missing")
        spec["reconciliation"], spec["bias"] = self.reconciliation(
            p["parameter_fabrication_configs"], f"{pkey}.parameter_fabrication_configs")
        spec["remainder"] = self.remainder(p.get("remainder_configs"), f"{pkey}.remainder_configs")
        channels = p.get("channel_num", 1) or 1
        if not isinstance(channels, int) or channels < 1:
            self.fail(f"{pkey}.channel_num", f"expected a positive integer, got {short(channels, 40)}")
        spec["channels"] = channels
        spec["channel_fusion"] = "sum"
        if channels > 1:
            fusion = "mean"  # the reference's default channel fusion
            if p.get("channel_fusion_configs") is not None:
                fusion = self.fusion(p["channel_fusion_configs"], f"{pkey}.channel_fusion_configs")
            if fusion not in ("sum", "mean"):
                self.fail(f"{pkey}.channel_fusion_configs", f"rpnkit fuses channels by sum or mean, not {fusion}")
            spec["channel_fusion"] = fusion
        spec["output"] = self.functions(p.get("output_process_function_configs"),
                                        f"{pkey}.output_process_function_configs") or None
        if p.get("parameters_init_method") is not None:
            self.notes.append(f"{pkey}.parameters_init_method: rpnkit's default initialisation is used")
        known = {"m", "n", "l", "name", "device", "channel_num", "batch_num", "data_transformation_configs",
                 "parameter_fabrication_configs", "remainder_configs", "output_process_function_configs",
                 "channel_fusion_configs", "parameters_init_method", "create_parameters_at_init",
                 "attribute_interdependence_configs", "instance_interdependence_configs",
                 "input_process_function_configs", "l_channel_fusion"}
        for k in p:
            if k not in known:
                self.extra(f"{pkey}.{k}", "unknown head parameter")
        return spec

    def layer(self, node: Any, key: str) -> tuple[int, int, dict[str, Any]]:
        cls, p, ckey, rest = self.component(node, key, ("layer",))
        if cls not in LAYERS:
            self.unknown_class(ckey, cls, "layer")
        for extra in rest:
            self.extra(f"{key}.{extra}", "unknown key")
        pkey = f"{key}.layer_parameters"
        m, n = p.get("m"), p.get("n")
        for k, v in (("m", m), ("n", n)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                self.fail(f"{pkey}.{k}", f"expected a positive integer, got {short(v, 40)}")
        heads_cfg = p.get("head_configs")
        if heads_cfg is None:
            self.fail(f"{pkey}.head_configs", "required key is missing")
        width, _, configs = _alloc(self, p.get("width"), p.get("width_alloc"), heads_cfg, f"{pkey}.width")
        specs = [self.head(c, f"{pkey}.head_configs[{i}]" if isinstance(heads_cfg, list) else f"{pkey}.head_configs",
                           m, n) for i, c in enumerate(configs)]
        if any(s != specs[0] for s in specs[1:]):
            self.fail(f"{pkey}.head_configs", "heads of different kinds in one layer have no rpnkit "
                                              "counterpart (rpnkit's layer repeats one head)")
        spec = dict(specs[0])
        spec["heads"] = width
        fusion = "sum"
        if width > 1:
            fusion = "mean"  # the reference's default head fusion
            if p.get("fusion_strategy") is not None:
                strategy = p["fusion_strategy"]
                if strategy not in _FUSION_STRATEGIES:
                    self.fail(f"{pkey}.fusion_strategy", f"unknown fusion strategy {short(strategy, 40)}; "
                                                         f"valid: {', '.join(_FUSION_STRATEGIES)}")
                fusion = _FUSION_STRATEGIES[strategy]
            if p.get("head_fusion_configs") is not None:
                fusion = self.fusion(p["head_fusion_configs"], f"{pkey}.head_fusion_configs")
        spec["head_fusion"] = fusion
        if spec.get("output") is not None and width > 1:
            spec["head_output"] = spec.pop("output")
        known = {"m", "n", "name", "device", "width", "width_alloc", "head_configs", "fusion_strategy",
                 "head_fusion_configs", "parameters_init_method"}
        for k in p:
            if k not in known:
                self.extra(f"{pkey}.{k}", "unknown layer parameter")
        return m, n, spec

    def model(self, node: Any, key: str) -> tuple[list[int], list[dict[str, Any]]]:
        cls, p, ckey, rest = self.component(node, key, ("model",))
        if cls not in MODELS:
            self.unknown_class(ckey, cls, "model")
        for extra in rest:
            if extra not in _IGNORED:
                self.extra(f"{key}.{extra}", "unknown key")
        pkey = f"{key}.model_parameters"
        if p.get("layer_configs") is None:
            self.fail(f"{pkey}.layer_configs", "required key is missing")
        depth, alloc, configs = _alloc(self, p.get("depth"), p.get("depth_alloc"), p["layer_configs"],
                                       f"{pkey}.depth")
        dims: list[int] = []
        specs: list[dict[str, Any]] = []
        index = 0
        for i, (times, cfg) in enumerate(zip(alloc, configs)):
            m, n, spec = self.layer(cfg, f"{pkey}.layer_configs[{i}]")
            for _ in range(times):
                if dims and dims[-1] != m:
                    self.fail(f"{pkey}.layer_configs[{i}].layer_parameters.m",
                              f"layer {index} takes m={m} but the layer before gives n={dims[-1]}")
                if not dims:
                    dims.append(m)
                dims.append(n)
                specs.append(spec)
                index += 1
        for k in p:
            if k not in {"name", "device", "depth", "depth_alloc", "layer_configs"}:
                self.extra(f"{pkey}.{k}", "unknown model parameter")
        return dims, specs

    # -- learner, data, metric ----------------------------------------------------------
    def learner(self, node: Any, key: str) -> dict[str, Any]:
        cls, p, ckey, rest = self.component(node, key, ("learner",))
        if cls not in LEARNERS:
            self.unknown_class(ckey, cls, "learner")
        pkey = f"{key}.learner_parameters"
        train: dict[str, Any] = {}
        if p.get("n_epochs") is not None:
            train["epochs"] = p["n_epochs"]
        if p.get("optimizer_configs") is not None:
            ocls, op, okey, _ = self.component(p["optimizer_configs"], f"{pkey}.optimizer_configs", ("optimizer",))
            if ocls not in OPTIMIZERS:
                self.unknown_class(okey, ocls, "optimizer")
            name, renames, lr = OPTIMIZERS[ocls]
            opt = {"name": name, "lr": lr}
            for k, v in op.items():
                if k in renames:
                    opt[renames[k]] = list(v) if isinstance(v, (list, tuple)) else v
                elif k not in _IGNORED:
                    self.extra(f"{pkey}.optimizer_configs.optimizer_parameters.{k}", "unknown optimizer option")
            train["optimizer"] = opt
        train["scheduler"] = "none"  # the reference only schedules what it is told to
        if p.get("lr_scheduler_configs") is not None:
            scls, sp, skey, _ = self.component(p["lr_scheduler_configs"], f"{pkey}.lr_scheduler_configs",
                                               ("lr_scheduler",))
            if scls not in SCHEDULERS:
                self.unknown_class(skey, scls, "scheduler")
            name, renames = SCHEDULERS[scls]
            sched: dict[str, Any] = {"name": name}
            for k, v in sp.items():
                if k in renames:
                    sched[renames[k]] = v
                elif k not in _IGNORED:
                    self.extra(f"{pkey}.lr_scheduler_configs.lr_scheduler_parameters.{k}",
                               "unknown scheduler option")
            train["scheduler"] = sched
        if p.get("loss_configs") is not None:
            lcls, lp, lkey, _ = self.component(p["loss_configs"], f"{pkey}.loss_configs", ("loss",))
            if lcls not in LOSSES:
                self.unknown_class(lkey, lcls, "loss")
            name, renames = LOSSES[lcls]
            loss: dict[str, Any] = {"name": name}
            for k, v in lp.items():
                if k == "reduction":
                    if v != "mean":
                        self.fail(f"{pkey}.loss_configs.loss_parameters.reduction",
                                  f"rpnkit losses are means; got {short(v, 20)}")
                elif k in renames:
                    loss[renames[k]] = v
                elif k not in _IGNORED:
                    self.extra(f"{pkey}.loss_configs.loss_parameters.{k}", "unknown loss option")
            train["loss"] = loss if len(loss) > 1 else name
        for k in p:
            if k not in {"name", "device", "n_epochs", "optimizer_configs", "lr_scheduler_configs",
                         "loss_configs"}:
                self.extra(f"{pkey}.{k}", "unknown learner parameter")
        return train

    def data(self, node: Any, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
        cls, p, ckey, rest = self.component(node, key, ("data",))
        if cls not in DATA:
            self.unknown_class(ckey, cls, "data")
        ours = DATA[cls]
        pkey = f"{key}.data_parameters"
        train: dict[str, Any] = {}
        if p.get("train_batch_size") is not None:
            train["batch_size"] = p["train_batch_size"]
        if p.get("test_batch_size") is not None:
            train["eval_batch_size"] = p["test_batch_size"]
        data: dict[str, Any]
        short_name = cls.rsplit(".", 1)[1]
        if ours is None:
            data = {"name": "csv", "path": f"{short_name}.csv"}
            self.notes.append(f"{ckey}: {short_name} (as the reference's feature vectors) is not "
                              f"bundled with rpnkit; export it as {short_name}.csv (features, then "
                              "the label column) or edit data:")
        elif ours in ("elementary", "composite", "feynman"):
            index = p.get("equation_index", 0)
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                self.fail(f"{pkey}.equation_index", f"expected an integer >= 0, got {short(index, 40)}")
            data = {"name": ours, "equation": _equation(self, ours, index, f"{pkey}.equation_index"),
                    "n_samples": 2000, "split": {"train": 0.5, "val": 0.0, "test": 0.5}}
            if cls.endswith("dimensionless_feynman_function"):
                data["dimensionless"] = True
        elif ours == "mnist":
            data = {"name": "mnist", "root": "data/mnist", "download": True}
        else:
            data = {"name": ours}
        if ours in ("iris", "banknote", "pima"):
            data["split"] = {"train": 0.9, "val": 0.0, "test": 0.1}  # the reference's 90/10 split
        for k in p:
            if k not in {"name", "device", "train_batch_size", "test_batch_size", "equation_index"}:
                self.extra(f"{pkey}.{k}", "unknown data parameter")
        return data, train

    def metric(self, node: Any, key: str) -> list[str]:
        cls, p, ckey, rest = self.component(node, key, ("metric",))
        if cls not in METRICS:
            self.unknown_class(ckey, cls, "metric")
        return [METRICS[cls]]

    def output(self, node: Any, key: str, stem: str) -> None:
        cls, p, ckey, rest = self.component(node, key, (stem,))
        if cls not in OUTPUTS:
            self.unknown_class(ckey, cls, "output")

    # -- the whole file -----------------------------------------------------------------
    def run(self, raw: Any) -> dict[str, Any]:
        root = self.mapping(raw, "(top level)")
        if set(root) != {"configurations"}:
            other = next((k for k in root if k != "configurations"), "configurations")
            self.fail(str(other), "a reference-toolkit config has exactly one top-level key, "
                                  "'configurations'")
        top = self.mapping(root["configurations"], "configurations")
        key = "configurations"
        for needed in ("data_configs", "model_configs"):
            if needed not in top:
                self.fail(f"{key}.{needed}", "required key is missing")
        data, train = self.data(top["data_configs"], f"{key}.data_configs")
        if top.get("learner_configs") is not None:
            train.update(self.learner(top["learner_configs"], f"{key}.learner_configs"))
        dims, specs = self.model(top["model_configs"], f"{key}.model_configs")
        if top.get("metric_configs") is not None:
            train["metrics"] = self.metric(top["metric_configs"], f"{key}.metric_configs")
        for stem in ("output", "result"):
            if top.get(f"{stem}_configs") is not None:
                self.output(top[f"{stem}_configs"], f"{key}.{stem}_configs", stem)
        for k in top:
            if k not in {"device", "random_seed", "data_configs", "learner_configs", "model_configs",
                         "metric_configs", "output_configs", "result_configs"}:
                self.extra(f"{key}.{k}", "unknown section")
        seed = top.get("random_seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
            self.fail(f"{key}.random_seed", f"expected an integer 0 to 2**32-1, got {short(seed, 40)}")
        loss = train.get("loss")
        if data["name"] in _LABELLED and (loss if isinstance(loss, str) else None) in ("mse", "mae"):
            data["labels_as_targets"] = True  # the reference regresses on the class index
            self.notes.append(f"{key}.data_configs: {data['name']}'s class indices are fitted as one "
                              f"regression target with the {loss} loss, as the reference does "
                              "(data.labels_as_targets)")
        out: dict[str, Any] = {"seed": seed, "device": "auto", "data": data,
                               "model": _model_section(dims, specs), "train": _train_section(train)}
        return out


#: bundled classification datasets whose labels the reference fits with a regression loss
_LABELLED = ("iris", "banknote", "pima")


def _equation(conv: _Converter, kind: str, index: int, key: str) -> str:
    if kind != "feynman":
        return f"{'E' if kind == 'elementary' else 'C'}.{index}"
    from importlib import resources

    text = resources.files("rpnkit").joinpath("resources", "equations", "feynman.csv").read_text()
    ids = [line.split(",", 1)[0] for line in text.splitlines()[1:] if line.strip()]
    if index >= len(ids):
        conv.fail(key, f"index {index} is past the {len(ids)} Feynman equations (0 to {len(ids) - 1})")
    return ids[index]  # the reference and rpnkit list the AI Feynman equations in one order


def _alloc(conv: _Converter, num: Any, alloc: Any, configs: Any, key: str) -> tuple[int, list[int], list]:
    """The reference's (num, num_alloc, configs) completion (depth/width with their allocations)."""
    configs = list(configs) if isinstance(configs, list) else [configs]
    if not configs:
        conv.fail(key.rsplit(".", 1)[0], "no layer or head configs")
    if alloc is None:
        if num is None or num == len(configs):
            alloc = [1] * len(configs)
        elif len(configs) == 1 and isinstance(num, int) and num >= 1:
            alloc = [num]
        else:
            conv.fail(key, f"{num} does not match the {len(configs)} configs and no allocation is given")
    alloc = list(alloc) if isinstance(alloc, list) else [alloc]
    if any(not isinstance(a, int) or isinstance(a, bool) or a < 1 for a in alloc):
        conv.fail(f"{key}_alloc", f"expected positive integers, got {short(alloc, 60)}")
    if len(alloc) != len(configs):
        conv.fail(f"{key}_alloc", f"{len(alloc)} entries for {len(configs)} configs")
    if num is not None and num != sum(alloc):
        conv.fail(key, f"{num} differs from the sum of {key.rsplit('.', 1)[1]}_alloc ({sum(alloc)})")
    return sum(alloc), alloc, configs


_LAYER_DEFAULTS: dict[str, Any] = {"expansion": {"name": "identity"}, "reconciliation": {"name": "identity"},
                                   "remainder": {"name": "zero"}, "bias": False, "channels": 1,
                                   "channel_fusion": "sum", "heads": 1, "head_fusion": "sum",
                                   "output": None, "head_output": None}


def _compact(component: dict[str, Any]) -> Any:
    return component["name"] if len(component) == 1 else component


def _model_section(dims: list[int], specs: list[dict[str, Any]]) -> dict[str, Any]:
    full = [{**_LAYER_DEFAULTS, **s} for s in specs]
    base = full[0]
    model: dict[str, Any] = {"dims": dims}
    for k, v in base.items():
        if k in ("expansion", "reconciliation", "remainder"):
            model[k] = _compact(v)
        elif v != _LAYER_DEFAULTS[k]:
            model[k] = v
    overrides: list[Any] = []
    for layer in full:
        diff = {k: (_compact(v) if k in ("expansion", "reconciliation", "remainder") else v)
                for k, v in layer.items() if v != base[k]}
        overrides.append(diff or None)
    while overrides and overrides[-1] is None:
        overrides.pop()
    if overrides:
        model["layers"] = overrides
    return model


def _train_section(train: dict[str, Any]) -> dict[str, Any]:
    order = ("epochs", "batch_size", "eval_batch_size", "optimizer", "scheduler", "loss", "metrics")
    return {k: train[k] for k in order if k in train}


def convert(raw: Any, source: str = "reference config", reference_quirks: bool = False) -> Conversion:
    """Map a reference-toolkit config (already-parsed YAML data) to an rpnkit config.

    Args:
        raw: the parsed YAML (plain data; nothing in it is imported or called).
        source: the name used in error messages (normally the file's path).
        reference_quirks: reproduce the reference's known quirks (keys it ignores are dropped
            and reported as ignored) instead of refusing them or applying them as meant.

    Returns:
        A :class:`Conversion`; its ``config`` passes :func:`rpnkit.config.parse_config`.

    Raises:
        ConfigurationError: one line naming ``source`` and the key, for a class path not in
            the tables (:data:`KNOWN_CLASSES`), an option without an rpnkit counterpart, or a
            result rpnkit's own config validation refuses.
    """
    conv = _Converter(source, reference_quirks)
    config = conv.run(raw)
    from .config import parse_config

    try:
        parse_config(config, source=f"{source} (converted)")
    except ConfigurationError as exc:
        raise ConfigurationError(f"{source}: the converted config is not valid here: {exc}") from None
    return Conversion(config, conv.notes)


def convert_file(path: str | os.PathLike, out: str | os.PathLike,
                 reference_quirks: bool = False) -> Conversion:
    """Read the reference YAML at ``path`` (safely, as data), convert it and write the rpnkit
    config to ``out`` atomically (a temporary file in the same folder, then renamed).
    ``out`` must differ from ``path``; nothing is written when anything is refused."""
    from .config import read_config_text, read_yaml

    src, dst = Path(path), Path(out)
    if dst.exists() and src.exists() and os.path.samefile(src, dst) or dst.resolve() == src.resolve():
        raise ConfigurationError(f"--out {short(str(out), 120)} is the input file; write the "
                                 "converted config elsewhere")
    if dst.is_dir():
        raise ConfigurationError(f"--out {short(str(out), 120)} is a folder; give a file name")
    if not dst.parent.is_dir():
        raise ConfigurationError(f"--out {short(str(out), 120)}: folder {short(str(dst.parent), 120)} "
                                 "does not exist")
    raw = read_yaml(read_config_text(src), source=str(path))
    result = convert(raw, source=str(path), reference_quirks=reference_quirks)
    text = result.to_yaml(header=f"converted by rpnkit convert from {src.name} (reference toolkit "
                                 "config); every class path mapped to an rpnkit registry name")
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, dst)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    return result


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)
