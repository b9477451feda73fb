"""``gx.torch``'s Adadelta, Adamax, NAdam, RAdam, Rprop and ASGD against ``torch.optim``, run live.

As ``test_presets.py``: 60 steps on a nested tree with large (x30) and
all-zero gradient steps, every argument of each preset in some configuration,
a learning-rate schedule (``LambdaLR``) for each optimizer that reads its
``lr`` at every step, params compared after every step at rtol 1e-5. Then the
special cases: Rprop's sign flips and clipped step sizes, RAdam below and
above its threshold, NAdam's decoupled decay, ASGD's average against torch's
``state["ax"]``, and bad arguments.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.pytorch.harness import (
    STEPS,
    assert_leaves_close,
    check_parity,
    gradient_stream,
    initial_params,
    run_gradxform,
    run_torch,
)

Adadelta, Adamax, NAdam, RAdam = gx.torch.Adadelta, gx.torch.Adamax, gx.torch.NAdam, gx.torch.RAdam
ASGD, Rprop = gx.torch.ASGD, gx.torch.Rprop
PRESETS = {f.__name__: f for f in (Adadelta, Adamax, NAdam, RAdam, Rprop, ASGD)}


def _decay(k):
    return 0.95 ** k


def _inverse(k):
    return 1.0 / (1.0 + 0.1 * k)


CONFIGS = {
    "Adadelta": [
        (dict(), None),
        (dict(lr=0.5, rho=0.5), None),
        (dict(lr=1.0, rho=0.95, eps=1e-3, weight_decay=1e-2), None),
        (dict(lr=0.1, rho=1.0, maximize=True), None),
        (dict(lr=1.0, eps=1e-4, maximize=True), _decay),
    ],
    "Adamax": [
        (dict(), None),
        (dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-3), None),
        (dict(lr=1e-2, weight_decay=1e-2, maximize=True), None),
        (dict(lr=1e-2, betas=(0.999, 0.999)), None),
        (dict(lr=1e-2, eps=0.0), None),
        (dict(lr=1e-2, weight_decay=1e-3), _inverse),
    ],
    "NAdam": [
        (dict(), None),
        (dict(lr=1e-2, momentum_decay=0.0), None),
        (dict(lr=1e-2, momentum_decay=1.0, betas=(0.8, 0.99), eps=1e-3), None),  # Keras's schedule
        (dict(lr=1e-2, weight_decay=1e-2), None),
        (dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True), None),
        (dict(lr=1e-2, betas=(0.99, 0.999), momentum_decay=0.5), _decay),
        (dict(lr=1e-2, weight_decay=0.05, decoupled_weight_decay=True), _inverse),
    ],
    "RAdam": [
        (dict(), None),
        (dict(lr=1e-2, betas=(0.9, 0.99)), None),
        (dict(lr=1e-2, betas=(0.9, 0.5)), None),  # rho_inf = 3: never rectified
        (dict(lr=1e-2, eps=1e-3, weight_decay=1e-2), None),
        (dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True), _decay),
        (dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-2), _inverse),
    ],
    "Rprop": [  # lr is read once: a schedule is rejected (test_rprop_ignores_a_schedule...)
        (dict(), None),
        (dict(lr=0.05, etas=(0.3, 2.0), step_sizes=(1e-3, 0.2)), None),
        (dict(lr=1e-3, etas=(0.6, 1.1), step_sizes=(1e-3, 50), maximize=True), None),
        (dict(lr=0.1, step_sizes=(0.0, 0.1)), None),
    ],
    "ASGD": [
        (dict(), None),
        (dict(lr=0.05, lambd=0.1, alpha=0.5, t0=10), None),
        (dict(lr=0.05, t0=0, weight_decay=1e-2, maximize=True), None),
        (dict(lr=0.05, lambd=0.0, alpha=0.0, t0=3.5), None),
        (dict(lr=0.05, lambd=0.05, alpha=1.0, t0=20), _decay),
        (dict(lr=0.02, lambd=1.0, weight_decay=1e-3), _inverse),
    ],
}
_PARAMS = [pytest.param(name, kwargs, factor, id=f"{name}-{i}")
           for name, configs in sorted(CONFIGS.items())
           for i, (kwargs, factor) in enumerate(configs)]


@pytest.mark.parametrize("name, kwargs, factor", _PARAMS)
def test_preset_matches_torch(name, kwargs, factor):
    check_parity(name, kwargs, factor)


def test_every_argument_of_every_preset_is_exercised():
    assert set(CONFIGS) == set(PRESETS)
    for name, configs in CONFIGS.items():
        used = {key for kwargs, _ in configs for key in kwargs}
        assert set(inspect.signature(PRESETS[name]).parameters) <= used, name
        # Rprop reads lr once; its schedule case is test_rprop_ignores_a_schedule_...
        assert name == "Rprop" or any(factor is not None for _, factor in configs), name


def _sign_pattern_stream(steps=24, seed=3):
    """Gradients whose signs flip on a fixed pattern per coordinate, magnitudes random."""
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree.flatten(initial_params())
    patterns = [rng.choice([-1.0, 1.0], size=(steps,) + np.shape(x)) for x in leaves]
    for pattern in patterns:  # some coordinates keep their sign throughout: step sizes grow
        pattern.reshape(steps, -1)[:, 0] = 1.0
    return [treedef.unflatten([
        (pattern[t] * (0.5 + rng.random(np.shape(x)))).astype(np.float32)
        for pattern, x in zip(patterns, leaves)]) for t in range(steps)]


# --- Rprop -----------------------------------------------------------------------------


def test_rprop_sign_flips_stop_the_step_and_shrink_the_step_size_as_torch():
    grads = _sign_pattern_stream()
    kwargs = dict(lr=0.05, etas=(0.3, 2.0), step_sizes=(1e-3, 0.2))
    ours, ref = check_parity("Rprop", kwargs, grads=grads)
    ref_run, ref_states = run_torch("Rprop", kwargs, grads=grads, with_states=True)
    _, our_states = run_gradxform(Rprop(**kwargs), grads, with_states=True)
    # torch's reference really flips, stands still there, and reaches both clips.
    first = [np.asarray(x) for x in jax.tree.leaves(initial_params())]
    flips = stands = 0
    previous_sign = [np.zeros_like(x) for x in first]
    for t, g in enumerate(grads):
        for i, gi in enumerate(jax.tree.leaves(g)):
            flipped = np.sign(gi) * previous_sign[i] < 0
            before = first[i] if t == 0 else ref_run[t - 1][i]
            np.testing.assert_array_equal(ref_run[t][i][flipped], before[flipped])
            flips += int(flipped.sum())
            stands += int((ref_run[t][i] == before).sum())
            previous_sign[i] = np.where(flipped, 0.0, np.sign(gi))
    assert flips > 20 and stands >= flips
    sizes = np.concatenate([s["step_size"].ravel() for s in ref_states[-1]])
    assert sizes.min() == pytest.approx(1e-3) and sizes.max() == pytest.approx(0.2)
    for t in (0, 5, len(grads) - 1):
        assert_leaves_close(gx.tree_get(our_states[t], "step_sizes"),
                      [s["step_size"] for s in ref_states[t]], f"step sizes at step {t}")


def test_rprop_ignores_a_schedule_after_construction_so_lr_must_be_a_number():
    """torch's Rprop reads lr once (its step sizes start at it): LambdaLR changes nothing."""
    grads = gradient_stream(steps=20)
    scheduled = run_torch("Rprop", dict(lr=0.05), factor=_decay, grads=grads)
    plain = run_torch("Rprop", dict(lr=0.05), grads=grads)
    for a, b in zip(scheduled, plain):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    ours = run_gradxform(Rprop(lr=0.05), grads)
    for a, b in zip(ours, scheduled):
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6 * max(1, np.abs(y).max()))
    with pytest.raises(TypeError, match=r"torch\.Rprop: lr must be a number.*value at step 0"):
        Rprop(lr=lambda count: 0.05)


