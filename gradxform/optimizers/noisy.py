"""Noisy SGD: gradient descent on gradients with annealed Gaussian noise added."""

from __future__ import annotations

from typing import Any

from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor
from gradxform.core.combine import chain
from gradxform.transforms.noise import add_noise
from gradxform.transforms.scaling import scale_by_learning_rate


@public_constructor
def noisy_sgd(
    learning_rate: ScalarOrSchedule,
    eta: float = 0.01,
    gamma: float = 0.55,
    key: Any = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    r"""SGD with annealed Gaussian gradient noise.

    .. math::
        \theta \leftarrow \theta - \eta_t \left(g_t + \sigma_t\, \xi_t\right), \qquad
        \sigma_t^2 = \frac{\eta}{t^{\gamma}}, \quad \xi_t \sim \mathcal{N}(0, I),
        \quad t = 1, 2, \ldots

    with :math:`\eta_t` the learning rate. ``chain(add_noise(eta, gamma, key,
    seed=seed), scale_by_learning_rate(learning_rate))``, as ``optax.noisy_sgd``,
    with the same numbers for the same key. Neelakantan et al., 2015.

    Args:
      learning_rate: :math:`\eta_t`, a number or a schedule.
      eta: the variance of the noise at the first step, :math:`\eta \ge 0`.
      gamma: the exponent of its annealing, :math:`\gamma \ge 0`.
      key: the random key: an int seed, a ``jax.random.key`` or a
        ``jax.random.PRNGKey``; None means seed 0.
      seed: optax's older name for an int ``key``; give ``key`` or ``seed``, not both.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.noisy_sgd(learning_rate=0.01, key=0)
    """
    return chain(
        add_noise(eta, gamma, key, seed=seed),
        scale_by_learning_rate(learning_rate),
    )
