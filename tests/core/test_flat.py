"""Flat parameters: `gx.flat_tree` and `gx.FlatTree`.

* Round trips: ``flat_tree(t).unravel()`` is ``t`` bit for bit (dtypes, shapes,
  ``None`` entries, 0-d and zero-size leaves, nested containers), over
  hypothesis trees (``tests/strategies.py``, int32 leaves added) and a tree of
  many equal-shape leaves interleaved with others; one 1-D buffer per dtype,
  equal shapes side by side; ``keep`` leaves stay arrays of their own.
  Eager ``flat_tree``, ``ravel`` and ``unravel`` compile nothing.
* On hypothesis trees (float16 and complex64 buffers, ``None`` entries, empty
  containers), a chain with per-leaf clipping, a rank mask and a name exclusion
  gives the per-leaf updates.
* The swept entries of ``tests/factories.py`` (``sweep``: every constructor)
  give the same updates and params (and, where the layouts agree, the same
  state) on a `FlatTree` as per leaf, over
  three jitted steps on a tree whose masks and name patterns select parts of
  its buffers, some leaves kept; the entries whose results depend on which
  leaves share a buffer also with every leaf in a buffer.
  ``jax.eval_shape(tx.init, flat)`` matches ``init``.
* A whole train step: ``jax.grad`` through ``flat.unravel()`` is a `FlatTree`
  holding the per-leaf gradient, and training with it equals training per leaf.
  Compiled with `flat_compiler_options` (the legacy CPU emitter) it trains as
  the default compile does; the options are empty off CPU and leave out what
  the installed jaxlib rejects.
* Partly selected buffers: ``masked(clip_by_global_norm)`` takes the norm of the
  selected leaves only, ``freeze`` keeps its leaves bit for bit, ``partition``
  mixes labels inside one buffer. ``clip_by_norm`` clips each logical leaf,
  as optax's global-norm clip applied to that leaf alone.
* `finalize_params`, `tree_get`, `state_shardings`, `to_optax` and
  ``optax.apply_updates`` accept FlatTrees.
* Errors: a non-callable ``keep``, ``ravel`` of another structure or of a
  wrong leaf, a mask of traced bools, a wrong gradient buffer. The factories
  that need each leaf's shape (``NEEDS_LEAF_SHAPES``: factored second moments,
  SM3, Muon's orthogonalisation, layer-wise DoG) are left out above and refuse a FlatTree, as params and as updates,
  with a `TypeError` naming them and pointing to the per-leaf tree.
* Regressions: masks on a FlatTree of a tree with ``None`` entries, and
  ``clip_by_norm`` checking a buffer's length.
* Structure: a jitted ``adam`` update on a FlatTree compiles to the same HLO
  for 50 leaves as for 500, while the per-leaf program grows with the leaves.

Programs compile with ``FAST_COMPILE`` and one LLVM module each
(``xla_cpu_parallel_codegen_split_count=1``): on a two-core machine that halves
the compile time of the ~150 small programs here, and changes no result.
"""

import collections
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import gradxform as gx
from gradxform.core import compile_options
from gradxform.core.paths import path_string
from tests.factories import FACTORIES, NAMES, sweep
from tests.helpers import FAST_COMPILE, assert_trees_bitwise_equal, is_none, jit_counting_traces
from tests.strategies import DTYPES, SHAPES, Case, LeafSpec, build, cases, tree_specs


COMPILE = {**FAST_COMPILE, "xla_cpu_parallel_codegen_split_count": 1}


def _jit(fn, **kwargs):
    return jax.jit(fn, compiler_options=COMPILE, **kwargs)


def _is_flat(x):
    return isinstance(x, gx.FlatTree)