# --- RAdam -----------------------------------------------------------------------------


def _torch_rho(b2, t):
    """RAdam's rho_t as torch computes it (float64, on the host)."""
    rho_inf = 2 / (1 - b2) - 1
    return rho_inf - 2 * t * b2**t / (1 - b2**t)


@pytest.mark.parametrize("b2, first_rectified",
                         [(0.999, 6), (0.9, 6), (0.8, 7), (0.7, 10), (0.5, None)])
def test_radam_takes_sgd_steps_below_the_threshold_and_adaptive_ones_above(b2, first_rectified):
    rhos = [_torch_rho(b2, t) for t in range(1, STEPS + 1)]
    rectified = [t for t, rho in zip(range(1, STEPS + 1), rhos) if rho > 5]
    assert (rectified[0] if rectified else None) == first_rectified
    assert all(abs(rho - 5) > 1e-3 for rho in rhos)  # no step near the switch (> vs >=)
    kwargs = dict(lr=0.1, betas=(0.9, b2), eps=1e-3)
    ours, ref = check_parity("RAdam", kwargs)
    # Below the threshold torch's step is lr * m_hat: at step 1, m_hat = g.
    start = jax.tree.leaves(initial_params())
    g = jax.tree.leaves(gradient_stream()[0])
    for x0, g0, x1 in zip(start, g, ref[0]):
        np.testing.assert_allclose(x1, x0 - 0.1 * g0, rtol=1e-6, atol=1e-7)


