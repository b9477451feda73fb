"""scale_by_belief, scale_by_yogi, scale_by_radam, scale_by_adamax, scale_by_novograd.

* Each must match optax's transform of the same name over 50 jitted steps on a
  nested pytree (scalars, ``None`` and zero-size leaves, zero-gradient steps),
  for several argument sets including non-defaults, in float32 and bfloat16
  (bfloat16 compared with optax run in float32, as `compare_with_optax`
  does). The state is compared field by field with optax's after every step,
  and its field names are optax's.
* Each also matches its rule written in float64 NumPy, independently of optax.
* Where they differ from optax on purpose: RAdam's threshold must be at least 4
  (optax returns NaN for smaller ones) and its unused branch makes no NaN;
  AdaMax gives 0 where its infinity norm is 0 (``eps=0``), optax 0/0.
* NovoGrad keeps one scalar second moment per leaf; on a `FlatTree` it keeps
  one per logical leaf, equal to the per-leaf run, also under ``masked``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    LOW_PRECISION,
    assert_trees_close,
    cast_tree,
    gradient_stream,
    random_params,
    run_optax,
    run_updates,
)

STEPS = 50
DTYPES = [jnp.float32, jnp.bfloat16]

CASES = {
    "scale_by_belief": [{}, {"b1": 0.8, "b2": 0.99, "eps": 1e-8, "eps_root": 0.0},
                        {"nesterov": True, "eps_root": 1e-10}],
    "scale_by_yogi": [{}, {"b1": 0.5, "b2": 0.99, "eps": 1e-4, "eps_root": 1e-6,
                           "initial_accumulator_value": 1e-2}],
    "scale_by_radam": [{}, {"b2": 0.9, "threshold": 4.0}, {"nesterov": True, "eps_root": 1e-8},
                       {"b1": 0.0, "b2": 0.5, "eps": 1e-6}],
    "scale_by_adamax": [{}, {"b1": 0.5, "b2": 0.9, "eps": 1e-3}, {"b1": 0.0}],
    "scale_by_novograd": [{}, {"b1": 0.5, "b2": 0.9, "eps": 1e-4, "eps_root": 1e-6,
                               "weight_decay": 0.1}],
}
PARAMS = [pytest.param(name, kwargs, id=f"{name}-{index}")
          for name, arguments in CASES.items() for index, kwargs in enumerate(arguments)]
# optax's float32 rho_t loses digits to cancellation while t |log b2| < 1/2: with b2 = 0.999
# its r_t is up to 0.6% off the float64 value, ours 1e-6 (test_radam_rho_has_no_cancellation).
OPTAX_RADAM_CANCELLATION = [{}, {"nesterov": True, "eps_root": 1e-8}]


def _fields(state):
    return {name: getattr(state, name) for name in state._fields}


def _assert_states_close(ours, theirs, rtol, context):
    """Field by field: the same names and counts; each moment to ``rtol`` of the field's scale
    (its largest entry over all leaves: a moment that cancels to near 0 keeps the absolute
    error of the others)."""
    assert ours._fields == theirs._fields, context
    assert int(ours.count) == int(theirs.count), context
    for name in ("mu", "nu"):
        mine, ref = getattr(ours, name), getattr(theirs, name)
        assert jax.tree.structure(mine) == jax.tree.structure(ref), (context, name)
        scale = max(float(np.max(np.abs(np.asarray(e, np.float64)), initial=0))
                    for e in jax.tree.leaves(ref))
        for a, e in zip(jax.tree.leaves(mine), jax.tree.leaves(ref)):
            assert a.shape == e.shape, (context, name)
            e64 = np.asarray(e, np.float64)
            np.testing.assert_allclose(np.asarray(a, np.float64), e64, rtol=rtol,
                                       atol=rtol * scale + 1e-30, err_msg=f"{context} {name}")


def _trajectory(tx, params, grads_seq, standard=False):
    """(updates, state) after every jitted step; params fixed (NovoGrad's decay reads them)."""
    update = jax.jit(tx.update)
    history = []
    with jax.numpy_dtype_promotion("standard" if standard else "strict"), \
            jax.debug_nans(not standard):
        state = tx.init(params)
        for grads in grads_seq:
            updates, state = update(grads, state, params)
            history.append((updates, state))
    return history


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name, kwargs", PARAMS)
def test_matches_optax_updates_and_state(name, kwargs, dtype):
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours = _trajectory(getattr(gx, name)(**kwargs), params, grads_seq)
    theirs = _trajectory(getattr(optax, name)(**kwargs), cast_tree(params, jnp.float32),
                         [cast_tree(g, jnp.float32) for g in grads_seq], standard=True)
    low = dtype in LOW_PRECISION
    rtol, atol = (2e-2, 2e-2) if low else (2e-5, 1e-6)
    if name == "scale_by_radam" and kwargs in OPTAX_RADAM_CANCELLATION and not low:
        rtol, atol = 1e-2, 1e-4
    for step, ((u, s), (u_ref, s_ref)) in enumerate(zip(ours, theirs)):
        context = f"{name} {kwargs} {dtype.__name__} step {step}"
        assert {x.dtype for x in jax.tree.leaves(u)} == {jnp.dtype(dtype)}, context
        assert_trees_close(u, u_ref, rtol, atol, context)
        _assert_states_close(s, s_ref, 3e-2 if low else 1e-5, context)


def test_state_fields_are_optax_states_fields():
    assert gx.ScaleByBeliefState._fields == optax.ScaleByBeliefState._fields
    assert gx.ScaleByNovogradState._fields == optax.ScaleByNovogradState._fields
    for state in (gx.ScaleByYogiState, gx.ScaleByRadamState, gx.ScaleByAdamaxState):
        assert state._fields == optax.ScaleByAdamState._fields
    params = random_params(0)
    for name in CASES:
        ours, theirs = getattr(gx, name)().init(params), getattr(optax, name)().init(params)
        assert ours._fields == theirs._fields
        assert ours.count.dtype == jnp.int32


# ---------------------------------------------------------------- float64 NumPy rules


def _leafwise(grads_seq, step_fn, state_fn):
    """Runs ``step_fn(t, g, state) -> update`` leaf by leaf; ``state_fn(g)`` makes a leaf's state."""
    leaves0, treedef = jax.tree.flatten(grads_seq[0])
    states = [state_fn(np.asarray(x, np.float64)) for x in leaves0]
    outputs = []
    for t, grads in enumerate(grads_seq, start=1):
        leaves = [np.asarray(g, np.float64) for g in treedef.flatten_up_to(grads)]
        outputs.append(treedef.unflatten([step_fn(t, g, s) for g, s in zip(leaves, states)]))
    return outputs


def _nesterov_or_plain(m, g, b1, t, nesterov):
    if nesterov:
        return b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
    return m / (1 - b1**t)


def belief_reference(grads_seq, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, nesterov=False):
    def step(t, g, s):
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["s"] = b2 * s["s"] + (1 - b2) * (g - s["m"]) ** 2 + eps_root
        m_hat = _nesterov_or_plain(s["m"], g, b1, t, nesterov)
        return m_hat / (np.sqrt(s["s"] / (1 - b2**t)) + eps)

    return _leafwise(grads_seq, step, lambda x: {"m": 0 * x, "s": 0 * x})


def yogi_reference(grads_seq, b1=0.9, b2=0.999, eps=1e-3, eps_root=0.0,
                   initial_accumulator_value=1e-6):
    def step(t, g, s):
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = s["v"] - (1 - b2) * np.sign(s["v"] - g * g) * g * g
        m_hat, v_hat = s["m"] / (1 - b1**t), s["v"] / (1 - b2**t)
        return m_hat / (np.sqrt(v_hat + eps_root) + eps)

    start = initial_accumulator_value
    return _leafwise(grads_seq, step, lambda x: {"m": 0 * x + start, "v": 0 * x + start})


def radam_reference(grads_seq, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, threshold=5.0,
                    nesterov=False):
    """Liu et al., algorithm 2 (optax's rho >= threshold form)."""
    rho_inf = 2 / (1 - b2) - 1

    def step(t, g, s):
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        m_hat = _nesterov_or_plain(s["m"], g, b1, t, nesterov)
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho < threshold:
            return m_hat
        r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        return r * m_hat / (np.sqrt(s["v"] / (1 - b2**t) + eps_root) + eps)

    return _leafwise(grads_seq, step, lambda x: {"m": 0 * x, "v": 0 * x})


def adamax_reference(grads_seq, b1=0.9, b2=0.999, eps=1e-8):
    def step(t, g, s):
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["u"] = np.maximum(b2 * s["u"], np.abs(g) + eps)
        return s["m"] / (1 - b1**t) / s["u"]

    return _leafwise(grads_seq, step, lambda x: {"m": 0 * x, "u": 0 * x})


REFERENCES = {"scale_by_belief": belief_reference, "scale_by_yogi": yogi_reference,
              "scale_by_radam": radam_reference, "scale_by_adamax": adamax_reference}


@pytest.mark.parametrize("name, kwargs", [p for p in PARAMS if p.values[0] in REFERENCES])
def test_matches_float64_numpy_rule(name, kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=2)
    ours, _ = run_updates(getattr(gx, name)(**kwargs), params, grads_seq)
    expected = REFERENCES[name](grads_seq, **kwargs)
    for step, (mine, ref) in enumerate(zip(ours, expected)):
        assert_trees_close(mine, ref, 5e-5, 2e-6, context=f"{name} {kwargs} step {step}")


def novograd_reference(grads_seq, params, b1=0.9, b2=0.25, eps=1e-8, eps_root=0.0,
                       weight_decay=0.0):
    """Ginsburg et al., algorithm 1, with optax's (1 - b1)-free momentum; params fixed."""
    p_leaves = [np.asarray(p, np.float64) for p in jax.tree.leaves(params)]
    leaves0, treedef = jax.tree.flatten(grads_seq[0])
    m = [np.zeros(x.shape) for x in leaves0]
    v = [0.0] * len(leaves0)
    outputs = []
    for t, grads in enumerate(grads_seq, start=1):
        out = []
        for i, g in enumerate(treedef.flatten_up_to(grads)):
            g = np.asarray(g, np.float64)
            norm = float(np.sum(g * g))
            v[i] = norm if t == 1 else b2 * v[i] + (1 - b2) * norm
            m[i] = b1 * m[i] + g / (np.sqrt(v[i] + eps_root) + eps) + weight_decay * p_leaves[i]
            out.append(m[i])
        outputs.append((treedef.unflatten(out), list(v)))
    return outputs


@pytest.mark.parametrize("kwargs", CASES["scale_by_novograd"])
def test_novograd_matches_float64_numpy_rule_with_a_scalar_moment_per_leaf(kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=2)
    tx = gx.scale_by_novograd(**kwargs)
    history = _trajectory(tx, params, grads_seq)
    for step, ((mine, state), (ref, ref_nu)) in enumerate(
            zip(history, novograd_reference(grads_seq, params, **kwargs))):
        assert_trees_close(mine, ref, 5e-5, 2e-6, context=f"step {step}")
        nu = jax.tree.leaves(state.nu)
        assert [x.shape for x in nu] == [()] * len(ref_nu)
        np.testing.assert_allclose(np.asarray(nu, np.float64), ref_nu, rtol=1e-5)


# ----------------------------------------------------------------- deliberate differences


def test_radam_threshold_below_4_is_rejected_where_optax_returns_nan():
    with pytest.raises(ValueError, match=r"scale_by_radam: threshold must be in \[4, inf\), got 3.0"):
        gx.scale_by_radam(threshold=3.0)
    params = {"w": jnp.ones(3)}
    grads_seq = [{"w": jnp.array([1.0, -2.0, 0.5])}] * 4
    theirs, _ = run_optax(optax.scale_by_radam(threshold=3.0), params, grads_seq)
    # rho_3 is about 2.99 and rho_4 about 3.99 with b2 = 0.999: sqrt of a negative number.
    assert np.all(np.isnan(theirs[3]["w"]))
    ours, _ = run_updates(gx.scale_by_radam(threshold=4.0), params, grads_seq)
    assert all(np.all(np.isfinite(u["w"])) for u in ours)


def _float64_rectification(b2, t):
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
    if rho < 4:
        return None, rho
    return np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)), rho


