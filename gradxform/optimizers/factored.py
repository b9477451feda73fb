"""Memory-saving adaptive optimizers: Adafactor and SM3, chains of public transforms.

Their statistics are reductions over each leaf's own axes, so they run on the
per-leaf params tree; a `gx.flat_tree` buffer is refused with a named error.
Names, arguments and defaults are optax 0.2.8's.
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp

from gradxform.core import masks, validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor
from gradxform.core.combine import chain
from gradxform.transforms.block_clipping import clip_by_block_rms
from gradxform.transforms.factored import scale_by_factored_rms
from gradxform.transforms.momentum import ema
from gradxform.transforms.scaling import scale, scale_by_learning_rate
from gradxform.transforms.sm3 import scale_by_sm3
from gradxform.transforms.trust_ratio import scale_by_param_block_rms
from gradxform.transforms.weight_decay import add_decayed_weights


@public_constructor
def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: float | None = 1.0,
    momentum: float | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: ScalarOrSchedule | None = None,
    eps: float = 1e-30,
    factored: bool = True,
    weight_decay_mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    r"""Adafactor: factored second moments, update clipping and a relative step size.

    .. math::
        \hat u_t = \frac{g_t}{\sqrt{\hat V_t}}, \quad
        \tilde u_t = \frac{\hat u_t}{\max(1, \mathrm{RMS}(\hat u_t)/d)}, \quad
        \theta \leftarrow \theta - \Big(\eta_t \max(\mathrm{RMS}(\theta), 10^{-3})\,
        \tilde u_t + \lambda\, \theta\Big)

    per leaf, with :math:`\hat V_t` the factored second moment of
    `scale_by_factored_rms` and, with ``momentum``, an undebiased moving average
    of the scaled step before the weight decay. optax's chain, member for member:
    ``scale_by_factored_rms(factored, decay_rate, decay_offset,
    min_dim_size_to_factor, eps)``, ``clip_by_block_rms(clipping_threshold)``,
    ``scale_by_learning_rate(learning_rate, flip_sign=False)``,
    ``scale_by_param_block_rms()``, ``ema(momentum, debias=False,
    accumulator_dtype=dtype_momentum)``, ``add_decayed_weights(weight_decay_rate,
    weight_decay_mask)``, ``scale(-1)``; the members whose argument is None (or
    False) are left out. It runs on the per-leaf params tree only (a
    `gx.flat_tree` buffer raises a `TypeError`). Shazeer and Stern, 2018.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule; None leaves it out
        (the relative step size alone).
      min_dim_size_to_factor: factor a leaf's second moment only if its two
        largest dimensions are at least this (an int >= 1).
      decay_rate: the exponent :math:`c` of the decay :math:`1 - (t+1)^{-c}`.
      decay_offset: the step at which fine-tuning started (an int >= 0).
      multiply_by_parameter_scale: scale by :math:`\max(\mathrm{RMS}(\theta), 10^{-3})`.
      clipping_threshold: :math:`d > 0`, the largest RMS of a leaf's scaled
        gradient; None: no clipping.
      momentum: the momentum in [0, 1]; None: no momentum (and no buffer).
      dtype_momentum: the dtype of the momentum buffer (None: the params').
      weight_decay_rate: :math:`\lambda \ge 0`, a number or a schedule; None: no decay.
      eps: :math:`\epsilon > 0`, added to the squared gradients.
      factored: factor the second moments at all.
      weight_decay_mask: which parameters decay, as ``mask`` of `add_decayed_weights`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.adafactor(learning_rate=1e-2)
    """
    owner = "adafactor"
    validation.boolean(owner, "multiply_by_parameter_scale", multiply_by_parameter_scale)
    validation.boolean(owner, "factored", factored)
    validation.positive(owner, "eps", eps)
    validation.non_negative(owner, "decay_rate", decay_rate)
    if clipping_threshold is not None:
        validation.positive(owner, "clipping_threshold", clipping_threshold)
    if momentum is not None:
        validation.decay_rate(owner, "momentum", momentum, allow_one=True)
    validation.float_dtype(owner, "dtype_momentum", dtype_momentum)
    validation.positive_int(owner, "min_dim_size_to_factor", min_dim_size_to_factor)
    validation.positive_int(owner, "decay_offset", decay_offset, minimum=0)
    if learning_rate is not None:
        validation.scalar_or_schedule(owner, "learning_rate", learning_rate)
    if weight_decay_rate is not None:
        validation.scalar_or_schedule(owner, "weight_decay_rate", weight_decay_rate)
    masks.check_mask_argument(owner, "weight_decay_mask", weight_decay_mask)
    members = [scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)]
    if clipping_threshold is not None:
        members.append(clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        members.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        members.append(scale_by_param_block_rms())
    if momentum is not None:
        members.append(ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        members.append(add_decayed_weights(weight_decay_rate, mask=weight_decay_mask))
    members.append(scale(-1))
    return chain(*members)


@public_constructor
def sm3(learning_rate: ScalarOrSchedule, momentum: float = 0.9) -> GradientTransformation:
    r"""SM3: adaptive rates from accumulators along each axis, with momentum.

    .. math::
        \theta \leftarrow \theta - \eta\, \nu_t, \qquad
        \nu_t = \mu\, \nu_{t-1} + (1-\mu)\, g_t / \sqrt{a_t + \epsilon}

    with :math:`a_t` the SM3-II accumulator of `scale_by_sm3` (``b2=1``).
    ``chain(scale_by_sm3(b1=momentum), scale_by_learning_rate(learning_rate))``,
    as ``optax.sm3`` (which takes a constant rate only; a schedule works here
    too). Anil et al., 2019.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      momentum: :math:`\mu` in [0, 1).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.sm3(0.1)
    """
    validation.decay_rate("sm3", "momentum", momentum)
    return chain(scale_by_sm3(b1=momentum), scale_by_learning_rate(learning_rate))
