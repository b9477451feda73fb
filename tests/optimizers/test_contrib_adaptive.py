"""adopt, ademamix, simplified_ademamix and madgrad against optax.contrib live.

* Each alias matches optax.contrib's over 30 jitted steps (params moved by the
  updates) on a nested tree with scalars, ``None``, vectors, an empty leaf and
  matrices, for the defaults and for non-default arguments (schedules for the
  learning rate, ADOPT's clipping bound, AdEMAMix's ``b3`` and ``alpha``; weight
  decay with a mask; Nesterov; no clipping), in float32 (updates, params, and the
  state of the member doing the scaling, field by field) and in bfloat16 against
  optax in float32. (optax multiplies a bfloat16 momentum by its decay rounded
  to bfloat16, so ``mu_dtype`` is checked in the transforms' own tests.)
* ``inject_hyperparams(alias)`` is bit for bit the plain alias over 20 steps.
* Each alias is a chain of public transforms; the defaults round-trip through
  ``to_config`` (ADOPT's default bound is the public `adopt_clip_value`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    LOW_PRECISION,
    assert_trees_bitwise_equal,
    assert_trees_close,
    cast_tree,
    gradient_stream,
    random_params,
    trajectory,
)

STEPS = 30


def _decaying(count):
    return 1e-2 / (1.0 + count.astype(jnp.float32))


def _matrices(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def _clip_bound(count):
    return 0.5 + jnp.sqrt(count.astype(jnp.float32))


def _slow_decay(count):
    return 0.999 - 0.4 / (1.0 + count.astype(jnp.float32))


def _alpha_warmup(count):
    return 4.0 * jnp.minimum(count.astype(jnp.float32) / 10.0, 1.0)


CASES = {
    "adopt": [dict(learning_rate=1e-2),
              dict(learning_rate=_decaying, b1=0.8, b2=0.99, eps=1e-4, nesterov=True,
                   clip_value_fn=_clip_bound),
              dict(learning_rate=1e-2, b2=0.5, use_clipping=False)],
    "ademamix": [dict(learning_rate=1e-2),
                 dict(learning_rate=_decaying, b1=0.8, b2=0.99, b3=_slow_decay,
                      alpha=_alpha_warmup, eps=1e-6, eps_root=1e-8, weight_decay=0.1,
                      mask=_matrices)],
    "simplified_ademamix": [dict(learning_rate=1e-3),
                            dict(learning_rate=_decaying, b1=0.9, b2=0.99, alpha=_alpha_warmup,
                                 eps=1e-6, eps_root=1e-8, weight_decay=0.1, mask=_matrices)],
    "madgrad": [dict(learning_rate=1e-2),
                dict(learning_rate=_decaying, momentum=0.5, weight_decay=0.1, eps=1e-4)],
}
# Every argument set in float32; the last one of each alias in bfloat16 too.
PARAMS = [pytest.param(name, kwargs, dtype, id=f"{name}-{index}-{dtype.__name__}")
          for name, arguments in CASES.items() for index, kwargs in enumerate(arguments)
          for dtype in ([jnp.float32, jnp.bfloat16] if index == len(arguments) - 1
                        else [jnp.float32])]
# The member whose state holds the moments: madgrad adds its L2 decay first.
SCALING_MEMBER = {"adopt": 0, "ademamix": 0, "simplified_ademamix": 0, "madgrad": 1}
STATE_FIELDS = {"adopt": ("count", "mu", "nu"), "ademamix": ("count", "count_m2", "m1", "m2", "nu"),
                "simplified_ademamix": ("t", "m", "n"),
                "madgrad": ("count", "grad_sum_sq", "s", "x0")}


def _assert_scaled_close(actual, expected, rtol, context):
    """Leaf by leaf, to ``rtol`` of each entry or of the leaf's largest entry."""
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        scale = float(np.max(np.abs(e), initial=0.0))
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale + 1e-30, err_msg=context)


def _assert_state_close(state, reference, rtol, context):
    assert state._fields == reference._fields, context
    for field, mine, ref in zip(state._fields, state, reference):
        if field in ("count", "count_m2", "t"):
            assert mine.dtype == jnp.int32 and int(mine) == int(ref), context
        else:
            _assert_scaled_close(mine, ref, rtol, f"{context} {field}")