RHO_STEPS = [1, 2, 3, 5, 6, 7, 10, 30, 100, 700, 1000, 3000, 20000, 200000, 2**31 - 1]


@pytest.mark.parametrize("b2", [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999])
def test_radam_rho_has_no_cancellation(b2):
    """r_t against float64 over the steps where rho_t crosses the threshold and beyond,
    for a Python b2 and for an injected (float32 array) one: within 2e-6. optax's float32
    formula is far off for b2 close to 1."""
    from gradxform.transforms.adam_variants import _rectification

    static = jax.jit(lambda count: _rectification(b2, 5.0, count, jnp.float32))
    injected = jax.jit(lambda count, value: _rectification(value, 5.0, count, jnp.float32))
    for t in RHO_STEPS:
        count = jnp.int32(t)
        # A Python b2 is used in double precision; an injected one is a float32 array,
        # whose value is b2 rounded to float32.
        for (r, rectified), exact_b2 in ((static(count), b2),
                                         (injected(count, jnp.float32(b2)), float(np.float32(b2)))):
            r64, rho64 = _float64_rectification(exact_b2, t)
            assert bool(rectified) == (rho64 >= 5), (t, exact_b2)
            if rho64 >= 5:
                np.testing.assert_allclose(float(r), r64, rtol=2e-6, err_msg=f"t={t}")
    if b2 >= 0.999:  # optax's float32 rho_t, as written in optax.scale_by_radam
        t = np.arange(1, 2000, dtype=np.int32)
        b2t = np.float32(b2) ** t.astype(np.float32)
        theirs = np.float32(2.0 / (1.0 - b2) - 1.0) - np.float32(2) * t * b2t / (1 - b2t)
        exact = np.array([_float64_rectification(b2, int(k))[1] for k in t])
        worst = np.max(np.abs(np.asarray(theirs, np.float64) - exact)[exact >= 5]
                       / (exact[exact >= 5] - 4))
        assert worst > 1e-2, worst


