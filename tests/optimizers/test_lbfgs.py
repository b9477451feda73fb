"""`lbfgs` and `scale_by_lbfgs` against optax 0.2.8 run live.

* 30 jitted steps with `value_and_grad_from_state` on a nested-tree quadratic (scalar,
  ``None`` and zero-size leaves, a dense Hessian), with the default zoom line search; on a
  logistic regression whose data reach ``value_fn`` as keyword arguments, with a
  backtracking search, ``memory_size=5`` and ``scale_init_precond=False``; with
  ``lbfgs(learning_rate=0.1, linesearch=None)``; and on complex64 params. Each step starts
  optax from our params and state (`compare_runs`): params, values and each state field
  (optax's names and order) agree at every step, float32, rtol 1e-5 of each leaf's scale.
* bfloat16: fed optax's float32 trajectory rounded to bfloat16, ``scale_by_lbfgs`` gives
  optax's directions on those inputs to bfloat16's precision.
* ``inject_hyperparams(lbfgs)`` gives the plain optimizer's updates bit for bit.
* On a `gx.flat_tree` buffer (a kept leaf, a bfloat16 buffer) the state is a FlatTree whose
  ``unravel()`` is the per-leaf state, and the updates are the per-leaf ones.
* The config round trip rebuilds the default line search; ``update`` without params or
  without the objective raises naming the transformation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import FAST_COMPILE, assert_trees_bitwise_equal, assert_trees_close
from tests.transforms.test_linesearch import (
    FEATURES, LABELS, LOGISTIC_START, _SHAPES_PARAMS, compare_runs, logistic, nested_quadratic,
    optax_rules, run,
)


def test_default_lbfgs_runs_as_optax_on_a_nested_quadratic():
    mine = compare_runs(gx.lbfgs(), optax.lbfgs(), nested_quadratic, _SHAPES_PARAMS)
    values = [float(v) for _, _, v in mine]
    assert values[-1] < 1e-3 * values[0]
    state = mine[-1][1][0]
    assert int(state.count) == 30 and state.diff_params_memory["dense"]["kernel"].shape == (10, 4, 3)
    assert state.diff_params_memory["blocks"][1] is None


def test_lbfgs_with_backtracking_and_options_runs_as_optax_on_a_logistic_regression():
    def build(library):
        return library.lbfgs(memory_size=5, scale_init_precond=False,
                             linesearch=library.scale_by_backtracking_linesearch(
                                 15, decrease_factor=0.5, store_grad=True))

    mine = compare_runs(build(gx), build(optax), logistic, LOGISTIC_START,
                        features=FEATURES, labels=LABELS)
    assert int(mine[-1][1][0].count) == 30 and mine[-1][1][0].weights_memory.shape == (5,)


def test_complex_params_run_as_optax():
    """optax's conventions for complex params (the gradient as JAX gives it), followed."""
    matrix = jnp.array([[1, -2], [3, 4], [-4 + 2j, 5 - 3j], [-2 - 2j, 6]], jnp.complex64)

    def fn(params):
        return jnp.sum(jnp.abs(matrix @ params["z"]) ** 1.5)

    start = {"z": jnp.array([1 - 1j, 1j], jnp.complex64)}
    mine = compare_runs(gx.lbfgs(), optax.lbfgs(), fn, start, steps=12)
    assert mine[-1][1][0].diff_params_memory["z"].dtype == jnp.complex64


def test_lbfgs_without_line_search_runs_as_optax():
    # optax's scale_by_learning_rate keeps no count for a constant rate, ours does (member 1).
    mine = compare_runs(gx.lbfgs(learning_rate=0.1, linesearch=None),
                        optax.lbfgs(learning_rate=0.1, linesearch=None), nested_quadratic,
                        _SHAPES_PARAMS, reuse=False, skip=(1,))
    assert float(mine[-1][2]) < 0.5 * float(mine[0][2])


def test_bfloat16_directions_match_optax_on_the_same_inputs():
    """Params and gradients along a path, rounded to bfloat16, into ours and (as float32)
    into optax's: the same directions to bfloat16's precision."""
    grad_fn = jax.jit(jax.grad(nested_quadratic))
    path = [jax.tree.map(lambda p: (1.0 - 0.15 * k) * p, _SHAPES_PARAMS) for k in range(6)]
    low = jax.tree.map(lambda x: x.astype(jnp.bfloat16), [(p, grad_fn(p)) for p in path])
    tx, reference = gx.scale_by_lbfgs(), optax.scale_by_lbfgs()
    update = jax.jit(tx.update, compiler_options=FAST_COMPILE)
    with optax_rules():
        reference_update = jax.jit(reference.update, compiler_options=FAST_COMPILE)
    state, ref_state = tx.init(low[0][0]), reference.init(_SHAPES_PARAMS)
    for step, (params, grads) in enumerate(low):
        direction, state = update(grads, state, params)
        assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves((direction, state[1:5])))
        grads32, params32 = jax.tree.map(lambda x: x.astype(jnp.float32), (grads, params))
        with optax_rules():
            expected, ref_state = reference_update(grads32, ref_state, params32)
        scale = max(float(np.max(np.abs(x), initial=0.0)) for x in jax.tree.leaves(expected))
        assert_trees_close(direction, expected, 3e-2, 3e-2 * scale, f"direction at step {step}")


