"""Factored second moments (Adafactor): row and column statistics instead of a full matrix.

A leaf whose two largest dimensions are both at least ``min_dim_size_to_factor``
keeps, in place of a second moment of its own shape, the mean of the squared
gradient over its largest dimension (``v_row``) and over its second largest
(``v_col``): memory :math:`O(n + m)` for an :math:`n \\times m` matrix. Other
leaves keep a full second moment ``v``. The state layout is optax's
``FactoredState``: a factored leaf holds ``v = zeros((1,))`` and an unfactored
one ``v_row = v_col = zeros((1,))``.

The statistics of a leaf are reductions over its own axes, so they need its
shape: a `gx.flat_tree` buffer, which keeps only a 1-D run of values, is
refused with an error that points to the per-leaf tree. On a sharded leaf the
row and column means are all-reduces (no leaf is gathered), and each statistic
is sharded like its leaf with the reduced axis dropped.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from gradxform.core import flat, numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


def adafactor_decay_rate(step: Any, exponent: float = 0.8) -> jax.Array:
    r"""Adafactor's second-moment decay at a step: it rises from 0 towards 1.

    .. math::
        \hat\beta_2(t) = 1 - (t + 1)^{-c}

    The default ``decay_rate_fn`` of `scale_by_factored_rms`, with :math:`c` its
    ``decay_rate``; the same numbers as optax's (private) ``_decay_rate_pow``,
    computed in float32. At step 0 the decay is 0, so the first second moment is
    the first squared gradient. Shazeer and Stern, 2018, section 7.

    Args:
      step: the step :math:`t \ge 0`, an int or an integer scalar array.
      exponent: :math:`c \ge 0`.

    Example:
      >>> import gradxform as gx
      >>> float(gx.adafactor_decay_rate(3, 0.5))
      0.5
    """
    owner = "adafactor_decay_rate"
    validation.non_negative(owner, "exponent", exponent)
    if isinstance(step, (jax.Array, np.ndarray)) and not isinstance(step, (bool, np.bool_)):
        if not jnp.issubdtype(step.dtype, jnp.integer) or step.shape != ():
            raise TypeError(f"{owner}: step must be an int or an integer scalar array, got {step!r}")
    else:
        validation.positive_int(owner, "step", step, minimum=0)
    step = jnp.asarray(step)
    # In float32, as optax: (t + 1) is exact below 2**24 and cannot wrap a saturated count.
    t = lax.add(step.astype(jnp.float32), np.float32(1))
    return 1 - t ** -numerics.hyperparameter(exponent, jnp.float32)


def _factored_dims(shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int,
                   factored_axes: str = "largest"):
    """``(d1, d0)``: the axes of the second largest and the largest dimension, or None.

    With ``factored_axes="last"``, the second to last and the last axis instead.
    None unless ``factored``, the leaf has at least two dimensions, and the
    smaller of the two is at least ``min_dim_size_to_factor``. Ties are broken
    as ``np.argsort`` (hence optax's ``_factored_dims``) breaks them.
    """
    if not factored or len(shape) < 2:
        return None
    if factored_axes == "last":
        d1, d0 = len(shape) - 2, len(shape) - 1
        return None if min(shape[d1], shape[d0]) < min_dim_size_to_factor else (d1, d0)
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


# The smallest floor f whose square f**2 is a normal float32 (2**-126), not 0.
_SMALLEST_FLOOR = 2.0 ** -63


def _floor_value(floor: Any, dtype: Any) -> Any:
    """The floor :math:`f` for a leaf: a number, or the leaf dtype's machine epsilon."""
    return float(jnp.finfo(dtype).eps) if isinstance(floor, str) else floor


def _without(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return shape[:axis] + shape[axis + 1:]


def _zeros_placed(leaf: Any, axes: tuple[int, ...], shape: tuple[int, ...], dtype: Any) -> jax.Array:
    """Zeros of ``shape`` where ``leaf`` lives, sharded like ``leaf`` without its ``axes``."""
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, NamedSharding) and not isinstance(leaf, jax.core.Tracer):
        spec = tuple(sharding.spec) + (None,) * (len(leaf.shape) - len(sharding.spec))
        kept = [entry for i, entry in enumerate(spec) if i not in axes]
        kept = kept + [None] * (len(shape) - len(kept))  # a placeholder: replicated
        return jnp.zeros(shape, dtype, device=NamedSharding(sharding.mesh, PartitionSpec(*kept)))
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        return jnp.zeros(shape, dtype, device=sharding)
    return jnp.zeros(shape, dtype)


def _reduced_zeros(leaf: Any, axes: tuple[int, ...], dtype: Any) -> jax.Array:
    """Zeros shaped like ``leaf`` with ``axes`` removed, sharded like it without those axes.

    Traced (under ``jit`` or ``eval_shape``), JAX's sharding types give the
    reduced sharding; eagerly, a `NamedSharding` leaf's spec loses the
    entries of ``axes``, and a leaf on one device puts them on that device.
    """
    if isinstance(leaf, jax.core.Tracer):
        target = jax.eval_shape(functools.partial(jnp.sum, axis=axes), leaf)
        return jnp.zeros_like(target, dtype=dtype)
    shape = tuple(n for i, n in enumerate(leaf.shape) if i not in axes)
    return _zeros_placed(leaf, axes, shape, dtype)


def _placeholder(leaf: Any, dtype: Any) -> jax.Array:
    """``zeros((1,))``, optax's filler for an unused statistic, replicated where ``leaf`` lives."""
    if isinstance(leaf, jax.core.Tracer):
        return jnp.zeros((1,), dtype)
    return _zeros_placed(leaf, tuple(range(len(getattr(leaf, "shape", ())))), (1,), dtype)


def _refuse_flat(owner: str, tree_: Any, what: str) -> None:
    """Raises the `TypeError` for a `gx.flat_tree` buffer, which lost the leaves' shapes."""
    if flat.is_flat(tree_):
        raise TypeError(
            f"{owner}: got a gx.flat_tree buffer as {what}, but {owner} (and adafactor, "
            "which uses it) reduces each leaf over its own axes and needs the leaf's shape, which "
            "a flat buffer does not keep. Use the per-leaf tree instead: pass params.unravel() "
            "(and its gradients) rather than the FlatTree"
        )


def _leaf_dtype(leaf: Any) -> np.dtype:
    return np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else numerics.leaf_dtype(leaf)


class FactoredState(NamedTuple):
    """The step count, the row and column statistics of factored leaves, ``v`` of the others."""

    count: jax.Array  # int32, shape ()
    v_row: Updates
    v_col: Updates
    v: Updates


def _shape_error(owner, path, shape, row, col, v):
    where = "".join(str(key) for key in path) or "<root>"
    return ValueError(
        f"{owner}: the update at {where} has shape {tuple(shape)}, but the state leaves there "
        f"(v_row of shape {tuple(row.shape)}, v_col of shape {tuple(col.shape)}, v of shape "
        f"{tuple(v.shape)}) were made for another shape"
    )


@public_constructor
def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
    decay_rate_fn: Callable[[Any, Any], Any] = adafactor_decay_rate,
    *,
    factored_axes: str = "largest",
    floor: float | str | None = None,
) -> GradientTransformation:
    r"""Rescales by a factored estimate of the gradients' root mean square (Adafactor).

    .. math::
        \hat\beta_t = f(t - t_0, c), \quad G = g_t^2 + \epsilon, \\
        R_t = \hat\beta_t R_{t-1} + (1-\hat\beta_t)\,\mathrm{mean}_{d_0} G, \quad
        C_t = \hat\beta_t C_{t-1} + (1-\hat\beta_t)\,\mathrm{mean}_{d_1} G, \\
        u_t = g_t \Big/ \sqrt{\frac{R_t}{\mathrm{mean}_{d_1} R_t}\, C_t}
        \quad\text{(factored)}, \qquad
        u_t = g_t / \sqrt{V_t},\; V_t = \hat\beta_t V_{t-1} + (1-\hat\beta_t)\, G
        \quad\text{(otherwise)}

    :math:`d_0` is the leaf's largest axis and :math:`d_1` its second largest
    (ties as ``np.argsort``); a leaf is factored when it has at least two axes
    and :math:`|d_1| \ge` ``min_dim_size_to_factor``. :math:`t` counts updates
    from 0, and :math:`f` is ``decay_rate_fn``, by default
    `adafactor_decay_rate`: :math:`1 - (t - t_0 + 1)^{-c}`. Same rule, state
    layout and defaults as ``optax.scale_by_factored_rms``, with these
    differences: the arithmetic runs in at least float32 and the statistics are
    stored in the leaf's real dtype (float32 for float16 leaves; optax keeps a
    complex leaf's in its complex dtype); ``params`` are not needed; and before
    step :math:`t_0` the step passed to :math:`f` is 0 rather than negative
    (optax's default then gives NaN). The statistics need each leaf's shape:
    a `gx.flat_tree` buffer raises a `TypeError` (use the per-leaf tree). On
    sharded leaves the means are all-reduces and each statistic is sharded like
    its leaf without the reduced axis. Shazeer and Stern, 2018.

    ``factored_axes="last"`` factors the last two axes, :math:`d_0 = -1` and
    :math:`d_1 = -2`, whatever their sizes (Keras's and torch's Adafactor; for
    a matrix the estimate is the same as the default's up to rounding, for
    higher ranks it differs). A ``floor`` :math:`f` replaces the added
    :math:`\epsilon` by torch's floors (``epsilon`` may then be 0):

    .. math::
        \hat V_t = \frac{R_t\, C_t}{\max(\mathrm{mean}_{d_1} R_t,\, f)}, \qquad
        u_t = g_t \big/ \sqrt{\max(\hat V_t,\, f^2)}
        \quad\text{(and } \sqrt{\max(V_t, f^2)} \text{ unfactored)}

    Args:
      factored: factor the second moment of leaves with two large axes.
      decay_rate: :math:`c \ge 0`, the second argument of ``decay_rate_fn``.
      step_offset: :math:`t_0 \ge 0`, an int: the step at which fine-tuning started.
      min_dim_size_to_factor: an int :math:`\ge 1`; a leaf is factored only if its
        second largest dimension is at least this.
      epsilon: :math:`\epsilon > 0`, added to the squared gradients.
      decay_rate_fn: :math:`f(t, c)`, a function of the shifted int32 step and
        ``decay_rate`` that returns the decay :math:`\hat\beta_t` as a scalar.
      factored_axes: ``"largest"`` (optax) or ``"last"`` (Keras, torch): the axes factored.
      floor: None (add ``epsilon``), :math:`f \ge 2^{-63}` (so that :math:`f^2` is a
        normal float32), or ``"machine_epsilon"`` (the leaf dtype's, torch's
        default): torch's floors above.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_factored_rms(), gx.scale_by_learning_rate(1e-2))
    """
    owner = "scale_by_factored_rms"
    validation.boolean(owner, "factored", factored)
    validation.non_negative(owner, "decay_rate", decay_rate)
    step_offset = validation.positive_int(owner, "step_offset", step_offset, minimum=0)
    min_dim = validation.positive_int(owner, "min_dim_size_to_factor", min_dim_size_to_factor)
    validation.string(owner, "factored_axes", factored_axes)
    if factored_axes not in ("largest", "last"):
        raise ValueError(f"{owner}: factored_axes must be 'largest' or 'last', "
                         f"got {factored_axes!r}")
    if floor is None:
        validation.positive(owner, "epsilon", epsilon)
    else:
        validation.non_negative(owner, "epsilon", epsilon)
        if not (isinstance(floor, str) and floor == "machine_epsilon"):
            if isinstance(floor, str):
                raise TypeError(f"{owner}: floor must be a number > 0, 'machine_epsilon' or "
                                 f"None, got {floor!r}")
            validation.positive(owner, "floor", floor)
            number = validation.real_number(owner, "floor", floor)
            if number is not None and number < _SMALLEST_FLOOR:
                raise ValueError(f"{owner}: floor must be at least 2**-63 (about 1.1e-19), so "
                                 f"that its square is a normal float32 and not 0, got {floor!r}")
    if not callable(decay_rate_fn):
        raise TypeError(f"{owner}: decay_rate_fn must be callable, got {decay_rate_fn!r}")

    def init_leaf(p):
        shape, dtype = tuple(getattr(p, "shape", ())), numerics.squares_dtype(_leaf_dtype(p))
        dims = _factored_dims(shape, factored, min_dim, factored_axes)
        if dims is None:
            full = tree.tree_full_like(p, 0, dtype, real=True)
            return _placeholder(p, dtype), _placeholder(p, dtype), full
        d1, d0 = dims
        row, col = _reduced_zeros(p, (d0,), dtype), _reduced_zeros(p, (d1,), dtype)
        return row, col, _placeholder(p, dtype)

    def init_fn(params):
        _refuse_flat(owner, params, "params")
        leaves, treedef = jax.tree.flatten(params, is_leaf=lambda x: x is None)
        states = [None if p is None or not tree.is_trainable(p) else init_leaf(p) for p in leaves]
        v_row, v_col, v = (treedef.unflatten([None if s is None else s[i] for s in states])
                           for i in range(3))
        return FactoredState(count=numerics.zero_count(), v_row=v_row, v_col=v_col, v=v)

    def decay_at(count):
        step = count if step_offset == 0 else jnp.maximum(count - step_offset, 0)
        decay = numerics.python_number(decay_rate_fn(step, decay_rate))
        if np.shape(decay) != ():
            raise ValueError(
                f"{owner}: decay_rate_fn must return one number (shape ()), got shape "
                f"{np.shape(decay)} from decay_rate_fn={decay_rate_fn!r}"
            )
        return decay

    def update_leaf(path, g, row, col, v, decay):
        dims = _factored_dims(g.shape, factored, min_dim, factored_axes)
        expected = (((1,), (1,), g.shape) if dims is None else
                    (_without(g.shape, dims[1]), _without(g.shape, dims[0]), (1,)))
        if (row.shape, col.shape, v.shape) != expected:
            raise _shape_error(owner, path, g.shape, row, col, v)
        g_c = numerics.upcast(g, v.dtype)
        real = numerics.real_dtype(g_c.dtype)
        squares = lax.add(numerics.abs_sq(g_c), numerics.operand(epsilon, real))
        f = None if floor is None else numerics.operand(_floor_value(floor, g.dtype), real)
        if dims is None:
            v_new = numerics.moment(decay, v.astype(real), squares)
            v_floored = v_new if f is None else jnp.maximum(v_new, f * f)
            update = g_c * lax.rsqrt(v_floored).astype(g_c.dtype)
            return numerics.store(update, g.dtype), row, col, v_new.astype(v.dtype)
        d1, d0 = dims
        row_new = numerics.moment(decay, row.astype(real), jnp.mean(squares, axis=d0))
        col_new = numerics.moment(decay, col.astype(real), jnp.mean(squares, axis=d1))
        row_axis = d1 - 1 if d1 > d0 else d1  # d1 in the row statistics, which lost d0
        if f is not None:  # torch's form: the estimate itself, floored, then its root
            row_mean = jnp.maximum(jnp.mean(row_new, axis=row_axis, keepdims=True), f)
            estimate = (jnp.expand_dims(row_new / row_mean, d0)
                        * jnp.expand_dims(col_new, d1))
            update = g_c * lax.rsqrt(jnp.maximum(estimate, f * f)).astype(g_c.dtype)
            return (numerics.store(update, g.dtype), row_new.astype(row.dtype),
                    col_new.astype(col.dtype), v)
        row_factor = lax.rsqrt(row_new / jnp.mean(row_new, axis=row_axis, keepdims=True))
        col_factor = lax.rsqrt(col_new)
        update = (g_c * jnp.expand_dims(row_factor, d0).astype(g_c.dtype)
                  * jnp.expand_dims(col_factor, d1).astype(g_c.dtype))
        return (numerics.store(update, g.dtype), row_new.astype(row.dtype),
                col_new.astype(col.dtype), v)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        _refuse_flat(owner, updates, "updates")
        is_none = lambda x: x is None  # noqa: E731
        if jax.tree.structure(state.v) != jax.tree.structure(updates):
            raise tree.structure_mismatch(owner, "state", state.v, updates)
        decay = decay_at(state.count)
        paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(updates, is_leaf=is_none)[0]]
        leaves, treedef = jax.tree.flatten(updates, is_leaf=is_none)
        rest = [treedef.flatten_up_to(s) for s in (state.v_row, state.v_col, state.v)]
        results = [
            None if g is None else update_leaf(path, jnp.asarray(g), row, col, v, decay)
            for path, g, row, col, v in zip(paths, leaves, *rest)
        ]
        new = [treedef.unflatten([None if r is None else r[i] for r in results]) for i in range(4)]
        count = numerics.safe_increment(state.count)
        return new[0], FactoredState(count=count, v_row=new[1], v_col=new[2], v=new[3])

    return GradientTransformation(init_fn, update_fn)
