"""Reproducibility: the same seed and configuration give the same bits.

* Two fresh Python processes (different ``PYTHONHASHSEED``, ``KERAS_BACKEND=jax``,
  ``JAX_PLATFORMS=cpu``) each train four optimizers for `STEPS` jitted steps on
  data drawn from a fixed seed: Adam; AdamW with a weight-decay mask and a
  learning-rate schedule; a chain of gradient accumulation around global-norm
  clipping and Adam, then a parameter EMA; and ``gx.keras.adam`` with weight
  decay, ``clipnorm``, an EMA with periodic overwrite, gradient accumulation and
  a static loss scale. The SHA-256 of every params and state leaf's bytes
  (with its dtype and shape) must be the same in both. Two runs in one process
  must agree the same way.
* Saving and restoring does not perturb a run: for the swept entries of
  ``tests/factories.py`` (``sweep``: every constructor), `K` steps, an Orbax
  checkpoint of params and state (all of them in one checkpoint, keyed by name), a restore into
  ``jax.eval_shape(tx.init, params)``, and `K` more steps give bit for bit the
  params and state of `2K` uninterrupted steps.

Run as a script, this module is the training process::

    python tests/test_reproducibility.py train
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # the fresh process: make `gradxform` and `tests` importable
    sys.path.insert(0, str(ROOT))

import gradxform as gx  # noqa: E402
from tests.mlp import init_mlp_params, make_regression_data  # noqa: E402

STEPS = 20
FEATURES, HIDDEN, BATCH, N_BATCHES = 6, 8, 16, 3


# --- the training script: identical in every process ------------------------------------------

def init_params(seed: int = 0) -> dict:
    return init_mlp_params(FEATURES, HIDDEN, seed)


def make_data(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    return make_regression_data(N_BATCHES * BATCH, FEATURES, np.tanh, seed)


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    pred = h @ params["out"]["kernel"] + params["out"]["bias"]
    return jnp.mean((pred - y) ** 2)


def _matrices(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def optimizers() -> dict[str, gx.GradientTransformation]:
    return {
        "adam": gx.adam(1e-2),
        "adamw_mask_schedule": gx.adamw(
            gx.schedules.warmup_cosine_decay_schedule(0.0, 1e-2, 4, STEPS, 1e-4),
            weight_decay=1e-2, mask=_matrices,
        ),
        "chain_clip_accumulate_ema": gx.chain(
            gx.accumulate_gradients(gx.chain(gx.clip_by_global_norm(1.0), gx.adam(1e-2)), 3),
            gx.params_ema(0.9, overwrite_frequency=4, calls_per_step=3),
        ),
        "keras_adam": gx.keras.adam(
            1e-2, weight_decay=0.004, clipnorm=1.0, use_ema=True, ema_momentum=0.9,
            ema_overwrite_frequency=4, gradient_accumulation_steps=2, loss_scale_factor=128.0,
        ),
    }


def train(tx: gx.GradientTransformation, steps: int = STEPS) -> tuple[Any, Any]:
    @jax.jit
    def step(params, opt_state, x, y):
        grads = jax.grad(lambda p: gx.scale_loss(loss_fn(p, x, y), opt_state))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return gx.apply_updates(params, updates), opt_state

    data = make_data()
    params = init_params()
    opt_state = tx.init(params)
    for i in range(steps):
        start = (i % N_BATCHES) * BATCH
        params, opt_state = step(params, opt_state, data[0][start:start + BATCH],
                                 data[1][start:start + BATCH])
    return params, opt_state


def leaf_digests(tree: Any) -> dict[str, str]:
    """SHA-256 of each leaf's dtype, shape and bytes, keyed by its path."""
    digests = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.asarray(leaf)
        digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
        digests[jax.tree_util.keystr(path)] = digest.hexdigest()
    return digests


def train_all() -> dict[str, dict[str, dict[str, str]]]:
    results = {}
    for name, tx in optimizers().items():
        params, opt_state = train(tx)
        results[name] = {"params": leaf_digests(params), "opt_state": leaf_digests(opt_state)}
    return results


def train_main() -> None:
    # The root conftest.py's setting, which the test process runs under.
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    assert jax.default_backend() == "cpu"
    print(json.dumps(train_all(), sort_keys=True))


# --- tests ----------------------------------------------------------------------------------------

