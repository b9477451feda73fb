"""Numerics shared by the transformations: dtypes, counters, moments.

Dtype policy:

* arithmetic runs in `compute_dtype`: at least float32, wider if an input is;
* hyperparameters stay Python floats, so they are never rounded to a
  low-precision dtype (optax#1414: in bfloat16, ``b2=0.999`` becomes 1.0);
* results are cast back to the dtype of what they are stored in, and updates
  to the gradients' dtype.

Every function here is clean under ``jax.numpy_dtype_promotion("strict")``.

The per-leaf arithmetic calls ``lax`` on operands already in one dtype. Each
``jax.numpy`` operator re-enters a jitted wrapper while tracing, which made
tracing gradxform's adam on a 195-leaf tree slower than optax's; ``lax``
binds the primitive directly, and the values are bit for bit the same.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

INT32_MAX = int(np.iinfo(np.int32).max)


def leaf_dtype(x: Any) -> np.dtype:
    """The dtype of an array leaf; a Python float gives float32 (or float64 with x64)."""
    return jnp.asarray(x).dtype


def compute_dtype(*dtypes: Any) -> np.dtype:
    """The dtype to do arithmetic in: the widest of ``dtypes`` and float32.

    bfloat16 and float16 compute in float32; float64 and complex types are kept.
    """
    return _compute_dtype(tuple(np.dtype(dtype) for dtype in dtypes))


@functools.lru_cache(maxsize=None)
def _compute_dtype(dtypes: tuple[np.dtype, ...]) -> np.dtype:
    with jax.numpy_dtype_promotion("standard"):
        result = np.dtype(jnp.float32)
        for dtype in dtypes:
            result = jnp.promote_types(result, dtype)
    return result


def operand(value: Any, dtype: Any) -> Any:
    """``value`` (a Python number or a scalar array) as a ``lax`` operand of ``dtype``.

    A Python number becomes a constant rounded once, to ``dtype``, as
    ``jax.numpy`` rounds a weakly typed scalar."""
    value = python_number(value)
    if isinstance(value, (int, float, complex)):
        return np.asarray(value, dtype)
    return lax.convert_element_type(value, dtype)


def upcast(x: jax.Array, *others: Any) -> jax.Array:
    """``x`` cast to `compute_dtype` of itself and the dtypes ``others``."""
    return x.astype(compute_dtype(x.dtype, *others))


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|**2``; real for complex ``x``."""
    if jnp.iscomplexobj(x):
        return jnp.real(x) ** 2 + jnp.imag(x) ** 2
    return lax.mul(x, x)


@jax.custom_jvp
def norm_sqrt(squared: jax.Array) -> jax.Array:
    """``sqrt(squared)`` for a sum of squares, whose derivative at 0 is 0 instead of inf.

    The value is a bare ``sqrt``: XLA treats it as expensive and never copies
    it, or the sum feeding it, into the per-leaf kernels that read the norm. A
    ``where`` after the ``sqrt`` is cheap, so XLA would copy the whole sum into
    each of them: quadratic compile time in the number of leaves.
    """
    return jnp.sqrt(squared)


@norm_sqrt.defjvp
def _norm_sqrt_jvp(primals, tangents):
    (squared,), (tangent,) = primals, tangents
    root = jnp.sqrt(squared)
    positive = squared > 0
    return root, jnp.where(positive, tangent / (2 * jnp.where(positive, root, 1)), 0)


def rows_norm_parts(rows: jax.Array, headroom: Any = 1.0) -> tuple[jax.Array, jax.Array]:
    r"""Each row's L2 norm as ``scaled_norm / inv_scale``, computed without needless overflow.

    ``rows`` stacks one array per row on its leading axis; both results have
    the shape ``(k, 1, ..., 1)``, one entry per row, ready to broadcast against
    ``rows``. Normally ``inv_scale`` is 1 and ``scaled_norm`` is
    ``sqrt(sum |x|**2)`` over the row. For a row whose sum of squares, or norm
    times ``headroom``, overflows although every entry is finite,
    ``inv_scale`` is :math:`2^{-e}` with :math:`2^e` about its largest
    magnitude, and ``scaled_norm`` is the norm of the row times :math:`2^{-e}`.
    Multiplying by a power of two is exact, and :math:`2^{-e}` stays a normal
    number (XLA flushes subnormals to zero, which a division by the largest
    magnitude itself would hit). Only then, in one ``lax.cond`` for all rows,
    is the second pass paid; a ``cond`` per row would turn into a ``select``
    under ``vmap`` and pay it always. A NaN or infinite entry gives the plain,
    non-finite norm, and the derivative at 0 is finite.
    """
    axes = tuple(range(1, rows.ndim))
    plain = norm_sqrt(jnp.sum(abs_sq(rows), axis=axes, keepdims=True))
    # Derived from the norm so that, inside shard_map, it varies over the same mesh
    # axes as the norm does (both lax.cond branches must agree on that).
    one = jnp.ones_like(plain)
    overflowed = jnp.isposinf(plain * hyperparameter(headroom, plain.dtype))

    def rescaled():
        largest = jnp.max(jnp.abs(rows), axis=axes, keepdims=True, initial=0).astype(plain.dtype)
        rescue = overflowed & jnp.isfinite(largest)
        top = jnp.finfo(plain.dtype).maxexp - 2  # 2**-top is still a normal number
        exponent = jnp.clip(jnp.floor(jnp.log2(jnp.where(rescue, largest, 1))), 0, top)
        inv_scale = jnp.ldexp(one, -exponent.astype(jnp.int32))
        scaled_norm = jnp.sqrt(jnp.sum(abs_sq(rows * inv_scale.astype(rows.dtype)), axis=axes,
                                       keepdims=True))
        return jnp.where(rescue, inv_scale, one), jnp.where(rescue, scaled_norm, plain)

    return jax.lax.cond(jnp.any(overflowed), rescaled, lambda: (one, plain))


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the dtype's maximum instead of wrapping around."""
    top = np.iinfo(count.dtype).max
    return jnp.where(count < top, count + 1, top).astype(count.dtype)


