r"""Keras 3's ``Ftrl``, ``Lamb``, ``Adafactor`` and ``ScheduleFreeAdamW``: rules that read the params.

Keras decays the weights before the rule reads them, so these chains run the
rule inside ``weight_decay_first(decoupled_weight_decay(...), rule)`` when
``weight_decay`` is set (`gradxform.keras.chain`).
"""

from __future__ import annotations

from typing import Any, Sequence

from gradxform.core import validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule
from gradxform.core.combine import chain
from gradxform.keras.arguments import checked_base, keras_error
from gradxform.keras.chain import fill_docstrings, keras_chain, keras_preset
from gradxform.schedules.step_size import relative_step_size, warmup_scaled_schedule
from gradxform.transforms.adam import scale_by_adam
from gradxform.transforms.block_clipping import clip_by_block_rms
from gradxform.transforms.factored import scale_by_factored_rms
from gradxform.transforms.ftrl import ftrl as ftrl_rule
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.schedule_free import schedule_free
from gradxform.transforms.trust_ratio import scale_by_param_block_rms, scale_by_trust_ratio


def ftrl(
    learning_rate: ScalarOrSchedule = 0.001,
    learning_rate_power: float = -0.5,
    initial_accumulator_value: float = 0.1,
    l1_regularization_strength: float = 0.0,
    l2_regularization_strength: float = 0.0,
    l2_shrinkage_regularization_strength: float = 0.0,
    beta: float = 0.0,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    exclude_from_weight_decay: str | Sequence[str] | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> GradientTransformation:
    r"""Keras 3's ``Ftrl``, every argument, same numbers.

    .. math::
        n_t = n_{t-1} + g_t^2, \quad
        z_t = z_{t-1} + \tilde g_t - \frac{n_t^{-p} - n_{t-1}^{-p}}{\eta}\,\theta', \qquad
        \theta \leftarrow \frac{\mathrm{clip}(z_t, -\ell_1, \ell_1) - z_t}
        {n_t^{-p} / \eta + 2 (\ell_2 + \beta / (2\eta))}

    with :math:`\tilde g = g + 2 \ell_{2,\mathrm{shrink}}\theta'` and
    :math:`\theta'` the weights after Keras's decay. The rule is `gx.ftrl`.

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count.
      learning_rate_power: :math:`-p \le 0`.
      initial_accumulator_value: :math:`n_0 \ge 0`.
      l1_regularization_strength: :math:`\ell_1 \ge 0`.
      l2_regularization_strength: :math:`\ell_2 \ge 0`.
      l2_shrinkage_regularization_strength: :math:`\ell_{2,\mathrm{shrink}} \ge 0`.
      beta: :math:`\beta \ge 0`.
      {base_args}
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.ftrl(learning_rate=0.05, l1_regularization_strength=1e-3)
    """
    arguments = dict(locals())
    owner = "keras.ftrl"
    base = checked_base(owner, arguments)
    if validation.real_number(owner, "initial_accumulator_value",
                              initial_accumulator_value) is not None and \
            initial_accumulator_value < 0:
        raise keras_error(owner, "`initial_accumulator_value` needs to be positive or zero. "
                                 f"Received: initial_accumulator_value={initial_accumulator_value}.")
    validation.in_range(owner, "learning_rate_power", learning_rate_power, high=0.0)
    for argument in ("l1_regularization_strength", "l2_regularization_strength",
                     "l2_shrinkage_regularization_strength", "beta"):
        validation.non_negative(owner, argument, arguments[argument])
    own = {key: arguments[key] for key in (
        "learning_rate_power", "initial_accumulator_value", "l1_regularization_strength",
        "l2_regularization_strength", "l2_shrinkage_regularization_strength", "beta")}

    def rule(learning_rate):
        return [ftrl_rule(learning_rate, **own)]

    return keras_preset(owner, keras_chain(rule, base, reads_params=True), arguments)


def lamb(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    exclude_from_weight_decay: str | Sequence[str] | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> GradientTransformation:
    r"""Keras 3's ``Lamb``, every argument, same numbers.

    .. math::
        r_t = \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}, \qquad
        \theta \leftarrow \theta' - \eta\,
        \frac{\lVert\theta'\rVert}{\lVert r_t\rVert}\, r_t

    per leaf (the ratio is 1 where either norm is 0), with :math:`\theta'` the
    weights after Keras's decay. The chain is ``scale_by_adam``,
    ``scale_by_trust_ratio`` and ``scale_by_learning_rate``; unlike ``gx.lamb``
    (optax's), the weight decay is Keras's decoupled one, outside the ratio.

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count.
      beta_1: :math:`\beta_1` in [0, 1).
      beta_2: :math:`\beta_2` in [0, 1).
      epsilon: :math:`\epsilon > 0`, added to the root.
      {base_args}
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.lamb(learning_rate=1e-3, weight_decay=0.01)
    """
    arguments = dict(locals())
    owner = "keras.lamb"
    base = checked_base(owner, arguments)
    validation.positive(owner, "epsilon", epsilon)
    validation.decay_rate(owner, "beta_1", beta_1)
    validation.decay_rate(owner, "beta_2", beta_2)

    def rule(learning_rate):
        return [scale_by_adam(b1=beta_1, b2=beta_2, eps=epsilon), scale_by_trust_ratio(),
                scale_by_learning_rate(learning_rate)]

    return keras_preset(owner, keras_chain(rule, base, reads_params=True), arguments)


def adafactor(
    learning_rate: ScalarOrSchedule = 0.001,
    beta_2_decay: float = -0.8,
    epsilon_1: float = 1e-30,
    epsilon_2: float = 1e-3,
    clip_threshold: float = 1.0,
    relative_step: bool = True,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    exclude_from_weight_decay: str | Sequence[str] | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> GradientTransformation:
    r"""Keras 3's ``Adafactor``, every argument, same numbers.

    .. math::
        \hat\beta_t = 1 - t^{c}, \quad G = g_t^2 + \epsilon_1, \quad
        r_t = \hat\beta_t r_{t-1} + (1-\hat\beta_t)\,\mathrm{mean}_{-1} G, \quad
        c_t = \hat\beta_t c_{t-1} + (1-\hat\beta_t)\,\mathrm{mean}_{-2} G, \\
        v_t = \frac{r_t}{\mathrm{mean}(r_t)} \otimes c_t, \quad
        u_t = \frac{g_t / \sqrt{v_t}}{\max(1, \mathrm{rms}(g_t / \sqrt{v_t}) / d)}, \qquad
        \theta \leftarrow \theta' - \min(\eta_t, t^{-1/2})\,
        \max(\epsilon_2, \mathrm{rms}(\theta'))\, u_t

    with :math:`t` counted from 1, :math:`c` = ``beta_2_decay``, :math:`d` =
    ``clip_threshold``, the last two axes of a leaf with two or more factored
    (a leaf with fewer keeps a full :math:`v_t` of :math:`G`), and
    :math:`\theta'` the weights after Keras's decay. The chain is
    ``scale_by_factored_rms(factored_axes="last", min_dim_size_to_factor=1)``,
    ``clip_by_block_rms``, ``scale_by_param_block_rms`` and
    ``scale_by_learning_rate(schedules.relative_step_size(learning_rate))``.
    Keras caps the step at :math:`t^{-1/2}` whatever ``relative_step`` says;
    so does this (the argument is accepted and checked, and changes nothing).

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count.
      beta_2_decay: :math:`c \le 0`, the power of the second moment's decay.
      epsilon_1: :math:`\epsilon_1 > 0`, added to the squared gradients.
      epsilon_2: :math:`\epsilon_2 \ge 0`, the smallest parameter scale.
      clip_threshold: :math:`d > 0`, the largest RMS of a leaf's update.
      relative_step: accepted for Keras compatibility (see above).
      {base_args}
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.adafactor(learning_rate=0.5, clip_threshold=0.9)
    """
    arguments = dict(locals())
    owner = "keras.adafactor"
    base = checked_base(owner, arguments)
    validation.in_range(owner, "beta_2_decay", beta_2_decay, high=0.0)
    validation.positive(owner, "epsilon_1", epsilon_1)
    validation.non_negative(owner, "epsilon_2", epsilon_2)
    validation.positive(owner, "clip_threshold", clip_threshold)
    validation.boolean(owner, "relative_step", relative_step)

    def rule(learning_rate):
        return [scale_by_factored_rms(decay_rate=-beta_2_decay, min_dim_size_to_factor=1,
                                      epsilon=epsilon_1, factored_axes="last"),
                clip_by_block_rms(clip_threshold), scale_by_param_block_rms(epsilon_2),
                scale_by_learning_rate(relative_step_size(learning_rate))]

    return keras_preset(owner, keras_chain(rule, base, reads_params=True), arguments)


def schedule_free_adamw(
    learning_rate: ScalarOrSchedule = 0.0025,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    warmup_steps: int = 0,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: int | None = None,
    loss_scale_factor: float | None = None,
    gradient_accumulation_steps: int | None = None,
    exclude_from_weight_decay: str | Sequence[str] | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> GradientTransformation:
    r"""Keras 3's ``ScheduleFreeAdamW``, every argument, same numbers.

    .. math::
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
        z_t = z_{t-1} - \eta'_t\, \frac{g_t}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}, \\
        x_{t-1} = \frac{y' - (1-\beta_1) z_{t-1}}{\beta_1}, \quad
        x_t = (1 - \tfrac{1}{t})\, x_{t-1} + \tfrac{1}{t} z_t, \qquad
        y \leftarrow (1-\beta_1) z_t + \beta_1 x_t

    with :math:`y` the weights (where gradients are taken), :math:`y'` them
    after Keras's decay, :math:`z_0 = y_0`, :math:`t` counted from 1 and
    :math:`\eta'_t = \eta_t \min(t / w, 1)` (``warmup_steps`` :math:`w`). The
    chain is `schedule_free` with ``weight_lr_power=0`` (Keras averages
    uniformly) around ``scale_by_adam(b1=0)`` and ``scale_by_learning_rate``
    of `schedules.warmup_scaled_schedule`. Keras evaluates the model at
    :math:`y`; `schedule_free_eval_params` gives :math:`x`.

    Args:
      learning_rate: :math:`\eta`: a float, or a schedule called with the raw
        call count.
      beta_1: :math:`\beta_1` in (0, 1] (Keras divides by it).
      beta_2: :math:`\beta_2` in [0, 1).
      epsilon: :math:`\epsilon > 0`, added to the root.
      warmup_steps: :math:`w`, an int >= 0.
      {base_args}
    {differences}
    Example:
      >>> import gradxform as gx
      >>> tx = gx.keras.schedule_free_adamw(learning_rate=0.0025, warmup_steps=100)
    """
    arguments = dict(locals())
    owner = "keras.schedule_free_adamw"
    base = checked_base(owner, arguments)
    validation.in_range(owner, "beta_1", beta_1, low=0.0, high=1.0, low_open=True)
    validation.decay_rate(owner, "beta_2", beta_2)
    validation.positive(owner, "epsilon", epsilon)
    validation.positive_int(owner, "warmup_steps", warmup_steps, minimum=0)

    def rule(learning_rate):
        step_size = warmup_scaled_schedule(learning_rate, warmup_steps) if warmup_steps else \
            learning_rate
        # 1 - beta_2**t to float32's precision: Keras's float32 power is closer to it than
        # the fast form, which put z 4x further from the float64 rule than Keras's.
        adam = chain(scale_by_adam(b1=0.0, b2=beta_2, eps=epsilon, accurate_bias_correction=True),
                     scale_by_learning_rate(step_size))
        return [schedule_free(adam, learning_rate, b1=beta_1, weight_lr_power=0.0)]

    return keras_preset(owner, keras_chain(rule, base, reads_params=True), arguments)


fill_docstrings(ftrl, lamb, adafactor, schedule_free_adamw)
