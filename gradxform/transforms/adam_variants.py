"""Adam's variants with another second moment: AdaBelief, Yogi, RAdam.

Arithmetic runs in at least float32 (`numerics.compute_dtype`); each moment is
stored in its own dtype and updates come out in the gradients' dtype. Second
moments are kept in the params' real dtype, float32 for float16 params (whose
range cannot hold squared gradients), as in `scale_by_adam`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradxform.core import adam_moments, numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class ScaleByBeliefState(NamedTuple):
    """The step count, the first moment and the second moment of the prediction error."""

    count: jax.Array  # int32, shape ()
    mu: Updates
    nu: Updates


class ScaleByYogiState(NamedTuple):
    """The step count and the first and second moments: optax's ``ScaleByAdamState`` layout."""

    count: jax.Array  # int32, shape ()
    mu: Updates
    nu: Updates


class ScaleByRadamState(NamedTuple):
    """The step count and the first and second moments: optax's ``ScaleByAdamState`` layout."""

    count: jax.Array  # int32, shape ()
    mu: Updates
    nu: Updates


def _check_moment_arguments(owner, b1, b2, eps, eps_root=0.0):
    validation.decay_rate(owner, "b1", b1)
    validation.decay_rate(owner, "b2", b2)
    validation.non_negative(owner, "eps", eps)
    validation.non_negative(owner, "eps_root", eps_root)


def _compute(g, *state):
    """``g`` upcast to the compute dtype of itself and ``state``, and that dtype's real part."""
    dtype = numerics.compute_dtype(g.dtype, *(s.dtype for s in state))
    return g.astype(dtype), numerics.real_dtype(dtype)


def _corrections(b1, b2, count, nesterov, accurate=False):
    """Per compute dtype: the bias corrections at ``count`` (and ``count + 1`` for Nesterov)."""
    return numerics.per_dtype(lambda dtype: (
        numerics.bias_correction(b1, count, dtype, accurate=accurate),
        numerics.bias_correction(b2, count, dtype, accurate=accurate),
        numerics.bias_correction(b1, numerics.safe_increment(count), dtype, accurate=accurate)
        if nesterov else None,
    ))


def _debiased_mu(b1, mu_new, g_c, corrections, nesterov):
    correction_1, _, next_correction_1 = corrections
    if nesterov:
        return numerics.nesterov_debiased(b1, mu_new, g_c, correction_1, next_correction_1)
    return mu_new / correction_1.astype(mu_new.dtype)


def _zero_moments(params):
    return tree.tree_zeros_like(params), tree.tree_full_like(params, 0, real=True)


