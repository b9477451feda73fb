"""Adam's family: AdaBelief, AdaMax(W), AMSGrad, NAdam(W), RAdam, Yogi, NovoGrad.

Each is a chain of public transforms ending in ``scale_by_learning_rate``;
none defines arithmetic of its own. Names, arguments and defaults are optax
0.2.8's (``nadam`` and ``nadamw`` are optax's ``adam`` and ``adamw`` with
``nesterov=True``).
"""

from __future__ import annotations

from typing import Any, Callable

from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor
from gradxform.core.combine import chain
from gradxform.transforms.adam import scale_by_adam, scale_by_amsgrad
from gradxform.transforms.adam_variants import scale_by_belief, scale_by_radam, scale_by_yogi
from gradxform.transforms.adamax import scale_by_adamax
from gradxform.transforms.novograd import scale_by_novograd
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.weight_decay import add_decayed_weights

Mask = Any | Callable[[Any], Any] | None


@public_constructor
def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""AdaBelief: Adam whose step is scaled by the variance of the gradient around its mean.

    .. math::
        \theta \leftarrow \theta - \eta\, \frac{\hat m_t}{\sqrt{\hat s_t} + \epsilon}, \qquad
        s_t = \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_t)^2 + \epsilon_{root}

    ``chain(scale_by_belief(...), scale_by_learning_rate(learning_rate))``, as
    ``optax.adabelief``. Zhuang et al., 2020.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps, eps_root, nesterov: as in `scale_by_belief`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.adabelief(1e-3)
    """
    return chain(
        scale_by_belief(b1=b1, b2=b2, eps=eps, eps_root=eps_root, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def adamax(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> GradientTransformation:
    r"""AdaMax: Adam with the infinity norm of the gradients in place of their second moment.

    .. math::
        v_t = \max(\beta_2 v_{t-1}, |g_t| + \epsilon), \qquad
        \theta \leftarrow \theta - \eta\, \frac{m_t / (1-\beta_1^t)}{v_t}

    ``chain(scale_by_adamax(...), scale_by_learning_rate(learning_rate))``, as
    ``optax.adamax``. Kingma and Ba, 2015.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps: as in `scale_by_adamax`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.adamax(2e-3)
    """
    return chain(scale_by_adamax(b1=b1, b2=b2, eps=eps), scale_by_learning_rate(learning_rate))


@public_constructor
def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask = None,
) -> GradientTransformation:
    r"""AdaMax with decoupled weight decay.

    .. math::
        \theta \leftarrow \theta - \eta \left(\frac{m_t / (1-\beta_1^t)}{v_t} + \lambda \theta\right)

    ``chain(scale_by_adamax(...), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``, as ``optax.adamaxw``.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps: as in `scale_by_adamax`.
      weight_decay: :math:`\lambda \ge 0`, or a schedule.
      mask: which params decay, as in `add_decayed_weights`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.adamaxw(2e-3, weight_decay=1e-2)
    """
    return chain(
        scale_by_adamax(b1=b1, b2=b2, eps=eps),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> GradientTransformation:
    r"""AMSGrad: Adam with the running maximum of the raw second moment (PyTorch's, Keras's).

    .. math::
        v^{max}_t = \max(v^{max}_{t-1}, v_t), \qquad
        \theta \leftarrow \theta - \eta\, \frac{m_t / (1-\beta_1^t)}
        {\sqrt{v^{max}_t / (1-\beta_2^t) + \epsilon_{root}} + \epsilon}

    ``chain(scale_by_amsgrad(...), scale_by_learning_rate(learning_rate))``,
    with optax's arguments and defaults. The maximum is over the raw
    :math:`v_t`, as ``torch.optim.Adam(amsgrad=True)`` and Keras take it;
    this deliberately differs from ``optax.amsgrad``, which takes the maximum
    of the bias-corrected :math:`\hat v_t` (the two agree with
    ``bias_correction_nu=False``). Reddi et al., 2018.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps, eps_root, mu_dtype: as in `scale_by_amsgrad`.
      bias_correction_mu: divide :math:`m_t` by :math:`1-\beta_1^t`.
      bias_correction_nu: divide :math:`v^{max}_t` by :math:`1-\beta_2^t`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.amsgrad(1e-3)
    """
    return chain(
        scale_by_amsgrad(
            b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype,
            bias_correction_mu=bias_correction_mu, bias_correction_nu=bias_correction_nu,
        ),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def nadam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    r"""NAdam: Adam with Nesterov momentum.

    .. math::
        \hat m_t = \beta_1 \frac{m_t}{1-\beta_1^{t+1}} + (1-\beta_1)\frac{g_t}{1-\beta_1^t},
        \qquad \theta \leftarrow \theta - \eta\, \frac{\hat m_t}{\sqrt{\hat v_t +
        \epsilon_{root}} + \epsilon}

    ``chain(scale_by_adam(..., nesterov=True), scale_by_learning_rate(learning_rate))``:
    optax's ``nadam``, which is ``adam`` with ``nesterov=True``. Dozat, 2016.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps, eps_root, mu_dtype: as in `scale_by_adam`.
      nesterov: True (NAdam); False gives plain Adam, as in optax.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.nadam(2e-3)
    """
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype,
                      nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Mask = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    r"""NAdamW: NAdam with decoupled weight decay.

    .. math::
        \theta \leftarrow \theta - \eta \left(\frac{\hat m_t}{\sqrt{\hat v_t +
        \epsilon_{root}} + \epsilon} + \lambda \theta\right), \quad
        \hat m_t \text{ as in } \mathrm{nadam}

    ``chain(scale_by_adam(..., nesterov=True), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``: optax's ``nadamw``, which is
    ``adamw`` with ``nesterov=True``.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps, eps_root, mu_dtype: as in `scale_by_adam`.
      weight_decay: :math:`\lambda \ge 0`, or a schedule.
      mask: which params decay, as in `add_decayed_weights`.
      nesterov: True (NAdamW); False gives plain AdamW, as in optax.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.nadamw(1e-3, weight_decay=1e-2)
    """
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype,
                      nesterov=nesterov),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def radam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""RAdam: Adam whose adaptive step is rectified, and skipped while its variance is intractable.

    .. math::
        \theta \leftarrow \theta - \eta \begin{cases}
        r_t\, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon) & \rho_t \ge \tau \\
        \hat m_t & \text{otherwise} \end{cases}

    ``chain(scale_by_radam(...), scale_by_learning_rate(learning_rate))``, as
    ``optax.radam``; :math:`r_t, \rho_t` are defined in `scale_by_radam`.
    Liu et al., 2020.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps, eps_root, threshold, nesterov: as in `scale_by_radam`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.radam(1e-3)
    """
    return chain(
        scale_by_radam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, threshold=threshold,
                       nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def yogi(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
) -> GradientTransformation:
    r"""Yogi: Adam whose second moment changes additively, controlled by the sign of the gap.

    .. math::
        v_t = v_{t-1} - (1-\beta_2)\, \mathrm{sign}(v_{t-1} - g_t^2)\, g_t^2, \qquad
        \theta \leftarrow \theta - \eta\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    ``chain(scale_by_yogi(b1, b2, eps), scale_by_learning_rate(learning_rate))``,
    as ``optax.yogi`` (moments start at ``1e-6``). Zaheer et al., 2018.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps: as in `scale_by_yogi`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.yogi(1e-2)
    """
    return chain(scale_by_yogi(b1=b1, b2=b2, eps=eps), scale_by_learning_rate(learning_rate))


@public_constructor
def novograd(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    r"""NovoGrad: momentum of gradients normalised by each layer's moving gradient norm.

    .. math::
        v_t = \beta_2 v_{t-1} + (1-\beta_2) \lVert g_t \rVert^2, \quad
        m_t = \beta_1 m_{t-1} + \frac{g_t}{\sqrt{v_t + \epsilon_{root}} + \epsilon} + \lambda\theta,
        \qquad \theta \leftarrow \theta - \eta\, m_t

    ``chain(scale_by_novograd(...), scale_by_learning_rate(learning_rate))``, as
    ``optax.novograd``. ``weight_decay`` is a number, as optax's transform
    needs (optax's alias annotates a schedule, which its transform cannot use).
    Ginsburg et al., 2019.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps, eps_root: as in `scale_by_novograd`.
      weight_decay: :math:`\lambda \ge 0`, inside the moment (needs the params).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.novograd(1e-2)
    """
    return chain(
        scale_by_novograd(b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay),
        scale_by_learning_rate(learning_rate),
    )
