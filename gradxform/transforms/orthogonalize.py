"""Orthogonalisation by Newton–Schulz iterations, and Muon's momentum built on it.

The iteration lives here once: `orthogonalize_via_newton_schulz` for one
array, and `scale_by_muon`, which applies it to each leaf's debiased momentum.
Arithmetic runs in at least float32 (optax iterates in the leaf's own dtype,
bfloat16 included) and the result is stored in the gradient's dtype.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
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

DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
# Ahn et al., 2025 (Dion): one coefficient triple per step, five steps.
DION_NS_COEFFS = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
NS_COEFFS_PRESETS = {"standard": DEFAULT_NS_COEFFS, "dion": DION_NS_COEFFS}
PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


def newton_schulz_coefficients(owner: str, ns_coeffs: Any, ns_steps: int) -> Any:
    """``ns_coeffs`` checked and resolved: a preset's name becomes its coefficients.

    Returns the coefficients as given (a tuple, or an array), or a preset's
    tuple. They must form a ``(3,)`` or ``(n, 3)`` array of finite real numbers,
    with ``n <= ns_steps`` as optax requires. A traced array is let through.
    """
    if isinstance(ns_coeffs, str):
        if ns_coeffs not in NS_COEFFS_PRESETS:
            raise ValueError(f"{owner}: ns_coeffs must be coefficients or a preset name, one of "
                             f"{sorted(NS_COEFFS_PRESETS)}, got {ns_coeffs!r}")
        ns_coeffs = NS_COEFFS_PRESETS[ns_coeffs]
    if isinstance(ns_coeffs, jax.core.Tracer):
        return ns_coeffs
    wanted = f"{owner}: ns_coeffs must be 3 real numbers or a sequence of such triples"
    if not isinstance(ns_coeffs, (list, tuple, np.ndarray, jax.Array)):
        raise TypeError(f"{wanted}, got {ns_coeffs!r}")
    try:
        array = np.asarray(ns_coeffs)
    except (TypeError, ValueError):
        raise TypeError(f"{wanted}, got {ns_coeffs!r}") from None
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{wanted}, got {ns_coeffs!r}")
    if array.ndim not in (1, 2) or array.shape[-1] != 3 or array.shape[0] == 0:
        raise ValueError(f"{owner}: ns_coeffs must have shape (3,) or (n, 3), got shape "
                         f"{array.shape} from {ns_coeffs!r}")
    with np.errstate(over="ignore"):
        if not np.all(np.isfinite(array.astype(np.float32))):
            raise ValueError(f"{owner}: ns_coeffs must be finite in float32, got {ns_coeffs!r}")
    if array.ndim == 2 and array.shape[0] > ns_steps:
        raise ValueError(f"{owner}: ns_coeffs gives {array.shape[0]} steps' coefficients, more than "
                         f"ns_steps={ns_steps}; got {ns_coeffs!r}")
    return ns_coeffs


def _check_newton_schulz_arguments(owner, ns_coeffs, ns_steps, preconditioning, eps):
    ns_steps = validation.positive_int(owner, "ns_steps", ns_steps, minimum=0)
    coefficients = newton_schulz_coefficients(owner, ns_coeffs, ns_steps)
    validation.string(owner, "preconditioning", preconditioning)
    if preconditioning not in PRECONDITIONINGS:
        raise ValueError(f"{owner}: preconditioning must be one of {list(PRECONDITIONINGS)}, "
                         f"got {preconditioning!r}")
    validation.positive(owner, "eps", eps)
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


def _whole(x: jax.Array) -> tuple[jax.Array, Any]:
    """``x`` gathered whole when its type is sharded over explicit mesh axes, and the spec to
    put the result back to (None when there is nothing to gather)."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
    if spec is None or all(entry is None for entry in spec):
        return x, None
    return jax.sharding.reshard(x, PartitionSpec()), spec


def orthogonalized(view: Any, x: jax.Array, rows: Sequence[jax.Array], preconditioning: str,
                   eps: Any) -> jax.Array:
    """`newton_schulz` on the matrices ``view`` sees in ``x`` (whole), back in ``x``'s layout."""
    x, spec = _whole(x)
    result = view.from_matrices(newton_schulz(view.to_matrices(x), rows, preconditioning, eps))
    return result if spec is None else jax.sharding.reshard(result, spec)


def _coefficient_rows(coefficients: jax.Array, ns_steps: int) -> list:
    """One triple per iteration: the same one ``ns_steps`` times, or each row of an (n, 3) array."""
    if coefficients.ndim == 1:
        return [coefficients] * ns_steps
    return [coefficients[i] for i in range(coefficients.shape[0])]


def _adjoint(x: jax.Array) -> jax.Array:
    x_t = jnp.swapaxes(x, -1, -2)
    return jnp.conj(x_t) if jnp.iscomplexobj(x) else x_t


