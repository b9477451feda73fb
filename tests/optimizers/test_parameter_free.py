"""prodigy, dog, dowg, cocob and sophia against ``optax.contrib``; inject_hyperparams bitwise.

* Each alias against ``optax.contrib``'s alias of the same name and arguments
  over `STEPS` jitted steps of a trajectory: the params move by gradxform's
  updates, the gradients pull them towards a target (plus noise, and a zero
  gradient every seventh step), and both optimizers see the same params and
  gradients at every step. The tree is the nested one (dicts, lists, tuples,
  ``None``, 0-d and zero-size leaves). Defaults and non-default options
  (schedules, masks, weight decay, other start rules), float32 to 1e-5 and
  bfloat16 (compared with optax run in float32 on the same values, to
  bfloat16's precision). The state of the transform holding the math is
  compared field by field, under optax's field names.
* ``inject_hyperparams(alias)`` gives bit for bit the plain alias's updates,
  params and state over 20 jitted steps (sophia with its ``obj_fn``), on a
  smaller nested tree (a dict, a list, ``None`` and a 0-d leaf).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    FAST_COMPILE,
    assert_trees_bitwise_equal,
    gradient_stream,
    random_params,
)

STEPS = 32
INJECT_STEPS = 20
# Every kind of node, in fewer leaves: the injected programs compile both branches.
INJECT_SHAPES = {"dense": {"kernel": (4, 3), "bias": (3,)}, "blocks": [None, ()]}
BF16_TOLERANCE = 3e-2


def _decaying(count):
    return 0.5 / (1.0 + 0.1 * count.astype(jnp.float32))


def _matrices(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def objective(params):
    """A real loss of any tree, with a Hessian diagonal that varies: sum p**2/2 + p**4/12."""
    total = jnp.zeros([], jnp.float32)
    for p in jax.tree.leaves(params):
        if jnp.issubdtype(jnp.asarray(p).dtype, jnp.inexact):
            x = jnp.asarray(p).astype(jnp.float32)
            total = total + jnp.sum(0.5 * x * x + x**4 / 12)
    return total


@jax.jit
def _pull(params, target, noise, scale):
    """Gradients towards ``target`` plus noise, in the params' dtypes (all zero for scale 0)."""
    return jax.tree.map(
        lambda p, t, n: (scale * (p.astype(jnp.float32) - t + 0.3 * n.astype(jnp.float32))
                         ).astype(p.dtype), params, target, noise)


@jax.jit
def _f32(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


def against_optax(tx, reference, *, dtype=jnp.float32, steps=STEPS, extra: Callable | None = None,
                  seed=0):
    """Runs ``tx`` along a trajectory and ``reference`` (optax, in float32) on the same params
    and gradients at every step; returns ``[(updates, ref_updates)]``, the final states and the
    final params."""
    params = random_params(seed, dtype)
    target = _f32(random_params(seed + 7))
    noise = gradient_stream(params, steps, seed + 1)
    extras = {} if extra is None else extra
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, **extras), compiler_options=FAST_COMPILE)
    state = jax.jit(tx.init, compiler_options=FAST_COMPILE)(params)
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        ref_update = jax.jit(lambda g, s, p: reference.update(g, s, p, **extras),
                             compiler_options=FAST_COMPILE)
        ref_state = jax.jit(reference.init, compiler_options=FAST_COMPILE)(_f32(params))
    pairs = []
    for step in range(steps):
        grads = _pull(params, target, noise[step], jnp.float32(step % 7 != 6))
        updates, state = update(grads, state, params)
        with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
            ref_updates, ref_state = ref_update(_f32(grads), ref_state, _f32(params))
        for leaf, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
            assert leaf.dtype == g.dtype, (step, leaf.dtype, g.dtype)
        pairs.append((updates, ref_updates))
        params = gx.apply_updates(params, updates)
    return pairs, state, ref_state, params


