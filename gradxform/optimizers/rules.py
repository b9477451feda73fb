"""Optimizers with a scaling rule of their own: Adadelta, Adan, Rprop, optimistic methods, Polyak.

Each is a chain of public transforms and defines no arithmetic of its own;
names, arguments, defaults and the order of the chain are optax 0.2.8's.
Where the numbers differ from optax's (Adan, Rprop), the transform's
docstring says how and why.
"""

from __future__ import annotations

from typing import Any, Callable

from gradxform.core import masks, validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor
from gradxform.core.combine import chain
from gradxform.optimizers.standard import sgd
from gradxform.transforms.adadelta import scale_by_adadelta
from gradxform.transforms.adam import scale_by_adam
from gradxform.transforms.adan import scale_by_adan
from gradxform.transforms.optimistic import scale_by_optimistic_gradient
from gradxform.transforms.polyak import scale_by_polyak
from gradxform.transforms.rprop import scale_by_rprop
from gradxform.transforms.scaling import scale, scale_by_learning_rate
from gradxform.transforms.weight_decay import add_decayed_weights


@public_constructor
def adadelta(
    learning_rate: ScalarOrSchedule | None = None,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    r"""Adadelta, with optional weight decay added to the gradients first.

    .. math::
        \tilde g_t = g_t + \lambda \theta_t, \quad
        E[\tilde g^2]_t = \rho E[\tilde g^2]_{t-1} + (1-\rho) \tilde g_t^2, \quad
        \theta \leftarrow \theta - \eta\, \frac{\sqrt{E[\Delta x^2]_{t-1} + \epsilon}}
        {\sqrt{E[\tilde g^2]_t + \epsilon}}\, \tilde g_t

    ``chain(add_decayed_weights(weight_decay, weight_decay_mask),
    scale_by_adadelta(rho, eps), scale_by_learning_rate(learning_rate))``, as
    ``optax.adadelta``. With ``learning_rate=None`` (the default, as in optax)
    the last step is the identity: the updates are *not* negated, so give a
    learning rate (1.0 is Zeiler's rule) to descend. Zeiler, 2012, "ADADELTA:
    An Adaptive Learning Rate Method".

    Args:
      learning_rate: :math:`\eta`, a number or a schedule, or None for no scaling.
      rho: :math:`\rho` in [0, 1], as in `scale_by_adadelta`.
      eps: :math:`\epsilon > 0`, as in `scale_by_adadelta`.
      weight_decay: :math:`\lambda \ge 0`, or a schedule.
      weight_decay_mask: which params decay, as ``mask`` in `add_decayed_weights`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.adadelta(learning_rate=1.0, rho=0.95)
    """
    masks.check_mask_argument("adadelta", "weight_decay_mask", weight_decay_mask)
    return chain(
        add_decayed_weights(weight_decay, mask=weight_decay_mask),
        scale_by_adadelta(rho=rho, eps=eps),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def adan(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    r"""Adan (adaptive Nesterov momentum), with decoupled weight decay.

    .. math::
        \theta \leftarrow \theta - \eta \left(\frac{\hat m_t + \beta_2 \hat v_t}
        {\sqrt{\hat n_t + \epsilon_{root}} + \epsilon} + \lambda \theta\right)

    ``chain(scale_by_adan(b1, b2, b3, eps, eps_root), add_decayed_weights(weight_decay,
    mask), scale_by_learning_rate(learning_rate))``, as ``optax.adan`` (the
    weight decay is the authors' ``no_prox`` form, multiplied by the learning
    rate). The moments follow the paper, which optax 0.2.8 does not (see
    `scale_by_adan`). Note the default ``eps_root=1e-8`` here, 0 in the
    transform, as in optax. Xie et al., 2022, "Adan: Adaptive Nesterov
    Momentum Algorithm for Faster Optimizing Deep Models".

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1: :math:`\beta_1` in [0, 1), as in `scale_by_adan`.
      b2: :math:`\beta_2` in [0, 1), as in `scale_by_adan`.
      b3: :math:`\beta_3` in [0, 1), as in `scale_by_adan`.
      eps: :math:`\epsilon \ge 0`, outside the square root.
      eps_root: :math:`\epsilon_{root} \ge 0`, inside the square root.
      weight_decay: :math:`\lambda \ge 0`, or a schedule.
      mask: which params decay, as in `add_decayed_weights`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.adan(1e-3, weight_decay=0.02)
    """
    return chain(
        scale_by_adan(b1=b1, b2=b2, b3=b3, eps=eps, eps_root=eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
) -> GradientTransformation:
    r"""Rprop: each parameter moves by its own step size against the sign of its gradient.

    .. math::
        \theta \leftarrow \theta - u_t, \qquad
        u_t = \Delta_t \operatorname{sign}(g_t) \; (0 \text{ right after a sign flip})

    with :math:`\Delta_t` grown by :math:`\eta^+` while the gradient keeps
    its sign and shrunk by :math:`\eta^-` when it flips (`scale_by_rprop`).
    ``chain(scale_by_rprop(...), scale(-1.0))``, as ``optax.rprop``; unlike
    optax 0.2.8, each step applies its own update rather than the previous
    step's (optax#1725), as ``torch.optim.Rprop`` does. Rprop ignores the
    gradients' magnitude and suits full-batch training. Riedmiller and Braun,
    1993, "A direct adaptive method for faster backpropagation learning: the
    RPROP algorithm".

    Args:
      learning_rate: :math:`\Delta_0 > 0`, the initial step size.
      eta_minus: :math:`\eta^-` in (0, 1].
      eta_plus: :math:`\eta^+ \ge 1`.
      min_step_size: :math:`\Delta_{min} \ge 0`.
      max_step_size: :math:`\Delta_{max} > 0`, at least ``min_step_size``.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.rprop(learning_rate=1e-3)
    """
    return chain(
        scale_by_rprop(
            learning_rate=learning_rate, eta_minus=eta_minus, eta_plus=eta_plus,
            min_step_size=min_step_size, max_step_size=max_step_size,
        ),
        scale(-1.0),
    )


@public_constructor
def optimistic_gradient_descent(
    learning_rate: ScalarOrSchedule,
    alpha: float = 1.0,
    beta: float = 1.0,
) -> GradientTransformation:
    r"""Optimistic gradient descent: extrapolates from the previous gradient (min-max games).

    .. math::
        \theta \leftarrow \theta - \eta_t \left((\alpha + \beta) g_t - \beta g_{t-1}\right),
        \qquad g_0 := g_1

    ``chain(scale_by_optimistic_gradient(alpha, beta), scale_by_learning_rate(lr))``,
    as ``optax.optimistic_gradient_descent``. ``alpha`` and ``beta`` are
    numbers (optax's annotation allows schedules, which its transform cannot
    use); inject them with `inject_hyperparams` to change them between steps.
    Mokhtari et al., 2020, "A Unified Analysis of Extra-gradient and
    Optimistic Gradient Methods for Saddle Point Problems: Proximal Point
    Approach".

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      alpha: :math:`\alpha`, a finite real number.
      beta: :math:`\beta`, a finite real number (the negative momentum).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.optimistic_gradient_descent(1e-2)
    """
    return chain(
        scale_by_optimistic_gradient(alpha=alpha, beta=beta),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def optimistic_adam(
    learning_rate: float,
    optimism: float | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
) -> GradientTransformation:
    r"""Optimistic Adam: optimistic steps along Adam's direction (GANs, min-max problems).

    .. math::
        r_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}, \qquad
        \theta \leftarrow \theta - \eta\, r_t - o\, (r_t - r_{t-1}), \quad r_0 := r_1

    ``chain(scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
    scale_by_optimistic_gradient(alpha=learning_rate, beta=optimism),
    scale_by_learning_rate(1.0))``, as ``optax.optimistic_adam`` (with
    Nesterov momentum by default, as there). The learning rate is the
    optimistic transform's :math:`\alpha`, so it must be a number, not a
    schedule (a `TypeError`, where optax raises a `ValueError`); optax also
    warns that it is deprecated in favour of its ``optimistic_adam_v2``.
    Daskalakis et al., 2018, "Training GANs with Optimism".

    Args:
      learning_rate: :math:`\eta \ge 0`, a number.
      optimism: :math:`o`, a finite real number; None means ``learning_rate``,
        as in the paper.
      b1: :math:`\beta_1` in [0, 1), as in `scale_by_adam`.
      b2: :math:`\beta_2` in [0, 1), as in `scale_by_adam`.
      eps: :math:`\epsilon \ge 0`, as in `scale_by_adam`.
      eps_root: :math:`\epsilon_{root} \ge 0`, as in `scale_by_adam`.
      mu_dtype: dtype of the first moment; None keeps the params' dtype.
      nesterov: use NAdam's Nesterov momentum for :math:`\hat m_t`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.optimistic_adam(1e-2, optimism=1.0)
    """
    owner = "optimistic_adam"
    if callable(learning_rate):
        raise TypeError(
            f"{owner}: learning_rate must be a number, not a schedule: it is the alpha of "
            f"scale_by_optimistic_gradient; got {learning_rate!r}"
        )
    validation.non_negative(owner, "learning_rate", learning_rate)
    validation.optional_real(owner, "optimism", optimism)
    return chain(
        scale_by_adam(
            b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov
        ),
        scale_by_optimistic_gradient(
            alpha=learning_rate, beta=learning_rate if optimism is None else optimism
        ),
        scale_by_learning_rate(1.0),
    )


@public_constructor
def polyak_sgd(
    max_learning_rate: float = 1.0,
    scaling: ScalarOrSchedule = 1.0,
    f_min: float = 0.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> GradientTransformation:
    r"""SGD with Polyak's step size; ``update`` takes the current loss as ``value=``.

    .. math::
        \theta \leftarrow \theta - s_t\, g_t \cdot \min\left(
        \frac{f(\theta) - f^\star}{s_t^2 \lVert g_t \rVert^2 + \epsilon},\, \gamma_{max}\right)

    ``chain(sgd(learning_rate=scaling), scale_by_polyak(max_learning_rate,
    f_min, eps, variant))``, as ``optax.polyak_sgd``: the Polyak step is
    computed from the already scaled updates :math:`-s_t g_t`, hence the
    :math:`s_t^2` above (optax's docstring writes
    :math:`s \min(\cdot, \gamma_{max})`, which its chain computes only for
    :math:`s = 1`, the default). Pass the loss at each step:
    ``tx.update(grads, state, params, value=loss)``; without it, ``update``
    raises a `TypeError`. Loizou et al., 2021, "Stochastic Polyak Step-size
    for SGD: An Adaptive Learning Rate for Fast Convergence".

    Args:
      max_learning_rate: :math:`\gamma_{max} \ge 0`, the largest step.
      scaling: :math:`s_t \ge 0`, a number or a schedule.
      f_min: :math:`f^\star`, a lower bound of the loss.
      eps: :math:`\epsilon \ge 0`, added to the squared norm.
      variant: "sps" or "sps+" (the positive part of the gap), as in `scale_by_polyak`.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> loss = lambda w: jnp.sum(w ** 2)
      >>> w = jnp.array([1.0, 2.0, 3.0])
      >>> tx = gx.polyak_sgd()
      >>> state = tx.init(w)
      >>> value, grad = jax.value_and_grad(loss)(w)
      >>> updates, state = tx.update(grad, state, w, value=value)
      >>> loss(gx.apply_updates(w, updates))
      Array(3.5, dtype=float32)
    """
    validation.scalar_or_schedule("polyak_sgd", "scaling", scaling)
    return chain(
        sgd(learning_rate=scaling),
        scale_by_polyak(max_learning_rate=max_learning_rate, f_min=f_min, eps=eps, variant=variant),
    )
