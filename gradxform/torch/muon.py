r"""``torch.optim.Muon`` as a gradxform chain: orthogonalised momentum for 2-D parameters.

The chain is ``scale_by_muon`` in torch's form (an undebiased average,
:math:`\epsilon` as a floor of the norm, the iteration rounded to bfloat16),
``scale_by_shape`` for torch's ``adjust_lr_fn``, ``scale_by_learning_rate``
and ``decoupled_weight_decay`` (torch's ``param.mul_(1 - lr * weight_decay)``).
It defines no arithmetic.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from gradxform.core import validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, returned_by
from gradxform.core.combine import chain
from gradxform.core.matrices import MuonDimensionNumbers
from gradxform.torch.optimizers import _check_lr, _checked_items, _epilogue
from gradxform.transforms.orthogonalize import scale_by_muon
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.shape_scaling import scale_by_shape

_OWNER = "torch.Muon"
_ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
# torch's "original" factor sqrt(max(1, A / B)) reads A, B = param.shape: rows over columns.
# scale_by_shape's is sqrt(max(1, fan_out / fan_in)), so the rows are its output axis.
_ROWS_OUT = MuonDimensionNumbers(reduction_axis=1, output_axis=0)


def _ns_coefficients(value: Any) -> tuple[float, float, float]:
    checks = (validation.real_number,) * 3
    coefficients = _checked_items(_OWNER, "ns_coefficients", value,
                                  "a tuple of three real numbers (a, b, c)", checks,
                                  length_error=ValueError)
    return tuple(float(item) for item in coefficients)


def Muon(  # noqa: N802 (torch's name)
    lr: ScalarOrSchedule = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
) -> GradientTransformation:
    r"""``torch.optim.Muon``, same arguments, same numbers up to bfloat16's rounding.

    .. math::
        B_t = \mu B_{t-1} + (1-\mu) g_t, \quad
        O_t = \mathrm{NS}^{bf16}_{a,b,c}\big(\mu B_t + (1-\mu) g_t
        \text{ if nesterov else } B_t\big), \qquad
        \theta \leftarrow \theta (1 - \eta\lambda) - \eta\, s(A, B)\, O_t

    with :math:`\mathrm{NS}` ``ns_steps`` Newton–Schulz steps from
    :math:`X_0 = X / \max(\lVert X \rVert_F, \epsilon)`, each rounded to
    bfloat16 as torch computes them, and :math:`s(A, B)` of the leaf's shape
    :math:`A \times B`, as torch reads ``param.shape``: :math:`\sqrt{\max(1,
    A/B)}` (``adjust_lr_fn`` None or ``"original"``) or :math:`0.2\sqrt{\max(A,
    B)}` (``"match_rms_adamw"``). The chain is ``scale_by_muon(momentum_form="ema",
    eps_as_floor=True, ns_dtype=jnp.bfloat16)``, ``scale_by_shape``,
    ``scale_by_learning_rate`` and ``decoupled_weight_decay``.

    The leaves are torch's arrays: torch's ``Linear`` weight is ``(out, in)``,
    a JAX kernel (Flax's ``Dense``) ``(in, out)``, its transpose. On a kernel,
    the ``"original"`` factor is :math:`\sqrt{\max(1, \mathrm{in}/\mathrm{out})}`,
    where torch gives the same layer :math:`\sqrt{\max(1, \mathrm{out}/\mathrm{in})}`
    (``gx.muon``'s, from fan-in and fan-out): the two agree for square kernels
    only. Pass torch's layout for torch's factor; a square matrix given
    transposed is also iterated in the other orientation, which changes
    bfloat16's roundings (not the result beyond them).

    Like torch, it takes 2-D leaves only: any other leaf raises a `ValueError`
    naming its key path and shape at the first update. Give those to another
    optimizer, as torch's param groups do, with ``gx.partition_by_patterns`` or
    ``gx.partition``.

    torch iterates in bfloat16, whose unit roundoff is :math:`2^{-8}`; this
    chain rounds the same intermediate values and agreed bit for bit with
    torch's iteration on small matrices, but a last-bit difference in its
    float32 input (the momentum, whose roundings differ: torch's ``lerp`` is a
    fused multiply-add) can turn one bfloat16 rounding the other way, which
    the iteration spreads over the matrix (tests/pytorch/test_muon.py measures
    it). Differences from torch: ``momentum`` must be in [0, 1) and ``eps`` > 0
    (torch checks only ``momentum >= 0``, and divides 0 by 0 at ``eps=0``),
    ``ns_steps`` an int in [0, 100) and ``ns_coefficients`` finite are checked
    when the preset is built (torch checks ``ns_steps < 100`` at the first
    step); complex leaves are accepted (their parts rounded to bfloat16).

    Args:
      lr: :math:`\eta \ge 0`, or a schedule of the step.
      weight_decay: :math:`\lambda \ge 0`, decoupled (torch's default 0.1).
      momentum: :math:`\mu` in [0, 1).
      nesterov: orthogonalise :math:`\mu B_t + (1-\mu) g_t` rather than :math:`B_t`.
      ns_coefficients: :math:`(a, b, c)`, three finite numbers.
      eps: :math:`\epsilon > 0`, the floor of the first norm.
      ns_steps: Newton–Schulz steps, an int in [0, 100).
      adjust_lr_fn: None or ``"original"`` (Jordan's width factor), or
        ``"match_rms_adamw"`` (Liu et al., 2025).

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.torch.Muon(lr=0.02, adjust_lr_fn="match_rms_adamw")
      >>> state = tx.init({"hidden": jnp.zeros((8, 4))})
    """
    _check_lr(_OWNER, lr)
    validation.non_negative(_OWNER, "weight_decay", weight_decay)
    validation.decay_rate(_OWNER, "momentum", momentum)
    validation.boolean(_OWNER, "nesterov", nesterov)
    coefficients = _ns_coefficients(ns_coefficients)
    validation.positive(_OWNER, "eps", eps)
    ns_steps = validation.positive_int(_OWNER, "ns_steps", ns_steps, minimum=0)
    if ns_steps >= 100:  # torch's own limit
        raise ValueError(f"{_OWNER}: ns_steps must be less than 100 (torch's limit), got "
                         f"{ns_steps!r}")
    if adjust_lr_fn is not None:
        validation.string(_OWNER, "adjust_lr_fn", adjust_lr_fn)
    if adjust_lr_fn not in _ADJUST_LR_FNS:
        raise ValueError(f"{_OWNER}: adjust_lr_fn must be one of {list(_ADJUST_LR_FNS)}, got "
                         f"{adjust_lr_fn!r}")
    parts = [
        scale_by_muon(coefficients, ns_steps, beta=momentum, eps=eps, nesterov=nesterov,
                      momentum_form="ema", eps_as_floor=True, ns_dtype=jnp.bfloat16),
        scale_by_shape(consistent_rms=0.2) if adjust_lr_fn == "match_rms_adamw"
        else scale_by_shape(_ROWS_OUT),
        scale_by_learning_rate(lr),
    ]
    parts += _epilogue(True, weight_decay, lr)
    return returned_by(chain(*parts), _OWNER)
