"""GradientTransformation, its self-description (name, hyperparams, children, inner, repr), EmptyState.

The expected ``repr`` strings are written by hand from the constructors'
signatures and defaults: the ``repr`` is the call that rebuilds the
transformation, with every argument shown and dtypes shown by name.
"""

from types import MappingProxyType

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx


def halve(count):
    """A module-level schedule, so that its qualified name is stable in a repr."""
    return 0.5 / (1.0 + count.astype(jnp.float32))


def _double_init(params):
    return gx.EmptyState()


def _double_update(updates, state, params=None):
    return jax.tree.map(lambda g: 2 * g, updates), state


# --- the NamedTuple ----------------------------------------------------------


def test_is_a_namedtuple_of_init_and_update():
    assert gx.GradientTransformation._fields == ("init", "update")
    tx = gx.scale_by_adam()
    assert isinstance(tx, tuple)
    assert len(tx) == 2
    init, update = tx
    assert init is tx.init is tx[0]
    assert update is tx.update is tx[1]


def test_hand_built_transformation_works_alone_and_in_chains():
    tx = gx.GradientTransformation(_double_init, _double_update)
    assert tx.name is None
    assert tx.hyperparams == {}
    assert tx.children == ()
    assert tx.inner is None
    assert repr(tx).startswith("GradientTransformation(init=")
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, 3.0])}

    updates, state = tx.update(grads, tx.init(params), params)
    assert state == gx.EmptyState()
    np.testing.assert_array_equal(updates["w"], np.array([1.0, 6.0], np.float32))

    chained = gx.chain(tx, gx.scale(-0.5))
    updates, _ = chained.update(grads, chained.init(params), params)
    np.testing.assert_array_equal(updates["w"], np.array([-0.5, -3.0], np.float32))

    # optax accepts it as one of its own.
    with jax.numpy_dtype_promotion("standard"):
        opt = optax.chain(tx, optax.scale(-0.5))
        updates, _ = opt.update(grads, opt.init(params), params)
    np.testing.assert_array_equal(updates["w"], np.array([-0.5, -3.0], np.float32))


def test_replace_gives_an_undescribed_transformation():
    tx = gx.scale(2.0)._replace(update=_double_update)
    assert isinstance(tx, gx.GradientTransformation)
    assert tx.name is None
    assert tx.update is _double_update


def test_optax_transformation_can_be_wrapped_by_hand():
    opt = optax.scale(3.0)
    tx = gx.GradientTransformation(*opt)
    updates, _ = tx.update({"w": jnp.array([1.0, 2.0])}, tx.init({"w": jnp.zeros(2)}))
    np.testing.assert_array_equal(updates["w"], np.array([3.0, 6.0], np.float32))


# --- repr ----------------------------------------------------------------------


