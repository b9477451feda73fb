"""Prodigy: Adam whose step size is learnt from the distance travelled (D-Adaptation).

The step-size estimate and its numerator are one number for the whole tree,
reduced over every leaf in at least float32 and kept in float32 (float64
when a leaf is float64); the moments are elementwise and stored in the
params' dtype (the second moment real, float32 for float16 params). The
reductions run unchanged on `flat_tree` buffers and on sharded leaves (a
sum across devices, nothing gathered).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import numerics, tree, validation
from gradxform.core.base import (
    GradientTransformation,
    ScalarOrSchedule,
    Updates,
    public_constructor,
)


class ProdigyState(NamedTuple):
    """optax's ``ProdigyState``, field for field.

    ``exp_avg`` and ``exp_avg_sq`` are Adam's moments of :math:`d\\,g`,
    ``grad_sum`` the weighted sum :math:`s`, ``params0`` the parameters at
    ``init``, ``estim_lr`` the estimate :math:`d` and ``numerator_weighted``
    its numerator (both 0-d, float32 or float64), ``count`` the int32 step
    count (saturating).
    """

    exp_avg: Updates
    exp_avg_sq: Updates
    grad_sum: Updates
    params0: Updates
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array  # int32, shape ()


def scalar_dtype(params: Any) -> Any:
    """float32, or float64 when a trainable leaf is (complex) float64: the tree-wide scalars'."""
    dtypes = [numerics.real_dtype(numerics.leaf_dtype(p) if not hasattr(p, "dtype") else p.dtype)
              for p in jax.tree.leaves(params) if tree.is_trainable(p)]
    return numerics.compute_dtype(*dtypes)


def real_inner(a: jax.Array, b: jax.Array) -> jax.Array:
    """:math:`\\mathrm{Re}\\,\\langle a, b\\rangle`, summed over one leaf (complex as two reals)."""
    if jnp.iscomplexobj(a) or jnp.iscomplexobj(b):
        return jnp.sum(jnp.real(a) * jnp.real(b) + jnp.imag(a) * jnp.imag(b))
    return jnp.sum(a * b)


def _total(parts: list, dtype: Any) -> jax.Array:
    """The sum of per-leaf scalars, in ``dtype`` (0 for none)."""
    return sum((part.astype(dtype) for part in parts), jnp.zeros([], dtype))