# --- NAdam -----------------------------------------------------------------------------


def test_nadam_decoupled_decay_shrinks_the_params_where_coupled_decay_moves_the_moments():
    grads = [jax.tree.map(np.zeros_like, g) for g in gradient_stream(steps=3)]
    decoupled = dict(lr=0.1, weight_decay=0.5, decoupled_weight_decay=True)
    coupled = dict(lr=0.1, weight_decay=0.5)
    ours_decoupled, ref_decoupled = check_parity("NAdam", decoupled, grads=grads)
    ours_coupled, ref_coupled = check_parity("NAdam", coupled, grads=grads)
    start = jax.tree.leaves(initial_params())[0]
    np.testing.assert_allclose(ref_decoupled[0][0], start * (1 - 0.1 * 0.5), rtol=1e-6)
    assert not np.allclose(ref_coupled[0][0], ref_decoupled[0][0], rtol=1e-3)
    assert [m.name for m in NAdam(**decoupled).children] == [
        "scale_by_nadam", "scale_by_learning_rate", "decoupled_weight_decay"]
    assert [m.name for m in NAdam(**coupled).children] == [
        "add_decayed_weights", "scale_by_nadam", "scale_by_learning_rate"]


def test_nadam_keeps_torchs_running_product_of_the_momentum_schedule():
    kwargs = dict(lr=1e-2, momentum_decay=0.3)
    grads = gradient_stream(steps=12)
    _, ref_states = run_torch("NAdam", kwargs, grads=grads, with_states=True)
    _, our_states = run_gradxform(NAdam(**kwargs), grads, with_states=True)
    for t in range(len(grads)):
        np.testing.assert_allclose(float(gx.tree_get(our_states[t], "mu_product")),
                                   float(ref_states[t][0]["mu_product"]), rtol=1e-6)


# --- ASGD ------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, factor", [
    (dict(lr=0.05, lambd=0.1, t0=10), None),
    (dict(lr=0.05, t0=3.5, weight_decay=1e-2), _decay),
    (dict(lr=0.05), None),  # t0 = 1e6: the average is the params
])
def test_asgd_average_is_torchs_ax_through_finalize_params(kwargs, factor):
    grads = gradient_stream()
    ref, ref_states = run_torch("ASGD", kwargs, factor, grads, with_states=True)
    ours_kwargs = dict(kwargs)
    if factor is not None:
        ours_kwargs["lr"] = lambda count: kwargs["lr"] * factor(jnp.asarray(count, jnp.float32))
    leaves, our_states = run_gradxform(ASGD(**ours_kwargs), grads, with_states=True)
    treedef = jax.tree.structure(initial_params())
    ours = [jax.tree.unflatten(treedef, step) for step in leaves]
    for t in range(len(grads)):
        assert_leaves_close(ours[t], ref[t], f"params at step {t}")
        average = gx.finalize_params(ours[t], our_states[t])
        assert_leaves_close(average, [s["ax"] for s in ref_states[t]], f"ax at step {t}")
    t0 = kwargs.get("t0", 1e6)
    if t0 < STEPS - 2:  # averaging began: the average is not the params any more
        last = jax.tree.leaves(gx.finalize_params(ours[-1], our_states[-1]))
        assert not np.allclose(last[0], jax.tree.leaves(ours[-1])[0], rtol=1e-3)
    else:
        for a, p in zip(jax.tree.leaves(gx.finalize_params(ours[-1], our_states[-1])),
                        jax.tree.leaves(ours[-1])):
            np.testing.assert_array_equal(a, p)


