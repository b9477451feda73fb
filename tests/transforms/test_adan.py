"""scale_by_adan: the paper's Algorithm 1, against a float64 NumPy reference and optax.

optax 0.2.8 weighs the gradient difference by ``1 - b2`` where the paper (and
the authors' ``sail-sg/Adan``, and optax's own ``adan`` docstring) weighs it
by ``b2`` (optax#1715). So:

* with ``b2 = 0.5``, where the two coincide, gradxform matches optax live, in
  updates and in every state field, over 50 jitted steps on a nested tree, for
  several argument sets, in float32 and bfloat16;
* at every ``b2`` it matches the paper's rule written in float64 NumPy;
* the same NumPy rule with the weight ``1 - b2`` reproduces optax at its
  defaults, which shows that this weight is the only difference; and the two
  agree at the first step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    assert_trees_close,
    compare_with_optax,
    gradient_stream,
    random_params,
    run_optax,
    run_updates,
)

STEPS = 50
INT32_MAX = int(np.iinfo(np.int32).max)
# b2 = 0.5: optax's 1 - b2 is b2, so its numbers are the paper's.
OPTAX_CASES = [
    pytest.param({"b2": 0.5}, id="b2=0.5"),
    pytest.param({"b1": 0.9, "b2": 0.5, "b3": 0.999, "eps": 1e-6, "eps_root": 1e-8}, id="options"),
    pytest.param({"b1": 0.0, "b2": 0.5, "b3": 0.5, "eps": 1e-3}, id="b1=0"),
]


def adan_reference(grads_seq, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, eps_root=0.0, weight=None):
    """Adan's Algorithm 1 in float64 NumPy (the code's betas); each step's updates.

    ``weight`` is the factor of the gradient difference in ``n`` and in the
    update: ``b2`` (the paper) unless given.
    """
    weight = b2 if weight is None else weight
    leaves0, treedef = jax.tree.flatten(grads_seq[0])
    m, v, n, prev = ([np.zeros(x.shape) for x in leaves0] for _ in range(4))
    outputs = []
    for t, grads in enumerate(grads_seq, start=1):
        out = []
        for i, g in enumerate(treedef.flatten_up_to(grads)):
            g = np.asarray(g, np.float64)
            diff = np.zeros_like(g) if t == 1 else g - prev[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * diff
            n[i] = b3 * n[i] + (1 - b3) * (g + weight * diff) ** 2
            m_hat, v_hat, n_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t), n[i] / (1 - b3**t)
            out.append((m_hat + weight * v_hat) / (np.sqrt(n_hat + eps_root) + eps))
            prev[i] = g
        outputs.append(treedef.unflatten(out))
    return outputs


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=lambda d: d.__name__)
@pytest.mark.parametrize("kwargs", OPTAX_CASES)
def test_matches_optax_where_optax_follows_the_paper(kwargs, dtype):
    compare_with_optax(gx.scale_by_adan(**kwargs), optax.scale_by_adan(**kwargs), dtype=dtype,
                       steps=STEPS, rtol=1e-5 if dtype == jnp.float32 else None)


@pytest.mark.parametrize("kwargs", OPTAX_CASES)
def test_state_matches_optax_field_by_field(kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    tx, reference = gx.scale_by_adan(**kwargs), optax.scale_by_adan(**kwargs)
    update, state = jax.jit(tx.update), tx.init(params)
    ref_state = reference.init(params)
    with jax.numpy_dtype_promotion("standard"):
        ref_update = jax.jit(reference.update)
    assert type(state).__name__ == type(ref_state).__name__
    assert state._fields == ref_state._fields == ("m", "v", "n", "g", "t")
    for step, grads in enumerate(grads_seq):
        _, state = update(grads, state, params)
        with jax.numpy_dtype_promotion("standard"):
            _, ref_state = ref_update(grads, ref_state, params)
        assert state.t.dtype == jnp.int32 and int(state.t) == int(ref_state.t) == step + 1
        for field in ("m", "v", "n", "g"):
            assert_trees_close(getattr(state, field), getattr(ref_state, field), 1e-5, 1e-7,
                               f"step {step}, {field}")


@pytest.mark.parametrize("kwargs", [
    pytest.param({}, id="defaults"),
    pytest.param({"b1": 0.9, "b2": 0.8, "b3": 0.999, "eps": 1e-6, "eps_root": 1e-6}, id="options"),
])
def test_matches_the_paper_in_float64(kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=2)
    ours, _ = run_updates(gx.scale_by_adan(**kwargs), params, grads_seq)
    for step, (mine, expected) in enumerate(zip(ours, adan_reference(grads_seq, **kwargs))):
        assert_trees_close(mine, expected, 2e-5, 1e-6, f"step {step}")


def test_optax_differs_only_by_the_weight_of_the_difference():
    params = random_params(0)
    grads_seq = gradient_stream(params, 10, seed=2)
    theirs, _ = run_optax(optax.scale_by_adan(), params, grads_seq)
    ours, _ = run_updates(gx.scale_by_adan(), params, grads_seq)
    optax_rule = adan_reference(grads_seq, weight=1 - 0.92)
    for step, (ref, expected) in enumerate(zip(theirs, optax_rule)):
        assert_trees_close(ref, expected, 2e-5, 1e-6, f"optax at step {step}")
    assert_trees_close(ours[0], theirs[0], 1e-6, 1e-7, "step 0: no difference yet")
    kernel = [np.asarray(u["dense"]["kernel"]) for u in (ours[1], theirs[1])]
    assert not np.allclose(*kernel, rtol=1e-2)


def test_first_step_by_hand():
    # d_1 = 0, so m_hat = g, v_hat = 0, n_hat = g^2 and u = g / (|g| + eps).
    g = jnp.array([2.0, -0.5, 0.0])
    tx = gx.scale_by_adan(eps=1e-3)
    updates, state = tx.update({"w": g}, tx.init({"w": g}))
    np.testing.assert_allclose(updates["w"], np.array([2.0, -0.5, 0.0]) / (
        np.array([2.0, 0.5, 0.0]) + 1e-3), rtol=1e-6)
    np.testing.assert_array_equal(state.g["w"], g)
    assert int(state.t) == 1


def test_step_count_saturates():
    params = {"w": jnp.ones(3)}
    tx = gx.scale_by_adan()
    state = tx.init(params)._replace(t=jnp.asarray(INT32_MAX - 1, jnp.int32))
    update = jax.jit(tx.update)
    for scale in (1.0, -2.0, 0.5):
        updates, state = update({"w": scale * jnp.arange(3.0)}, state, params)
        assert np.all(np.isfinite(updates["w"]))
    assert state.t.dtype == jnp.int32 and int(state.t) == INT32_MAX


def test_state_dtypes():
    params = {"w": jnp.zeros(3, jnp.bfloat16), "h": jnp.zeros(2, jnp.float16),
              "c": jnp.zeros(2, jnp.complex64), "skip": None}
    state = gx.scale_by_adan().init(params)
    assert isinstance(state, gx.ScaleByAdanState)
    for field in ("m", "v", "g"):
        assert [x.dtype for x in jax.tree.leaves(getattr(state, field))] == [
            jnp.complex64, jnp.float16, jnp.bfloat16]
    # The second moment is real, float32 for float16 params.
    assert [x.dtype for x in jax.tree.leaves(state.n)] == [jnp.float32, jnp.float32, jnp.bfloat16]
    assert state.m["skip"] is None


@pytest.mark.parametrize("kwargs, message", [
    ({"b3": 1.0}, r"scale_by_adan: b3 must be in \[0, 1\), got 1.0"),
    ({"eps_root": -1.0}, r"scale_by_adan: eps_root must be in \[0, inf\), got -1.0"),
])
def test_bad_arguments_name_the_transform(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gx.scale_by_adan(**kwargs)
