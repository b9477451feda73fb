"""Gradient accumulation over micro-steps: Keras's form and optax's ``MultiSteps``.

Both keep one accumulator the size of the gradients, and both run the inner
transformation (through ``lax.cond``) only on the steps that update; on the
others they emit ``-0.0``, which leaves every parameter bit-for-bit unchanged.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import control, numerics, tree, validation
from gradxform.core.base import (
    GradientTransformation, Params, Updates, describe, public_constructor,
)


class AccumulateGradientsState(NamedTuple):
    """Calls so far, the sum of this window's gradients, and the inner state."""

    count: jax.Array  # int32, shape (): micro-steps so far (saturating)
    mini_step: jax.Array  # int32, shape (): micro-steps in the current window, in [0, every_k)
    acc_grads: Updates
    inner_state: Any


class MultiStepsState(NamedTuple):
    """optax's ``MultiStepsState``, field for field."""

    mini_step: jax.Array  # int32, shape (): micro-steps in the current window
    gradient_step: jax.Array  # int32, shape (): inner updates so far
    inner_opt_state: Any
    acc_grads: Updates
    skip_state: Any = ()


def _accumulate(acc: jax.Array, g: jax.Array, weight: Any = None) -> jax.Array:
    """``acc + g`` (or the running mean ``acc + (g - acc) / weight``), left in the compute dtype."""
    dtype = numerics.compute_dtype(acc.dtype, g.dtype)
    acc_c, g_c = acc.astype(dtype), g.astype(dtype)
    return acc_c + g_c if weight is None else acc_c + (g_c - acc_c) / weight.astype(dtype)