REPRS = [
    (
        lambda: gx.chain(
            gx.clip_by_global_norm(1.0), gx.scale_by_adagrad(), gx.scale_by_learning_rate(1e-3)
        ),
        "chain(clip_by_global_norm(max_norm=1.0), "
        "scale_by_adagrad(initial_accumulator_value=0.1, eps=1e-07, accumulator_dtype=None, "
        "eps_in_sqrt=True), "
        "scale_by_learning_rate(learning_rate=0.001, flip_sign=True))",
    ),
    (
        lambda: gx.scale_by_adam(b1=0.8, mu_dtype=jnp.float16, nu_dtype=np.dtype("float32")),
        "scale_by_adam(b1=0.8, b2=0.999, eps=1e-08, eps_root=0.0, mu_dtype='float16', "
        "nu_dtype='float32', nesterov=False, eps_hat=False, accurate_bias_correction=False)",
    ),
    (
        lambda: gx.scale_by_amsgrad(mu_dtype=jnp.bfloat16, nu_dtype="float32"),
        "scale_by_amsgrad(b1=0.9, b2=0.999, eps=1e-08, eps_root=0.0, mu_dtype='bfloat16', "
        "nu_dtype='float32', bias_correction_mu=True, bias_correction_nu=True, eps_hat=False, accurate_bias_correction=False)",
    ),
    (
        lambda: gx.scale_by_adagrad(accumulator_dtype=np.float32),
        "scale_by_adagrad(initial_accumulator_value=0.1, eps=1e-07, accumulator_dtype='float32', "
        "eps_in_sqrt=True)",
    ),
    (
        lambda: gx.trace(0.9, nesterov=True, accumulator_dtype="float32"),
        "trace(decay=0.9, nesterov=True, accumulator_dtype='float32', dampening=None)",
    ),
    (
        lambda: gx.named_chain(("clip", gx.clip(1.0)), ("lr", gx.scale(-0.1))),
        "named_chain(('clip', clip(max_delta=1.0)), ('lr', scale(step_size=-0.1)))",
    ),
    (
        lambda: gx.adam(1e-3),
        "adam(learning_rate=0.001, b1=0.9, b2=0.999, eps=1e-08, eps_root=0.0, mu_dtype=None, "
        "nesterov=False, amsgrad=False)",
    ),
    (
        lambda: gx.sgd(0.1, momentum=0.9),
        "sgd(learning_rate=0.1, momentum=0.9, nesterov=False, accumulator_dtype=None)",
    ),
    (
        lambda: gx.add_decayed_weights(1e-4, mask={"w": True, "b": False}),
        "add_decayed_weights(weight_decay=0.0001, mask={'w': True, 'b': False}, exclude=None)",
    ),
    (lambda: gx.scale_by_schedule(halve), "scale_by_schedule(step_size_fn=<function halve>)"),
    (
        lambda: gx.scale_by_learning_rate(halve, flip_sign=False),
        "scale_by_learning_rate(learning_rate=<function halve>, flip_sign=False)",
    ),
    (lambda: gx.identity(), "identity()"),
    (lambda: gx.chain(), "chain()"),
    (lambda: gx.ema(0.99, debias=False), "ema(decay=0.99, debias=False, accumulator_dtype=None)"),
    (lambda: gx.clip_by_norm(max_norm=2.5), "clip_by_norm(max_norm=2.5)"),
    (
        lambda: gx.rmsprop(0.01, centered=True),
        "rmsprop(learning_rate=0.01, decay=0.9, eps=1e-08, initial_scale=0.0, eps_in_sqrt=True, "
        "centered=True, momentum=None, nesterov=False, bias_correction=False)",
    ),
]


@pytest.mark.parametrize(
    "make, expected", REPRS, ids=[f"{r[1].split('(')[0]}{i}" for i, r in enumerate(REPRS)]
)
def test_repr_is_the_call_with_every_argument(make, expected):
    assert repr(make()) == expected


def test_repr_nests_optimizer_in_chain():
    tx = gx.chain(gx.clip_by_norm(1.0), gx.adamw(0.1, weight_decay=0.01))
    assert repr(tx) == (
        "chain(clip_by_norm(max_norm=1.0), adamw(learning_rate=0.1, b1=0.9, b2=0.999, eps=1e-08, "
        "eps_root=0.0, mu_dtype=None, weight_decay=0.01, mask=None, nesterov=False))"
    )


# --- name, hyperparams, children, inner --------------------------------------------


def test_name_and_hyperparams_include_defaults():
    tx = gx.scale_by_adam(b1=0.8)
    assert tx.name == "scale_by_adam"
    assert dict(tx.hyperparams) == {
        "b1": 0.8,
        "b2": 0.999,
        "eps": 1e-8,
        "eps_root": 0.0,
        "mu_dtype": None,
        "nu_dtype": None,
        "nesterov": False,
        "eps_hat": False,
        "accurate_bias_correction": False,
    }
    assert tx.children == ()
    assert tx.inner is None


def test_hyperparams_are_read_only():
    tx = gx.clip_by_global_norm(1.0)
    assert isinstance(tx.hyperparams, MappingProxyType)
    with pytest.raises(TypeError):
        tx.hyperparams["max_norm"] = 2.0  # type: ignore[index]
    assert tx.hyperparams["max_norm"] == 1.0


def test_chain_children_are_the_members():
    members = (gx.clip(1.0), gx.scale_by_rms(), gx.scale(-0.1))
    tx = gx.chain(*members)
    assert tx.name == "chain"
    assert len(tx.children) == 3
    for child, member in zip(tx.children, members):
        assert child is member
    assert dict(tx.hyperparams) == {}
    assert tx.inner is None


def test_named_chain_children_are_the_pairs():
    clip, lr = gx.clip(1.0), gx.scale(-0.1)
    tx = gx.named_chain(("clip", clip), ("lr", lr))
    assert tx.name == "named_chain"
    assert tx.children == (("clip", clip), ("lr", lr))


