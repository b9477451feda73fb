"""Key-path masks and exclusions for weight decay, and Keras's decoupled weight decay.

* ``add_decayed_weights(exclude=...)`` and pattern masks are checked against
  ``optax.add_decayed_weights`` given the equivalent bool mask tree.
* ``decoupled_weight_decay`` is checked against Keras's rule written in NumPy
  (float32): ``u = g - (x * wd) * lr`` on the leaves that decay, ``u = g``
  elsewhere, with both rates evaluated at the transformation's own count.
* ``chain(gx.adam(lr), decoupled_weight_decay(wd, lr))`` equals optax's
  ``adamw(lr, weight_decay=wd)`` (optax run live), masks included.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    assert_trees_close,
    compare_with_optax,
    gradient_stream,
    is_none,
    random_params,
    run_updates,
)

ALL_PATHS = {"dense/kernel", "dense/bias", "blocks/0", "blocks/2", "pair/0", "pair/1/inner",
             "pair/1/empty", "scalar"}


def path_of(path):
    """A key path as "dense/kernel", written here independently of gradxform."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        else:
            parts.append(str(key.name))
    return "/".join(parts)


def bool_tree(params, decaying):
    """The optax-style mask tree: True on the leaves whose path is in ``decaying``."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path_of(path) in decaying, params)


def decoupled_reference(params, grads_seq, wd, lr, decaying):
    """Keras's ``x -= x * wd * lr`` as an update added to ``g``, in NumPy float32."""
    wd_of = wd if callable(wd) else (lambda count: wd)
    lr_of = lr if callable(lr) else (lambda count: lr)
    outputs = []
    for count, grads in enumerate(grads_seq):
        wd_t = np.float32(wd_of(np.int32(count)))
        lr_t = np.float32(lr_of(np.int32(count)))

        def leaf(path, g, p):
            g32, p32 = np.asarray(g, np.float32), np.asarray(p, np.float32)
            out = g32 - (p32 * wd_t) * lr_t if path_of(path) in decaying else g32
            return out.astype(g.dtype)

        outputs.append(jax.tree_util.tree_map_with_path(leaf, grads, params))
    return outputs


def check_decoupled(tx, decaying, *, wd, lr, dtype=jnp.float32, steps=6, rtol=1e-6):
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, steps, seed=4)
    mine, state = run_updates(tx, params, grads_seq)
    expected = decoupled_reference(params, grads_seq, wd, lr, decaying)
    for step, (u, e) in enumerate(zip(mine, expected)):
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(e)):
            assert a.dtype == b.dtype
        assert_trees_close(u, e, rtol=rtol, atol=1e-7, context=f"step {step}")
    assert int(state.count) == steps


# --- exclude / pattern masks on add_decayed_weights, against optax --------------------

MASK_CASES = [
    pytest.param({"exclude": "(^|/)bias$"}, ALL_PATHS - {"dense/bias"}, id="exclude-anchored"),
    pytest.param({"exclude": ["bias", "pair/1"]}, ALL_PATHS - {"dense/bias", "pair/1/inner",
                                                               "pair/1/empty"}, id="exclude-list"),
    pytest.param({"mask": "kernel|blocks"}, {"dense/kernel", "blocks/0", "blocks/2"},
                 id="mask-patterns"),
    pytest.param({"mask": ["^dense/", "^scalar$"], "exclude": "bias"},
                 {"dense/kernel", "scalar"}, id="mask-patterns+exclude"),
    pytest.param({"mask": {"dense": True, "blocks": False, "pair": True, "scalar": False},
                  "exclude": "empty|/0$"}, {"dense/kernel", "dense/bias", "pair/1/inner"},
                 id="mask-tree+exclude"),
    pytest.param({"mask": lambda p: jax.tree.map(lambda x: x.ndim >= 1, p), "exclude": "dense"},
                 {"blocks/0", "pair/0", "pair/1/inner", "pair/1/empty"},
                 id="mask-callable+exclude"),
    pytest.param({"exclude": []}, ALL_PATHS, id="exclude-empty-list"),
]


