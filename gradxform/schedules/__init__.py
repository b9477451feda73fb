"""Schedules: small callable objects ``step -> value`` that keep their parameters.

optax's set under optax's names (``linear_schedule``, ``warmup_cosine_decay_schedule``,
...) with optax's values, Keras's under Keras's names (``ExponentialDecay``, ...)
with Keras's, and `AtLastMicroStep` for Keras's counting under gradient
accumulation. Each ``repr`` is the call that rebuilds it.
"""

from gradxform.schedules.averaged_sgd import averaged_sgd_schedule
from gradxform.schedules.composite import (
    cosine_onecycle_schedule,
    join_schedules,
    linear_onecycle_schedule,
    sgdr_schedule,
    warmup_cosine_decay_schedule,
)
from gradxform.schedules.keras import (
    CosineDecay,
    CosineDecayRestarts,
    ExponentialDecay,
    InverseTimeDecay,
    PiecewiseConstantDecay,
    PolynomialDecay,
)
from gradxform.schedules.micro_steps import AtLastMicroStep
from gradxform.schedules.piecewise import (
    piecewise_interpolate_schedule,
    warmup_exponential_decay_schedule,
)
from gradxform.schedules.step_size import relative_step_size, warmup_scaled_schedule
from gradxform.schedules.standard import (
    constant_schedule,
    cosine_decay_schedule,
    exponential_decay,
    linear_schedule,
    piecewise_constant_schedule,
    polynomial_schedule,
    warmup_constant_schedule,
)

__all__ = [
    "AtLastMicroStep",
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "averaged_sgd_schedule",
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "exponential_decay",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "relative_step_size",
    "sgdr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
    "warmup_scaled_schedule",
]
