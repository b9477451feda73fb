"""muon: against optax.contrib.muon live, and as a chain that composes.

* Over 30 jitted steps (params moved by the updates) on a nested tree with
  scalars, ``None``, vectors, an empty leaf, 2-D matrices, a 3-D stack and a
  4-D kernel: the updates, the params and both inner states (Muon's
  ``MuonState`` and AdamW's ``ScaleByAdamState``, field by field) match
  optax's, for the defaults, for every option changed at once (schedules,
  both weight decays and a mask, no Nesterov, adaptive, AOL, the Dion preset,
  AdamW's own rates, consistent RMS), and with dimension numbers that send the
  3-D and 4-D leaves to Muon (given as optax's own ``MuonDimensionNumbers``:
  they are accepted); in bfloat16 against optax in float32.
* The leaves go where optax sends them: 2-D ones to Muon, the others to AdamW;
  with dimension numbers, the leaves that have them to Muon.
* ``inject_hyperparams(muon)`` is bit for bit the plain ``muon`` over 20 steps.
* Errors name ``muon`` and the argument the user gave.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from gradxform.core.paths import path_string
from tests.helpers import (
    assert_trees_bitwise_equal,
    cast_tree,
    gradient_stream,
    random_params,
    trajectory,
)

STEPS = 30
SHAPES = {"dense": {"kernel": (6, 4), "bias": (4,)}, "blocks": [(2, 5), None, ()],
          "conv": (3, 3, 2, 4), "stack": (2, 3, 5),
          "pair": ((5,), {"inner": (1, 3), "empty": (0,)}), "scalar": ()}

# A smaller tree for the default (slower) compile of the bitwise comparison.
INJECTED_SHAPES = {"kernel": (6, 4), "bias": (4,), "skip": None}


def _decaying(count):
    return 1e-2 / (1.0 + count.astype(jnp.float32))


def _matrices(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def _optax_dimension_numbers(params):
    """Muon for the 2-D leaves, the 3-D stack (batch axis 0) and the 4-D kernel; AdamW elsewhere."""
    numbers = optax.contrib.MuonDimensionNumbers

    def pick(p):
        return {2: numbers(), 3: numbers(1, 2), 4: numbers((0, 1, 2), 3)}.get(p.ndim)

    return jax.tree.map(pick, params)


CASES = {
    "defaults": dict(learning_rate=1e-2),
    "options": dict(learning_rate=_decaying, ns_coeffs="dion", beta=0.9, eps=1e-6,
                    weight_decay=0.1, weight_decay_mask=_matrices, nesterov=False, adaptive=True,
                    preconditioning="aol", adam_b1=0.8, adam_b2=0.99, adam_eps_root=1e-8,
                    adam_weight_decay=0.05, adam_learning_rate=3e-3, consistent_rms=0.2),
    "dimension_numbers": dict(learning_rate=1e-2, ns_steps=4, preconditioning="schatten",
                              muon_weight_dimension_numbers=_optax_dimension_numbers),
}


def _leaves(tree):
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def _assert_leaves_close(actual, expected, rtol, context):
    """Leaf by leaf (the two libraries' MaskedNode types differ, their leaves do not), to
    ``rtol`` of each entry or of the leaf's largest entry."""
    actual, expected = _leaves(actual), _leaves(expected)
    assert len(actual) == len(expected), context
    for a, e in zip(actual, expected):
        scale = float(np.max(np.abs(e), initial=0.0))
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale + 1e-30, err_msg=context)


def _histories(kwargs, dtype):
    params = random_params(0, dtype, SHAPES)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours = trajectory(gx.muon(**kwargs), params, grads_seq, move=True)
    theirs = trajectory(optax.contrib.muon(**kwargs), cast_tree(params, jnp.float32),
                        [cast_tree(g, jnp.float32) for g in grads_seq], standard=True, move=True)
    return ours, theirs


@pytest.mark.parametrize("case", CASES)
def test_matches_optax_with_both_states(case):
    ours, theirs = _histories(CASES[case], jnp.float32)
    for step, ((u, p, s), (u_ref, p_ref, s_ref)) in enumerate(zip(ours, theirs)):
        context = f"{case} step {step}"
        _assert_leaves_close(u, u_ref, 2e-5, context)
        muon, adam = (s.inner_states[k].inner_state[0] for k in ("muon", "adam"))
        muon_ref, adam_ref = (s_ref.inner_states[k].inner_state[0] for k in ("muon", "adam"))
        assert muon._fields == muon_ref._fields and adam._fields == adam_ref._fields
        for ours_state, ref_state in ((muon, muon_ref), (adam, adam_ref)):
            assert int(ours_state.count) == int(ref_state.count) == step + 1
            for field in ours_state._fields[1:]:
                _assert_leaves_close(getattr(ours_state, field), getattr(ref_state, field), 1e-5,
                                     f"{context} {type(ours_state).__name__}.{field}")
    _assert_leaves_close(p, p_ref, 1e-6, f"{case} params after the last step")