def cyclic_increment(phase: jax.Array, period: int) -> jax.Array:
    """``(phase + 1) mod period`` for a counter kept in ``[0, period)``: periodic
    decisions (accumulation windows, overwrites) never depend on a saturated count."""
    return jnp.where(phase + 1 < period, phase + 1, 0).astype(phase.dtype)


def saturating_affine(count: Any, scale: int, offset: int) -> Any:
    """``count * scale + offset`` for an int32 count, saturating at 2**31 - 1.

    A Python int stays a Python int (a schedule may do float arithmetic with it)."""
    if isinstance(count, int):
        return min(count * scale + offset, INT32_MAX)
    count = jnp.asarray(count)
    limit = (INT32_MAX - offset) // scale
    return jnp.where(count > limit, INT32_MAX, count * scale + offset).astype(count.dtype)


def zero_count() -> jax.Array:
    """A fresh int32 step counter."""
    return jnp.zeros([], jnp.int32)


def python_number(value: Any) -> Any:
    """A Python or numpy scalar as a Python number; anything else (an array) unchanged.

    A numpy scalar (``np.float64(0.5)``) is strongly typed for JAX: it would
    promote float32 or bfloat16 arithmetic to float64, and fail under strict
    promotion. Its Python value is weakly typed and takes the arrays' dtype.
    """
    if isinstance(value, np.generic) and value.shape == ():
        return value.item()
    return value


def is_static_zero(value: Any) -> bool:
    """Whether ``value`` is a Python or numpy number equal to 0.

    What a preset may leave out of its chain (no weight decay, no momentum). An
    array, such as a value `inject_hyperparams` put in the state, is never
    taken for 0: ``init`` sees it concrete and ``update`` traced, and both must
    build the same chain.
    """
    value = python_number(value)
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


def hyperparameter(value: Any, dtype: Any) -> Any:
    """``value`` ready to meet arrays of ``dtype``: a Python (or numpy) number is returned
    as a Python number (weakly typed, never rounded), an array (a value injected by
    ``inject_hyperparams``, or traced) is cast to ``dtype``."""
    value = python_number(value)
    if isinstance(value, (int, float)):
        return value
    return jnp.asarray(value).astype(dtype)


def moment(decay: Any, previous: jax.Array, value: jax.Array) -> jax.Array:
    """The exponential moving average ``decay * previous + (1 - decay) * value``.

    Written as optax writes it, ``(1 - decay) * value + decay * previous``, so
    that float32 results agree bit for bit.
    """
    decay = hyperparameter(decay, value.dtype)
    return lax.add(lax.mul(operand(1 - decay, value.dtype), value),
                   lax.mul(operand(decay, value.dtype), previous))


def bias_correction(decay: Any, count: jax.Array, dtype: Any = jnp.float32, *,
                    accurate: bool = False) -> jax.Array:
    """``1 - decay**count`` in ``dtype``, the divisor that debiases a moment at step ``count``.

    ``dtype`` is the moment's compute dtype: float32, or float64 for float64
    params, where ``1 - 0.999999**t`` in float32 would be off by 0.7%.

    Computed as written (optax's and Keras's arithmetic), ``decay**count`` is
    rounded near 1 and the subtraction cancels: at ``decay=0.999`` the first
    steps' divisor is off by up to 5e-5 of itself in float32. ``accurate``
    computes ``-expm1(count * log(decay))`` instead, with ``log(decay)`` taken
    in float64 for a Python number (and carried as two ``dtype`` parts), which
    is within a few units of ``dtype`` of the exact value, as torch's float64
    host arithmetic is.
    """
    # A float exponent is valid under strict promotion (an int32 one is not, under
    # jit); in float32 it gave bitwise the same values as optax's int32 exponent for
    # counts 1..99 when checked, and the optax parity tests hold it to 2e-6.
    dtype = np.dtype(dtype)
    if not accurate:
        return (1 - hyperparameter(decay, dtype) ** count.astype(dtype)).astype(dtype)
    steps = count.astype(dtype)
    value = python_number(decay)
    if isinstance(value, (int, float)):
        if value == 0:  # log(0) = -inf, and 0 * -inf at count 0
            return jnp.where(steps > 0, jnp.ones((), dtype), jnp.zeros((), dtype))
        log = np.log(np.float64(value))
        high = np.asarray(log, dtype)
        low = np.asarray(log - np.float64(high), dtype)
        exponent = steps * high + steps * low
    else:
        exponent = steps * jnp.log(jnp.asarray(value).astype(dtype))
    return (-jnp.expm1(exponent)).astype(dtype)


