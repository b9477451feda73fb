"""scale_by_adam against optax, and scale_by_amsgrad against the PyTorch/Keras rule.

* ``scale_by_adam`` must match ``optax.scale_by_adam`` over 50 jitted steps on a
  nested pytree, for several hyperparameter sets and for float32, bfloat16 and
  float16 (low precision is compared with optax run in float32, see
  `tests.helpers.compare_with_optax`).
* optax#1414: in bfloat16 optax rounds ``b2=0.999`` to 1.0, so its second
  moment is a running *sum*; gradxform keeps ``b2`` in float32 arithmetic. Both
  are checked against NumPy simulations of the two arithmetics.
* ``scale_by_amsgrad`` takes the running maximum of the *raw* second moment
  (PyTorch ``Adam(amsgrad=True)``, Keras ``Adam(amsgrad=True)``); it is checked
  against that rule written in NumPy (float64), shown to differ from optax's
  max-of-the-debiased-moment rule, and to equal optax's with
  ``bias_correction_nu=False``.
"""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    LOW_PRECISION,
    assert_trees_close,
    compare_with_optax,
    gradient_stream,
    random_params,
    run_optax,
    run_updates,
)

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
STEPS = 50
BF16 = ml_dtypes.bfloat16

# ---------------------------------------------------------------- scale_by_adam


ADAM_CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"b1": 0.0}, id="b1=0"),
    pytest.param({"b1": 0.8, "b2": 0.99, "eps": 1e-6, "eps_root": 1e-4}, id="eps_root"),
    pytest.param({"nesterov": True}, id="nesterov"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("kwargs", ADAM_CASES)
def test_scale_by_adam_matches_optax(dtype, kwargs):
    # In low precision gradxform keeps its moments in float32, the state that
    # the float32 optax reference has; only the updates are rounded.
    state_dtypes = (
        {"mu_dtype": jnp.float32, "nu_dtype": jnp.float32} if dtype in LOW_PRECISION else {}
    )
    compare_with_optax(
        gx.scale_by_adam(**kwargs, **state_dtypes), optax.scale_by_adam(**kwargs), dtype=dtype
    )


def adam_reference(grads_seq, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, nesterov=False,
                   mu_storage=None):
    """Adam (NAdam with ``nesterov``) in float64 NumPy, leaf by leaf; each step's updates.

    With ``mu_storage``, the first moment is rounded to that dtype after every
    step, as a ``mu_dtype`` state is stored; the update uses the unrounded one.
    """
    leaves0, treedef = jax.tree.flatten(grads_seq[0])
    m = [np.zeros(x.shape) for x in leaves0]
    v = [np.zeros(x.shape) for x in leaves0]
    outputs = []
    for t, grads in enumerate(grads_seq, start=1):
        out = []
        for i, g in enumerate(treedef.flatten_up_to(grads)):
            g = np.asarray(g, np.float64)
            m_new = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            if nesterov:
                m_hat = b1 * m_new / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
            else:
                m_hat = m_new / (1 - b1**t)
            out.append(m_hat / (np.sqrt(v[i] / (1 - b2**t) + eps_root) + eps))
            m[i] = m_new if mu_storage is None else m_new.astype(mu_storage).astype(np.float64)
        outputs.append(treedef.unflatten(out))
    return outputs


@pytest.mark.parametrize("nesterov", [False, True])
def test_scale_by_adam_bfloat16_mu_in_float32(nesterov):
    """float32 params, bfloat16 first moment: float32 arithmetic, mu rounded when stored.

    gradxform matches that rule (NumPy, float64 arithmetic with bf16 storage)
    to float32 precision. optax agrees only to bf16 precision: it computes
    ``b1 * mu`` in bf16 (the weakly typed ``b1`` takes the stored moment's dtype,
    so 0.9 becomes 0.8984 and the product is rounded), hence the low-precision
    tolerance for that comparison.
    """
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    tx = gx.scale_by_adam(mu_dtype=jnp.bfloat16, nesterov=nesterov)
    ours, state = run_updates(tx, params, grads_seq)
    assert {x.dtype for x in jax.tree.leaves(state.mu)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(state.nu)} == {jnp.dtype(jnp.float32)}
    expected = adam_reference(grads_seq, nesterov=nesterov, mu_storage=BF16)
    theirs, _ = run_optax(
        optax.scale_by_adam(mu_dtype=jnp.bfloat16, nesterov=nesterov), params, grads_seq
    )
    for step, (mine, ref, optax_ref) in enumerate(zip(ours, expected, theirs)):
        assert {x.dtype for x in jax.tree.leaves(mine)} == {jnp.dtype(jnp.float32)}
        assert_trees_close(mine, ref, 5e-5, 5e-5, context=f"step {step} vs NumPy")
        assert_trees_close(mine, optax_ref, 2e-2, 2e-2, context=f"step {step} vs optax")


def test_scale_by_adam_state_dtypes():
    """Moments in the requested dtypes; by default in the params' dtype."""
    params = random_params(0, jnp.bfloat16)
    state = gx.scale_by_adam(mu_dtype=jnp.float32, nu_dtype=jnp.float32).init(params)
    assert state.count.dtype == jnp.int32
    assert {x.dtype for x in jax.tree.leaves(state.mu)} == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(state.nu)} == {jnp.dtype(jnp.float32)}
    state = gx.scale_by_adam().init(params)
    assert {x.dtype for x in jax.tree.leaves(state.nu)} == {jnp.dtype(jnp.bfloat16)}