def assert_close(actual, expected, rtol, context="", tree_scale=False, atol=0.0):
    """Leaf by leaf; the absolute tolerance scales with the leaf's largest entry (the tree's
    with ``tree_scale``: bfloat16 roundings of the state move near-zero entries by that much)."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected), context
    largest = max([float(np.max(np.abs(np.asarray(e, np.float64))))
                   for e in jax.tree.leaves(expected) if np.size(e)] or [0.0])
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        assert a.shape == e.shape, context
        scale = largest if tree_scale else (float(np.max(np.abs(e))) if e.size else 0.0)
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale + atol + 1e-30,
                                   err_msg=context)


def assert_updates_close(pairs, rtol, name="", tree_scale=False, atol=0.0):
    for step, (mine, theirs) in enumerate(pairs):
        assert_close(mine, theirs, rtol, f"{name} step {step}", tree_scale, atol)


def assert_state_fields(mine, theirs, rtol, skip=()):
    """Same NamedTuple fields as optax's, in order, and each field's values close."""
    assert type(mine)._fields == type(theirs)._fields, (type(mine)._fields, type(theirs)._fields)
    for field in type(theirs)._fields:
        if field in skip:
            continue
        a, b = getattr(mine, field), getattr(theirs, field)
        if hasattr(b, "_fields"):  # a nested state (the Hessian estimator's)
            assert_state_fields(a, b, rtol)
        elif jax.tree.leaves(b) and jnp.asarray(jax.tree.leaves(b)[0]).dtype in (
                jnp.bool_, jnp.int32):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=field)
        else:
            assert_close(a, b, rtol, field)


# (alias, arguments, where the transform's state is in gradxform's chain and in optax's)
CASES = [
    ("prodigy", dict(), (0, None)),
    ("prodigy", dict(learning_rate=_decaying, betas=(0.8, 0.99), beta3=0.95, eps=1e-6,
                     estim_lr0=1e-4, estim_lr_coef=0.5, weight_decay=0.1,
                     safeguard_warmup=True), (0, None)),
    ("dog", dict(), (1, 1)),
    ("dog", dict(learning_rate=_decaying, init_step=("distance", 0.1), eps=1e-6,
                 weight_decay=0.01, mask=_matrices), (1, 1)),
    ("dog", dict(init_step=("learning_rate", 0.05)), (1, 1)),
    ("dowg", dict(), (1, 1)),
    ("dowg", dict(learning_rate=_decaying, init_estim_sq_dist=0.01, eps=1e-3, weight_decay=0.01,
                  mask=_matrices), (1, 1)),
    ("cocob", dict(), (2, 2)),
    ("cocob", dict(learning_rate=_decaying, alpha=10.0, eps=1e-4, weight_decay=0.01,
                   mask=_matrices), (2, 2)),
    ("sophia", dict(learning_rate=0.1), (0, 0)),
    ("sophia", dict(learning_rate=_decaying, b1=0.9, b2=0.95, eps=1e-6, weight_decay=0.01,
                    weight_decay_mask=_matrices, gamma=0.5, clip_threshold=None,
                    update_interval=3,
                    hessian_diagonal_fn=None), (0, 0)),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


def _build(name, kwargs):
    kwargs = dict(kwargs)
    if kwargs.get("hessian_diagonal_fn", 0) is None:  # the same seeded estimator on both sides
        key = jax.random.PRNGKey(3)
        return (gx.sophia(**dict(kwargs, hessian_diagonal_fn=gx.hutchinson_estimator_diag_hessian(
            key))), optax.contrib.sophia(**dict(
                kwargs, hessian_diagonal_fn=optax.contrib.hutchinson_estimator_diag_hessian(key))))
    return getattr(gx, name)(**kwargs), getattr(optax.contrib, name)(**kwargs)


def _extra(name):
    return {"obj_fn": objective} if name == "sophia" else None


@pytest.mark.parametrize("name, kwargs, index", CASES, ids=IDS)
def test_alias_matches_optax_contrib(name, kwargs, index):
    tx, reference = _build(name, kwargs)
    pairs, state, ref_state, _ = against_optax(tx, reference, extra=_extra(name))
    assert_updates_close(pairs, 1e-5, name)
    mine, theirs = index
    assert_state_fields(state[mine], ref_state if theirs is None else ref_state[theirs], 1e-5)


BF16_CASES = {
    "prodigy": {}, "dog": {}, "dowg": {}, "cocob": {},
    # A curvature average close to the Hessian (b2, gamma): few entries at the clip, whose
    # sign flips with a rounding of the momentum near 0.
    "sophia": dict(learning_rate=0.1, b2=0.5, gamma=1.0, update_interval=2),
}


@pytest.mark.parametrize("name", sorted(BF16_CASES))
def test_alias_in_bfloat16_matches_optax_in_float32(name):
    tx, reference = _build(name, BF16_CASES[name])
    pairs, _, _, final = against_optax(tx, reference, dtype=jnp.bfloat16, extra=_extra(name))
    if name != "cocob":
        assert_updates_close(pairs, BF16_TOLERANCE, name, tree_scale=True)
        return
    # COCOB's update is the new params minus the old ones, which cancel in bfloat16:
    # compare where each step lands instead.
    params = [np.asarray(p, np.float64) for p in jax.tree.leaves(random_params(0, jnp.bfloat16))]
    for step, (mine, theirs) in enumerate(pairs):
        mine = [np.asarray(u, np.float64) for u in jax.tree.leaves(mine)]
        theirs = [np.asarray(u, np.float64) for u in jax.tree.leaves(theirs)]
        assert_close([p + u for p, u in zip(params, mine)],
                     [p + u for p, u in zip(params, theirs)], BF16_TOLERANCE, f"cocob {step}")
        params = [(p + u).astype(ml_dtypes.bfloat16).astype(np.float64)
                  for p, u in zip(params, mine)]
    assert_close(params, jax.tree.leaves(final), BF16_TOLERANCE)


# ------------------------------------------------------------------------- inject_hyperparams

INJECT_CASES = {
    "prodigy": dict(learning_rate=0.5, beta3=0.9, eps=1e-6, weight_decay=0.01),
    "dog": dict(learning_rate=_decaying, eps=1e-6, weight_decay=0.01),
    "dowg": dict(learning_rate=0.5, init_estim_sq_dist=0.1, eps=1e-3),
    "cocob": dict(learning_rate=0.8, alpha=20.0, weight_decay=0.01),
    "sophia": dict(learning_rate=0.1, gamma=0.5, clip_threshold=0.5, update_interval=2),
    "mechanize": dict(base_optimizer=gx.adam(0.5), weight_decay=0.05, s_init=1e-4),
}


def _trajectory(tx, params, grads_seq, extra):
    update = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra))
    state, history = tx.init(params), []
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        params = gx.apply_updates(params, updates)
        history.append((updates, params, state))
    return history


@pytest.mark.parametrize("name", sorted(INJECT_CASES))
def test_inject_hyperparams_is_bitwise_the_plain_alias(name):
    factory, arguments = getattr(gx, name), INJECT_CASES[name]
    params = random_params(0, shapes=INJECT_SHAPES)
    grads_seq = gradient_stream(params, INJECT_STEPS, seed=3)
    extra = _extra(name) or {}
    injected_tx = gx.inject_hyperparams(factory)(**arguments)
    assert set(injected_tx.init(params).hyperparams) >= {
        k for k, v in arguments.items() if isinstance(v, float)}
    plain = _trajectory(factory(**arguments), params, grads_seq, extra)
    injected = _trajectory(injected_tx, params, grads_seq, extra)
    for step, ((u, p, s), (u_i, p_i, s_i)) in enumerate(zip(plain, injected)):
        context = f"{name}, step {step}"
        assert_trees_bitwise_equal(u_i, u, context)
        assert_trees_bitwise_equal(p_i, p, context)
        assert_trees_bitwise_equal(s_i.inner_state, s, context)
    moved = [np.any(np.asarray(a) != np.asarray(b))
             for a, b in zip(jax.tree.leaves(plain[-1][1]), jax.tree.leaves(params))]
    assert any(moved), "the params never moved"


# ------------------------------------------------------------------------------- structure


def test_aliases_are_the_documented_chains():
    assert [m.name for m in gx.prodigy().inner.children] == ["scale_by_prodigy", "scale"]
    assert [m.name for m in gx.dog().inner.children] == ["identity", "scale_by_dog",
                                                   "scale_by_learning_rate"]
    assert [m.name for m in gx.dowg(weight_decay=0.1).inner.children] == [
        "add_decayed_weights", "scale_by_dowg", "scale_by_learning_rate"]
    assert [m.name for m in gx.cocob().inner.children] == [
        "add_decayed_weights", "scale_by_learning_rate", "scale_by_cocob"]
    assert gx.cocob().inner.children[1].hyperparams["flip_sign"] is False
    assert [m.name for m in gx.sophia(0.1).inner.children] == [
        "scale_by_sophia", "add_decayed_weights", "scale_by_learning_rate"]


@pytest.mark.parametrize("call, message", [
    (lambda: gx.dog(init_step=("guess", 1.0)), r"dog: init_step's kind must be one of"),
    (lambda: gx.dog(mask=3), r"dog: mask must be"),
    (lambda: gx.prodigy(betas=(0.9, 1.0)), r"prodigy: betas\[1\] must be in \[0, 1\)"),
    (lambda: gx.sophia(0.1, update_interval=0), r"sophia: update_interval must be an int >= 1"),
    (lambda: gx.cocob(eps=0.0), r"cocob: eps must be in \(0, inf\)"),
])
def test_bad_arguments_name_the_alias(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call()


def test_state_is_reachable_under_optax_names():
    params = random_params(0)
    state = gx.prodigy().init(params)
    assert isinstance(state[0], gx.ProdigyState)
    assert float(gx.tree_get(state, "estim_lr")) == pytest.approx(1e-6)
    assert isinstance(gx.sophia(0.1).init(params)[0].hessian_fn_state, gx.HutchinsonState)