def test_radam_updates_follow_float64_through_the_threshold():
    """The whole update, b2 = 0.999, over the first 60 steps (rho_t crosses 5 at t = 6)."""
    params = {"w": jnp.array([1.0, -0.5, 2.0]), "s": jnp.float32(0.3)}
    grads_seq = gradient_stream(params, 60, seed=7, zero_every=0)
    ours, _ = run_updates(gx.scale_by_radam(), params, grads_seq)
    theirs, _ = run_optax(optax.scale_by_radam(), params, grads_seq)
    expected = radam_reference(grads_seq)
    for step, (mine, ref) in enumerate(zip(ours, expected)):
        assert_trees_close(mine, ref, 2e-5, 1e-7, context=f"step {step}")
    errors = [abs(float(t["w"][0]) / float(e["w"][0]) - 1) for t, e in zip(theirs, expected)]
    assert max(errors[5:10]) > 1e-3  # optax's cancellation, steps 6 to 10


@pytest.mark.parametrize("b2", [0.5, 0.6, 0.999])
def test_radam_makes_no_nan_in_the_branch_not_taken(b2):
    """Eager, under jax_debug_nans (the test default): every operation's result is checked.
    With b2 <= 0.6, rho_inf <= 4 and optax's rectification term is NaN or inf at every step
    (its unused branch); with b2 = 0.999 it is NaN at steps 3 and 4."""
    params = random_params(0)
    grads_seq = gradient_stream(params, 8, seed=3)
    ours, _ = run_updates(gx.scale_by_radam(b2=b2), params, grads_seq, jit=False)
    expected = radam_reference(grads_seq, b2=b2)
    for mine, ref in zip(ours, expected):
        assert_trees_close(mine, ref, 5e-5, 2e-6)


