"""params_ema (Keras's ``use_ema``) and finalize_params.

The reference is Keras's rule written in NumPy float32, with ``c`` the call
count from 0 and ``k = c // calls_per_step``::

    p_new = p + u
    momentum = 0 if k == 0 else decay          # the first step copies
    a = momentum * a + (1 - momentum) * p_new
    u = a - p   if f and (k + 1) % f == 0      # overwrite, on every call of such a step
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.helpers import assert_trees_close, gradient_stream, is_none, random_params

F32 = np.float32


def ema_reference(params, updates_seq, decay, overwrite_frequency=None, calls_per_step=1,
                  ema_dtype=None):
    """Keras's moving average in NumPy; per call: (emitted updates, average, params after)."""
    leaves, treedef = jax.tree.flatten(params)
    p = [np.asarray(x) for x in leaves]
    store = [np.dtype(ema_dtype) if ema_dtype is not None else x.dtype for x in p]
    a = [np.zeros(x.shape, d) for x, d in zip(p, store)]
    out = []
    for c, updates in enumerate(updates_seq):
        k = c // calls_per_step
        momentum = F32(decay) if k != 0 else F32(0)
        emitted = []
        for i, u in enumerate(treedef.flatten_up_to(updates)):
            u = np.asarray(u)
            p_new = (p[i].astype(F32) + u.astype(F32)).astype(p[i].dtype).astype(F32)
            a[i] = (momentum * a[i].astype(F32) + (F32(1) - momentum) * p_new).astype(store[i])
            if overwrite_frequency and (k + 1) % overwrite_frequency == 0:
                u = (a[i].astype(F32) - p[i].astype(F32)).astype(u.dtype)
            emitted.append(u)
            p[i] = (p[i].astype(F32) + u.astype(F32)).astype(p[i].dtype)
        out.append(tuple(treedef.unflatten([x.copy() for x in xs]) for xs in (emitted, a, p)))
    return out


def run_training(tx, params, grads_seq):
    """Feeds ``grads_seq`` and applies each update; per call: (updates, state, params after)."""
    update, apply = jax.jit(tx.update), jax.jit(gx.apply_updates)
    state = tx.init(params)
    out = []
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        params = apply(params, updates)
        out.append((updates, state, params))
    return out


def check_against_reference(decay, f, n, *, dtype=jnp.float32, ema_dtype=None, steps=14,
                            rtol=1e-6):
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, steps, seed=2)
    tx = gx.params_ema(decay, f, calls_per_step=n, ema_dtype=ema_dtype)
    mine = run_training(tx, params, grads_seq)
    expected = ema_reference(params, grads_seq, decay, f, n, ema_dtype)
    for c, ((u, state, p), (eu, ea, ep)) in enumerate(zip(mine, expected)):
        context = f"call {c}"
        assert_trees_close(u, eu, rtol, 1e-6, context)
        assert_trees_close(state.ema, ea, rtol, 1e-6, context)
        assert_trees_close(p, ep, rtol, 1e-6, context)
        assert int(state.count) == c + 1
        assert state.ema["blocks"][1] is None and u["blocks"][1] is None
        for leaf, ref in zip(jax.tree.leaves(state.ema), jax.tree.leaves(ea)):
            assert leaf.dtype == ref.dtype
    return mine, expected


@pytest.mark.parametrize("decay, f, n", [
    (0.9, None, 1), (0.9, 1, 1), (0.8, 3, 1), (0.9, 2, 3), (0.5, None, 2), (1.0, 2, 1),
    (0.0, None, 1), (0.95, 4, 2),
], ids=["no-overwrite", "f=1", "f=3", "f=2,n=3", "n=2", "decay=1", "decay=0", "f=4,n=2"])
def test_params_ema_matches_keras_reference(decay, f, n):
    check_against_reference(decay, f, n)


def test_first_step_copies_and_decay_one_freezes_the_copy():
    params = random_params(1)
    grads_seq = gradient_stream(params, 5, seed=3)
    mine = run_training(gx.params_ema(1.0), params, grads_seq)
    first = mine[0][2]  # params after the first update
    for _, state, _ in mine:
        assert_trees_close(state.ema, first, rtol=0, atol=0)


