"""snapshot and monitor against optax's, run live.

* 36 jitted steps of a chain that measures between its members, over a nested
  tree with a 0-d, a zero-size and a ``None`` leaf, in float32: the updates
  pass through unchanged, and every measurement (a global norm, a tree of
  per-leaf sums, stateful measures: a hand-written running maximum, ``ema``,
  optax's ``measure_with_ema``) and every measure's state equal optax's
  (rtol 1e-5). In bfloat16, against optax in float32 on the same values.
* snapshot's state after ``init`` is optax's (the measure of the params);
  monitor's holds zeros shaped like the measurements (optax's is an empty
  dict until the first update), so the state's layout never changes: one trace
  under ``jit``, ``jax.eval_shape(tx.init, ...)`` matches.
* A measurement keeps its dtype in the state; one that changes structure or
  shape raises, naming the transformation and the measurement. Extra keyword
  arguments reach the measures that accept them.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import assert_trees_close, cast_tree, gradient_stream, random_params

STEPS = 36


def leaf_sums(tree):
    """A tree measurement: each leaf's sum of squares, in float32."""
    return jax.tree.map(lambda x: jnp.sum(jnp.square(x.astype(jnp.float32))), tree)


def global_norm(tree):
    """A scalar measurement written with jax.numpy only, the same function on both sides."""
    leaves = [jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)]
    return jnp.sqrt(sum(leaves, jnp.zeros([], jnp.float32)))


class RunningMaxState(NamedTuple):
    largest: jax.Array
    count: jax.Array


