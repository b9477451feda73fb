"""Optimizers that learn their own step size: Prodigy, DoG, DoWG, COCOB, and Sophia.

Each is a chain of public transforms and defines no arithmetic of its own;
names, arguments, defaults and the order of the chain are
``optax.contrib``'s (0.2.8). ``mechanize``, which wraps any optimizer, is a
transform of its own (`gradxform.transforms.mechanic`).
"""

from __future__ import annotations

from typing import Any, Callable

from gradxform.core import masks
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor
from gradxform.core.combine import chain
from gradxform.core.primitives import identity
from gradxform.transforms.cocob import scale_by_cocob
from gradxform.transforms.dog import scale_by_dog, scale_by_dowg
from gradxform.transforms.prodigy import scale_by_prodigy
from gradxform.transforms.scaling import scale, scale_by_learning_rate
from gradxform.transforms.sophia import hutchinson_estimator_diag_hessian, scale_by_sophia
from gradxform.transforms.weight_decay import add_decayed_weights


@public_constructor
def prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    beta3: float | None = None,
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    estim_lr_coef: float = 1.0,
    weight_decay: float = 0.0,
    safeguard_warmup: bool = False,
) -> GradientTransformation:
    r"""Prodigy: AdamW with a step size estimated from the distance travelled.

    .. math::
        \theta \leftarrow \theta - \lambda_t \Big(\frac{m_t}{\sqrt{v_t} + d_t\, \epsilon}
        + \omega\, \theta\Big), \qquad
        \lambda_t = d_{t-1}\, \eta_t \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}

    with :math:`m, v` Adam's moments of :math:`d\, g` and the estimate
    :math:`d_t` as in `scale_by_prodigy`. ``chain(scale_by_prodigy(...),
    scale(-1.0))``; the numbers of ``optax.contrib.prodigy`` (one
    transformation there, whose ``ProdigyState`` is this chain's
    ``state[0]``), except where `scale_by_prodigy` says. Use a learning rate
    of 1 (or a schedule peaking at 1, with a warm-up). Mishchenko and
    Defazio, 2023, "Prodigy: An Expeditiously Adaptive Parameter-Free
    Learner".

    Args:
      learning_rate: :math:`\eta \ge 0`, a number or a schedule.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      beta3: :math:`\beta_3` in [0, 1], or None for :math:`\sqrt{\beta_2}`.
      eps: :math:`\epsilon \ge 0`.
      estim_lr0: :math:`d_0 > 0`, the initial estimate.
      estim_lr_coef: :math:`c \ge 0`, a multiplier of each estimate.
      weight_decay: :math:`\omega \ge 0`, decoupled weight decay.
      safeguard_warmup: leave :math:`\eta_t` out of the estimate's denominator.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.prodigy(weight_decay=1e-2)
    """
    return chain(
        scale_by_prodigy(learning_rate=learning_rate, betas=betas, beta3=beta3, eps=eps,
                         estim_lr0=estim_lr0, estim_lr_coef=estim_lr_coef,
                         weight_decay=weight_decay, safeguard_warmup=safeguard_warmup),
        scale(-1.0),
    )


def _decay(owner: str, weight_decay: Any, mask: Any) -> GradientTransformation:
    """optax's ``add_decayed_weights(weight_decay, mask)``, or the identity for None."""
    masks.check_mask_argument(owner, "mask", mask)
    return identity() if weight_decay is None else add_decayed_weights(weight_decay, mask)


