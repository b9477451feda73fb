"""Interoperability with optax: use a gradxform transformation where optax expects one.

optax is imported only when `to_optax` is called; it is not a runtime dependency.
"""

from __future__ import annotations

from typing import Any

from gradxform.core.base import GradientTransformation
from gradxform.core.combine import extra_args_filter


def to_optax(tx: GradientTransformation) -> Any:
    r"""Wraps a transformation as an ``optax.GradientTransformationExtraArgs``.

    .. math::
        \mathrm{to\_optax}(T) = T \quad\text{(same init and update, optax's type)}

    Our transformations already work in most optax code (they are
    ``(init, update)`` named tuples); this gives optax's exact type, for code
    that checks it, with extra keyword arguments passed through to an
    ``update`` that takes them (and left out for one that does not).

    Args:
      tx: any gradxform transformation.

    Example:
      >>> import optax, gradxform as gx
      >>> tx = optax.chain(gx.to_optax(gx.clip_by_norm(1.0)), optax.adam(1e-3))
    """
    import optax  # lazily: optax is a test/example extra, not a runtime dependency

    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(f"to_optax: tx must be a transformation with init and update, got {tx!r}")

    accepted = extra_args_filter(tx.update)

    def update_fn(updates, state, params=None, **extra_args):
        return tx.update(updates, state, params, **accepted(extra_args))

    return optax.GradientTransformationExtraArgs(tx.init, update_fn)
