"""``gx.keras.from_keras_config`` / ``to_keras_config`` with configs made by real Keras 3.

Each configuration is built as a Keras optimizer, its ``get_config()`` (or
serialized form) is turned into a preset, and the two are run on the harness's
gradient stream and compared step by step (rtol 1e-5); the other way, a
preset's ``to_keras_config`` is deserialized by Keras and run.
"""

from __future__ import annotations

import pickle

import keras
import pytest

import gradxform as gx
from tests.keras.harness import (
    ScheduleSpec,
    assert_trajectories_close,
    make_keras,
    run_gradxform,
    run_keras,
)

# Keras 3.15's get_config reads its own variables with np.array(..., copy=False), which
# numpy 2 warns about; nothing of ours is involved.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CASES = {
    "adam-schedule-clip": ("adam", dict(learning_rate=ScheduleSpec.named("ExponentialDecay"),
                                        clipnorm=1.0, amsgrad=True, beta_2=0.9)),
    "adamw-ema-gas": ("adamw", dict(learning_rate=0.05, weight_decay=0.1, use_ema=True,
                                    ema_overwrite_frequency=3, gradient_accumulation_steps=2)),
    "adagrad-lsf": ("adagrad", dict(learning_rate=ScheduleSpec.named("CosineDecayRestarts"),
                                    initial_accumulator_value=0.0, loss_scale_factor=128.0)),
    "adamax": ("adamax", dict(learning_rate=0.05, beta_1=0.8, global_clipnorm=1.0)),
    "adadelta": ("adadelta", dict(learning_rate=1.0, rho=0.9, clipvalue=0.5)),
    "rmsprop": ("rmsprop", dict(learning_rate=ScheduleSpec.named("PolynomialDecay"),
                                momentum=0.5, centered=True)),
    "sgd": ("sgd", dict(learning_rate=ScheduleSpec("PiecewiseConstantDecay", dict(
        boundaries=[5, 11, 17], values=[0.01, 0.005, 0.002, 0.001])), momentum=0.9, nesterov=True,
        weight_decay=0.01)),
    "lion": ("lion", dict(learning_rate=ScheduleSpec.named("InverseTimeDecay"), beta_2=0.9)),
    "cosine-warmup": ("adam", dict(learning_rate=ScheduleSpec.named("CosineDecay"))),
    "adafactor": ("adafactor", dict(learning_rate=0.1, beta_2_decay=-0.6, epsilon_2=1e-2,
                                    clip_threshold=0.8, relative_step=False, weight_decay=0.1)),
    "muon": ("muon", dict(learning_rate=0.05, adam_lr_ratio=0.5, momentum=0.9, rms_rate=None,
                          weight_decay=0.01)),
    "schedule-free": ("schedule_free_adamw", dict(
        learning_rate=ScheduleSpec.named("ExponentialDecay"), warmup_steps=4, beta_1=0.8)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("form", ["get_config", "serialized"])
def test_from_keras_config_reproduces_the_keras_optimizer(case, form):
    optimizer, kwargs = CASES[case]
    opt = make_keras(optimizer, kwargs)
    config = opt.get_config() if form == "get_config" else keras.saving.serialize_keras_object(opt)
    ours = run_gradxform(gx.keras.from_keras_config(config))
    assert_trajectories_close(ours, run_keras(optimizer, kwargs), f"{form} of {case}")


@pytest.mark.allows_nan
def test_loss_scale_optimizer_config_wraps_its_inner_optimizer():
    lso = dict(initial_scale=2.0**10, dynamic_growth_steps=3)
    opt = make_keras("adam", dict(learning_rate=0.05, clipvalue=0.5), lso)
    tx = gx.keras.from_keras_config(opt.get_config())
    nonfinite = {4: float("inf"), 9: float("nan")}
    ours = run_gradxform(tx, nonfinite=nonfinite)
    ref = run_keras("adam", dict(learning_rate=0.05, clipvalue=0.5), lso=lso, nonfinite=nonfinite)
    assert_trajectories_close(ours, ref, "LossScaleOptimizer(Adam)")


@pytest.mark.parametrize("case", sorted(CASES))
def test_to_keras_config_deserializes_to_the_same_keras_optimizer(case):
    optimizer, kwargs = CASES[case]
    tx = gx.keras.from_keras_config(make_keras(optimizer, kwargs).get_config())
    preset = getattr(gx.keras, optimizer)(**{
        k: (v.gx() if isinstance(v, ScheduleSpec) else v) for k, v in kwargs.items()})
    for built in (preset, pickle.loads(pickle.dumps(preset)), tx):
        rebuilt = keras.optimizers.deserialize(gx.keras.to_keras_config(built))
        ref = run_keras(optimizer, kwargs, built=rebuilt)
        assert_trajectories_close(run_gradxform(built), ref, f"to_keras_config of {case}")


@pytest.mark.allows_nan
def test_to_keras_config_of_a_loss_scale_optimizer():
    tx = gx.keras.loss_scale_optimizer(gx.keras.sgd(0.05, momentum=0.9), 64.0, 2)
    config = gx.keras.to_keras_config(tx)
    assert config["class_name"] == "LossScaleOptimizer"
    assert config["config"]["inner_optimizer"]["class_name"] == "SGD"
    rebuilt = keras.optimizers.deserialize(config)
    ref = run_keras("sgd", {}, built=rebuilt, nonfinite={3: float("inf")})
    assert_trajectories_close(run_gradxform(tx, nonfinite={3: float("inf")}), ref, "lso")


@pytest.mark.parametrize("call, error, words", [
    (lambda: gx.keras.from_keras_config({"name": "my_opt", "learning_rate": 0.1}), ValueError,
     ["keras.from_keras_config", "'my_opt'", "class_name="]),
    (lambda: gx.keras.from_keras_config({"module": "keras.optimizers",
                                         "class_name": "MultiOptimizer", "config": {}}),
     ValueError, ["class_name 'MultiOptimizer'", "no gx.keras preset", "Adam"]),
    (lambda: gx.keras.from_keras_config({"name": "adam", "learning_rate": {
        "module": "x", "class_name": "MySchedule", "config": {}}}), ValueError,
     ["'MySchedule'", "no gx.keras schedule"]),
    (lambda: gx.keras.from_keras_config([1, 2]), TypeError, ["config must be a mapping"]),
    (lambda: gx.keras.from_keras_config({"name": "adam", "lr": 0.1}), ValueError,
     ["keras.adam", "not recognized", "lr"]),
    (lambda: gx.keras.to_keras_config(gx.adam(0.1)), ValueError,
     ["keras.to_keras_config", "not what a gx.keras preset returned"]),
    (lambda: gx.keras.to_keras_config(gx.keras.adam(exclude_from_weight_decay=["bias"],
                                                    weight_decay=0.1)), ValueError,
     ["exclude_from_weight_decay"]),
    (lambda: gx.keras.to_keras_config(gx.keras.adam(lambda step: 0.1)), ValueError,
     ["not a Keras schedule"]),
])
def test_bad_inputs_raise_naming_the_problem(call, error, words):
    with pytest.raises(error) as caught:
        call()
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_class_name_names_an_optimizer_with_a_custom_name():
    opt = keras.optimizers.SGD(learning_rate=0.05, momentum=0.5, name="my_sgd")
    tx = gx.keras.from_keras_config(opt.get_config(), class_name="SGD")
    assert_trajectories_close(run_gradxform(tx), run_keras("sgd", {}, built=opt), "my_sgd")
