"""Lazy Adam, for embedding tables trained with row-sparse gradients."""

from __future__ import annotations

from typing import Any

from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor
from gradxform.core.combine import chain
from gradxform.transforms.lazy_adam import scale_by_lazy_adam
from gradxform.transforms.scaling import scale_by_learning_rate


@public_constructor
def lazy_adam(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    *,
    eps_hat: bool = False,
) -> GradientTransformation:
    r"""Adam that, for a row-sparse gradient, updates only the rows it touches (lazy Adam).

    .. math::
        \theta_r \leftarrow \theta_r - \eta\, \frac{\hat m_{t,r}}{\sqrt{\hat v_{t,r} +
        \epsilon_{root}} + \epsilon} \quad \text{for each touched row } r

    ``chain(scale_by_lazy_adam(...), scale_by_learning_rate(lr))``. Dense
    gradients give `adam`'s numbers; see `scale_by_lazy_adam` for the lazy rule.
    With ``eps_hat=True`` (and ``eps_root=0``) it is PyTorch's
    ``torch.optim.SparseAdam`` and TensorFlow Addons' ``LazyAdam``.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nu_dtype, eps_hat: as in `scale_by_lazy_adam`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.lazy_adam(1e-3, eps_hat=True)
      >>> params = {"emb": jnp.zeros((100, 8))}
      >>> grad = {"emb": gx.RowSparse(jnp.array([3, 7]), jnp.ones((2, 8)), num_rows=100)}
      >>> updates, state = tx.update(grad, tx.init(params))
      >>> int((gx.apply_updates(params, updates)["emb"] != 0).any(axis=1).sum())
      2
    """
    return chain(
        scale_by_lazy_adam(
            b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype,
            eps_hat=eps_hat,
        ),
        scale_by_learning_rate(learning_rate),
    )
