"""Schedule-free SGD and AdamW: `schedule_free` around a momentum-free base optimizer.

Chains of public transforms, as optax's ``contrib.schedule_free_sgd`` and
``contrib.schedule_free_adamw``; the arithmetic is `schedule_free`'s and the
base optimizer's.
"""

from __future__ import annotations

from typing import Any

from gradxform.core import validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor
from gradxform.core.combine import chain
from gradxform.optimizers.standard import sgd
from gradxform.transforms.adaptive import scale_by_rms
from gradxform.schedules.standard import warmup_constant_schedule
from gradxform.transforms.schedule_free import schedule_free
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.weight_decay import add_decayed_weights


def _learning_rate(owner: str, learning_rate: Any, warmup_steps: Any) -> ScalarOrSchedule:
    """``learning_rate``, or optax's linear warmup from 0 to it over ``warmup_steps``."""
    validation.scalar_or_schedule(owner, "learning_rate", learning_rate)
    warmup_steps = validation.positive_int(owner, "warmup_steps", warmup_steps, allow_none=True)
    if warmup_steps is None:
        return learning_rate
    if callable(learning_rate):
        raise TypeError(
            f"{owner}: with warmup_steps, learning_rate must be a number (the rate after the "
            f"warmup), got {learning_rate!r}"
        )
    return warmup_constant_schedule(0.0, learning_rate, warmup_steps)


def _check_common(owner: str, b1: Any, weight_lr_power: Any, state_dtype: Any) -> None:
    validation.in_range(owner, "b1", b1, low=0.0, high=1.0, low_open=True)
    validation.non_negative(owner, "weight_lr_power", weight_lr_power)
    validation.float_dtype(owner, "state_dtype", state_dtype)


@public_constructor
def schedule_free_sgd(
    learning_rate: ScalarOrSchedule = 1.0,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    weight_decay: ScalarOrSchedule | None = None,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    r"""Schedule-free SGD: `schedule_free` around plain SGD (with optional weight decay).

    .. math::
        u_t = -\eta_t\,(g_t + \lambda\, y_t), \qquad
        z_{t+1} = z_t + u_t, \qquad
        x_{t+1} = (1 - c_t)\, x_t + c_t\, z_{t+1}, \qquad
        y_{t+1} = \beta_1 x_{t+1} + (1 - \beta_1) z_{t+1}

    with the averaging weights :math:`c_t` of `schedule_free`. The chain is
    ``schedule_free(chain(add_decayed_weights(weight_decay), sgd(lr)), lr,
    b1, weight_lr_power, state_dtype)`` (the weight decay left out when
    None), and with ``warmup_steps`` the rate rises linearly from 0 to
    ``learning_rate``, as optax's ``warmup_constant_schedule``. optax's
    ``contrib.schedule_free_sgd``: the same arguments and updates; the weight
    decay is multiplied by the learning rate, as in PyTorch. Evaluate the
    model at `schedule_free_eval_params`. Defazio et al., 2024, "The Road
    Less Scheduled".

    Args:
      learning_rate: :math:`\eta \ge 0`, the rate (after the warmup); a
        schedule without ``warmup_steps``.
      warmup_steps: :math:`W \ge 1`, the length of the linear warmup, or None.
      b1: :math:`\beta_1 \in (0, 1]`, the interpolation of `schedule_free`.
      weight_decay: :math:`\lambda \ge 0` (a number or a schedule), or None for none.
      weight_lr_power: :math:`p \ge 0`, the power of the rate in the
        averaging weights.
      state_dtype: the dtype of :math:`z`; None keeps the params' dtypes.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> tx = gx.schedule_free_sgd(0.1, warmup_steps=2, weight_decay=1e-4)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = tx.init(params)
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = tx.update(grads, state, params)
    """
    owner = "schedule_free_sgd"
    rate = _learning_rate(owner, learning_rate, warmup_steps)
    _check_common(owner, b1, weight_lr_power, state_dtype)
    if weight_decay is not None:
        validation.scalar_or_schedule(owner, "weight_decay", weight_decay)
    base = sgd(rate) if weight_decay is None else chain(add_decayed_weights(weight_decay), sgd(rate))
    return schedule_free(base, learning_rate=rate, b1=b1, weight_lr_power=weight_lr_power,
                         state_dtype=state_dtype)


@public_constructor
def schedule_free_adamw(
    learning_rate: ScalarOrSchedule = 0.0025,
    warmup_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_lr_power: float = 2.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    r"""Schedule-free AdamW: `schedule_free` around AdamW without its first moment.

    .. math::
        v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2, \qquad
        u_t = -\eta_t \left(\frac{g_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
        + \lambda\, y_t\right), \\
        z_{t+1} = z_t + u_t, \qquad
        x_{t+1} = (1 - c_t)\, x_t + c_t\, z_{t+1}, \qquad
        y_{t+1} = \beta_1 x_{t+1} + (1 - \beta_1) z_{t+1}

    with the averaging weights :math:`c_t` of `schedule_free`. The chain is
    optax's: ``schedule_free(chain(scale_by_rms(b2, eps, eps_in_sqrt=False,
    bias_correction=True), add_decayed_weights(weight_decay),
    scale_by_learning_rate(lr)), lr, b1, weight_lr_power, state_dtype)``;
    `scale_by_rms` with bias correction is ``scale_by_adam(b1=0)`` without
    the unused first moment. With ``warmup_steps`` the rate rises linearly
    from 0 to ``learning_rate``, as optax's ``warmup_constant_schedule``.
    optax's ``contrib.schedule_free_adamw``: the same arguments and updates.
    Evaluate the model at `schedule_free_eval_params`. Defazio et al., 2024,
    "The Road Less Scheduled".

    Args:
      learning_rate: :math:`\eta \ge 0`, the rate (after the warmup); a
        schedule without ``warmup_steps``.
      warmup_steps: :math:`W \ge 1`, the length of the linear warmup, or None.
      b1: :math:`\beta_1 \in (0, 1]`, the interpolation of `schedule_free`.
      b2: :math:`\beta_2 \in [0, 1)`, the decay of the second moment.
      eps: :math:`\epsilon \ge 0`, added to the root of the second moment.
      weight_decay: :math:`\lambda \ge 0` (a number or a schedule), decoupled
        (multiplied by the rate).
      weight_lr_power: :math:`p \ge 0`, the power of the rate in the
        averaging weights.
      state_dtype: the dtype of :math:`z`; None keeps the params' dtypes.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> tx = gx.schedule_free_adamw(1e-2, warmup_steps=10, weight_decay=1e-4)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = tx.init(params)
      >>> grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
      >>> updates, state = tx.update(grads, state, params)
      >>> eval_params = gx.schedule_free_eval_params(state, gx.apply_updates(params, updates))
    """
    owner = "schedule_free_adamw"
    rate = _learning_rate(owner, learning_rate, warmup_steps)
    _check_common(owner, b1, weight_lr_power, state_dtype)
    validation.decay_rate(owner, "b2", b2)
    validation.non_negative(owner, "eps", eps)
    validation.scalar_or_schedule(owner, "weight_decay", weight_decay)
    base = chain(
        scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(rate),
    )
    return schedule_free(base, learning_rate=rate, b1=b1, weight_lr_power=weight_lr_power,
                         state_dtype=state_dtype)
