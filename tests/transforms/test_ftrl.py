"""``ftrl`` (FTRL-Proximal) against live Keras 3 and a float64 NumPy reference.

* Dense: ``chain(ftrl(...))`` applied with ``apply_updates`` (jitted) against
  ``keras.optimizers.Ftrl`` run live through its jitted ``stateless_apply``
  (``KERAS_BACKEND=jax``), on a table, a vector and a scalar (and a ``None``
  leaf on our side), 32 steps of random gradients, params after every step and
  the final accumulators and linears at rtol 1e-5, atol 1e-6; argument sets
  covering every argument, and Keras schedules against the ``gx.keras`` ones.
* Row-sparse ("lazy"): touching every row every step gives the dense numbers;
  untouched rows' params, accumulators and linears are bit for bit unchanged;
  touched rows match a float64 NumPy transcription of Keras's per-entry rule,
  with duplicate indices summed first.
* Arguments Keras rejects (and a negative beta, a zero learning rate) raise
  naming ftrl and the argument; ``params=None`` raises; ``init`` works under
  ``jax.eval_shape``; bfloat16 params compute in float32 and store once.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is first imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gradxform as gx  # noqa: E402
from gradxform.core import sparse  # noqa: E402
from gradxform.core.sparse import RowSparse  # noqa: E402
from gradxform.transforms.ftrl import FtrlState, ftrl  # noqa: E402
from tests.keras.harness import ScheduleSpec  # noqa: E402

STEPS = 32
NAMES = ("table", "vec", "scalar")
SHAPES = ((6, 3), (3,), ())
RTOL, ATOL = 1e-5, 1e-6
ROWS, WIDTH = 10, 3

# Every argument away from its default at least once; learning_rate_power -0.7 and 0.
KERAS_CASES = {
    "defaults": dict(),
    "l1_l2": dict(learning_rate=0.1, l1_regularization_strength=0.5,
                  l2_regularization_strength=0.01),
    "shrinkage_beta_iav0": dict(learning_rate=0.05, l2_shrinkage_regularization_strength=0.1,
                                beta=0.5, initial_accumulator_value=0.0),
    "power_-0.7": dict(learning_rate=0.05, learning_rate_power=-0.7,
                       initial_accumulator_value=0.5, l1_regularization_strength=0.01),
    "power_0": dict(learning_rate=0.02, learning_rate_power=0.0, l2_regularization_strength=0.1,
                    l2_shrinkage_regularization_strength=0.05),
    "everything": dict(learning_rate=0.2, learning_rate_power=-0.6, initial_accumulator_value=0.3,
                       l1_regularization_strength=0.02, l2_regularization_strength=0.03,
                       l2_shrinkage_regularization_strength=0.04, beta=0.2),
    "ExponentialDecay": dict(
        learning_rate=ScheduleSpec("ExponentialDecay", dict(
            initial_learning_rate=0.2, decay_steps=5, decay_rate=0.5)),
        l1_regularization_strength=0.01, beta=0.1),
    "PiecewiseConstantDecay": dict(
        learning_rate=ScheduleSpec("PiecewiseConstantDecay", dict(
            boundaries=[5, 11, 20], values=[0.2, 0.1, 0.05, 0.02])),
        l2_shrinkage_regularization_strength=0.02, learning_rate_power=-0.7),
}


def _side(kwargs, which):
    return {k: getattr(v, which)() if isinstance(v, ScheduleSpec) else v
            for k, v in kwargs.items()}


def initial_values(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]


def dense_stream(seed=1):
    """``STEPS`` lists of float32 gradients, each step at its own scale (0.1 to 3)."""
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal(shape) * rng.uniform(0.1, 3.0)).astype(np.float32)
             for shape in SHAPES] for _ in range(STEPS)]


def run_keras(kwargs, grads):
    """Keras's Ftrl through its jitted ``stateless_apply``: params per step, final state."""
    with jax.numpy_dtype_promotion("standard"):
        variables = [keras.Variable(v, name=n) for v, n in zip(initial_values(), NAMES)]
        opt = keras.optimizers.Ftrl(**_side(kwargs, "keras"))
        opt.build(variables)
        opt_values = [v.value for v in opt.variables]
        values = [v.value for v in variables]
        apply = jax.jit(opt.stateless_apply)
        trajectory = []
        for g in grads:
            values, opt_values = apply(opt_values, [jnp.asarray(x) for x in g], values)
            trajectory.append([np.asarray(x) for x in values])
    by_path = {v.path.split("/")[-1]: np.asarray(x) for v, x in zip(opt.variables, opt_values)}
    state = {kind: [by_path[f"{name}_{kind}"] for name in NAMES]
             for kind in ("accumulator", "linear")}
    return trajectory, state