@public_constructor
def scale_by_belief(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""Rescales updates by AdaBelief: Adam whose second moment is that of the prediction error.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        s_t = \beta_2 s_{t-1} + (1-\beta_2) (g_t - m_t)^2 + \epsilon_{root}, \\
        u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{s_t / (1-\beta_2^t)} + \epsilon}

    The state holds :math:`s_t` with :math:`\epsilon_{root}` added, as
    ``optax.scale_by_belief`` (same formula and defaults; the paper's are
    ``eps=1e-8``, ``eps_root=0``). With ``nesterov`` the first moment is
    NAdam's, as in `scale_by_adam`. Zhuang et al., 2020, "AdaBelief
    Optimizer: Adapting Stepsizes by the Belief in Observed Gradients".

    Args:
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon \ge 0`, added outside the square root.
      eps_root: :math:`\epsilon_{root} \ge 0`, added to :math:`s_t` at every step.
      nesterov: use Nesterov momentum, as NAdam.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_belief(), gx.scale_by_learning_rate(1e-3))
    """
    owner = "scale_by_belief"
    _check_moment_arguments(owner, b1, b2, eps, eps_root)
    validation.boolean(owner, "nesterov", nesterov)

    def init_fn(params):
        mu, nu = _zero_moments(params)
        return ScaleByBeliefState(count=numerics.zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.mu, updates)
        count = numerics.safe_increment(state.count)
        corrections = _corrections(b1, b2, count, nesterov)

        def leaf(g, mu, nu):
            g_c, real = _compute(g, mu, nu)
            mu_new = numerics.moment(b1, mu.astype(g_c.dtype), g_c)
            surprise = numerics.abs_sq(g_c - mu_new)
            nu_new = numerics.moment(b2, nu.astype(real), surprise)
            nu_new = lax.add(nu_new, numerics.operand(eps_root, real))
            corrections_here = corrections(real)
            mu_hat = _debiased_mu(b1, mu_new, g_c, corrections_here, nesterov)
            nu_hat = lax.div(nu_new, corrections_here[1])
            update = numerics.root_scaled(mu_hat, nu_hat, eps, 0.0)
            return (numerics.store(update, g.dtype), numerics.store(mu_new, mu.dtype),
                    nu_new.astype(nu.dtype))

        updates, mu, nu = tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return updates, ScaleByBeliefState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)


@public_constructor
def scale_by_yogi(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    eps_root: float = 0.0,
    initial_accumulator_value: float = 1e-6,
) -> GradientTransformation:
    r"""Rescales updates by Yogi: Adam whose second moment moves additively, by the sign.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = v_{t-1} - (1-\beta_2)\, \mathrm{sign}(v_{t-1} - g_t^2)\, g_t^2, \\
        m_0 = v_0 = v_{init}, \qquad
        u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}

    Same formula, defaults and initial moments as ``optax.scale_by_yogi`` (both
    moments start at ``initial_accumulator_value``). The state has the fields
    of optax's ``ScaleByAdamState``, which optax uses for it. Complex
    gradients use :math:`|g_t|^2`. Zaheer et al., 2018, "Adaptive Methods for
    Nonconvex Optimization".

    Args:
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon \ge 0`, added outside the square root.
      eps_root: :math:`\epsilon_{root} \ge 0`, added inside the square root.
      initial_accumulator_value: :math:`v_{init} > 0`, the starting value of both
        moments (a positive :math:`v` stays positive).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_yogi(), gx.scale_by_learning_rate(1e-2))
    """
    owner = "scale_by_yogi"
    _check_moment_arguments(owner, b1, b2, eps, eps_root)
    validation.positive(owner, "initial_accumulator_value", initial_accumulator_value)

    def init_fn(params):
        return ScaleByYogiState(
            count=numerics.zero_count(),
            mu=tree.tree_full_like(params, initial_accumulator_value),
            nu=tree.tree_full_like(params, initial_accumulator_value, real=True),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.mu, updates)
        count = numerics.safe_increment(state.count)
        corrections = _corrections(b1, b2, count, False)

        def leaf(g, mu, nu):
            g_c, real = _compute(g, mu, nu)
            mu_new = numerics.moment(b1, mu.astype(g_c.dtype), g_c)
            nu_c, square = nu.astype(real), numerics.abs_sq(g_c)
            rate = numerics.operand(1 - numerics.hyperparameter(b2, real), real)
            step = lax.mul(lax.mul(rate, lax.sign(lax.sub(nu_c, square))), square)
            nu_new = lax.sub(nu_c, step)
            correction_1, correction_2, _ = corrections(real)
            mu_hat = mu_new / correction_1.astype(mu_new.dtype)
            update = numerics.root_scaled(mu_hat, lax.div(nu_new, correction_2), eps, eps_root)
            return (numerics.store(update, g.dtype), numerics.store(mu_new, mu.dtype),
                    nu_new.astype(nu.dtype))

        updates, mu, nu = tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return updates, ScaleByYogiState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)


# h(x) = 1 / expm1(x) - 1 / x + 1 / 2 = sum_k B_2k x**(2k-1) / (2k)!, for |x| < 1/2.
_BERNOULLI = (1 / 12, -1 / 720, 1 / 30240, -1 / 1209600, 1 / 47900160, -691 / 1307674368000,
              1 / 74724249600)


def _series(x):
    """``h(x)`` by its series (Horner), accurate for ``|x| < 1/2``."""
    square, total = x * x, 0
    for coefficient in reversed(_BERNOULLI):
        total = total * square + coefficient
    return x * total


def _rho(b2, count, dtype):
    r"""RAdam's :math:`\rho_t = \rho_\infty - 2t\beta_2^t / (1-\beta_2^t)` without cancellation.

    For :math:`|t \log\beta_2| < 1/2` (where :math:`\rho_t` is far below
    :math:`\rho_\infty`, two nearly equal terms), it is computed as
    :math:`t + 2t\,h(t\log\beta_2) - 2h(\log\beta_2)` with
    :math:`h(x) = 1/\mathrm{expm1}(x) - 1/x + 1/2`, exact algebra in which the large
    terms cancel symbolically. A Python ``b2`` gives its constants in double precision.
    """
    t = count.astype(dtype)
    if isinstance(numerics.python_number(b2), (int, float)):
        b2 = float(b2)
        log_b2 = math.log(b2) if b2 > 0 else -math.inf
        rho_inf = 2 / (1 - b2) - 1
        if abs(log_b2) < 0.5:
            h_log = _series(log_b2)
        else:
            h_log = -0.5 if b2 == 0 else 1 / math.expm1(log_b2) - 1 / log_b2 + 0.5
    else:
        beta_2 = jnp.asarray(b2).astype(dtype)
        log_b2 = jnp.log(beta_2)
        rho_inf = 2 / (1 - beta_2) - 1
        small = jnp.abs(log_b2) < 0.5
        safe = jnp.where(small, -1, log_b2)
        h_log = jnp.where(small, _series(jnp.where(small, log_b2, 0)),
                          1 / jnp.expm1(safe) - 1 / safe + 0.5)
    x = t * log_b2
    small = jnp.abs(x) < 0.5
    near = t + 2 * t * _series(jnp.where(small, x, 0)) - 2 * h_log
    far_x = jnp.where(small, -1, x)
    far = rho_inf - 2 * t * jnp.exp(far_x) / -jnp.expm1(far_x)
    return jnp.where(small, near, far).astype(dtype), rho_inf


def _rectification(b2, threshold, count, dtype):
    """RAdam's ``(r_t, rho_t >= threshold)`` at ``count``, in ``dtype``; ``r_t`` is 1 where unused."""
    rho, rho_inf = _rho(b2, count, dtype)
    rectified = rho >= numerics.hyperparameter(threshold, dtype)
    # Read only where rho >= threshold >= 4, so rho_inf > rho >= 4: both factors are
    # positive there. Elsewhere they may be 0 or negative (rho < 4, b2 <= 0.6), and
    # the square root NaN, even in the branch not taken: computed on 1 instead.
    numerator = (rho - 4) * (rho - 2) * rho_inf
    denominator = jnp.where(rectified, (rho_inf - 4) * (rho_inf - 2) * rho, 1)
    radicand = jnp.maximum(jnp.where(rectified, numerator / denominator, 1), 0)
    return jnp.sqrt(radicand).astype(dtype), rectified


