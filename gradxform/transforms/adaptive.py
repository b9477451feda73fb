"""Per-coordinate adaptive scaling from squared gradients: Adagrad, RMS, centred RMS.

Arithmetic runs in at least float32 (`numerics.compute_dtype`) whatever the
dtype of the gradients and accumulators; results are stored back in each
accumulator's own dtype and updates come out in the gradients' dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradxform.core import numerics, sparse, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


def _inverse_root(nu: jax.Array, eps: float, eps_in_sqrt: bool) -> jax.Array:
    eps = numerics.hyperparameter(eps, nu.dtype)
    if eps_in_sqrt:
        return jax.lax.rsqrt(nu + eps)
    return 1 / (jnp.sqrt(nu) + eps)


class ScaleByAdagradState(NamedTuple):
    """The running sum of squared gradients."""

    sum_of_squares: Updates


@sparse.row_sparse_rule("exact")
@public_constructor
def scale_by_adagrad(
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
    accumulator_dtype: Any = None,
    *,
    eps_in_sqrt: bool = True,
) -> GradientTransformation:
    r"""Rescales by the root of the sum of all squared gradients so far (Adagrad).

    .. math::
        s_t = s_{t-1} + g_t^2, \quad s_0 = a_0, \qquad
        u_t = \begin{cases} g_t / \sqrt{s_t + \epsilon} & s_t > 0 \\ 0 & s_t = 0 \end{cases}

    This is optax's ``scale_by_rss``: :math:`\epsilon` is inside the root, and a
    coordinate that has only ever seen zero gradients (with :math:`a_0 = 0`)
    gets a zero update rather than ``0/0``. A `RowSparse` leaf gives the dense
    leaf's updates and sums bit for bit, computed on the touched rows only (an
    untouched row would not move anyway). With ``eps_in_sqrt=False``,
    ``torch.optim.Adagrad``'s form :math:`u_t = g_t / (\sqrt{s_t} + \epsilon)`.
    Duchi et al., 2011.

    Args:
      initial_accumulator_value: :math:`a_0 \ge 0`, the sum's starting value.
      eps: :math:`\epsilon \ge 0`, added inside the square root.
      accumulator_dtype: dtype of :math:`s`; None keeps each param's (real) dtype,
        float32 for float16 params.
      eps_in_sqrt: add :math:`\epsilon` inside the root (optax, Keras) or to the
        root (torch).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_adagrad(), gx.scale_by_learning_rate(0.1))
    """
    owner = "scale_by_adagrad"
    validation.non_negative(owner, "initial_accumulator_value", initial_accumulator_value)
    validation.non_negative(owner, "eps", eps)
    validation.float_dtype(owner, "accumulator_dtype", accumulator_dtype)
    validation.boolean(owner, "eps_in_sqrt", eps_in_sqrt)

    def init_fn(params):
        return ScaleByAdagradState(
            sum_of_squares=tree.tree_full_like(params, initial_accumulator_value, accumulator_dtype, real=True)
        )

    def leaf(g, s):
        dtype = numerics.compute_dtype(g.dtype, s.dtype)
        g_c = numerics.operand(g, dtype)
        real = numerics.real_dtype(dtype)
        s_new = lax.add(numerics.abs_sq(g_c), numerics.operand(s, real))
        root = _inverse_root(s_new, eps, eps_in_sqrt)
        inverse = lax.select(lax.gt(s_new, numerics.operand(0, real)), root,
                             lax.full_like(s_new, 0))
        update = lax.mul(numerics.operand(inverse, dtype), g_c)
        return numerics.store(update, g.dtype), numerics.store(s_new, s.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.sum_of_squares, updates)
        updates, sums = tree.tree_map_multi(
            sparse.on_touched_rows(leaf, num_states=1), 2, updates, state.sum_of_squares)
        return updates, ScaleByAdagradState(sum_of_squares=sums)

    return GradientTransformation(init_fn, update_fn)


class ScaleByRmsState(NamedTuple):
    """The step count and the moving average of squared gradients."""

    count: jax.Array  # int32, shape ()
    nu: Updates


def _check_rms_arguments(owner, decay, eps, initial_scale, eps_in_sqrt, bias_correction):
    validation.boolean(owner, "bias_correction", bias_correction)
    validation.boolean(owner, "eps_in_sqrt", eps_in_sqrt)
    # With bias correction, decay = 1 would divide by 1 - 1**t = 0.
    validation.decay_rate(owner, "decay", decay, allow_one=not bias_correction)
    validation.non_negative(owner, "eps", eps)
    validation.non_negative(owner, "initial_scale", initial_scale)


@public_constructor
def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    r"""Rescales by the root of a moving average of squared gradients (RMSProp).

    .. math::
        \nu_t = \rho\,\nu_{t-1} + (1-\rho)\,g_t^2, \quad \nu_0 = \nu_{init}, \qquad
        u_t = g_t / \sqrt{\hat\nu_t + \epsilon}
        \;\;(\text{or } g_t / (\sqrt{\hat\nu_t} + \epsilon) \text{ if not eps\_in\_sqrt})

    with :math:`\hat\nu_t = \nu_t / (1 - \rho^t)` when ``bias_correction``, else
    :math:`\nu_t`. Tieleman and Hinton, 2012. The state always holds the count,
    whatever ``bias_correction`` is.

    Args:
      decay: :math:`\rho` in [0, 1] ([0, 1) with bias correction).
      eps: :math:`\epsilon \ge 0`.
      initial_scale: :math:`\nu_{init} \ge 0`.
      eps_in_sqrt: whether :math:`\epsilon` goes inside the square root.
      bias_correction: whether to debias :math:`\nu`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_rms(decay=0.9), gx.scale_by_learning_rate(1e-3))
    """
    owner = "scale_by_rms"
    _check_rms_arguments(owner, decay, eps, initial_scale, eps_in_sqrt, bias_correction)

    def init_fn(params):
        return ScaleByRmsState(
            count=numerics.zero_count(), nu=tree.tree_full_like(params, initial_scale, real=True)
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.nu, updates)
        count = numerics.safe_increment(state.count)

        def leaf(g, nu):
            dtype = numerics.compute_dtype(g.dtype, nu.dtype)
            real = numerics.real_dtype(dtype)
            g_c = g.astype(dtype)
            nu_new = numerics.moment(decay, nu.astype(real), numerics.abs_sq(g_c))
            nu_hat = nu_new
            if bias_correction:
                nu_hat = nu_new / numerics.bias_correction(decay, count, real)
            scaling = _inverse_root(nu_hat, eps, eps_in_sqrt).astype(dtype)
            return numerics.store(scaling * g_c, g.dtype), nu_new.astype(nu.dtype)

        updates, nu = tree.tree_map_multi(leaf, 2, updates, state.nu)
        return updates, ScaleByRmsState(count=count, nu=nu)

    return GradientTransformation(init_fn, update_fn)


class ScaleByStddevState(NamedTuple):
    """The step count and moving averages of gradients and squared gradients."""

    count: jax.Array  # int32, shape ()
    mu: Updates
    nu: Updates


@public_constructor
def scale_by_stddev(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> GradientTransformation:
    r"""Rescales by a moving estimate of the gradients' standard deviation (centred RMSProp).

    .. math::
        \mu_t = \rho\mu_{t-1} + (1-\rho) g_t, \quad
        \nu_t = \rho\nu_{t-1} + (1-\rho) g_t^2, \qquad
        u_t = g_t / \sqrt{\hat\nu_t - \hat\mu_t^2 + \epsilon}

    (:math:`\epsilon` outside the root if not ``eps_in_sqrt``; hats are
    debiased moments when ``bias_correction``.) Graves, 2013.

    Args:
      decay: :math:`\rho` in [0, 1] ([0, 1) with bias correction).
      eps: :math:`\epsilon \ge 0`.
      initial_scale: :math:`\nu_0 \ge 0`.
      eps_in_sqrt: whether :math:`\epsilon` goes inside the square root.
      bias_correction: whether to debias both moments.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.scale_by_stddev(), gx.scale_by_learning_rate(1e-3))
    """
    owner = "scale_by_stddev"
    _check_rms_arguments(owner, decay, eps, initial_scale, eps_in_sqrt, bias_correction)

    def init_fn(params):
        return ScaleByStddevState(
            count=numerics.zero_count(),
            mu=tree.tree_zeros_like(params),
            nu=tree.tree_full_like(params, initial_scale, real=True),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.nu, updates)
        count = numerics.safe_increment(state.count)

        def leaf(g, mu, nu):
            dtype = numerics.compute_dtype(g.dtype, mu.dtype, nu.dtype)
            real = numerics.real_dtype(dtype)
            g_c = g.astype(dtype)
            mu_new = numerics.moment(decay, mu.astype(dtype), g_c)
            nu_new = numerics.moment(decay, nu.astype(real), numerics.abs_sq(g_c))
            mu_hat, nu_hat = mu_new, nu_new
            if bias_correction:
                correction = numerics.bias_correction(decay, count, real)
                mu_hat = mu_new / correction.astype(dtype)
                nu_hat = nu_new / correction.astype(real)
            # Never negative in exact arithmetic (Cauchy-Schwarz on the averages); rounding
            # can make it -1 ulp, whose square root would be NaN.
            variance = jnp.maximum(nu_hat - numerics.abs_sq(mu_hat), 0)
            scaling = _inverse_root(variance, eps, eps_in_sqrt).astype(dtype)
            return (
                numerics.store(scaling * g_c, g.dtype),
                numerics.store(mu_new, mu.dtype),
                nu_new.astype(nu.dtype),
            )

        updates, mu, nu = tree.tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return updates, ScaleByStddevState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)
