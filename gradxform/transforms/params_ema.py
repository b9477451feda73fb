"""Averages of the parameters, and reading them back with `finalize_params`.

`params_ema` keeps an exponential moving average (Keras's ``use_ema``);
`params_average` a running mean from a given step on (torch's ``ASGD``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, Params, public_constructor
from gradxform.core.primitives import apply_updates


class ParamsEmaState(NamedTuple):
    """The number of calls so far and the average of the parameters."""

    count: jax.Array  # int32, shape (): calls so far (saturating)
    ema: Params
    phase: jax.Array  # int32, shape (): calls modulo calls_per_step * overwrite_frequency


class ParamsAverageState(NamedTuple):
    """The number of calls so far and the running mean of the parameters."""

    count: jax.Array  # int32, shape (): calls so far (saturating)
    average: Params


@public_constructor
def params_ema(
    decay: float = 0.99,
    overwrite_frequency: int | None = None,
    *,
    calls_per_step: int = 1,
    ema_dtype: Any = None,
) -> GradientTransformation:
    r"""Keeps an exponential moving average of the parameters; optionally copies it into them.

    With :math:`\theta'_t = \theta_t + u_t` the parameters after this step's
    update and :math:`k = \lfloor c / \text{calls\_per\_step} \rfloor` for the
    call count :math:`c` (from 0):

    .. math::
        \mu_k = \begin{cases} 0 & k = 0 \\ \beta & k > 0 \end{cases}, \qquad
        a \leftarrow \mu_k\, a + (1 - \mu_k)\, \theta'_t, \qquad
        u_t \leftarrow a - \theta_t \;\text{ if } (k + 1) \bmod f = 0

    This is Keras's ``use_ema``: the average starts as a copy of the first
    updated parameters, and every :math:`f` steps (``overwrite_frequency``) the
    parameters are replaced by it, which this transformation emits as the
    update. Put it last in a chain, after the learning rate, so that it sees the
    final update. `finalize_params` reads the average back out of the state.

    The state keeps :math:`c` modulo ``calls_per_step`` :math:`\cdot f`, so overwrites stay
    periodic after the saturating count stops at 2**31 - 1.

    Keras counts steps in completed optimizer updates. Under gradient
    accumulation over :math:`n` micro-steps the average still moves on every
    call; to reproduce that, put this transformation after
    `accumulate_gradients` with ``calls_per_step=n``.

    Unlike `ema`, which averages the *updates*, this averages the parameters.

    Args:
      decay: :math:`\beta \in [0, 1]`, Keras's ``ema_momentum``.
      overwrite_frequency: :math:`f`, an int >= 1, or None to never overwrite.
      calls_per_step: how many calls make one step of the count :math:`k`.
      ema_dtype: dtype of the average; None keeps each parameter's dtype.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.chain(gx.adam(1e-3), gx.params_ema(decay=0.999))
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
      >>> params = gx.apply_updates(params, updates)
      >>> eval_params = gx.finalize_params(params, state)
    """
    owner = "params_ema"
    validation.decay_rate(owner, "decay", decay, allow_one=True)
    overwrite_frequency = validation.positive_int(
        owner, "overwrite_frequency", overwrite_frequency, allow_none=True
    )
    calls_per_step = validation.positive_int(owner, "calls_per_step", calls_per_step)
    validation.float_dtype(owner, "ema_dtype", ema_dtype)
    # Overwrites follow the phase within their period, not the saturating count.
    period = calls_per_step * (overwrite_frequency or 1)
    if period > numerics.INT32_MAX:
        raise ValueError(
            f"{owner}: calls_per_step * overwrite_frequency must be at most 2**31 - 1, got "
            f"calls_per_step={calls_per_step!r}, overwrite_frequency={overwrite_frequency!r}"
        )

    def init_fn(params):
        return ParamsEmaState(
            count=numerics.zero_count(),
            ema=tree.tree_zeros_like(params, ema_dtype),
            phase=numerics.zero_count(),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{owner}: update needs params, got params=None")
        tree.check_same_structure(owner, "state", state.ema, updates)
        tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        step = state.count // calls_per_step
        new_params = apply_updates(params, updates)

        def average(a, p_new):
            dtype = numerics.compute_dtype(p_new.dtype, a.dtype)
            # As Keras: momentum = float(step != 0) * decay, in the variable's dtype.
            momentum = (step != 0).astype(dtype) * numerics.hyperparameter(decay, dtype)
            return (momentum * a.astype(dtype) + (1 - momentum) * p_new.astype(dtype)).astype(a.dtype)

        # Over the average's leaves: a parameter without one (an integer leaf) is not averaged.
        ema = tree.tree_map_skip_none(average, state.ema, new_params)
        if overwrite_frequency is not None:
            overwrite = state.phase // calls_per_step == overwrite_frequency - 1

            def replace(u, p, a):
                if p is None or a is None:
                    return u
                p = jnp.asarray(p)
                dtype = numerics.compute_dtype(u.dtype, p.dtype, a.dtype)
                to_average = (a.astype(dtype) - p.astype(dtype)).astype(u.dtype)
                return jnp.where(overwrite, to_average, u)

            updates = tree.tree_map_skip_none(replace, updates, params, ema)
        return updates, ParamsEmaState(
            count=numerics.safe_increment(state.count),
            ema=ema,
            phase=numerics.cyclic_increment(state.phase, period),
        )

    return GradientTransformation(init_fn, update_fn)


def _mean_weight(t0: Any, count: jax.Array) -> jax.Array:
    """``1 / max(1, count - t0)`` in float32, with ``count - t0`` exact for a Python ``t0``.

    The integer part of a Python ``t0`` is subtracted in int32, so that the
    difference stays exact for counts past float32's 2**24.
    """
    t0 = numerics.python_number(t0)
    if isinstance(t0, (int, float)):
        whole = min(math.floor(t0), numerics.INT32_MAX)
        excess = (count - whole).astype(jnp.float32) - (t0 - whole)
    else:
        excess = count.astype(jnp.float32) - jnp.asarray(t0).astype(jnp.float32)
    return 1 / jnp.maximum(excess, 1)


@public_constructor
def params_average(t0: float = 0.0, *, average_dtype: Any = None) -> GradientTransformation:
    r"""Keeps the running mean of the parameters from step :math:`t_0` on (Polyak averaging).

    With :math:`\theta'_k = \theta_k + u_k` the parameters after the update of
    call :math:`k` (from 0):

    .. math::
        w_k = \frac{1}{\max(1,\, k - t_0)}, \qquad
        a \leftarrow a + w_k\, (\theta'_k - a) \quad (a \leftarrow \theta'_k \text{ where } w_k = 1)

    For an integer :math:`t_0`, after call :math:`k > t_0 + 1` the average is
    the mean of :math:`\theta'_{t_0+1}, \dots, \theta'_k`; until then it is a
    copy of the latest parameters. This is ``torch.optim.ASGD``'s ``ax``
    (``t0`` is its argument, with the same count: its step :math:`k + 1`).
    The updates pass through unchanged: put it last in a chain, after the
    learning rate, so that it sees the final update. `finalize_params` reads
    the average out of the state. Polyak and Juditsky, 1992, "Acceleration of
    stochastic approximation by averaging".

    Args:
      t0: :math:`t_0 \ge 0`, the step after which averaging starts.
      average_dtype: dtype of the average; None keeps each parameter's dtype.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.chain(gx.sgd(0.1), gx.params_average(t0=100))
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.ones(3)}, state, params)
      >>> params = gx.apply_updates(params, updates)
      >>> eval_params = gx.finalize_params(params, state)
    """
    owner = "params_average"
    validation.non_negative(owner, "t0", t0)
    validation.float_dtype(owner, "average_dtype", average_dtype)

    def init_fn(params):
        return ParamsAverageState(count=numerics.zero_count(),
                                  average=tree.tree_zeros_like(params, average_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{owner}: update needs params, got params=None")
        tree.check_same_structure(owner, "state", state.average, updates)
        tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        weight = _mean_weight(t0, state.count)
        new_params = apply_updates(params, updates)

        def average(a, p_new):
            dtype = numerics.compute_dtype(p_new.dtype, a.dtype)
            a_c, p_c = a.astype(dtype), p_new.astype(dtype)
            moved = a_c + weight.astype(dtype) * (p_c - a_c)
            # torch copies where the weight is 1: a + (p - a) can miss p by a rounding.
            return jnp.where(weight == 1, p_c, moved).astype(a.dtype)

        average_tree = tree.tree_map_skip_none(average, state.average, new_params)
        return updates, ParamsAverageState(count=numerics.safe_increment(state.count),
                                           average=average_tree)

    return GradientTransformation(init_fn, update_fn)


def finalize_params(params: Params, opt_state: Any) -> Params:
    r"""The parameters with their moving averages substituted in, for evaluation or export.

    .. math::
        \theta_i \leftarrow a_i \quad \text{for every average } a \text{ found in the state}

    Searches ``opt_state`` (however deeply nested, e.g. inside a chain or a loss
    scaling wrapper) for `params_ema` and `params_average` states and returns
    ``params`` with their averages in place of the parameters, cast to each
    parameter's dtype: Keras's ``finalize_variable_values``. Returns ``params``
    unchanged when the state holds no average. When there are several, later
    ones in the state win.

    Args:
      params: the current parameters.
      opt_state: the optimizer state.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> params = {"w": jnp.ones(2)}
      >>> gx.finalize_params(params, gx.adam(1e-3).init(params))["w"]  # no average: unchanged
      Array([1., 1.], dtype=float32)
    """
    kinds = (ParamsEmaState, ParamsAverageState)
    found = [
        node.ema if isinstance(node, ParamsEmaState) else node.average
        for node in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, kinds))
        if isinstance(node, kinds)
    ]
    for average in found:
        if jax.tree.structure(average) != jax.tree.structure(params):
            raise ValueError(
                "finalize_params: the params' tree structure does not match the average's in "
                f"the state.\n  params:  {jax.tree.structure(params)}\n"
                f"  average: {jax.tree.structure(average)}"
            )
        params = tree.tree_map_skip_none(
            lambda p, a: a.astype(numerics.leaf_dtype(p)), params, average
        )
    return params
