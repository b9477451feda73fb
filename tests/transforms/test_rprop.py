"""scale_by_rprop against optax's state, torch.optim.Rprop, and the rule by hand.

optax 0.2.8's ``scale_by_rprop`` computes the right update into its state
(``prev_updates``) but returns the previous step's (zeros at the first step;
optax#1725). So, over 50 jitted steps on a nested tree:

* gradxform's state equals optax's, field by field, at every step;
* gradxform's update at each step is optax's ``prev_updates`` of that step,
  and optax's returned update is gradxform's of the step before (or 0 after a
  sign flip);
* the parameters follow ``torch.optim.Rprop`` (the iRprop- variant) step for
  step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import assert_trees_close, gradient_stream, random_params

STEPS = 50
CASES = [
    pytest.param({"learning_rate": 0.1}, id="defaults"),
    pytest.param({"learning_rate": 0.01, "eta_minus": 0.3, "eta_plus": 1.5,
                  "min_step_size": 1e-3, "max_step_size": 0.2}, id="options"),
    pytest.param({"learning_rate": 1.0, "eta_minus": 1.0, "eta_plus": 1.0}, id="fixed"),
]


def _sign_flips(grads_seq, seed=5):
    """The gradients' magnitudes with signs that mostly repeat: at each step a random fifth
    of the entries flips its sign (the zero steps stay zero)."""
    rng = np.random.default_rng(seed)
    signs = jax.tree.map(lambda g: np.where(rng.random(g.shape) < 0.5, -1.0, 1.0), grads_seq[0])
    out = []
    for grads in grads_seq:
        signs = jax.tree.map(lambda s: np.where(rng.random(s.shape) < 0.2, -s, s), signs)
        out.append(jax.tree.map(
            lambda g, s: jnp.asarray((s * np.abs(np.asarray(g, np.float32))).astype(g.dtype)),
            grads, signs))
    return out


def _both(kwargs, dtype=jnp.float32):
    params = random_params(0, dtype)
    grads_seq = _sign_flips(gradient_stream(params, STEPS, seed=1))
    tx, reference = gx.scale_by_rprop(**kwargs), optax.scale_by_rprop(**kwargs)
    update, state = jax.jit(tx.update), tx.init(params)
    ref_params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    with jax.numpy_dtype_promotion("standard"):
        ref_update, ref_state = jax.jit(reference.update), reference.init(ref_params)
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        with jax.numpy_dtype_promotion("standard"):
            ref_grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
            emitted, ref_state = ref_update(ref_grads, ref_state, ref_params)
        yield grads, updates, state, emitted, ref_state


@pytest.mark.parametrize("kwargs", CASES)
def test_state_and_update_match_optax_in_float32(kwargs):
    previous = None
    for step, (grads, updates, state, emitted, ref_state) in enumerate(_both(kwargs)):
        assert state._fields == ref_state._fields == ("step_sizes", "prev_updates")
        for field in state._fields:
            assert_trees_close(getattr(state, field), getattr(ref_state, field), 1e-6, 0,
                               f"step {step}, {field}")
        assert_trees_close(updates, ref_state.prev_updates, 1e-6, 0, f"step {step}")
        # optax returns the previous step's update, or 0 where the sign flipped.
        before = (jax.tree.leaves(previous) if previous is not None
                  else [np.zeros(x.shape) for x in jax.tree.leaves(updates)])
        for got, was in zip(jax.tree.leaves(emitted), before):
            got, was = np.asarray(got), np.asarray(was)
            assert np.all((got == 0) | (got == was)), step
        previous = updates
    assert step == STEPS - 1


@pytest.mark.parametrize("kwargs", CASES[:2])
def test_bfloat16_matches_optax_in_float32(kwargs):
    # Step sizes are stored in bfloat16 (the params' dtype), rounded at every step; the
    # signs, hence the decisions, are the same.
    for step, (grads, updates, state, _, ref_state) in enumerate(_both(kwargs, jnp.bfloat16)):
        for leaf in jax.tree.leaves(updates):
            assert leaf.dtype == jnp.bfloat16
        assert_trees_close(updates, ref_state.prev_updates, 2e-2, 1e-6, f"step {step}")
        assert_trees_close(state.step_sizes, ref_state.step_sizes, 2e-2, 1e-6, f"step {step}")


@pytest.mark.parametrize("kwargs", CASES[:2])
def test_parameters_follow_torch_rprop(kwargs):
    torch = pytest.importorskip("torch")
    params = random_params(0)
    grads_seq = _sign_flips(gradient_stream(params, STEPS, seed=3))
    leaves = [np.asarray(p) for p in jax.tree.leaves(params)]
    tensors = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in leaves]
    reference = torch.optim.Rprop(
        tensors, lr=kwargs["learning_rate"],
        etas=(kwargs.get("eta_minus", 0.5), kwargs.get("eta_plus", 1.2)),
        step_sizes=(kwargs.get("min_step_size", 1e-6), kwargs.get("max_step_size", 50.0)),
    )
    tx = gx.rprop(**kwargs)
    update, state = jax.jit(tx.update), tx.init(params)
    for step, grads in enumerate(grads_seq):
        for tensor, g in zip(tensors, jax.tree.leaves(grads)):
            tensor.grad = torch.tensor(np.asarray(g), dtype=torch.float64)
        reference.step()
        updates, state = update(grads, state, params)
        params = gx.apply_updates(params, updates)
        for mine, expected in zip(jax.tree.leaves(params), tensors):
            # float32 params against float64 ones: the roundings of 50 steps of up to 50.
            np.testing.assert_allclose(np.asarray(mine), expected.detach().numpy(), rtol=1e-5,
                                       atol=2e-5, err_msg=f"step {step}")


def test_the_rule_by_hand():
    # The sign holds twice (x1.2 twice), flips (x0.5 and no step), then the next step is
    # taken with the reduced size whatever the sign: 0.1, 0.12, 0.144, 0, 0.072.
    tx = gx.scale_by_rprop(learning_rate=0.1)
    update, state = jax.jit(tx.update), tx.init({"w": jnp.zeros(1)})
    got = []
    for g in (1.0, 2.0, 0.5, -1.0, -3.0):
        updates, state = update({"w": jnp.array([g])}, state)
        got.append(float(updates["w"][0]))
    np.testing.assert_allclose(got, [0.1, 0.12, 0.144, 0.0, -0.072], rtol=1e-6)
    np.testing.assert_allclose(state.step_sizes["w"], [0.072], rtol=1e-6)


def test_bounds_and_zero_gradients():
    tx = gx.scale_by_rprop(learning_rate=1.0, eta_minus=0.1, eta_plus=3.0, min_step_size=0.5,
                           max_step_size=2.0)
    update, state = jax.jit(tx.update), tx.init({"w": jnp.zeros(2)})
    for g in ([1.0, 1.0], [1.0, -1.0], [0.0, 1.0], [1.0, 1.0]):
        updates, state = update({"w": jnp.array(g)}, state)
    # Entry 0: 1 -> 2 (3x, capped) -> 2 (zero gradient: unchanged, no step) -> 2 (sign
    # compared with the zero step: unchanged). Entry 1: 1 -> 0.5 (0.1x, floored) -> 0.5
    # (after the flip no comparison) -> 1.5.
    np.testing.assert_allclose(state.step_sizes["w"], [2.0, 1.5])
    np.testing.assert_allclose(updates["w"], [2.0, 1.5])


def test_complex_entries_are_two_real_coordinates():
    params = random_params(0)
    stream = gradient_stream(params, 10, seed=4)
    real = _sign_flips(stream)
    imag = _sign_flips(gradient_stream(params, 10, seed=5), seed=6)
    as_complex = [jax.tree.map(jax.lax.complex, r, i) for r, i in zip(real, imag)]
    tx = gx.scale_by_rprop(0.1)
    update = jax.jit(tx.update)
    states = {name: tx.init(params) for name in ("re", "im")}
    complex_params = jax.tree.map(lambda p: p.astype(jnp.complex64), params)
    state = tx.init(complex_params)
    for g, r, i in zip(as_complex, real, imag):
        updates, state = update(g, state)
        re_updates, states["re"] = update(r, states["re"])
        im_updates, states["im"] = update(i, states["im"])
        expected = jax.tree.map(jax.lax.complex, re_updates, im_updates)
        for a, e in zip(jax.tree.leaves(updates), jax.tree.leaves(expected)):
            assert a.dtype == jnp.complex64
            np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def test_state_dtypes_follow_the_params():
    params = {"w": jnp.zeros(3, jnp.bfloat16), "h": jnp.zeros(2, jnp.float16), "skip": None}
    state = gx.scale_by_rprop(0.25).init(params)
    assert isinstance(state, gx.ScaleByRpropState)
    assert state.step_sizes["w"].dtype == jnp.bfloat16
    assert state.step_sizes["h"].dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(state.step_sizes["w"], np.float32), 0.25)
    assert state.prev_updates["skip"] is None


@pytest.mark.parametrize("kwargs, error, message", [
    ({"learning_rate": 0.0}, ValueError, r"scale_by_rprop: learning_rate must be in \(0, inf\)"),
    ({"learning_rate": 0.1, "eta_minus": 1.5}, ValueError, r"eta_minus must be in \(0, 1\]"),
    ({"learning_rate": 0.1, "eta_plus": 0.9}, ValueError, r"eta_plus must be in \[1, inf\)"),
    ({"learning_rate": 0.1, "min_step_size": 2.0, "max_step_size": 1.0}, ValueError,
     r"max_step_size must be at least min_step_size=2.0, got max_step_size=1.0"),
])
def test_bad_arguments_name_the_transform(kwargs, error, message):
    with pytest.raises(error, match=message):
        gx.scale_by_rprop(**kwargs)
