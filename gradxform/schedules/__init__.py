"""Schedules: small callable objects ``step -> value`` that keep their parameters."""

from gradxform.schedules.keras import (
    CosineDecay,
    CosineDecayRestarts,
    ExponentialDecay,
    InverseTimeDecay,
    PiecewiseConstantDecay,
    PolynomialDecay,
)
from gradxform.schedules.micro_steps import AtLastMicroStep

__all__ = [
    "AtLastMicroStep",
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
]
