"""``gx.keras.adagrad`` / ``gx.keras.adam`` against live Keras 3.15.1, step by step.

Every test replays the harness's gradient stream (24 calls, with large,
zero and always-zero gradients) through Keras's jitted ``stateless_apply`` and
through the preset, and compares the params after every call and the finalized
params at rtol 1e-5, atol 1e-6 (`harness.assert_trajectories_close`).

The configurations are an all-pairs covering set over the factors below,
generated here by a small deterministic greedy algorithm; a test checks that
every pair of values really is covered. Dynamic loss scaling and
``scale_loss`` are in ``test_loss_scaling_parity.py``.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradxform as gx
from tests.keras.harness import (
    LABELS,
    LARGE_STEPS,
    SCHEDULES,
    ScheduleSpec,
    check_parity,
    from_tree,
    gradient_stream,
    initial_values,
    make_keras,
    run_keras,
    to_tree,
)

# --------------------------------------------------------------------------- all pairs

FACTORS = {
    "optimizer": ("adagrad", "adam", "amsgrad"),
    "lr": ("0.05",) + tuple(SCHEDULES),
    "wd": ("none", "0.1-exclude", "0.3"),
    "clip": ("none", "clipnorm", "clipvalue", "global_clipnorm"),
    "ema": ("off", "on", "overwrite3"),
    "lsf": ("none", "128"),
    "gas": ("none", "2", "3"),
    # initial_accumulator_value for adagrad, beta_2 for adam / amsgrad
    "variant": ("iav=0.1", "iav=0.0", "beta_2=0.999", "beta_2=0.9"),
}
_NAMES = tuple(FACTORS)


def _compatible(assignment: dict) -> bool:
    optimizer, variant = assignment.get("optimizer"), assignment.get("variant")
    if optimizer is None or variant is None:
        return True
    return variant.startswith("iav") == (optimizer == "adagrad")


def _pair(a, va, b, vb):
    """A pair of (factor, value), in factor order."""
    return ((a, va), (b, vb)) if _NAMES.index(a) < _NAMES.index(b) else ((b, vb), (a, va))


def _rank(pair):
    (a, va), (b, vb) = pair
    return (_NAMES.index(a), FACTORS[a].index(va), _NAMES.index(b), FACTORS[b].index(vb))


def required_pairs() -> set:
    return {
        _pair(a, va, b, vb)
        for i, a in enumerate(_NAMES)
        for b in _NAMES[i + 1 :]
        for va in FACTORS[a]
        for vb in FACTORS[b]
        if _compatible({a: va, b: vb})
    }


def pairs_of(config: dict) -> set:
    return {_pair(a, config[a], b, config[b]) for i, a in enumerate(_NAMES) for b in _NAMES[i + 1 :]}


def all_pairs() -> list:
    """Greedy covering set: seed each config with the first uncovered pair, fill in greedily."""
    uncovered, configs = required_pairs(), []
    while uncovered:
        (a, va), (b, vb) = min(uncovered, key=_rank)
        config = {a: va, b: vb}
        for name in _NAMES:
            if name in config:
                continue
            candidates = [v for v in FACTORS[name] if _compatible({**config, name: v})]
            config[name] = max(  # first of the best: deterministic
                candidates,
                key=lambda v: sum(_pair(n, config[n], name, v) in uncovered for n in config),
            )
        config = {name: config[name] for name in _NAMES}
        uncovered -= pairs_of(config)
        configs.append(config)
    return configs


def to_kwargs(config: dict) -> tuple[str, dict]:
    optimizer = "adagrad" if config["optimizer"] == "adagrad" else "adam"
    lr = config["lr"]
    kwargs: dict = {"learning_rate": 0.05 if lr == "0.05" else ScheduleSpec.named(lr)}
    if config["optimizer"] == "amsgrad":
        kwargs["amsgrad"] = True
    key, value = config["variant"].split("=")
    kwargs["initial_accumulator_value" if key == "iav" else key] = float(value)
    if config["wd"] == "0.1-exclude":
        kwargs.update(weight_decay=0.1, exclude_from_weight_decay=["bias", "gamma"])
    elif config["wd"] == "0.3":
        kwargs["weight_decay"] = 0.3
    clip_values = {"clipnorm": 1.0, "clipvalue": 0.5, "global_clipnorm": 1.0}
    if config["clip"] != "none":
        kwargs[config["clip"]] = clip_values[config["clip"]]
    if config["ema"] == "on":
        kwargs["use_ema"] = True
    elif config["ema"] == "overwrite3":
        kwargs.update(use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3)
    if config["lsf"] != "none":
        kwargs["loss_scale_factor"] = float(config["lsf"])
    if config["gas"] != "none":
        kwargs["gradient_accumulation_steps"] = int(config["gas"])
    return optimizer, kwargs


CONFIGS = all_pairs()


def test_covering_set_covers_every_pair_and_only_valid_configs():
    covered = set().union(*(pairs_of(config) for config in CONFIGS))
    assert required_pairs() <= covered, sorted(required_pairs() - covered, key=_rank)
    assert all(_compatible(config) for config in CONFIGS)
    # Greedy is not optimal, but it must stay near the 7 x 4 = 28 lower bound.
    assert 28 <= len(CONFIGS) <= 40, len(CONFIGS)
    assert all_pairs() == CONFIGS  # deterministic


@pytest.mark.parametrize(
    "config", CONFIGS, ids=["-".join(f"{k}={v}" for k, v in c.items()) for c in CONFIGS]
)
def test_pairwise_config_matches_keras(config):
    optimizer, kwargs = to_kwargs(config)
    check_parity(optimizer, kwargs)


# --------------------------------------------------------------------------- edge cases

_CLIPS = {"clipnorm": 1.0, "clipvalue": 0.5, "global_clipnorm": 1.0}


@pytest.mark.parametrize("optimizer", ["adam", "adagrad"])
@pytest.mark.parametrize("kind", sorted(_CLIPS))
def test_large_gradients_trigger_each_clipping_kind(optimizer, kind):
    kwargs = {"learning_rate": 0.05, kind: _CLIPS[kind]}
    ours, ref = check_parity(optimizer, kwargs)
    # Clipping did act: Keras without it takes a different path from the first large step on.
    unclipped = run_keras(optimizer, {"learning_rate": 0.05})
    first = LARGE_STEPS[0]
    assert not np.allclose(unclipped.trajectory[first][0], ref.trajectory[first][0], rtol=1e-3)
    # The preset's clip (its first member) shrinks each large gradient exactly as Keras's does.
    tx = getattr(gx.keras, optimizer)(**kwargs)
    clip_tx = tx.children[0]
    assert clip_tx.name == {
        "clipnorm": "clip_by_norm", "clipvalue": "clip", "global_clipnorm": "clip_by_global_norm"
    }[kind]
    keras_opt = make_keras(optimizer, kwargs)
    stream = gradient_stream()
    for step in LARGE_STEPS:
        grads = stream[step]
        clipped, _ = clip_tx.update(to_tree([jnp.asarray(g) for g in grads]), clip_tx.init(None))
        clipped = from_tree(clipped)
        with jax.numpy_dtype_promotion("standard"):
            keras_clipped = [np.asarray(g) for g in keras_opt._clip_gradients(grads)]
        for mine, theirs in zip(clipped, keras_clipped):
            np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-7)
        norms = [float(np.linalg.norm(g)) for g in grads]
        clipped_norms = [float(np.linalg.norm(g)) for g in keras_clipped]
        if kind == "clipnorm":
            assert max(clipped_norms) <= 1.0 + 1e-5 < max(norms)
        elif kind == "global_clipnorm":
            assert np.linalg.norm(clipped_norms) == pytest.approx(1.0, rel=1e-5)
            assert np.linalg.norm(norms) > 10.0
        else:
            assert max(np.abs(g).max() for g in keras_clipped) == 0.5
            assert max(np.abs(g).max() for g in grads) > 5.0
        assert sum(clipped_norms) < sum(norms)


def test_adagrad_zero_gradients_with_zero_initial_accumulator():
    """keras_semantics 5.1: lr=1, accumulator 0; 0 / sqrt(0 + eps) = 0, never NaN."""
    ours, ref = check_parity("adagrad", {"learning_rate": 1.0, "initial_accumulator_value": 0.0})
    start = initial_values()
    beta = LABELS.index("norm/beta")
    for step in ours.trajectory:
        assert all(np.isfinite(x).all() for x in step)
        np.testing.assert_array_equal(step[beta], start[beta])  # always-zero leaf never moves
    # "scale" has g=0 on the first call: it must not move on that call.
    np.testing.assert_array_equal(ours.trajectory[0][LABELS.index("scale")], start[-1])


EVERYTHING = {
    "adam": dict(
        learning_rate=ScheduleSpec.named("CosineDecay"), beta_1=0.8, beta_2=0.9, epsilon=1e-6,
        amsgrad=True, weight_decay=0.1, exclude_from_weight_decay=["bias", "gamma"],
        clipnorm=1.0, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3,
        loss_scale_factor=128.0, gradient_accumulation_steps=3,
    ),
    "adagrad": dict(
        learning_rate=ScheduleSpec.named("CosineDecayRestarts"), initial_accumulator_value=0.0,
        epsilon=1e-6, weight_decay=0.3, exclude_from_weight_decay=["kernel"],
        global_clipnorm=1.0, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=2,
        loss_scale_factor=4.0, gradient_accumulation_steps=2,
    ),
}


@pytest.mark.parametrize("optimizer", sorted(EVERYTHING))
def test_every_option_at_once(optimizer):
    check_parity(optimizer, EVERYTHING[optimizer])


# --------------------------------------------------------------------------- finalize_params

_EMA_CASES = {
    "ema-on": dict(use_ema=True),
    "ema-overwrite5": dict(use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=5),
    "ema-gas3": dict(use_ema=True, ema_momentum=0.8, gradient_accumulation_steps=3),
    "no-ema": dict(),
    "no-ema-gas2": dict(gradient_accumulation_steps=2),
}


@pytest.mark.parametrize("case", sorted(_EMA_CASES))
def test_finalize_params_equals_keras_finalize_variable_values(case):
    kwargs = dict(learning_rate=0.05, **_EMA_CASES[case])
    ours, ref = check_parity("adam", kwargs)  # includes finalized vs finalized at rtol 1e-5
    last = ours.trajectory[-1]
    if kwargs.get("use_ema"):  # (no overwrite on the last call: the average is not the params)
        assert any(not np.allclose(f, p) for f, p in zip(ours.finalized, last))
    else:
        finalized = gx.finalize_params(ours.params, ours.state)
        assert jax.tree.structure(finalized) == jax.tree.structure(ours.params)
        for a, b in zip(jax.tree.leaves(finalized), jax.tree.leaves(ours.params)):
            np.testing.assert_array_equal(a, b)  # the params, untouched
        for a, b in zip(ref.finalized, ref.trajectory[-1]):
            np.testing.assert_array_equal(a, b)  # Keras: a no-op too


# --------------------------------------------------------------------------- hypothesis


@st.composite
def keras_configs(draw):
    optimizer = draw(st.sampled_from(["adagrad", "adam"]))
    lr = draw(st.sampled_from([0.01, 0.05, 0.2, *sorted(SCHEDULES)]))
    kw: dict = {"learning_rate": ScheduleSpec.named(lr) if isinstance(lr, str) else lr}
    if optimizer == "adam":
        kw["beta_1"] = draw(st.sampled_from([0.0, 0.5, 0.9]))
        kw["beta_2"] = draw(st.sampled_from([0.5, 0.9, 0.999]))
        kw["amsgrad"] = draw(st.booleans())
    else:
        kw["initial_accumulator_value"] = draw(st.sampled_from([0.0, 0.1, 1.0]))
    kw["epsilon"] = draw(st.sampled_from([1e-7, 1e-4]))
    weight_decay = draw(st.sampled_from([None, 0.01, 0.3]))
    if weight_decay is not None:
        kw["weight_decay"] = weight_decay
        exclude = draw(st.sampled_from([None, ["bias"], ["bias", "gamma"], ["kernel", "scale"]]))
        if exclude:
            kw["exclude_from_weight_decay"] = exclude
    clip = draw(st.sampled_from([None, "clipnorm", "clipvalue", "global_clipnorm"]))
    if clip:
        kw[clip] = draw(st.sampled_from([0.1, 1.0, 5.0]))
    if draw(st.booleans()):
        kw["use_ema"] = True
        kw["ema_momentum"] = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]))
        kw["ema_overwrite_frequency"] = draw(st.sampled_from([None, 1, 2, 5]))
    gas = draw(st.sampled_from([None, 0, 2, 3, 4]))
    if gas is not None:
        kw["gradient_accumulation_steps"] = gas
    lsf = draw(st.sampled_from([None, 2.0, 128.0, 1000.0]))
    if lsf is not None:
        kw["loss_scale_factor"] = lsf
    return optimizer, kw, draw(st.integers(0, 3))


@settings(max_examples=15, deadline=None, database=None, derandomize=True)
@given(config=keras_configs())
def test_random_configs_match_keras(config):
    optimizer, kwargs, seed = config
    check_parity(optimizer, kwargs, grads=gradient_stream(seed=seed))


# --------------------------------------------------------------------------- structure


def _constructor_names(tx) -> list:
    return re.findall(r"(\w+)\(", repr(tx))


_ALL_ADAM = dict(
    learning_rate=0.05, amsgrad=True, weight_decay=0.1, exclude_from_weight_decay=["bias"],
    clipnorm=1.0, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3,
    loss_scale_factor=128.0, gradient_accumulation_steps=3,
)
_REPR_CASES = {
    "adam-defaults": ("adam", {}, ["chain", "scale_by_adam", "scale_by_learning_rate"]),
    "adam-everything": ("adam", _ALL_ADAM, [
        "chain", "static_loss_scale", "accumulate_gradients", "chain", "clip_by_norm",
        "scale_by_amsgrad", "scale_by_learning_rate", "decoupled_weight_decay", "params_ema",
    ]),
    "adagrad-no-gas": ("adagrad", dict(
        clipvalue=0.5, weight_decay=0.1, use_ema=True, loss_scale_factor=2.0
    ), [
        "chain", "static_loss_scale", "clip", "scale_by_adagrad", "scale_by_learning_rate",
        "decoupled_weight_decay", "params_ema",
    ]),
    "adagrad-schedule-gas": ("adagrad", dict(
        learning_rate=gx.keras.ExponentialDecay(0.1, 5, 0.5), global_clipnorm=1.0,
        gradient_accumulation_steps=2,
    ), [
        "chain", "accumulate_gradients", "chain", "clip_by_global_norm", "scale_by_adagrad",
        "scale_by_learning_rate", "AtLastMicroStep", "ExponentialDecay",
    ]),
}


@pytest.mark.parametrize("case", sorted(_REPR_CASES))
def test_preset_repr_lists_members_in_keras_order(case):
    optimizer, kwargs, expected = _REPR_CASES[case]
    assert _constructor_names(getattr(gx.keras, optimizer)(**kwargs)) == expected


def test_preset_structure_walked_through_children_and_hyperparams():
    tx = gx.keras.adam(**_ALL_ADAM)
    assert tx.name == "chain"
    scale, accumulate, average = tx.children
    assert [m.name for m in tx.children] == ["static_loss_scale", "accumulate_gradients", "params_ema"]
    assert dict(scale.hyperparams) == {"loss_scale": 128.0}
    assert accumulate.hyperparams["every_k"] == 3
    inner = accumulate.hyperparams["inner"]
    assert [m.name for m in inner.children] == [
        "clip_by_norm", "scale_by_amsgrad", "scale_by_learning_rate", "decoupled_weight_decay",
    ]
    clip_tx, moments, lr, decay = inner.children
    assert clip_tx.hyperparams["max_norm"] == 1.0
    assert moments.hyperparams["eps_hat"] is True and moments.hyperparams["eps"] == 1e-7
    assert lr.hyperparams == {"learning_rate": 0.05, "flip_sign": True}
    assert decay.hyperparams["weight_decay"] == 0.1 and decay.hyperparams["exclude"] == ["bias"]
    assert (average.hyperparams["decay"], average.hyperparams["overwrite_frequency"]) == (0.9, 3)
    assert average.hyperparams["calls_per_step"] == 3
    lso = gx.keras.loss_scale_optimizer(gx.keras.adam(0.05), 1024.0, 3)
    assert _constructor_names(lso) == [
        "dynamic_loss_scale", "chain", "scale_by_adam", "scale_by_learning_rate"
    ]