@public_constructor
def scale_by_radam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
    eps_hat: bool = False,
    accurate_bias_correction: bool = False,
) -> GradientTransformation:
    r"""Rescales updates by Rectified Adam (RAdam): Adam once the variance of its rate is tractable.

    .. math::
        \rho_\infty = \frac{2}{1-\beta_2} - 1, \quad
        \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}, \quad
        r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}, \\
        u_t = \begin{cases}
        r_t\, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon) & \rho_t \ge \tau \\
        \hat m_t & \text{otherwise}
        \end{cases}

    with :math:`\hat m_t, \hat v_t` Adam's debiased moments (:math:`\hat m_t`
    NAdam's with ``nesterov``). With ``eps_hat`` (``torch.optim.RAdam``'s form),
    :math:`\epsilon` is added to the root of the raw :math:`v_t`:
    :math:`r_t \hat m_t \sqrt{1-\beta_2^t} / (\sqrt{v_t + \epsilon_{root}} + \epsilon)`.
    Same formula and defaults as
    ``optax.scale_by_radam``; its state has the fields of optax's
    ``ScaleByAdamState``. Two differences, both following the paper:

    * :math:`\rho_t` is computed without cancellation. In float32, optax's
      :math:`\rho_\infty - 2t\beta_2^t/(1-\beta_2^t)` subtracts two nearly
      equal numbers while :math:`t |\log\beta_2| < 1/2`, which puts its
      :math:`r_t` 0.6% off with ``b2=0.999`` and 58% off with ``b2=0.9999``.
      There it is computed here as :math:`t + 2t\,h(t\log\beta_2) -
      2h(\log\beta_2)`, :math:`h(x) = 1/(e^x-1) - 1/x + 1/2` (a series), whose
      large terms cancel exactly; :math:`r_t` is then within about 1e-6 of its
      float64 value.
    * :math:`r_t` is real only for :math:`\rho_t \ge 4`, so ``threshold`` must
      be at least 4 (the paper's); optax accepts smaller values and then
      returns NaN at the steps where :math:`2 < \rho_t < 4`.

    Liu et al., 2020, "On the Variance of the Adaptive Learning Rate and Beyond".

    Args:
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon \ge 0`, added outside the square root.
      eps_root: :math:`\epsilon_{root} \ge 0`, added inside the square root.
      threshold: :math:`\tau \ge 4`: from the first step with :math:`\rho_t \ge \tau`
        on, the adaptive step is used.
      nesterov: use Nesterov momentum, as NAdam.
      eps_hat: add :math:`\epsilon` before the bias correction of :math:`v`
        (torch's RAdam) instead of after it (optax's).
      accurate_bias_correction: compute :math:`1-\beta^t` to float32's precision,
        as torch does in float64 (as in `scale_by_adam`).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_radam(), gx.scale_by_learning_rate(1e-3))
    """
    owner = "scale_by_radam"
    _check_moment_arguments(owner, b1, b2, eps, eps_root)
    validation.in_range(owner, "threshold", threshold, low=4.0)
    validation.boolean(owner, "nesterov", nesterov)
    validation.boolean(owner, "eps_hat", eps_hat)
    validation.boolean(owner, "accurate_bias_correction", accurate_bias_correction)

    def init_fn(params):
        mu, nu = _zero_moments(params)
        return ScaleByRadamState(count=numerics.zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.mu, updates)
        count = numerics.safe_increment(state.count)
        corrections = _corrections(b1, b2, count, nesterov, accurate_bias_correction)
        rectifications = numerics.per_dtype(lambda dtype: _rectification(b2, threshold, count, dtype))

        def leaf(g, mu, nu):
            g_c, real = _compute(g, mu, nu)
            mu_new = numerics.moment(b1, mu.astype(g_c.dtype), g_c)
            nu_new = numerics.moment(b2, nu.astype(real), numerics.abs_sq(g_c))
            corrections_here = corrections(real)
            mu_hat = _debiased_mu(b1, mu_new, g_c, corrections_here, nesterov)
            rate, rectified = rectifications(real)
            adaptive = adam_moments.scaled(rate.astype(mu_hat.dtype) * mu_hat, nu_new,
                                           corrections_here[1], eps, eps_root, eps_hat)
            update = jnp.where(rectified, adaptive, mu_hat)
            return (numerics.store(update, g.dtype), numerics.store(mu_new, mu.dtype),
                    nu_new.astype(nu.dtype))

        updates, mu, nu = tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return updates, ScaleByRadamState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)
