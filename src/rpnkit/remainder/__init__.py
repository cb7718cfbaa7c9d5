"""Remainder functions π (SPEC §4), registered by their SPEC names."""

from .remainders import (
    ConstantRemainder,
    IdentityRemainder,
    LinearRemainder,
    Remainder,
    ZeroRemainder,
)

Zero = ZeroRemainder
Constant = ConstantRemainder
Identity = IdentityRemainder
Linear = LinearRemainder

__all__ = [
    "Remainder",
    "ZeroRemainder",
    "ConstantRemainder",
    "IdentityRemainder",
    "LinearRemainder",
    "Zero",
    "Constant",
    "Identity",
    "Linear",
]
