"""``tree_global_norm(tree, ord, squared)`` against ``optax.tree.norm`` run live and float64.

optax accepts ``ord`` None / 2, 1 and inf (also ``"inf"``, ``"infinity"``),
and ``squared`` squares the result (for ord 2, the sum of squares). Both are
checked on nested trees with ``None`` and zero-size leaves, in float32,
bfloat16 (where optax rounds each leaf's sum to bfloat16 and gradxform keeps
float32, so both are held to the float64 value) and complex64.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import random_params

ORDS = [None, 1, 2, np.inf, "inf", "infinity", 1.0, 2.0]


def complex_tree(seed):
    re, im = random_params(seed), random_params(seed + 100)
    return jax.tree.map(jax.lax.complex, re, im)


def mixed_tree(seed):
    tree = random_params(seed)
    tree["dense"]["bias"] = tree["dense"]["bias"].astype(jnp.bfloat16)
    return tree


TREES = {
    "f32": lambda: random_params(0),
    "bf16": lambda: random_params(1, jnp.bfloat16),
    "mixed": lambda: mixed_tree(2),
    "complex64": lambda: complex_tree(3),
}


def float64_norm(tree, ord, squared):
    entries = np.concatenate([np.abs(np.asarray(x, np.complex128)).ravel()
                              for x in jax.tree.leaves(tree)])
    if ord in (None, 2, 2.0):
        value = np.sqrt(np.sum(entries ** 2))
    elif ord in (1, 1.0):
        value = np.sum(entries)
    else:
        value = np.max(entries, initial=0.0)
    return value ** 2 if squared else value


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("ord", ORDS, ids=repr)
@pytest.mark.parametrize("kind", sorted(TREES))
def test_matches_optax_tree_norm_and_float64(kind, ord, squared):
    tree = TREES[kind]()
    assert any(x is None for x in jax.tree.leaves(tree, is_leaf=lambda x: x is None))
    with jax.numpy_dtype_promotion("standard"):
        ref = optax.tree.norm(tree, ord=ord, squared=squared)
    exact = float64_norm(tree, ord, squared)
    for norm in (gx.tree_global_norm, jax.jit(gx.tree_global_norm, static_argnames=("ord", "squared"))):
        got = norm(tree, ord=ord, squared=squared)
        chex.assert_shape(got, ())
        assert got.dtype == jnp.float32, got.dtype
        np.testing.assert_allclose(float(got), exact, rtol=2e-6)
        # optax rounds each bfloat16 leaf's sum to bfloat16 (8 bits): up to about 0.4% apart.
        rounded = kind in ("bf16", "mixed")
        np.testing.assert_allclose(float(got), float(ref), rtol=2e-2 if rounded else 2e-6)


def test_inf_norm_sees_the_largest_entry_of_any_sign_and_leaf():
    tree = {"a": jnp.array([1.0, -7.5]), "b": [None, jnp.array([[3.0 + 4.0j]], jnp.complex64)],
            "c": jnp.zeros((0,))}
    for ord in (np.inf, "inf"):
        np.testing.assert_array_equal(gx.tree_global_norm(tree, ord=ord), np.float32(7.5))
    with jax.numpy_dtype_promotion("standard"):
        np.testing.assert_array_equal(gx.tree_global_norm(tree, ord=np.inf),
                                      optax.tree.norm(tree, ord=np.inf))


@pytest.mark.parametrize("ord", [1, 2, np.inf])
def test_a_tree_without_entries_has_norm_zero(ord):
    for tree in ({}, {"a": None}, {"a": jnp.zeros((0, 3))}):
        for squared in (False, True):
            got = gx.tree_global_norm(tree, ord=ord, squared=squared)
            np.testing.assert_array_equal(got, np.float32(0.0))
            assert got.dtype == jnp.float32


def test_squared_two_norm_is_the_sum_of_squares_even_when_it_overflows():
    tree = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([12.0])}
    np.testing.assert_array_equal(gx.tree_global_norm(tree, squared=True), np.float32(169.0))
    big = {"a": jnp.full(4, 3e30, jnp.float32)}
    np.testing.assert_allclose(float(gx.tree_global_norm(big)), 6e30, rtol=1e-6)  # rescued
    assert np.isposinf(gx.tree_global_norm(big, squared=True))  # 3.6e61 is not a float32


@pytest.mark.allows_nan
@pytest.mark.parametrize("ord", [1, 2, np.inf])
def test_nan_and_inf_entries(ord):
    with_nan = {"a": jnp.array([1.0, jnp.nan]), "b": jnp.array([jnp.inf])}
    with_inf = {"a": jnp.array([1.0, -jnp.inf])}
    assert np.isnan(gx.tree_global_norm(with_nan, ord=ord))
    assert np.isposinf(gx.tree_global_norm(with_inf, ord=ord))


@pytest.mark.parametrize("ord", [1, np.inf])
def test_gradient_matches_optax(ord):
    tree = {"a": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([[-3.0]])}
    mine = jax.grad(lambda t: gx.tree_global_norm(t, ord=ord, squared=True))(tree)
    with jax.numpy_dtype_promotion("standard"):
        ref = jax.grad(lambda t: optax.tree.norm(t, ord=ord, squared=True))(tree)
    chex.assert_trees_all_close(mine, ref, rtol=1e-6)


@pytest.mark.parametrize("value, exc", [
    (3, ValueError), (0, ValueError), (-1, ValueError), (2.5, ValueError),
    (float("nan"), ValueError), (-np.inf, ValueError), ("fro", ValueError), ("2", ValueError),
    (True, TypeError), ([2], TypeError), (jnp.array(2), TypeError), (2 + 0j, TypeError),
])
def test_bad_ord_raises_naming_it(value, exc):
    with pytest.raises(exc) as info:
        gx.tree_global_norm({"a": jnp.ones(2)}, ord=value)
    assert type(info.value) is exc
    assert "tree_global_norm: ord must be 1, 2 or inf" in str(info.value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0])
def test_bad_squared_raises_naming_it(value):
    with pytest.raises(TypeError, match=f"tree_global_norm: squared must be a bool, got {value!r}"):
        gx.tree_global_norm({"a": jnp.ones(2)}, squared=value)