def test_asgd_chain_is_made_of_catalogue_pieces():
    tx = ASGD(lr=0.05, lambd=0.1, t0=10, weight_decay=1e-2, maximize=True)
    assert [m.name for m in tx.children] == [
        "scale", "add_decayed_weights", "scale_by_learning_rate", "decoupled_weight_decay",
        "params_average"]
    assert [m.name for m in ASGD(lambd=0.0).children] == [
        "scale_by_learning_rate", "params_average"]


# --- bad arguments -----------------------------------------------------------------------


@pytest.mark.parametrize("call, error, words", [
    (lambda: Adadelta(lr=-1.0), ValueError, ["torch.Adadelta", "lr", "-1.0"]),
    (lambda: Adadelta(rho=1.5), ValueError, ["torch.Adadelta", "rho", "1.5"]),
    (lambda: Adadelta(eps=0.0), ValueError, ["torch.Adadelta", "eps", "0.0"]),
    (lambda: Adadelta(weight_decay=-0.1), ValueError, ["torch.Adadelta", "weight_decay", "-0.1"]),
    (lambda: Adadelta(maximize="yes"), TypeError, ["torch.Adadelta", "maximize", "'yes'"]),
    (lambda: Adamax(betas=(0.9, 1.0)), ValueError, ["torch.Adamax", "betas[1]", "(0.9, 1.0)"]),
    (lambda: Adamax(betas=0.9), TypeError, ["torch.Adamax", "betas", "0.9"]),
    (lambda: Adamax(eps=-1e-8), ValueError, ["torch.Adamax", "eps", "-1e-08"]),
    (lambda: NAdam(momentum_decay=-0.1), ValueError, ["torch.NAdam", "momentum_decay", "-0.1"]),
    (lambda: NAdam(decoupled_weight_decay=1), TypeError,
     ["torch.NAdam", "decoupled_weight_decay", "1"]),
    (lambda: NAdam(betas=(1.5, 0.999)), ValueError, ["torch.NAdam", "betas[0]", "1.5"]),
    (lambda: NAdam(lr=float("nan")), ValueError, ["torch.NAdam", "lr", "nan"]),
    (lambda: RAdam(decoupled_weight_decay="no"), TypeError,
     ["torch.RAdam", "decoupled_weight_decay", "'no'"]),
    (lambda: RAdam(eps=float("inf")), ValueError, ["torch.RAdam", "eps", "inf"]),
    (lambda: RAdam(weight_decay=-1.0), ValueError, ["torch.RAdam", "weight_decay", "-1.0"]),
    (lambda: Rprop(lr=0.0), ValueError, ["torch.Rprop", "lr", "0.0"]),
    (lambda: Rprop(lr=100.0), ValueError, ["torch.Rprop", "lr=100.0", "step_sizes=(1e-06, 50)"]),
    (lambda: Rprop(lr=1e-3, step_sizes=(1e-2, 1.0)), ValueError, ["torch.Rprop", "lr=0.001"]),
    (lambda: Rprop(etas=(0.5, 1.0)), ValueError, ["torch.Rprop", "etas[1]", "(0.5, 1.0)"]),
    (lambda: Rprop(etas=(1.0, 1.2)), ValueError, ["torch.Rprop", "etas[0]", "(1.0, 1.2)"]),
    (lambda: Rprop(etas=(0.0, 1.2)), ValueError, ["torch.Rprop", "etas[0]", "(0.0, 1.2)"]),
    (lambda: Rprop(etas=0.5), TypeError, ["torch.Rprop", "etas", "0.5"]),
    (lambda: Rprop(step_sizes=(1.0, 0.5), lr=0.7), ValueError,
     ["torch.Rprop", "step_sizes", "min <= max", "(1.0, 0.5)"]),
    (lambda: Rprop(step_sizes=(-1.0, 0.5)), ValueError, ["torch.Rprop", "step_sizes[0]", "-1.0"]),
    (lambda: Rprop(step_sizes=(0.0, 0.0)), ValueError, ["torch.Rprop", "step_sizes[1]"]),
    (lambda: Rprop(step_sizes=("a", 1.0)), TypeError, ["torch.Rprop", "step_sizes", "'a'"]),
    (lambda: Rprop(maximize=None), TypeError, ["torch.Rprop", "maximize", "None"]),
    (lambda: ASGD(lambd=-1e-4), ValueError, ["torch.ASGD", "lambd", "-0.0001"]),
    (lambda: ASGD(alpha=-0.5), ValueError, ["torch.ASGD", "alpha", "-0.5"]),
    (lambda: ASGD(t0=-1.0), ValueError, ["torch.ASGD", "t0", "-1.0"]),
    (lambda: ASGD(t0="1e6"), TypeError, ["torch.ASGD", "t0", "'1e6'"]),
    (lambda: ASGD(lr=-0.01), ValueError, ["torch.ASGD", "lr", "-0.01"]),
    (lambda: ASGD(weight_decay=float("nan")), ValueError, ["torch.ASGD", "weight_decay", "nan"]),
    (lambda: ASGD(maximize=0), TypeError, ["torch.ASGD", "maximize", "0"]),
])
def test_bad_arguments_raise_naming_the_preset_the_argument_and_the_value(call, error, words):
    with pytest.raises(error) as caught:
        call()
    assert type(caught.value) is error
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


