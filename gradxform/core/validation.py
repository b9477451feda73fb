"""Checks for constructor arguments.

Each check raises at construction, naming the transformation, the argument and
the value: ``scale_by_adam: b1 must be in [0, 1), got 1.5``. A wrong type gives
`TypeError`; a value of the right type outside its range gives `ValueError`.
Values that are jax tracers (a hyperparameter passed through ``jit``) cannot be
inspected and are let through.

Numbers are checked as the arithmetic will see them: arithmetic runs in at
least float32, so a value must be finite in float32 (``1e39`` is ``inf``
there), a decay rate below 1 must stay below 1 once rounded to float32
(``0.99999999`` is ``1.0``), and a value that must be positive must not
round to 0 or to a subnormal that XLA flushes to 0 (``1e-50``, ``1e-40``).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


FLOAT32 = np.finfo(np.float32)


def _is_tracer(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def in_float32(number: float) -> float:
    """``number`` rounded to float32, as a Python float (inf where float32 overflows)."""
    with np.errstate(over="ignore"):
        return float(np.float32(number))


def real_number(owner: str, name: str, value: Any) -> float | None:
    """Returns ``value`` as a Python float, or None if it is a tracer.

    Raises `TypeError` unless ``value`` is a real number (a Python or numpy
    number, or a 0-d real array) and `ValueError` if it is NaN or infinite.
    """
    if _is_tracer(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    if isinstance(value, numbers.Real):
        number = float(value)
    else:
        array = np.asarray(value) if hasattr(value, "shape") else None
        if (
            array is None
            or array.shape != ()
            or not jnp.issubdtype(array.dtype, jnp.number)
            or jnp.issubdtype(array.dtype, jnp.complexfloating)
        ):
            raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
        number = float(array)
    if not math.isfinite(number):
        raise ValueError(f"{owner}: {name} must be finite, got {value!r}")
    if not math.isfinite(in_float32(number)):
        raise ValueError(
            f"{owner}: {name} must be finite in float32, the precision arithmetic runs in "
            f"(|{name}| <= {float(FLOAT32.max):.4g}), got {value!r}"
        )
    return number


def in_range(
    owner: str,
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Checks that ``value`` is a finite real number inside the given interval."""
    number = real_number(owner, name, value)
    if number is None:
        return
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    low_text = "-inf" if low is None else f"{low:g}"
    high_text = "inf" if high is None else f"{high:g}"
    interval = f"{left}{low_text}, {high_text}{right}"
    if too_low or too_high:
        raise ValueError(f"{owner}: {name} must be in {interval}, got {value!r}")
    # An open bound the value reaches once rounded to float32 is reached in the arithmetic:
    # b2 = 0.99999999 is 1.0 there, and 1e-50 > 0 is 0.
    rounded = in_float32(number)
    if high is not None and high_open and rounded >= high:
        raise ValueError(
            f"{owner}: {name} must be in {interval}; {value!r} rounds to {rounded:g} in float32, "
            f"the precision arithmetic runs in. Use a value at most {_below(high):.9g}"
        )
    if low is not None and low_open and abs(rounded - low) < FLOAT32.tiny:
        raise ValueError(
            f"{owner}: {name} must be in {interval}; {value!r} is within float32's smallest "
            f"normal number ({float(FLOAT32.tiny):.4g}) of {low:g} and rounds to {low:g} in the "
            "arithmetic (XLA flushes subnormal numbers to zero)"
        )


def _below(bound: float) -> float:
    """The largest float32 number below ``bound``."""
    return float(np.nextafter(np.float32(bound), np.float32(-np.inf)))


def non_negative(owner: str, name: str, value: Any) -> None:
    """``value >= 0``."""
    in_range(owner, name, value, low=0.0)


def positive(owner: str, name: str, value: Any) -> None:
    """``value > 0``."""
    in_range(owner, name, value, low=0.0, low_open=True)


def decay_rate(owner: str, name: str, value: Any, *, allow_one: bool = False) -> None:
    """A decay in ``[0, 1)``, or ``[0, 1]`` when ``allow_one``."""
    in_range(owner, name, value, low=0.0, high=1.0, high_open=not allow_one)


