"""``gx.torch``'s learning-rate schedules against ``torch.optim.lr_scheduler``, run live.

torch's side is a real optimizer and scheduler: the rate of update ``t`` is
``param_groups[0]["lr"]`` after ``t`` calls of ``scheduler.step()`` (each after
an ``optimizer.step()``). Ours is the schedule at step ``t``, eagerly on the
int32 array of steps, at a Python int, and jitted with a traced int32 step.
Values agree at rtol 1e-6 (float32 against torch's float64), with an atol of
1e-12 of the largest rate for torch's ~1e-33 where the exact rate is 0.
``ReduceLROnPlateau`` is fed the same metrics as torch's, and each schedule
drives ``gx.torch.SGD`` through a short training run against torch's.
"""

from __future__ import annotations

import inspect
import json
import math
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler

import gradxform as gx
from gradxform import config
from gradxform.torch import annealing, plateau, schedules
from gradxform.torch.annealing import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    OneCycleLR,
    OneCycleMomentum,
)
from gradxform.torch.plateau import ReduceLROnPlateau, TorchPlateauState
from gradxform.torch.schedules import (
    ConstantLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiStepLR,
    PolynomialLR,
    SequentialLR,
    StepLR,
)
from tests.pytorch.harness import gradient_stream, initial_params, run_gradxform

LR = 0.1
RTOL = 1e-6
CLASSES = {cls.__name__: cls for cls in (
    StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR, CosineAnnealingLR,
    CosineAnnealingWarmRestarts, OneCycleLR, LambdaLR)}
COSINE = gx.schedules.cosine_decay_schedule(1.0, decay_steps=40, alpha=0.1)


def _decay(epoch):
    # 0.5 and epoch / 16 are exact in float32 (0.97 ** epoch would carry 0.97's rounding).
    return 0.5 ** (epoch / 16)


def _cosine(epoch):
    return float(COSINE(epoch))


# name -> [(kwargs, steps)]: every argument, its boundaries, and steps past the schedule's end.
CASES = {
    "StepLR": [(dict(step_size=7, gamma=0.5), 100), (dict(step_size=1, gamma=0.95), 200),
               (dict(step_size=30), 120), (dict(step_size=10, gamma=1.1), 100),
               (dict(step_size=5, gamma=0.0), 20)],
    "MultiStepLR": [(dict(milestones=[30, 80]), 120),
                    (dict(milestones=[0, 10, 10, 50], gamma=0.3), 80),  # 0, and a repeat
                    (dict(milestones=[40, 5], gamma=0.5), 60), (dict(milestones=[]), 10)],
    "ConstantLR": [(dict(), 20), (dict(factor=0.25, total_iters=30), 60),
                   (dict(factor=1.0, total_iters=1), 5), (dict(factor=0.5, total_iters=1), 5)],
    "LinearLR": [(dict(), 20), (dict(start_factor=0.25, end_factor=0.0, total_iters=100), 150),
                 (dict(start_factor=1.0, end_factor=0.5, total_iters=1), 5),
                 (dict(start_factor=0.1, end_factor=0.9, total_iters=60), 80)],
    "ExponentialLR": [(dict(gamma=0.95), 200), (dict(gamma=0.9), 200), (dict(gamma=1.03), 200),
                      (dict(gamma=1.0), 10), (dict(gamma=0.0), 5)],
    "PolynomialLR": [(dict(), 10), (dict(total_iters=100, power=2.0), 150),
                     (dict(total_iters=60, power=0.5), 80), (dict(total_iters=20, power=0.0), 30),
                     (dict(total_iters=1, power=3.0), 5)],
    "CosineAnnealingLR": [(dict(T_max=50), 200), (dict(T_max=37, eta_min=0.001), 200),
                          (dict(T_max=20, eta_min=0.5), 100), (dict(T_max=1), 10),
                          (dict(T_max=30, eta_min=0.1), 70)],
    "CosineAnnealingWarmRestarts": [(dict(T_0=10), 100),
                                    (dict(T_0=3, T_mult=2, eta_min=1e-4), 200),
                                    (dict(T_0=1, T_mult=3), 130), (dict(T_0=1), 5),
                                    (dict(T_0=7, eta_min=0.3), 40)],
    "OneCycleLR": [
        (dict(max_lr=1.0, total_steps=100), 101),
        (dict(max_lr=0.5, epochs=7, steps_per_epoch=13, pct_start=0.25,
              anneal_strategy="linear", base_momentum=0.8, max_momentum=0.9), 92),
        (dict(max_lr=1.0, total_steps=150, three_phase=True, div_factor=10.0,
              final_div_factor=100.0), 151),
        (dict(max_lr=1.0, total_steps=150, three_phase=True, anneal_strategy="linear",
              pct_start=0.45), 151),
        (dict(max_lr=1.0, total_steps=60, pct_start=0.0), 61),
        (dict(max_lr=1.0, total_steps=60, pct_start=1.0), 60),  # torch divides by 0 at 60
        (dict(max_lr=1.0, total_steps=60, pct_start=0.01, three_phase=True), 61),
        (dict(max_lr=1.0, total_steps=60, pct_start=0.7, three_phase=True), 61),
        (dict(max_lr=0.3, total_steps=1, pct_start=0.5), 2),
        (dict(max_lr=1.0, total_steps=80, epochs=3, steps_per_epoch=5, cycle_momentum=False), 81),
    ],
    "LambdaLR": [(dict(lr_lambda=_decay), 100), (dict(lr_lambda=_cosine), 60)],
}
_PARAMS = [pytest.param(name, kwargs, steps, id=f"{name}-{i}")
           for name, sets in CASES.items() for i, (kwargs, steps) in enumerate(sets)]


