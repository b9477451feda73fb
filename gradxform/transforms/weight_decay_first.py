"""Weight decay applied to the params before a rule reads them (Keras's order)."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from gradxform.core import tree, validation
from gradxform.core.base import GradientTransformation, OptState, public_constructor
from gradxform.core.primitives import apply_updates


class WeightDecayFirstState(NamedTuple):
    """The decay's state and the rule's."""

    decay: OptState
    inner: OptState


@public_constructor
def weight_decay_first(decay: GradientTransformation,
                       rule: GradientTransformation) -> GradientTransformation:
    r"""Decays the weights first, then runs ``rule`` on the decayed weights.

    .. math::
        d = \mathrm{decay}(0, \theta), \quad \theta' = \theta + d, \qquad
        u = d + \mathrm{rule}(g, \theta')

    Keras decays each variable (:math:`\theta \leftarrow \theta - \theta\lambda\eta`)
    before its optimizer's ``update_step`` reads it. For rules that do not read
    the params this is ``chain(rule, decay)``; for those that do (FTRL's linear
    term, LAMB's trust ratio) the rule must see :math:`\theta'`. ``decay`` gets
    zero updates, so it should be a weight decay (``decoupled_weight_decay``,
    ``add_decayed_weights``), whose step depends on the params alone.

    Args:
      decay: the weight decay.
      rule: the transformation that reads the decayed params.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.weight_decay_first(gx.decoupled_weight_decay(0.5, 1.0),
      ...                            gx.scale_by_trust_ratio())
      >>> params = {"w": jnp.array([2.0])}
      >>> updates, _ = tx.update({"w": jnp.array([1.0])}, tx.init(params), params)
      >>> updates["w"]  # -1 of decay, then the ratio of the decayed norm 1 to |g| = 1
      Array([0.], dtype=float32)
    """
    owner = "weight_decay_first"
    validation.transformation(owner, "decay", decay)
    validation.transformation(owner, "rule", rule)

    def init_fn(params):
        return WeightDecayFirstState(decay=decay.init(params), inner=rule.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(f"{owner}: update needs params (the rule reads the decayed "
                             "params), got params=None")
        zeros = tree.tree_map_skip_none(jnp.zeros_like, updates)
        step, decay_state = decay.update(zeros, state.decay, params, **extra_args)
        decayed = apply_updates(params, step)
        inner, inner_state = rule.update(updates, state.inner, decayed, **extra_args)
        total = tree.tree_map_skip_none(lambda a, b: (a + b).astype(b.dtype), step, inner)
        return total, WeightDecayFirstState(decay=decay_state, inner=inner_state)

    return GradientTransformation(init_fn, update_fn)
