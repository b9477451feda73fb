"""Muon: orthogonalised momentum for the matrices, AdamW for every other parameter.

A `partition` of two chains of public transforms; it defines no arithmetic.
Names, arguments and defaults are ``optax.contrib.muon``'s (0.2.8).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax

from gradxform.core import masks, validation
from gradxform.core.base import GradientTransformation, ScalarOrSchedule, public_constructor
from gradxform.core.combine import chain
from gradxform.core.matrices import MuonDimensionNumbers, check_dimension_numbers, leaf_dimensions
from gradxform.optimizers.standard import adamw
from gradxform.transforms.orthogonalize import (
    DEFAULT_NS_COEFFS,
    newton_schulz_coefficients,
    scale_by_muon,
)
from gradxform.transforms.partition import partition
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.shape_scaling import scale_by_shape
from gradxform.transforms.weight_decay import add_decayed_weights


def _labels(dimension_numbers: Any, params: Any) -> Any:
    """``"muon"`` for the leaves Muon treats as matrices, ``"adam"`` for the others.

    Without dimension numbers, the 2-D leaves are Muon's; with them, the
    leaves whose entry is a `MuonDimensionNumbers` (None entries: AdamW's).
    """
    leaves, treedef = jax.tree.flatten(params)
    if dimension_numbers is None:
        labels = ["muon" if len(getattr(x, "shape", ())) == 2 else "adam" for x in leaves]
    else:
        numbers = leaf_dimensions("muon", "muon_weight_dimension_numbers", dimension_numbers,
                                  params)
        labels = ["adam" if n is None else "muon" for n in numbers]
    return treedef.unflatten(labels)


@public_constructor
def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: Any = DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: float = 0.95,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Any | Callable[[Any], Any] | None = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps_root: float = 0.0,
    adam_weight_decay: ScalarOrSchedule = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: MuonDimensionNumbers | Any | Callable[[Any], Any] | None = None,
    consistent_rms: float | None = None,
) -> GradientTransformation:
    r"""Muon (MomentUm Orthogonalized by Newton–Schulz), with AdamW for the non-matrix params.

    .. math::
        \theta \leftarrow \theta - \eta \left(s\, \mathrm{NS}(\hat m_t) + \lambda \theta\right)
        \text{ for Muon's leaves}, \qquad
        \theta \leftarrow \theta - \eta_{adam} \left(\frac{\hat m_t}{\sqrt{\hat v_t +
        \epsilon_{root}} + \epsilon} + \lambda_{adam} \theta\right) \text{ for the others}

    with :math:`\mathrm{NS}(\hat m_t)` `scale_by_muon`'s orthogonalised momentum
    and :math:`s` `scale_by_shape`'s factor. As ``optax.contrib.muon``, a
    ``partition``: the leaves Muon treats as matrices (the 2-D ones, or those
    ``muon_weight_dimension_numbers`` gives a `MuonDimensionNumbers`) get
    ``chain(scale_by_muon(...), scale_by_shape(...), add_decayed_weights(weight_decay,
    weight_decay_mask), scale_by_learning_rate(learning_rate))``, the others
    ``adamw(adam_learning_rate or learning_rate, adam_b1, adam_b2, eps, adam_eps_root,
    mu_dtype, adam_weight_decay, nesterov=nesterov)``. The weight decays are
    multiplied by the learning rate, as in PyTorch. Orthogonalisation needs each
    whole matrix: a sharded matrix is gathered for it (its momentum stays
    sharded), and a ``gx.flat_tree`` buffer raises a `TypeError` (it does not keep
    the leaves' 2-D shapes); use the per-leaf tree. Jordan, 2024; Liu et al., 2025.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule (None: no scaling).
      ns_coeffs: Newton–Schulz coefficients, one triple or one per step, or a
        preset, ``"standard"`` or ``"dion"`` (see `scale_by_muon`).
      ns_steps: Newton–Schulz steps, an int >= 0.
      beta: the momentum :math:`\beta` in [0, 1).
      eps: :math:`\epsilon > 0`, of the first scaling and of AdamW.
      weight_decay: :math:`\lambda \ge 0` for Muon's leaves, or a schedule.
      weight_decay_mask: which of Muon's leaves decay, as in `add_decayed_weights`.
      mu_dtype: dtype of both momenta; None keeps the params' dtype.
      nesterov: Nesterov momentum, for both.
      adaptive: scale by the dual norm of the momentum (`scale_by_muon`).
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
      adam_b1: AdamW's :math:`\beta_1` in [0, 1).
      adam_b2: AdamW's :math:`\beta_2` in [0, 1).
      adam_eps_root: AdamW's :math:`\epsilon_{root} \ge 0`.
      adam_weight_decay: AdamW's :math:`\lambda_{adam} \ge 0`, or a schedule.
      adam_learning_rate: AdamW's :math:`\eta_{adam}`; None uses ``learning_rate``.
      muon_weight_dimension_numbers: a `MuonDimensionNumbers` per leaf (None
        for AdamW's leaves), as a tree shaped like (a prefix of) the params or a
        callable ``params -> such a tree``; None: the 2-D leaves are Muon's.
      consistent_rms: :math:`\rho` of `scale_by_shape`, or None for width scaling.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.muon(0.02, weight_decay=1e-2)
      >>> state = tx.init({"w": jnp.zeros((4, 3)), "b": jnp.zeros(3)})
    """
    owner = "muon"
    if learning_rate is not None:
        validation.scalar_or_schedule(owner, "learning_rate", learning_rate)
    if adam_learning_rate is not None:
        validation.scalar_or_schedule(owner, "adam_learning_rate", adam_learning_rate)
    ns_steps = validation.positive_int(owner, "ns_steps", ns_steps, minimum=0)
    ns_coeffs = newton_schulz_coefficients(owner, ns_coeffs, ns_steps)
    validation.decay_rate(owner, "adam_b1", adam_b1)
    validation.decay_rate(owner, "adam_b2", adam_b2)
    validation.non_negative(owner, "adam_eps_root", adam_eps_root)
    validation.scalar_or_schedule(owner, "adam_weight_decay", adam_weight_decay)
    masks.check_mask_argument(owner, "weight_decay_mask", weight_decay_mask)
    check_dimension_numbers(owner, "muon_weight_dimension_numbers", muon_weight_dimension_numbers)
    # None: the labels send only 2-D leaves to Muon, which is what None means to its transforms.
    dimension_numbers = muon_weight_dimension_numbers
    return partition(
        {
            "muon": chain(
                scale_by_muon(ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov=nesterov,
                              adaptive=adaptive, preconditioning=preconditioning,
                              weight_dimension_numbers=dimension_numbers),
                scale_by_shape(dimension_numbers, consistent_rms),
                add_decayed_weights(weight_decay, weight_decay_mask),
                scale_by_learning_rate(learning_rate),
            ),
            "adam": adamw(
                learning_rate if adam_learning_rate is None else adam_learning_rate,
                b1=adam_b1, b2=adam_b2, eps=eps, eps_root=adam_eps_root, mu_dtype=mu_dtype,
                weight_decay=adam_weight_decay, nesterov=nesterov,
            ),
        },
        functools.partial(_labels, muon_weight_dimension_numbers),
    )
