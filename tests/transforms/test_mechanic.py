"""mechanize against optax.contrib.mechanize, wrapped around two base optimizers.

* Over 32 jitted steps of a trajectory on the nested tree (params moved by
  gradxform's updates, both sides given the same params and gradients): SGD
  with momentum at the defaults, and Adam with every option changed (weight
  decay, eps, s_init, num_betas); float32 to 1e-5, and bfloat16 compared with
  optax run in float32. The state is compared field by field (the base
  optimizer's state is gradxform's own layout, compared apart: its moments).
* ``x0`` is the params of the first update, not of ``init``.
* Extra keyword arguments reach a base optimizer that takes them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.optimizers.test_parameter_free import (
    BF16_TOLERANCE,
    against_optax,
    assert_close,
    assert_state_fields,
    assert_updates_close,
)

BASES = {
    "sgd_momentum": (lambda: gx.sgd(0.5, momentum=0.9), lambda: optax.sgd(0.5, momentum=0.9), {}),
    "adam_options": (lambda: gx.adam(0.1, b1=0.8), lambda: optax.adam(0.1, b1=0.8),
                     dict(weight_decay=0.1, eps=1e-6, s_init=1e-3, num_betas=3)),
}


@pytest.mark.parametrize("base", sorted(BASES))
def test_mechanize_matches_optax(base):
    ours, theirs, kwargs = BASES[base]
    pairs, state, ref_state, _ = against_optax(gx.mechanize(ours(), **kwargs),
                                               optax.contrib.mechanize(theirs(), **kwargs))
    # The update is new params minus old ones (both of size about 1): a rounding of the params,
    # 6e-8 in float32, is the absolute error.
    assert_updates_close(pairs, 1e-5, base, atol=2.5e-7)
    assert_state_fields(state, ref_state, 1e-5, skip=("base_optimizer_state",))
    assert float(np.sum(state.s)) > 10 * float(kwargs.get("s_init", 1e-6))  # the scale was learnt
    if base == "adam_options":
        assert_close(state.base_optimizer_state[0].mu, ref_state.base_optimizer_state[0].mu, 1e-5)


def test_mechanize_in_bfloat16_matches_optax_in_float32():
    pairs, _, _, _ = against_optax(gx.mechanize(gx.sgd(0.5, momentum=0.9)),
                                   optax.contrib.mechanize(optax.sgd(0.5, momentum=0.9)),
                                   dtype=jnp.bfloat16)
    assert_updates_close(pairs, BF16_TOLERANCE, "mechanize", tree_scale=True)


def test_x0_is_taken_at_the_first_update():
    tx = gx.mechanize(gx.sgd(1.0))
    state = tx.init({"w": jnp.zeros(3)})
    loaded = {"w": jnp.array([1.0, 2.0, 3.0])}  # e.g. pre-trained weights restored after init
    _, state = jax.jit(tx.update)({"w": jnp.ones(3)}, state, loaded)
    np.testing.assert_array_equal(state.x0["w"], loaded["w"])
    assert int(state.count) == 1


def test_extra_arguments_reach_the_base_optimizer():
    params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.5, 0.5])}
    tx = gx.mechanize(gx.polyak_sgd(max_learning_rate=0.5))
    with pytest.raises(TypeError, match="needs the current loss as the keyword argument value"):
        tx.update(grads, tx.init(params), params)
    step = jax.jit(lambda g, s, p, v: tx.update(g, s, p, value=v))
    _, state = step(grads, tx.init(params), params, jnp.float32(2.0))
    assert int(state.count) == 1
