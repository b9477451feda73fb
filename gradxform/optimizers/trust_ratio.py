"""Layer-wise trust-ratio optimizers: LAMB, LARS and Fromage.

Each is a chain of public transforms with optax 0.2.8's names, arguments,
defaults and order; the layer-wise arithmetic is `scale_by_trust_ratio`'s.
Fromage also rescales its learning rate by :math:`1/\\sqrt{1+\\eta^2}`, a
function of the hyperparameter (or of the schedule's value), as optax does.
"""

from __future__ import annotations

from typing import Any, Callable

from gradxform.core import masks, validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor
from gradxform.core.combine import chain
from gradxform.transforms.adam import scale_by_adam
from gradxform.transforms.masking import masked
from gradxform.transforms.momentum import trace
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.trust_ratio import scale_by_trust_ratio
from gradxform.transforms.weight_decay import add_decayed_weights


@public_constructor
def lamb(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    r"""LAMB: Adam's step plus weight decay, rescaled layer by layer by the trust ratio.

    .. math::
        r_i = \frac{\hat m_{t,i}}{\sqrt{\hat v_{t,i} + \epsilon_{root}} + \epsilon}
        + \lambda\, \theta_i, \qquad
        \theta_i \leftarrow \theta_i - \eta\, \frac{\lVert\theta_i\rVert_2}{\lVert r_i\rVert_2}\, r_i

    for every leaf (layer) :math:`i`, the ratio taken as 1 where a norm is 0.
    ``chain(scale_by_adam(b1, b2, eps, eps_root), add_decayed_weights(weight_decay,
    mask), scale_by_trust_ratio(), scale_by_learning_rate(learning_rate))``, as
    ``optax.lamb``. You et al., 2020, "Large Batch Optimization for Deep
    Learning: Training BERT in 76 minutes".

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps, eps_root: as in `scale_by_adam` (note ``eps=1e-6`` here).
      weight_decay: :math:`\lambda \ge 0`, or a schedule.
      mask: which params decay, as in `add_decayed_weights`; None decays all.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.lamb(1e-3, weight_decay=1e-2, mask=["kernel"])
    """
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        add_decayed_weights(weight_decay=weight_decay, mask=mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Any | Callable[[Any], Any] = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: Any | Callable[[Any], Any] = True,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> GradientTransformation:
    r"""LARS: SGD with momentum on gradients rescaled layer by layer by the trust ratio.

    .. math::
        r_i = g_i + \lambda\, \theta_i, \qquad
        s_i = \eta\, \frac{c\, \lVert\theta_i\rVert_2}{\lVert r_i\rVert_2 + \epsilon}\, r_i,
        \qquad t_k = s + \mu\, t_{k-1}, \qquad \theta \leftarrow \theta - t_k

    for every leaf (layer) :math:`i`, the ratio taken as 1 where a norm is 0
    and only where ``trust_ratio_mask`` selects (1 elsewhere); with Nesterov,
    :math:`\theta \leftarrow \theta - (s + \mu t_k)`. ``chain(add_decayed_weights(
    weight_decay, weight_decay_mask), masked(scale_by_trust_ratio(
    trust_coefficient=..., eps=...), trust_ratio_mask),
    scale_by_learning_rate(learning_rate), trace(momentum, nesterov))``, as
    ``optax.lars``: the momentum acts after the learning rate. You et al.,
    2017, "Large Batch Training of Convolutional Networks".

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      weight_decay: :math:`\lambda \ge 0`, or a schedule.
      weight_decay_mask: which params decay, in any form `masked` accepts;
        True: all.
      trust_coefficient: :math:`c \ge 0`.
      eps: :math:`\epsilon \ge 0`, added to the norm of :math:`r_i`.
      trust_ratio_mask: which params get the trust ratio, in any form `masked`
        accepts; True: all.
      momentum: :math:`\mu` in [0, 1].
      nesterov: Nesterov momentum.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.lars(0.1, weight_decay=1e-4, trust_ratio_mask=["kernel"])
    """
    owner = "lars"
    masks.check_mask_argument(owner, "weight_decay_mask", weight_decay_mask)
    masks.check_mask_argument(owner, "trust_ratio_mask", trust_ratio_mask)
    validation.decay_rate(owner, "momentum", momentum, allow_one=True)
    validation.boolean(owner, "nesterov", nesterov)
    return chain(
        add_decayed_weights(weight_decay, mask=weight_decay_mask),
        masked(scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps),
               mask=trust_ratio_mask),
        scale_by_learning_rate(learning_rate),
        trace(decay=momentum, nesterov=nesterov),
    )


def _fromage_multiplier(rate: Any) -> Any:
    """optax's ``1 / (1 + eta**2) ** 0.5`` of a number or a 0-d array."""
    return 1 / (1 + rate**2) ** 0.5


class _FromageRate:
    """Fromage's step size :math:`\\eta / \\sqrt{1+\\eta^2}` of a schedule, as a schedule."""

    def __init__(self, learning_rate: Callable):
        self.learning_rate = learning_rate

    def __call__(self, count: Any) -> Any:
        rate = self.learning_rate(count)
        return rate * _fromage_multiplier(rate)

    def __repr__(self) -> str:
        return f"fromage_rate({self.learning_rate!r})"


class _FromageShrink:
    """Fromage's weight factor :math:`1/\\sqrt{1+\\eta^2} - 1 \\le 0`, as a schedule.

    A schedule, since `add_decayed_weights` takes only non-negative constants.
    """

    def __init__(self, learning_rate: Any):
        self.learning_rate = learning_rate

    def __call__(self, count: Any) -> Any:
        rate = self.learning_rate(count) if callable(self.learning_rate) else self.learning_rate
        return _fromage_multiplier(rate) - 1

    def __repr__(self) -> str:
        return f"fromage_shrink({self.learning_rate!r})"


@public_constructor
def fromage(learning_rate: ScalarOrSchedule, min_norm: float = 1e-6) -> GradientTransformation:
    r"""Fromage (Frobenius matched gradient descent): a trust-ratio step, then a shrink.

    .. math::
        \theta_i \leftarrow \frac{1}{\sqrt{1+\eta^2}} \left(\theta_i - \eta\,
        \frac{\max(\lVert\theta_i\rVert_2, m)}{\max(\lVert g_i\rVert_2, m)}\, g_i\right)

    for every leaf (layer) :math:`i`, the ratio taken as 1 where a norm is 0.
    ``chain(scale_by_trust_ratio(min_norm), scale_by_learning_rate(eta /
    sqrt(1 + eta**2)), add_decayed_weights(1 / sqrt(1 + eta**2) - 1))``, as
    ``optax.fromage``; the last weight factor is negative, so it is passed as a
    schedule. With a scheduled :math:`\eta` both factors follow the schedule.
    Bernstein et al., 2020, "On the distance between two neural networks and
    the stability of learning".

    Args:
      learning_rate: :math:`\eta \ge 0`, a number or a schedule.
      min_norm: :math:`m \ge 0`, the floor of both norms.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.fromage(0.01)
    """
    validation.scalar_or_schedule("fromage", "learning_rate", learning_rate)
    if callable(learning_rate):
        rate: Any = _FromageRate(learning_rate)
    else:
        rate = learning_rate * _fromage_multiplier(learning_rate)
    return chain(
        scale_by_trust_ratio(min_norm),
        scale_by_learning_rate(rate),
        add_decayed_weights(_FromageShrink(learning_rate)),
    )
