"""What every schedule object shares: a repr that is the call, and its arguments as data."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from gradxform.core import validation

F32 = jnp.float32


class ScheduleObject:
    """A frozen dataclass ``step -> value`` whose ``repr`` is the call that rebuilds it.

    ``public_name`` is the name users call (``linear_schedule``); it defaults to
    the class name (Keras's ``ExponentialDecay``).
    """

    public_name: str | None = None

    @property
    def owner(self) -> str:
        """The name errors give: the public name under ``gx.``, ``schedules.linear_schedule``."""
        return f"schedules.{self.public_name or type(self).__name__}"

    def arguments(self) -> dict:
        """The constructor arguments, in order."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def __repr__(self) -> str:
        name = self.public_name or type(self).__name__
        inner = ", ".join(f"{key}={value!r}" for key, value in self.arguments().items())
        return f"{name}({inner})"


def as_float_count(count: Any):
    """The step count as a float32 array (an int32 count divides exactly as optax's does)."""
    return jnp.asarray(count).astype(F32)


def check_exponent(owner: str, name: str, value: Any) -> None:
    """An exponent of a base that reaches 0 at the end of a decay: it must be >= 0.

    ``0 ** p`` is inf for ``p < 0``, and 1 for ``p = 0``.
    """
    number = validation.real_number(owner, name, value)
    if number is not None and number < 0:
        raise ValueError(
            f"{owner}: {name} must be >= 0, got {value!r}: the base it raises reaches 0 at the "
            f"end of the decay, where a negative {name} gives inf"
        )