def _torch_rates(build, steps: int, lr: float = LR) -> tuple[np.ndarray, np.ndarray]:
    """The rate and momentum each of ``steps`` SGD updates uses under ``build(optimizer)``."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr, momentum=0.9)
    scheduler = build(optimizer)
    rates, momenta = [], []
    for t in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
        if t < steps - 1:
            optimizer.step()
            scheduler.step()
    return np.array(rates), np.array(momenta)


def _torch_scheduler(name: str, kwargs: dict):
    return lambda optimizer: getattr(lr_scheduler, name)(optimizer, **kwargs)


def _ours(name: str, kwargs: dict):
    if name == "OneCycleLR":
        return OneCycleLR(**kwargs)
    if name == "LambdaLR":  # ours gets jax arithmetic; torch's gets the same as Python floats
        return LambdaLR(LR, COSINE if kwargs["lr_lambda"] is _cosine else kwargs["lr_lambda"])
    return CLASSES[name](LR, **kwargs)


def _assert_rates(values, expected, label: str) -> None:
    values = np.asarray(values)
    assert values.dtype == np.float32, label
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(values, expected, rtol=RTOL, atol=1e-12 * scale, err_msg=label)


def _check_every_step(schedule, expected, label: str) -> None:
    steps = len(expected)
    _assert_rates(schedule(jnp.arange(steps, dtype=jnp.int32)), expected, f"{label} eager")
    at = jax.jit(schedule)
    jitted = np.array([at(jnp.int32(t)) for t in range(steps)])
    _assert_rates(jitted, expected, f"{label} jit")
    for t in (0, steps // 2, steps - 1):
        _assert_rates(schedule(t), expected[t], f"{label} at the Python int {t}")


@pytest.mark.parametrize("name, kwargs, steps", _PARAMS)
def test_schedule_matches_torch_at_every_step(name, kwargs, steps):
    rates, momenta = _torch_rates(_torch_scheduler(name, kwargs), steps)
    ours = _ours(name, kwargs)
    _check_every_step(ours, rates, repr(ours))
    if name == "OneCycleLR" and ours.cycle_momentum:
        _check_every_step(ours.momentum_schedule(), momenta, f"{ours!r} momentum")
    if name == "OneCycleLR" and not ours.cycle_momentum:
        assert np.all(momenta == 0.9)  # torch leaves the optimizer's momentum alone


def test_every_argument_is_exercised():
    for name, sets in CASES.items():
        used = {key for kwargs, _ in sets for key in kwargs} | {"lr"}
        parameters = set(inspect.signature(CLASSES[name]).parameters)
        assert parameters <= used, (name, parameters - used)


# Each case: the schedules by name and arguments (torch's side gets the same), and milestones.
SEQUENTIAL = [
    ([("LinearLR", dict(start_factor=0.1, total_iters=5)), ("ExponentialLR", dict(gamma=0.9))],
     [5]),
    ([("ConstantLR", dict(factor=0.5, total_iters=3)), ("CosineAnnealingLR", dict(T_max=10))],
     [7]),
    ([("ExponentialLR", dict(gamma=0.9)), ("StepLR", dict(step_size=3, gamma=0.5)),
      ("MultiStepLR", dict(milestones=[0, 2, 4], gamma=0.5))], [0, 10]),  # milestone 0
    ([("StepLR", dict(step_size=3, gamma=0.5)), ("ConstantLR", dict(factor=0.5, total_iters=3)),
      ("PolynomialLR", dict(total_iters=6, power=2.0))], [5, 5]),  # a repeated milestone
    ([("CosineAnnealingWarmRestarts", dict(T_0=4, T_mult=2)),
      ("LinearLR", dict(start_factor=0.2, total_iters=4))], [9]),
    ([("LinearLR", dict(start_factor=0.2, total_iters=4)),
      ("CosineAnnealingWarmRestarts", dict(T_0=4, T_mult=2)),
      ("LinearLR", dict(start_factor=0.5, end_factor=0.1, total_iters=10))], [9, 30]),
    ([("ConstantLR", dict(factor=0.5, total_iters=30))], []),
]


def _sequential_pair(parts, milestones, steps):
    ours = SequentialLR([CLASSES[name](LR, **kwargs) for name, kwargs in parts], milestones)

    def build(optimizer):
        inner = [getattr(lr_scheduler, name)(optimizer, **kwargs) for name, kwargs in parts]
        return lr_scheduler.SequentialLR(optimizer, inner, milestones)

    return ours, _torch_rates(build, steps)[0]


@pytest.mark.parametrize("parts, milestones", SEQUENTIAL,
                         ids=[f"SequentialLR-{i}" for i in range(len(SEQUENTIAL))])
def test_sequential_lr_matches_torch(parts, milestones):
    ours, rates = _sequential_pair(parts, milestones, 60)
    _check_every_step(ours, rates, repr(ours))


def test_sequential_lr_with_one_cycle_starts_the_others_at_max_lr_over_div_factor():
    # torch's OneCycleLR overwrites the optimizer's initial_lr, which the others start from.
    start = 1.0 / 25.0
    ours = SequentialLR([LinearLR(start, start_factor=0.5, total_iters=4),
                         OneCycleLR(1.0, total_steps=20)], [6])

    def build(optimizer):
        return lr_scheduler.SequentialLR(optimizer, [
            lr_scheduler.LinearLR(optimizer, start_factor=0.5, total_iters=4),
            lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=20)], [6])

    _check_every_step(ours, _torch_rates(build, 26)[0], repr(ours))


@pytest.mark.allows_nan
def test_one_cycle_past_total_steps_is_nan_where_torch_raises():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=LR, momentum=0.9)
    scheduler = lr_scheduler.OneCycleLR(optimizer, max_lr=1.0, total_steps=10)
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    at_total = optimizer.param_groups[0]["lr"]
    with pytest.raises(ValueError, match="Tried to step 11 times"):
        scheduler.step()
    ours = OneCycleLR(1.0, total_steps=10)
    _assert_rates(ours(10), at_total, "at total_steps")
    for schedule in (ours, ours.momentum_schedule()):
        assert np.all(np.isnan(schedule(jnp.arange(11, 40, dtype=jnp.int32))))
        assert np.isnan(jax.jit(schedule)(jnp.int32(11)))
        assert np.isfinite(schedule(10))
    # An empty last phase: torch divides by zero at total_steps itself.
    assert np.isnan(OneCycleLR(1.0, total_steps=10, pct_start=1.0)(10))


# --- as the lr of gx.torch.SGD -------------------------------------------------------------

TRAINING_STEPS = 30


def _torch_trajectory(build, grads, lr: float = LR, **sgd_kwargs) -> list:
    leaves = [torch.nn.Parameter(torch.tensor(x)) for x in jax.tree.leaves(initial_params())]
    optimizer = torch.optim.SGD(leaves, lr=lr, **sgd_kwargs)
    scheduler = build(optimizer)
    trajectory = []
    for g in grads:
        for p, gi in zip(leaves, jax.tree.leaves(g)):
            p.grad = torch.tensor(gi)
        optimizer.step()
        scheduler.step()
        trajectory.append([p.detach().numpy().copy() for p in leaves])
    return trajectory


def _assert_same_trajectory(ours: list, theirs: list, label: str) -> None:
    assert len(ours) == len(theirs)
    for step, (mine, reference) in enumerate(zip(ours, theirs)):
        for a, b in zip(mine, reference):
            scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale,
                                       err_msg=f"{label}: step {step}")


TRAINING = [("StepLR", dict(step_size=4, gamma=0.5)), ("MultiStepLR", dict(milestones=[3, 9])),
            ("ConstantLR", dict(factor=0.5, total_iters=7)),
            ("LinearLR", dict(start_factor=0.2, total_iters=10)),
            ("ExponentialLR", dict(gamma=0.9)), ("PolynomialLR", dict(total_iters=20, power=2.0)),
            ("CosineAnnealingLR", dict(T_max=12, eta_min=0.01)),
            ("CosineAnnealingWarmRestarts", dict(T_0=4, T_mult=2)),
            ("OneCycleLR", dict(max_lr=0.2, total_steps=TRAINING_STEPS, cycle_momentum=False)),
            ("LambdaLR", dict(lr_lambda=_decay))]


@pytest.mark.parametrize("name, kwargs", TRAINING, ids=[name for name, _ in TRAINING])
def test_schedule_as_lr_of_torch_sgd_matches_torch(name, kwargs):
    grads = gradient_stream(TRAINING_STEPS)
    theirs = _torch_trajectory(_torch_scheduler(name, kwargs), grads, momentum=0.9,
                               weight_decay=1e-3)
    tx = gx.torch.SGD(lr=_ours(name, kwargs), momentum=0.9, weight_decay=1e-3)
    _assert_same_trajectory(run_gradxform(tx, grads), theirs, name)


def test_sequential_lr_as_lr_of_torch_sgd_matches_torch():
    grads = gradient_stream(TRAINING_STEPS)
    parts, milestones = SEQUENTIAL[0]
    ours, _ = _sequential_pair(parts, milestones, 2)

    def build(optimizer):
        inner = [getattr(lr_scheduler, name)(optimizer, **kwargs) for name, kwargs in parts]
        return lr_scheduler.SequentialLR(optimizer, inner, milestones)

    theirs = _torch_trajectory(build, grads, momentum=0.5)
    _assert_same_trajectory(run_gradxform(gx.torch.SGD(lr=ours, momentum=0.5), grads), theirs,
                            "SequentialLR")


def test_one_cycle_momentum_injected_into_sgd_matches_torch_cycling_it():
    grads = gradient_stream(TRAINING_STEPS)
    kwargs = dict(max_lr=0.2, total_steps=TRAINING_STEPS, base_momentum=0.8, max_momentum=0.95)
    theirs = _torch_trajectory(_torch_scheduler("OneCycleLR", kwargs), grads, momentum=0.9)
    schedule = OneCycleLR(**kwargs)
    tx = gx.inject_hyperparams(gx.sgd)(learning_rate=schedule,
                                        momentum=schedule.momentum_schedule())
    _assert_same_trajectory(run_gradxform(tx, grads), theirs, "OneCycleLR with momentum")
    # Without the momentum schedule, torch's default cycling is not followed.
    plain = run_gradxform(gx.torch.SGD(lr=schedule, momentum=0.9), grads)
    with pytest.raises(AssertionError):
        _assert_same_trajectory(plain, theirs, "OneCycleLR, momentum 0.9")
    with pytest.raises(ValueError, match=r"torch\.OneCycleLR: momentum_schedule: cycle_momentum"):
        OneCycleLR(**kwargs, cycle_momentum=False).momentum_schedule()


# --- ReduceLROnPlateau ---------------------------------------------------------------------

_RNG = np.random.default_rng(0)
METRICS = {
    "falling-then-flat": np.concatenate([np.linspace(3.0, 1.0, 10), np.full(30, 1.0),
                                         np.linspace(1.0, 0.5, 5), np.full(40, 0.5)]),
    "noisy-descent": 2.0 + np.cumsum(_RNG.standard_normal(120) * 0.1 - 0.01),
    "rising-then-flat": np.concatenate([np.linspace(-3.0, 2.0, 12), np.full(50, 2.0),
                                        np.linspace(2.0, 4.0, 4), np.full(30, 4.0)]),
}
PLATEAU = [
    dict(), dict(patience=2), dict(patience=0, cooldown=3, factor=0.5),
    dict(mode="max", patience=3, threshold=0.1, threshold_mode="abs"),
    dict(patience=1, min_lr=0.004, factor=0.5), dict(patience=1, factor=0.5, eps=0.003),
    dict(mode="max", threshold=0.05, patience=2), dict(threshold=0.0, patience=3, factor=0.0),
    dict(threshold=0.05, threshold_mode="abs", patience=4, cooldown=2, min_lr=1e-3),
]


def _torch_plateau_rates(kwargs: dict, metrics) -> np.ndarray:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=LR)
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, **kwargs)
    rates = []
    for metric in metrics:
        optimizer.step()
        scheduler.step(float(metric))
        rates.append(optimizer.param_groups[0]["lr"])
    return np.array(rates)


def _plateau_rates(tx, metrics) -> np.ndarray:
    grads = {"w": jnp.ones(3)}
    state = tx.init(grads)
    step = jax.jit(lambda g, s, v: tx.update(g, s, value=v))
    rates = []
    for metric in metrics:
        updates, new_state = step(grads, state, jnp.float32(metric))
        np.testing.assert_allclose(updates["w"], state.scale)  # the rate before the value
        state = new_state
        rates.append(LR * float(state.scale))
    return np.array(rates)


@pytest.mark.parametrize("kwargs", PLATEAU, ids=[str(k) for k in PLATEAU])
def test_reduce_lr_on_plateau_follows_torch_rates(kwargs):
    reductions = 0
    for label, metrics in METRICS.items():
        metrics = metrics.astype(np.float32)
        expected = _torch_plateau_rates(kwargs, metrics)
        ours = _plateau_rates(ReduceLROnPlateau(LR, **kwargs), metrics)
        np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=1e-12, err_msg=label)
        reductions += len(set(expected.tolist())) - 1
    assert reductions >= 2  # the metrics do make the rate drop


def test_every_plateau_argument_is_exercised():
    used = {key for kwargs in PLATEAU for key in kwargs} | {"lr"}
    assert set(inspect.signature(ReduceLROnPlateau).parameters) <= used


@pytest.mark.allows_nan
def test_reduce_lr_on_plateau_counts_nan_as_no_improvement_as_torch():
    metrics = np.array([1.0, np.nan, np.nan, 0.5, np.nan, np.nan, np.nan, 0.1], np.float32)
    kwargs = dict(patience=1, factor=0.5)
    np.testing.assert_allclose(_plateau_rates(ReduceLROnPlateau(LR, **kwargs), metrics),
                               _torch_plateau_rates(kwargs, metrics), rtol=RTOL)


def test_reduce_lr_on_plateau_after_torch_sgd_trains_as_torch():
    steps, kwargs = 40, dict(patience=2, factor=0.5, cooldown=1)
    grads = gradient_stream(steps)
    metrics = METRICS["falling-then-flat"][:steps].astype(np.float32)
    leaves = [torch.nn.Parameter(torch.tensor(x)) for x in jax.tree.leaves(initial_params())]
    optimizer = torch.optim.SGD(leaves, lr=LR, momentum=0.9, weight_decay=1e-3)
    scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, **kwargs)
    tx = gx.chain(gx.torch.SGD(lr=LR, momentum=0.9, weight_decay=1e-3),
                  ReduceLROnPlateau(LR, **kwargs))
    params = jax.tree.map(jnp.asarray, initial_params())
    state = tx.init(params)

    @jax.jit
    def step(params, state, g, value):
        updates, state = tx.update(g, state, params, value=value)
        return gx.apply_updates(params, updates), state

    for t, (g, metric) in enumerate(zip(grads, metrics)):
        for p, gi in zip(leaves, jax.tree.leaves(g)):
            p.grad = torch.tensor(gi)
        optimizer.step()
        scheduler.step(float(metric))
        params, state = step(params, state, jax.tree.map(jnp.asarray, g), jnp.float32(metric))
        _assert_same_trajectory([jax.tree.leaves(params)],
                                [[p.detach().numpy() for p in leaves]], f"step {t}")
    assert optimizer.param_groups[0]["lr"] < LR / 2  # it did reduce


def test_reduce_lr_on_plateau_state_and_missing_value():
    tx = ReduceLROnPlateau(LR, mode="max")
    params = {"w": jnp.zeros(2, jnp.bfloat16)}
    state = tx.init(params)
    assert isinstance(state, TorchPlateauState)
    assert state.scale.dtype == state.best_value.dtype == jnp.float32
    assert float(state.best_value) == -math.inf and float(state.scale) == 1.0
    assert jax.eval_shape(tx.init, params) == jax.eval_shape(lambda p: state, params)
    with pytest.raises(TypeError, match=r"torch\.ReduceLROnPlateau: update needs the monitored"):
        tx.update(params, state)
    updates, _ = tx.update(params, state, value=1.0)
    assert updates["w"].dtype == jnp.bfloat16


def test_reduce_lr_on_plateau_scales_row_sparse_updates_exactly():
    tx = ReduceLROnPlateau(LR, patience=0, factor=0.5)
    table = jnp.zeros((4, 2))
    sparse = gx.RowSparse(jnp.array([2, 0, 2]), jnp.arange(6.0).reshape(3, 2), num_rows=4)
    states = [tx.init(table), tx.init(table)]
    for metric in [1.0, 2.0, 3.0, 0.5]:
        pairs = zip((sparse, sparse.todense()), states)
        (rows, states[0]), (dense, states[1]) = (tx.update(g, s, value=metric) for g, s in pairs)
        assert isinstance(rows, gx.RowSparse)
        np.testing.assert_array_equal(rows.todense(), dense)
    assert float(states[0].scale) == 0.25


# --- repr, pickle, config -------------------------------------------------------------------

def _examples() -> list:
    examples = [_ours(name, sets[0][0]) for name, sets in CASES.items()]
    examples.append(SequentialLR([LinearLR(LR, total_iters=3), StepLR(LR, 5)], [3]))
    examples.append(OneCycleLR(1.0, total_steps=50).momentum_schedule())
    return examples


def test_repr_is_the_call_and_objects_compare_by_value():
    namespace = {**{name: getattr(gx.schedules, name) for name in gx.schedules.__all__},
                 **CLASSES, "SequentialLR": SequentialLR, "OneCycleMomentum": OneCycleMomentum,
                 "_decay": _decay}
    for schedule in _examples():
        text = repr(schedule)
        assert text.startswith(type(schedule).__name__ + "(")
        for field in ("lr", "T_max", "milestones", "max_lr", "base_momentum"):
            if hasattr(schedule, field):
                assert f"{field}={getattr(schedule, field)!r}" in text
        if not isinstance(schedule, LambdaLR) or schedule.lr_lambda is COSINE:
            assert eval(text, namespace) == schedule  # noqa: S307 (our own repr)
            assert pickle.loads(pickle.dumps(schedule)) == schedule
            assert hash(eval(text, namespace)) == hash(schedule)  # noqa: S307
    assert MultiStepLR(LR, [10, 20]).milestones == (10, 20)
    assert repr(ReduceLROnPlateau(LR, patience=3)) == (
        "ReduceLROnPlateau(lr=0.1, mode='min', factor=0.1, patience=3, threshold=0.0001, "
        "threshold_mode='rel', cooldown=0, min_lr=0.0, eps=1e-08)")


@pytest.fixture
def exported(monkeypatch):
    """The names exported from ``gx.torch``, as the lead's ``__init__`` will (config reads them)."""
    names = {**CLASSES, "SequentialLR": SequentialLR, "OneCycleMomentum": OneCycleMomentum,
             "ReduceLROnPlateau": ReduceLROnPlateau}
    for name, value in names.items():
        monkeypatch.setattr(gx.torch, name, value, raising=False)
    monkeypatch.setattr(gx.torch, "__all__", sorted(set(gx.torch.__all__) | set(names)))
    config._REGISTRY.clear()
    yield
    config._REGISTRY.clear()  # rebuilt from the real namespace on next use