@public_constructor
def accumulate_gradients(
    inner: GradientTransformation,
    every_k: int,
    *,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    r"""Sums the gradients of ``every_k`` micro-steps and updates with their mean (Keras's form).

    With :math:`c` the call count (from 0; the state keeps :math:`c \bmod k`, so
    windows stay aligned after the saturating count stops at 2**31 - 1) and
    :math:`A` the accumulator:

    .. math::
        \begin{cases}
        u = \mathrm{inner}\!\left((g + A)/k\right),\; A \leftarrow 0 & (c + 1) \bmod k = 0 \\
        u = -0,\; A \leftarrow A + g & \text{otherwise}
        \end{cases}

    This is Keras's ``gradient_accumulation_steps``: the inner transformation
    (clipping, weight decay, the optimizer) runs once per window on the mean
    gradient, so its own counters count real updates (Adam's bias correction
    uses :math:`t = \lfloor (c+1)/k \rfloor`). Keras also moves its parameter
    average on every call and evaluates learning-rate schedules at the raw call
    count; to reproduce that, put ``params_ema(..., calls_per_step=k)`` after
    this transformation and wrap schedules in ``gx.schedules.AtLastMicroStep(schedule, k)``
    (the ``gx.keras`` presets do both).

    Args:
      inner: the transformation applied to each window's mean gradient.
      every_k: :math:`k \ge 1`, micro-steps per update.
      accumulator_dtype: dtype of :math:`A`; None keeps each parameter's dtype; complex
        parameters get its complex counterpart.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.accumulate_gradients(gx.adam(1e-3), every_k=4)
    """
    owner = "accumulate_gradients"
    validation.transformation(owner, "inner", inner)
    every_k = validation.positive_int(owner, "every_k", every_k)
    validation.float_dtype(owner, "accumulator_dtype", accumulator_dtype)

    def init_fn(params):
        return AccumulateGradientsState(
            count=numerics.zero_count(),
            mini_step=numerics.zero_count(),
            acc_grads=tree.tree_zeros_like(params, accumulator_dtype),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        tree.check_same_structure(owner, "state", state.acc_grads, updates)
        is_update = state.mini_step + 1 == every_k

        def mean(g, acc):
            dtype = numerics.compute_dtype(g.dtype, acc.dtype)
            return numerics.store((g.astype(dtype) + acc.astype(dtype)) / every_k, g.dtype)

        def means(inputs):
            return tree.tree_map_skip_none(mean, *inputs)

        new_updates, inner_state = control.update_or_hold(
            is_update, inner, (updates, state.acc_grads), state.inner_state, params, extra_args,
            prepare=means,
        )
        acc_grads = tree.tree_map_skip_none(
            lambda acc, g: jnp.where(is_update, 0, _accumulate(acc, g)).astype(acc.dtype),
            state.acc_grads,
            updates,
        )
        return new_updates, AccumulateGradientsState(
            count=numerics.safe_increment(state.count),
            mini_step=numerics.cyclic_increment(state.mini_step, every_k),
            acc_grads=acc_grads,
            inner_state=inner_state,
        )

    return GradientTransformation(init_fn, update_fn)


def skip_not_finite(
    updates: Updates, gradient_step: jax.Array, params: Params | None
) -> tuple[jax.Array, dict]:
    r"""A `multi_steps` skip rule: skip a micro-step whose gradients hold a NaN or an inf.

    .. math::
        \mathrm{skip} = \#\{x \in g : x \notin \mathbb{R}\} > 0

    Same as ``optax.skip_not_finite``.

    Args:
      updates: the micro-step's gradients.
      gradient_step: the number of inner updates so far (unused).
      params: the parameters (unused).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.multi_steps(gx.sgd(0.1), 4, should_skip_update_fn=gx.skip_not_finite)
    """
    del gradient_step, params
    num_not_finite = tree.tree_count_not_finite(updates)
    should_skip = num_not_finite > 0
    return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


def skip_large_updates(
    updates: Updates, gradient_step: jax.Array, params: Params | None, max_squared_norm: float
) -> tuple[jax.Array, dict]:
    r"""A `multi_steps` skip rule: skip a micro-step whose squared global norm is too large.

    .. math::
        \mathrm{skip} = \neg\left(\textstyle\sum_i \lVert g_i \rVert^2 < n_{max}\right)

    NaN norms are skipped too. Same as ``optax.skip_large_updates``; bind
    ``max_squared_norm`` with ``functools.partial``.

    Args:
      updates: the micro-step's gradients.
      gradient_step: the number of inner updates so far (unused).
      params: the parameters (unused).
      max_squared_norm: :math:`n_{max}`.

    Example:
      >>> import functools, gradxform as gx
      >>> skip = functools.partial(gx.skip_large_updates, max_squared_norm=100.0)
      >>> tx = gx.multi_steps(gx.sgd(0.1), 4, should_skip_update_fn=skip)
    """
    validation.positive("skip_large_updates", "max_squared_norm", max_squared_norm)
    del gradient_step, params
    norm_squared = tree.tree_squared_norm(updates)
    should_skip = jnp.logical_not(norm_squared < max_squared_norm)
    return should_skip, {"should_skip": should_skip, "norm_squared": norm_squared}


def _never_skip(updates, gradient_step, params):
    del updates, gradient_step, params
    return jnp.zeros([], jnp.bool_), ()


class MultiSteps(GradientTransformation):
    r"""optax's ``MultiSteps`` object: `multi_steps` with ``inner_opt``, ``has_updated`` and
    ``gradient_transformation()``.

    ``gx.MultiSteps(opt, every_k_schedule, ...)`` takes ``optax.MultiSteps``'s
    arguments and returns what ``gx.multi_steps(opt, every_k_schedule, ...)``
    returns: a `GradientTransformation` (``init``, ``update``, ``repr``,
    ``to_config``) with optax's object API on top. ``has_updated`` is True right
    after the micro-step that emitted an update (:math:`m` the micro-step within
    the window, :math:`s` the inner update count):

    .. math::
        \mathrm{has\_updated}(state) = (m = 0) \wedge (s > 0)

    Args:
      opt: the transformation applied to the accumulated gradients (`multi_steps`'s ``inner``).
      every_k_schedule: micro-steps per update, an int >= 1 or a function of the
        inner update count.
      use_grad_mean: average the micro-steps (True) or sum them.
      should_skip_update_fn: ``(updates, gradient_step, params) -> (bool,
        skip_state)``, e.g. `skip_not_finite`; None never skips.
      accumulator_dtype: dtype of the accumulated gradients.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.MultiSteps(gx.sgd(0.1), every_k_schedule=2)
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> _, state = tx.update(params, state, params)
      >>> bool(tx.has_updated(state))
      False
      >>> _, state = tx.update(params, state, params)
      >>> bool(tx.has_updated(state))
      True
    """

    def __new__(
        cls,
        opt: GradientTransformation,
        every_k_schedule: int | Callable[[jax.Array], Any],
        use_grad_mean: bool = True,
        should_skip_update_fn: Callable | None = None,
        accumulator_dtype: Any = jnp.float32,
    ) -> MultiSteps:
        pair = _multi_steps_pair(
            "MultiSteps", "opt", opt, every_k_schedule, use_grad_mean, should_skip_update_fn,
            accumulator_dtype,
        )
        arguments = dict(zip(inspect.signature(multi_steps).parameters, (
            opt, every_k_schedule, use_grad_mean, should_skip_update_fn, accumulator_dtype)))
        return _as_multi_steps(describe(pair, "multi_steps", arguments), multi_steps)

    @property
    def inner_opt(self) -> GradientTransformation:
        """The transformation applied to the accumulated gradients, as given."""
        return self.hyperparams["inner"]

    def has_updated(self, state: MultiStepsState) -> jax.Array:
        """True (a bool scalar array) when the micro-step that made ``state`` emitted an update."""
        if not all(hasattr(state, field) for field in ("mini_step", "gradient_step")):
            raise TypeError(
                "MultiSteps.has_updated: state must be the MultiStepsState that this "
                f"transformation's init or update returned, got a {type(state).__name__}"
            )
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> MultiSteps:
        """The transformation itself (in optax, a ``GradientTransformation`` of the object)."""
        return self


@public_constructor
def multi_steps(
    inner: GradientTransformation,
    every_k_schedule: int | Callable[[jax.Array], Any],
    use_grad_mean: bool = True,
    should_skip_update_fn: Callable | None = None,
    accumulator_dtype: Any = jnp.float32,
) -> MultiSteps:
    r"""Accumulates ``k`` micro-steps, then applies ``inner`` once (optax's ``MultiSteps``).

    With :math:`m` the micro-step within the window and :math:`k = k(s)` for the
    inner update count :math:`s`:

    .. math::
        A \leftarrow A + (g - A)/(m + 1) \;(\text{mean}) \text{ or } A + g, \qquad
        u = \begin{cases} \mathrm{inner}(A),\; A \leftarrow 0 & m = k - 1 \\
        -0 & \text{otherwise} \end{cases}

    Same arguments, state (`MultiStepsState`) and numbers as ``optax.MultiSteps``;
    unlike it, the inner update is only computed on the steps that emit it. A
    micro-step rejected by ``should_skip_update_fn`` changes nothing but the
    ``skip_state``. Schedules inside ``inner`` see the inner update count. What
    it returns is a `MultiSteps`, so it also has optax's ``inner_opt``,
    ``has_updated(state)`` and ``gradient_transformation()``.

    Args:
      inner: the transformation applied to the accumulated gradients.
      every_k_schedule: :math:`k`, an int >= 1, or a function of the inner
        update count returning it.
      use_grad_mean: average the micro-steps (True) or sum them.
      should_skip_update_fn: ``(updates, gradient_step, params) -> (bool,
        skip_state)``, e.g. `skip_not_finite`; None never skips.
      accumulator_dtype: dtype of :math:`A` (its complex counterpart for complex parameters).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.multi_steps(gx.adam(1e-3), every_k_schedule=4)
    """
    return _multi_steps_pair(
        "multi_steps", "inner", inner, every_k_schedule, use_grad_mean, should_skip_update_fn,
        accumulator_dtype,
    )


def _with_object_api(build: Callable[..., GradientTransformation]) -> Callable[..., MultiSteps]:
    """Makes the public constructor ``build`` return `MultiSteps` rebuilt by calling it again."""

    @functools.wraps(build)
    def multi_steps(*args, **kwargs):
        return _as_multi_steps(build(*args, **kwargs), multi_steps)

    return multi_steps


def _as_multi_steps(described: GradientTransformation, constructor: Callable) -> MultiSteps:
    """``described`` (its functions and description) as a `MultiSteps` built by ``constructor``."""
    tx = tuple.__new__(MultiSteps, described)
    vars(tx).update(vars(described))
    tx.constructor = constructor  # what to_config names and pickle calls
    return tx


multi_steps = _with_object_api(multi_steps)


def _multi_steps_pair(
    owner: str,
    inner_name: str,
    inner: GradientTransformation,
    every_k_schedule: int | Callable[[jax.Array], Any],
    use_grad_mean: bool,
    should_skip_update_fn: Callable | None,
    accumulator_dtype: Any,
) -> GradientTransformation:
    """`multi_steps`'s ``(init, update)``; ``owner`` and ``inner_name`` are what errors name."""
    validation.transformation(owner, inner_name, inner)
    if not callable(every_k_schedule):
        every_k_schedule = validation.positive_int(owner, "every_k_schedule", every_k_schedule)
    validation.boolean(owner, "use_grad_mean", use_grad_mean)
    validation.float_dtype(owner, "accumulator_dtype", accumulator_dtype)
    should_skip_fn = _never_skip if should_skip_update_fn is None else should_skip_update_fn
    if not callable(should_skip_fn):
        raise TypeError(f"{owner}: should_skip_update_fn must be callable, got {should_skip_fn!r}")

    def init_fn(params):
        gradient_step = numerics.zero_count()
        _, skip_state = should_skip_fn(tree.tree_zeros_like(params), gradient_step, params)
        return MultiStepsState(
            mini_step=numerics.zero_count(),
            gradient_step=gradient_step,
            inner_opt_state=inner.init(params),
            acc_grads=tree.tree_zeros_like(params, accumulator_dtype),
            skip_state=skip_state,
        )

    def update_fn(updates, state, params=None, **extra_args):
        tree.check_same_structure(owner, "state", state.acc_grads, updates)
        k = numerics.schedule_value(
            every_k_schedule, state.gradient_step, owner, "every_k_schedule")
        skip, skip_state = should_skip_fn(updates, state.gradient_step, params)
        if (jnp.dtype(skip.dtype), jnp.shape(skip)) != (jnp.dtype(jnp.bool_), ()):
            raise ValueError(
                f"{owner}: should_skip_update_fn must return a boolean scalar, got dtype "
                f"{skip.dtype} and shape {jnp.shape(skip)}"
            )
        weight = (state.mini_step + 1) if use_grad_mean else None
        summed = tree.tree_map_skip_none(
            lambda acc, g: _accumulate(acc, g, weight), state.acc_grads, updates
        )
        emit = jnp.logical_and(state.mini_step == k - 1, jnp.logical_not(skip))

        def cast_like_updates(inputs):
            return tree.tree_map_skip_none(lambda a, g: a.astype(g.dtype), *inputs)

        new_updates, inner_state = control.update_or_hold(
            emit, inner, (summed, updates), state.inner_opt_state, params, extra_args,
            prepare=cast_like_updates,
        )

        def next_accumulator(total, old):
            # As optax: the inner gets the sum in full precision, the state stores it rounded.
            return jnp.where(skip, old, jnp.where(emit, 0, total).astype(old.dtype))

        acc_grads = tree.tree_map_skip_none(next_accumulator, summed, state.acc_grads)
        mini_step = jnp.where(emit, 0, numerics.safe_increment(state.mini_step) % k)
        return new_updates, MultiStepsState(
            mini_step=jnp.where(skip, state.mini_step, mini_step).astype(jnp.int32),
            gradient_step=jnp.where(
                emit, numerics.safe_increment(state.gradient_step), state.gradient_step
            ),
            inner_opt_state=inner_state,
            acc_grads=acc_grads,
            skip_state=skip_state,
        )

    return GradientTransformation(init_fn, update_fn)