@pytest.mark.parametrize("kwargs, decaying", MASK_CASES)
def test_add_decayed_weights_patterns_match_optax_with_bool_mask(kwargs, decaying):
    mask = bool_tree(random_params(), decaying)
    compare_with_optax(gx.add_decayed_weights(0.3, **kwargs),
                       optax.add_decayed_weights(0.3, mask=mask), steps=4)


@pytest.mark.parametrize("kwargs, decaying", MASK_CASES)
def test_decoupled_weight_decay_masks_against_numpy(kwargs, decaying):
    check_decoupled(gx.decoupled_weight_decay(0.05, 0.3, **kwargs), decaying, wd=0.05, lr=0.3)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16], ids=lambda d: d.__name__)
def test_decoupled_weight_decay_low_precision(dtype):
    rtol = 1e-6 if dtype == jnp.float32 else 1e-2  # one rounding of the low-precision result
    check_decoupled(gx.decoupled_weight_decay(0.04, 0.5, exclude="scalar"),
                    ALL_PATHS - {"scalar"}, wd=0.04, lr=0.5, dtype=dtype, rtol=rtol)


def test_decoupled_weight_decay_leaves_decay_by_keras_formula():
    """With zero gradients, one step is exactly Keras's ``x -= x * wd * lr``."""
    params = random_params(2)
    wd, lr = 0.004, 0.25
    tx = gx.decoupled_weight_decay(wd, lr, exclude="(^|/)bias$")
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
    new_params = gx.apply_updates(params, updates)

    def keras(path, x):
        x = np.asarray(x, np.float32)
        if path_of(path) == "dense/bias":
            return x
        return x - x * np.float32(wd) * np.float32(lr)

    expected = jax.tree_util.tree_map_with_path(keras, params)
    assert_trees_close(new_params, expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(new_params["dense"]["bias"], params["dense"]["bias"])


@pytest.mark.parametrize("wd, lr", [
    (lambda c: 0.01 * (1.0 + c.astype(jnp.float32)), 0.2),
    (0.03, lambda c: 0.5 / (1.0 + c.astype(jnp.float32))),
    (lambda c: 0.02 * (c.astype(jnp.float32) % 3.0), lambda c: 0.1 * (2.0 + c.astype(jnp.float32))),
], ids=["scheduled-wd", "scheduled-lr", "both-scheduled"])
def test_decoupled_weight_decay_schedules_use_own_count(wd, lr):
    np_wd = (lambda c: wd(jnp.asarray(c))) if callable(wd) else wd
    np_lr = (lambda c: lr(jnp.asarray(c))) if callable(lr) else lr
    check_decoupled(gx.decoupled_weight_decay(wd, lr, exclude="empty"),
                    ALL_PATHS - {"pair/1/empty"}, wd=np_wd, lr=np_lr, steps=7)


# --- chain(adam, decoupled_weight_decay) == optax.adamw --------------------------------

ADAMW_CASES = [
    pytest.param({}, None, id="no-mask"),
    pytest.param({"exclude": "(^|/)bias$"},
                 lambda p: bool_tree(p, ALL_PATHS - {"dense/bias"}), id="exclude"),
    pytest.param({"mask": "kernel"}, lambda p: bool_tree(p, {"dense/kernel"}), id="mask-pattern"),
    pytest.param({"mask": lambda p: jax.tree.map(lambda x: x.ndim >= 2, p), "exclude": "pair"},
                 lambda p: bool_tree(p, {"dense/kernel", "blocks/0"}), id="callable+exclude"),
]


@pytest.mark.parametrize("kwargs, optax_mask", ADAMW_CASES)
def test_adam_then_decoupled_decay_equals_optax_adamw(kwargs, optax_mask):
    lr, wd = 1e-2, 0.05
    compare_with_optax(
        gx.chain(gx.adam(lr), gx.decoupled_weight_decay(wd, lr, **kwargs)),
        optax.adamw(lr, weight_decay=wd, mask=optax_mask), steps=30, rtol=2e-6, atol=1e-7,
    )


def test_adam_then_decoupled_decay_equals_optax_adamw_with_schedule():
    lr = optax.linear_schedule(3e-2, 1e-3, transition_steps=20)
    compare_with_optax(
        gx.chain(gx.adam(lr), gx.decoupled_weight_decay(0.1, lr)),
        optax.adamw(lr, weight_decay=0.1), steps=25, rtol=2e-6, atol=1e-7,
    )


# --- zero decay, errors -------------------------------------------------------------------


@pytest.mark.parametrize("tx", [
    gx.decoupled_weight_decay(0.0, 0.1, exclude="bias"),
    gx.decoupled_weight_decay(0, 0.1, mask="kernel"),
    gx.add_decayed_weights(0.0, exclude="bias"),
], ids=["decoupled-0.0", "decoupled-int-0", "add-0.0"])
def test_zero_decay_is_a_no_op_even_with_infinite_params(tx):
    params = random_params(1)
    params["dense"]["kernel"] = params["dense"]["kernel"].at[0, 0].set(jnp.inf)
    grads = gradient_stream(params, 1, seed=9)[0]
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    assert jax.tree.structure(updates, is_leaf=is_none) == jax.tree.structure(grads, is_leaf=is_none)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(g))
    assert int(state.count) == 1


