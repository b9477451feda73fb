r"""Keras 3's ``Ftrl`` and ``Lamb``: rules that read the params.

Keras decays the weights before the rule reads them, so these chains run the
rule inside ``weight_decay_first(decoupled_weight_decay(...), rule)`` when
``weight_decay`` is set (`gradxform.keras.chain`).
"""

from __future__ import annotations

from typing import Any, Sequence

from gradxform.core import validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule
from gradxform.keras.arguments import checked_base, keras_error
from gradxform.keras.chain import fill_docstrings, keras_chain, keras_preset
from gradxform.transforms.adam import scale_by_adam
from gradxform.transforms.ftrl import ftrl as ftrl_rule
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.trust_ratio import scale_by_trust_ratio


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


fill_docstrings(ftrl, lamb)
