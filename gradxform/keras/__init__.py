"""Keras 3 presets and learning-rate schedules: ``gx.keras.adam(...)`` reproduces Keras's Adam."""

from gradxform.keras.interchange import from_keras_config, to_keras_config
from gradxform.keras.loss_scale import loss_scale_optimizer
from gradxform.keras.momentum import lion, rmsprop, sgd
from gradxform.keras.muon import muon, muon_labels
from gradxform.keras.presets import adadelta, adagrad, adam, adamax, adamw, nadam
from gradxform.keras.regularized import adafactor, ftrl, lamb, schedule_free_adamw
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
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "from_keras_config",
    "ftrl",
    "lamb",
    "lion",
    "loss_scale_optimizer",
    "muon",
    "muon_labels",
    "nadam",
    "rmsprop",
    "schedule_free_adamw",
    "sgd",
    "to_keras_config",
]
