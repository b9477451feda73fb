"""``gx.keras.muon`` against live Keras 3's ``Muon``, and Keras's own ``muon_test.py``.

Each configuration runs the harness's gradient stream (24 calls, with large,
zero and always-zero gradients) through Keras's jitted ``stateless_apply`` and
through the preset, compared after every call at rtol 1e-5, atol 1e-6. The
harness's ``dense/kernel`` (3, 4) takes Keras's Muon step and its 1-D and 0-D
leaves the Adam step, so every configuration runs both. The configurations
cover Muon's own arguments and cycle the shared ones of
``test_more_presets.py`` (weight decay with exclusions, the three clips, EMA
with overwrites, loss scales, accumulation, schedules).

Keras's momentum is a plain sum, :math:`m_t = \\mu m_{t-1} + g_t`, and
Nesterov orthogonalises :math:`g_t + \\mu m_t`: optax's debiased average (or
torch's undebiased one) weighs :math:`g_t` against :math:`m_t` differently,
and without Nesterov differs by a factor that the normalisation
:math:`X / (\\lVert X \\rVert + 10^{-7})` removes only while the norm is large
next to :math:`10^{-7}`. A test with gradients of 1e-7 shows that only
``momentum_form="sum"`` gives Keras's numbers there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

import gradxform as gx
from gradxform.keras.muon import muon, muon_labels
from tests.keras.harness import (
    ScheduleSpec,
    assert_trajectories_close,
    describe,
    gradient_stream,
    run_gradxform,
    run_keras,
)
from tests.keras.harness import SHARED


def _preset(kwargs: dict, **overrides):
    kwargs = {key: value.gx() if isinstance(value, ScheduleSpec) else value
              for key, value in kwargs.items()}
    return muon(**kwargs, **overrides)


def _parity(kwargs: dict, grads=None):
    ref = run_keras("muon", kwargs, grads=grads)
    ours = run_gradxform(_preset(kwargs), grads=grads)
    assert_trajectories_close(ours, ref, describe("muon", kwargs))
    return ours, ref


_OWN = [
    dict(),  # Keras's defaults: learning rate 1e-3, both weight decays 0.004
    dict(learning_rate=0.05, nesterov=False),
    dict(learning_rate=0.05, rms_rate=None),
    dict(learning_rate=0.05, exclude_layers=["kernel"]),  # every leaf takes the Adam step
    dict(learning_rate=0.05, adam_lr_ratio=0.1, adam_beta_1=0.5, adam_beta_2=0.9, epsilon=1e-4),
    dict(learning_rate=0.05, ns_steps=3, momentum=0.5, muon_a=3.0, muon_b=-3.2, muon_c=1.2),
    dict(learning_rate=0.05, weight_decay=None, adam_weight_decay=0.1),
    dict(learning_rate=0.05, weight_decay=0.2, adam_weight_decay=None, rms_rate=0.5),
]


def _configs():
    for i, kwargs in enumerate(_OWN):
        shared = {} if i in (0, len(_OWN) - 1) else SHARED[(i - 1) % len(SHARED)]
        # The shared weight decay is Muon's; this configuration's own one, where it has one, wins.
        yield pytest.param({**shared, **kwargs}, id=f"muon-{i}")


@pytest.mark.parametrize("kwargs", list(_configs()))
def test_muon_matches_keras(kwargs):
    _parity(kwargs)


def test_every_argument_is_covered():
    covered = {key for param in _configs() for key in param.values[0]}
    assert {"adam_beta_1", "adam_beta_2", "adam_weight_decay", "epsilon", "weight_decay",
            "clipnorm", "clipvalue", "global_clipnorm", "use_ema", "ema_momentum",
            "ema_overwrite_frequency", "loss_scale_factor", "gradient_accumulation_steps",
            "exclude_from_weight_decay", "exclude_layers", "muon_a", "muon_b", "muon_c",
            "adam_lr_ratio", "momentum", "ns_steps", "nesterov", "rms_rate"} <= covered


@pytest.mark.parametrize("nesterov", [False, True])
def test_tiny_gradients_need_keras_plain_sum(nesterov):
    """Gradients of 1e-7: the norm is near the 1e-7 Keras adds to it, so the momentum's scale
    shows. Keras's sum matches; optax's debiased and torch's plain averages do not."""
    tiny = [[g * np.float32(1e-7) for g in step] for step in gradient_stream()]
    kwargs = dict(learning_rate=0.05, nesterov=nesterov, weight_decay=None,
                  adam_weight_decay=None)
    _, ref = _parity(kwargs, grads=tiny)
    for form in ("debiased", "ema"):
        (rule,) = _preset(kwargs).children  # the partition
        chains = dict(rule.hyperparams["transforms"])
        muon_chain = chains["muon"]
        first = muon_chain.children[0]
        swapped = gx.scale_by_muon(**{**first.hyperparams, "momentum_form": form})
        chains["muon"] = gx.chain(swapped, *muon_chain.children[1:])
        other = run_gradxform(gx.partition(chains, rule.hyperparams["labels"]), grads=tiny)
        kernel = 0  # dense/kernel, the Muon leaf
        assert not np.allclose(other.trajectory[-1][kernel], ref.trajectory[-1][kernel],
                               rtol=1e-4, atol=1e-6), form


