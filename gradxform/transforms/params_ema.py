"""An exponential moving average of the parameters (Keras's ``use_ema``), and reading it back."""

from __future__ import annotations

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


def finalize_params(params: Params, opt_state: Any) -> Params:
    r"""The parameters with their moving averages substituted in, for evaluation or export.

    .. math::
        \theta_i \leftarrow a_i \quad \text{for every average } a \text{ found in the state}

    Searches ``opt_state`` (however deeply nested, e.g. inside a chain or a loss
    scaling wrapper) for `params_ema` states and returns ``params`` with their
    averages in place of the parameters, cast to each parameter's dtype: Keras's
    ``finalize_variable_values``. Returns ``params`` unchanged when the state
    holds no average. When there are several, later ones in the state win.

    Args:
      params: the current parameters.
      opt_state: the optimizer state.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> params = {"w": jnp.ones(2)}
      >>> gx.finalize_params(params, gx.adam(1e-3).init(params))["w"]  # no average: unchanged
      Array([1., 1.], dtype=float32)
    """
    found = [
        node
        for node in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, ParamsEmaState))
        if isinstance(node, ParamsEmaState)
    ]
    for state in found:
        if jax.tree.structure(state.ema) != jax.tree.structure(params):
            raise ValueError(
                "finalize_params: the params' tree structure does not match the average's in "
                f"the state.\n  params:  {jax.tree.structure(params)}\n"
                f"  average: {jax.tree.structure(state.ema)}"
            )
        params = tree.tree_map_skip_none(
            lambda p, a: a.astype(numerics.leaf_dtype(p)), params, state.ema
        )
    return params