def test_calls_per_step_overwrite_fires_on_every_call_of_the_step():
    params = random_params(2)
    grads_seq = gradient_stream(params, 12, seed=4, zero_every=0)
    n, f = 3, 2
    mine = run_training(gx.params_ema(0.9, f, calls_per_step=n), params, grads_seq)
    overwritten = [c for c, ((u, _, _), g) in enumerate(zip(mine, grads_seq))
                   if not np.array_equal(np.asarray(u["dense"]["kernel"]),
                                         np.asarray(g["dense"]["kernel"]))]
    assert overwritten == [c for c in range(12) if (c // n + 1) % f == 0] == [3, 4, 5, 9, 10, 11]
    # Within step k = 0 the momentum is 0: the average is each call's new params.
    for c in range(n):
        assert_trees_close(mine[c][1].ema, mine[c][2], rtol=0, atol=0)


@pytest.mark.parametrize("f", [1, 3])
def test_after_overwrite_params_equal_the_average(f):
    params = random_params(3)
    grads_seq = gradient_stream(params, 9, seed=5)
    mine = run_training(gx.chain(gx.sgd(0.1), gx.params_ema(0.9, f)), params, grads_seq)
    for c, (_, state, new_params) in enumerate(mine):
        if (c + 1) % f == 0:
            assert_trees_close(new_params, state[1].ema, rtol=1e-6, atol=1e-7, context=f"call {c}")


@pytest.mark.parametrize("dtype, ema_dtype", [
    (jnp.bfloat16, None), (jnp.bfloat16, jnp.float32), (jnp.float16, jnp.float32),
    (jnp.float32, jnp.bfloat16),
], ids=["bf16", "bf16-ema-f32", "f16-ema-f32", "f32-ema-bf16"])
def test_low_precision_and_ema_dtype(dtype, ema_dtype):
    mine, _ = check_against_reference(0.9, 2, 1, dtype=dtype, ema_dtype=ema_dtype, steps=8,
                                      rtol=2e-2)
    updates, state, params = mine[-1]
    want = jnp.dtype(dtype if ema_dtype is None else ema_dtype)
    assert all(a.dtype == want for a in jax.tree.leaves(state.ema))
    assert all(p.dtype == dtype for p in jax.tree.leaves(params))
    assert all(u.dtype == dtype for u in jax.tree.leaves(updates))


# --- finalize_params ----------------------------------------------------------------------


def wrapped(kind):
    ema = gx.params_ema(0.8)
    inner = gx.chain(gx.sgd(0.1), ema)
    return {
        "bare": ema,
        "chain": inner,
        "named_chain": gx.named_chain(("opt", gx.sgd(0.1)), ("ema", ema)),
        "dynamic_loss_scale": gx.dynamic_loss_scale(inner, initial_scale=1.0),
        "accumulate_gradients": gx.accumulate_gradients(inner, 2),
        "multi_steps": gx.multi_steps(inner, 2),
    }[kind]


def find_ema(state):
    nodes = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, gx.ParamsEmaState))
    found = [n for n in nodes if isinstance(n, gx.ParamsEmaState)]
    assert len(found) == 1
    return found[0].ema


@pytest.mark.parametrize("kind", ["bare", "chain", "named_chain", "dynamic_loss_scale",
                                  "accumulate_gradients", "multi_steps"])
def test_finalize_params_substitutes_average_found_anywhere(kind):
    tx = wrapped(kind)
    params = random_params(4)
    mine = run_training(tx, params, gradient_stream(params, 4, seed=6))
    _, state, params = mine[-1]
    final = gx.finalize_params(params, state)
    average = find_ema(state)
    assert final["blocks"][1] is None
    assert_trees_close(final, average, rtol=0, atol=0)
    assert not np.array_equal(np.asarray(final["dense"]["kernel"]),
                              np.asarray(params["dense"]["kernel"]))