# ------------------------------------------------------------------- optax#1414


def _bf16_streams(n=512, noisy_steps=300, seed=0):
    """Gradients of varying scale, exactly representable in bfloat16."""
    rng = np.random.default_rng(seed)
    return [
        (rng.uniform(0.1, 3.0) * rng.standard_normal(n)).astype(BF16) for _ in range(noisy_steps)
    ]


def _nu_float32_math_bf16_storage(grads, b2):
    """What gradxform promises: float32 arithmetic with the real b2, bf16 storage."""
    nu = np.zeros(grads[0].shape, BF16)
    for g in grads:
        g32 = g.astype(np.float32)
        nu32 = np.float32(1 - b2) * (g32 * g32) + np.float32(b2) * nu.astype(np.float32)
        nu = nu32.astype(BF16)
    return nu


def _nu_bf16_math(grads, b2):
    """What optax does with bf16 params: every operand, b2 included, in bf16."""
    nu = np.zeros(grads[0].shape, BF16)
    for g in grads:
        nu = BF16(1 - b2) * (g * g) + BF16(b2) * nu
    return nu


def _run_nu(tx, grads, standard=False):
    """Feeds bf16 ``grads`` through ``tx`` on bf16 params; returns nu after every step."""
    params = jnp.zeros(grads[0].shape, jnp.bfloat16)
    update = jax.jit(tx.update)
    history = []
    with jax.numpy_dtype_promotion("standard" if standard else "strict"):
        state = tx.init(params)
        for g in grads:
            _, state = update(jnp.asarray(g), state)
            history.append(state.nu)
    return [np.asarray(nu) for nu in history]


def _median_relative_gap(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.median(np.abs(a / b - 1)))


def test_optax_1414_b2_is_not_rounded_to_one_in_bfloat16():
    """bf16 params and bf16 moments: gradxform's nu is an EMA with b2=0.999, optax's a sum.

    In bfloat16 the nearest value to 0.999 is 1.0, so optax's
    ``(1 - b2) * g**2 + b2 * nu`` becomes ``nu + 0.001 * g**2`` and never
    forgets. gradxform computes ``0.999 * nu + 0.001 * g**2`` in float32 and
    rounds only the stored nu. A bf16-stored moment cannot show a 0.1 % decay
    per step (half an ulp is 0.2 % to 0.4 %), so the difference shows in the
    accumulation: after 300 steps of noisy gradients the two rules are several
    percent apart, far more than the storage rounding.
    """
    b2 = 0.999
    assert float(BF16(b2)) == 1.0  # the root cause
    grads = _bf16_streams()
    ema = _nu_float32_math_bf16_storage(grads, b2)
    running_sum = _nu_bf16_math(grads, b2)
    assert _median_relative_gap(running_sum, ema) > 0.03  # the two rules really differ

    ours = _run_nu(gx.scale_by_adam(b2=b2), grads)[-1]
    assert ours.dtype == jnp.bfloat16
    np.testing.assert_allclose(ours.astype(np.float64), ema.astype(np.float64), rtol=2**-7)
    assert _median_relative_gap(ours, running_sum) > 0.03

    # Documents the optax bug: its bf16 nu is the b2 = 1.0 running sum.
    theirs = _run_nu(optax.scale_by_adam(b2=b2), grads, standard=True)[-1]
    assert theirs.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        theirs.astype(np.float64), running_sum.astype(np.float64), rtol=2**-7
    )
    assert _median_relative_gap(theirs, ema) > 0.03