def running_max_norm():
    """A stateful measure, written once and given to both libraries: the largest norm so far."""

    def init(params):
        del params
        return RunningMaxState(jnp.zeros([], jnp.float32), jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        del params
        largest = jnp.maximum(state.largest, global_norm(updates))
        return largest, RunningMaxState(largest, state.count + 1)

    return gx.GradientTransformation(init, update)


def _ours_and_optax(kind):
    if kind == "snapshot":
        ours = gx.chain(gx.sgd(0.1, momentum=0.9), gx.snapshot("norm_before_clip", global_norm),
                        gx.snapshot("sums", leaf_sums), gx.clip_by_global_norm(0.05))
        with jax.numpy_dtype_promotion("standard"):
            ref = optax.chain(optax.sgd(0.1, momentum=0.9),
                              optax.snapshot("norm_before_clip", global_norm),
                              optax.snapshot("sums", leaf_sums), optax.clip_by_global_norm(0.05))
        return ours, ref
    measures = {"norm": global_norm, "sums": leaf_sums, "largest": running_max_norm()}
    with jax.numpy_dtype_promotion("standard"):
        ours = gx.chain(gx.monitor({**measures, "ema": gx.ema(0.9),
                                    "norm_ema": optax.measure_with_ema(global_norm, 0.8)}),
                        gx.clip_by_global_norm(1.0), gx.adam(1e-2))
        ref = optax.chain(optax.monitor({**measures, "ema": optax.ema(0.9),
                                         "norm_ema": optax.measure_with_ema(global_norm, 0.8)}),
                          optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    return ours, ref


def _run(tx, params, grads_seq, standard=False):
    def go():
        update = jax.jit(tx.update)
        state = tx.init(params)
        out = [(None, state)]
        for grads in grads_seq:
            updates, state = update(grads, state, params)
            out.append((updates, state))
        return out

    if not standard:
        return go()
    with jax.numpy_dtype_promotion("standard"), jax.debug_nans(False):
        return go()


def _measurements(state, kind):
    """Name -> measurement, found in the state as optax.tree.get finds them."""
    if kind == "snapshot":
        return {name: optax.tree.get(state, name) for name in ("norm_before_clip", "sums")}
    monitor_state = state[0]
    return dict(monitor_state.measurements)


@pytest.mark.parametrize("kind", ["snapshot", "monitor"])
def test_float32_matches_optax_at_every_step(kind):
    # optax's monitor keeps optax measures (measure_with_ema) which need standard promotion.
    standard = kind == "monitor"
    ours, ref = _ours_and_optax(kind)
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    mine, theirs = _run(ours, params, grads_seq, standard), _run(ref, params, grads_seq, True)
    for step, ((u, s), (ru, rs)) in enumerate(zip(mine, theirs)):
        context = f"{kind} step {step}"
        if step == 0:
            if kind == "snapshot":  # optax's init: the measure of the params
                assert_trees_close(_measurements(s, kind), _measurements(rs, kind), 1e-6, 0, context)
            else:  # optax's: an empty dict; ours: zeros shaped like the measurements
                assert rs[0].measurements == {}
                first = _measurements(mine[1][1], kind)
                zeros = _measurements(s, kind)
                assert jax.tree.structure(zeros) == jax.tree.structure(first)
                for z, f in zip(jax.tree.leaves(zeros), jax.tree.leaves(first)):
                    assert (z.shape, z.dtype) == (f.shape, f.dtype) and not np.any(z)
            continue
        assert_trees_close(u, ru, rtol=1e-5, atol=1e-6, context=f"{context}: updates")
        assert_trees_close(_measurements(s, kind), _measurements(rs, kind), rtol=1e-5, atol=1e-6,
                           context=f"{context}: measurements")
        if kind == "monitor":
            assert s[0]._fields == rs[0]._fields == ("measurements", "measure_states")
            # Leaf by leaf: a function's entry is EmptyState() on both sides, each library's own.
            for mine_state, ref_state in zip(s[0].measure_states, rs[0].measure_states):
                assert type(mine_state).__name__ == type(ref_state).__name__, context
                assert_trees_close(jax.tree.leaves(mine_state), jax.tree.leaves(ref_state),
                                   rtol=1e-5, atol=1e-6, context=f"{context}: measure states")
            assert int(s[0].measure_states[2].count) == step  # the running max's own counter


@pytest.mark.parametrize("kind", ["snapshot", "monitor"])
def test_bfloat16_measurements_are_optax_ones_on_the_same_values(kind):
    ours, ref = _ours_and_optax(kind)
    params = random_params(0, jnp.bfloat16)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    mine = _run(ours, params, grads_seq, kind == "monitor")
    theirs = _run(ref, cast_tree(params, jnp.float32),
                  [cast_tree(g, jnp.float32) for g in grads_seq], True)
    # Only the first update: later ones differ by what bfloat16 rounding did to the trajectory.
    (u, s), (ru, rs) = mine[1], theirs[1]
    for leaf in jax.tree.leaves(u):
        assert leaf.dtype == jnp.bfloat16
    assert_trees_close(u, ru, rtol=2e-2, atol=1e-4)
    assert_trees_close(_measurements(s, kind), _measurements(rs, kind), rtol=2e-2, atol=1e-4)
    for step, (u, s) in enumerate(mine[1:]):
        for a, b in zip(jax.tree.leaves(_measurements(s, kind)),
                        jax.tree.leaves(_measurements(mine[0][1], kind))):
            assert a.dtype == b.dtype, f"step {step}: the state changed dtype"


def test_measurements_read_by_name_and_updates_pass_through_bit_for_bit():
    tx = gx.chain(gx.monitor({"norm": gx.tree_global_norm, "grad_ema": gx.ema(0.5, debias=False)}),
                  gx.snapshot("after", gx.tree_global_norm), gx.scale(-0.5))
    plain = gx.scale(-0.5)
    params = random_params(1)
    grads = gradient_stream(params, 1, seed=5)[0]
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    expected, _ = jax.jit(plain.update)(grads, plain.init(params), params)
    gx_leaves, ex_leaves = jax.tree.leaves(updates), jax.tree.leaves(expected)
    assert all(np.array_equal(a, b) for a, b in zip(gx_leaves, ex_leaves))
    with jax.numpy_dtype_promotion("standard"):
        norm = float(optax.tree.norm(grads))
    np.testing.assert_allclose(gx.tree_get(state, "norm"), norm, rtol=1e-6)
    np.testing.assert_allclose(gx.tree_get(state, "after"), norm, rtol=1e-6)
    assert_trees_close(gx.tree_get(state, "grad_ema"), jax.tree.map(lambda g: 0.5 * g, grads),
                       rtol=1e-6, atol=0)


@pytest.mark.parametrize("kind", ["snapshot", "monitor"])
def test_the_state_layout_is_stable_under_jit_and_eval_shape(kind):
    if kind == "snapshot":
        tx = gx.chain(gx.snapshot("one", lambda u: 1.0), gx.snapshot("sums", leaf_sums))
    else:
        tx = gx.monitor({"one": lambda u: 1.0, "sums": leaf_sums, "ema": gx.ema(0.9)})
    params = random_params(0)
    state = tx.init(params)
    for leaf in jax.tree.leaves(state):  # a Python float would make jit retrace
        assert isinstance(leaf, jax.Array) and not leaf.weak_type, leaf
    abstract = jax.eval_shape(tx.init, params)
    assert jax.tree.structure(abstract) == jax.tree.structure(state)
    traces = []

    @jax.jit
    def update(grads, state):
        traces.append(None)
        return tx.update(grads, state, params)

    for grads in gradient_stream(params, 3):
        _, new_state = update(grads, state)
        assert jax.tree.structure(new_state) == jax.tree.structure(state)
        for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)):
            assert (a.shape, a.dtype, a.weak_type) == (b.shape, b.dtype, b.weak_type)
        state = new_state
    assert len(traces) == 1


