"""What every schedule object shares: a repr that is the call, and its arguments as data."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

F32 = jnp.float32


class ScheduleObject:
    """A frozen dataclass ``step -> value`` whose ``repr`` is the call that rebuilds it.

    ``public_name`` is the name users call (``linear_schedule``); it defaults to
    the class name (Keras's ``ExponentialDecay``).
    """

    public_name: str | None = None

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
