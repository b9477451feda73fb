"""L-BFGS: the L-BFGS direction, a descent sign or a learning rate, and a line search."""

from __future__ import annotations

from gradxform.core import validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor
from gradxform.core.combine import chain
from gradxform.core.primitives import identity
from gradxform.transforms.lbfgs import scale_by_lbfgs
from gradxform.transforms.scaling import scale, scale_by_learning_rate
from gradxform.transforms.zoom_linesearch import scale_by_zoom_linesearch


@public_constructor
def lbfgs(
    learning_rate: ScalarOrSchedule | None = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: GradientTransformation | None = scale_by_zoom_linesearch(
        max_linesearch_steps=20, initial_guess_strategy="one"
    ),
) -> GradientTransformation:
    r"""L-BFGS with a line search: the quasi-Newton step, scaled to meet the Wolfe conditions.

    .. math::
        w_{k+1} = w_k - \eta_k P_k \nabla f(w_k)

    with :math:`P_k` the L-BFGS inverse-Hessian estimate (`scale_by_lbfgs`) and
    :math:`\eta_k` the line search's step (times ``learning_rate`` if given).
    ``chain(scale_by_lbfgs(memory_size, scale_init_precond), scale(-1.0) or
    scale_by_learning_rate(learning_rate), linesearch or identity())``, as
    ``optax.lbfgs``. ``update`` takes the objective as keyword arguments for the
    line search: ``tx.update(grad, state, params, value=value, grad=grad,
    value_fn=f)``; `value_and_grad_from_state` reuses the value and gradient
    the search computed at the new params, so each step evaluates the
    objective only inside the search. With ``linesearch=None`` it is L-BFGS
    with a fixed learning rate. Nocedal & Wright, 1999, "Numerical
    Optimization", Algorithms 7.4 and 7.5; Liu & Nocedal, 1989.

    Args:
      learning_rate: a number or a schedule scaling the direction, or None
        for -1 (the step is left to the line search).
      memory_size: the number of past pairs kept, as in `scale_by_lbfgs`.
      scale_init_precond: as in `scale_by_lbfgs`.
      linesearch: a line search transformation, such as
        `scale_by_zoom_linesearch` (the default, 20 steps, first guess 1) or
        `scale_by_backtracking_linesearch`, or None for none.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> f = lambda w: jnp.sum((w - jnp.array([1.0, 2.0])) ** 2)
      >>> w = jnp.zeros(2)
      >>> tx = gx.lbfgs()
      >>> state = tx.init(w)
      >>> value_and_grad = gx.value_and_grad_from_state(f)
      >>> for _ in range(2):
      ...     value, grad = value_and_grad(w, state=state)
      ...     updates, state = tx.update(grad, state, w, value=value, grad=grad, value_fn=f)
      ...     w = gx.apply_updates(w, updates)
      >>> w
      Array([1., 2.], dtype=float32)
    """
    if linesearch is not None:
        validation.transformation("lbfgs", "linesearch", linesearch)
    if learning_rate is None:
        base_scaling = scale(-1.0)
    else:
        base_scaling = scale_by_learning_rate(learning_rate)
    return chain(
        scale_by_lbfgs(memory_size=memory_size, scale_init_precond=scale_init_precond),
        base_scaling,
        identity() if linesearch is None else linesearch,
    )