@pytest.mark.parametrize("name, kwargs, dtype", PARAMS)
def test_matches_optax(name, kwargs, dtype):
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    # bfloat16 params would round every small step, and MADGRAD's update reads the params
    # themselves (x_{k+1} - x_k): in bfloat16 the params stay where they are.
    low = dtype in LOW_PRECISION
    ours = trajectory(getattr(gx, name)(**kwargs), params, grads_seq, move=not low)
    theirs = trajectory(getattr(optax.contrib, name)(**kwargs), cast_tree(params, jnp.float32),
                        [cast_tree(g, jnp.float32) for g in grads_seq], standard=True,
                        move=not low)
    member = SCALING_MEMBER[name]
    for step, ((u, p, s), (u_ref, p_ref, s_ref)) in enumerate(zip(ours, theirs)):
        context = f"{name} {kwargs} {dtype.__name__} step {step}"
        assert {x.dtype for x in jax.tree.leaves(u)} == {jnp.dtype(dtype)}, context
        assert s[member]._fields == STATE_FIELDS[name]
        if low:  # bfloat16 moments round: to 2% of the largest entry of the step's updates
            scale = max(float(np.max(np.abs(np.asarray(x, np.float64)), initial=0.0))
                        for x in jax.tree.leaves(u_ref))
            assert_trees_close(u, u_ref, 2e-2, 2e-2 * scale, context)
        else:
            assert_trees_close(u, u_ref, 2e-5, 1e-8, context)
            _assert_state_close(s[member], s_ref[member], 1e-5, context)
    if not low:
        assert_trees_close(p, p_ref, 1e-5, 1e-6, "params after the last step")


INJECTED = {
    "adopt": dict(learning_rate=_decaying, b1=0.8, eps=1e-4, nesterov=True),
    "ademamix": dict(learning_rate=1e-2, b3=_slow_decay, alpha=_alpha_warmup, weight_decay=1e-2,
                     mask=_matrices),
    "simplified_ademamix": dict(learning_rate=_decaying, b1=0.9, alpha=2.0, weight_decay=1e-2),
    "madgrad": dict(learning_rate=_decaying, momentum=0.8, weight_decay=1e-2),
}
INJECTED_SHAPES = {"kernel": (4, 3), "bias": (3,), "blocks": [None, ()]}


@pytest.mark.parametrize("name", INJECTED)
def test_inject_hyperparams_is_bitwise_the_plain_alias(name):
    factory, kwargs = getattr(gx, name), INJECTED[name]
    params = random_params(0, shapes=INJECTED_SHAPES)
    grads_seq = gradient_stream(params, 20, seed=4)
    plain = trajectory(factory(**kwargs), params, grads_seq, move=True, compiler_options=None)
    injected = trajectory(gx.inject_hyperparams(factory)(**kwargs), params, grads_seq, move=True,
                          compiler_options=None)
    for step, ((u, p, s), (u_i, p_i, s_i)) in enumerate(zip(plain, injected)):
        assert_trees_bitwise_equal(u_i, u, f"{name} step {step}")
        assert_trees_bitwise_equal(p_i, p, f"{name} step {step}")
        assert_trees_bitwise_equal(s_i.inner_state, s, f"{name} step {step}")


def test_each_alias_is_a_chain_of_public_transforms():
    expected = {
        "adopt": ["scale_by_adopt", "scale_by_learning_rate"],
        "ademamix": ["scale_by_ademamix", "add_decayed_weights", "scale_by_learning_rate"],
        "simplified_ademamix": ["scale_by_simplified_ademamix", "add_decayed_weights",
                                "scale_by_learning_rate"],
        "madgrad": ["add_decayed_weights", "scale_by_madgrad"],
    }
    for name, members in expected.items():
        tx = getattr(gx, name)(0.1)
        assert tx.name == name and tx.inner.name == "chain", name
        assert [member.name for member in tx.inner.children] == members, name
        assert repr(gx.from_config(gx.to_config(tx))) == repr(tx)
    assert "clip_value_fn=<function adopt_clip_value>" in repr(gx.adopt(0.1))


def test_ademamix_keeps_optaxs_two_alpha_defaults():
    assert gx.scale_by_ademamix().hyperparams["alpha"] == 6.0
    assert gx.ademamix(0.1).hyperparams["alpha"] == 5.0


@pytest.mark.parametrize("call, error, message", [
    (lambda: gx.adopt(0.1, eps=0.0), ValueError, r"adopt: eps must be in \(0, inf\), got 0.0"),
    (lambda: gx.adopt(0.1, clip_value_fn=0.25), TypeError, r"adopt: clip_value_fn must be callable"),
    (lambda: gx.ademamix(0.1, b3=1.5), ValueError, r"ademamix: b3 must be in \[0, 1\], got 1.5"),
    (lambda: gx.simplified_ademamix(0.1, b2=1.0), ValueError,
     r"simplified_ademamix: b2 must be in \[0, 1\), got 1.0"),
    (lambda: gx.madgrad(0.1, momentum=1.0), ValueError,
     r"madgrad: momentum must be in \[0, 1\), got 1.0"),
    (lambda: gx.madgrad(0.1, weight_decay=-1.0), ValueError, r"madgrad: weight_decay must be"),
])
def test_errors_name_the_alias(call, error, message):
    with pytest.raises(error, match=message):
        call()
