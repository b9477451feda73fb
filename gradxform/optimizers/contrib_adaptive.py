"""ADOPT, AdEMAMix (and its simplified form) and MADGRAD: optax.contrib's adaptive methods.

Each is a chain of public transforms (transforms/adopt.py, ademamix.py,
madgrad.py) and defines no arithmetic of its own; names, arguments and
defaults are ``optax.contrib``'s (0.2.8).
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor
from gradxform.core.combine import chain
from gradxform.transforms.ademamix import scale_by_ademamix, scale_by_simplified_ademamix
from gradxform.transforms.adopt import adopt_clip_value, scale_by_adopt
from gradxform.transforms.madgrad import scale_by_madgrad
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.weight_decay import add_decayed_weights


@public_constructor
def adopt(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], Any] = adopt_clip_value,
) -> GradientTransformation:
    r"""ADOPT: Adam that normalises each gradient by the second moment before it.

    .. math::
        \theta \leftarrow \theta - \eta\, m_t, \qquad
        m_t = \beta_1 m_{t-1} + (1-\beta_1)\,
        \mathrm{clip}\!\left(g_t / \max(\sqrt{v_{t-1}}, \epsilon), c(t-1)\right)

    ``chain(scale_by_adopt(...), scale_by_learning_rate(learning_rate))``, as
    ``optax.contrib.adopt``; converges with any :math:`\beta_2`. The first
    update is zero (it only measures :math:`v`). Taniguchi et al., 2024.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps, mu_dtype, nesterov, use_clipping, clip_value_fn: as in `scale_by_adopt`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.adopt(1e-3)
    """
    return chain(
        scale_by_adopt(b1=b1, b2=b2, eps=eps, mu_dtype=mu_dtype, nesterov=nesterov,
                       use_clipping=use_clipping, clip_value_fn=clip_value_fn),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    weight_decay: float = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    r"""AdEMAMix: AdamW whose numerator mixes a slow EMA of the gradient into the fast one.

    .. math::
        \theta \leftarrow \theta - \eta \left(\frac{\hat m^{(1)}_t + \alpha\, m^{(2)}_t}
        {\sqrt{\hat \nu_t + \epsilon_{root}} + \epsilon} + \lambda \theta\right)

    ``chain(scale_by_ademamix(...), add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate))``, as ``optax.contrib.ademamix``
    (note its ``alpha`` default, 5, differs from the transform's 6). Best with
    many steps; a smaller ``b3`` (0.999) suits short runs. Pagliardini et al., 2024.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, b3, alpha, eps, eps_root, mu_dtype: as in `scale_by_ademamix`
        (``b3`` and ``alpha`` may be schedules).
      weight_decay: :math:`\lambda \ge 0`, multiplied by the learning rate.
      mask: which params decay, as in `add_decayed_weights`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.ademamix(1e-3, b3=0.999, weight_decay=1e-2)
    """
    return chain(
        scale_by_ademamix(b1=b1, b2=b2, b3=b3, alpha=alpha, eps=eps, eps_root=eps_root,
                          mu_dtype=mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def simplified_ademamix(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    r"""Simplified AdEMAMix: one accumulated momentum and the current gradient over Adam's root.

    .. math::
        \theta \leftarrow \theta - \eta \left(\frac{m_t + \alpha g_t}
        {\sqrt{\hat n_t + \epsilon_{root}} + \epsilon} + \lambda \theta\right),
        \qquad m_t = \beta_1 m_{t-1} + g_t

    ``chain(scale_by_simplified_ademamix(...), add_decayed_weights(weight_decay,
    mask), scale_by_learning_rate(learning_rate))``, as
    ``optax.contrib.simplified_ademamix``. Morwani et al., 2025.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, alpha, eps, eps_root: as in `scale_by_simplified_ademamix`.
      weight_decay: :math:`\lambda \ge 0`, multiplied by the learning rate.
      mask: which params decay, as in `add_decayed_weights`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.simplified_ademamix(1e-4, alpha=2.0)
    """
    return chain(
        scale_by_simplified_ademamix(b1=b1, b2=b2, alpha=alpha, eps=eps, eps_root=eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    eps: float = 1e-6,
) -> GradientTransformation:
    r"""MADGRAD: momentumised, adaptive dual averaging, with L2 weight decay.

    .. math::
        g_k \leftarrow g_k + \lambda x_k, \qquad
        x_{k+1} = (1-c)\left(x_0 - \frac{s_{k+1}}{G_{k+1}^{1/3} + \epsilon}\right) + c\, x_k

    ``chain(add_decayed_weights(weight_decay), scale_by_madgrad(learning_rate,
    momentum, eps))``, as ``optax.contrib.madgrad``: the decay is added to the
    gradient (L2), and `scale_by_madgrad` applies the learning rate itself, so
    nothing follows it. Needs the params in ``update``. Defazio and Jelassi, 2021.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule (see `scale_by_madgrad`).
      momentum: :math:`c` in [0, 1).
      weight_decay: :math:`\lambda \ge 0`.
      eps: :math:`\epsilon > 0`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.madgrad(1e-2, weight_decay=1e-4)
    """
    return chain(
        add_decayed_weights(weight_decay),
        scale_by_madgrad(learning_rate=learning_rate, momentum=momentum, eps=eps),
    )
