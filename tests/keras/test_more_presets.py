"""``gx.keras`` SGD, RMSprop, Lion, AdamW, Adamax, Adadelta, Nadam, Ftrl and Lamb against live Keras 3.

Each optimizer runs the harness's gradient stream (24 calls, with large, zero
and always-zero gradients) through Keras's jitted ``stateless_apply`` and
through the preset, compared after every call at rtol 1e-5, atol 1e-6. The
configurations cover each optimizer's own arguments and, between them, every
shared argument (weight decay with exclusions, the three clips, EMA with
overwrites, a static loss scale, gradient accumulation, Keras schedules).

Keras's own tests for these optimizers (``keras/src/optimizers/*_test.py``)
are ported below: their expected values are Keras's.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from tests.keras.harness import SHARED, ScheduleSpec, check_parity, run_gradxform, run_keras

_OWN = {
    "sgd": [dict(learning_rate=0.05), dict(learning_rate=0.05, momentum=0.9),
            dict(learning_rate=0.05, momentum=0.9, nesterov=True),
            dict(learning_rate=0.05, momentum=0.5, nesterov=True),
            dict(learning_rate=0.05, nesterov=True), dict(momentum=1.0)],
    "rmsprop": [dict(learning_rate=0.01), dict(learning_rate=0.01, centered=True),
                dict(learning_rate=0.01, momentum=0.9),
                dict(learning_rate=0.01, momentum=0.5, centered=True, rho=0.5),
                dict(learning_rate=0.01, epsilon=1e-3, rho=0.99)],
    "lion": [dict(learning_rate=0.01), dict(learning_rate=0.01, beta_1=1.0, beta_2=0.5),
             dict(learning_rate=0.01, beta_1=0.5, beta_2=0.999), dict(learning_rate=0.01)],
    "adamw": [dict(learning_rate=0.05), dict(learning_rate=0.05, amsgrad=True),
              dict(learning_rate=0.05, weight_decay=0.3, beta_1=0.5, beta_2=0.9),
              dict(learning_rate=0.05, weight_decay=0.0, epsilon=1e-4)],
    "adamax": [dict(learning_rate=0.05), dict(learning_rate=0.05, beta_1=0.5, beta_2=0.9),
               dict(learning_rate=0.05, epsilon=1e-3), dict(learning_rate=0.05, beta_1=0.0)],
    "adadelta": [dict(learning_rate=1.0), dict(learning_rate=1.0, rho=0.5),
                 dict(learning_rate=1.0, epsilon=1e-3, rho=0.99), dict(learning_rate=0.1)],
    # Ftrl and Lamb read the params: Keras decays them first (weight_decay_first).
    "ftrl": [dict(learning_rate=0.05),
             dict(learning_rate=0.05, learning_rate_power=-0.2, initial_accumulator_value=0.4,
                  l1_regularization_strength=0.05, l2_regularization_strength=0.15,
                  l2_shrinkage_regularization_strength=0.01, beta=0.3),
             dict(learning_rate=0.05, l1_regularization_strength=1e-3),
             dict(learning_rate=0.05, l2_shrinkage_regularization_strength=0.1),
             dict(learning_rate=0.05, beta=1.0, initial_accumulator_value=0.0),
             dict(learning_rate=0.05, learning_rate_power=0.0)],
    "nadam": [dict(learning_rate=0.05), dict(learning_rate=0.05, beta_1=0.5, beta_2=0.9),
              dict(learning_rate=0.05, epsilon=1e-3), dict(learning_rate=0.05, beta_1=0.99),
              dict(learning_rate=0.05, weight_decay=0.1)],
    "lamb": [dict(learning_rate=0.01), dict(learning_rate=0.01, beta_1=0.5, beta_2=0.9),
             dict(learning_rate=0.01, epsilon=1e-3), dict(learning_rate=0.01, weight_decay=0.3),
             dict(learning_rate=0.01, weight_decay=0.1)],
}


def _configs():
    for optimizer, own in sorted(_OWN.items()):
        for i, kwargs in enumerate(own):
            shared = {} if i == 0 else SHARED[(i - 1) % len(SHARED)]
            config = {**kwargs, **shared}
            if optimizer == "adamw" and "weight_decay" in kwargs:
                config["weight_decay"] = kwargs["weight_decay"]
            yield pytest.param(optimizer, config, id=f"{optimizer}-{i}")


@pytest.mark.parametrize("optimizer, kwargs", list(_configs()))
def test_preset_matches_keras(optimizer, kwargs):
    check_parity(optimizer, kwargs)


def test_every_shared_argument_is_covered_for_some_optimizer():
    covered = {key for _, kwargs in (p.values for p in _configs()) for key in kwargs}
    assert {"weight_decay", "exclude_from_weight_decay", "clipnorm", "clipvalue",
            "global_clipnorm", "use_ema", "ema_momentum", "ema_overwrite_frequency",
            "loss_scale_factor", "gradient_accumulation_steps"} <= covered


def test_sgd_with_a_schedule_keeps_keras_momentum_of_scaled_steps():
    """Keras's momentum sums -lr * g, so a decaying rate changes it; optax's sums raw g."""
    kwargs = dict(learning_rate=ScheduleSpec("ExponentialDecay", dict(
        initial_learning_rate=0.1, decay_steps=2, decay_rate=0.3)), momentum=0.9)
    ours, ref = check_parity("sgd", kwargs)
    optax_style = gx.sgd(gx.keras.ExponentialDecay(0.1, 2, 0.3), momentum=0.9)
    other = run_gradxform(optax_style)
    assert not np.allclose(other.trajectory[-1][0], ref.trajectory[-1][0], rtol=1e-3)


def test_adamax_adds_epsilon_after_the_maximum_as_keras_does():
    """Where the norm decays to near epsilon, optax's form (epsilon inside the maximum) parts
    from Keras's: after a gradient of 1e-6 and zeros, max(b2^k (|g| + eps), eps) against
    b2^k |g| + eps."""
    shapes = ((3, 4), (4,), (4,), (4,), ())
    small = [[np.full(s, 1e-6, np.float32) for s in shapes]]
    small += [[np.zeros(s, np.float32) for s in shapes]] * 5
    kwargs = dict(learning_rate=0.05, beta_2=0.5, epsilon=1e-6)
    ours, ref = check_parity("adamax", kwargs, grads=small)
    tx = gx.chain(gx.scale_by_adamax(b2=0.5, eps=1e-6), gx.scale_by_learning_rate(0.05))
    other = run_gradxform(tx, grads=small)
    assert not np.allclose(other.trajectory[-1][0], ref.trajectory[-1][0], rtol=1e-3)


@pytest.mark.parametrize("call, words", [
    (lambda: gx.keras.sgd(momentum=1.5), ["keras.sgd", "`momentum` must be a float between [0, 1]",
                                          "1.5"]),
    (lambda: gx.keras.sgd(momentum=-1.0), ["keras.sgd", "momentum", "-1.0"]),
    (lambda: gx.keras.lion(beta_1=0.0), ["keras.lion", "`beta_1` must be in the [0, 1] range",
                                         "beta_1=0.0"]),
    (lambda: gx.keras.adamw(weight_decay=None), ["keras.adamw", "`weight_decay` must be a float",
                                                 "weight_decay=None"]),
    (lambda: gx.keras.rmsprop(rho=1.0), ["keras.rmsprop", "rho", "1.0"]),
    (lambda: gx.keras.adadelta(epsilon=0.0), ["keras.adadelta", "epsilon", "0.0"]),
    (lambda: gx.keras.adamax(beta_2=1.5), ["keras.adamax", "beta_2", "1.5"]),
    (lambda: gx.keras.sgd(decay=0.1), ["keras.sgd", "decay"]),
    (lambda: gx.keras.rmsprop(clipnorm=1.0, clipvalue=1.0), ["keras.rmsprop", "Only one of"]),
])
def test_bad_arguments_raise_naming_the_preset_and_the_argument(call, words):  # noqa: D103
    with pytest.raises(ValueError) as caught:
        call()
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_sgd_and_rmsprop_keep_momentum_state_only_with_momentum():
    params = {"w": jnp.ones(3)}
    assert "trace" not in repr(gx.keras.sgd(nesterov=True))
    assert repr(gx.keras.sgd(momentum=0.9)).index("scale_by_learning_rate") < repr(
        gx.keras.sgd(momentum=0.9)).index("trace")
    assert "scale_by_stddev" in repr(gx.keras.rmsprop(centered=True, momentum=0.5))
    assert "trace" not in repr(gx.keras.rmsprop())
    assert gx.tree_get(gx.keras.sgd(momentum=0.9).init(params), "trace") is not None


# --------------------------------------------------------------------------- Keras's own tests

# From keras/src/optimizers/{name}_test.py (Keras 3.15.1): test_single_step applies one
# gradient [1, 6, 7, 2] to [1, 2, 3, 4]; test_correctness_with_golden applies 0.01 once, then
# arange(0.1, 1.1, 0.1) five times, checking x before each of those five. Tolerances are Keras's.
_SINGLE_STEP = {
    "sgd": (dict(learning_rate=0.5), [0.5, -1.0, -0.5, 3.0]),
    "rmsprop": (dict(learning_rate=0.5), [-0.5811, 0.4189, 1.4189, 2.4189]),
    "adamw": (dict(learning_rate=0.5), [0.4980, 1.4960, 2.494, 3.492]),
    "adamax": (dict(learning_rate=0.5), [0.5, 1.5, 2.5, 3.5]),
    "adadelta": (dict(learning_rate=0.5), [0.9993, 1.9993, 2.9993, 3.9993]),
    "lion": (dict(learning_rate=0.5), [0.5, 1.5, 2.5, 3.5]),
    "ftrl": (dict(learning_rate=0.5), [0.2218, 1.3954, 2.3651, 2.8814]),
    "lamb": (dict(learning_rate=0.5), [-0.3693, 0.6306, 1.6306, 2.6306]),
    "nadam": (dict(learning_rate=0.5), [0.4686, 1.4686, 2.4686, 3.4686]),
}
_GOLDEN = {
    "sgd": (dict(nesterov=True), np.array([
        [0.9999] * 10,
        [0.9989, 0.9979, 0.9969, 0.9959, 0.9949, 0.9939, 0.9929, 0.9919, 0.9909, 0.9899],
        [0.9979, 0.9959, 0.9939, 0.9919, 0.9899, 0.9879, 0.9859, 0.9839, 0.9819, 0.9799],
        [0.9969, 0.9939, 0.9909, 0.9879, 0.9849, 0.9819, 0.9789, 0.9759, 0.9729, 0.9699],
        [0.9959, 0.9919, 0.9879, 0.9839, 0.9799, 0.9759, 0.9719, 0.9679, 0.9639, 0.9599]])),
    "rmsprop": (dict(centered=True),
                np.tile([[0.9967], [0.9933], [0.9908], [0.9885], [0.9864]], (1, 10))),
    "adamw": (dict(learning_rate=1.0, weight_decay=0.5, epsilon=2), np.array([
        [0.4998] * 10,
        [0.2486, 0.2475, 0.2463, 0.2451, 0.244, 0.2428, 0.2417, 0.2405, 0.2394, 0.2382],
        [0.1223, 0.1198, 0.1174, 0.1149, 0.1124, 0.11, 0.1075, 0.1051, 0.1027, 0.1003],
        [0.0586, 0.0549, 0.0512, 0.0475, 0.0439, 0.0402, 0.0366, 0.033, 0.0294, 0.0258],
        [0.0263, 0.0215, 0.0167, 0.012, 0.0073, 0.0026, -0.0021, -0.0067, -0.0113, -0.0159]])),
    "adamax": (dict(learning_rate=0.2, beta_1=0.85, beta_2=0.95, epsilon=1e-6), np.array([
        [0.8] * 10,
        [0.6827, 0.6873, 0.6888, 0.6896, 0.6901, 0.6904, 0.6906, 0.6908, 0.6909, 0.691],
        [0.5333, 0.5407, 0.5431, 0.5444, 0.5451, 0.5456, 0.546, 0.5462, 0.5464, 0.5466],
        [0.368, 0.3773, 0.3804, 0.382, 0.3829, 0.3835, 0.384, 0.3843, 0.3846, 0.3848],
        [0.1933, 0.204, 0.2076, 0.2094, 0.2105, 0.2112, 0.2117, 0.2121, 0.2124, 0.2126]])),
    "adadelta": (dict(learning_rate=1.0, rho=0.8, epsilon=1e-6),
                 np.tile([[0.9978], [0.9947], [0.9915], [0.9882], [0.9849]], (1, 10))),
    "lion": (dict(), np.tile([[0.999], [0.998], [0.997], [0.996], [0.995]], (1, 10))),
    "ftrl": (dict(learning_rate=0.05, learning_rate_power=-0.2, initial_accumulator_value=0.4,
                  l1_regularization_strength=0.05, l2_regularization_strength=0.15,
                  l2_shrinkage_regularization_strength=0.01, beta=0.3), np.array([
        [0.0] * 10,
        [-0.0034, -0.0077, -0.0118, -0.0157, -0.0194, -0.023, -0.0263, -0.0294, -0.0325, -0.0354],
        [-0.0078, -0.0162, -0.0242, -0.0317, -0.0387, -0.0454, -0.0516, -0.0575, -0.0631, -0.0685],
        [-0.0121, -0.0246, -0.0363, -0.0472, -0.0573, -0.0668, -0.0757, -0.0842, -0.0922, -0.0999],
        [-0.0164, -0.0328, -0.0481, -0.0623, -0.0753, -0.0875, -0.099, -0.1098, -0.1201, -0.1299]])),
    "lamb": (dict(), np.tile([[0.999], [0.9982], [0.9974], [0.9965], [0.9955]], (1, 10))),
    "nadam": (dict(learning_rate=0.5, beta_1=0.5, beta_2=0.67, epsilon=1e-5), np.array([
        [0.4281] * 10,
        [-0.1738, -0.1731, -0.1726, -0.1723, -0.1721, -0.172, -0.1719, -0.1718, -0.1718, -0.1717],
        [-0.7115, -0.7103, -0.7096, -0.7092, -0.709, -0.7088, -0.7086, -0.7085, -0.7085, -0.7084],
        [-1.2335, -1.2322, -1.2313, -1.2309, -1.2306, -1.2304, -1.2302, -1.2301, -1.23, -1.2299],
        [-1.7492, -1.7478, -1.7469, -1.7464, -1.7461, -1.7459, -1.7457, -1.7456, -1.7455,
         -1.7454]])),
}


def _apply(tx, params, grads):
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update(g, state, params)
        params = gx.apply_updates(params, updates)
        yield params


@pytest.mark.parametrize("name", sorted(_SINGLE_STEP))
def test_keras_single_step(name):
    kwargs, expected = _SINGLE_STEP[name]
    tx = getattr(gx.keras, name)(**kwargs)
    (after,) = _apply(tx, jnp.array([1.0, 2.0, 3.0, 4.0]), [jnp.array([1.0, 6.0, 7.0, 2.0])])
    np.testing.assert_allclose(after, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(_GOLDEN))
def test_keras_correctness_with_golden(name):
    kwargs, golden = _GOLDEN[name]
    tx = getattr(gx.keras, name)(**kwargs)
    grads = [jnp.full((10,), 0.01)] + [jnp.arange(0.1, 1.1, 0.1, dtype=jnp.float32)] * 4
    for expected, x in zip(golden, _apply(tx, jnp.ones(10), grads), strict=True):
        np.testing.assert_allclose(x, expected, rtol=5e-4, atol=5e-4)


def test_keras_weight_decay_and_exclusion():
    """keras/src/optimizers/sgd_test.py test_weight_decay: three optimizers each take one
    zero-gradient step at lr 1 on var1, two of them also on a variable they exclude."""
    params = {"var1": jnp.float32(2.0), "exclude": jnp.float32(2.0)}
    zeros = {"var1": jnp.float32(0.0), "exclude": jnp.float32(0.0)}
    for _ in range(3):
        tx = gx.keras.sgd(learning_rate=1.0, weight_decay=0.004,
                          exclude_from_weight_decay=["exclude"])
        (params,) = _apply(tx, params, [zeros])
    assert float(params["var1"]) == pytest.approx(1.9760959, abs=1e-6)  # Keras's value
    assert float(params["exclude"]) == 2.0


@pytest.mark.parametrize("optimizer, kwargs", [
    ("ftrl", dict(learning_rate=0.05, l2_shrinkage_regularization_strength=0.1)),
    ("lamb", dict(learning_rate=0.01)),
])
def test_rules_that_read_the_params_see_them_decayed_as_in_keras(optimizer, kwargs):
    """With the decay after the rule (as for rules that do not read the params), the numbers
    part from Keras's; weight_decay_first keeps them."""
    kwargs = dict(kwargs, weight_decay=0.3)
    ours, ref = check_parity(optimizer, kwargs)
    preset = getattr(gx.keras, optimizer)(**kwargs)
    (first,) = preset.children
    assert first.name == "weight_decay_first"
    decay, rule = first.hyperparams["decay"], first.hyperparams["rule"]
    swapped = run_gradxform(gx.chain(rule, decay))
    assert not np.allclose(swapped.trajectory[-1][0], ref.trajectory[-1][0], rtol=1e-4)


@pytest.mark.parametrize("optimizer, kwargs", [
    ("sgd", dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
    ("sgd", dict(learning_rate=0.05)),  # momentum 0.0, injected: the chain keeps a trace
    ("rmsprop", dict(learning_rate=0.01, momentum=0.5, centered=True)),
    ("rmsprop", dict(learning_rate=0.01)),
])
def test_inject_hyperparams_on_momentum_presets_gives_keras_numbers(optimizer, kwargs):
    ref = run_keras(optimizer, kwargs)
    tx = gx.inject_hyperparams(getattr(gx.keras, optimizer), static_args=("name",))(**kwargs)
    from tests.keras.harness import assert_trajectories_close
    assert_trajectories_close(run_gradxform(tx), ref, f"inject({optimizer})")
