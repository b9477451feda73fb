"""Rprop: a step size per coordinate, grown while the gradient keeps its sign, shrunk when it flips.

Only the signs of the gradients are used. Arithmetic runs in at least float32
and the step sizes and last updates are stored in the params' dtype, the
updates in the gradients' dtype. The rule is elementwise: it runs unchanged
on `flat_tree` buffers and keeps sharded leaves sharded.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class ScaleByRpropState(NamedTuple):
    """The step size of each coordinate and the update of the previous step.

    optax's ``ScaleByRpropState``, field for field. After the same gradients
    it holds the same numbers as optax's.
    """

    step_sizes: Updates
    prev_updates: Updates


def _rprop_rule(g, step, prev, eta_minus, eta_plus, min_step_size, max_step_size):
    """One real leaf: ``(update, new step size)``, all arrays of one real dtype."""
    dtype = g.dtype
    # The sign of g * prev, computed from the signs: exact, even where the product
    # would underflow to 0 or overflow.
    agreement = lax.mul(lax.sign(g), lax.sign(prev))
    zero = lax.full_like(agreement, 0)
    factor = jnp.where(lax.gt(agreement, zero), numerics.operand(eta_plus, dtype),
                       numerics.operand(eta_minus, dtype))
    scaled = lax.mul(step, factor)
    bounded = jnp.minimum(jnp.maximum(scaled, numerics.operand(min_step_size, dtype)),
                          numerics.operand(max_step_size, dtype))
    new_step = lax.select(lax.eq(agreement, zero), step, bounded)
    update = lax.select(lax.lt(agreement, zero), zero, lax.mul(new_step, lax.sign(g)))
    return update, new_step


@public_constructor
def scale_by_rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
) -> GradientTransformation:
    r"""Rescales updates by Rprop: per-coordinate step sizes adapted to sign changes.

    With :math:`s_t = \operatorname{sign}(g_t \, u_{t-1})` (:math:`u_0 = 0`):

    .. math::
        \Delta_t = \begin{cases}
          \min(\eta^+ \Delta_{t-1}, \Delta_{max}) & s_t > 0 \\
          \max(\eta^- \Delta_{t-1}, \Delta_{min}) & s_t < 0 \\
          \Delta_{t-1} & s_t = 0 \end{cases}, \qquad
        u_t = \begin{cases} 0 & s_t < 0 \\ \Delta_t \operatorname{sign}(g_t)
          & \text{otherwise} \end{cases}, \qquad \Delta_0 = \eta

    The variant without weight backtracking (iRprop-, Igel and Hüsken, 2003):
    after a sign flip the update is 0, and the next step is then taken with
    the reduced :math:`\Delta` whatever the gradient's sign. The sign flip of
    descent comes later (``rprop`` ends with ``scale(-1)``). Same arguments,
    defaults and state as ``optax.scale_by_rprop``, and the same state values,
    but each step returns its own :math:`u_t`, as ``torch.optim.Rprop``
    applies it: optax 0.2.8 returns :math:`u_{t-1}` (zeros at the first step,
    optax#1725). A complex entry is treated as two real coordinates, its real
    and imaginary parts, each with its own step size. Riedmiller and Braun,
    1993, "A direct adaptive method for faster backpropagation learning: the
    RPROP algorithm".

    Args:
      learning_rate: :math:`\eta > 0`, the initial step size :math:`\Delta_0`.
      eta_minus: :math:`\eta^-` in (0, 1], the factor after a sign flip.
      eta_plus: :math:`\eta^+ \ge 1`, the factor while the sign holds.
      min_step_size: :math:`\Delta_{min} \ge 0`, the smallest step size.
      max_step_size: :math:`\Delta_{max} > 0`, the largest step size, at least
        ``min_step_size``.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_rprop(learning_rate=1e-3), gx.scale(-1.0))
    """
    owner = "scale_by_rprop"
    validation.positive(owner, "learning_rate", learning_rate)
    validation.in_range(owner, "eta_minus", eta_minus, low=0.0, high=1.0, low_open=True)
    validation.in_range(owner, "eta_plus", eta_plus, low=1.0)
    validation.non_negative(owner, "min_step_size", min_step_size)
    validation.positive(owner, "max_step_size", max_step_size)
    low = validation.real_number(owner, "min_step_size", min_step_size)
    high = validation.real_number(owner, "max_step_size", max_step_size)
    if low is not None and high is not None and low > high:
        raise ValueError(
            f"{owner}: max_step_size must be at least min_step_size={min_step_size!r}, "
            f"got max_step_size={max_step_size!r}"
        )

    def init_fn(params):
        sizes = tree.tree_full_like(params, learning_rate)
        # A complex entry is two coordinates: the same initial step for both parts.
        sizes = jax.tree.map(
            lambda s: lax.complex(jnp.real(s), jnp.real(s)) if jnp.iscomplexobj(s) else s, sizes
        )
        return ScaleByRpropState(step_sizes=sizes, prev_updates=tree.tree_zeros_like(params))

    def leaf(g, step, prev):
        dtype = numerics.compute_dtype(g.dtype, step.dtype, prev.dtype)
        g_c, step_c, prev_c = g.astype(dtype), step.astype(dtype), prev.astype(dtype)
        hyper = (eta_minus, eta_plus, min_step_size, max_step_size)
        if jnp.iscomplexobj(g_c):
            parts = [_rprop_rule(part(g_c), part(step_c), part(prev_c), *hyper)
                     for part in (jnp.real, jnp.imag)]
            update = lax.complex(parts[0][0], parts[1][0])
            new_step = lax.complex(parts[0][1], parts[1][1])
        else:
            update, new_step = _rprop_rule(g_c, step_c, prev_c, *hyper)
        return (
            numerics.store(update, g.dtype),
            numerics.store(new_step, step.dtype),
            numerics.store(update, prev.dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.step_sizes, updates)
        updates, steps, prev = tree.tree_map_multi(
            leaf, 3, updates, state.step_sizes, state.prev_updates
        )
        return updates, ScaleByRpropState(step_sizes=steps, prev_updates=prev)

    return GradientTransformation(init_fn, update_fn)