def _train_in_fresh_process(hash_seed: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(PYTHONHASHSEED=hash_seed, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, __file__, "train"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _assert_trained(results: dict) -> None:
    assert set(results) == set(optimizers())
    start = leaf_digests(init_params())
    for name, digests in results.items():
        assert set(digests["params"]) == set(start), name
        # Every parameter moved: the runs trained, they did not just agree on the start.
        assert all(digests["params"][path] != start[path] for path in start), name
        assert digests["opt_state"], name


def test_two_fresh_processes_give_bitwise_identical_trajectories():
    processes = [_train_in_fresh_process(seed) for seed in ("0", "4242")]  # in parallel
    outputs = []
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert process.returncode == 0, stderr[-6000:]
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    first, second = outputs
    _assert_trained(first)
    for name in first:
        for part in ("params", "opt_state"):
            assert first[name][part] == second[name][part], f"{name}: {part} differ"


def test_two_runs_in_one_process_are_bitwise_identical():
    first, second = train_all(), train_all()
    _assert_trained(first)
    assert first == second


# --- save and restore, for every factory ----------------------------------------------------------

K = 3
# As in test_nonfinite.py, a small tree with every kind of node (dicts, lists, tuples, None, a
# 0-d leaf) and XLA:CPU's backend optimisation off, since compile time is the cost of running
# every factory; both runs compared use the same compiled program. No zero-size leaf: Orbax
# 0.12.8 refuses to save one ("ValueError: Cannot save arrays with zero size").
SHAPES = {
    "dense": {"kernel": (3, 2), "bias": (2,)},
    "blocks": [None, ()],
    "pair": ((4,), {"inner": (1, 3)}),
}


def _on_device(tree: Any) -> Any:
    """Committed to the device, as restored arrays are, so that both runs share one compilation."""
    return jax.device_put(tree, jax.devices()[0])


def _steps(update, params, state, grads_seq):
    for grads in grads_seq:
        updates, state = update(grads, state, params)
        params = gx.apply_updates(params, updates)
    return params, state


def test_save_and_restore_mid_run_is_bitwise_the_uninterrupted_run(tmp_path):
    from orbax.checkpoint import v1 as ocp

    from tests.helpers import assert_trees_bitwise_equal, gradient_stream, random_params
    from tests.factories import FACTORIES, NAMES, sweep
    from tests.helpers import FAST_COMPILE

    names = sweep(NAMES)

    params0 = _on_device(random_params(0, jnp.float32, SHAPES))
    grads_seq = _on_device(gradient_stream(params0, 2 * K, seed=1))
    runs, mid = {}, {}
    for name in names:
        tx = FACTORIES[name]()
        update = jax.jit(tx.update, compiler_options=FAST_COMPILE)
        state0 = _on_device(tx.init(params0))
        mid_params, mid_state = _steps(update, params0, state0, grads_seq[:K])
        end = _steps(update, mid_params, mid_state, grads_seq[K:])
        runs[name] = (tx, update, end)
        mid[name] = {"params": mid_params, "opt_state": mid_state}

    with ocp.training.Checkpointer(tmp_path / "checkpoints") as checkpointer:
        assert checkpointer.save(K, mid, force=True)

    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract_params = jax.eval_shape(lambda: params0)
    target = {
        name: {"params": abstract_params, "opt_state": jax.eval_shape(runs[name][0].init, params0)}
        for name in names
    }
    target = jax.tree.map(lambda s: s.update(sharding=sharding), target)
    with ocp.training.Checkpointer(tmp_path / "checkpoints") as checkpointer:
        assert checkpointer.latest is not None and checkpointer.latest.step == K
        restored = checkpointer.load(K, abstract_state=target)

    for name in names:
        _, update, (end_params, end_state) = runs[name]
        params, state = restored[name]["params"], restored[name]["opt_state"]
        assert_trees_bitwise_equal(params, mid[name]["params"], f"{name}: restored params")
        assert_trees_bitwise_equal(state, mid[name]["opt_state"], f"{name}: restored state")
        assert type(state) is type(mid[name]["opt_state"]), name
        params, state = _steps(update, params, state, grads_seq[K:])
        assert_trees_bitwise_equal(params, end_params, f"{name}: params after {K} + {K} steps")
        assert_trees_bitwise_equal(state, end_state, f"{name}: state after {K} + {K} steps")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] != "train":
        sys.exit(__doc__)
    train_main()
