"""Adam and AMSGrad: debiased moving averages of the gradient and its square."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradxform.core import adam_moments, numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class ScaleByAdamState(NamedTuple):
    """The step count and the first and second moments."""

    count: jax.Array  # int32, shape ()
    mu: Updates
    nu: Updates


class ScaleByAmsgradState(NamedTuple):
    """As `ScaleByAdamState`, plus the running maximum of the raw second moment."""

    count: jax.Array  # int32, shape ()
    mu: Updates
    nu: Updates
    nu_max: Updates




@public_constructor
def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    *,
    nesterov: bool = False,
    eps_hat: bool = False,
    accurate_bias_correction: bool = False,
) -> GradientTransformation:
    r"""Rescales updates by Adam's debiased moment estimates.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
        \hat m_t = \frac{m_t}{1-\beta_1^t}, \quad \hat v_t = \frac{v_t}{1-\beta_2^t}, \qquad
        u_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}

    With ``nesterov`` (NAdam, Dozat 2016),
    :math:`\hat m_t = \beta_1 \frac{m_t}{1-\beta_1^{t+1}} + (1-\beta_1)\frac{g_t}{1-\beta_1^t}`.
    With ``eps_hat`` (Keras's and TensorFlow's form, Kingma and Ba's section 2),
    the bias correction of :math:`v` is folded into the step and :math:`\epsilon`
    is added to the raw root:
    :math:`u_t = \hat m_t \sqrt{1-\beta_2^t} / (\sqrt{v_t + \epsilon_{root}} + \epsilon)`,
    i.e. (with :math:`\epsilon_{root} = 0`) an effective epsilon of
    :math:`\epsilon / \sqrt{1-\beta_2^t}` in the formula above.
    Kingma and Ba, 2015. Same formula and defaults as ``optax.scale_by_adam``;
    arithmetic runs in at least float32, so ``b2=0.999`` stays 0.999 with
    bfloat16 moments.

    Args:
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon \ge 0`, added outside the square root.
      eps_root: :math:`\epsilon_{root} \ge 0`, added inside the square root.
      mu_dtype: dtype of :math:`m`; None keeps the params' dtype.
      nu_dtype: dtype of :math:`v`; None keeps the params' (real) dtype, float32 for
        float16 params (whose range cannot hold squared gradients).
      nesterov: use Nesterov momentum (NAdam).
      eps_hat: add :math:`\epsilon` before the bias correction of :math:`v`
        (Keras's Adam) instead of after it (optax's).
      accurate_bias_correction: compute :math:`1-\beta^t` to float32's precision,
        as torch does in float64 (optax and Keras compute ``1 - b**t`` in float32,
        off by up to 5e-5 of itself in the first steps at :math:`\beta = 0.999`).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_adam(b1=0.9, b2=0.999), gx.scale_by_learning_rate(1e-3))
    """
    owner = "scale_by_adam"
    adam_moments.check_adam_arguments(owner, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    validation.boolean(owner, "nesterov", nesterov)
    validation.boolean(owner, "eps_hat", eps_hat)
    validation.boolean(owner, "accurate_bias_correction", accurate_bias_correction)
    accurate = accurate_bias_correction

    def init_fn(params):
        mu, nu = adam_moments.init_moments(params, mu_dtype, nu_dtype)
        return ScaleByAdamState(count=numerics.zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.mu, updates)
        count = numerics.safe_increment(state.count)
        corrections = numerics.per_dtype(lambda dtype: (
            numerics.bias_correction(b1, count, dtype, accurate=accurate),
            numerics.bias_correction(b2, count, dtype, accurate=accurate),
            numerics.bias_correction(b1, numerics.safe_increment(count), dtype,
                                     accurate=accurate) if nesterov else None,
        ))

        def leaf(g, mu, nu):
            g_c, mu_new, nu_new = adam_moments.moments(g, mu, nu, b1, b2)
            dtype = mu_new.dtype
            correction_1, correction_2, next_correction_1 = corrections(nu_new.dtype)
            if nesterov:
                beta_1 = numerics.hyperparameter(b1, dtype)
                mu_hat = beta_1 * (mu_new / next_correction_1.astype(dtype)) + (1 - beta_1) * (
                    g_c / correction_1.astype(dtype)
                )
            else:
                mu_hat = lax.div(mu_new, numerics.operand(correction_1, dtype))
            update = adam_moments.scaled(mu_hat, nu_new, correction_2, eps, eps_root, eps_hat)
            return (
                numerics.store(update, g.dtype),
                numerics.store(mu_new, mu.dtype),
                nu_new.astype(nu.dtype),
            )

        updates, mu, nu = tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)


@public_constructor
def scale_by_amsgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    eps_hat: bool = False,
    accurate_bias_correction: bool = False,
) -> GradientTransformation:
    r"""Rescales updates by AMSGrad: Adam with a non-decreasing second moment.

    .. math::
        m_t, v_t \text{ as in Adam}, \quad
        v^{max}_t = \max(v^{max}_{t-1}, v_t), \qquad
        u_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{v^{max}_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}

    The maximum is taken over the **raw** second moment :math:`v_t` and the bias
    correction is applied afterwards, as PyTorch (``Adam(amsgrad=True)``) and
    Keras do. This deliberately differs from ``optax.scale_by_amsgrad``, which
    takes the maximum of the bias-corrected :math:`\hat v_t`; the two agree only
    when ``bias_correction_nu=False``. Reddi et al., 2018.

    Args:
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon \ge 0`, added outside the square root.
      eps_root: :math:`\epsilon_{root} \ge 0`, added inside the square root.
      mu_dtype: dtype of :math:`m`; None keeps the params' dtype.
      nu_dtype: dtype of :math:`v` and :math:`v^{max}`; None keeps the params' (real)
        dtype, float32 for float16 params.
      bias_correction_mu: divide :math:`m_t` by :math:`1-\beta_1^t`.
      bias_correction_nu: divide :math:`v^{max}_t` by :math:`1-\beta_2^t`.
      eps_hat: Keras's form, as in `scale_by_adam`:
        :math:`u_t = \hat m_t \sqrt{1-\beta_2^t} / (\sqrt{v^{max}_t + \epsilon_{root}} + \epsilon)`.
        This is Keras's ``Adam(amsgrad=True)`` exactly.
      accurate_bias_correction: compute :math:`1-\beta^t` to float32's precision,
        as in `scale_by_adam`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_amsgrad(), gx.scale_by_learning_rate(1e-3))
    """
    owner = "scale_by_amsgrad"
    adam_moments.check_adam_arguments(owner, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    validation.boolean(owner, "bias_correction_mu", bias_correction_mu)
    validation.boolean(owner, "bias_correction_nu", bias_correction_nu)
    validation.boolean(owner, "eps_hat", eps_hat)
    validation.boolean(owner, "accurate_bias_correction", accurate_bias_correction)
    accurate = accurate_bias_correction

    def init_fn(params):
        mu, nu = adam_moments.init_moments(params, mu_dtype, nu_dtype)
        return ScaleByAmsgradState(count=numerics.zero_count(), mu=mu, nu=nu, nu_max=nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.mu, updates)
        count = numerics.safe_increment(state.count)
        corrections = numerics.per_dtype(lambda dtype: (
            numerics.bias_correction(b1, count, dtype, accurate=accurate),
            numerics.bias_correction(b2, count, dtype, accurate=accurate),
        ))

        def leaf(g, mu, nu, nu_max):
            _, mu_new, nu_new = adam_moments.moments(g, mu, nu, b1, b2)
            correction_1, correction_2 = corrections(nu_new.dtype)
            nu_max_new = jnp.maximum(nu_max.astype(nu_new.dtype), nu_new)
            mu_hat = mu_new / correction_1.astype(mu_new.dtype) if bias_correction_mu else mu_new
            update = adam_moments.scaled(
                mu_hat, nu_max_new, correction_2 if bias_correction_nu else None,
                eps, eps_root, eps_hat,
            )
            return (
                numerics.store(update, g.dtype),
                numerics.store(mu_new, mu.dtype),
                nu_new.astype(nu.dtype),
                nu_max_new.astype(nu_max.dtype),
            )

        updates, mu, nu, nu_max = tree.tree_map_multi(
            leaf, 4, updates, state.mu, state.nu, state.nu_max
        )
        return updates, ScaleByAmsgradState(count=count, mu=mu, nu=nu, nu_max=nu_max)

    return GradientTransformation(init_fn, update_fn)