def test_inject_hyperparams_lbfgs_is_the_plain_optimizer_bit_for_bit():
    """The update jitted alone, with XLA's default options: the fast CPU options, or
    apply_updates compiled with it, may round the two programs differently
    (gradxform/transforms/injection.py)."""
    plain = gx.lbfgs(learning_rate=0.5, memory_size=3, linesearch=None)
    injected = gx.inject_hyperparams(gx.lbfgs)(learning_rate=0.5, memory_size=3, linesearch=None)
    start = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.asarray(3.0)}
    grad_fn = jax.jit(jax.grad(lambda p: jnp.sum(jnp.arange(1.0, 4.0) * p["w"] ** 2)
                               + (p["b"] - p["w"][0]) ** 2))
    runs = []
    for tx in (plain, injected):
        update, params, state, out = jax.jit(tx.update), start, tx.init(start), []
        for _ in range(20):
            updates, state = update(grad_fn(params), state, params)
            params = gx.apply_updates(params, updates)
            out.append((updates, state))
        runs.append(out)
    for step, ((u, s), (v, t)) in enumerate(zip(*runs)):
        assert_trees_bitwise_equal(u, v, f"updates at step {step}")
        assert_trees_bitwise_equal(s, t.inner_state, f"state at step {step}")
    assert float(runs[1][-1][1].hyperparams["learning_rate"]) == 0.5


def test_flat_tree_state_unravels_to_the_per_leaf_state():
    params = {"kernel": jnp.arange(6.0).reshape(2, 3) / 7, "bias": jnp.ones(3),
              "scalar": jnp.asarray(0.5), "half": jnp.full(2, 0.25, jnp.bfloat16),
              "embedding": jnp.linspace(-1.0, 1.0, 8).reshape(4, 2), "skip": None}
    flat = gx.flat_tree(params, keep=lambda path, leaf: path == "embedding")
    tx = gx.scale_by_lbfgs(memory_size=3)
    update = jax.jit(tx.update, compiler_options=FAST_COMPILE)
    per_leaf, flat_state = tx.init(params), tx.init(flat)
    assert isinstance(flat_state.diff_params_memory, gx.FlatTree)
    for step in range(4):  # more steps than the memory holds
        grads = jax.tree.map(lambda p: jnp.sin((step + 2.0) * p.astype(jnp.float32)).astype(p.dtype),
                             params)
        params = gx.apply_updates(params, jax.tree.map(lambda g: -0.1 * g, grads))
        want, per_leaf = update(grads, per_leaf, params)
        got, flat_state = update(flat.ravel(grads), flat_state, flat.ravel(params))
        assert_trees_close(got.unravel(), want, 1e-5, 1e-6, f"direction at step {step}")
    unravelled = jax.tree.map(lambda x: x.unravel() if isinstance(x, gx.FlatTree) else x,
                              flat_state, is_leaf=lambda x: isinstance(x, gx.FlatTree))
    assert_trees_close(unravelled, per_leaf, 1e-5, 1e-6, "state")
    assert unravelled.diff_updates_memory["kernel"].shape == (3, 2, 3)


def test_config_round_trip_and_named_errors():
    tx = gx.lbfgs(memory_size=7, linesearch=gx.scale_by_zoom_linesearch(5, curv_rtol=0.5))
    rebuilt = gx.from_config(gx.to_config(tx))
    assert repr(rebuilt) == repr(tx)
    assert repr(gx.from_config(gx.to_config(gx.lbfgs()))) == repr(gx.lbfgs())
    w = jnp.array([1.0, -2.0])
    with pytest.raises(TypeError, match="scale_by_lbfgs: update needs the params"):
        gx.scale_by_lbfgs().update(w, gx.scale_by_lbfgs().init(w))
    with pytest.raises(TypeError, match=r"lbfgs: update needs .*missing.*scale_by_zoom_linesearch"):
        gx.lbfgs().update(w, gx.lbfgs().init(w), w)
    with pytest.raises(ValueError, match=r"scale_by_lbfgs: the update at \['b'\] has shape"):
        gx.scale_by_lbfgs().update({"b": w}, gx.scale_by_lbfgs().init({"b": w[:1]}), {"b": w[:1]})