@pytest.mark.parametrize("tx", [gx.adam(1e-2), gx.chain(gx.sgd(0.1), gx.identity()),
                                gx.accumulate_gradients(gx.sgd(0.1), 2)],
                         ids=["adam", "chain", "accumulate"])
def test_finalize_params_without_average_leaves_params(tx):
    params = random_params(5)
    state = tx.init(params)
    final = gx.finalize_params(params, state)
    assert jax.tree.structure(final, is_leaf=is_none) == jax.tree.structure(params, is_leaf=is_none)
    for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_finalize_params_keeps_param_dtypes():
    params = {"w": jnp.asarray([1.0, 2.5, -3.0], jnp.bfloat16), "h": jnp.ones(2, jnp.float16)}
    tx = gx.chain(gx.sgd(0.3), gx.params_ema(0.5, ema_dtype=jnp.float32))
    _, state, params = run_training(tx, params, gradient_stream(params, 3, seed=7))[-1]
    final = gx.finalize_params(params, state)
    assert final["w"].dtype == jnp.bfloat16 and final["h"].dtype == jnp.float16
    ema = state[1].ema
    assert ema["w"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(final["w"], np.float32),
                                  np.asarray(ema["w"]).astype(jnp.bfloat16).astype(np.float32))


def test_finalize_params_structure_mismatch_raises():
    params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    state = gx.params_ema(0.9).init(params)
    with pytest.raises(ValueError, match="finalize_params: the params' tree structure"):
        gx.finalize_params({"w": jnp.ones(2)}, state)


def test_finalize_params_later_average_wins():
    params = {"w": jnp.zeros(2)}
    tx = gx.chain(gx.params_ema(0.0), gx.scale(2.0), gx.params_ema(0.0))
    updates, state = tx.update({"w": jnp.ones(2)}, tx.init(params), params)
    np.testing.assert_array_equal(state[0].ema["w"], [1.0, 1.0])
    np.testing.assert_array_equal(state[2].ema["w"], [2.0, 2.0])
    np.testing.assert_array_equal(gx.finalize_params(params, state)["w"], [2.0, 2.0])


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, exc, text", [
    ({"decay": 1.5}, ValueError, "params_ema: decay must be in [0, 1], got 1.5"),
    ({"decay": -0.1}, ValueError, "params_ema: decay must be in [0, 1], got -0.1"),
    ({"overwrite_frequency": 0}, ValueError, "params_ema: overwrite_frequency must be an int >= 1 or None, got 0"),
    ({"overwrite_frequency": True}, TypeError, "params_ema: overwrite_frequency must be an int >= 1 or None, got True"),
    ({"overwrite_frequency": 2.0}, TypeError, "params_ema: overwrite_frequency must be an int >= 1 or None, got 2.0"),
    ({"calls_per_step": 0}, ValueError, "params_ema: calls_per_step must be an int >= 1, got 0"),
    ({"calls_per_step": None}, TypeError, "params_ema: calls_per_step must be an int >= 1, got None"),
    ({"ema_dtype": jnp.int32}, ValueError, "params_ema: ema_dtype"),
], ids=["decay=1.5", "decay<0", "f=0", "f=True", "f=2.0", "n=0", "n=None", "int-dtype"])
def test_validation_errors(kwargs, exc, text):
    with pytest.raises(exc) as info:
        gx.params_ema(**kwargs)
    assert text in str(info.value)


def test_numpy_int_frequency_accepted():
    gx.params_ema(0.9, np.int64(3), calls_per_step=np.int32(2))


def test_update_without_params_raises():
    tx = gx.params_ema(0.9)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="params_ema: update needs params, got params=None"):
        tx.update(params, tx.init(params))


def test_update_structure_mismatch_raises():
    tx = gx.params_ema(0.9)
    params = {"w": jnp.ones(2), "b": jnp.ones(1)}
    with pytest.raises(ValueError, match="params_ema"):
        tx.update({"w": jnp.ones(2)}, tx.init(params), params)