def nesterov_debiased(decay: Any, moment_: jax.Array, value: jax.Array, correction: jax.Array,
                      next_correction: jax.Array) -> jax.Array:
    """NAdam's debiased first moment ``decay * m / (1 - decay**(t+1)) + (1 - decay) * g / (1 - decay**t)``.

    ``correction`` and ``next_correction`` are `bias_correction` at ``t`` and
    ``t + 1``; ``moment_`` and ``value`` share one compute dtype.
    """
    dtype = moment_.dtype
    decay = hyperparameter(decay, dtype)
    return decay * (moment_ / next_correction.astype(dtype)) + (1 - decay) * (
        value / correction.astype(dtype)
    )


def root_scaled(numerator: jax.Array, nu_hat: jax.Array, eps: Any, eps_root: Any) -> jax.Array:
    """Adam's step ``numerator / (sqrt(nu_hat + eps_root) + eps)``, in ``numerator``'s dtype.

    ``nu_hat`` is real (the compute dtype's real counterpart); ``eps`` and
    ``eps_root`` are Python numbers or scalar arrays (injected values).
    """
    real = nu_hat.dtype
    root = lax.sqrt(lax.add(nu_hat, operand(eps_root, real)))
    denominator = lax.add(root, operand(eps, real))
    return lax.div(numerator, lax.convert_element_type(denominator, numerator.dtype))


def per_dtype(compute: Any) -> Any:
    """``compute(dtype)`` memoised per dtype: one bias correction per compute dtype in a tree."""
    results: dict = {}

    def get(dtype: Any) -> Any:
        key = np.dtype(dtype)
        if key not in results:
            results[key] = compute(key)
        return results[key]

    return get


def schedule_value(learning_rate: Any, count: jax.Array, owner: str, argument: str) -> Any:
    """Evaluates a schedule at ``count``; returns a constant unchanged.

    What a schedule returns must be one real number: a Python int or float, or
    a 0-d integer or floating-point array. Anything else raises when the step
    is traced (shapes are known then), naming ``owner`` and ``argument``: a
    shaped array would multiply each entry of the updates by a different
    factor, or broadcast them to its own shape.
    """
    if not callable(learning_rate):
        return learning_rate
    value = learning_rate(count)
    dtype = getattr(value, "dtype", None)
    real = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not real and not (
        dtype is not None
        and (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating))
    ):
        raise TypeError(
            f"{owner}: {argument} must return a real number when called with the step count, "
            f"got {value!r} from {argument}={learning_rate!r}"
        )
    if np.shape(value) != ():
        raise ValueError(
            f"{owner}: {argument} must return one number per step (shape ()), got an array of "
            f"shape {np.shape(value)} from {argument}={learning_rate!r}; reduce it to a scalar"
        )
    return value


def scale_leaf(factor: Any, x: jax.Array) -> jax.Array:
    """``factor * x`` computed in `compute_dtype` and returned in ``x``'s dtype.

    ``factor`` may be a Python number, a numpy scalar or a jax scalar of any float
    dtype: it is never rounded to ``x``'s dtype before the multiplication.
    """
    factor = python_number(factor)
    if isinstance(factor, (int, float)):  # weakly typed: no rounding, no promotion
        x_c = upcast(x)
        return lax.convert_element_type(lax.mul(operand(factor, x_c.dtype), x_c), x.dtype)
    factor = jnp.asarray(factor)
    dtype = compute_dtype(x.dtype, factor.dtype)
    return (factor.astype(dtype) * x.astype(dtype)).astype(x.dtype)


def real_dtype(dtype: Any) -> np.dtype:
    """The real dtype of the same precision: complex64 -> float32, float32 -> float32."""
    return np.dtype(jnp.finfo(dtype).dtype)


def squares_dtype(dtype: Any) -> np.dtype:
    """The default dtype of an accumulator of squared gradients for params of ``dtype``.

    The real counterpart, except float16: its range stops at 6e-8, so the squares
    of gradients below about 2e-4 (times ``1 - b2``) flush to zero and the step
    ``m / (sqrt(v) + eps)`` overflows. Such accumulators are kept in float32.
    bfloat16 has float32's range and is kept.
    """
    real = real_dtype(dtype)
    return np.dtype(jnp.float32) if real == np.dtype(jnp.float16) else real


def store(x: jax.Array, dtype: Any) -> jax.Array:
    """Casts ``x`` to the dtype it is stored in (a real store takes a real part)."""
    if jnp.iscomplexobj(x) and not jnp.issubdtype(dtype, jnp.complexfloating):
        x = jnp.real(x)
    return lax.convert_element_type(x, dtype)
