"""scale_by_adopt against ADOPT written in float64 NumPy (Taniguchi et al., 2024, Algorithm 2).

optax.contrib's ``adopt`` is compared live in tests/optimizers/test_contrib_adaptive.py;
here the rule itself: over 30 jitted steps on a nested tree (scalars, ``None``, an empty
leaf), with and without clipping, with Nesterov, with another clipping bound (to 1e-4: the
decays are float32 scalars, as in optax, so 1 - b2 is float32's); a complex
leaf clipped in modulus; a bfloat16 momentum; the first update is zero; the default bound
is :math:`t^{1/4}`; the step count saturates.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.helpers import assert_trees_close, gradient_stream, random_params, trajectory

STEPS = 30
# The decays switch on after the first step (b2 is 0 there): as optax, the switched value is a
# float32 scalar, whose 1 - b2 is float32's: 1.00017e-4 for b2 = 0.9999, 1.7e-4 off.
RTOL = 1e-4
INT32_MAX = int(np.iinfo(np.int32).max)


def _bound(count):
    return 0.5 + jnp.sqrt(count.astype(jnp.float32))


def adopt_reference(grads_seq, b1=0.9, b2=0.9999, eps=1e-6, nesterov=False, use_clipping=True,
                    bound=lambda t: t**0.25):
    """Each step's update, in float64; ``bound(t)`` of the step count t from 0."""
    leaves0, treedef = jax.tree.flatten(grads_seq[0])
    m = [np.zeros(np.shape(x), np.complex128) for x in leaves0]
    v = [np.zeros(np.shape(x)) for x in leaves0]
    outputs = []
    for t, grads in enumerate(grads_seq):
        out = []
        for i, g in enumerate(treedef.flatten_up_to(grads)):
            g = np.asarray(g, np.complex128)
            if t == 0:  # the first step only measures v
                v[i] = np.abs(g) ** 2
                out.append(m[i])
                continue
            n = g / np.maximum(np.sqrt(v[i]), eps)
            if use_clipping:
                c = float(bound(t))
                n = np.where(np.abs(n) > c, n * c / np.maximum(np.abs(n), 1e-300), n)
            m[i] = b1 * m[i] + (1 - b1) * n
            v[i] = b2 * v[i] + (1 - b2) * np.abs(g) ** 2
            out.append(b1 * m[i] + (1 - b1) * n if nesterov else m[i])
        outputs.append(treedef.unflatten([o if np.iscomplexobj(x) else o.real
                                          for o, x in zip(out, treedef.flatten_up_to(grads))]))
    return outputs


CASES = [
    pytest.param({}, {}, id="defaults"),
    pytest.param({"b1": 0.8, "b2": 0.99, "eps": 1e-3, "nesterov": True}, {}, id="nesterov"),
    pytest.param({"b2": 0.5, "use_clipping": False}, {}, id="no-clipping"),
    pytest.param({"clip_value_fn": _bound}, {"bound": lambda t: 0.5 + np.sqrt(t)}, id="bound"),
]


@pytest.mark.parametrize("kwargs, reference_kwargs", CASES)
def test_matches_the_float64_rule(kwargs, reference_kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=2)
    history = trajectory(gx.scale_by_adopt(**kwargs), params, grads_seq)
    expected = adopt_reference(grads_seq, **{k: v for k, v in kwargs.items()
                                             if k != "clip_value_fn"}, **reference_kwargs)
    for step, ((updates, _, state), want) in enumerate(zip(history, expected)):
        assert_trees_close(updates, want, RTOL, 1e-5, f"step {step}")
        assert int(state.count) == step + 1
    assert isinstance(state, gx.ScaleByAdoptState) and state._fields == ("count", "mu", "nu")


def test_a_complex_leaf_is_clipped_in_modulus_keeping_its_phase():
    rng = np.random.default_rng(0)
    params = {"c": jnp.zeros((3, 2), jnp.complex64), "r": jnp.zeros(4)}
    grads_seq = [{"c": jnp.asarray(s * (rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2))),
                                   jnp.complex64),
                  "r": jnp.asarray(s * rng.normal(size=4), jnp.float32)}
                 for s in (1.0, 30.0, 0.01, 5.0, 1.0, 2.0)]
    history = trajectory(gx.scale_by_adopt(b2=0.5), params, grads_seq)
    for step, ((updates, _, state), want) in enumerate(
            zip(history, adopt_reference(grads_seq, b2=0.5))):
        for got, expected in zip(jax.tree.leaves(updates), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(got, np.complex128), expected, rtol=2e-5,
                                       atol=1e-6, err_msg=f"step {step}")
    assert state.mu["c"].dtype == jnp.complex64 and state.nu["c"].dtype == jnp.float32


def test_bfloat16_momentum_and_first_step():
    params = {"w": jnp.zeros(3, jnp.float32), "h": jnp.zeros(2, jnp.float16)}
    tx = gx.scale_by_adopt(mu_dtype=jnp.bfloat16)
    state = tx.init(params)
    assert [x.dtype for x in jax.tree.leaves(state.mu)] == [jnp.bfloat16, jnp.bfloat16]
    assert [x.dtype for x in jax.tree.leaves(state.nu)] == [jnp.float32, jnp.float32]
    grads = {"w": jnp.array([1.0, -2.0, 3.0]), "h": jnp.array([0.5, 0.0], jnp.float16)}
    updates, state = jax.jit(tx.update)(grads, state)
    assert_trees_close(updates, jax.tree.map(jnp.zeros_like, grads), 0.0, 0.0)
    np.testing.assert_array_equal(state.nu["w"], np.array([1.0, 4.0, 9.0]))
    assert updates["h"].dtype == jnp.float16


def test_default_bound_is_the_fourth_root_of_the_step():
    np.testing.assert_allclose([float(gx.adopt_clip_value(t)) for t in (0, 1, 16, 81)],
                               [0.0, 1.0, 2.0, 3.0])
    value = jax.jit(gx.adopt_clip_value)(jnp.int32(INT32_MAX))
    assert value.dtype == jnp.float32 and np.isfinite(value)


def test_step_count_saturates():
    params = {"w": jnp.ones(3)}
    tx = gx.scale_by_adopt()
    state = tx.init(params)._replace(count=jnp.asarray(INT32_MAX - 1, jnp.int32))
    update = jax.jit(tx.update)
    for scale in (1.0, -2.0, 0.5):
        updates, state = update({"w": scale * jnp.arange(3.0)}, state)
        assert np.all(np.isfinite(updates["w"]))
    assert state.count.dtype == jnp.int32 and int(state.count) == INT32_MAX
