"""The Newton–Schulz iteration that orthogonalises a stack of matrices, and its coefficients.

Shared by `transforms.orthogonalize` (``orthogonalize_via_newton_schulz`` and
``scale_by_muon``). Arithmetic runs in the dtype it is given (at least
float32 there); ``ns_dtype`` rounds every matrix the iteration stores to a
narrower dtype, as torch's bfloat16 ``Muon`` does.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec

from gradxform.core import numerics, validation

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
        raise ValueError(f"{owner}: ns_coeffs gives {array.shape[0]} steps' coefficients, more "
                         f"than ns_steps={ns_steps}; got {ns_coeffs!r}")
    return ns_coeffs


def check_ns_dtype(owner: str, ns_dtype: Any) -> None:
    """None, or a real floating-point dtype (``jnp.bfloat16``, ``"float16"``, ...)."""
    validation.float_dtype(owner, "ns_dtype", ns_dtype)
    if ns_dtype is not None and not jnp.issubdtype(jnp.dtype(ns_dtype), jnp.floating):
        raise ValueError(f"{owner}: ns_dtype must be a real floating-point dtype (complex "
                         f"matrices are rounded part by part), got {ns_dtype!r}")


def rounding(ns_dtype: Any, compute: Any) -> Callable[[jax.Array], jax.Array]:
    """Rounds an array of the compute dtype (or its real counterpart) to ``ns_dtype``'s
    precision, keeping its dtype; the identity when ``ns_dtype`` is None or not narrower.

    ``lax.reduce_precision`` rounds to nearest even as a cast would, and XLA
    keeps it where it may drop a cast there and back (excess precision).
    """
    if ns_dtype is None:
        return lambda x: x
    target = jnp.finfo(ns_dtype)
    if target.nmant >= jnp.finfo(numerics.real_dtype(compute)).nmant:
        return lambda x: x

    def part(x):
        return lax.reduce_precision(x, exponent_bits=target.nexp, mantissa_bits=target.nmant)

    def rounded(x):
        if jnp.iscomplexobj(x):
            return lax.complex(part(jnp.real(x)), part(jnp.imag(x)))
        return part(x)

    return rounded


def _whole(x: jax.Array) -> tuple[jax.Array, Any]:
    """``x`` gathered whole when its type is sharded over explicit mesh axes, and the spec to
    put the result back to (None when there is nothing to gather)."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
    if spec is None or all(entry is None for entry in spec):
        return x, None
    return jax.sharding.reshard(x, PartitionSpec()), spec


def orthogonalized(view: Any, x: jax.Array, rows: Sequence[jax.Array], preconditioning: str,
                   eps: Any, *, eps_as_floor: bool = False, ns_dtype: Any = None) -> jax.Array:
    """`newton_schulz` on the matrices ``view`` sees in ``x`` (whole), back in ``x``'s layout."""
    x, spec = _whole(x)
    result = view.from_matrices(newton_schulz(
        view.to_matrices(x), rows, preconditioning, eps, eps_as_floor=eps_as_floor,
        ns_dtype=ns_dtype))
    return result if spec is None else jax.sharding.reshard(result, spec)


def coefficient_rows(coefficients: jax.Array, ns_steps: int) -> list:
    """One triple per iteration: the same one ``ns_steps`` times, or each row of an (n, 3) array."""
    if coefficients.ndim == 1:
        return [coefficients] * ns_steps
    return [coefficients[i] for i in range(coefficients.shape[0])]


def _adjoint(x: jax.Array) -> jax.Array:
    x_t = jnp.swapaxes(x, -1, -2)
    return jnp.conj(x_t) if jnp.iscomplexobj(x) else x_t


def _frobenius(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(numerics.abs_sq(x), axis=(-2, -1), keepdims=True))


def newton_schulz(x: jax.Array, rows: Sequence[jax.Array], preconditioning: str, eps: Any, *,
                  eps_as_floor: bool = False, ns_dtype: Any = None) -> jax.Array:
    """The iteration on a ``(batch, m, n)`` stack of matrices, in ``x``'s (compute) dtype.

    Each step is :math:`X \\leftarrow aX + (bA + cA^2)X` with :math:`A = XX^H`, on
    the wide orientation (``m <= n``, transposing and back), as optax does. The
    first scaling divides by :math:`\\lVert X \\rVert + \\epsilon`, or by
    :math:`\\max(\\lVert X \\rVert, \\epsilon)` with ``eps_as_floor``. With
    ``ns_dtype``, the input, the norm, its divisor and every matrix a step
    stores (:math:`X`, :math:`A`, :math:`bA + cA^2`) are rounded to it, each
    computed in ``x``'s dtype from rounded operands: torch's bfloat16 ``addmm``
    accumulates in float32 and rounds its result once.
    """
    if x.size == 0:
        return x
    rounded = rounding(ns_dtype, x.dtype)
    transposed = x.shape[-2] > x.shape[-1]
    if transposed:
        x = jnp.swapaxes(x, -1, -2)
    x = rounded(x)
    real = numerics.real_dtype(x.dtype)
    floor = numerics.hyperparameter(eps, real)
    if preconditioning in ("frobenius", "spectral"):
        if preconditioning == "frobenius":
            norm = _frobenius(x)
        else:
            norm = jnp.linalg.norm(x, ord=2, axis=(-2, -1), keepdims=True).astype(real)
        norm = rounded(norm)
        divisor = rounded(jnp.maximum(norm, floor) if eps_as_floor else norm + floor)
        x = rounded(x / divisor.astype(x.dtype))
    for step, c in enumerate(rows):
        c = c.astype(x.dtype)
        a = rounded(jnp.matmul(x, _adjoint(x)))
        if step == 0 and preconditioning == "aol":  # Boissin et al., 2025
            s = lax.rsqrt(jnp.maximum(jnp.sum(jnp.abs(a), axis=-1, keepdims=True), floor))
            s = s.astype(x.dtype)
            x, a = rounded(x * s), rounded(a * s * jnp.swapaxes(s, -1, -2))
        elif step == 0 and preconditioning == "schatten":  # Grishina et al., 2025
            s = lax.rsqrt(jnp.maximum(_frobenius(a), floor)).astype(x.dtype)
            x, a = rounded(x * s), rounded(a * s**2)
        b = rounded(c[1] * a + jnp.matmul(c[2] * a, a))
        x = rounded(c[0] * x + jnp.matmul(b, x))
    return jnp.swapaxes(x, -1, -2) if transposed else x
