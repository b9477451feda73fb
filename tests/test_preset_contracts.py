"""Framework presets are ordinary chains: the contract each ``gx.keras``/``gx.torch`` preset keeps.

For each preset (built with non-default arguments): ``to_config``/``from_config``
and ``pickle`` rebuild the same ``repr`` and the same numbers bit for bit;
``tree_get`` finds its counters; ``inject_hyperparams`` over its float
arguments gives the plain preset's numbers, also after the learning rate is
changed in the state; and an Orbax checkpoint of its state taken mid-run
restores into ``jax.eval_shape(tx.init, params)`` and continues bit for bit.
Numbers against Keras and torch themselves are in ``tests/keras`` and
``tests/pytorch``.
"""

from __future__ import annotations

import pickle
import re

import jax
import jax.numpy as jnp
import numpy as np
from orbax.checkpoint import v1 as ocp
import pytest

import gradxform as gx
from tests.helpers import assert_trees_bitwise_equal

# name -> (preset, its arguments, the learning-rate argument's name, static arguments)
PRESETS = {
    "keras.adafactor": (gx.keras.adafactor, dict(learning_rate=0.05, clip_threshold=0.5,
                                                 beta_2_decay=-0.6, weight_decay=0.01,
                                                 use_ema=True), "learning_rate", ("name",)),
    "keras.schedule_free_adamw": (gx.keras.schedule_free_adamw, dict(
        learning_rate=0.05, beta_1=0.8, warmup_steps=3, weight_decay=0.01, clipnorm=1.0),
        "learning_rate", ("name", "warmup_steps")),
    "keras.muon": (gx.keras.muon, dict(learning_rate=0.02, adam_lr_ratio=0.5, momentum=0.9,
                                       weight_decay=0.01, global_clipnorm=1.0),
                   "learning_rate", ("name", "ns_steps", "exclude_layers")),
    "torch.Adafactor": (gx.torch.Adafactor, dict(lr=0.05, beta2_decay=-0.5, eps=(1e-3, 1e-2),
                                                 d=2.0, weight_decay=1e-2), "lr", ("eps",)),
    "torch.Muon": (gx.torch.Muon, dict(lr=0.02, weight_decay=0.01, momentum=0.9,
                                       adjust_lr_fn="match_rms_adamw"),
                   "lr", ("ns_steps", "adjust_lr_fn", "ns_coefficients")),
    "torch.SparseAdam": (gx.torch.SparseAdam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
                         "lr", ("betas",)),
}
MATRICES_ONLY = {"torch.Muon"}  # torch's Muon takes 2-D parameters only
STEPS = 6


def _params(name=None):
    rng = np.random.default_rng(0)
    params = {"dense": {"kernel": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32),
                        "bias": jnp.asarray(rng.standard_normal(3), jnp.float32)},
              "scale": jnp.asarray(1.5, jnp.float32)}
    if name in MATRICES_ONLY:
        params = {"dense": {"kernel": params["dense"]["kernel"],
                            "wide": jnp.asarray(rng.standard_normal((2, 5)), jnp.float32)}}
    return params


def _grads(step, name=None):
    rng = np.random.default_rng(100 + step)
    return jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype),
                        _params(name))


def _run(tx, name, steps=STEPS, state=None, params=None, start=0):
    params = _params(name) if params is None else params
    state = tx.init(params) if state is None else state
    update = jax.jit(tx.update)
    for step in range(start, steps):
        updates, state = update(_grads(step, name), state, params)
        params = gx.apply_updates(params, updates)
    return params, state


def _build(name):
    preset, kwargs, _, _ = PRESETS[name]
    return preset(**kwargs)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_and_pickle_rebuild_the_same_numbers(name):
    tx = _build(name)
    expected = _run(tx, name)
    for rebuilt in (gx.from_config(gx.to_config(tx)), pickle.loads(pickle.dumps(tx))):
        assert repr(rebuilt) == repr(tx)
        assert_trees_bitwise_equal(_run(rebuilt, name), expected, name)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_tree_get_finds_the_step_counts(name):
    """One own count is returned; several (the rule's and an EMA's) raise a KeyError listing
    their paths, each of which ``tree_get`` then resolves."""
    _, state = _run(_build(name), name, steps=2)
    try:
        counts = [gx.tree_get(state, "count")]
    except KeyError as error:
        paths = re.findall(r"(/[\w/]+count)", str(error))
        assert len(paths) >= 2, str(error)
        counts = [gx.tree_get(state, path) for path in paths]
    assert all(int(count) == 2 for count in counts), counts


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_injected_hyperparameters_give_the_plain_numbers(name):
    preset, kwargs, lr_name, static = PRESETS[name]
    injected = gx.inject_hyperparams(preset, static_args=static)(**kwargs)
    for lr in (kwargs[lr_name], 2 * kwargs[lr_name]):
        expected, _ = _run(preset(**{**kwargs, lr_name: lr}), name)
        state = gx.tree_set(injected.init(_params(name)), **{lr_name: lr})
        ours, _ = _run(injected, name, state=state)
        # An injected rate is an array where the plain preset folds a constant: a few units of
        # rounding per step, far from the doubled rate's effect.
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{name}, lr={lr}")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_orbax_checkpoint_mid_run_resumes_bit_for_bit(name, tmp_path):
    tx = _build(name)
    expected = _run(tx, name)
    params, state = _run(tx, name, steps=STEPS // 2)
    with ocp.training.Checkpointer(tmp_path) as checkpointer:
        assert checkpointer.save(STEPS // 2, {"params": params, "opt_state": state}, force=True)
    target = {"params": jax.eval_shape(lambda: _params(name)),
              "opt_state": jax.eval_shape(tx.init, _params(name))}
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda s: s.update(sharding=sharding), target)
    with ocp.training.Checkpointer(tmp_path) as checkpointer:
        restored = checkpointer.load(STEPS // 2, abstract_state=target)
    resumed = _run(tx, name, state=restored["opt_state"], params=restored["params"],
                   start=STEPS // 2)
    assert_trees_bitwise_equal(resumed, expected, name)