@pytest.mark.parametrize(
    "make, expected_inner",
    [
        (
            lambda: gx.adam(1e-3),
            "chain(scale_by_adam(b1=0.9, b2=0.999, eps=1e-08, eps_root=0.0, mu_dtype=None, "
            "nu_dtype=None, nesterov=False, eps_hat=False, accurate_bias_correction=False), scale_by_learning_rate(learning_rate=0.001, flip_sign=True))",
        ),
        (
            lambda: gx.adam(1e-3, amsgrad=True),
            "chain(scale_by_amsgrad(b1=0.9, b2=0.999, eps=1e-08, eps_root=0.0, mu_dtype=None, "
            "nu_dtype=None, bias_correction_mu=True, bias_correction_nu=True, eps_hat=False, accurate_bias_correction=False), "
            "scale_by_learning_rate(learning_rate=0.001, flip_sign=True))",
        ),
        (
            lambda: gx.sgd(0.5),
            "chain(identity(), scale_by_learning_rate(learning_rate=0.5, flip_sign=True))",
        ),
        (
            lambda: gx.adagrad(0.1, eps=0.0),
            "chain(scale_by_adagrad(initial_accumulator_value=0.1, eps=0.0, accumulator_dtype=None, "
            "eps_in_sqrt=True), "
            "scale_by_learning_rate(learning_rate=0.1, flip_sign=True))",
        ),
        (
            lambda: gx.rmsprop(0.1, momentum=0.5),
            "chain(scale_by_rms(decay=0.9, eps=1e-08, initial_scale=0.0, eps_in_sqrt=True, "
            "bias_correction=False), scale_by_learning_rate(learning_rate=0.1, flip_sign=True), "
            "trace(decay=0.5, nesterov=False, accumulator_dtype=None, dampening=None))",
        ),
    ],
)
def test_optimizer_inner_is_its_chain(make, expected_inner):
    tx = make()
    assert tx.inner is not None
    assert tx.inner.name == "chain"
    assert repr(tx.inner) == expected_inner
    assert tx.init is tx.inner.init
    # The same update, behind the input checks every described transformation makes.
    assert tx.update.__wrapped__ is tx.inner.update


def test_optimizer_computes_what_its_inner_chain_computes():
    params = {"w": jnp.array([1.0, -1.0, 2.0])}
    grads = {"w": jnp.array([0.3, -0.2, 1.5])}
    tx = gx.adam(0.1)
    rebuilt = gx.chain(*tx.inner.children)
    u1, _ = tx.update(grads, tx.init(params), params)
    u2, _ = rebuilt.update(grads, rebuilt.init(params), params)
    np.testing.assert_array_equal(u1["w"], u2["w"])
    # First Adam step: m_hat = g, v_hat = g^2, so the update is -lr * g / (|g| + eps).
    # (1 - b2 = 0.001 is computed in float32, hence a relative error of a few 1e-6.)
    g = np.array([0.3, -0.2, 1.5], np.float64)
    np.testing.assert_allclose(u1["w"], -0.1 * g / (np.abs(g) + 1e-8), rtol=2e-5)


def test_learning_rate_none_is_described_identity():
    tx = gx.scale_by_learning_rate(None)
    assert tx.name == "scale_by_learning_rate"
    assert tx.hyperparams["learning_rate"] is None
    assert tx.inner is not None and tx.inner.name == "identity"
    grads = {"w": jnp.array([1.5, -2.0])}
    updates, _ = tx.update(grads, tx.init(grads))
    np.testing.assert_array_equal(updates["w"], np.array([1.5, -2.0], np.float32))


# --- EmptyState ------------------------------------------------------------------------


def test_empty_state_is_an_empty_pytree():
    state = gx.EmptyState()
    assert isinstance(state, tuple)
    assert state == ()
    assert jax.tree.leaves(state) == []
    assert jax.tree.structure(state) == jax.tree.structure(gx.EmptyState())


@pytest.mark.parametrize(
    "make", [gx.identity, lambda: gx.clip(1.0), lambda: gx.clip_by_global_norm(1.0), lambda: gx.scale(2.0)]
)
def test_stateless_transforms_keep_empty_state_through_jit(make):
    tx = make()
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    assert isinstance(state, gx.EmptyState)
    _, new_state = jax.jit(tx.update)({"w": jnp.ones(2)}, state)
    assert isinstance(new_state, gx.EmptyState)