@pytest.mark.parametrize("ctor, kwargs, exc, words", [
    (gx.decoupled_weight_decay, {"weight_decay": 0.1, "learning_rate": 0.1, "exclude": "("},
     ValueError, ["decoupled_weight_decay", "exclude", "'('"]),
    (gx.decoupled_weight_decay, {"weight_decay": 0.1, "learning_rate": 0.1, "mask": ["a", "[b"]},
     ValueError, ["decoupled_weight_decay", "mask", "'[b'"]),
    (gx.add_decayed_weights, {"weight_decay": 0.1, "exclude": 3},
     TypeError, ["add_decayed_weights", "exclude", "3"]),
    (gx.decoupled_weight_decay, {"weight_decay": -0.1, "learning_rate": 0.1},
     ValueError, ["decoupled_weight_decay", "weight_decay", "-0.1"]),
    (gx.decoupled_weight_decay, {"weight_decay": 0.1, "learning_rate": -1.0},
     ValueError, ["decoupled_weight_decay", "learning_rate", "-1.0"]),
    (gx.decoupled_weight_decay, {"weight_decay": 0.1, "learning_rate": 0.1, "mask": {}},
     ValueError, ["decoupled_weight_decay", "mask"]),
], ids=["bad-exclude", "bad-mask-pattern", "non-string-exclude", "negative-wd", "negative-lr",
        "empty-mask"])
def test_construction_errors(ctor, kwargs, exc, words):
    with pytest.raises(exc) as info:
        ctor(**kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("tx", [gx.decoupled_weight_decay(0.1, 0.1, exclude="bias"),
                                gx.add_decayed_weights(0.1, mask="kernel")],
                         ids=["decoupled", "add"])
def test_params_none_raises(tx):
    params = random_params()
    with pytest.raises(ValueError, match="update needs params, got params=None"):
        tx.update(params, tx.init(params), None)


def test_mask_tree_not_a_prefix_raises_naming_owner():
    params = random_params()
    tx = gx.decoupled_weight_decay(0.1, 0.1, mask={"dense": True})
    with pytest.raises(ValueError, match="decoupled_weight_decay: the mask's tree structure"):
        tx.update(params, tx.init(params), params)


def test_repr_shows_exclude():
    tx = gx.decoupled_weight_decay(0.004, 1e-3, exclude=["bias", "norm"])
    assert repr(tx) == ("decoupled_weight_decay(weight_decay=0.004, learning_rate=0.001, "
                        "mask=None, exclude=['bias', 'norm'])")