def test_adamax_with_eps_0_gives_0_where_optax_divides_0_by_0():
    params = {"w": jnp.ones(3)}
    grads_seq = [{"w": jnp.array([0.0, 1.0, 0.0])}, {"w": jnp.array([0.0, -2.0, 0.5])}]
    ours, state = run_updates(gx.scale_by_adamax(eps=0.0), params, grads_seq, jit=False)
    np.testing.assert_allclose(ours[0]["w"], [0.0, 1.0, 0.0], rtol=1e-6)
    assert float(ours[1]["w"][0]) == 0.0
    with np.errstate(invalid="ignore"):  # the reference's 0/0 at [0]
        expected = adamax_reference(grads_seq, eps=0.0)[1]["w"]
    np.testing.assert_allclose(ours[1]["w"][1:], expected[1:], rtol=1e-6)
    theirs, _ = run_optax(optax.scale_by_adamax(eps=0.0), params, grads_seq)
    assert np.isnan(np.asarray(theirs[0]["w"])[0]) and np.isnan(np.asarray(theirs[1]["w"])[0])


# ---------------------------------------------------------------------------- novograd


def test_novograd_needs_params_only_with_weight_decay():
    grads = {"w": jnp.ones(3)}
    tx = gx.scale_by_novograd()
    updates, _ = tx.update(grads, tx.init(grads))  # no params needed
    np.testing.assert_allclose(updates["w"], 1 / (np.sqrt(3.0) + 1e-8), rtol=1e-6)
    tx = gx.scale_by_novograd(weight_decay=0.1)
    with pytest.raises(ValueError, match="scale_by_novograd: update needs params when "
                                         "weight_decay is not 0, got params=None"):
        tx.update(grads, tx.init(grads))
    with pytest.raises(ValueError, match="novograd: update needs params"):
        gx.novograd(0.1, weight_decay=0.1).update(grads, gx.novograd(0.1).init(grads))