@public_constructor
def dog(
    learning_rate: ScalarOrSchedule = 1.0,
    init_step: tuple[str, float] = ("heuristic", 1e-6),
    eps: float = 1e-8,
    weight_decay: float | None = None,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    r"""DoG (distance over gradients): SGD stepping by the distance travelled over gradient norms.

    .. math::
        \tilde g_t = g_t + \lambda \theta_t, \quad
        \bar r_t = \max_{k \le t} \lVert \theta_k - \theta_0 \rVert, \quad
        G_t = \sum_{k \le t} \lVert \tilde g_k \rVert^2, \qquad
        \theta \leftarrow \theta - \eta_t \frac{\bar r_t}{\sqrt{G_t + \epsilon}}\, \tilde g_t

    ``chain(add_decayed_weights(weight_decay, mask) (or the identity for
    None), scale_by_dog(init_step, eps), scale_by_learning_rate(learning_rate))``,
    as ``optax.contrib.dog``. ``init`` needs the real params with the
    ``heuristic`` start. The authors recommend averaging the iterates. Ivgi
    et al., 2023, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
    Size Schedule".

    Args:
      learning_rate: :math:`\eta \ge 0`, a number or a schedule (1: plain DoG).
      init_step: ``(kind, value)``, the start, as in `scale_by_dog`.
      eps: :math:`\epsilon \ge 0`, added to the sum of squared norms.
      weight_decay: :math:`\lambda \ge 0` added to the gradients, or None.
      mask: which params decay, as in `add_decayed_weights`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.dog(init_step=("heuristic", 1e-4))
    """
    return chain(
        _decay("dog", weight_decay, mask),
        scale_by_dog(init_step=init_step, eps=eps),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def dowg(
    learning_rate: ScalarOrSchedule = 1.0,
    init_estim_sq_dist: float | None = None,
    eps: float = 1e-4,
    weight_decay: float | None = None,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    r"""DoWG (distance over weighted gradients): a parameter-free step size for gradient descent.

    .. math::
        \bar r_t^2 = \max(\bar r_{t-1}^2, \lVert \theta_t - \theta_0 \rVert^2), \quad
        v_t = v_{t-1} + \bar r_t^2 \lVert \tilde g_t \rVert^2, \qquad
        \theta \leftarrow \theta - \eta_t \frac{\bar r_t^2}{\sqrt{v_t} + \epsilon}\, \tilde g_t

    with :math:`\tilde g_t = g_t + \lambda \theta_t`. ``chain(add_decayed_weights(
    weight_decay, mask) (or the identity for None), scale_by_dowg(
    init_estim_sq_dist, eps), scale_by_learning_rate(learning_rate))``, as
    ``optax.contrib.dowg``. Khaled et al., 2023, "DoWG Unleashed: An
    Efficient Universal Parameter-Free Gradient Descent Method".

    Args:
      learning_rate: :math:`\eta \ge 0`, a number or a schedule.
      init_estim_sq_dist: :math:`\bar r_0^2 > 0`, or None for ``eps``.
      eps: :math:`\epsilon > 0`.
      weight_decay: :math:`\lambda \ge 0` added to the gradients, or None.
      mask: which params decay, as in `add_decayed_weights`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.dowg(init_estim_sq_dist=1e-2)
    """
    return chain(
        _decay("dowg", weight_decay, mask),
        scale_by_dowg(init_estim_sq_dist=init_estim_sq_dist, eps=eps),
        scale_by_learning_rate(learning_rate),
    )


@public_constructor
def cocob(
    learning_rate: ScalarOrSchedule = 1.0,
    alpha: float = 100.0,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    r"""COCOB-Backprop: coin betting on each parameter, without a learning rate.

    .. math::
        \tilde g_t = \eta_t (g_t + \lambda \theta_t), \qquad
        \theta_{t+1} = \theta_0 + \frac{C_t (L_t + R_t)}{L_t \max(G_t + L_t, \alpha L_t)}

    with the statistics :math:`C, L, G, R` of :math:`\tilde g` as in
    `scale_by_cocob`. ``chain(add_decayed_weights(weight_decay, mask),
    scale_by_learning_rate(learning_rate, flip_sign=False),
    scale_by_cocob(alpha, eps))``, as ``optax.contrib.cocob``: the learning
    rate scales the gradients (it is 1 in the paper), and the descent is part
    of the bet. Orabona and Tommasi, 2017, "Training Deep Networks without
    Learning Rates Through Coin Betting".

    Args:
      learning_rate: :math:`\eta \ge 0`, a number or a schedule.
      alpha: :math:`\alpha \ge 0`.
      eps: :math:`\epsilon > 0`, the initial :math:`L`.
      weight_decay: :math:`\lambda \ge 0`, or a schedule.
      mask: which params decay, as in `add_decayed_weights`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.cocob(weight_decay=1e-4)
    """
    return chain(
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate, flip_sign=False),
        scale_by_cocob(alpha=alpha, eps=eps),
    )


@public_constructor
def sophia(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    weight_decay_mask: Any | Callable[[Any], Any] | None = None,
    gamma: float = 0.01,
    clip_threshold: float | None = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: GradientTransformation = hutchinson_estimator_diag_hessian(),
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> GradientTransformation:
    r"""Sophia: clipped steps preconditioned by a moving average of the Hessian's diagonal.

    .. math::
        \theta \leftarrow \theta - \eta_t \Big(\mathrm{clip}\Big(\frac{\hat m_t}
        {\max(\gamma h_{t-1}, \epsilon)}, \pm\rho\Big) + \lambda \theta\Big)

    with :math:`\hat m_t` the debiased momentum and :math:`h` the moving
    average of the diagonal estimates, refreshed every ``update_interval``
    steps (`scale_by_sophia`). ``chain(scale_by_sophia(...),
    add_decayed_weights(weight_decay, weight_decay_mask),
    scale_by_learning_rate(learning_rate))``, as ``optax.contrib.sophia``.
    The default estimator needs the objective at every update:
    ``tx.update(grads, state, params, obj_fn=lambda p: loss(p, batch))``.
    Liu et al., 2023, "Sophia: A Scalable Stochastic Second-order Optimizer
    for Language Model Pre-training".

    Args:
      learning_rate: :math:`\eta \ge 0`, a number or a schedule.
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon > 0`.
      weight_decay: :math:`\lambda \ge 0`, or a schedule.
      weight_decay_mask: which params decay, as ``mask`` in `add_decayed_weights`.
      gamma: :math:`\gamma \ge 0`.
      clip_threshold: :math:`\rho > 0`, or None.
      update_interval: steps between Hessian estimates (an int >= 1).
      hessian_diagonal_fn: the estimator of the diagonal
        (`hutchinson_estimator_diag_hessian` by default).
      mu_dtype: dtype of the momentum; None keeps the params' dtype.
      verbose: print the share of unclipped entries.
      print_win_rate_every_n_steps: how often to print it (0: never).

    Example:
      >>> import gradxform as gx
      >>> tx = gx.sophia(1e-3, weight_decay=1e-2)
    """
    masks.check_mask_argument("sophia", "weight_decay_mask", weight_decay_mask)
    return chain(
        scale_by_sophia(
            b1=b1, b2=b2, eps=eps, gamma=gamma, clip_threshold=clip_threshold,
            update_interval=update_interval, hessian_diagonal_fn=hessian_diagonal_fn,
            mu_dtype=mu_dtype, verbose=verbose,
            print_win_rate_every_n_steps=print_win_rate_every_n_steps),
        add_decayed_weights(weight_decay, mask=weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