def _round_trip(tx):
    return gx.from_config(json.loads(json.dumps(gx.to_config(tx))))


def test_schedules_round_trip_through_config(exported):
    grads = gradient_stream(12)
    for schedule in _examples():
        if isinstance(schedule, LambdaLR) and schedule.lr_lambda is not COSINE:
            with pytest.raises(TypeError, match="lr_lambda"):
                gx.to_config(gx.torch.SGD(lr=schedule))
            continue
        tx = gx.torch.SGD(lr=schedule, momentum=0.9)
        node = gx.to_config(tx)["transformation"]["args"][-1]["kwargs"]["learning_rate"]
        assert node["name"] == f"torch.{type(schedule).__name__}"
        rebuilt = _round_trip(tx)
        assert repr(rebuilt) == repr(tx)
        for a, b in zip(run_gradxform(rebuilt, grads), run_gradxform(tx, grads)):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)


def test_reduce_lr_on_plateau_round_trips_through_config_and_pickle(exported):
    tx = gx.chain(gx.torch.SGD(lr=LR), ReduceLROnPlateau(LR, mode="max", patience=2, factor=0.5))
    for rebuilt in (_round_trip(tx), pickle.loads(pickle.dumps(tx))):
        assert repr(rebuilt) == repr(tx)
        grads = {"w": jnp.ones(2)}
        states = [t.init(grads) for t in (tx, rebuilt)]
        for metric in [1.0, 0.5, 0.5, 0.5, 0.5, 0.5]:
            outs = [t.update(grads, s, value=metric) for t, s in zip((tx, rebuilt), states)]
            states = [s for _, s in outs]
            np.testing.assert_array_equal(outs[0][0]["w"], outs[1][0]["w"])
        assert float(gx.tree_get(states[1], "scale")) == 0.5