def _flat_case():
    leaf = lambda *shape, dtype=jnp.float32: jnp.zeros(shape, dtype)  # noqa: E731
    return {"a": {"kernel": leaf(4, 3), "bias": leaf(3)}, "b": {"kernel": leaf(4, 3), "bias": leaf(3)},
            "emb": leaf(5, 2), "empty": leaf(0), "scalar": leaf(), "half": leaf(2, 2, dtype=jnp.bfloat16)}


@pytest.mark.parametrize("keep", [None, lambda path, leaf: path == "emb"], ids=["buffers", "kept"])
def test_novograd_on_a_flat_tree_keeps_one_moment_per_logical_leaf(keep):
    shapes = jax.tree.map(lambda x: x, _flat_case())
    params = random_params(0, shapes=jax.tree.map(lambda x: x.shape, shapes))
    params = jax.tree.map(lambda p, s: p.astype(s.dtype), params, shapes)
    grads_seq = gradient_stream(params, 6, seed=4, zero_every=3)
    tx = gx.scale_by_novograd(weight_decay=0.1, eps_root=1e-6)
    per_leaf = _trajectory(tx, params, grads_seq)
    flat = gx.flat_tree(params, keep=keep)
    on_flat = _trajectory(tx, flat, [flat.ravel(g) for g in grads_seq])
    for step, ((u, s), (u_flat, s_flat)) in enumerate(zip(per_leaf, on_flat)):
        assert isinstance(u_flat, gx.FlatTree) and isinstance(s_flat.mu, gx.FlatTree)
        assert jax.tree.structure(s_flat.nu) == jax.tree.structure(s.nu)
        for name, ours, want in (("updates", u_flat.unravel(), u), ("mu", s_flat.mu.unravel(), s.mu),
                                 ("nu", s_flat.nu, s.nu)):
            for a, e in zip(jax.tree.leaves(ours), jax.tree.leaves(want)):
                assert (a.shape, a.dtype) == (e.shape, e.dtype), (step, name)
                tol = 1e-2 if e.dtype == jnp.bfloat16 else 1e-5
                np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                                           rtol=tol, atol=tol * 1e-3, err_msg=f"{step} {name}")


