"""Errors at ``update`` time name the transformation that caught the problem.

For every entry of ``tests/factories.py``:

* integer (and bool) gradients raise ``TypeError`` naming a transformation and
  the leaf, instead of being truncated or failing deep inside JAX;
* a gradient of the wrong shape raises ``ValueError`` naming a transformation,
  the leaf and both shapes, for every transformation that holds per-leaf state
  or reads the params, and in ``apply_updates``;
* a tree structure that does not match raises ``ValueError`` naming a
  transformation (``tests/test_errors.py`` checks the message in detail);
* a state restored from a checkpoint without a target (NamedTuples become
  dicts, tuples lists, empty states None) raises ``TypeError`` saying how to
  restore it, instead of a bare ``AttributeError``; shown with Orbax itself too.

All of them also under ``jit``: the checks run while tracing.
"""

import pathlib

import jax
import jax.numpy as jnp
import pytest

import gradxform as gx
from tests.factories import FACTORIES, NAMES, WRAPPED_BY_FOREIGN, constructors_covered

_PARAMS = {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3), "blocks": [jnp.ones(2), None]}

# They pass gradients on untouched or to a user's function: integer leaves may
# go through them (to be masked out or zeroed), and they hold nothing to compare.
_PASS_THROUGH = {"identity", "set_to_zero", "stateless", "stateless_with_tree_map"}
# Nothing per leaf to compare a shape with: no per-leaf state, params unused.
_SHAPE_BLIND = _PASS_THROUGH | {
    "scale", "scale_by_learning_rate", "scale_by_learning_rate_schedule", "scale_by_schedule",
    "clip", "clip_by_norm", "clip_by_global_norm", "static_loss_scale", "named_chain", "sgd",
    "record_global_norm", "scale_by_sign", "sign_sgd",
    "clip_by_global_p_norm", "torch_clip_grad_norm_inf", "torch_clip_grad_value",
    "add_noise", "add_noise_seed", "noisy_sgd", "inject_noisy_sgd",
}


def _owners(name):
    """The constructors that may rightly be named: those that built the entry."""
    return constructors_covered(WRAPPED_BY_FOREIGN.get(name, FACTORIES[name])())


def _assert_names_an_owner(message, name):
    owners = _owners(name)
    assert any(f"{owner}:" in message for owner in owners), (owners, message)


def _grads(**replace):
    grads = jax.tree.map(lambda p: 0.5 * jnp.ones_like(p), _PARAMS)
    grads.update(replace)
    return grads


def _as_restored_without_target(state):
    """What a checkpoint restored without a target gives: dicts, lists and None."""
    if isinstance(state, gx.EmptyState):
        return None
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return {field: _as_restored_without_target(v) for field, v in zip(state._fields, state)}
    if isinstance(state, (tuple, list)):
        return [_as_restored_without_target(v) for v in state]
    if isinstance(state, dict):
        return {key: _as_restored_without_target(v) for key, v in state.items()}
    return state


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", sorted(set(NAMES) - _PASS_THROUGH))
def test_integer_gradients_raise_naming_the_transformation(name, jit):
    tx = FACTORIES[name]()
    update = jax.jit(tx.update) if jit else tx.update
    # The kernel: every entry's masks and labels send it to arithmetic.
    grads = _grads(kernel=jnp.ones((2, 3), jnp.int32))
    with pytest.raises(TypeError) as info:
        update(grads, tx.init(_PARAMS), _PARAMS)
    message = str(info.value)
    assert "gradients must be floating-point or complex, got int32 at ['kernel']" in message
    _assert_names_an_owner(message, name)


@pytest.mark.parametrize(
    "tx", [gx.identity(), gx.set_to_zero(), gx.stateless(lambda g, p: g),
           gx.stateless_with_tree_map(lambda g, p: g)],
    ids=["identity", "set_to_zero", "stateless", "stateless_with_tree_map"],
)
def test_pass_through_transformations_leave_integer_leaves_alone(tx):
    grads = _grads(bias=jnp.arange(3, dtype=jnp.int32))
    updates, _ = tx.update(grads, tx.init(_PARAMS), _PARAMS)
    assert updates["bias"].dtype == jnp.int32


def test_integer_leaves_can_be_zeroed_by_partition():
    tx = gx.partition({"train": gx.adam(0.1), "frozen": gx.set_to_zero()},
                      lambda p: jax.tree.map(lambda x: "train" if x.ndim == 2 else "frozen", p))
    grads = _grads(bias=jnp.arange(3, dtype=jnp.int32))
    updates, _ = jax.jit(tx.update)(grads, tx.init(_PARAMS), _PARAMS)
    assert not jnp.any(updates["bias"])


@pytest.mark.parametrize("name", sorted(set(NAMES) - _SHAPE_BLIND))
def test_wrong_shape_raises_naming_transformation_and_shapes(name):
    tx = FACTORIES[name]()
    grads = _grads(bias=jnp.zeros(4))
    for update in (tx.update, jax.jit(tx.update)):
        with pytest.raises(ValueError) as info:
            update(grads, tx.init(_PARAMS), _PARAMS)
        message = str(info.value)
        assert "['bias'] has shape (4,)" in message and "shape (3,)" in message, message
        _assert_names_an_owner(message, name)


def test_apply_updates_rejects_a_wrong_shape_instead_of_broadcasting():
    with pytest.raises(ValueError, match=r"apply_updates: the update at \['bias'\] has shape \(1,\)"):
        gx.apply_updates(_PARAMS, _grads(bias=jnp.zeros(1)))


@pytest.mark.parametrize("name", sorted(set(NAMES) - _SHAPE_BLIND))
def test_structure_mismatch_raises_naming_the_transformation(name):
    tx = FACTORIES[name]()
    grads = _grads(extra=jnp.ones(2))
    with pytest.raises(ValueError) as info:
        jax.jit(tx.update)(grads, tx.init(_PARAMS), _PARAMS)
    _assert_names_an_owner(str(info.value), name)


@pytest.mark.parametrize("name", NAMES)
def test_state_restored_without_target_raises_with_the_fix(name):
    tx = FACTORIES[name]()
    state = _as_restored_without_target(tx.init(_PARAMS))
    if jax.tree.structure(state) == jax.tree.structure(tx.init(_PARAMS)):
        pytest.skip("the state has no NamedTuple or tuple to lose")
    with pytest.raises((TypeError, ValueError)) as info:
        tx.update(_grads(), state, _PARAMS)
    message = str(info.value)
    assert "jax.eval_shape(tx.init, params)" in message, message
    _assert_names_an_owner(message, name)


@pytest.mark.filterwarnings("ignore:Sharding info not provided")
def test_real_orbax_restore_without_target(tmp_path: pathlib.Path):
    ocp = pytest.importorskip("orbax.checkpoint").v1
    tx = gx.chain(gx.clip_by_global_norm(1.0), gx.adam(1e-3))
    with ocp.training.Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(0, {"opt_state": tx.init(_PARAMS)}, force=True)
    with ocp.training.Checkpointer(tmp_path) as checkpointer:
        restored = checkpointer.load(0)["opt_state"]
    with pytest.raises(TypeError, match=r"clip_by_global_norm: the state must be what init"):
        tx.update(_grads(), restored, _PARAMS)
    # Restored with the target, it is the state again.
    with ocp.training.Checkpointer(tmp_path) as checkpointer:
        target = {"opt_state": jax.eval_shape(tx.init, _PARAMS)}
        state = checkpointer.load(0, abstract_state=target)["opt_state"]
    tx.update(_grads(), state, _PARAMS)