@pytest.mark.parametrize("case", ["dimension_numbers"])
def test_bfloat16_matches_optax_in_float32(case):
    ours, theirs = _histories(CASES[case], jnp.bfloat16)
    for step, ((u, _, _), (u_ref, _, _)) in enumerate(zip(ours, theirs)):
        assert {x.dtype for x in jax.tree.leaves(u)} == {jnp.dtype(jnp.bfloat16)}
        # As tests/transforms/test_orthogonalize.py explains, a nearly singular matrix's
        # orthogonalisation magnifies bfloat16's roundings: compared in the norm.
        for a, e in zip(_leaves(u), _leaves(u_ref)):
            assert np.linalg.norm(a - e) <= 0.05 * np.linalg.norm(e) + 1e-4, (case, step)


@pytest.mark.parametrize("dimension_numbers, muon_leaves", [
    (None, {"dense/kernel", "blocks/0", "pair/1/inner"}),
    (_optax_dimension_numbers, {"dense/kernel", "blocks/0", "pair/1/inner", "conv", "stack"}),
])
def test_leaves_go_where_optax_sends_them(dimension_numbers, muon_leaves):
    params = random_params(0, shapes=SHAPES)
    state = gx.muon(1e-2, muon_weight_dimension_numbers=dimension_numbers).init(params)
    reference = optax.contrib.muon(1e-2, muon_weight_dimension_numbers=dimension_numbers).init(
        params)

    def held(tree):
        return {path_string(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)}

    for label in ("muon", "adam"):
        mine = held(state.inner_states[label].inner_state[0].mu)
        assert mine == held(reference.inner_states[label].inner_state[0].mu), label
        assert (mine == muon_leaves) if label == "muon" else not (mine & muon_leaves)


def test_inject_hyperparams_is_bitwise_the_plain_alias():
    kwargs = dict(learning_rate=_decaying, beta=0.9, weight_decay=1e-2, adam_weight_decay=1e-2,
                  consistent_rms=0.2, muon_weight_dimension_numbers=_optax_dimension_numbers)
    params = random_params(0, shapes=INJECTED_SHAPES)
    grads_seq = gradient_stream(params, 20, seed=4)
    plain = trajectory(gx.muon(**kwargs), params, grads_seq, move=True, compiler_options=None)
    injected = trajectory(gx.inject_hyperparams(gx.muon)(**kwargs), params, grads_seq, move=True,
                          compiler_options=None)
    for step, ((u, p, s), (u_i, p_i, s_i)) in enumerate(zip(plain, injected)):
        assert_trees_bitwise_equal(u_i, u, f"step {step}")
        assert_trees_bitwise_equal(p_i, p, f"step {step}")
        assert_trees_bitwise_equal(s_i.inner_state, s, f"step {step}")
    assert float(s_i.hyperparams["consistent_rms"]) == np.float32(0.2)


def test_is_a_partition_of_public_chains():
    tx = gx.muon(0.02, weight_decay=1e-2)
    assert tx.name == "muon" and tx.inner.name == "partition"
    branches = tx.inner.hyperparams["transforms"]
    assert [m.name for m in branches["muon"].children] == [
        "scale_by_muon", "scale_by_shape", "add_decayed_weights", "scale_by_learning_rate"]
    assert branches["adam"].name == "adamw"
    assert repr(tx).startswith("muon(learning_rate=0.02, ns_coeffs=(3.4445, -4.775, 2.0315)")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(adam_b1=1.5), ValueError, r"muon: adam_b1 must be in \[0, 1\), got 1.5"),
    (dict(beta=1.0), ValueError, r"muon: beta must be in \[0, 1\), got 1.0"),
    (dict(eps=0.0), ValueError, r"muon: eps must be in \(0, inf\), got 0.0"),
    (dict(ns_coeffs="muon"), ValueError, r"muon: ns_coeffs must be coefficients or a preset"),
    (dict(weight_decay_mask=3), TypeError, r"muon: weight_decay_mask must be"),
    (dict(muon_weight_dimension_numbers={"w": (0, 1)}), TypeError,
     r"muon: muon_weight_dimension_numbers must be"),
])
def test_errors_name_the_alias_and_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        gx.muon(0.1, **kwargs)