def test_novograd_under_masked_on_a_flat_tree_leaves_out_the_unselected_buffer():
    params = jax.tree.map(lambda x: x + 1, _flat_case())
    flat = gx.flat_tree(params)
    grads = flat.ravel(jax.tree.map(lambda x: jnp.full_like(x, 2), params))
    mask = lambda tree: jax.tree.map(lambda x: x.dtype == jnp.float32, tree)  # noqa: E731
    tx = gx.masked(gx.scale_by_novograd(weight_decay=0.5), mask)
    state = tx.init(flat)
    updates, state = jax.jit(tx.update)(grads, state, flat)
    nu = state.inner_state.nu
    assert nu["half"] is None and nu["a"]["kernel"].shape == ()
    np.testing.assert_allclose(nu["a"]["kernel"], 4.0 * 12)
    out = updates.unravel()
    np.testing.assert_array_equal(out["half"], jnp.full((2, 2), 2, jnp.bfloat16))
    np.testing.assert_allclose(out["a"]["kernel"], 2 / (np.sqrt(48.0) + 1e-8) + 0.5, rtol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_float16_params_keep_second_moments_in_float32(name):
    params = {"w": jnp.array([0.5, -1.0], jnp.float16)}
    tx = getattr(gx, name)()
    state = tx.init(params)
    assert state.mu["w"].dtype == jnp.float16 and state.nu["w"].dtype == jnp.float32
    for g in (0.0, 1e-3, 0.0, 2e-4, 30.0):
        updates, state = jax.jit(tx.update)({"w": jnp.full(2, g, jnp.float16)}, state, params)
        assert updates["w"].dtype == jnp.float16
        assert np.all(np.isfinite(np.asarray(updates["w"], np.float32))), (name, g)


@pytest.mark.parametrize("name", ["scale_by_belief", "scale_by_yogi", "scale_by_radam"])
def test_complex_gradients_match_optax(name):
    rng = np.random.default_rng(5)
    params = {"z": jnp.zeros((3, 2), jnp.complex64), "s": jnp.zeros((), jnp.complex64)}

    def complex_tree(scale):
        return jax.tree.map(lambda p: jnp.asarray(
            scale * (rng.standard_normal(p.shape) + 1j * rng.standard_normal(p.shape)),
            jnp.complex64), params)

    grads_seq = [complex_tree(s) for s in (1.0, 0.3, 2.0, 0.0, 1.5) * 6]
    # b2 = 0.9 for RAdam: no cancellation in optax's float32 rho_t.
    kwargs = {"b2": 0.9} if name == "scale_by_radam" else {}
    ours, _ = run_updates(getattr(gx, name)(**kwargs), params, grads_seq)
    theirs, _ = run_optax(getattr(optax, name)(**kwargs), params, grads_seq)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        for a, e in zip(jax.tree.leaves(mine), jax.tree.leaves(ref)):
            assert a.dtype == jnp.complex64
            np.testing.assert_allclose(a, e, rtol=2e-5, atol=1e-6, err_msg=f"step {step}")
