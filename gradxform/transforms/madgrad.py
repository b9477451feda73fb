"""MADGRAD: momentumised dual averaging with a cube-root adaptive denominator."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradxform.core import numerics, tree, validation
from gradxform.core.base import (
    GradientTransformation,
    Params,
    ScalarOrSchedule,
    Updates,
    public_constructor,
)


class MadgradState(NamedTuple):
    """The step count, the weighted sums of squared gradients and of gradients, the initial params.

    optax's ``contrib.MadgradState``, field for field.
    """

    count: jax.Array  # int32, shape ()
    grad_sum_sq: Updates  # G_k, real
    s: Updates  # s_k
    x0: Params  # x_0


def _initial_copy(param):
    """``x_0``: the param itself, strongly typed (a restore target's ``ShapeDtypeStruct``: zeros)."""
    if not tree.is_trainable(param):
        return None
    if isinstance(param, jax.ShapeDtypeStruct):
        return tree.tree_zeros_like(param)
    dtype = param.dtype if hasattr(param, "dtype") else numerics.leaf_dtype(param)
    return jnp.asarray(param, dtype=dtype)


@public_constructor
def scale_by_madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    eps: float = 1e-6,
) -> GradientTransformation:
    r"""MADGRAD's step: dual averaging from the initial params, then a momentum average.

    .. math::
        \lambda_k = (\eta_k + \epsilon)\sqrt{k + 1}, \quad
        s_{k+1} = s_k + \lambda_k g_k, \quad G_{k+1} = G_k + \lambda_k g_k^2, \\
        z_{k+1} = x_0 - \frac{s_{k+1}}{G_{k+1}^{1/3} + \epsilon}, \qquad
        u_k = \big((1-c)\, z_{k+1} + c\, x_k\big) - x_k

    with :math:`c` the momentum and :math:`k` the step count from 0. The
    update already holds the learning rate, and its sign: apply it as it is.
    :math:`\epsilon` is added to the learning rate as in the authors' PyTorch
    code. It needs the params (:math:`x_k`) in ``update``; :math:`x_0` are the
    params given to ``init``. Same rule, defaults and state as
    ``optax.contrib.scale_by_madgrad``, computed in at least float32;
    :math:`G` is real (for complex gradients, :math:`|g|^2`; optax :math:`g^2`)
    and float32 for float16 params. Defazio and Jelassi, 2021.

    Args:
      learning_rate: :math:`\eta \ge 0`, a number or a schedule of the step count.
      momentum: :math:`c` in [0, 1).
      eps: :math:`\epsilon > 0`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.scale_by_madgrad(1e-2)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    """
    owner = "scale_by_madgrad"
    validation.scalar_or_schedule(owner, "learning_rate", learning_rate)
    validation.decay_rate(owner, "momentum", momentum)
    validation.positive(owner, "eps", eps)

    def init_fn(params):
        return MadgradState(
            count=numerics.zero_count(), grad_sum_sq=tree.tree_full_like(params, 0, real=True),
            s=tree.tree_zeros_like(params),
            x0=jax.tree.map(_initial_copy, params))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{owner}: update needs params, got params=None")
        tree.check_same_structure(owner, "state", state.s, updates)
        tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        rate = numerics.schedule_value(learning_rate, state.count, owner, "learning_rate")
        steps = lax.add(state.count.astype(jnp.float32), np.float32(1))

        def weight(dtype):
            # (eta + eps) sqrt(k + 1), in float32 as optax computes it (or wider).
            shifted = numerics.hyperparameter(rate, dtype) + numerics.hyperparameter(eps, dtype)
            return shifted * jnp.sqrt(steps.astype(dtype))

        weights = numerics.per_dtype(weight)

        def leaf(g, grad_sum_sq, s, x0, x):
            dtype = numerics.compute_dtype(g.dtype, s.dtype, jnp.asarray(x).dtype)
            real = numerics.real_dtype(dtype)
            lam = weights(real)
            g_c = g.astype(dtype)
            sum_sq = grad_sum_sq.astype(real) + lam * numerics.abs_sq(g_c)
            s_new = s.astype(dtype) + lam.astype(dtype) * g_c
            sigma = jnp.cbrt(sum_sq) + numerics.operand(eps, real)
            z = x0.astype(dtype) - s_new / sigma.astype(dtype)
            x_c = jnp.asarray(x).astype(dtype)
            c = numerics.hyperparameter(momentum, dtype)
            moved = (1 - c) * z + c * x_c
            return (numerics.store(moved - x_c, g.dtype), sum_sq.astype(grad_sum_sq.dtype),
                    numerics.store(s_new, s.dtype))

        updates, grad_sum_sq, s = tree.tree_map_multi(
            leaf, 3, updates, state.grad_sum_sq, state.s, state.x0, params)
        return updates, MadgradState(count=numerics.safe_increment(state.count),
                                     grad_sum_sq=grad_sum_sq, s=s, x0=state.x0)

    return GradientTransformation(init_fn, update_fn)