# --- what every preset is ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_ordinary_chains_that_name_the_preset_in_errors(name):
    tx = PRESETS[name]()
    assert tx.name == "chain"
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    with pytest.raises(Exception) as caught:
        tx.update({"v": jnp.ones(3)}, state, params)
    assert f"torch.{name}" in str(caught.value)


@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"Rprop"}))
def test_injected_hyperparameters_give_the_plain_presets_numbers(name):
    """With lr as given, and with lr changed in the state (the runtime branch) before step 1.

    ``weight_decay`` and ``lambd`` choose the chain's members (as in the presets of
    ``test_presets.py``), so they are static; every other number is injected."""
    grads = gradient_stream(steps=6)
    static = ("weight_decay", "lambd") if name == "ASGD" else ("weight_decay",)
    injected_tx = gx.inject_hyperparams(PRESETS[name], static_args=static)(
        lr=0.01, weight_decay=1e-2)
    for lr in (0.01, 0.02):
        plain = run_gradxform(PRESETS[name](lr=lr, weight_decay=1e-2), grads)
        params = jax.tree.map(jnp.asarray, initial_params())
        state = gx.tree_set(injected_tx.init(params), lr=lr)
        update = jax.jit(injected_tx.update)
        for g, expected in zip(grads, plain):
            updates, state = update(jax.tree.map(jnp.asarray, g), state, params)
            params = gx.apply_updates(params, updates)
            for x, y in zip(jax.tree.leaves(params), expected):
                np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, err_msg=f"lr={lr}")


_EXPORTED = (set(PRESETS) <= set(gx.torch.__all__)
             and {"scale_by_nadam", "params_average"} <= set(gx.__all__)
             and "averaged_sgd_schedule" in gx.schedules.__all__)


@pytest.mark.skipif(not _EXPORTED, reason="to_config finds constructors through the __all__ "
                    "lists: the presets and their new pieces are not exported yet")
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_round_trip(name):
    tx = PRESETS[name]()
    rebuilt = gx.from_config(gx.to_config(tx))
    assert repr(rebuilt) == repr(tx)