def _frobenius(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(numerics.abs_sq(x), axis=(-2, -1), keepdims=True))


def newton_schulz(x: jax.Array, rows: Sequence[jax.Array], preconditioning: str,
                  eps: Any) -> jax.Array:
    """The iteration on a ``(batch, m, n)`` stack of matrices, in ``x``'s (compute) dtype.

    Each step is :math:`X \\leftarrow aX + (bA + cA^2)X` with :math:`A = XX^H`, on
    the wide orientation (``m <= n``, transposing and back), as optax does.
    """
    if x.size == 0:
        return x
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:
        x = jnp.swapaxes(x, -1, -2)
    real = numerics.real_dtype(x.dtype)
    floor = numerics.hyperparameter(eps, real)
    if preconditioning == "frobenius":
        x = x / (_frobenius(x) + floor).astype(x.dtype)
    elif preconditioning == "spectral":
        norm = jnp.linalg.norm(x, ord=2, axis=(-2, -1), keepdims=True).astype(real)
        x = x / (norm + floor).astype(x.dtype)
    for step, c in enumerate(rows):
        c = c.astype(x.dtype)
        a = jnp.matmul(x, _adjoint(x))
        if step == 0 and preconditioning == "aol":  # Boissin et al., 2025
            s = lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(a), axis=-1, keepdims=True), floor))
            s = s.astype(x.dtype)
            x, a = x * s, a * s * jnp.swapaxes(s, -1, -2)
        elif step == 0 and preconditioning == "schatten":  # Grishina et al., 2025
            s = lax.rsqrt(jnp.maximum(_frobenius(a), floor)).astype(x.dtype)
            x, a = x * s, a * s**2
        b = c[1] * a + jnp.matmul(c[2] * a, a)
        x = c[0] * x + jnp.matmul(b, x)
    return jnp.swapaxes(x, -1, -2) if transposed else x


def orthogonalize_via_newton_schulz(
    x: jax.Array,
    ns_coeffs: Any,
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: float = 1e-8,
    dimension_numbers: MuonDimensionNumbers | None = None,
) -> jax.Array:
    r"""Approximately orthogonalises a matrix (or a stack of them) by Newton–Schulz iterations.

    .. math::
        X_0 = \frac{G}{\lVert G \rVert_F + \epsilon}, \qquad
        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k, \quad A_k = X_k X_k^H

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
    back. Jordan, 2024; Bernstein and Newhouse, 2024.

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
        owner, ns_coeffs, ns_steps, preconditioning, eps)
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
    rows = _coefficient_rows(jnp.asarray(coefficients, numerics.real_dtype(x_c.dtype)), ns_steps)
    return orthogonalized(view, x_c, rows, preconditioning, eps).astype(x.dtype)


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
) -> GradientTransformation:
    r"""Orthogonalises each leaf's debiased momentum: Muon's direction.

    .. math::
        m_t = \beta m_{t-1} + (1-\beta) g_t, \qquad
        \hat m_t = \frac{m_t}{1-\beta^t} \;\;(\text{Nesterov: }
        \beta\frac{m_t}{1-\beta^{t+1}} + (1-\beta)\frac{g_t}{1-\beta^t}), \qquad
        u_t = \mathrm{NS}(\hat m_t)

    with :math:`\mathrm{NS}` `orthogonalize_via_newton_schulz`; ``adaptive``
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

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.chain(gx.scale_by_muon(), gx.scale_by_learning_rate(0.02))
      >>> state = tx.init({"w": jnp.zeros((4, 3))})
    """
    owner = "scale_by_muon"
    ns_coeffs, ns_steps = _check_newton_schulz_arguments(
        owner, ns_coeffs, ns_steps, preconditioning, eps)
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
            mu_new = numerics.moment(beta, mu.astype(dtype), g_c)
            correction, next_correction = corrections(numerics.real_dtype(dtype))
            if nesterov:
                mu_hat = numerics.nesterov_debiased(beta, mu_new, g_c, correction, next_correction)
            else:
                mu_hat = mu_new / correction.astype(dtype)
            rows = _coefficient_rows(state.ns_coeffs.astype(numerics.real_dtype(dtype)), ns_steps)
            direction = orthogonalized(view, mu_hat, rows, preconditioning, eps)
            if adaptive:
                direction = jnp.sum(jnp.conj(mu_hat) * direction) * direction
            return numerics.store(direction, g.dtype), numerics.store(mu_new, mu.dtype)

        updates, mu = map_matrices(owner, "weight_dimension_numbers", weight_dimension_numbers,
                                   leaf, 2, updates, state.mu)
        return updates, MuonState(count=count, mu=mu, ns_coeffs=state.ns_coeffs)

    return GradientTransformation(init_fn, update_fn)
