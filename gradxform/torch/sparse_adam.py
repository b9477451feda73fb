r"""``torch.optim.SparseAdam`` as a gradxform chain: lazy Adam for embedding tables.

``scale(-1.0)`` for ``maximize``, ``scale_by_lazy_adam(eps_hat=True,
accurate_bias_correction=True)`` and
``scale_by_learning_rate``: each declares a row-sparse rule, so a
``gx.RowSparse`` gradient (from ``gx.sparse.value_and_grad``) moves only the
rows it touches, as torch's sparse gradients of ``nn.Embedding(sparse=True)``
do. It defines no arithmetic.
"""

from __future__ import annotations

from gradxform.core import validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, returned_by
from gradxform.core.combine import chain
from gradxform.torch.optimizers import _betas, _prologue
from gradxform.transforms.lazy_adam import scale_by_lazy_adam
from gradxform.transforms.scaling import scale_by_learning_rate

_OWNER = "torch.SparseAdam"


def SparseAdam(  # noqa: N802 (torch's name)
    lr: ScalarOrSchedule = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    maximize: bool = False,
) -> GradientTransformation:
    r"""``torch.optim.SparseAdam``: Adam that moves only the rows a sparse gradient touches.

    .. math::
        g \leftarrow \pm g, \quad
        m_{t,r} = \beta_1 m_{t-1,r} + (1-\beta_1) g_{t,r}, \quad
        v_{t,r} = \beta_2 v_{t-1,r} + (1-\beta_2) g_{t,r}^2, \qquad
        \theta_r \leftarrow \theta_r - \eta\, \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
        \frac{m_{t,r}}{\sqrt{v_{t,r}} + \epsilon}

    for each row :math:`r` a `RowSparse` gradient touches (duplicate indices
    summed first, as torch's ``coalesce``); the other rows keep their
    parameters and moments, and :math:`t` counts every step. The chain is
    ``scale(-1)`` (``maximize``), ``scale_by_lazy_adam(eps_hat=True,
    accurate_bias_correction=True)`` and ``scale_by_learning_rate``.

    torch refuses dense gradients ("SparseAdam does not support dense
    gradients"); here a dense leaf counts as touching every row, and gets
    SparseAdam's rule on all of them: Adam in the form above
    (``scale_by_adam(eps_hat=True)``, :math:`\epsilon` added to the raw root,
    where ``torch.optim.Adam`` adds it after the bias correction). A tree may
    mix a sparse table with dense leaves, and a table may switch from one
    form to the other: the state is the same. torch computes
    :math:`\sqrt{1-\beta_2^t}/(1-\beta_1^t)` in float64; the chain computes the
    corrections to float32's precision (``accurate_bias_correction``), as the
    other ``gx.torch`` presets do. torch also refuses complex parameters, which
    are accepted here.

    Args:
      lr: :math:`\eta > 0`, or a schedule of the step.
      betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
      eps: :math:`\epsilon > 0`, added to the root.
      maximize: ascend the objective instead.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.torch.SparseAdam(lr=0.01)
      >>> params = {"emb": jnp.zeros((100, 8))}
      >>> grad = {"emb": gx.RowSparse(jnp.array([3, 7]), jnp.ones((2, 8)), num_rows=100)}
      >>> updates, state = tx.update(grad, tx.init(params))
      >>> int((gx.apply_updates(params, updates)["emb"] != 0).any(axis=1).sum())
      2
    """
    if not callable(lr):
        validation.positive(_OWNER, "lr", lr)  # torch: "Invalid learning rate" unless lr > 0
    validation.positive(_OWNER, "eps", eps)
    b1, b2 = _betas(_OWNER, betas)
    parts = _prologue(_OWNER, maximize, 0.0)
    parts += [scale_by_lazy_adam(b1=b1, b2=b2, eps=eps, eps_hat=True,
                                 accurate_bias_correction=True),
              scale_by_learning_rate(lr)]
    return returned_by(chain(*parts), _OWNER)