def test_optax_1414_float32_nu_decays_with_bfloat16_params():
    """With bf16 params and gradients, a float32 nu decays by exactly b2 per zero step.

    gradxform lets the second moment live in float32 (``nu_dtype``) whatever the
    params' dtype; it then follows the float64 reference to float32 precision,
    also through 300 zero-gradient steps where it must shrink by 0.999**300.
    optax has no ``nu_dtype``: its nu is bf16, and with b2 rounded to 1.0 it does
    not move at all during the zero-gradient steps (nor could it: a 0.1 % change
    is below half a bf16 ulp).
    """
    b2 = 0.999
    noisy = _bf16_streams(n=64, noisy_steps=50, seed=3)
    zeros = [np.zeros(64, BF16)] * 300

    nu_ref = np.zeros(64)
    for g in noisy:
        nu_ref = (1 - b2) * g.astype(np.float64) ** 2 + b2 * nu_ref
    nu_after_noise = nu_ref.copy()
    nu_ref = nu_ref * b2 ** len(zeros)

    tx = gx.scale_by_adam(b2=b2, mu_dtype=jnp.float32, nu_dtype=jnp.float32)
    ours = _run_nu(tx, noisy + zeros)
    ours_mid, ours_end = ours[len(noisy) - 1], ours[-1]
    assert ours_end.dtype == np.float32
    np.testing.assert_allclose(ours_mid, nu_after_noise, rtol=1e-5)
    np.testing.assert_allclose(ours_end, nu_ref, rtol=1e-4)
    np.testing.assert_allclose(ours_end / ours_mid, b2 ** len(zeros), rtol=1e-4)

    theirs = _run_nu(optax.scale_by_adam(b2=b2), noisy + zeros, standard=True)
    theirs_mid, theirs_end = theirs[len(noisy) - 1], theirs[-1]
    assert theirs_end.dtype == jnp.bfloat16
    np.testing.assert_array_equal(theirs_end, theirs_mid)  # no decay at all
    # ... so it ends about 1 / 0.999**300 = 1.35 times the reference.
    assert np.median(theirs_end.astype(np.float64) / nu_ref) > 1.2


# ------------------------------------------------------------- scale_by_amsgrad


def amsgrad_reference(grads_seq, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0,
                      bias_correction_mu=True, bias_correction_nu=True):
    """The PyTorch/Keras AMSGrad rule in float64 NumPy, leaf by leaf; each step's updates."""
    leaves0, treedef = jax.tree.flatten(grads_seq[0])
    m = [np.zeros(x.shape) for x in leaves0]
    v = [np.zeros(x.shape) for x in leaves0]
    vmax = [np.zeros(x.shape) for x in leaves0]
    outputs = []
    for t, grads in enumerate(grads_seq, start=1):
        out = []
        for i, g in enumerate(treedef.flatten_up_to(grads)):
            g = np.asarray(g, np.float64)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            vmax[i] = np.maximum(vmax[i], v[i])
            m_hat = m[i] / (1 - b1**t) if bias_correction_mu else m[i]
            v_hat = vmax[i] / (1 - b2**t) if bias_correction_nu else vmax[i]
            out.append(m_hat / (np.sqrt(v_hat + eps_root) + eps))
        outputs.append(treedef.unflatten(out))
    return outputs


AMSGRAD_CASES = [
    pytest.param({}, id="defaults"),
    pytest.param({"b1": 0.5, "b2": 0.9, "eps": 1e-4, "eps_root": 1e-6}, id="eps_root"),
    pytest.param({"b1": 0.0, "b2": 0.99}, id="b1=0"),
    pytest.param({"bias_correction_mu": False, "bias_correction_nu": False}, id="no-correction"),
]


def _check_amsgrad_against_reference(dtype, kwargs):
    low = dtype in LOW_PRECISION
    state_dtypes = {"mu_dtype": jnp.float32, "nu_dtype": jnp.float32} if low else {}
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours, state = run_updates(gx.scale_by_amsgrad(**kwargs, **state_dtypes), params, grads_seq)
    expected = amsgrad_reference(grads_seq, **kwargs)
    rtol, atol = (2e-2, 2e-2) if low else (2e-5, 2e-6)
    for step, (mine, ref) in enumerate(zip(ours, expected)):
        assert {x.dtype for x in jax.tree.leaves(mine)} <= {jnp.dtype(dtype)}
        assert_trees_close(mine, ref, rtol, atol, context=f"step {step}")
    assert int(state.count) == STEPS


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_scale_by_amsgrad_matches_pytorch_rule_low_precision(dtype):
    """Defaults in every dtype; the low-precision runs keep float32 moments."""
    _check_amsgrad_against_reference(dtype, {})


@pytest.mark.parametrize("kwargs", AMSGRAD_CASES[1:])
def test_scale_by_amsgrad_matches_pytorch_rule(kwargs):
    _check_amsgrad_against_reference(jnp.float32, kwargs)


def _shrinking_transform():
    """For `compare_with_optax`: scales the k-th gradient tree by 3 * 0.9**k."""
    factors = (3.0 * 0.9**k for k in range(10**6))
    return lambda grads: jax.tree.map(lambda g, f=next(factors): g * f, grads)


def _shrinking(grads_seq):
    """Gradients whose scale shrinks 10 % per step: the raw v then peaks late, v_hat early."""
    transform = _shrinking_transform()
    return [transform(grads) for grads in grads_seq]


