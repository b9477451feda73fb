"""Masks and labels that are ``equinox.Module`` s: pytrees that are also callable.

``jax.tree.map(lambda p: p.ndim > 1, params)`` over an Equinox model gives the
model's own class with a bool in place of each array: a pytree of bools that
has the model's ``__call__``. optax (since its issue 913) calls a mask only
when all its pytree leaves are callable, so such a mask is a tree. gradxform
must treat it the same way in ``masked``, ``freeze``, ``add_decayed_weights``'s
and ``adamw``'s ``mask`` and ``partition``'s ``labels``. Each is run live
against optax on an ``eqx.nn.MLP``'s params (optax's ``partition`` calls any
callable labels, so its reference gets the same label module from a
function); the leaves the mask leaves out must move as the unmasked
transformation moves them, or not at all for ``freeze``. A bound method of an
Equinox module is callable and a pytree of the module's arrays, which no mask
holds: it is called, as optax's ``partition`` calls it.
"""

import equinox as eqx
import jax
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import assert_trees_close, gradient_stream

MODEL = eqx.nn.MLP(3, 2, width_size=4, depth=1, key=jax.random.key(0))
PARAMS = eqx.filter(MODEL, eqx.is_inexact_array)
GRADS = gradient_stream(PARAMS, 6, seed=2, zero_every=0)
IS_MATRIX = jax.tree.map(lambda p: p.ndim > 1, PARAMS)  # an eqx.nn.MLP of bools
LABELS = jax.tree.map(lambda p: "matrix" if p.ndim > 1 else "vector", PARAMS)


def run(tx, promotion="strict"):
    state = tx.init(PARAMS)
    step = jax.jit(tx.update)
    outputs = []
    for grads in GRADS:
        with jax.numpy_dtype_promotion(promotion):
            updates, state = step(grads, state, PARAMS)
        outputs.append(updates)
    return outputs


def run_optax(tx):
    return run(tx, promotion="standard")  # optax's adam promotes implicitly


def test_the_masks_are_callable_pytrees_of_bools_and_labels():
    for tree, kind in ((IS_MATRIX, bool), (LABELS, str)):
        assert isinstance(tree, eqx.nn.MLP) and callable(tree)
        leaves = jax.tree.leaves(tree)
        assert leaves and all(isinstance(leaf, kind) for leaf in leaves)
    assert sorted(map(bool, jax.tree.leaves(IS_MATRIX))) == [False, False, True, True]


CASES = [
    pytest.param(lambda: gx.masked(gx.adam(0.1), IS_MATRIX),
                 lambda: optax.masked(optax.adam(0.1), IS_MATRIX), id="masked"),
    pytest.param(lambda: gx.chain(gx.sgd(0.1), gx.freeze(IS_MATRIX)),
                 lambda: optax.chain(optax.sgd(0.1), optax.freeze(IS_MATRIX)), id="freeze"),
    pytest.param(lambda: gx.add_decayed_weights(0.5, mask=IS_MATRIX),
                 lambda: optax.add_decayed_weights(0.5, mask=IS_MATRIX), id="add_decayed_weights"),
    pytest.param(lambda: gx.adamw(0.1, weight_decay=0.5, mask=IS_MATRIX),
                 lambda: optax.adamw(0.1, weight_decay=0.5, mask=IS_MATRIX), id="adamw"),
    pytest.param(lambda: gx.partition({"matrix": gx.adam(0.1), "vector": gx.sgd(0.2)}, LABELS),
                 lambda: optax.partition({"matrix": optax.adam(0.1), "vector": optax.sgd(0.2)},
                                         lambda _: LABELS), id="partition"),
]


@pytest.mark.parametrize("make_gx, make_optax", CASES)
def test_callable_module_mask_is_a_tree_as_in_optax(make_gx, make_optax):
    mine, reference = run(make_gx()), run_optax(make_optax())
    for step, (a, b) in enumerate(zip(mine, reference)):
        assert_trees_close(a, b, rtol=1e-5, atol=1e-7, context=f"step {step}")


def _matrix_and_vector_leaves(tree):
    leaves = jax.tree.leaves(tree)
    flags = jax.tree.leaves(IS_MATRIX)
    return ([leaf for leaf, f in zip(leaves, flags) if f],
            [leaf for leaf, f in zip(leaves, flags) if not f])


def test_unselected_leaves_move_as_without_the_mask():
    """Analytic check of which leaves the module mask selects, beside the optax comparison."""
    decayed = run(gx.add_decayed_weights(0.5, mask=IS_MATRIX))
    frozen = run(gx.chain(gx.sgd(0.1), gx.freeze(IS_MATRIX)))
    params_matrices, _ = _matrix_and_vector_leaves(PARAMS)
    for grads, decay_updates, freeze_updates in zip(GRADS, decayed, frozen):
        grad_matrices, grad_vectors = _matrix_and_vector_leaves(grads)
        decay_matrices, decay_vectors = _matrix_and_vector_leaves(decay_updates)
        freeze_matrices, freeze_vectors = _matrix_and_vector_leaves(freeze_updates)
        for u, g, p in zip(decay_matrices, grad_matrices, params_matrices):
            np.testing.assert_allclose(u, g + 0.5 * p, rtol=1e-6)
        for u, g in zip(decay_vectors, grad_vectors):
            np.testing.assert_array_equal(u, g)
        for u in freeze_matrices:
            assert np.all(np.signbit(np.asarray(u))) and not np.any(np.asarray(u))
        for u, g in zip(freeze_vectors, grad_vectors):
            np.testing.assert_allclose(u, -0.1 * np.asarray(g), rtol=1e-6)


def test_a_plain_function_mask_is_still_called():
    calls = []

    def by_rank(params):
        calls.append(type(params))
        return jax.tree.map(lambda p: p.ndim > 1, params)

    mine = run(gx.masked(gx.adam(0.1), by_rank))
    reference = run_optax(optax.masked(optax.adam(0.1), IS_MATRIX))
    assert calls and all(kind is eqx.nn.MLP for kind in calls)
    for a, b in zip(mine, reference):
        assert_trees_close(a, b, rtol=1e-5, atol=1e-7)


class MaskMaker(eqx.Module):
    scale: jax.Array

    def by_rank(self, params):
        return jax.tree.map(lambda p: p.ndim > 1, params)

    def labels(self, params):
        return jax.tree.map(lambda p: "matrix" if p.ndim > 1 else "vector", params)


def test_a_bound_method_of_a_module_is_called():
    """A bound method of an Equinox module is a pytree of the module's arrays, not of bools."""
    maker = MaskMaker(jax.numpy.ones(2))
    assert callable(maker.by_rank) and jax.tree.leaves(maker.by_rank)
    mine = run(gx.masked(gx.adam(0.1), maker.by_rank))
    reference = run_optax(optax.masked(optax.adam(0.1), IS_MATRIX))
    for a, b in zip(mine, reference):
        assert_trees_close(a, b, rtol=1e-5, atol=1e-7)
    mine = run(gx.partition({"matrix": gx.adam(0.1), "vector": gx.sgd(0.2)}, maker.labels))
    reference = run_optax(optax.partition({"matrix": optax.adam(0.1), "vector": optax.sgd(0.2)},
                                          maker.labels))
    for a, b in zip(mine, reference):
        assert_trees_close(a, b, rtol=1e-5, atol=1e-7)
