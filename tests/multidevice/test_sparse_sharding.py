"""Row-sparse updates of a table sharded by rows over 8 devices: nothing gathered, same numbers.

The whole train step (``gx.sparse.value_and_grad`` -> update -> ``apply_updates``)
is compiled with the table, and the state made from it, sharded by rows over
the mesh axis "rows". The compiled HLO must have no all-gather: the table,
accumulators and moments stay split, and only the looked-up rows cross
devices (one all-reduce of ``(ids, dim)`` floats). After a few steps the
params and state equal, to float tolerance, the same steps on one device.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import gradxform as gx

NUM_ROWS, DIM, IDS = 4096, 16, 256

OPTIMIZERS = {
    "adagrad": lambda: gx.adagrad(0.1),
    "keras_adagrad_clipnorm": lambda: gx.keras.adagrad(0.1, clipnorm=1.0, weight_decay=0.01),
    "sgd_momentum": lambda: gx.sgd(0.1, momentum=0.9),
    "lazy_adam": lambda: gx.lazy_adam(0.01),
    "ftrl": lambda: gx.ftrl(0.1, l1_regularization_strength=1e-3),
    "global_clip_adagrad": lambda: gx.chain(gx.clip_by_global_norm(1.0), gx.adagrad(0.1)),
    "adagrad_max_rows": lambda: gx.adagrad(0.1),  # the gradient with fewer slots than ids
}
MAX_ROWS = 128  # each batch touches 84 to 99 rows


def _loss(params, ids, lookup=gx.sparse.lookup):
    return jnp.sum(jnp.tanh(lookup(params["embed"], ids).sum(1) @ params["w"]))


def _host_params():
    rng = np.random.default_rng(0)
    return {"embed": rng.standard_normal((NUM_ROWS, DIM)).astype(np.float32),
            "w": rng.standard_normal(DIM).astype(np.float32)}


def _ids(step):
    rng = np.random.default_rng(10 + step)
    return jnp.asarray(np.minimum(rng.zipf(1.2, (IDS // 2, 2)) - 1, NUM_ROWS - 1), jnp.int32)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_row_sharded_table_updates_without_gathering(name):
    tx = OPTIMIZERS[name]()
    grad_fn = gx.sparse.value_and_grad(_loss, "embed", invalid_ids="drop", overflow="drop",
                                       max_rows=MAX_ROWS if name.endswith("max_rows") else None)

    def step(params, state, ids):
        _, grads = grad_fn(params, ids)
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state

    mesh = jax.make_mesh((8,), ("rows",), axis_types=(AxisType.Auto,))
    shardings = {"embed": NamedSharding(mesh, P("rows")), "w": NamedSharding(mesh, P())}
    params = jax.device_put(_host_params(), shardings)
    state = jax.jit(tx.init, out_shardings=gx.state_shardings(tx, params))(params)
    table_states = [leaf for leaf in jax.tree.leaves(state) if leaf.shape == (NUM_ROWS, DIM)]
    assert table_states and all(
        leaf.sharding.is_equivalent_to(shardings["embed"], 2) for leaf in table_states)

    sharded_step = jax.jit(step, donate_argnums=(0, 1))
    text = sharded_step.lower(params, state, _ids(0)).compile().as_text()
    assert not re.findall(r"\ball-gather(?:-start)?\(", text), name
    # Only rows cross devices: no collective moves a table-sized buffer.
    for line in text.splitlines():
        if re.search(r"\b(all-reduce|collective-permute|all-to-all)(-start)?\(", line):
            assert f"f32[{NUM_ROWS}," not in line, line

    one_params = jax.device_put(_host_params(), jax.devices()[0])
    one_state = tx.init(one_params)
    one_step = jax.jit(step)
    for i in range(4):
        params, state = sharded_step(params, state, _ids(i))
        one_params, one_state = one_step(one_params, one_state, _ids(i))
    assert params["embed"].sharding.is_equivalent_to(shardings["embed"], 2)
    np.testing.assert_allclose(params["embed"], one_params["embed"], rtol=2e-6, atol=1e-7)
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(one_state)):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