def to_tree(flat):
    return {"table": flat[0], "nested": {"vec": flat[1], "frozen": None}, "scalar": flat[2]}


def from_tree(tree):
    return [np.asarray(tree["table"]), np.asarray(tree["nested"]["vec"]),
            np.asarray(tree["scalar"])]


def make_step(tx):
    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state, updates

    return step


def run_ours(kwargs, grads):
    tx = gx.chain(ftrl(**_side(kwargs, "gx")))
    params = to_tree([jnp.asarray(v) for v in initial_values()])
    state = tx.init(params)
    step = make_step(tx)
    trajectory = []
    for g in grads:
        params, state, _ = step(params, state, to_tree([jnp.asarray(x) for x in g]))
        trajectory.append(from_tree(params))
    (inner,) = state
    return trajectory, {"accumulator": from_tree(inner.accumulators),
                        "linear": from_tree(inner.linears)}


@pytest.mark.parametrize("case", sorted(KERAS_CASES))
def test_dense_matches_keras_ftrl(case):
    kwargs = KERAS_CASES[case]
    grads = dense_stream()
    theirs, their_state = run_keras(kwargs, grads)
    ours, our_state = run_ours(kwargs, grads)
    for step, (mine, ref) in enumerate(zip(ours, theirs, strict=True)):
        for name, a, b in zip(NAMES, mine, ref):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{case}: {name} after step {step}")
    for kind in ("accumulator", "linear"):
        for name, a, b in zip(NAMES, our_state[kind], their_state[kind]):
            # z is a running sum whose terms cancel: its rounding is relative to its largest
            # entries (the params, z / quadratic, are held to ATOL above).
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * np.max(np.abs(b)),
                                       err_msg=f"{case}: {kind} {name}")
    # L1 zeroes entries exactly, the same ones as in Keras.
    zeros = [[a == 0 for a in mine] for mine in ours]
    for mine, ref in zip(zeros, theirs):
        for a, b in zip(mine, ref):
            np.testing.assert_array_equal(a, b == 0, err_msg=f"{case}: exact zeros")
    if kwargs.get("l1_regularization_strength", 0) >= 0.5:
        assert np.mean([a.mean() for mine in zeros for a in mine]) > 0.02  # about 5%


# --------------------------------------------------------------------------- reference


def reference_rule(g, n, z, w, lr, kwargs):
    """Keras's ``Ftrl.update_step`` per entry, in float64 NumPy."""
    a = dict(learning_rate_power=-0.5, l1_regularization_strength=0.0,
             l2_regularization_strength=0.0, l2_shrinkage_regularization_strength=0.0, beta=0.0)
    a.update({k: v for k, v in kwargs.items() if k in a})
    power = -a["learning_rate_power"]
    l2_reg = a["l2_regularization_strength"] + a["beta"] / (2.0 * lr)
    shrunk = g + 2 * a["l2_shrinkage_regularization_strength"] * w
    n_new = n + g * g
    sigma = (n_new**power - n**power) / lr
    z_new = z + (shrunk - sigma * w)
    quadratic = n_new**power / lr + 2 * l2_reg
    l1 = a["l1_regularization_strength"]
    return (np.clip(z_new, -l1, l1) - z_new) / quadratic, n_new, z_new


