"""Ready-made models (classic models expressed as RPNs), available by name.

``build_model(name, **params)`` is the entry point used by configs
(``model: {name: kan, dims: [...]}``). Registered names: ``rpn`` (generic
:meth:`RPN.from_dims`), ``mlp``, ``kan``, ``kernel_svm``, ``naive_bayes``, ``pgm`` and
``torch_mlp`` (a plain PyTorch MLP baseline, :class:`TorchMLP`), the structured RPN 2 models
``graph_rpn``, ``grid_rpn``, ``chain_rpn``, ``attention_rpn``, ``interdependent_rpn``, and the
reference toolkit's names ``gcn``, ``gat``, ``cnn``, ``rnn``, ``regression_rnn``,
``transformer`` (:mod:`.reference`).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..errors import ConfigurationError, did_you_mean
from ..model import RPN
from ..registry import Registry
from .baselines import TorchMLP
from .classic import DISTRIBUTIONS, KAN, KERNELS, MLP, PGM, KANBaseRemainder, KernelSVM, NaiveBayes
from .reference import CNN, GAT, GCN, RNN, RegressionRNN, Transformer
from .structured import AttentionRPN, ChainRPN, GraphRPN, GridRPN, InterdependentRPN

__all__ = [
    "MODELS",
    "build_model",
    "MLP",
    "KAN",
    "KernelSVM",
    "NaiveBayes",
    "PGM",
    "KANBaseRemainder",
    "TorchMLP",
    "GraphRPN",
    "GridRPN",
    "ChainRPN",
    "AttentionRPN",
    "InterdependentRPN",
    "GCN",
    "GAT",
    "CNN",
    "RNN",
    "RegressionRNN",
    "Transformer",
    "KERNELS",
    "DISTRIBUTIONS",
]

MODELS = Registry("model")


@MODELS.register("rpn")
def _rpn(dims: list[int], **params: Any) -> RPN:
    """Generic RPN built with RPN.from_dims."""
    return RPN.from_dims(dims, **params)


MODELS.register("mlp")(MLP)
MODELS.register("kan")(KAN)
MODELS.register("kernel_svm")(KernelSVM)
MODELS.register("naive_bayes")(NaiveBayes)
MODELS.register("pgm")(PGM)
MODELS.register("torch_mlp")(TorchMLP)
MODELS.register("graph_rpn")(GraphRPN)  # RPN 2 structured models (models/structured.py)
MODELS.register("grid_rpn")(GridRPN)
MODELS.register("chain_rpn")(ChainRPN)
MODELS.register("attention_rpn")(AttentionRPN)
MODELS.register("interdependent_rpn")(InterdependentRPN)
MODELS.register("gcn")(GCN)  # the reference toolkit's names (models/reference.py)
MODELS.register("gat")(GAT)
MODELS.register("cnn")(CNN)
MODELS.register("rnn")(RNN)
MODELS.register("regression_rnn")(RegressionRNN)
MODELS.register("transformer")(Transformer)


def build_model(name: str, **params: Any) -> nn.Module:
    """Build a registered model by name, e.g. ``build_model("kan", dims=[4, 8, 3])``.

    Unknown keyword arguments are reported with the valid ones.
    """
    factory = MODELS.get(name)
    sig = inspect.signature(factory)
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    if not accepts_kwargs:
        valid = [p for p in sig.parameters if p != "self"]
        for key in params:
            if key not in valid:
                raise ConfigurationError(
                    f"unknown parameter {key!r} for model {name!r}{did_you_mean(key, valid)}; "
                    f"valid parameters: {', '.join(valid)}"
                )
    return factory(**params)
