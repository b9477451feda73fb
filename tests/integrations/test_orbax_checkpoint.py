"""Checkpointing gradxform optimizer state with Orbax's V1 API (``orbax.checkpoint.v1``).

A training run of 100 jitted steps must equal, bit for bit, a run of 50 steps,
a checkpoint of params and optimizer state, and 50 more steps in a fresh Python
process that restores both into ``jax.eval_shape(tx.init, params)``. The save
falls in the middle of a gradient-accumulation window (50 is not a multiple of
3), so the accumulator, the parameter average and every counter must survive.

Run as a script, this module is that fresh process::

    python tests/integrations/test_orbax_checkpoint.py resume ROOT
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from orbax.checkpoint import v1 as ocp
import pytest

import gradxform as gx
from tests.helpers import assert_trees_bitwise_equal
from tests.mlp import init_mlp_params, make_regression_data

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOTAL_STEPS = 100
SAVE_STEP = 50
EVERY_K = 3  # gradient accumulation: SAVE_STEP % EVERY_K == 2, the save is mid-window
KINDS = ("chain", "keras")
FEATURES, HIDDEN, BATCH, N_BATCHES = 8, 16, 16, 4


# --- the model, the data and the optimizers: identical in both processes ---------------------

def init_params(seed: int = 0) -> dict:
    return init_mlp_params(FEATURES, HIDDEN, seed)


def make_data(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    return make_regression_data(N_BATCHES * BATCH, FEATURES, np.sin, seed)


def batch(data: tuple[np.ndarray, np.ndarray], step: int) -> tuple[np.ndarray, np.ndarray]:
    start = (step % N_BATCHES) * BATCH
    return data[0][start:start + BATCH], data[1][start:start + BATCH]


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    pred = h @ params["out"]["kernel"] + params["out"]["bias"]
    return jnp.mean((pred - y) ** 2)


def make_tx(kind: str, *, mu_dtype: Any = jnp.bfloat16, use_ema: bool = True):
    """Adam, clipping, weight decay, a parameter EMA and gradient accumulation, two ways.

    ``mu_dtype`` and ``use_ema`` vary the hand-written chain, to restore into a wrong target.
    """
    if kind == "chain":
        schedule = gx.schedules.warmup_cosine_decay_schedule(0.0, 1e-2, 5, 40, 1e-4)
        accumulate = gx.accumulate_gradients(
            gx.chain(
                gx.clip_by_global_norm(1.0),
                gx.scale_by_adam(mu_dtype=mu_dtype),  # a bfloat16 moment next to float32
                gx.add_decayed_weights(1e-3, exclude=["bias"]),
                gx.scale_by_learning_rate(schedule),
            ),
            EVERY_K,
        )
        if not use_ema:
            return gx.chain(accumulate)
        return gx.chain(
            accumulate, gx.params_ema(decay=0.9, overwrite_frequency=7, calls_per_step=EVERY_K)
        )
    if kind == "keras":
        schedule = gx.keras.CosineDecay(1e-3, decay_steps=60, warmup_target=1e-2, warmup_steps=10)
        return gx.keras.adam(
            learning_rate=schedule, weight_decay=0.004, exclude_from_weight_decay=["bias"],
            clipnorm=1.0, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=7,
            gradient_accumulation_steps=EVERY_K, loss_scale_factor=128.0,
        )
    raise ValueError(kind)


def make_step(tx: gx.GradientTransformation):
    @jax.jit
    def step(params, opt_state, x, y):
        grads = jax.grad(lambda p: gx.scale_loss(loss_fn(p, x, y), opt_state))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return gx.apply_updates(params, updates), opt_state

    return step


def train(step_fn, params, opt_state, start: int, stop: int):
    data = make_data()
    for step in range(start, stop):
        params, opt_state = step_fn(params, opt_state, *batch(data, step))
    return params, opt_state


# --- checkpointing ----------------------------------------------------------------------------

def abstract_train_state(tx: gx.GradientTransformation) -> dict:
    """The restore target: shapes, dtypes and NamedTuple types, no values, on the one device."""
    abstract_params = jax.eval_shape(init_params)
    target = {"params": abstract_params, "opt_state": jax.eval_shape(tx.init, abstract_params)}
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda s: s.update(sharding=sharding), target)


def save(directory: pathlib.Path, step: int, params, opt_state) -> None:
    with ocp.training.Checkpointer(directory) as checkpointer:
        assert checkpointer.save(step, {"params": params, "opt_state": opt_state}, force=True)
    # The context manager waited for the save and closed the checkpointer.


def load(directory: pathlib.Path, tx: gx.GradientTransformation, expected_step: int):
    with ocp.training.Checkpointer(directory) as checkpointer:
        assert checkpointer.latest is not None and checkpointer.latest.step == expected_step
        restored = checkpointer.load(expected_step, abstract_state=abstract_train_state(tx))
    return restored["params"], restored["opt_state"]


def assert_matches_target(restored: Any, target: Any) -> None:
    """Same treedef as the target (NamedTuple types included), shapes and dtypes; jax.Arrays."""
    assert jax.tree.structure(restored) == jax.tree.structure(target)
    for leaf, spec in zip(jax.tree.leaves(restored), jax.tree.leaves(target)):
        assert isinstance(leaf, jax.Array)
        assert (leaf.shape, leaf.dtype) == (spec.shape, spec.dtype)


def nodes_of_type(tree: Any, cls: type) -> list:
    nodes = jax.tree.leaves(tree, is_leaf=lambda n: isinstance(n, cls))
    return [n for n in nodes if isinstance(n, cls)]


# --- the fresh process ------------------------------------------------------------------------

def resume_main(root: str) -> None:
    """For each kind: restores ``ROOT/KIND/checkpoints`` at SAVE_STEP, checks its structure,
    trains to TOTAL_STEPS and saves the result to ``ROOT/KIND/resumed``."""
    # The root conftest.py's settings, which the test process runs under.
    assert os.environ.get("KERAS_BACKEND") == "jax"  # the test passes it in the environment
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    for kind in KINDS:
        tx = make_tx(kind)
        params, opt_state = load(pathlib.Path(root, kind, "checkpoints"), tx, SAVE_STEP)
        # The reference structure comes from this process's own tx.init, not from the checkpoint.
        fresh = {"params": init_params(), "opt_state": tx.init(init_params())}
        assert_matches_target({"params": params, "opt_state": opt_state}, fresh)
        params, opt_state = train(make_step(tx), params, opt_state, SAVE_STEP, TOTAL_STEPS)
        save(pathlib.Path(root, kind, "resumed"), TOTAL_STEPS, params, opt_state)


# --- tests ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def root(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("orbax")


@pytest.fixture(scope="module")
def runs(root) -> dict:
    """Per kind: the uninterrupted run, and the state at SAVE_STEP saved to a checkpoint."""
    device = jax.devices()[0]
    runs = {}
    for kind in KINDS:
        tx = make_tx(kind)
        step_fn = make_step(tx)
        # Committed to the device, as restored arrays are, so that both hit the same compilation.
        params0 = jax.device_put(init_params(), device)
        state0 = jax.device_put(tx.init(params0), device)
        mid_params, mid_state = train(step_fn, params0, state0, 0, SAVE_STEP)
        end_params, end_state = train(step_fn, mid_params, mid_state, SAVE_STEP, TOTAL_STEPS)
        save(root / kind / "checkpoints", SAVE_STEP, mid_params, mid_state)
        runs[kind] = {
            "tx": tx, "step": step_fn, "directory": root / kind / "checkpoints",
            "mid": (mid_params, mid_state), "end": (end_params, end_state),
        }
    return runs


@pytest.fixture(scope="module")
def resumed(root, runs) -> dict:
    """Per kind: params and state after resuming in one fresh process (for all kinds)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["KERAS_BACKEND"] = "jax"
    result = subprocess.run(
        [sys.executable, __file__, "resume", str(root)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return {kind: load(root / kind / "resumed", runs[kind]["tx"], TOTAL_STEPS) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_the_save_falls_mid_accumulation_with_every_state_kind(runs, kind):
    _, state = runs[kind]["mid"]
    (acc,) = nodes_of_type(state, gx.AccumulateGradientsState)
    assert int(acc.count) == SAVE_STEP and SAVE_STEP % EVERY_K != 0
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(acc.acc_grads))
    (adam,) = nodes_of_type(state, gx.ScaleByAdamState)
    assert int(adam.count) == SAVE_STEP // EVERY_K
    (ema,) = nodes_of_type(state, gx.ParamsEmaState)
    assert int(ema.count) == SAVE_STEP
    if kind == "chain":
        assert {leaf.dtype for leaf in jax.tree.leaves(adam.mu)} == {jnp.dtype(jnp.bfloat16)}
        assert nodes_of_type(state, gx.AddDecayedWeightsState)
    else:
        assert nodes_of_type(state, gx.StaticLossScaleState)
        assert nodes_of_type(state, gx.DecoupledWeightDecayState)
        assert float(gx.current_loss_scale(state)) == 128.0


@pytest.mark.parametrize("kind", KINDS)
def test_restore_gives_the_exact_tree_dtypes_and_bits(runs, kind):
    run = runs[kind]
    params, state = run["mid"]
    restored_params, restored_state = load(run["directory"], run["tx"], SAVE_STEP)
    assert_matches_target(restored_state, jax.eval_shape(run["tx"].init, params))
    assert type(restored_state) is type(state)  # chain states are tuples of NamedTuples
    assert_trees_bitwise_equal(restored_params, params, "params")
    assert_trees_bitwise_equal(restored_state, state, "optimizer state")
    # Same abstract values (weak types included) and placement, so the jitted step runs the
    # same compiled program on them, and its next step is the same.
    placement = lambda tree: [  # noqa: E731
        (jax.typeof(leaf), leaf.sharding, leaf.committed) for leaf in jax.tree.leaves(tree)
    ]
    assert placement((restored_params, restored_state)) == placement((params, state))
    x, y = batch(make_data(), SAVE_STEP)
    assert_trees_bitwise_equal(
        run["step"](restored_params, restored_state, x, y), run["step"](params, state, x, y),
        "one step after restoring",
    )


def test_a_target_of_another_structure_is_refused_and_dtypes_follow_the_target(runs):
    run = runs["chain"]
    # A chain without the parameter average: Orbax raises (0.12.8: NoEntryError, "Failed to
    # load checkpointable ... incompatible handler") rather than fill a different tree.
    with pytest.raises(Exception):
        load(run["directory"], make_tx("chain", use_ema=False), SAVE_STEP)
    # The same tree with a float32 first moment: the bfloat16 moment is cast to the target's dtype.
    _, state = load(run["directory"], make_tx("chain", mu_dtype=jnp.float32), SAVE_STEP)
    (restored,) = nodes_of_type(state, gx.ScaleByAdamState)
    (saved,) = nodes_of_type(run["mid"][1], gx.ScaleByAdamState)
    assert_trees_bitwise_equal(restored.mu, jax.tree.map(lambda m: m.astype(jnp.float32), saved.mu))


@pytest.mark.parametrize("kind", KINDS)
def test_resuming_in_a_fresh_process_is_bitwise_the_uninterrupted_run(runs, resumed, kind):
    params, state = resumed[kind]
    end_params, end_state = runs[kind]["end"]
    assert_trees_bitwise_equal(params, end_params, "params after 50 + 50 steps")
    assert_trees_bitwise_equal(state, end_state, "optimizer state after 50 + 50 steps")
    assert_trees_bitwise_equal(
        gx.finalize_params(params, state), gx.finalize_params(end_params, end_state), "EMA params"
    )


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "resume":
        sys.exit(__doc__)
    resume_main(sys.argv[2])
