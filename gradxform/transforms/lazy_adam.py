"""Lazy Adam: Adam whose moments move only on the rows a row-sparse gradient touches."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradxform.core import numerics, sparse, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor


class ScaleByLazyAdamState(NamedTuple):
    """The step count and the first and second moments (as `ScaleByAdamState`)."""

    count: jax.Array  # int32, shape ()
    mu: Updates
    nu: Updates


def _empty_slots_to_zero(update: sparse.RowSparse) -> sparse.RowSparse:
    """Zero updates in the empty slots, whose rows are not the table's.

    Their gradient and moments read as zeros, so with ``eps = eps_root = 0`` the
    step there would be ``0 / 0``; it writes nothing, but a transformation
    chained after (a global norm) would read it.
    """
    valid = sparse.valid_rows(update)
    mask = valid.reshape((-1,) + (1,) * (update.values.ndim - 1))
    values = jnp.where(mask, update.values, jnp.zeros((), update.values.dtype))
    return sparse.with_values(update, values)


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
    validation.decay_rate(owner, "b1", b1)
    validation.decay_rate(owner, "b2", b2)
    validation.non_negative(owner, "eps", eps)
    validation.non_negative(owner, "eps_root", eps_root)
    validation.float_dtype(owner, "mu_dtype", mu_dtype)
    validation.float_dtype(owner, "nu_dtype", nu_dtype)
    validation.boolean(owner, "eps_hat", eps_hat)

    def init_fn(params):
        return ScaleByLazyAdamState(
            count=numerics.zero_count(),
            mu=tree.tree_zeros_like(params, mu_dtype),
            nu=tree.tree_full_like(params, 0, nu_dtype, real=True),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        tree.check_same_structure(owner, "state", state.mu, updates)
        count = numerics.safe_increment(state.count)
        corrections = numerics.per_dtype(lambda dtype: (
            numerics.bias_correction(b1, count, dtype),
            numerics.bias_correction(b2, count, dtype),
        ))

        def leaf(g, mu, nu):
            # scale_by_adam's arithmetic, operation for operation (the dense parity is bitwise).
            dtype = numerics.compute_dtype(g.dtype, mu.dtype, nu.dtype)
            real = numerics.real_dtype(dtype)
            g_c = g.astype(dtype)
            mu_new = numerics.moment(b1, mu.astype(dtype), g_c)
            nu_new = numerics.moment(b2, nu.astype(real), numerics.abs_sq(g_c))
            correction_1, correction_2 = corrections(nu_new.dtype)
            mu_hat = lax.div(mu_new, numerics.operand(correction_1, dtype))
            if eps_hat:
                nu_hat = nu_new
                numerator = mu_hat * jnp.sqrt(correction_2).astype(mu_hat.dtype)
            else:
                nu_hat = lax.div(nu_new, numerics.operand(correction_2, nu_new.dtype))
                numerator = mu_hat
            update = numerics.root_scaled(numerator, nu_hat, eps, eps_root)
            return (
                numerics.store(update, g.dtype),
                numerics.store(mu_new, mu.dtype),
                nu_new.astype(nu.dtype),
            )

        on_rows = sparse.on_touched_rows(leaf, num_states=2)

        def dispatch(g, mu, nu):
            update, mu_new, nu_new = on_rows(g, mu, nu)
            if isinstance(update, sparse.RowSparse):
                update = _empty_slots_to_zero(update)
            return update, mu_new, nu_new

        updates, mu, nu = tree.tree_map_multi(dispatch, 3, updates, state.mu, state.nu)
        return updates, ScaleByLazyAdamState(count=count, mu=mu, nu=nu)

    return GradientTransformation(init_fn, update_fn)
