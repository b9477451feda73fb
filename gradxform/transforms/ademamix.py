"""AdEMAMix and its simplified form: Adam's step with a slow momentum mixed in."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from gradxform.core import numerics, tree, validation
from gradxform.core.base import (
    GradientTransformation,
    ScalarOrSchedule,
    Updates,
    public_constructor,
)


class ScaleByAdemamixState(NamedTuple):
    """The step counts (of the fast moments, of the slow one), the two EMAs and the second moment.

    optax's ``contrib.ScaleByAdemamixState``, field for field.
    """

    count: jax.Array  # int32, shape (): debiases m1 and nu
    count_m2: jax.Array  # int32, shape (): the argument of the b3 and alpha schedules
    m1: Updates
    m2: Updates
    nu: Updates


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    """The step count, the accumulated momentum and the second moment.

    optax's ``contrib.ScaleBySimplifiedAdEMAMixState``, field for field.
    """

    t: jax.Array  # int32, shape ()
    m: Updates
    n: Updates


def _real_or_schedule(owner: str, name: str, value: Any) -> None:
    if not callable(value):
        validation.real_number(owner, name, value)


@public_constructor
def scale_by_ademamix(
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 6.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
) -> GradientTransformation:
    r"""Rescales updates by AdEMAMix: a fast and a slow EMA of the gradient over Adam's root.

    .. math::
        m^{(1)}_t = \beta_1 m^{(1)}_{t-1} + (1-\beta_1) g_t, \quad
        m^{(2)}_t = \beta_3(t) m^{(2)}_{t-1} + (1-\beta_3(t)) g_t, \quad
        \nu_t = \beta_2 \nu_{t-1} + (1-\beta_2) g_t^2, \\
        u_t = \frac{m^{(1)}_t / (1-\beta_1^t) + \alpha(t)\, m^{(2)}_t}
        {\sqrt{\nu_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}

    The slow EMA :math:`m^{(2)}` is not debiased, so that it fills slowly.
    :math:`\beta_3` and :math:`\alpha` may be schedules of the step count from
    0 (``count_m2``): the paper warms both up over the first steps. Same rule,
    defaults and state as ``optax.contrib.scale_by_ademamix``, whose
    :math:`\nu` is kept in ``mu_dtype`` too (here: its real counterpart).
    Pagliardini et al., 2024.

    Args:
      b1: :math:`\beta_1` in [0, 1), the fast EMA's decay.
      b2: :math:`\beta_2` in [0, 1), the second moment's decay.
      b3: :math:`\beta_3` in [0, 1], the slow EMA's decay, or a schedule.
      alpha: :math:`\alpha`, the slow EMA's weight, a real number or a schedule.
      eps: :math:`\epsilon \ge 0`, added outside the square root.
      eps_root: :math:`\epsilon_{root} \ge 0`, added inside the square root.
      mu_dtype: dtype of :math:`m^{(1)}`, :math:`m^{(2)}` and (its real part) of
        :math:`\nu`; None keeps the params' dtype.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_ademamix(b3=0.999, alpha=5.0), gx.scale_by_learning_rate(1e-3))
    """
    owner = "scale_by_ademamix"
    validation.decay_rate(owner, "b1", b1)
    validation.decay_rate(owner, "b2", b2)
    if not callable(b3):
        validation.decay_rate(owner, "b3", b3, allow_one=True)
    _real_or_schedule(owner, "alpha", alpha)
    validation.non_negative(owner, "eps", eps)
    validation.non_negative(owner, "eps_root", eps_root)
    validation.float_dtype(owner, "mu_dtype", mu_dtype)
    nu_dtype = None if mu_dtype is None else numerics.real_dtype(mu_dtype)

    def init_fn(params):
        return ScaleByAdemamixState(
            count=numerics.zero_count(), count_m2=numerics.zero_count(),
            m1=tree.tree_zeros_like(params, mu_dtype), m2=tree.tree_zeros_like(params, mu_dtype),
            nu=tree.tree_full_like(params, 0, nu_dtype, real=True))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.m1, updates)
        slow_decay = numerics.schedule_value(b3, state.count_m2, owner, "b3")
        weight = numerics.schedule_value(alpha, state.count_m2, owner, "alpha")
        count = numerics.safe_increment(state.count)
        corrections = numerics.per_dtype(lambda dtype: (
            numerics.bias_correction(b1, count, dtype), numerics.bias_correction(b2, count, dtype)))

        def leaf(g, m1, m2, nu):
            dtype = numerics.compute_dtype(g.dtype, m1.dtype, m2.dtype, nu.dtype)
            real = numerics.real_dtype(dtype)
            g_c = g.astype(dtype)
            m1_new = numerics.moment(b1, m1.astype(dtype), g_c)
            m2_new = numerics.moment(slow_decay, m2.astype(dtype), g_c)
            nu_new = numerics.moment(b2, nu.astype(real), numerics.abs_sq(g_c))
            correction_1, correction_2 = corrections(real)
            numerator = m1_new / correction_1.astype(dtype) + (
                numerics.hyperparameter(weight, dtype) * m2_new)
            update = numerics.root_scaled(numerator, nu_new / correction_2, eps, eps_root)
            return (numerics.store(update, g.dtype), numerics.store(m1_new, m1.dtype),
                    numerics.store(m2_new, m2.dtype), nu_new.astype(nu.dtype))

        updates, m1, m2, nu = tree.tree_map_multi(leaf, 4, updates, state.m1, state.m2, state.nu)
        return updates, ScaleByAdemamixState(
            count=count, count_m2=numerics.safe_increment(state.count_m2), m1=m1, m2=m2, nu=nu)

    return GradientTransformation(init_fn, update_fn)


@public_constructor
def scale_by_simplified_ademamix(
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> GradientTransformation:
    r"""Rescales updates by simplified AdEMAMix: one accumulated momentum plus the gradient.

    .. math::
        m_t = \beta_1 m_{t-1} + g_t, \quad
        n_t = \beta_2 n_{t-1} + (1-\beta_2) g_t^2, \qquad
        u_t = \frac{m_t + \alpha(t)\, g_t}{\sqrt{n_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}

    :math:`m` is a sum, not an average (no :math:`1-\beta_1`), and is not
    debiased; :math:`\alpha = 0` gives Adam with a rescaled learning rate and
    :math:`\beta_1`. :math:`\alpha` may be a schedule of the step count from 0.
    Same rule, defaults and state fields as
    ``optax.contrib.scale_by_simplified_ademamix``; :math:`n` of complex
    gradients holds :math:`|g|^2` (optax :math:`g^2`). Morwani et al., 2025.

    Args:
      b1: :math:`\beta_1` in [0, 1].
      b2: :math:`\beta_2` in [0, 1).
      alpha: :math:`\alpha`, the current gradient's weight, a real number or a schedule.
      eps: :math:`\epsilon \ge 0`, added outside the square root.
      eps_root: :math:`\epsilon_{root} \ge 0`, added inside the square root.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_simplified_ademamix(alpha=2.0), gx.scale_by_learning_rate(1e-4))
    """
    owner = "scale_by_simplified_ademamix"
    validation.decay_rate(owner, "b1", b1, allow_one=True)
    validation.decay_rate(owner, "b2", b2)
    _real_or_schedule(owner, "alpha", alpha)
    validation.non_negative(owner, "eps", eps)
    validation.non_negative(owner, "eps_root", eps_root)

    def init_fn(params):
        return ScaleBySimplifiedAdEMAMixState(
            t=numerics.zero_count(), m=tree.tree_zeros_like(params),
            n=tree.tree_full_like(params, 0, real=True))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.m, updates)
        weight = numerics.schedule_value(alpha, state.t, owner, "alpha")
        t = numerics.safe_increment(state.t)
        corrections = numerics.per_dtype(lambda dtype: numerics.bias_correction(b2, t, dtype))

        def leaf(g, m, n):
            dtype = numerics.compute_dtype(g.dtype, m.dtype, n.dtype)
            real = numerics.real_dtype(dtype)
            g_c = g.astype(dtype)
            m_new = g_c + numerics.hyperparameter(b1, dtype) * m.astype(dtype)
            n_new = numerics.moment(b2, n.astype(real), numerics.abs_sq(g_c))
            numerator = m_new + numerics.hyperparameter(weight, dtype) * g_c
            update = numerics.root_scaled(numerator, n_new / corrections(real), eps, eps_root)
            return (numerics.store(update, g.dtype), numerics.store(m_new, m.dtype),
                    n_new.astype(n.dtype))

        updates, m, n = tree.tree_map_multi(leaf, 3, updates, state.m, state.n)
        return updates, ScaleBySimplifiedAdEMAMixState(t=t, m=m, n=n)

    return GradientTransformation(init_fn, update_fn)