def _leaves_with_paths(tree):
    """``(key path, leaf)`` for every array leaf, the path written as `flat_tree` writes it."""
    return [(path_string(path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


def _buffers(flat):
    """``(spec, buffer)`` pairs: the layout's description of each buffer, and the buffer."""
    return list(zip(flat.layout.buffers, flat.buffers))


def _member_paths(flat, spec):
    return [flat.layout.slots[i].path for i in spec.members]


# --- round trips ----------------------------------------------------------------------------


def _check_round_trip(params, keep=None):
    flat = gx.flat_tree(params, keep=keep)
    assert_trees_bitwise_equal(flat.unravel(), params, "unravel")
    assert_trees_bitwise_equal(flat.ravel(flat.unravel()), flat, "ravel(unravel())")
    assert_trees_bitwise_equal(flat.ravel(params), flat, "ravel(params)")

    logical = flat.logical
    assert jax.tree.structure(logical, is_leaf=is_none) == jax.tree.structure(params, is_leaf=is_none)
    for struct, leaf in zip(jax.tree.leaves(logical), jax.tree.leaves(params)):
        assert isinstance(struct, jax.ShapeDtypeStruct)
        assert (struct.shape, struct.dtype) == (leaf.shape, leaf.dtype)

    leaves = _leaves_with_paths(params)
    kept_paths = {path for path, leaf in leaves if keep is not None and keep(path, leaf)}
    in_buffers = [(path, leaf) for path, leaf in leaves if path not in kept_paths]
    buffers = [(spec, b) for spec, b in _buffers(flat) if not spec.kept]
    kept = [(spec, b) for spec, b in _buffers(flat) if spec.kept]

    # One 1-D buffer per dtype, holding exactly that dtype's leaves.
    dtypes = [b.dtype for _, b in buffers]
    assert len(dtypes) == len(set(dtypes))
    assert set(dtypes) == {leaf.dtype for _, leaf in in_buffers}
    for spec, buffer in buffers:
        assert buffer.ndim == 1 and buffer.dtype == spec.dtype
        mine = [leaf for _, leaf in in_buffers if leaf.dtype == buffer.dtype]
        assert buffer.size == sum(leaf.size for leaf in mine)
        # Equal shapes side by side: one run per distinct shape.
        shapes = [flat.layout.slots[i].shape for i in spec.members]
        runs = [shape for index, shape in enumerate(shapes) if index == 0 or shapes[index - 1] != shape]
        assert len(runs) == len(set(shapes)), shapes
    assert sum(len(spec.members) for spec, _ in buffers) == len(in_buffers)

    # Kept leaves: arrays of their own, as they were.
    by_path = dict(leaves)
    assert sorted(spec.name for spec, _ in kept) == sorted(kept_paths)
    for spec, buffer in kept:
        assert_trees_bitwise_equal(buffer, by_path[spec.name], spec.name)
    return flat


ROUND_TRIP_DTYPES = [*DTYPES, jnp.int32]


def _rich_spec(dtypes):
    """Every dtype, shape and container at once: the CI profile's few draws are mostly small."""
    leaves = [LeafSpec(SHAPES[(2 * i + j) % len(SHAPES)], dtype)
              for i, dtype in enumerate(dtypes) for j in (0, 3)]
    return {
        "kernel": leaves[0::3],
        "emb": (leaves[-1], None, {"bias": leaves[1::3]}),
        "w": [{"blocks": leaves[2::3]}, [], None, ()],
        "scalar": leaves[0],
    }


@example(spec=_rich_spec(ROUND_TRIP_DTYPES), seed=0, keep_emb=True)
@given(spec=tree_specs(ROUND_TRIP_DTYPES, max_leaves=12), seed=st.integers(0, 2**16),
       keep_emb=st.booleans())
def test_round_trip_is_exact_on_random_trees(spec, seed, keep_emb):
    keep = (lambda path, leaf: "emb" in path) if keep_emb else None
    _check_round_trip(build(spec, seed), keep)


def _interleaved(count=20):
    """Many equal-shape leaves interleaved with other shapes and dtypes, in nested containers."""
    rng = np.random.default_rng(0)
    shapes = [(3,), (2, 3), (), (0,), (1, 3)]
    dtypes = [jnp.float32, jnp.float32, jnp.bfloat16, jnp.float16, jnp.complex64, jnp.int32]
    layers = []
    for index in range(count):
        shape, dtype = shapes[index % len(shapes)], dtypes[index % len(dtypes)]
        value = rng.standard_normal(shape) * 3
        if dtype == jnp.complex64:
            value = value + 1j * rng.standard_normal(shape)
        layers.append({"kernel" if len(shape) == 2 else "bias": jnp.asarray(value, dtype)})
    return {
        "layers": layers,
        "embedding": jnp.asarray(rng.standard_normal((5, 2)), jnp.float32),
        "nested": ({"norm": jnp.ones(3, jnp.float16), "none": None}, [None, jnp.zeros((0, 2))]),
        "scalar": jnp.float32(-0.0),
    }


def test_round_trip_of_many_interleaved_leaves():
    params = _interleaved()
    flat = _check_round_trip(params)
    assert len(flat.buffers) == 5  # float32, bfloat16, float16, complex64, int32
    assert sum(len(spec.members) for spec in flat.layout.buffers) == len(jax.tree.leaves(params))


def test_kept_leaves_stay_arrays_of_their_own():
    params = _interleaved()
    flat = _check_round_trip(params, keep=lambda path, leaf: "embed" in path)
    kept = [(spec, buffer) for spec, buffer in _buffers(flat) if spec.kept]
    assert [spec.name for spec, _ in kept] == ["embedding"]
    assert kept[0][1].shape == (5, 2)
    assert all("embedding" not in _member_paths(flat, spec) for spec in flat.layout.buffers if not spec.kept)


def test_keep_sees_each_leaf_with_its_key_path():
    seen = []
    params = {"a": [jnp.ones(2), None], "b": {"c": jnp.zeros((1, 2), jnp.bfloat16)}}
    gx.flat_tree(params, keep=lambda path, leaf: seen.append((path, leaf.shape, leaf.dtype)) or False)
    assert sorted(seen) == [("a/0", (2,), jnp.float32), ("b/c", (1, 2), jnp.bfloat16)]


def test_eager_flat_tree_ravel_and_unravel_compile_nothing():
    # A split or concatenation with one operand per leaf would be compiled for
    # the layout (over a minute at 5,000 leaves); eager calls copy on the host.
    params = _interleaved(300)
    compiles = []

    def count(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        flat = gx.flat_tree(params)
        again = flat.ravel(params)
        tree = flat.unravel()
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert compiles == []
    assert_trees_bitwise_equal(again, flat)
    assert_trees_bitwise_equal(tree, params)
    for leaf, original in zip(jax.tree.leaves(tree), jax.tree.leaves(params)):
        assert leaf.devices() == original.devices()


def test_eager_round_trip_of_leaves_with_a_rank_specific_sharding():
    # A one-device NamedSharding is not "sharded", so such leaves go into the
    # buffer; the buffer and the leaves cut from it must not inherit its rank.
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",))
    spec = jax.sharding.PartitionSpec("x", None)
    params = {"w": jax.device_put(jnp.ones((2, 3)), jax.sharding.NamedSharding(mesh, spec)),
              "b": jax.device_put(jnp.arange(3.0)[None], jax.sharding.NamedSharding(mesh, spec))}
    flat = gx.flat_tree(params)
    assert len(flat.buffers) == 1
    tree = flat.unravel()
    assert_trees_bitwise_equal(tree, params)
    assert all(leaf.devices() == {jax.devices()[0]} for leaf in jax.tree.leaves(tree))


def test_round_trip_under_jit_and_one_layout_per_structure():
    params = _interleaved(10)
    flat = gx.flat_tree(params)
    assert_trees_bitwise_equal(_jit(lambda f: f.unravel())(flat), params)
    assert_trees_bitwise_equal(_jit(flat.ravel)(params), flat)
    # The layout is the aux data, compared by value: equal trees share a jit cache entry.
    other = gx.flat_tree(jax.tree.map(lambda x: x + x, params))
    assert other.layout == flat.layout and hash(other.layout) == hash(flat.layout)
    unravel, traces = jit_counting_traces(lambda f: f.unravel(), COMPILE)
    assert_trees_bitwise_equal(unravel(other), jax.tree.map(lambda x: x + x, params))
    unravel(flat)
    assert len(traces) == 1


def test_trees_without_buffers():
    for params in ({}, {"a": None}, [None, ()]):
        flat = gx.flat_tree(params)
        assert flat.buffers == ()
        assert flat.unravel() == params
    flat = gx.flat_tree(jnp.arange(3.0))  # a bare leaf
    assert_trees_bitwise_equal(flat.unravel(), jnp.arange(3.0))


# --- every factory: per leaf and flat agree ---------------------------------------------------


def _mixed(seed, scale=1.0):
    """Kernels and biases, equal shapes in several places, a bfloat16 pair, a zero-size leaf.

    The names make the factories' masks and patterns ("kernel", "bias", "^pair",
    "blocks", "scalar", prefix and rank masks) select parts of each buffer.
    """
    rng = np.random.default_rng(seed)

    def leaf(*shape, dtype=jnp.float32):
        return jnp.asarray(scale * rng.standard_normal(shape), dtype)

    return {
        "dense": {"kernel": leaf(4, 3), "bias": leaf(3)},
        "blocks": [{"kernel": leaf(4, 3), "norm": leaf(3)}, {"kernel": leaf(4, 3), "bias": leaf(3)}],
        "embedding": leaf(6, 2),
        "pair": (leaf(3), {"empty": leaf(0)}),
        "scalar": leaf(),
        "half": {"kernel": leaf(2, 3, dtype=jnp.bfloat16), "bias": leaf(3, dtype=jnp.bfloat16)},
    }


# Clipped and unclipped leaves (0.3), everything clipped (30), zeros (the zero paths).
STEP_SCALES = (0.3, 30.0, 0.0)
# A kept kernel of the buffered kernels' shape; the bfloat16 pair stays in a buffer.
KEPT = ("blocks/1/kernel", "embedding")
KEEP = {"kept": lambda path, leaf: path in KEPT, "buffers": None}
# Every factory runs on the "kept" layout: multi-leaf buffers of two dtypes that
# masks split, and kept leaves. These, whose results depend on which leaves share
# a buffer (masks, labels, patterns, per-leaf and global norms), also run with
# every leaf in a buffer.
ALSO_ALL_BUFFERED = [
    "add_decayed_weights_prefix_mask", "clip_by_global_norm", "clip_by_norm",
    "decoupled_weight_decay", "freeze", "masked_nested", "masked_patterns", "partition",
    "partition_by_patterns",
]
# These reduce each leaf over its own axes (factored second moments, SM3's per-axis
# accumulators) and need the leaves' shapes, which a flat buffer does not keep: they
# refuse a FlatTree with a TypeError naming them and pointing to the per-leaf tree
# (test_transforms_that_need_leaf_shapes_refuse_a_flat_tree).
NEEDS_LEAF_SHAPES = {
    "adafactor", "adafactor_everything", "scale_by_factored_rms", "scale_by_factored_rms_factoring",
    "scale_by_factored_rms_torch", "keras_adafactor", "torch_adafactor_everything",
    "scale_by_sm3", "scale_by_sm3_decaying", "sm3",
    # Muon orthogonalises each leaf as a matrix (its 2-D shape, or its dimension numbers' axes).
    "scale_by_muon", "scale_by_muon_options", "muon", "muon_everything",
    "scale_by_muon_torch_form", "scale_by_muon_keras_form", "keras_muon", "keras_muon_everything",
    "torch_muon",
    # Layer-wise DoG keeps a step size (two scalars) per leaf.
    "scale_by_distance_over_gradients", "scale_by_distance_over_gradients_options",
}
# Muon's entries are masked or partitioned to the matrices, which compare the params with the
# updates first: their update is given the FlatTree params, as a flat train step would.
# Their gradient accumulation holds per-leaf sums, which a flat update does not match.
ACCUMULATED = {"keras_muon_everything"}
# Keras's Adafactor decays the weights first (weight_decay_first), which meets the params first.
GIVEN_FLAT_PARAMS = {"scale_by_muon", "scale_by_muon_options", "muon", "muon_everything",
                     "scale_by_muon_torch_form", "scale_by_muon_keras_form", "keras_muon",
                     "keras_muon_everything", "torch_muon", "keras_adafactor"}
CASES = [(name, "kept") for name in sweep(set(NAMES) - NEEDS_LEAF_SHAPES)] + [
    (name, "buffers") for name in ALSO_ALL_BUFFERED]
# Their inner states cover a partly selected buffer whole (per leaf: the selected leaves only).
STATE_LAYOUT_DIFFERS = {"masked_nested", "masked_patterns", "partition", "partition_by_patterns"}
_TOLERANCE = {
    jnp.dtype(jnp.float32): 1e-5, jnp.dtype(jnp.complex64): 1e-5,
    jnp.dtype(jnp.float16): 4e-3, jnp.dtype(jnp.bfloat16): 2e-2,
}


def _assert_close(actual, expected, what):
    """Leaf by leaf, to a few roundings of the leaf's dtype (reductions may reassociate)."""
    chex.assert_trees_all_equal_structs(actual, expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert (a.shape, a.dtype) == (e.shape, e.dtype), what
        tolerance = _TOLERANCE.get(jnp.dtype(e.dtype), 0.0)  # counters: exactly equal
        wide = np.complex128 if jnp.iscomplexobj(e) else np.float64
        a, e = np.asarray(a).astype(wide), np.asarray(e).astype(wide)
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        np.testing.assert_allclose(a, e, rtol=tolerance, atol=tolerance * scale + 1e-30, err_msg=what)


def _unravel_all(tree):
    """``tree`` with every FlatTree in it (no buffer a MaskedNode) replaced by its logical tree."""
    return jax.tree.map(
        lambda x: x.unravel() if _is_flat(x) and all(jax.tree.leaves(b) for b in x.buffers) else x,
        tree, is_leaf=_is_flat,
    )


def _run(tx, params, grads_seq, state=None):
    """Jitted train steps; the updates of each step and the final params and state."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state, updates

    step = _jit(step)
    state = tx.init(params) if state is None else state
    all_updates = []
    for grads in grads_seq:
        params, state, updates = step(params, state, grads)
        all_updates.append(updates)
    return params, state, all_updates


def _gradients():
    return [_mixed(1 + step, scale) for step, scale in enumerate(STEP_SCALES)]


_REFERENCE = {}


def _per_leaf_run(name):
    """Computed once per factory, for both layouts."""
    if name not in _REFERENCE:
        _REFERENCE[name] = _run(FACTORIES[name](), _mixed(0), _gradients())
    return _REFERENCE[name]


def _checked_init(tx, flat):
    """``tx.init(flat)``, after checking it against ``eval_shape``: arrays, strongly typed."""
    state = tx.init(flat)
    abstract = jax.eval_shape(tx.init, flat)
    chex.assert_trees_all_equal_structs(abstract, state)
    chex.assert_trees_all_equal_shapes_and_dtypes(abstract, state)
    for leaf in jax.tree.leaves(state):
        assert isinstance(leaf, jax.Array) and not leaf.weak_type, leaf
    return state


@pytest.mark.parametrize("name, layout", CASES, ids=[f"{n}-{layout}" for n, layout in CASES])
def test_every_factory_on_a_flat_tree_matches_the_per_leaf_run(name, layout):
    want_params, want_state, want_updates = _per_leaf_run(name)
    tx = FACTORIES[name]()
    flat = gx.flat_tree(_mixed(0), keep=KEEP[layout])
    assert sum(spec.kept for spec in flat.layout.buffers) == (len(KEPT) if KEEP[layout] else 0)
    got_params, got_state, got_updates = _run(
        tx, flat, [flat.ravel(g) for g in _gradients()], _checked_init(tx, flat)
    )
    assert _is_flat(got_params) and got_params.layout == flat.layout
    for step, (got, want) in enumerate(zip(got_updates, want_updates)):
        _assert_close(got.unravel(), want, f"{name}, {layout}: updates at step {step}")
    _assert_close(got_params.unravel(), want_params, f"{name}, {layout}: params")
    logical_state = _unravel_all(got_state)
    if name in STATE_LAYOUT_DIFFERS:
        assert jax.tree.structure(logical_state) != jax.tree.structure(want_state)
    else:
        _assert_close(logical_state, want_state, f"{name}, {layout}: state")


def _random_tree_transform():
    """Per-leaf clipping, moments, a rank mask and a name exclusion: no mask splits on ``None``."""
    return gx.chain(
        gx.clip_by_norm(1.0), gx.scale_by_adam(),
        gx.add_decayed_weights(1e-2, mask=lambda tree: jax.tree.map(lambda x: x.ndim >= 2, tree),
                               exclude="bias"),
        gx.scale(-0.1),
    )


@example(case=Case(_rich_spec(DTYPES), 0, (1.0, 30.0, 0.0)))
@given(case=cases(DTYPES))
def test_flat_updates_match_per_leaf_on_random_trees(case):
    """float16 and complex64 buffers, ``None`` entries, empty containers, 0-d and empty leaves."""
    params, grads = case.params(), case.gradients()
    flat = gx.flat_tree(params, keep=lambda path, leaf: "emb" in path)
    tx = _random_tree_transform()
    _, _, want = _run(tx, params, grads)
    _, _, got = _run(tx, flat, [flat.ravel(g) for g in grads], _checked_init(tx, flat))
    for step, (g, w) in enumerate(zip(got, want)):
        _assert_close(g.unravel(), w, f"updates at step {step}")


def test_the_mixed_tree_splits_buffers_between_masks():
    """The equivalence above would prove little if every mask took whole buffers."""
    flat = gx.flat_tree(_mixed(0), keep=KEEP["kept"])
    buffers = {spec.name: _member_paths(flat, spec) for spec in flat.layout.buffers}
    assert sorted(buffers) == sorted(["<float32>", "<bfloat16>", *KEPT])
    for word in ("kernel", "bias", "norm", "blocks", "pair", "scalar", "dense"):
        assert any(word in p for p in buffers["<float32>"]), word
        assert not all(word in p for p in buffers["<float32>"]), word
    assert buffers["<bfloat16>"] == ["half/bias", "half/kernel"]
    float32 = next(spec for spec in flat.layout.buffers if spec.name == "<float32>")
    shapes = [flat.layout.slots[i].shape for i in float32.members]
    assert shapes.count((3,)) == 4 and shapes.count((4, 3)) == 2


# --- the whole train step ----------------------------------------------------------------------


def _model_params(seed=0):
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.standard_normal(shape) / np.sqrt(shape[0]), jnp.float32)
    return {
        "embedding": normal(8, 4),
        "layers": [{"kernel": normal(4, 4), "bias": jnp.zeros(4), "norm": jnp.ones(4)} for _ in range(3)],
        "head": {"kernel": normal(4, 1), "bias": jnp.zeros(1)},
    }


def _loss(params, tokens, targets):
    x = params["embedding"][tokens]
    for layer in params["layers"]:
        x = jnp.tanh(x @ layer["kernel"] + layer["bias"]) * layer["norm"]
    prediction = x @ params["head"]["kernel"] + params["head"]["bias"]
    return jnp.mean((prediction - targets) ** 2)


def _data(seed):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.integers(0, 8, 16)), jnp.asarray(rng.standard_normal((16, 1)), jnp.float32)


@pytest.mark.parametrize("keep", [None, lambda path, leaf: "embedding" in path], ids=["buffers", "kept"])
def test_gradient_through_unravel_is_a_flat_tree_of_the_per_leaf_gradient(keep):
    params = _model_params()
    flat = gx.flat_tree(params, keep=keep)
    tokens, targets = _data(1)
    flat_grad = _jit(jax.grad(lambda f: _loss(f.unravel(), tokens, targets)))(flat)
    assert _is_flat(flat_grad) and flat_grad.layout == flat.layout
    want = _jit(jax.grad(_loss))(params, tokens, targets)
    chex.assert_trees_all_close(flat_grad.unravel(), want, rtol=1e-6, atol=1e-7)

    tx = gx.chain(gx.clip_by_global_norm(0.5), gx.adamw(1e-2, weight_decay=1e-2, mask=["kernel"]))

    def flat_step(flat, state, tokens, targets):
        loss, grads = jax.value_and_grad(lambda f: _loss(f.unravel(), tokens, targets))(flat)
        updates, state = tx.update(grads, state, flat)
        return gx.apply_updates(flat, updates), state, loss

    def step(params, state, tokens, targets):
        loss, grads = jax.value_and_grad(_loss)(params, tokens, targets)
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state, loss

    flat_step = _jit(flat_step)
    step = _jit(step)
    flat_state, state = tx.init(flat), tx.init(params)
    for seed in range(2, 5):
        batch = _data(seed)
        flat, flat_state, flat_loss = flat_step(flat, flat_state, *batch)
        params, state, loss = step(params, state, *batch)
        np.testing.assert_allclose(flat_loss, loss, rtol=1e-6)
    chex.assert_trees_all_close(flat.unravel(), params, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(_unravel_all(flat_state), state, rtol=1e-5, atol=1e-7)


# --- compiler options for a step that unravels --------------------------------------------------


def test_flat_compiler_options_pick_the_legacy_cpu_emitter_and_nothing_elsewhere():
    assert gx.flat_compiler_options("cpu") == {"xla_cpu_use_fusion_emitters": False}
    assert gx.flat_compiler_options() == gx.flat_compiler_options(jax.default_backend())
    for backend in ("gpu", "cuda", "rocm", "tpu"):
        assert gx.flat_compiler_options(backend) == {}


def test_flat_compiler_options_leave_out_an_option_this_jaxlib_rejects(monkeypatch):
    monkeypatch.setattr(compile_options, "_CPU_FLAT_OPTIONS", {"xla_cpu_no_such_option": True})
    assert gx.flat_compiler_options("cpu") == {}


@pytest.mark.parametrize("backend", [0, ["cpu"]])
def test_flat_compiler_options_of_a_backend_that_is_not_a_name_is_a_type_error(backend):
    with pytest.raises(TypeError, match=r"flat_compiler_options: backend .*" + re.escape(repr(backend))):
        gx.flat_compiler_options(backend)


def test_a_train_step_compiled_with_flat_compiler_options_trains_as_the_default_compile():
    tx = gx.chain(gx.clip_by_global_norm(0.5), gx.adamw(1e-2, weight_decay=1e-2, mask=["kernel"]))

    def step(flat, state, tokens, targets):
        grads = jax.grad(lambda f: _loss(f.unravel(), tokens, targets))(flat)
        updates, state = tx.update(grads, state, flat)
        return gx.apply_updates(flat, updates), state

    tuned = jax.jit(step, compiler_options=gx.flat_compiler_options())
    default = jax.jit(step)
    flat = gx.flat_tree(_model_params())
    runs = {"tuned": (flat, tx.init(flat)), "default": (flat, tx.init(flat))}
    for seed in range(2, 5):
        batch = _data(seed)
        runs = {name: fn(*runs[name], *batch) for name, fn in (("tuned", tuned), ("default", default))}
    chex.assert_trees_all_close(runs["tuned"], runs["default"], rtol=1e-6, atol=1e-7)


# --- partly selected buffers -------------------------------------------------------------------


def _vectors(seed=0, scale=1.0):
    """Kernels and biases of one dtype: one buffer, which masks by name split."""
    rng = np.random.default_rng(seed)
    leaf = lambda *shape: jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)
    return {"a": {"kernel": leaf(3), "bias": leaf(3)}, "b": {"kernel": leaf(3), "bias": leaf(3)},
            "c": {"kernel": leaf(2, 3), "bias": leaf(2)}}


def _kernels(tree):
    return [leaf for path, leaf in _leaves_with_paths(tree) if "kernel" in path]


def _biases(tree):
    return [leaf for path, leaf in _leaves_with_paths(tree) if "bias" in path]


def test_masked_global_norm_clip_takes_the_norm_of_the_selected_leaves_only():
    params, grads = _vectors(0), _vectors(1, scale=4.0)
    flat = gx.flat_tree(params)
    assert len(flat.buffers) == 1
    tx = gx.masked(gx.clip_by_global_norm(1.0), ["kernel"])
    flat_updates, _ = _jit(tx.update)(flat.ravel(grads), tx.init(flat), flat)
    updates, _ = _jit(tx.update)(grads, tx.init(params), params)
    chex.assert_trees_all_close(flat_updates.unravel(), updates, rtol=1e-6, atol=1e-7)

    kernel_norm = np.sqrt(sum(np.sum(np.square(np.asarray(k, np.float64))) for k in _kernels(grads)))
    whole_norm = float(gx.tree_global_norm(grads))
    assert 1.0 < kernel_norm < whole_norm
    for got, g in zip(_kernels(flat_updates.unravel()), _kernels(grads)):
        np.testing.assert_allclose(got, np.asarray(g, np.float64) / kernel_norm, rtol=1e-6)
    assert_trees_bitwise_equal(_biases(flat_updates.unravel()), _biases(grads))


def test_freeze_leaves_part_of_a_buffer_bit_for_bit_unchanged():
    params = _vectors(0)
    params["a"]["bias"] = params["a"]["bias"].at[0].set(-0.0)  # -0.0 + update must stay -0.0
    flat = gx.flat_tree(params)
    tx = gx.chain(gx.adam(1e-1), gx.freeze(["bias"]))
    trained, _, _ = _run(tx, flat, [flat.ravel(_vectors(seed)) for seed in (1, 2, 3)])
    assert_trees_bitwise_equal(_biases(trained.unravel()), _biases(params))
    for moved, before in zip(_kernels(trained.unravel()), _kernels(params)):
        assert np.all(np.asarray(moved) != np.asarray(before))


def test_partition_mixes_two_labels_inside_one_buffer():
    params = _vectors(0)
    flat = gx.flat_tree(params)
    assert len(flat.buffers) == 1
    tx = gx.partition(
        {"adam": gx.adam(1e-1), "sgd": gx.sgd(1e-1, momentum=0.9)},
        lambda tree: jax.tree.map(lambda x: "adam" if x.ndim >= 2 else "sgd", tree),
    )
    grads = [_vectors(seed) for seed in (1, 2, 3)]
    got_params, _, got_updates = _run(tx, flat, [flat.ravel(g) for g in grads])
    want_params, _, want_updates = _run(tx, params, grads)
    for got, want in zip(got_updates, want_updates):
        chex.assert_trees_all_close(got.unravel(), want, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(got_params.unravel(), want_params, rtol=1e-6, atol=1e-7)
    # Each label's rule on its own leaves: SGD's first step is -lr * g, Adam's about -lr * sign(g).
    first = got_updates[0].unravel()
    np.testing.assert_allclose(first["a"]["kernel"], -0.1 * np.asarray(grads[0]["a"]["kernel"]), rtol=1e-6)
    np.testing.assert_allclose(first["c"]["kernel"], -0.1 * np.sign(grads[0]["c"]["kernel"]), rtol=1e-5)


@pytest.mark.parametrize("tx", [gx.masked(gx.sgd(0.1), ["kernel"]), gx.freeze(["bias"]),
                                gx.partition({"a": gx.sgd(0.1), "b": gx.sgd(0.2)},
                                             lambda t: jax.tree.map(lambda x: "a", t))],
                         ids=["masked", "freeze", "partition"])
def test_masks_on_a_flat_tree_with_none_entries(tx):
    params = {"kernel": jnp.ones(3), "bias": jnp.zeros(3), "frozen": None}
    flat = gx.flat_tree(params)
    updates, _ = tx.update(flat, tx.init(flat), flat)
    want, _ = tx.update(params, tx.init(params), params)
    chex.assert_trees_all_close(updates.unravel(), want)


# --- clip_by_norm: each logical leaf on its own ------------------------------------------------


def test_clip_by_norm_clips_only_the_leaf_with_a_huge_gradient():
    grads = _vectors(1, scale=0.1)
    grads["b"]["kernel"] = grads["b"]["kernel"] * 1e4  # same shape as a/kernel, a/bias, b/bias
    flat = gx.flat_tree(grads)
    tx = gx.clip_by_norm(1.0)
    clipped = _jit(tx.update)(flat.ravel(grads), tx.init(flat))[0].unravel()
    np.testing.assert_allclose(np.linalg.norm(clipped["b"]["kernel"]), 1.0, rtol=1e-6)
    others = [(path, leaf) for path, leaf in _leaves_with_paths(grads) if path != "b/kernel"]
    assert all(np.linalg.norm(leaf) < 1.0 for _, leaf in others)
    # Unclipped leaves: g * 1 / max(|g|, 1) = g * 1 / 1, exactly g.
    clipped_others = [leaf for path, leaf in _leaves_with_paths(clipped) if path != "b/kernel"]
    assert_trees_bitwise_equal(clipped_others, [leaf for _, leaf in others])


def test_clip_by_norm_on_a_flat_tree_is_optax_global_norm_clip_leaf_by_leaf():
    """optax has no per-leaf clip; its global-norm clip of a one-leaf tree is exactly that."""
    flat = gx.flat_tree(_mixed(0), keep=KEEP["kept"])
    tx = gx.clip_by_norm(1.0)
    update = _jit(lambda grads: tx.update(grads, tx.init(grads))[0])
    reference = optax.clip_by_global_norm(1.0)

    @_jit
    def optax_leaf_by_leaf(grads):
        with jax.numpy_dtype_promotion("standard"):
            return jax.tree.map(lambda g: reference.update({"g": g}, reference.init({"g": g}))[0]["g"], grads)

    for seed, scale in ((1, 0.3), (2, 30.0)):
        grads = _mixed(seed, scale)
        got = update(flat.ravel(grads)).unravel()
        want = optax_leaf_by_leaf(grads)
        clipped = 0
        for (path, a), e, g in zip(_leaves_with_paths(got), jax.tree.leaves(want), jax.tree.leaves(grads)):
            tolerance = 1e-2 if a.dtype == jnp.bfloat16 else 1e-6
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                                       rtol=tolerance, atol=1e-7, err_msg=path)
            clipped += bool(np.linalg.norm(np.asarray(g, np.float64)) > 1.0)
        assert 0 < clipped < len(jax.tree.leaves(grads))  # some leaves clipped, some not


def test_clip_by_norm_rescues_an_overflowing_leaf_inside_a_run_of_equal_shapes():
    grads = {"a": jnp.array([3e20, -4e20], jnp.float32), "b": jnp.array([0.3, 0.4], jnp.float32),
             "c": jnp.zeros(2, jnp.float32)}
    flat = gx.flat_tree(grads)
    tx = gx.clip_by_norm(1.0)
    got = _jit(tx.update)(flat.ravel(grads), tx.init(flat))[0].unravel()
    want = _jit(tx.update)(grads, tx.init(grads))[0]
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=0)
    np.testing.assert_allclose(got["a"], [0.6, -0.8], rtol=1e-6)
    assert_trees_bitwise_equal({"b": got["b"], "c": got["c"]}, {"b": grads["b"], "c": grads["c"]})


def test_clip_by_norm_on_a_flat_tree_pays_the_overflow_pass_only_when_needed():
    """A ``lax.cond`` per leaf, vmapped over a run of equal shapes, became a select
    that ran the rescue pass (a max and a second sum of squares) on every step:
    53 ms against 35 to 41 ms for clip_by_norm + adam on the flat transformer tree."""
    grads = {f"w{i}": jnp.ones((8,), jnp.float32) for i in range(4)}
    flat = gx.flat_tree(grads)
    tx = gx.clip_by_norm(1.0)
    text = jax.jit(tx.update).lower(flat.ravel(grads), tx.init(flat)).compile().as_text()
    assert text[text.index("ENTRY"):].count(" conditional(") == 1


# --- the rest of the API with FlatTrees ----------------------------------------------------------


def test_params_ema_finalize_params_and_tree_get_on_a_flat_tree():
    params = _mixed(0)
    flat = gx.flat_tree(params, keep=KEEP["kept"])
    tx = gx.chain(gx.adam(1e-1), gx.params_ema(0.5))
    grads = [_mixed(seed) for seed in (1, 2, 3)]
    flat_params, flat_state, _ = _run(tx, flat, [flat.ravel(g) for g in grads])
    want_params, want_state, _ = _run(tx, params, grads)

    final = gx.finalize_params(flat_params, flat_state)
    assert _is_flat(final) and final.layout == flat.layout
    _assert_close(final.unravel(), gx.finalize_params(want_params, want_state), "finalize_params")
    average = gx.tree_get(flat_state, "ema")
    assert _is_flat(average)
    assert not np.allclose(final.buffers[0], flat_params.buffers[0])  # the average, not the params
    for name in ("mu", "nu"):
        assert _is_flat(gx.tree_get(flat_state, name))
        _assert_close(gx.tree_get(flat_state, name).unravel(), gx.tree_get(want_state, name), name)
    assert int(gx.tree_get(flat_state, "/1/count")) == 3


def test_state_shardings_of_a_flat_tree():
    flat = gx.flat_tree(_mixed(0), keep=KEEP["kept"])
    tx = gx.chain(gx.clip_by_norm(1.0), gx.adamw(1e-3, weight_decay=1e-2, mask=["kernel"]))
    shardings = gx.state_shardings(tx, flat)
    assert jax.tree.structure(shardings) == jax.tree.structure(jax.eval_shape(tx.init, flat))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    assert all(s == device for s in jax.tree.leaves(shardings))
    state = _jit(tx.init, out_shardings=shardings)(flat)
    assert_trees_bitwise_equal(state, tx.init(flat))


def test_to_optax_and_optax_apply_updates_with_a_flat_tree():
    params = _vectors(0)
    flat = gx.flat_tree(params, keep=lambda path, leaf: path == "c/kernel")
    tx = optax.chain(gx.to_optax(gx.clip_by_norm(1.0)), optax.adam(1e-1), gx.to_optax(gx.freeze(["bias"])))

    def train(params, grads_seq):
        update = _jit(tx.update)
        with jax.numpy_dtype_promotion("standard"):
            state = tx.init(params)
            for grads in grads_seq:
                updates, state = update(grads, state, params)
                params = optax.apply_updates(params, updates)
        return params

    grads = [_vectors(seed) for seed in (1, 2, 3)]
    got = train(flat, [flat.ravel(g) for g in grads])
    assert _is_flat(got) and got.layout == flat.layout
    _assert_close(got.unravel(), train(params, grads), "optax chain")
    assert_trees_bitwise_equal(_biases(got.unravel()), _biases(params))
    updates = flat.ravel(_vectors(4))
    with jax.numpy_dtype_promotion("standard"):
        by_optax = optax.apply_updates(flat, updates)
    assert_trees_bitwise_equal(by_optax, gx.apply_updates(flat, updates))


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NEEDS_LEAF_SHAPES))
def test_transforms_that_need_leaf_shapes_refuse_a_flat_tree(name):
    assert name in FACTORIES
    tx, params = FACTORIES[name](), _mixed(0)
    flat = gx.flat_tree(params, keep=KEEP["kept"])
    owner = r"(scale_by_factored_rms|scale_by_sm3|scale_by_muon|scale_by_distance_over_gradients)"
    with pytest.raises(TypeError, match=owner + r": got a gx.flat_tree buffer as params, .*needs "
                                        r"the leaf's shape.*Use the per-leaf tree"):
        tx.init(flat)
    if name in ACCUMULATED:  # the accumulator meets the flat updates first, and refuses them
        return
    with pytest.raises(TypeError, match=r"\w+: got a gx.flat_tree buffer as updates, .*"
                                        + owner + r".*Use the per-leaf tree"):
        _jit(tx.update)(flat.ravel(_gradients()[0]), tx.init(params),
                        flat if name in GIVEN_FLAT_PARAMS else params)


@pytest.mark.parametrize("keep", [3, "x", {"embedding": True}])
def test_a_keep_that_is_not_callable_is_a_type_error(keep):
    with pytest.raises(TypeError) as info:
        gx.flat_tree(_mixed(0), keep=keep)
    assert "keep" in str(info.value) and repr(keep) in str(info.value)


def test_ravel_of_another_structure_is_a_value_error():
    flat = gx.flat_tree(_mixed(0))
    other = _mixed(0)
    other["extra"] = jnp.ones(2)
    for tree in (other, {"dense": _mixed(0)["dense"]}, jax.tree.leaves(_mixed(0))):
        with pytest.raises(ValueError, match="structure"):
            flat.ravel(tree)


@pytest.mark.parametrize("leaf, shown", [
    (jnp.zeros(3, jnp.float16), "float16[3]"),
    (jnp.zeros(4, jnp.float32), "float32[4]"),
    (jnp.zeros((3, 1), jnp.float32), "float32[3, 1]"),
], ids=["dtype", "size", "shape"])
def test_ravel_of_a_wrong_leaf_names_its_path(leaf, shown):
    flat = gx.flat_tree(_mixed(0))
    tree = _mixed(0)
    tree["blocks"][1]["bias"] = leaf
    with pytest.raises(ValueError) as info:
        flat.ravel(tree)
    assert "'blocks/1/bias'" in str(info.value) and shown in str(info.value), str(info.value)


def test_a_mask_of_traced_bools_on_a_flat_tree_is_the_usual_type_error():
    flat = gx.flat_tree(_mixed(0))
    array_mask = gx.masked(gx.sgd(0.1), lambda tree: jax.tree.map(lambda _: jnp.asarray(True), tree))
    with pytest.raises(TypeError, match=r"masked: the mask must hold Python bools.*at 'blocks/0/kernel'"):
        array_mask.init(flat)

    def init(flag, flat):
        return gx.masked(gx.sgd(0.1), lambda tree: jax.tree.map(lambda _: flag > 0, tree)).init(flat)

    with pytest.raises(TypeError, match=r"masked: the mask must hold Python bools.*Tracer"):
        _jit(init)(1, flat)


def test_update_time_checks_fire_on_flat_trees():
    params = _mixed(0)
    flat = gx.flat_tree(params)
    tx = gx.adam(1e-3)
    state = tx.init(flat)
    wrong_size = gx.FlatTree([jnp.ones(b.size + 1, b.dtype) for b in flat.buffers], flat.layout)
    with pytest.raises(ValueError, match=r"adam: the update at \['<float32>'\] has shape"):
        tx.update(wrong_size, state, flat)
    with pytest.raises(ValueError, match="tree structure does not match"):
        tx.update(params, state, flat)  # a plain tree where the state is flat
    other = dict(params, extra=jnp.ones(2))
    with pytest.raises(ValueError, match="tree structure does not match"):
        tx.update(gx.flat_tree(other), state, flat)  # another layout


def test_clip_by_norm_checks_the_buffer_length():
    flat = gx.flat_tree(_vectors(0))
    tx = gx.chain(gx.clip_by_norm(1.0), gx.adam(1e-3))
    state = tx.init(flat)
    update = _jit(tx.update)
    for extra in (1, -1):
        wrong = gx.FlatTree([jnp.ones(b.size + extra, b.dtype) for b in flat.buffers], flat.layout)
        with pytest.raises(ValueError, match="map_leafwise: buffer <float32> has shape"):
            update(wrong, state, flat)


# --- structure: one program whatever the number of leaves -----------------------------------------

_SHAPES = [(3,), (4, 3), (2,), (5, 2), (), (1, 3)]


def _many_leaves(count):
    """``count`` float32 and bfloat16 leaves of six shapes: always the same two buffers."""
    return {
        f"layer{index}": {
            "kernel" if len(_SHAPES[index % 6]) == 2 else "bias": np.full(
                _SHAPES[index % 6], 0.5, jnp.bfloat16 if index % 7 == 0 else np.float32
            )
        }
        for index in range(count)
    }


def _opcodes(params):
    """How many of each HLO instruction the compiled ``adam`` update has."""
    tx = gx.adam(1e-3)
    compiled = _jit(tx.update).lower(
        params, tx.init(params), params).compile().as_text()
    return collections.Counter(re.findall(r"=\s*(?:\([^=]*?\)|\S+)\s+([a-z][a-z0-9\-]*)\(", compiled))


def test_flat_adam_compiles_to_the_same_program_for_50_and_500_leaves():
    flat_50, flat_500 = _opcodes(gx.flat_tree(_many_leaves(50))), _opcodes(gx.flat_tree(_many_leaves(500)))
    assert flat_50 == flat_500
    assert flat_50["fusion"] > 0 and flat_50["parameter"] > 0
    per_leaf_10, per_leaf_50 = _opcodes(_many_leaves(10)), _opcodes(_many_leaves(50))
    assert per_leaf_50["fusion"] >= 4 * per_leaf_10["fusion"] > 0
    assert sum(per_leaf_50.values()) >= 4 * sum(per_leaf_10.values())
    assert sum(per_leaf_50.values()) > 10 * sum(flat_50.values())
