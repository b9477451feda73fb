r"""``torch.optim``'s Adadelta, Adafactor, Adamax, NAdam and RAdam as gradxform chains.

Built as `gradxform.torch.optimizers` builds SGD or Adam: torch's argument
names and defaults without ``params``, and a `chain` of catalogue transforms
in torch's order of operations: ``scale(-1.0)`` for ``maximize``,
``add_decayed_weights`` for the coupled ``weight_decay``, the rule,
``scale_by_learning_rate``, and ``decoupled_weight_decay`` where torch
decouples it (NAdam's and RAdam's ``decoupled_weight_decay=True``, torch's
``param.mul_(1 - lr * weight_decay)`` before the step).

Bias corrections :math:`1-\beta^t` are computed to float32's precision
(``accurate_bias_correction``), as torch computes them in float64 on the host.
"""

from __future__ import annotations

from typing import Any

from gradxform.core import validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, returned_by
from gradxform.core.combine import chain
from gradxform.torch.optimizers import _betas, _check_lr, _checked_items, _epilogue, _prologue
from gradxform.schedules.step_size import relative_step_size
from gradxform.transforms.adadelta import scale_by_adadelta
from gradxform.transforms.adam_variants import scale_by_radam
from gradxform.transforms.adamax import scale_by_adamax
from gradxform.transforms.block_clipping import clip_by_block_rms
from gradxform.transforms.factored import scale_by_factored_rms
from gradxform.transforms.nadam import scale_by_nadam
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.trust_ratio import scale_by_param_block_rms

# torch's RAdam uses the adaptive step once rho_t > 5.
_RADAM_THRESHOLD = 5.0