# --- bad arguments ----------------------------------------------------------------------------

ONE_CYCLE = dict(max_lr=1.0, total_steps=100)
BAD = [
    (StepLR, dict(lr=0.1, step_size=0), ValueError, "step_size"),
    (StepLR, dict(lr=0.1, step_size=2.5), TypeError, "step_size"),
    (StepLR, dict(lr=0.1, step_size=3, gamma=-0.1), ValueError, "gamma"),
    (StepLR, dict(lr=-1.0, step_size=3), ValueError, "lr"),
    (StepLR, dict(lr="0.1", step_size=3), TypeError, "lr"),
    (StepLR, dict(lr=0.1, step_size=3, gamma=math.nan), ValueError, "gamma"),
    (MultiStepLR, dict(lr=0.1, milestones=[10, -1]), ValueError, "milestones"),
    (MultiStepLR, dict(lr=0.1, milestones=5), TypeError, "milestones"),
    (MultiStepLR, dict(lr=0.1, milestones=[1.5]), TypeError, "milestones"),
    (ConstantLR, dict(lr=0.1, factor=0.0), ValueError, "factor"),
    (ConstantLR, dict(lr=0.1, factor=1.5), ValueError, "factor"),
    (ConstantLR, dict(lr=0.1, total_iters=0), ValueError, "total_iters"),
    (LinearLR, dict(lr=0.1, start_factor=0.0), ValueError, "start_factor"),
    (LinearLR, dict(lr=0.1, start_factor=1.5), ValueError, "start_factor"),
    (LinearLR, dict(lr=0.1, end_factor=-0.1), ValueError, "end_factor"),
    (LinearLR, dict(lr=0.1, end_factor=1.1), ValueError, "end_factor"),
    (LinearLR, dict(lr=0.1, total_iters=0), ValueError, "total_iters"),
    (ExponentialLR, dict(lr=0.1, gamma=-0.5), ValueError, "gamma"),
    (ExponentialLR, dict(lr=0.1, gamma=None), TypeError, "gamma"),
    (PolynomialLR, dict(lr=0.1, power=-1.0), ValueError, "power"),
    (PolynomialLR, dict(lr=0.1, total_iters=-2), ValueError, "total_iters"),
    (CosineAnnealingLR, dict(lr=0.1, T_max=0), ValueError, "T_max"),
    (CosineAnnealingLR, dict(lr=0.1, T_max=10.5), TypeError, "T_max"),
    (CosineAnnealingLR, dict(lr=0.1, T_max=10, eta_min=-0.1), ValueError, "eta_min"),
    (CosineAnnealingWarmRestarts, dict(lr=0.1, T_0=0), ValueError, "T_0"),
    (CosineAnnealingWarmRestarts, dict(lr=0.1, T_0=5, T_mult=0), ValueError, "T_mult"),
    (CosineAnnealingWarmRestarts, dict(lr=0.1, T_0=5, T_mult=1.5), TypeError, "T_mult"),
    (CosineAnnealingWarmRestarts, dict(lr=0.1, T_0=5, eta_min=math.inf), ValueError, "eta_min"),
    (OneCycleLR, dict(ONE_CYCLE, max_lr=-1.0), ValueError, "max_lr"),
    (OneCycleLR, dict(ONE_CYCLE, total_steps=0), ValueError, "total_steps"),
    (OneCycleLR, dict(max_lr=1.0, epochs=3), ValueError, "steps_per_epoch", "None"),
    (OneCycleLR, dict(max_lr=1.0, epochs=0, steps_per_epoch=3), ValueError, "epochs"),
    (OneCycleLR, dict(max_lr=1.0, epochs=3, steps_per_epoch=2.5), TypeError, "steps_per_epoch"),
    (OneCycleLR, dict(max_lr=1.0, epochs=2**16, steps_per_epoch=2**16), ValueError, "epochs"),
    (OneCycleLR, dict(ONE_CYCLE, pct_start=1.5), ValueError, "pct_start"),
    (OneCycleLR, dict(ONE_CYCLE, pct_start=0.01), ValueError, "pct_start"),  # 0.01 * 100 = 1
    (OneCycleLR, dict(ONE_CYCLE, anneal_strategy="cosine"), ValueError, "anneal_strategy"),
    (OneCycleLR, dict(ONE_CYCLE, anneal_strategy=3), TypeError, "anneal_strategy"),
    (OneCycleLR, dict(ONE_CYCLE, three_phase="yes"), TypeError, "three_phase"),
    (OneCycleLR, dict(ONE_CYCLE, cycle_momentum=1), TypeError, "cycle_momentum"),
    (OneCycleLR, dict(ONE_CYCLE, base_momentum=1.5), ValueError, "base_momentum"),
    (OneCycleLR, dict(ONE_CYCLE, max_momentum=-0.1), ValueError, "max_momentum"),
    (OneCycleLR, dict(ONE_CYCLE, div_factor=0.0), ValueError, "div_factor"),
    (OneCycleLR, dict(ONE_CYCLE, final_div_factor=-1.0), ValueError, "final_div_factor"),
    (OneCycleMomentum, dict(total_steps=0), ValueError, "total_steps"),
    (OneCycleMomentum, dict(total_steps=10, base_momentum=2.0), ValueError, "base_momentum"),
    (SequentialLR, dict(schedulers=[], milestones=[]), ValueError, "schedulers"),
    (SequentialLR, dict(schedulers=5, milestones=[]), TypeError, "schedulers"),
    (SequentialLR, dict(schedulers=[0.1], milestones=[]), TypeError, "schedulers"),
    (SequentialLR, dict(schedulers=[COSINE, COSINE], milestones=[-1]), ValueError, "milestones"),
    (SequentialLR, dict(schedulers=[COSINE] * 3, milestones=[5, 3]), ValueError, "milestones"),
    (SequentialLR, dict(schedulers=[COSINE] * 3, milestones=[5]), ValueError, "milestones"),
    (LambdaLR, dict(lr=0.1, lr_lambda=0.5), TypeError, "lr_lambda"),
    (ReduceLROnPlateau, dict(lr=0.0), ValueError, "lr"),
    (ReduceLROnPlateau, dict(lr=0.1, mode="mean"), ValueError, "mode"),
    (ReduceLROnPlateau, dict(lr=0.1, mode=1), TypeError, "mode"),
    (ReduceLROnPlateau, dict(lr=0.1, factor=1.0), ValueError, "factor"),
    (ReduceLROnPlateau, dict(lr=0.1, patience=-1), ValueError, "patience"),
    (ReduceLROnPlateau, dict(lr=0.1, threshold=-0.1), ValueError, "threshold"),
    (ReduceLROnPlateau, dict(lr=0.1, threshold=1.0), ValueError, "threshold"),
    (ReduceLROnPlateau, dict(lr=0.1, threshold_mode="relative"), ValueError, "threshold_mode"),
    (ReduceLROnPlateau, dict(lr=0.1, cooldown=1.5), TypeError, "cooldown"),
    (ReduceLROnPlateau, dict(lr=0.1, min_lr=-1.0), ValueError, "min_lr"),
    (ReduceLROnPlateau, dict(lr=0.1, eps=math.nan), ValueError, "eps"),
]


def _bad_id(case) -> str:
    return f"{case[0].__name__}-{case[3]}={case[1].get(case[3], '?')!r}"[:60]


@pytest.mark.parametrize("case", BAD, ids=[_bad_id(c) for c in BAD])
def test_bad_argument_raises_naming_schedule_argument_and_value(case):
    ctor, kwargs, exc, argument = case[:4]
    shown = case[4] if len(case) > 4 else repr(kwargs[argument])
    with pytest.raises(exc) as info:
        ctor(**kwargs)
    message = str(info.value)
    assert type(info.value) is exc, message
    assert f"torch.{ctor.__name__}: " in message, message
    assert argument in message and shown in message, message


def test_steps_must_be_integers():
    for schedule in _examples():
        with pytest.raises(TypeError, match=rf"torch\.{type(schedule).__name__}: the step must"):
            schedule(jnp.float32(3.0))


def test_modules_stay_small_and_torch_free():
    for module in (schedules, annealing, plateau):
        source = inspect.getsource(module)
        assert len(source.splitlines()) <= 400, module.__name__
        assert "import torch" not in source
