"""FTRL-Proximal ("Follow The Regularized Leader"), as Keras 3's ``Ftrl`` computes it.

FTRL does not scale a gradient into a step: it keeps, per entry, a sum of
squared gradients :math:`n` and a linear term :math:`z`, and computes the new
value of the parameter from them. The transformation therefore needs the
params and returns ``new_value - params`` as the update, so that
`apply_updates` lands on the new value.

Arithmetic runs in at least float32 (`numerics.compute_dtype`); the state is
stored in the params' dtype (float32, or complex64, for float16 params, whose
range cannot hold the squared gradients) and the updates in the gradients'
dtype. A complex entry is two real coordinates, each with its own :math:`n`
and :math:`z` (the real and imaginary parts of the state's entry).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from gradxform.core import leafwise, numerics, sparse, tree, validation
from gradxform.core.base import (
    GradientTransformation,
    ScalarOrSchedule,
    Updates,
    public_constructor,
)


class FtrlState(NamedTuple):
    """The step count (the learning-rate schedule's argument) and, per entry, the sum of
    squared gradients :math:`n` (Keras's ``accumulator``) and the linear term :math:`z`
    (Keras's ``linear``)."""

    count: jax.Array  # int32, shape ()
    accumulators: Updates
    linears: Updates


def _rule(learning_rate_power, l1, l2, l2_shrinkage, beta):
    """Keras's ``update_step`` for real coordinates: ``(g, n, z, w, lr) -> (u, n, z)``.

    The operations and their order are Keras's, so that float32 results agree
    to the last bits or nearly. Where the quadratic term is 0 (an entry that
    has only seen zero gradients, with ``initial_accumulator_value=0`` and no
    L2 or beta), Keras divides 0 by 0; here the entry keeps its value.
    """

    def rule(g, n, z, w, lr):
        def c(value):
            return numerics.operand(value, g.dtype)

        power = c(-numerics.python_number(learning_rate_power))
        l2_reg = lax.add(c(l2), lax.div(c(beta), lax.mul(c(2.0), lr)))
        shrunk = lax.add(g, lax.mul(c(2 * numerics.python_number(l2_shrinkage)), w))
        n_new = lax.add(n, lax.mul(g, g))
        root_new = lax.pow(n_new, power)
        sigma = lax.div(lax.sub(root_new, lax.pow(n, power)), lr)
        z_new = lax.add(z, lax.sub(shrunk, lax.mul(sigma, w)))
        quadratic = lax.add(lax.div(root_new, lr), lax.mul(c(2.0), l2_reg))
        zero = lax.full_like(quadratic, 0)
        positive = lax.gt(quadratic, zero)
        l1_c = c(l1)
        clipped = lax.clamp(lax.neg(l1_c), z_new, l1_c)
        w_new = lax.div(lax.sub(clipped, z_new),
                        lax.select(positive, quadratic, lax.full_like(quadratic, 1)))
        w_new = lax.select(positive, w_new, w)
        return lax.sub(w_new, w), n_new, z_new

    return rule


@sparse.row_sparse_rule("lazy")
@public_constructor
def ftrl(
    learning_rate: ScalarOrSchedule = 0.001,
    learning_rate_power: float = -0.5,
    initial_accumulator_value: float = 0.1,
    l1_regularization_strength: float = 0.0,
    l2_regularization_strength: float = 0.0,
    l2_shrinkage_regularization_strength: float = 0.0,
    beta: float = 0.0,
) -> GradientTransformation:
    r"""FTRL-Proximal: each entry's new value solved from its gradient statistics (Keras's Ftrl).

    Per entry :math:`w` with gradient :math:`g`, learning rate :math:`\eta`
    (the schedule at the step count 0, 1, 2, ...) and :math:`p` the
    ``learning_rate_power``:

    .. math::
        n_t = n_{t-1} + g^2, \qquad
        \sigma = \frac{n_t^{-p} - n_{t-1}^{-p}}{\eta}, \qquad
        z_t = z_{t-1} + (g + 2\lambda_s w) - \sigma w, \\
        w_{new} = \frac{\operatorname{clip}(z_t, -\lambda_1, \lambda_1) - z_t}
                       {n_t^{-p}/\eta + \beta/\eta + 2\lambda_2}, \qquad
        u = w_{new} - w

    with :math:`n_0` the ``initial_accumulator_value`` and :math:`z_0 = 0`. The
    update moves the params to :math:`w_{new}` (no learning rate follows it),
    so ``update`` needs the params. Same arguments, defaults and numbers as
    ``keras.optimizers.Ftrl`` (Keras 3), its L2 shrinkage and beta included;
    an entry whose denominator is 0 (only zero gradients so far, with
    ``initial_accumulator_value=0``, no L2 and no beta), where Keras computes
    0 / 0, keeps its value. McMahan et al., 2013, "Ad Click Prediction: a View
    from the Trenches", Algorithm 1.

    **Row-sparse gradients (lazy).** For a `RowSparse` gradient only the
    touched rows' :math:`n`, :math:`z` and values are read and written, and the
    update is a `RowSparse` of those rows: TensorFlow's sparse FTRL
    (``ResourceSparseApplyFtrl``). The dense rule moves rows whose gradient is
    zero, since it rewrites every entry from its :math:`z` each step: such an
    entry has :math:`z = 0` after the first step and goes to 0 from its
    initial value, and with :math:`\lambda_s > 0` every entry shrinks each
    step. The row-sparse rule leaves untouched rows as they are; when every
    row is touched every step the two agree.

    Args:
      learning_rate: :math:`\eta > 0`, or a schedule ``count -> rate``.
      learning_rate_power: :math:`p \le 0`; :math:`-0.5` is Adagrad-like decay,
        0 a fixed learning rate.
      initial_accumulator_value: :math:`n_0 \ge 0`.
      l1_regularization_strength: :math:`\lambda_1 \ge 0`; entries with
        :math:`|z| \le \lambda_1` are exactly 0.
      l2_regularization_strength: :math:`\lambda_2 \ge 0`, the stabilizing L2.
      l2_shrinkage_regularization_strength: :math:`\lambda_s \ge 0`, an L2
        penalty :math:`\lambda_s \|w\|^2` added to the loss.
      beta: :math:`\beta \ge 0`, the paper's :math:`\beta` (Keras does not
        check its sign; a negative one can make the denominator 0).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.ftrl(learning_rate=0.1, l1_regularization_strength=0.01)
      >>> params = {"w": jnp.array([0.5, -1.0])}
      >>> updates, state = tx.update({"w": jnp.array([0.2, 0.0])}, tx.init(params), params)
      >>> gx.apply_updates(params, updates)["w"].round(4)  # the zero gradient's entry goes to 0
      Array([0.0213, 0.    ], dtype=float32)
    """
    owner = "ftrl"
    if callable(learning_rate):
        validation.scalar_or_schedule(owner, "learning_rate", learning_rate)
    else:  # a zero rate would divide by zero
        validation.positive(owner, "learning_rate", learning_rate)
    validation.in_range(owner, "learning_rate_power", learning_rate_power, high=0.0)
    validation.non_negative(owner, "initial_accumulator_value", initial_accumulator_value)
    validation.non_negative(owner, "l1_regularization_strength", l1_regularization_strength)
    validation.non_negative(owner, "l2_regularization_strength", l2_regularization_strength)
    validation.non_negative(owner, "l2_shrinkage_regularization_strength",
                            l2_shrinkage_regularization_strength)
    validation.non_negative(owner, "beta", beta)
    rule = _rule(learning_rate_power, l1_regularization_strength, l2_regularization_strength,
                 l2_shrinkage_regularization_strength, beta)

    def init_fn(params):
        return FtrlState(count=numerics.zero_count(),
                         accumulators=leafwise.full_per_part(params, initial_accumulator_value),
                         linears=leafwise.full_per_part(params, 0))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(f"{owner}: update needs params (it computes their new values), "
                             "got params=None")
        tree.check_same_structure(owner, "state", state.accumulators, updates)
        tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        rate = numerics.schedule_value(learning_rate, state.count, owner, "learning_rate")

        def leaf(g, n, z, w):
            dtype = numerics.compute_dtype(g.dtype, n.dtype, z.dtype, w.dtype)
            real = numerics.real_dtype(dtype)
            lr = numerics.operand(rate, real)
            args = [x.astype(dtype) for x in (g, n, z, w)]
            if jnp.iscomplexobj(args[0]):
                parts = [rule(*(part(a) for a in args), lr) for part in (jnp.real, jnp.imag)]
                update, n_new, z_new = (lax.complex(re, im) for re, im in zip(*parts))
            else:
                update, n_new, z_new = rule(*args, lr)
            return (numerics.store(update, g.dtype), numerics.store(n_new, n.dtype),
                    numerics.store(z_new, z.dtype))

        on_rows = sparse.on_touched_rows(leaf, num_states=2)

        def per_leaf(g, n, z, w):
            if w is None:
                raise ValueError(
                    f"{owner}: every update needs its parameter, but params holds None where "
                    f"the updates hold {tree.describe_node(g)}")
            return on_rows(g, n, z, jnp.asarray(w))

        updates, accumulators, linears = tree.tree_map_multi(
            per_leaf, 3, updates, state.accumulators, state.linears, params)
        return updates, FtrlState(count=numerics.safe_increment(state.count),
                                  accumulators=accumulators, linears=linears)

    return GradientTransformation(init_fn, update_fn)