def Adadelta(  # noqa: N802 (torch's name)
    lr: ScalarOrSchedule = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.Adadelta``, same arguments, same numbers.

    .. math::
        g \leftarrow \pm g + \lambda\theta, \quad s_t = \rho s_{t-1} + (1-\rho) g_t^2, \quad
        \Delta_t = \frac{\sqrt{a_{t-1} + \epsilon}}{\sqrt{s_t + \epsilon}}\, g_t, \quad
        a_t = \rho a_{t-1} + (1-\rho)\Delta_t^2, \qquad \theta \leftarrow \theta - \eta\Delta_t

    The chain is ``scale(-1)`` (``maximize``), ``add_decayed_weights``,
    ``scale_by_adadelta`` and ``scale_by_learning_rate``.

    Args:
      lr: :math:`\eta \ge 0`, or a schedule of the step.
      rho: :math:`\rho` in [0, 1], the decay of both averages.
      eps: :math:`\epsilon > 0`, inside both roots. torch accepts 0, with which
        every step is :math:`0/\sqrt{s_t}` (0, or NaN where :math:`g = 0`).
      weight_decay: :math:`\lambda \ge 0`, coupled (added to the gradient).
      maximize: ascend the objective instead.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.torch.Adadelta(lr=1.0, rho=0.95, weight_decay=1e-4)
    """
    owner = "torch.Adadelta"
    _check_lr(owner, lr)
    validation.decay_rate(owner, "rho", rho, allow_one=True)
    validation.positive(owner, "eps", eps)
    parts = _prologue(owner, maximize, weight_decay)
    parts += [scale_by_adadelta(rho=rho, eps=eps), scale_by_learning_rate(lr)]
    return returned_by(chain(*parts), owner)


def _smallest_floor(owner: str, name: str, value: Any) -> None:
    if value is not None:  # None: the dtype's machine epsilon
        validation.in_range(owner, name, value, low=2.0**-63)


def _adafactor_eps(owner: str, eps: Any) -> tuple[Any, float]:
    """torch's ``eps=(eps1, eps2)``: ``eps1`` None or >= 2**-63 (its square a normal
    float32, the floor of `scale_by_factored_rms`), ``eps2`` >= 0."""
    eps1, eps2 = _checked_items(owner, "eps", eps, "a pair (eps1, eps2), eps1 None or a number "
                                ">= 2**-63 and eps2 a number >= 0",
                                (_smallest_floor, validation.non_negative))
    return eps1, eps2


def Adafactor(  # noqa: N802 (torch's name)
    lr: ScalarOrSchedule = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.Adafactor``, same arguments, same numbers.

    .. math::
        \hat\beta_t = 1 - t^{c}, \quad
        R_t = \hat\beta_t R_{t-1} + (1-\hat\beta_t)\,\mathrm{mean}_{-1} g_t^2, \quad
        C_t = \hat\beta_t C_{t-1} + (1-\hat\beta_t)\,\mathrm{mean}_{-2} g_t^2, \\
        \hat V_t = \frac{R_t \otimes C_t}{\max(\mathrm{mean}(R_t), \epsilon_1)}, \quad
        u_t = \frac{\pm g_t}{\sqrt{\max(\hat V_t, \epsilon_1^2)}}, \\
        \theta \leftarrow \theta(1 - \eta\lambda) - \min(\eta, t^{-1/2})\,
        \max(\epsilon_2, \mathrm{rms}(\theta))\, \frac{u_t}{\max(1, \mathrm{rms}(u_t)/d)}

    with :math:`t` counted from 1, :math:`c` = ``beta2_decay``, the last two
    axes of a leaf with two or more factored (others keep a full
    :math:`V_t`), and :math:`\mathrm{rms}(\theta)` read before the decay. The
    chain is ``scale(-1)`` (``maximize``), ``scale_by_factored_rms(epsilon=0,
    floor=eps1, factored_axes="last", min_dim_size_to_factor=1)``,
    ``clip_by_block_rms(d)``, ``scale_by_param_block_rms(eps2)``,
    ``scale_by_learning_rate(schedules.relative_step_size(lr))`` and
    ``decoupled_weight_decay(weight_decay, lr)``. The arithmetic runs in at
    least float32, where torch computes in the parameter's dtype.

    Args:
      lr: :math:`\eta \ge 0`, or a schedule of the step.
      beta2_decay: :math:`c \le 0`.
      eps: :math:`(\epsilon_1, \epsilon_2)`: :math:`\epsilon_1 \ge 2^{-63}` or None
        (the parameter dtype's machine epsilon, as torch), :math:`\epsilon_2 \ge 0`.
        torch also accepts smaller :math:`\epsilon_1`, down to 0, whose square is 0
        in float32 and makes a zero gradient's step NaN; here they raise.
      d: :math:`d \ge 1`, the largest RMS of a leaf's update.
      weight_decay: :math:`\lambda \ge 0`, decoupled and multiplied by :math:`\eta`.
      maximize: ascend the objective instead.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.torch.Adafactor(lr=1e-2, weight_decay=1e-2)
    """
    owner = "torch.Adafactor"
    _check_lr(owner, lr)
    validation.in_range(owner, "beta2_decay", beta2_decay, high=0.0)
    eps1, eps2 = _adafactor_eps(owner, eps)
    validation.in_range(owner, "d", d, low=1.0)
    parts = _prologue(owner, maximize, weight_decay, coupled=False)
    parts += [scale_by_factored_rms(decay_rate=-beta2_decay, min_dim_size_to_factor=1, epsilon=0.0,
                                    factored_axes="last",
                                    floor="machine_epsilon" if eps1 is None else eps1),
              clip_by_block_rms(d), scale_by_param_block_rms(eps2),
              scale_by_learning_rate(relative_step_size(lr))]
    return returned_by(chain(*parts, *_epilogue(True, weight_decay, lr)), owner)