def f64(x):
    return np.asarray(jnp.asarray(x, jnp.float32)).astype(np.float64)


SPARSE_KWARGS = dict(learning_rate=0.1, l1_regularization_strength=0.02,
                     l2_regularization_strength=0.01, l2_shrinkage_regularization_strength=0.05,
                     beta=0.3, learning_rate_power=-0.6, initial_accumulator_value=0.2)


def sparse_stream(seed=2, slots=7, every_row=False):
    """Per step, a RowSparse for the (ROWS, WIDTH) table: repeated rows and an empty slot.

    With ``every_row``, each row appears once and then some rows again (duplicates).
    """
    rng = np.random.default_rng(seed)
    stream = []
    for _ in range(STEPS):
        if every_row:
            indices = np.concatenate([rng.permutation(ROWS), rng.integers(0, ROWS, 3)])
        else:
            indices = rng.integers(0, ROWS, slots - 1)
            indices[1] = indices[0]  # a duplicate every step
            indices = np.append(indices, ROWS)  # an empty slot
        values = rng.standard_normal((indices.size, WIDTH)).astype(np.float32)
        stream.append(RowSparse(jnp.asarray(indices, jnp.int32), jnp.asarray(values), ROWS))
    return stream


def sparse_params(seed=3):
    rng = np.random.default_rng(seed)
    return {"emb": jnp.asarray(rng.standard_normal((ROWS, WIDTH)), jnp.float32),
            "bias": jnp.asarray(rng.standard_normal(WIDTH), jnp.float32), "skip": None}


def bias_grads(seed=4):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(WIDTH), jnp.float32) for _ in range(STEPS)]


def test_row_sparse_rule_is_declared_lazy():
    assert sparse.ROW_SPARSE_RULES["ftrl"] == "lazy"


def test_every_row_touched_equals_dense():
    tx = gx.chain(ftrl(**SPARSE_KWARGS))
    step = make_step(tx)
    params_s = params_d = sparse_params()
    state_s = state_d = tx.init(params_s)
    for g, b in zip(sparse_stream(every_row=True), bias_grads()):
        params_s, state_s, updates = step(params_s, state_s, {"emb": g, "bias": b, "skip": None})
        assert isinstance(updates["emb"], RowSparse)
        params_d, state_d, _ = step(params_d, state_d, {"emb": g.todense(), "bias": b,
                                                          "skip": None})
        for a, d in zip(jax.tree.leaves((params_s, state_s)), jax.tree.leaves((params_d, state_d))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(d), rtol=1e-6, atol=1e-7)


def test_untouched_rows_unchanged_and_touched_rows_match_reference():
    schedule = gx.keras.ExponentialDecay(0.1, decay_steps=4, decay_rate=0.7)
    kwargs = dict(SPARSE_KWARGS, learning_rate=schedule)
    tx = gx.chain(ftrl(**kwargs))
    step = make_step(tx)
    params = sparse_params()
    (state,) = tx.init(params)
    ever = np.zeros(ROWS, bool)
    for t, (g, b) in enumerate(zip(sparse_stream(), bias_grads())):
        before = [np.asarray(x) for x in (params["emb"], state.accumulators["emb"],
                                          state.linears["emb"])]
        params, (state,), updates = step(params, (state,), {"emb": g, "bias": b, "skip": None})
        after = [np.asarray(x) for x in (params["emb"], state.accumulators["emb"],
                                         state.linears["emb"])]
        assert isinstance(updates["emb"], RowSparse)
        indices = np.asarray(g.indices)
        valid = indices[indices < ROWS]
        touched = np.zeros(ROWS, bool)
        touched[valid] = True
        ever |= touched
        for what, x0, x1 in zip(("params", "accumulators", "linears"), before, after):
            np.testing.assert_array_equal(x1[~touched], x0[~touched],
                                          err_msg=f"untouched rows' {what} at step {t}")
        # Touched rows: duplicates summed first, then Keras's rule in float64 from our state.
        summed = np.zeros((ROWS, WIDTH))
        np.add.at(summed, valid, np.asarray(g.values, np.float64)[indices < ROWS])
        lr = float(np.float32(0.1 * 0.7 ** (t / 4)))
        w, n, z = (f64(x[touched]) for x in before)
        w_new, n_new, z_new = reference_rule(summed[touched], n, z, w, lr, kwargs)
        for what, got, want in zip(("params", "accumulators", "linears"), after,
                                   (w_new, n_new, z_new)):
            np.testing.assert_allclose(got[touched], want, rtol=RTOL, atol=ATOL,
                                       err_msg=f"touched rows' {what} at step {t}")
    assert ever.all() and int(state.count) == STEPS