def _labels_of(tx, params) -> dict:
    """Which leaves took the Adam step: those the Adam branch keeps a second moment for."""
    nu = gx.tree_get(tx.init(params), "nu")
    return jax.tree.map(lambda x: not isinstance(x, gx.MaskedNode), nu,
                        is_leaf=lambda x: isinstance(x, gx.MaskedNode))


def test_leaf_selection_matches_keras_should_use_adamw():
    """Keras's own layers' variable paths, and its decision for each, live: 2-D leaves take the
    Muon step unless their path contains "embedding" or matches an excluded layer. The preset's
    partition (which leaves have Adam state) and muon_labels both follow it."""
    dense, embed, last = (keras.layers.Dense(3, name="dense"),
                          keras.layers.Embedding(7, 3, name="token_embedding"),
                          keras.layers.Dense(1, name="last"))
    dense.build((None, 4))
    embed.build()
    last.build((None, 3))
    variables = [*dense.weights, *embed.weights, *last.weights]
    for kwargs in (dict(), dict(exclude_layers=["last"]), dict(exclude_embeddings=False),
                   dict(exclude_layers=["dense/k"], exclude_embeddings=False)):
        keras_optimizer = keras.optimizers.Muon(**kwargs)
        expected = {v.path: bool(keras_optimizer._should_use_adamw(v)) for v in variables}
        params = {}
        for v in variables:
            layer, name = v.path.split("/")
            params.setdefault(layer, {})[name] = jnp.zeros(v.shape)
        flags = _labels_of(muon(**kwargs), params)
        ours = {f"{layer}/{name}": flag for layer, leaves in flags.items()
                for name, flag in leaves.items()}
        assert ours == expected, (kwargs, ours, expected)
        labels = muon_labels(params, **kwargs)
        assert {f"{layer}/{name}": label == "adam" for layer, leaves in labels.items()
                for name, label in leaves.items()} == expected, (kwargs, labels)
    assert expected["dense/kernel"] and not expected["token_embedding/embeddings"]


# --------------------------------------------------------------------------- Keras's own tests
# keras/src/optimizers/muon_test.py (Keras 3.15.1); expected values and tolerances are Keras's.


def _step(tx, params, grads):
    updates, _ = tx.update(grads, tx.init(params), params)
    return gx.apply_updates(params, updates)


def test_keras_newton_schulz():
    x = jnp.array([[0.2499, 0.9105], [0.2655, 0.8824]])
    output = gx.orthogonalize_via_newton_schulz(x, (3.4445, -4.7750, 2.0315), 5, eps=1e-7)
    np.testing.assert_allclose(output, [[-0.4422, 0.6457], [0.7285, 0.2968]], rtol=1e-3,
                               atol=1e-3)