def Adamax(  # noqa: N802
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.Adamax``, same arguments, same numbers.

    .. math::
        g \leftarrow \pm g + \lambda\theta, \quad m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \qquad
        \theta \leftarrow \theta - \frac{\eta}{1-\beta_1^t}\,\frac{m_t}{u_t}

    The chain is ``scale(-1)`` (``maximize``), ``add_decayed_weights``,
    ``scale_by_adamax`` (:math:`\epsilon` inside the maximum) and
    ``scale_by_learning_rate``. Where :math:`u_t = 0` (only with ``eps=0`` and
    a zero first gradient) the step is 0; torch's is NaN.

    Args:
      lr: :math:`\eta \ge 0`, or a schedule of the step.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      eps: :math:`\epsilon \ge 0`, added to :math:`|g_t|`.
      weight_decay: :math:`\lambda \ge 0`, coupled.
      maximize: ascend the objective instead.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.torch.Adamax(lr=2e-3, betas=(0.9, 0.99))
    """
    owner = "torch.Adamax"
    _check_lr(owner, lr)
    b1, b2 = _betas(owner, betas)
    validation.non_negative(owner, "eps", eps)
    parts = _prologue(owner, maximize, weight_decay)
    parts += [scale_by_adamax(b1=b1, b2=b2, eps=eps, accurate_bias_correction=True),
              scale_by_learning_rate(lr)]
    return returned_by(chain(*parts), owner)


def NAdam(  # noqa: N802
    lr: ScalarOrSchedule = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.NAdam``, same arguments, same numbers.

    .. math::
        \mu_t = \beta_1 \left(1 - \tfrac12\, 0.96^{\,t\psi}\right), \quad
        \Pi_t = \prod_{i \le t} \mu_i, \qquad
        \theta \leftarrow \theta - \eta\,
        \frac{\frac{1-\mu_t}{1-\Pi_t}\, g_t + \frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}}\, m_t}
        {\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

    with :math:`g \leftarrow \pm g + \lambda\theta` and Adam's moments
    :math:`m_t, v_t` (Dozat's momentum schedule, `scale_by_nadam`: not
    optax's ``nadam``). With ``decoupled_weight_decay`` the decay is
    :math:`\theta \leftarrow \theta(1 - \eta\lambda)` instead (NAdamW), as in
    `AdamW`.

    Args:
      lr: :math:`\eta \ge 0`, or a schedule of the step.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      eps: :math:`\epsilon \ge 0`, added to the root.
      weight_decay: :math:`\lambda \ge 0`.
      momentum_decay: :math:`\psi \ge 0`, how fast :math:`\mu_t` rises towards
        :math:`\beta_1`.
      decoupled_weight_decay: decay the params by :math:`\eta\lambda` instead
        of adding :math:`\lambda\theta` to the gradient.
      maximize: ascend the objective instead.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.torch.NAdam(lr=2e-3, weight_decay=1e-2, decoupled_weight_decay=True)
    """
    owner = "torch.NAdam"
    _check_lr(owner, lr)
    b1, b2 = _betas(owner, betas)
    validation.non_negative(owner, "eps", eps)
    validation.non_negative(owner, "momentum_decay", momentum_decay)
    validation.boolean(owner, "decoupled_weight_decay", decoupled_weight_decay)
    parts = _prologue(owner, maximize, weight_decay, coupled=not decoupled_weight_decay)
    parts += [scale_by_nadam(b1=b1, b2=b2, eps=eps, momentum_decay=momentum_decay,
                             accurate_bias_correction=True),
              scale_by_learning_rate(lr)]
    parts += _epilogue(decoupled_weight_decay, weight_decay, lr)
    return returned_by(chain(*parts), owner)


def RAdam(  # noqa: N802
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.RAdam``, same arguments, same numbers.

    .. math::
        \theta \leftarrow \theta - \eta \begin{cases}
        r_t\, \hat m_t \dfrac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon} & \rho_t > 5 \\
        \hat m_t & \text{otherwise} \end{cases}

    with :math:`g \leftarrow \pm g + \lambda\theta`, Adam's moments,
    :math:`\hat m_t = m_t / (1-\beta_1^t)`, and :math:`\rho_t, r_t` RAdam's
    (`scale_by_radam`). :math:`\epsilon` is added to the root of the raw
    :math:`v_t`, as torch adds it (``eps_hat=True``). With
    ``decoupled_weight_decay`` the decay is :math:`\theta \leftarrow
    \theta(1 - \eta\lambda)` instead, as in `AdamW`. torch switches at
    :math:`\rho_t > 5` and `scale_by_radam` at :math:`\rho_t \ge 5`; they
    could differ only at a step where :math:`\rho_t` is 5 exactly.

    Args:
      lr: :math:`\eta \ge 0`, or a schedule of the step.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      eps: :math:`\epsilon \ge 0`, added to the root of :math:`v_t`.
      weight_decay: :math:`\lambda \ge 0`.
      decoupled_weight_decay: decay the params by :math:`\eta\lambda` instead
        of adding :math:`\lambda\theta` to the gradient.
      maximize: ascend the objective instead.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.torch.RAdam(lr=1e-3, betas=(0.9, 0.99))
    """
    owner = "torch.RAdam"
    _check_lr(owner, lr)
    b1, b2 = _betas(owner, betas)
    validation.non_negative(owner, "eps", eps)
    validation.boolean(owner, "decoupled_weight_decay", decoupled_weight_decay)
    parts = _prologue(owner, maximize, weight_decay, coupled=not decoupled_weight_decay)
    parts += [scale_by_radam(b1=b1, b2=b2, eps=eps, threshold=_RADAM_THRESHOLD, eps_hat=True,
                             accurate_bias_correction=True),
              scale_by_learning_rate(lr)]
    parts += _epilogue(decoupled_weight_decay, weight_decay, lr)
    return returned_by(chain(*parts), owner)