def test_scale_by_amsgrad_differs_from_optax_on_shrinking_gradients():
    """optax maxes the debiased v_hat; with shrinking gradients that keeps step 1's g**2.

    The PyTorch rule's max of the raw v keeps growing after step 1 (v_t is a
    sum of 0.001 g**2 terms early on), so the two updates part ways.
    """
    params = random_params(0)
    grads_seq = _shrinking(gradient_stream(params, STEPS, seed=1, zero_every=0))
    ours, _ = run_updates(gx.scale_by_amsgrad(), params, grads_seq)
    theirs, _ = run_optax(optax.scale_by_amsgrad(), params, grads_seq)
    expected = amsgrad_reference(grads_seq)
    for mine, ref in zip(ours, expected):
        assert_trees_close(mine, ref, 2e-5, 2e-6)
    # The two rules agree at step 1 (a single moment) and then disagree widely.
    assert_trees_close(theirs[0], expected[0], 2e-5, 2e-6)
    ours_last = np.concatenate([np.ravel(x) for x in jax.tree.leaves(ours[-1])])
    theirs_last = np.concatenate([np.ravel(x) for x in jax.tree.leaves(theirs[-1])])
    ratio = np.abs(ours_last) / np.abs(theirs_last)
    assert np.median(ratio) > 2.0, np.median(ratio)


@pytest.mark.parametrize(
    "dtype, shrink",
    [(jnp.float32, False), (jnp.float32, True), (jnp.bfloat16, True), (jnp.float16, False)],
    ids=["float32-random", "float32-shrinking", "bfloat16-shrinking", "float16-random"],
)
def test_scale_by_amsgrad_equals_optax_without_nu_correction(dtype, shrink):
    """Without debiasing nu, max(v_hat) is max(v): the two rules coincide."""
    state_dtypes = (
        {"mu_dtype": jnp.float32, "nu_dtype": jnp.float32} if dtype in LOW_PRECISION else {}
    )
    compare_with_optax(
        gx.scale_by_amsgrad(bias_correction_nu=False, **state_dtypes),
        optax.scale_by_amsgrad(bias_correction_nu=False),
        dtype=dtype,
        grads_transform=_shrinking_transform() if shrink else None,
    )


@pytest.mark.parametrize("make", [gx.scale_by_adam, gx.scale_by_amsgrad, gx.scale_by_rms, gx.scale_by_adagrad])
def test_float16_params_keep_squared_gradients_in_float32(make):
    """In float16, (1 - b2) g**2 flushes to zero for |g| below about 2e-3, and then
    m / (sqrt(v) + eps) overflows float16 (hypothesis found it: Adam on a float16
    scalar with gradients 0, 1e-3, 0 stepped by -inf). The squares are kept in
    float32 by default; the update and m stay float16."""
    tx = make()
    params = {"w": jnp.float16(0.5)}
    state = tx.init(params)
    squares = [leaf for leaf in jax.tree.leaves(state) if leaf.dtype != jnp.int32]
    assert jnp.dtype(jnp.float32) in {leaf.dtype for leaf in squares}
    update = jax.jit(tx.update)
    for g in (0.0, 1e-3, 0.0, 2e-4):
        updates, state = update({"w": jnp.float16(g)}, state, params)
        assert updates["w"].dtype == jnp.float16
        # Each of these steps is bounded by about sqrt(1 / (1 - decay)) ~ 3.2 in exact
        # arithmetic; with float16 squares Adam's third step was 33216 (or inf).
        assert abs(float(updates["w"])) < 10, (g, updates)


@pytest.mark.parametrize(
    "make",
    [lambda dtype: gx.scale_by_adam(mu_dtype=dtype), lambda dtype: gx.trace(0.9, accumulator_dtype=dtype),
     lambda dtype: gx.multi_steps(gx.sgd(0.1), 2, accumulator_dtype=dtype)],
    ids=["adam-mu", "trace", "multi_steps"],
)
def test_a_real_state_dtype_keeps_complex_gradients_complex(make):
    """A float32 moment of complex64 gradients is stored complex64, not cut to its real part:
    the updates equal those with the state in the params' own dtype."""
    params = {"w": jnp.array([1 + 2j, -0.5j], jnp.complex64)}
    grads = [{"w": jnp.array([0.3 - 1j, 2 + 0.5j], jnp.complex64)}, {"w": jnp.array([1j, -1.0], jnp.complex64)}]
    outputs, complex_leaves = [], []
    for dtype in (jnp.float32, None):
        tx = make(dtype)
        state = tx.init(params)
        complex_leaves.append(sum(jnp.iscomplexobj(leaf) for leaf in jax.tree.leaves(state)))
        for g in grads:
            updates, state = tx.update(g, state, params)
        outputs.append(updates["w"])
    assert complex_leaves[0] == complex_leaves[1] > 0
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6)
    assert np.any(np.imag(outputs[0]) != 0)
