"""Keras 3 presets and learning-rate schedules: ``gx.keras.adam(...)`` reproduces Keras's Adam."""

from gradxform.keras.loss_scale import loss_scale_optimizer
from gradxform.keras.presets import adagrad, adam
from gradxform.schedules.keras import (
    CosineDecay,
    CosineDecayRestarts,
    ExponentialDecay,
    InverseTimeDecay,
    PiecewiseConstantDecay,
    PolynomialDecay,
)

__all__ = [
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "adagrad",
    "adam",
    "loss_scale_optimizer",
]
