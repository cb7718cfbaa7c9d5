"""Parameter reconciliation functions ψ (SPEC §3), registered by their SPEC names."""

from .base import Reconciliation
from .basic import Constant, ConstantEye, IdentityReconciliation, Masking, One, Zero
from .hypernet import HyperNet
from .kronecker import HM, LPHM, DualLPHM, DuplicatedPadding
from .lowrank import LowRank, RandomMatrixAdaption
from .random_hypernet import RandomMatrixHyperNet

Identity = IdentityReconciliation
LoRR = LowRank

__all__ = [
    "Reconciliation",
    "Identity",
    "IdentityReconciliation",
    "Masking",
    "DuplicatedPadding",
    "LowRank",
    "LoRR",
    "HM",
    "LPHM",
    "DualLPHM",
    "RandomMatrixAdaption",
    "HyperNet",
    "RandomMatrixHyperNet",
    "Constant",
    "Zero",
    "One",
    "ConstantEye",
]