def positive_int(
    owner: str, name: str, value: Any, *, minimum: int = 1, allow_none: bool = False
) -> int | None:
    """Returns ``value`` as a Python int after checking it is an int in ``[minimum, 2**31 - 1]``.

    Python and numpy ints are accepted (not bools); None too when ``allow_none``.
    The upper bound is the int32 step counters' range, which these values are
    compared with. Callers use the returned Python int, so that a numpy
    ``uint8`` never meets an int32 counter under strict promotion.
    """
    if value is None and allow_none:
        return None
    wanted = f"an int >= {minimum}" + (" or None" if allow_none else "")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{owner}: {name} must be {wanted}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be {wanted}, got {value!r}")
    if value > np.iinfo(np.int32).max:
        raise ValueError(
            f"{owner}: {name} must be at most 2**31 - 1, the range of the int32 step counters "
            f"it is compared with, got {value!r}"
        )
    return int(value)


def transformation(owner: str, name: str, value: Any) -> None:
    """A gradient transformation: anything with callable ``init`` and ``update`` (optax's too)."""
    if not (callable(getattr(value, "init", None)) and callable(getattr(value, "update", None))):
        raise TypeError(f"{owner}: {name} must be a transformation with init and update, got {value!r}")


def boolean(owner: str, name: str, value: Any) -> None:
    """A Python or numpy bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}: {name} must be a bool, got {value!r}")


def float_dtype(owner: str, name: str, value: Any) -> None:
    """None, or a floating-point (or complex) dtype."""
    if value is None:
        return
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise TypeError(f"{owner}: {name} must be a dtype, got {value!r}") from None
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise ValueError(f"{owner}: {name} must be a floating-point dtype, got {value!r}")


def scalar_or_schedule(owner: str, name: str, value: Any) -> None:
    """A non-negative real number, or a callable ``count -> value``."""
    if callable(value):
        return
    non_negative(owner, name, value)


def tree_or_callable(owner: str, name: str, value: Any) -> None:
    """None, a callable, or a pytree (a mask)."""
    if value is None or callable(value):
        return
    if not jax.tree.leaves(value):
        raise ValueError(f"{owner}: {name} must be a pytree of bools or a callable, got {value!r}")


def optional_real(owner: str, name: str, value: Any) -> None:
    """None, or a finite real number."""
    if value is not None:
        real_number(owner, name, value)


def string(owner: str, name: str, value: Any, *, allow_none: bool = False) -> None:
    """A ``str`` (or None when ``allow_none``)."""
    if value is None and allow_none:
        return
    if not isinstance(value, str):
        wanted = "a str" + (" or None" if allow_none else "")
        raise TypeError(f"{owner}: {name} must be {wanted}, got {value!r}")


def float_array(owner: str, name: str, value: Any) -> None:
    """A Python float or a real floating-point array (a loss); its values are not checked."""
    if _is_tracer(value) or (isinstance(value, float)):
        return
    dtype = getattr(value, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{owner}: {name} must be a float or a floating-point array, got {value!r}")


@contextlib.contextmanager
def inside(name: str, value: Any):
    """Re-raises a check's error on a part of ``value`` with ``name=value!r`` appended."""
    try:
        yield
    except (TypeError, ValueError) as error:
        raise type(error)(f"{error}; in {name}={value!r}") from None


def _sequence(owner: str, name: str, value: Any, wanted: str) -> None:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{owner}: {name} must be a list of {wanted}, got {value!r}")


def real_sequence(owner: str, name: str, value: Any, *, non_decreasing: bool = False) -> None:
    """A list or tuple of finite real numbers, optionally non-decreasing."""
    _sequence(owner, name, value, "real numbers")
    with inside(name, value):
        numbers_ = [real_number(owner, f"{name}[{i}]", item) for i, item in enumerate(value)]
    known = [number for number in numbers_ if number is not None]
    if non_decreasing and any(b < a for a, b in zip(known, known[1:])):
        raise ValueError(f"{owner}: {name} must be in increasing order, got {value!r}")


def int_sequence(owner: str, name: str, value: Any, *, minimum: int = 0) -> None:
    """A list or tuple of ints >= ``minimum`` (step counts)."""
    _sequence(owner, name, value, f"ints >= {minimum}")
    with inside(name, value):
        for index, item in enumerate(value):
            positive_int(owner, f"{name}[{index}]", item, minimum=minimum)
