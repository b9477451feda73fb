"""Sign-based optimizers: Lion, signSGD and Signum, each a chain of public transforms.

They define no arithmetic of their own; names, arguments, defaults and the
order of the chain are optax 0.2.8's.
"""

from __future__ import annotations

from typing import Any, Callable

from gradxform.core import validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor
from gradxform.core.combine import chain
from gradxform.transforms.momentum import ema
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.sign import scale_by_lion, scale_by_sign
from gradxform.transforms.weight_decay import add_decayed_weights


@public_constructor
def lion(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    r"""Lion: the sign of interpolated momentum, with decoupled weight decay.

    .. math::
        c_t = (1-\beta_1) g_t + \beta_1 m_{t-1}, \quad
        \theta \leftarrow \theta - \eta_t \left(\operatorname{sign}(c_t) + \lambda \theta\right),
        \quad m_t = (1-\beta_2) g_t + \beta_2 m_{t-1}

    ``chain(scale_by_lion(b1, b2, mu_dtype), add_decayed_weights(weight_decay,
    mask), scale_by_learning_rate(learning_rate))``, as ``optax.lion``. The
    weight decay is multiplied by the learning rate, as in optax and PyTorch.
    Lion's steps have unit size per entry, so its learning rate is typically
    3 to 10 times smaller than AdamW's and its weight decay as much larger.
    Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms".

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1: :math:`\beta_1` in [0, 1], as in `scale_by_lion`.
      b2: :math:`\beta_2` in [0, 1], as in `scale_by_lion`.
      mu_dtype: dtype of the momentum :math:`m`; None keeps the params' dtype.
      weight_decay: :math:`\lambda \ge 0`, or a schedule.
      mask: which params decay, as in `add_decayed_weights`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.lion(1e-4, weight_decay=1e-2)
    """
    return chain(
        scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def sign_sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    r"""signSGD: descends along the sign of each gradient entry.

    .. math::
        \theta \leftarrow \theta - \eta_t \operatorname{sign}(g_t)

    ``chain(scale_by_sign(), scale_by_learning_rate(learning_rate))``, as
    ``optax.sign_sgd``. A zero gradient entry leaves its parameter unchanged.
    Bernstein et al., 2018, "signSGD: Compressed Optimisation for Non-Convex
    Problems".

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.sign_sgd(1e-3)
    """
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


@public_constructor
def signum(
    learning_rate: ScalarOrSchedule,
    beta: float = 0.9,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    r"""Signum: descends along the sign of a moving average of the gradient.

    .. math::
        m_t = \beta m_{t-1} + (1-\beta) g_t, \quad m_0 = 0, \qquad
        \theta \leftarrow \theta - \eta_t \operatorname{sign}(m_t)

    ``chain(ema(beta, debias=False, accumulator_dtype), scale_by_sign(),
    scale_by_learning_rate(learning_rate))``, as ``optax.signum``: the sign
    of the average is that of the debiased average, so it is not debiased.
    Unlike Lion, the update reads the average *after* this step's gradient
    entered it. Bernstein et al., 2018, "signSGD: Compressed Optimisation for
    Non-Convex Problems"; Zhao et al., 2024, "Deconstructing What Makes a Good
    Optimizer for Language Models".

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      beta: :math:`\beta` in [0, 1], the decay of the average.
      accumulator_dtype: dtype of :math:`m`; None keeps the params' dtype.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.signum(1e-3, beta=0.9)
    """
    # ema names its decay "decay": check it here, under this function's name for it.
    validation.decay_rate("signum", "beta", beta, allow_one=True)
    validation.float_dtype("signum", "accumulator_dtype", accumulator_dtype)
    return chain(
        ema(beta, debias=False, accumulator_dtype=accumulator_dtype),
        scale_by_sign(),
        scale_by_learning_rate(learning_rate),
    )