@public_constructor
def scale_by_prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    beta3: float | None = None,
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    estim_lr_coef: float = 1.0,
    weight_decay: float = 0.0,
    safeguard_warmup: bool = False,
) -> GradientTransformation:
    r"""Prodigy's step (to be subtracted): AdamW whose step size :math:`d` is estimated on line.

    With :math:`\eta_t` the learning rate (a schedule is evaluated at the
    step count before the update) and :math:`\theta_0` the params at ``init``:

    .. math::
        \lambda_t = d_{t-1}\, \eta_t \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}, \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) d_{t-1} g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) d_{t-1}^2 |g_t|^2, \\
        s_t = \beta_3 s_{t-1} + \frac{w_t\, d_{t-1}}{d_0} g_t, \quad
        r_t = \beta_3 r_{t-1} + \frac{d_{t-1}}{d_0} \lambda_t
        \langle g_t, \theta_0 - \theta_t \rangle, \quad
        d_t = \max\Big(d_{t-1}, \frac{c\, r_t}{\lVert s_t \rVert_1}\Big), \\
        u_t = \lambda_t \Big(\frac{m_t}{\sqrt{v_t} + d_t\, \epsilon} + \omega\, \theta_t\Big)

    with :math:`w_t = \lambda_t` (:math:`w_t = d_{t-1}` with
    ``safeguard_warmup``), :math:`\beta_3 = \sqrt{\beta_2}` by default,
    and :math:`\lVert s \rVert_1` and the inner product taken over the whole
    tree. ``prodigy`` is ``chain(scale_by_prodigy(...), scale(-1.0))``; this
    transform returns the step with the sign of the gradient. The same
    numbers as ``optax.contrib.prodigy`` (up to that sign), whose state this
    is, except:

    * while :math:`\lVert s_t \rVert_1 = 0` (the gradients so far are all
      zero) :math:`d` keeps its value, where optax divides 0 by 0 and its
      :math:`d` becomes NaN for good; with :math:`\epsilon = 0`, an entry
      whose gradients were all zero gets a zero update (optax: 0 / 0);
    * for complex entries :math:`v` holds :math:`|d\,g|^2` (real, as in
      `scale_by_adam`), :math:`\lVert s \rVert_1` sums moduli and the inner
      product is the real part of :math:`g^H (\theta_0 - \theta)`, so
      :math:`d` stays real;
    * :math:`d` and :math:`r` are kept in float32 (float64 for float64
      params), not in the params' dtype.

    Mishchenko and Defazio, 2023,
    "Prodigy: An Expeditiously Adaptive Parameter-Free Learner".

    Args:
      learning_rate: :math:`\eta \ge 0`, a number or a schedule (1 with a
        warm-up and decay is the intended use).
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      beta3: :math:`\beta_3` in [0, 1], or None for :math:`\sqrt{\beta_2}`.
      eps: :math:`\epsilon \ge 0`, scaled by :math:`d_t` in the denominator.
      estim_lr0: :math:`d_0 > 0`, the initial (under-)estimate.
      estim_lr_coef: :math:`c \ge 0`, a multiplier of each estimate.
      weight_decay: :math:`\omega \ge 0`, decoupled weight decay (AdamW's).
      safeguard_warmup: leave :math:`\eta_t` out of :math:`s_t`, for warm-ups.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.chain(gx.scale_by_prodigy(), gx.scale(-1.0))
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.array([0.5, 0.5])}, state, params)
    """
    owner = "scale_by_prodigy"
    validation.scalar_or_schedule(owner, "learning_rate", learning_rate)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
    with validation.inside("betas", betas):
        validation.decay_rate(owner, "betas[0]", betas[0])
        validation.decay_rate(owner, "betas[1]", betas[1])
    if beta3 is not None:
        validation.decay_rate(owner, "beta3", beta3, allow_one=True)
    validation.non_negative(owner, "eps", eps)
    validation.positive(owner, "estim_lr0", estim_lr0)
    validation.non_negative(owner, "estim_lr_coef", estim_lr_coef)
    validation.non_negative(owner, "weight_decay", weight_decay)
    validation.boolean(owner, "safeguard_warmup", safeguard_warmup)
    beta1, beta2 = betas
    decay3 = beta2**0.5 if beta3 is None else beta3

    def init_fn(params):
        dtype = scalar_dtype(params)
        return ProdigyState(
            exp_avg=tree.tree_zeros_like(params),
            exp_avg_sq=tree.tree_full_like(params, 0, real=True),
            grad_sum=tree.tree_zeros_like(params),
            params0=tree.tree_copy_params(params),
            estim_lr=jnp.asarray(estim_lr0, dtype),
            numerator_weighted=jnp.zeros([], dtype),
            count=numerics.zero_count(),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{owner}: update needs params, got params=None")
        tree.check_same_structure(owner, "state", state.exp_avg, updates)
        tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        count = numerics.safe_increment(state.count)
        rate = numerics.schedule_value(learning_rate, state.count, owner, "learning_rate")
        d = state.estim_lr
        dtype = d.dtype
        hyper = lambda value: numerics.hyperparameter(value, dtype)  # noqa: E731
        correction = (numerics.bias_correction(beta2, count, dtype) ** 0.5
                      / numerics.bias_correction(beta1, count, dtype))
        step = (d * jnp.asarray(rate).astype(dtype) * correction).astype(dtype)
        weight = d if safeguard_warmup else step

        def moments(g, mu, nu, s):
            c = numerics.compute_dtype(g.dtype, mu.dtype, dtype)
            h = lambda value: numerics.hyperparameter(value, c)  # noqa: E731
            dg = d.astype(c) * g.astype(c)
            mu_new = numerics.moment(beta1, mu.astype(c), dg)
            nu_new = numerics.moment(beta2, nu.astype(numerics.real_dtype(c)), numerics.abs_sq(dg))
            s_new = h(decay3) * s.astype(c) + weight.astype(c) * dg / h(estim_lr0)
            l1 = jnp.sum(jnp.abs(s_new)).astype(dtype)
            return (numerics.store(mu_new, mu.dtype), nu_new.astype(nu.dtype),
                    numerics.store(s_new, s.dtype), l1, mu_new, nu_new)

        def inner_leaf(g, p0, p):
            c = numerics.compute_dtype(g.dtype, p0.dtype, dtype)
            return real_inner(g.astype(c), p0.astype(c) - jnp.asarray(p).astype(c)).astype(dtype)

        mu, nu, s, l1, mu_c, nu_c = tree.tree_map_multi(
            moments, 6, updates, state.exp_avg, state.exp_avg_sq, state.grad_sum)
        inner = tree.tree_map_skip_none(inner_leaf, updates, state.params0, params)
        numerator = (hyper(decay3) * state.numerator_weighted
                     + (d / hyper(estim_lr0)) * step * _total(jax.tree.leaves(inner), dtype))
        denominator = _total(jax.tree.leaves(l1), dtype)
        estimate = hyper(estim_lr_coef) * numerator / jnp.where(denominator > 0, denominator, 1)
        d_new = jnp.where(denominator > 0, jnp.maximum(d, estimate), d)

        def step_leaf(g, m, v, p):
            c = m.dtype
            shift = d_new * hyper(eps)
            # A zero denominator (eps = 0, an entry whose gradients were all 0) has m = 0 too.
            denominator = jnp.sqrt(v) + shift.astype(v.dtype)
            adam = step.astype(c) * m / jnp.where(denominator > 0, denominator, 1).astype(c)
            decay = (hyper(weight_decay) * step).astype(c)
            return numerics.store(decay * jnp.asarray(p).astype(c) + adam, g.dtype)

        out = tree.tree_map_skip_none(step_leaf, updates, mu_c, nu_c, params)
        return out, ProdigyState(
            exp_avg=mu, exp_avg_sq=nu, grad_sum=s, params0=state.params0, estim_lr=d_new,
            numerator_weighted=numerator, count=count,
        )

    return GradientTransformation(init_fn, update_fn)