def test_dense_rule_moves_untouched_rows_sparse_does_not():
    """The docstring's reason for "lazy": the dense rule moves rows whose gradient is zero.

    Without shrinkage such a row has z = 0 after the first step and goes to 0; with it,
    z = 2 l2s w and the row shrinks. The row-sparse rule leaves them as they are.
    """
    params = sparse_params()["emb"]
    others = np.delete(np.asarray(params), 2, axis=0)
    g = RowSparse(jnp.array([2], jnp.int32), jnp.ones((1, WIDTH)), ROWS)
    for shrinkage in (0.0, 0.1):
        tx = ftrl(learning_rate=0.1, l2_shrinkage_regularization_strength=shrinkage)
        dense_updates, _ = tx.update(g.todense(), tx.init(params), params)
        moved = np.asarray(gx.apply_updates(params, dense_updates))
        if shrinkage:
            assert np.all(np.abs(np.delete(moved, 2, axis=0)) < np.abs(others))
        else:
            np.testing.assert_array_equal(np.delete(moved, 2, axis=0), 0.0)
        sparse_updates, _ = tx.update(g, tx.init(params), params)
        kept = np.asarray(gx.apply_updates(params, sparse_updates))
        np.testing.assert_array_equal(np.delete(kept, 2, axis=0), others)
        np.testing.assert_array_equal(kept[2], moved[2])


# --------------------------------------------------------------------------- dtypes, shapes


def test_bfloat16_params_compute_in_float32_and_store_once():
    kwargs = KERAS_CASES["everything"]
    tx = ftrl(**kwargs)
    rng = np.random.default_rng(5)
    params = {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.bfloat16), "b": None}
    state = tx.init(params)
    assert state.accumulators["w"].dtype == state.linears["w"].dtype == jnp.bfloat16
    step = jax.jit(tx.update)
    for t in range(STEPS):
        g = jnp.asarray(rng.standard_normal((4, 3)), jnp.bfloat16)
        updates, new = step({"w": g, "b": None}, state, params)
        assert updates["w"].dtype == jnp.bfloat16
        w_new, n_new, z_new = reference_rule(
            f64(g), f64(state.accumulators["w"]), f64(state.linears["w"]), f64(params["w"]),
            kwargs["learning_rate"], kwargs)
        want = [w_new - f64(params["w"]), n_new, z_new]
        got = [updates["w"], new.accumulators["w"], new.linears["w"]]
        for what, a, b in zip(("update", "accumulator", "linear"), got, want):
            # Computed in float32 and rounded once to bfloat16: within half a bfloat16 ulp.
            np.testing.assert_allclose(f64(a), b, rtol=2.0**-8, atol=1e-30, err_msg=f"{what} {t}")
        params, state = gx.apply_updates(params, updates), new
    assert np.all(np.isfinite(f64(params["w"])))