def test_a_measurement_keeps_the_dtype_it_had_after_init():
    tx = gx.snapshot("total", lambda tree: jnp.sum(tree["w"]))
    state = tx.init({"w": jnp.ones(3, jnp.float32)})
    _, state = tx.update({"w": jnp.ones(3, jnp.bfloat16)}, state)
    assert state.measurement["total"].dtype == jnp.float32
    assert float(state.measurement["total"]) == 3.0


@pytest.mark.parametrize("kind", ["snapshot", "monitor"])
def test_a_measurement_that_changes_shape_raises_naming_it(kind):
    calls = []

    def growing(tree):
        calls.append(None)
        return jnp.zeros(len(calls))

    tx = gx.snapshot("grows", growing) if kind == "snapshot" else gx.monitor({"grows": growing})
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    with pytest.raises(ValueError) as info:
        tx.update({"w": jnp.ones(2)}, state, params)
    message = str(info.value)
    assert message.startswith(f"{kind}: the measurement 'grows'") and "shapes" in message, message


def test_monitor_gives_stateful_measures_the_params_and_the_extra_arguments_they_accept():
    seen = []

    def update(updates, state, params=None, *, loss=0.0):
        seen.append((loss, params is not None))
        return jnp.asarray(loss, jnp.float32), state

    measure = gx.GradientTransformation(lambda params: (), update)
    tx = gx.monitor({"loss": measure, "norm": gx.tree_global_norm})
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    assert seen == [(0.0, True)]  # init measured the params once, with the default
    seen.clear()
    _, state = tx.update({"w": jnp.ones(2)}, state, params, loss=2.5, other=1)
    assert seen == [(2.5, True)]
    assert float(gx.tree_get(state, "loss")) == 2.5


def test_a_measure_that_init_cannot_evaluate_says_why():
    def update(updates, state, params=None, *, loss=None):
        return jnp.asarray(loss, jnp.float32), state

    tx = gx.monitor({"loss": gx.GradientTransformation(lambda params: (), update)})
    with pytest.raises(ValueError) as info:
        tx.init({"w": jnp.ones(2)})
    message = str(info.value)
    assert message.startswith("monitor: init could not measure 'loss'") and "defaults" in message


def test_reprs_are_the_calls_and_configs_round_trip():
    snap = gx.snapshot("n", gx.tree_global_norm)
    assert repr(snap) == "snapshot(measure_name='n', measure=<function tree_global_norm>)"
    mon = gx.monitor({"n": gx.tree_global_norm, "e": gx.ema(0.9)})
    assert repr(mon) == ("monitor(measures={'n': <function tree_global_norm>, "
                         "'e': ema(decay=0.9, debias=True, accumulator_dtype=None)})")
    for tx in (snap, mon):
        assert repr(gx.from_config(gx.to_config(tx))) == repr(tx)