def test_keras_adamw_single_step():
    """Keras calls update_step alone (no weight decay): adam_weight_decay=None here."""
    params = {"test_vars": jnp.array([1.0, 2.0, 3.0, 4.0])}
    after = _step(muon(learning_rate=0.5, adam_weight_decay=None), params,
                  {"test_vars": jnp.array([1.0, 6.0, 7.0, 2.0])})
    np.testing.assert_allclose(after["test_vars"], [0.5, 1.5, 2.5, 3.5], rtol=1e-4, atol=1e-4)


def test_keras_muon_single_step():
    params = {"variable": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
    after = _step(muon(learning_rate=0.5, weight_decay=0), params,
                  {"variable": jnp.array([[1.0, 6.0], [7.0, 2.0]])})
    np.testing.assert_allclose(after["variable"], [[0.988775, 1.887053], [2.873428, 3.97035]],
                               rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("name, value, kwargs", [
    ("variable", [[1.0, 2.0], [3.0, 4.0]], dict(weight_decay=0.01)),  # test_muon_weight_decay
    ("variable", 2.0, dict(adam_weight_decay=0.01)),  # test_adamw_weight_decay
])
def test_keras_weight_decay(name, value, kwargs):
    """A zero gradient moves neither step, so the decay alone remains: x - x * 0.01 at lr 1."""
    value = jnp.asarray(value)
    after = _step(muon(learning_rate=1.0, **kwargs), {name: value}, {name: jnp.zeros_like(value)})
    np.testing.assert_allclose(after[name], value - value * 0.01, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs, expected", [
    (dict(clipnorm=1), [2**0.5 / 2, 2**0.5 / 2]),  # test_clip_norm
    (dict(clipvalue=1), [1.0, 1.0]),  # test_clip_value
])
def test_keras_clipping(kwargs, expected):
    clip = muon(**kwargs).children[0]
    grads = {"w": jnp.array([100.0, 100.0])}
    clipped, _ = clip.update(grads, clip.init(grads))
    np.testing.assert_allclose(clipped["w"], expected, rtol=1e-6)


@pytest.mark.parametrize("rms_rate, factor", [(None, 1.0), (0.2, 0.2 * 2)])
def test_keras_lr_adjust(rms_rate, factor):
    """test_lr_adjust_none / test_lr_adjust_2d: a (4, 2) update is scaled by rms_rate *
    sqrt(max(4, 2)), against the same step without the factor."""
    params = {"w": jnp.zeros((4, 2))}
    grads = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((4, 2)), jnp.float32)}
    plain = _step(muon(learning_rate=0.1, weight_decay=None, rms_rate=None), params, grads)
    scaled = _step(muon(learning_rate=0.1, weight_decay=None, rms_rate=rms_rate), params, grads)
    np.testing.assert_allclose(scaled["w"], plain["w"] * factor, rtol=1e-6)


def test_muon_labels_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r"keras.muon_labels: exclude_layers .*'\('"):
        muon_labels({"w": jnp.ones((2, 2))}, exclude_layers=["("])
    with pytest.raises(TypeError, match="keras.muon_labels: exclude_embeddings must be a bool"):
        muon_labels({"w": jnp.ones((2, 2))}, exclude_embeddings=1)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(momentum=1.0), "momentum"), (dict(ns_steps=-1), "ns_steps"),
    (dict(muon_a=float("nan")), "muon_a"), (dict(rms_rate=-0.2), "rms_rate"),
    (dict(adam_lr_ratio=-1.0), "adam_lr_ratio"), (dict(exclude_layers=["("]), "exclude_layers"),
    (dict(adam_weight_decay=-0.1), "adam_weight_decay"), (dict(decay=0.1), "decay"),
])
def test_bad_arguments_raise_naming_the_preset_and_the_argument(kwargs, argument):
    with pytest.raises(ValueError) as caught:
        muon(**kwargs)
    assert "keras.muon" in str(caught.value) and argument in str(caught.value), caught.value