def test_complex_entry_is_two_real_coordinates():
    tx = ftrl(learning_rate=0.1, l1_regularization_strength=0.01, beta=0.1)
    rng = np.random.default_rng(6)
    re, im = (rng.standard_normal((STEPS + 1, 5)).astype(np.float32) for _ in range(2))
    c = {"w": jnp.asarray(re[0] + 1j * im[0], jnp.complex64)}
    r, i = {"w": jnp.asarray(re[0])}, {"w": jnp.asarray(im[0])}
    cs, rs, is_ = tx.init(c), tx.init(r), tx.init(i)
    for t in range(1, STEPS + 1):
        cu, cs = tx.update({"w": jnp.asarray(re[t] + 1j * im[t], jnp.complex64)}, cs, c)
        ru, rs = tx.update({"w": jnp.asarray(re[t])}, rs, r)
        iu, is_ = tx.update({"w": jnp.asarray(im[t])}, is_, i)
        c, r, i = (gx.apply_updates(p, u) for p, u in ((c, cu), (r, ru), (i, iu)))
    np.testing.assert_allclose(np.real(c["w"]), r["w"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.imag(c["w"]), i["w"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.imag(cs.accumulators["w"]), is_.accumulators["w"], rtol=1e-6)


def test_init_under_eval_shape():
    tx = ftrl(initial_accumulator_value=0.25)
    params = {"a": jnp.ones((3, 2)), "b": jnp.ones(2, jnp.bfloat16), "h": jnp.ones(2, jnp.float16),
              "s": jnp.float32(1.0), "none": None, "steps": jnp.ones(2, jnp.int32)}
    state = tx.init(params)
    assert isinstance(state, FtrlState)
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    for shapes in (jax.eval_shape(tx.init, params), jax.eval_shape(tx.init, abstract)):
        assert jax.tree.structure(shapes) == jax.tree.structure(state)
        for s, x in zip(jax.tree.leaves(shapes), jax.tree.leaves(state)):
            assert (s.shape, s.dtype) == (x.shape, x.dtype)
    assert state.count.dtype == jnp.int32 and int(state.count) == 0
    assert state.accumulators["h"].dtype == jnp.float32  # float16 cannot hold the squares
    assert state.accumulators["b"].dtype == jnp.bfloat16
    assert state.accumulators["none"] is None and state.accumulators["steps"] is None
    np.testing.assert_array_equal(state.accumulators["a"], 0.25)
    np.testing.assert_array_equal(state.linears["a"], 0.0)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("argument, value, error", [
    ("learning_rate", -0.1, ValueError),
    ("learning_rate", 0.0, ValueError),
    ("learning_rate", float("nan"), ValueError),
    ("learning_rate", "0.1", TypeError),
    ("learning_rate_power", 0.5, ValueError),
    ("learning_rate_power", float("inf"), ValueError),
    ("initial_accumulator_value", -0.1, ValueError),
    ("l1_regularization_strength", -1.0, ValueError),
    ("l2_regularization_strength", -1e-3, ValueError),
    ("l2_shrinkage_regularization_strength", -1.0, ValueError),
    ("beta", -0.5, ValueError),
    ("beta", True, TypeError),
])
def test_hostile_arguments_raise_naming_ftrl(argument, value, error):
    with pytest.raises(error, match=rf"ftrl: {argument} .*{value!r}"):
        ftrl(**{argument: value})


def test_keras_rejects_what_we_reject():
    for argument, value in [("learning_rate_power", 0.5), ("initial_accumulator_value", -0.1),
                            ("l1_regularization_strength", -1.0),
                            ("l2_regularization_strength", -1.0),
                            ("l2_shrinkage_regularization_strength", -1.0)]:
        with pytest.raises(ValueError, match=argument):
            keras.optimizers.Ftrl(**{argument: value})


def test_update_without_params_raises():
    tx = ftrl()
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="ftrl: update needs params"):
        tx.update(params, tx.init(params))
    both = {"w": jnp.ones(3), "v": jnp.ones(2)}
    with pytest.raises(ValueError, match="ftrl: every update needs its parameter"):
        tx.update(both, tx.init(both), {"w": jnp.ones(3), "v": None})
