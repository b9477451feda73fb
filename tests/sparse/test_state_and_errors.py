"""The state of a table is the dense path's: Orbax saves and restores it; mismatches raise.

A run of sparse steps, a checkpoint, and more steps after restoring into
``jax.eval_shape(tx.init, params)`` equals the run without the checkpoint bit
for bit; and it may go on with dense gradients, since the state is the same
arrays either way.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint import v1 as ocp

import gradxform as gx
from tests.helpers import assert_trees_bitwise_equal

NUM_ROWS, DIM = 64, 4


def _params():
    rng = np.random.default_rng(0)
    return {"embed": jnp.asarray(rng.standard_normal((NUM_ROWS, DIM)), jnp.float32),
            "w": jnp.ones(DIM)}


def _loss(params, ids, lookup=gx.sparse.lookup):
    return jnp.sum(jnp.sin(lookup(params["embed"], ids) @ params["w"]))


def _ids(step):
    rng = np.random.default_rng(step)
    return jnp.asarray(rng.integers(0, NUM_ROWS, 12), jnp.int32)


@pytest.mark.parametrize("make", [lambda: gx.adagrad(0.1), lambda: gx.lazy_adam(0.01),
                                  lambda: gx.ftrl(0.1)], ids=["adagrad", "lazy_adam", "ftrl"])
def test_checkpoint_of_sparse_training_restores_and_resumes_bit_for_bit(make, tmp_path):
    tx = make()
    grad_fn = gx.sparse.value_and_grad(_loss, "embed", invalid_ids="drop")

    @jax.jit
    def step(params, state, ids):
        _, grads = grad_fn(params, ids)
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    def run(params, state, start, stop):
        for i in range(start, stop):
            params, state = step(params, state, _ids(i))
        return params, state

    params = _params()
    straight = run(params, tx.init(params), 0, 8)
    halfway = run(params, tx.init(params), 0, 4)
    with ocp.training.Checkpointer(tmp_path) as checkpointer:
        assert checkpointer.save(4, {"params": halfway[0], "opt_state": halfway[1]}, force=True)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda s: s.update(sharding=device), {
        "params": jax.eval_shape(_params),
        "opt_state": jax.eval_shape(tx.init, jax.eval_shape(_params))})
    with ocp.training.Checkpointer(tmp_path) as checkpointer:
        restored = checkpointer.load(4, abstract_state=target)
    assert jax.tree.structure(restored["opt_state"]) == jax.tree.structure(tx.init(params))
    resumed = run(restored["params"], restored["opt_state"], 4, 8)
    assert_trees_bitwise_equal(resumed, straight, "resumed")
    # The same state goes on with dense gradients.
    dense = jax.grad(_loss)(resumed[0], _ids(9))
    updates, _ = tx.update(dense, resumed[1], resumed[0])
    assert updates["embed"].shape == (NUM_ROWS, DIM)


def test_rowsparse_of_another_table_size_raises_naming_the_transformation():
    params = _params()
    wrong = {"embed": gx.RowSparse(jnp.array([1]), jnp.ones((1, DIM)), NUM_ROWS + 1),
             "w": jnp.ones(DIM)}
    tx = gx.adagrad(0.1)
    with pytest.raises(ValueError, match=r"adagrad.*\['embed'\].*\(65, 4\).*\(64, 4\).*scale_by_adagrad"):
        tx.update(wrong, tx.init(params), params)
    with pytest.raises(ValueError, match=r"apply_updates.*\['embed'\].*\(65, 4\)"):
        gx.apply_updates(params, wrong)
    with pytest.raises(ValueError, match=r"RowSparse: cannot add rows of a table of shape"):
        params["embed"] + wrong["embed"]
    narrow = {"embed": gx.RowSparse(jnp.array([1]), jnp.ones((1, DIM - 1)), NUM_ROWS),
              "w": jnp.ones(DIM)}
    with pytest.raises(ValueError, match=r"adagrad.*\(64, 3\)"):
        tx.update(narrow, tx.init(params), params)


def test_repr_config_and_pickle_of_sparse_optimizers_rebuild_them():
    import pickle

    for tx in (gx.lazy_adam(0.01, eps_hat=True), gx.ftrl(0.05, l1_regularization_strength=0.01),
               gx.scale_by_lazy_adam(b2=0.99)):
        again = gx.from_config(gx.to_config(tx))
        assert repr(again) == repr(tx)
        assert repr(pickle.loads(pickle.dumps(tx))) == repr(tx)
        assert repr(eval(repr(tx), {**vars(gx)})) == repr(tx)
