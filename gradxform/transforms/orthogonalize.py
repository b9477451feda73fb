r"""Orthogonalisation by Newton–Schulz iterations, and Muon's momentum built on it.

`orthogonalize_via_newton_schulz` for one array, and `scale_by_muon`, which
applies it to each leaf's momentum; the iteration itself is
`gradxform.core.newton_schulz`. Arithmetic runs in at least float32 (optax
iterates in the leaf's own dtype, bfloat16 included) and the result is stored
in the gradient's dtype. Keyword options give the forms of Keras's and
torch's ``Muon``: the momentum as a plain sum or an undebiased average, the
norm floored by :math:`\epsilon` rather than added to it, and the iteration
rounded to bfloat16.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from gradxform.core import numerics, tree, validation
from gradxform.core.base import GradientTransformation, Updates, public_constructor
from gradxform.core.matrices import (
    MuonDimensionNumbers,
    check_dimension_numbers,
    map_matrices,
    matrix_view,
    refuse_flat,
)
from gradxform.core.newton_schulz import (
    DEFAULT_NS_COEFFS,
    PRECONDITIONINGS,
    check_ns_dtype,
    coefficient_rows,
    newton_schulz_coefficients,
    orthogonalized,
)

MOMENTUM_FORMS = ("debiased", "ema", "sum")


def _check_newton_schulz_arguments(owner, ns_coeffs, ns_steps, preconditioning, eps,
                                    eps_as_floor, ns_dtype):
    ns_steps = validation.positive_int(owner, "ns_steps", ns_steps, minimum=0)
    coefficients = newton_schulz_coefficients(owner, ns_coeffs, ns_steps)
    validation.string(owner, "preconditioning", preconditioning)
    if preconditioning not in PRECONDITIONINGS:
        raise ValueError(f"{owner}: preconditioning must be one of {list(PRECONDITIONINGS)}, "
                         f"got {preconditioning!r}")
    validation.positive(owner, "eps", eps)
    validation.boolean(owner, "eps_as_floor", eps_as_floor)
    check_ns_dtype(owner, ns_dtype)
    return coefficients, ns_steps


def _placed_coefficients(params: Any, coefficients: Any) -> jax.Array:
    """The coefficients as a float32 state leaf, replicated where the (first) param lives."""
    array = jnp.asarray(coefficients, jnp.float32)
    for leaf in jax.tree.leaves(params):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(leaf, jax.core.Tracer) or sharding is None:
            break
        if isinstance(sharding, NamedSharding):
            sharding = NamedSharding(sharding.mesh, PartitionSpec())
        return jax.device_put(array, sharding)
    return array


def orthogonalize_via_newton_schulz(
    x: jax.Array,
    ns_coeffs: Any,
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: float = 1e-8,
    dimension_numbers: MuonDimensionNumbers | None = None,
    *,
    eps_as_floor: bool = False,
    ns_dtype: Any = None,
) -> jax.Array:
    r"""Approximately orthogonalises a matrix (or a stack of them) by Newton–Schulz iterations.

    .. math::
        X_0 = \frac{G}{\lVert G \rVert_F + \epsilon}
        \;\; \Big(\text{eps\_as\_floor: } \frac{G}{\max(\lVert G \rVert_F, \epsilon)}\Big),
        \qquad X_{k+1} = a X_k + (b A_k + c A_k^2) X_k, \quad A_k = X_k X_k^H

    The quintic's coefficients maximise the slope at zero, so five steps take
    the singular values of :math:`G = U S V^H` to about 0.7 to 1.2 rather than
    exactly 1: the result is close to :math:`U V^H`, which is all Muon needs.
    The matrix is iterated in its wide orientation. ``preconditioning`` picks
    the first scaling: the Frobenius norm (above), the spectral norm, or,
    instead of a norm, AOL (each row of the first step's :math:`X` scaled by
    :math:`(\sum_j |A_{ij}|)^{-1/2}`) or the Schatten-4 norm
    (:math:`\lVert A \rVert_F^{-1/2}`), where :math:`\epsilon` floors the sums.
    optax's ``contrib._muon.orthogonalize_via_newton_schulz``; here
    arithmetic runs in at least float32, the AOL and Schatten floors are
    ``eps`` (optax fixes 1e-8), Schatten uses :math:`X X^H` for complex input
    (optax :math:`X X^T`), and a 2-D ``x`` follows given dimension numbers
    (optax ignores them). The iteration needs the whole matrix: an array
    sharded over explicit mesh axes is gathered for it and the result sharded
    back. With ``ns_dtype``, the iteration is rounded as torch's ``Muon``
    rounds it in bfloat16, with :math:`r` the rounding to ``ns_dtype``:

    .. math::
        X_0 = r\Big(\frac{r(G)}{r(\lVert r(G) \rVert_F) + \epsilon}\Big), \quad
        A_k = r(X_k X_k^H), \quad B_k = r(b A_k + c A_k^2), \quad
        X_{k+1} = r(a X_k + B_k X_k)

    (the divisor rounded too), each computed at least in float32 from rounded
    operands: a bfloat16 matrix product accumulates in float32 and rounds its
    result once. The result keeps that rounding, in ``x``'s dtype. float16's
    range is small: a norm above 65504 overflows, as in a float16 iteration.
    Jordan, 2024; Bernstein and Newhouse, 2024.

    Args:
      x: the array: a matrix, or any rank with ``dimension_numbers``.
      ns_coeffs: :math:`(a, b, c)`, or one triple per step (an ``(n, 3)``
        array, ``n <= ns_steps``: then ``ns_steps`` is otherwise ignored), or a
        preset name, ``"standard"`` or ``"dion"``.
      ns_steps: the number of steps, an int >= 0.
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
      eps: :math:`\epsilon > 0`.
      dimension_numbers: a `MuonDimensionNumbers` saying which axes of ``x``
        form the matrix; needed unless ``x`` is 2-D.
      eps_as_floor: divide by :math:`\max(\lVert G \rVert, \epsilon)` (torch's
        ``Muon``) instead of :math:`\lVert G \rVert + \epsilon` (optax's, Keras's);
        the spectral norm likewise.
      ns_dtype: None (no rounding), or a real floating-point dtype to round the
        iteration to (``jnp.bfloat16`` for torch's ``Muon``); one no narrower than
        the arithmetic's has no effect.

    Returns:
      An array of ``x``'s shape and dtype.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> q = gx.orthogonalize_via_newton_schulz(jnp.array([[3.0, 0.0], [0.0, 0.5]]),
      ...                                        (3.4445, -4.7750, 2.0315))
      >>> q.shape
      (2, 2)
    """
    owner = "orthogonalize_via_newton_schulz"
    coefficients, ns_steps = _check_newton_schulz_arguments(
        owner, ns_coeffs, ns_steps, preconditioning, eps, eps_as_floor, ns_dtype)
    if dimension_numbers is not None:
        check_dimension_numbers(owner, "dimension_numbers", dimension_numbers)
        if not isinstance(dimension_numbers, tuple):
            raise TypeError(f"{owner}: dimension_numbers must be a MuonDimensionNumbers or None, "
                            f"got {dimension_numbers!r}")
    dtype = getattr(x, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
        raise TypeError(f"{owner}: x must be a floating-point or complex array, got {x!r}")
    x = jnp.asarray(x)
    view = matrix_view(owner, "x", x.shape, dimension_numbers)
    x_c = numerics.upcast(x)
    rows = coefficient_rows(jnp.asarray(coefficients, numerics.real_dtype(x_c.dtype)), ns_steps)
    return orthogonalized(view, x_c, rows, preconditioning, eps, eps_as_floor=eps_as_floor,
                          ns_dtype=ns_dtype).astype(x.dtype)


def _undebiased(form: str, nesterov: bool, beta: Any, mu: jax.Array,
                g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """torch's (``"ema"``) or Keras's (``"sum"``) momentum and the matrix it orthogonalises."""
    if form == "ema":  # torch: buf.lerp_(g, 1 - beta); g.lerp(buf, beta)
        mu_new = numerics.moment(beta, mu, g)
        return mu_new, numerics.moment(beta, mu_new, g) if nesterov else mu_new
    decay = numerics.operand(beta, g.dtype)  # Keras: m = beta m + g; g + beta m
    mu_new = lax.add(lax.mul(decay, mu), g)
    return mu_new, lax.add(g, lax.mul(decay, mu_new)) if nesterov else mu_new


class MuonState(NamedTuple):
    """The step count, the momentum, and the Newton–Schulz coefficients (optax's ``MuonState``)."""

    count: jax.Array  # int32, shape ()
    mu: Updates
    ns_coeffs: jax.Array  # float32, shape (3,) or (n, 3)


@public_constructor
def scale_by_muon(
    ns_coeffs: Any = DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    weight_dimension_numbers: MuonDimensionNumbers | Any | Callable[[Any], Any] | None = None,
    momentum_form: str = "debiased",
    eps_as_floor: bool = False,
    ns_dtype: Any = None,
) -> GradientTransformation:
    r"""Orthogonalises each leaf's momentum: Muon's direction.

    .. math::
        m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad
        \hat m_t = \frac{m_t}{1-\beta^t} \;\;(\text{Nesterov: }
        \beta\frac{m_t}{1-\beta^{t+1}} + (1-\beta)\frac{g_t}{1-\beta^t}), \qquad
        u_t = \mathrm{NS}(\hat m_t)

    (optax's form, ``momentum_form="debiased"``). torch's ``Muon`` keeps the
    average without debiasing it, ``"ema"``:

    .. math::
        m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad
        \hat m_t = m_t \;\;(\text{Nesterov: } \beta m_t + (1-\beta) g_t)

    and Keras's ``Muon`` a plain sum, ``"sum"``:

    .. math::
        m_t = \beta m_{t-1} + g_t, \qquad
        \hat m_t = m_t \;\;(\text{Nesterov: } g_t + \beta m_t)

    Without Nesterov the three :math:`\hat m_t` differ only by a positive
    factor, which the normalisation removes but for its :math:`\epsilon`; with
    Nesterov they weigh :math:`g_t` against :math:`m_t` differently.
    :math:`\mathrm{NS}` is `orthogonalize_via_newton_schulz`; ``adaptive``
    multiplies :math:`u_t` by :math:`\langle \hat m_t, u_t \rangle`, the dual
    norm of the momentum (Bernstein and Newhouse, 2024). Each leaf is a matrix,
    or a stack of them as its `MuonDimensionNumbers` say. The iteration needs
    the whole matrix: on a sharded leaf the compiler gathers the shards it
    multiplies (the momentum itself stays sharded), and a ``gx.flat_tree``
    buffer, which does not keep the leaves' shapes, raises a `TypeError`
    pointing to the per-leaf tree. optax's ``contrib.scale_by_muon``; see
    `orthogonalize_via_newton_schulz` for where the iteration differs. Jordan,
    2024 (modded-nanogpt).

    Args:
      ns_coeffs: the Newton–Schulz coefficients :math:`(a, b, c)`, one triple per
        step (at most ``ns_steps`` of them), or a preset name, ``"standard"`` or
        ``"dion"``.
      ns_steps: Newton–Schulz steps, an int >= 0.
      beta: :math:`\beta` in [0, 1).
      eps: :math:`\epsilon > 0` of the first scaling.
      mu_dtype: dtype of :math:`m`; None keeps the params' dtype.
      nesterov: Nesterov's debiased momentum (the default, as in optax).
      adaptive: scale by the dual norm of the momentum.
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
      weight_dimension_numbers: a `MuonDimensionNumbers` for every leaf, a tree
        of them shaped like (a prefix of) the params (None entries: 2-D
        leaves), or a callable ``updates -> such a tree``. None: every leaf is
        a 2-D matrix; any other leaf raises (`muon` sends those to AdamW).
      momentum_form: ``"debiased"`` (optax's), ``"ema"`` (torch's) or ``"sum"``
        (Keras's), as above.
      eps_as_floor: divide by :math:`\max(\lVert \hat m_t \rVert, \epsilon)`
        (torch's) instead of :math:`\lVert \hat m_t \rVert + \epsilon`.
      ns_dtype: None, or a dtype to round the iteration to (``jnp.bfloat16``:
        torch's), as in `orthogonalize_via_newton_schulz`.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.chain(gx.scale_by_muon(), gx.scale_by_learning_rate(0.02))
      >>> state = tx.init({"w": jnp.zeros((4, 3))})
    """
    owner = "scale_by_muon"
    ns_coeffs, ns_steps = _check_newton_schulz_arguments(
        owner, ns_coeffs, ns_steps, preconditioning, eps, eps_as_floor, ns_dtype)
    validation.string(owner, "momentum_form", momentum_form)
    if momentum_form not in MOMENTUM_FORMS:
        raise ValueError(f"{owner}: momentum_form must be one of {list(MOMENTUM_FORMS)}, "
                         f"got {momentum_form!r}")
    validation.decay_rate(owner, "beta", beta)
    validation.float_dtype(owner, "mu_dtype", mu_dtype)
    validation.boolean(owner, "nesterov", nesterov)
    validation.boolean(owner, "adaptive", adaptive)
    check_dimension_numbers(owner, "weight_dimension_numbers", weight_dimension_numbers)

    def init_fn(params):
        refuse_flat(owner, params, "params")
        return MuonState(count=numerics.zero_count(), mu=tree.tree_zeros_like(params, mu_dtype),
                         ns_coeffs=_placed_coefficients(params, ns_coeffs))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        refuse_flat(owner, updates, "updates")
        tree.check_same_structure(owner, "state", state.mu, updates)
        count = numerics.safe_increment(state.count)
        corrections = numerics.per_dtype(lambda dtype: (
            numerics.bias_correction(beta, count, dtype),
            numerics.bias_correction(beta, numerics.safe_increment(count), dtype),
        ))

        def leaf(view, g, mu):
            dtype = numerics.compute_dtype(g.dtype, mu.dtype)
            g_c = g.astype(dtype)
            if momentum_form == "debiased":
                mu_new = numerics.moment(beta, mu.astype(dtype), g_c)
                correction, next_correction = corrections(numerics.real_dtype(dtype))
                if nesterov:
                    mu_hat = numerics.nesterov_debiased(beta, mu_new, g_c, correction,
                                                        next_correction)
                else:
                    mu_hat = mu_new / correction.astype(dtype)
            else:
                mu_new, mu_hat = _undebiased(momentum_form, nesterov, beta, mu.astype(dtype), g_c)
            rows = coefficient_rows(state.ns_coeffs.astype(numerics.real_dtype(dtype)), ns_steps)
            direction = orthogonalized(view, mu_hat, rows, preconditioning, eps,
                                       eps_as_floor=eps_as_floor, ns_dtype=ns_dtype)
            if adaptive:
                direction = jnp.sum(jnp.conj(mu_hat) * direction) * direction
            return numerics.store(direction, g.dtype), numerics.store(mu_new, mu.dtype)

        updates, mu = map_matrices(owner, "weight_dimension_numbers", weight_dimension_numbers,
                                   leaf, 2, updates, state.mu)
        return updates, MuonState(count=count, mu=mu, ns_coeffs=state.ns_coeffs)

    return GradientTransformation(init_fn, update_fn)
