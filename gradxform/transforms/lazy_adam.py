"""Lazy Adam: Adam whose moments move only on the rows a row-sparse gradient touches."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
from jax import lax

from gradxform.core import adam_moments, numerics, sparse, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class ScaleByLazyAdamState(NamedTuple):
    """The step count and the first and second moments (as `ScaleByAdamState`)."""

    count: jax.Array  # int32, shape ()
    mu: Updates
    nu: Updates


@sparse.row_sparse_rule("lazy")
@public_constructor
def scale_by_lazy_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
    *,
    eps_hat: bool = False,
    accurate_bias_correction: bool = False,
) -> GradientTransformation:
    r"""Adam for embedding tables: a row-sparse gradient moves the touched rows' moments only.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2
        \quad \text{(on the rows } g_t \text{ touches; other rows keep } m, v\text{)}, \\
        \hat m_t = \frac{m_t}{1-\beta_1^t}, \quad \hat v_t = \frac{v_t}{1-\beta_2^t}, \qquad
        u_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon}
        \quad \text{(touched rows; 0 elsewhere)}

    A dense gradient leaf gets `scale_by_adam`'s update bit for bit, and the
    state has the same layout, so a table may switch between dense and
    row-sparse gradients. For a `RowSparse` leaf the rule is *lazy*: repeated
    indices are summed first, then the moments and the update are computed for
    the touched rows only; untouched rows keep their moments and get no update
    (dense Adam would keep moving them on their momentum). The bias correction
    uses the one global step count :math:`t`, which advances every step, as
    TensorFlow Addons' ``LazyAdam`` and PyTorch's ``SparseAdam`` do. With
    ``eps_hat``, :math:`\epsilon` is added to the raw root,
    :math:`u_t = \hat m_t \sqrt{1-\beta_2^t} / (\sqrt{v_t + \epsilon_{root}} + \epsilon)`:
    with ``eps_root = 0`` that is the rule of ``torch.optim.SparseAdam`` and of
    TF-Addons' ``LazyAdam``. Kingma and Ba, 2015 (Adam); TensorFlow Addons,
    ``tfa.optimizers.LazyAdam``; PyTorch, ``torch.optim.SparseAdam``.

    Args:
      b1: :math:`\beta_1` in [0, 1).
      b2: :math:`\beta_2` in [0, 1).
      eps: :math:`\epsilon \ge 0`, added outside the square root.
      eps_root: :math:`\epsilon_{root} \ge 0`, added inside the square root.
      mu_dtype: dtype of :math:`m`; None keeps the params' dtype.
      nu_dtype: dtype of :math:`v`; None keeps the params' (real) dtype, float32 for
        float16 params.
      eps_hat: add :math:`\epsilon` before the bias correction of :math:`v`
        (PyTorch's ``SparseAdam``, TF-Addons' ``LazyAdam``, Keras's Adam) instead
        of after it (optax's).
      accurate_bias_correction: compute :math:`1-\beta^t` to float32's precision
        (as torch's float64 host arithmetic is), not as ``1 - b**t`` in float32,
        which loses up to 5e-5 of itself in the first steps at :math:`\beta = 0.999`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.chain(gx.scale_by_lazy_adam(), gx.scale_by_learning_rate(0.1))
      >>> table = jnp.zeros((4, 2))
      >>> grad = gx.RowSparse(jnp.array([1, 3, 1]), jnp.ones((3, 2)), num_rows=4)
      >>> updates, state = tx.update({"emb": grad}, tx.init({"emb": table}))
      >>> (gx.apply_updates({"emb": table}, updates)["emb"] != 0).any(axis=1)
      Array([False,  True, False,  True], dtype=bool)
    """
    owner = "scale_by_lazy_adam"
    adam_moments.check_adam_arguments(owner, b1, b2, eps, eps_root, mu_dtype, nu_dtype)
    validation.boolean(owner, "eps_hat", eps_hat)
    validation.boolean(owner, "accurate_bias_correction", accurate_bias_correction)

    def init_fn(params):
        mu, nu = adam_moments.init_moments(params, mu_dtype, nu_dtype)
        return ScaleByLazyAdamState(count=numerics.zero_count(), mu=mu, nu=nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.mu, updates)
        count = numerics.safe_increment(state.count)
        corrections = numerics.per_dtype(lambda dtype: (
            numerics.bias_correction(b1, count, dtype, accurate=accurate_bias_correction),
            numerics.bias_correction(b2, count, dtype, accurate=accurate_bias_correction),
        ))

        def leaf(g, mu, nu):
            # scale_by_adam's arithmetic (shared), so that dense leaves match it bit for bit.
            _, mu_new, nu_new = adam_moments.moments(g, mu, nu, b1, b2)
            correction_1, correction_2 = corrections(nu_new.dtype)
            mu_hat = lax.div(mu_new, numerics.operand(correction_1, mu_new.dtype))
            update = adam_moments.scaled(mu_hat, nu_new, correction_2, eps, eps_root, eps_hat)
            return (
                numerics.store(update, g.dtype),
                numerics.store(mu_new, mu.dtype),
                nu_new.astype(nu.dtype),
            )

        on_rows = sparse.on_touched_rows(leaf, num_states=2)

        def dispatch(g, mu, nu):
            update, mu_new, nu_new = on_rows(g, mu, nu)
            if isinstance(update, sparse.RowSparse):
                # Empty slots read zero moments: with eps = eps_root = 0 their step is 0/0.
                # It writes nothing, but a norm chained after would read it: zero it.
                update = sparse.coalesce(update)
            return update, mu_new, nu_new

        updates, mu, nu = tree.tree_map_multi(dispatch, 3, updates, state.mu, state.nu)
        return updates, ScaleByLazyAdamState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)
