"""``torch.nn.utils.clip_grad_norm_`` and ``clip_grad_value_`` as transformations.

torch clips the ``.grad`` of the parameters in place before ``optimizer.step()``;
here the clip is the first member of a chain, ``chain(gx.torch.clip_grad_norm_(1.0),
gx.torch.AdamW(...))``.
"""

from __future__ import annotations

from typing import Any

from gradxform.core import validation
from gradxform.core.base import GradientTransformation, returned_by
from gradxform.transforms.clipping import clip
from gradxform.transforms.p_norm_clipping import clip_by_global_p_norm

TORCH_NORM_EPS = 1e-6  # torch's clip_coef = max_norm / (total_norm + 1e-6)


def _foreach(owner: str, foreach: Any) -> None:
    if foreach is not None:
        validation.boolean(owner, "foreach", foreach)


def clip_grad_norm_(max_norm: float, norm_type: float | str = 2.0,
                    error_if_nonfinite: bool = False, foreach: bool | None = None
                    ) -> GradientTransformation:
    r"""``torch.nn.utils.clip_grad_norm_`` as a transformation.

    .. math::
        n = \big\lVert (\lVert g_i \rVert_p)_i \big\rVert_p, \qquad
        u_i = g_i \min\Big(1, \frac{c}{n + 10^{-6}}\Big)

    ``clip_by_global_p_norm(max_norm, norm_type, eps=1e-6)``. With
    ``error_if_nonfinite`` a non-finite norm fails a ``checkify`` check (torch
    raises a ``RuntimeError``, which a traced step cannot): wrap the step in
    ``jax.experimental.checkify.checkify``.

    Args:
      max_norm: :math:`c > 0`.
      norm_type: :math:`p > 0`, ``inf`` or ``"inf"``.
      error_if_nonfinite: check that the norm is finite.
      foreach: accepted for compatibility with torch; unused.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.torch.clip_grad_norm_(1.0), gx.torch.AdamW(lr=1e-3))
    """
    owner = "torch.clip_grad_norm_"
    _foreach(owner, foreach)
    if isinstance(norm_type, str):
        if norm_type not in ("inf", "infinity"):
            raise ValueError(f"{owner}: norm_type must be a number > 0 or 'inf', got "
                             f"{norm_type!r}")
        norm_type = float("inf")
    tx = clip_by_global_p_norm(max_norm, norm_type, TORCH_NORM_EPS,
                               error_if_nonfinite=error_if_nonfinite)
    return returned_by(tx, owner)


def clip_grad_value_(clip_value: float, foreach: bool | None = None) -> GradientTransformation:
    r"""``torch.nn.utils.clip_grad_value_`` as a transformation.

    .. math::
        u = \min(\max(g, -c), c)

    ``clip(clip_value)``.

    Args:
      clip_value: :math:`c > 0`.
      foreach: accepted for compatibility with torch; unused.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.torch.clip_grad_value_(0.5), gx.torch.SGD(lr=0.1))
    """
    owner = "torch.clip_grad_value_"
    _foreach(owner, foreach)
    validation.positive(owner, "clip_value", clip_value)
    return returned_by(clip(clip_value), owner)
