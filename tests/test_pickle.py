"""Every transformation built by a public constructor pickles as the call that builds it:
the copy has the same ``repr`` and state layout (``copy.deepcopy`` too), and, for the
swept entries (``tests.factories.sweep``: every constructor but the presets, whose
chains are made of swept ones), the same jitted updates."""

import copy
import pickle

import jax
import jax.numpy as jnp
import pytest

import gradxform as gx
from tests.factories import FACTORIES, sweep
from tests.helpers import assert_trees_bitwise_equal, random_params

# A lambda in the arguments cannot be pickled (pickle stores functions by name), and
# to_optax returns optax's own type.
_PICKLABLE = [
    name for name in sorted(FACTORIES)
    if "<lambda>" not in repr(FACTORIES[name]()) and name != "to_optax"
]


def test_most_factories_are_picklable():
    assert len(_PICKLABLE) >= len(FACTORIES) - 8, sorted(set(FACTORIES) - set(_PICKLABLE))


def _copies(tx):
    return pickle.loads(pickle.dumps(tx)), copy.deepcopy(tx)


@pytest.mark.parametrize("name", _PICKLABLE)
def test_pickle_round_trip_keeps_repr_and_state_layout(name):
    tx = FACTORIES[name]()
    params = random_params()
    expected = jax.eval_shape(tx.init, params)
    for copied in _copies(tx):
        assert repr(copied) == repr(tx)
        got = jax.eval_shape(copied.init, params)
        assert jax.tree.structure(got) == jax.tree.structure(expected), name
        assert jax.tree.leaves(got) == jax.tree.leaves(expected), name


@pytest.mark.parametrize("name", sweep(_PICKLABLE))
def test_pickle_round_trip_keeps_updates(name):
    tx = FACTORIES[name]()
    params = random_params()
    grads = jax.tree.map(lambda p: 0.5 * jnp.ones_like(p), params)
    expected, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    for copied in _copies(tx):
        got, _ = jax.jit(copied.update)(grads, copied.init(params), params)
        assert_trees_bitwise_equal(got, expected, name)


def test_a_lambda_argument_gives_picklings_own_error():
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(gx.scale_by_schedule(lambda count: 0.1))
