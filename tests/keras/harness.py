"""Replaying one gradient stream through Keras 3 and through the ``gx.keras`` presets.

Keras runs on JAX (the root conftest fixes ``KERAS_BACKEND=jax``) through its
jitted ``stateless_apply``, the path ``model.fit`` uses and the only one that
works for ``LossScaleOptimizer`` on JAX. Keras is not strict-dtype clean, so
every Keras call runs under ``jax.numpy_dtype_promotion("standard")``;
gradxform runs under the suite's strict promotion.

The model is five leaves, named so that Keras's short variable names and our
key paths see the same ``exclude_from_weight_decay`` patterns::

    {"dense": {"kernel": (3, 4), "bias": (4,)}, "norm": {"gamma": (4,), "beta": (4,)}, "scale": ()}

``norm/beta`` always has a zero gradient. A config is ``(optimizer, kwargs)``
with Keras's argument names; a learning-rate schedule is given as a
`ScheduleSpec`, which builds Keras's schedule for Keras and the same-named
``gx.keras`` schedule for gradxform.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import keras
import numpy as np

import gradxform as gx

STEPS = 24
PATHS = (("dense", "kernel"), ("dense", "bias"), ("norm", "gamma"), ("norm", "beta"), ("scale",))
SHAPES = ((3, 4), (4,), (4,), (4,), ())
NAMES = tuple(path[-1] for path in PATHS)  # Keras variable names: no "/" allowed
LABELS = tuple("/".join(path) for path in PATHS)
ALWAYS_ZERO = LABELS.index("norm/beta")
LARGE_STEPS = (3, 10, 17, 22)  # gradients x30..x100 here, so that every clipping kind triggers
ZERO_STEPS = {  # leaf -> steps where it is all zeros (a whole gas=3 window, a gas=2 window, ...)
    "dense/kernel": (6, 7, 8),
    "dense/bias": (12, 13),
    "norm/gamma": (19,),
    "scale": (0,),
}
RTOL, ATOL = 1e-5, 1e-6
# gx.keras preset name -> Keras class name
KERAS_CLASSES = {"adagrad": "Adagrad", "adam": "Adam", "adamw": "AdamW", "adamax": "Adamax",
                 "adadelta": "Adadelta", "sgd": "SGD", "rmsprop": "RMSprop", "lion": "Lion",
                 "ftrl": "Ftrl", "lamb": "Lamb", "nadam": "Nadam", "adafactor": "Adafactor",
                 "muon": "Muon", "schedule_free_adamw": "ScheduleFreeAdamW"}

# One parameter set per Keras schedule, shaped for a 24-call run (warmup, restarts, ... all happen).
SCHEDULES = {
    "ExponentialDecay": dict(initial_learning_rate=0.1, decay_steps=5, decay_rate=0.5),
    "PiecewiseConstantDecay": dict(boundaries=[5, 11, 17], values=[0.1, 0.05, 0.02, 0.01]),
    "PolynomialDecay": dict(
        initial_learning_rate=0.1, decay_steps=20, end_learning_rate=0.001, power=2.0
    ),
    "InverseTimeDecay": dict(
        initial_learning_rate=0.1, decay_steps=4, decay_rate=0.5, staircase=True
    ),
    "CosineDecay": dict(
        initial_learning_rate=0.01, decay_steps=14, alpha=0.1, warmup_target=0.1, warmup_steps=6
    ),
    "CosineDecayRestarts": dict(
        initial_learning_rate=0.1, first_decay_steps=4, t_mul=2.0, m_mul=0.8, alpha=0.05
    ),
}


@dataclasses.dataclass
class ScheduleSpec:
    """A Keras schedule by class name and keyword arguments, built for either side."""

    name: str
    kwargs: dict

    def keras(self):
        return getattr(keras.optimizers.schedules, self.name)(**self.kwargs)

    def gx(self):
        return getattr(gx.keras, self.name)(**self.kwargs)

    @classmethod
    def named(cls, name: str) -> "ScheduleSpec":
        """The `SCHEDULES` parameter set of that schedule."""
        return cls(name, dict(SCHEDULES[name]))

    def __repr__(self) -> str:
        return f"{self.name}(" + ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items()) + ")"


@dataclasses.dataclass
class Run:
    """One run: the params after every call, the finalized params, the loss scale after every call."""

    trajectory: list  # [step][leaf] -> np.ndarray
    finalized: list  # [leaf] -> np.ndarray
    loss_scales: list  # [step] -> float, the scale after that call (1.0 without any)
    optimizer: Any = None  # Keras: the optimizer, its variables set to the final values
    state: Any = None  # gradxform: the final optimizer state
    params: Any = None  # gradxform: the final params tree


# Shared arguments, cycled over each optimizer's own configurations by the parity tests.
SHARED = [
    dict(weight_decay=0.1, exclude_from_weight_decay=["bias", "gamma"], clipnorm=1.0),
    dict(learning_rate=ScheduleSpec.named("ExponentialDecay"), use_ema=True,
         gradient_accumulation_steps=3),
    dict(clipvalue=0.5, loss_scale_factor=128.0, use_ema=True, ema_momentum=0.9,
         ema_overwrite_frequency=3),
    dict(learning_rate=ScheduleSpec.named("CosineDecayRestarts"), global_clipnorm=1.0,
         weight_decay=0.3, gradient_accumulation_steps=2),
    dict(learning_rate=ScheduleSpec.named("PiecewiseConstantDecay"), clipnorm=2.0,
         loss_scale_factor=4.0),
]


def initial_values(seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]


def gradient_stream(steps: int = STEPS, seed: int = 1) -> list:
    """``steps`` lists of unscaled float32 gradients, one per leaf, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    stream = []
    for step in range(steps):
        factor = rng.uniform(30.0, 100.0) if step in LARGE_STEPS else 1.0
        grads = []
        for label, shape in zip(LABELS, SHAPES):
            g = (rng.standard_normal(shape) * factor).astype(np.float32)
            if label == LABELS[ALWAYS_ZERO] or step in ZERO_STEPS.get(label, ()):
                g = np.zeros(shape, np.float32)
            grads.append(g)
        stream.append(grads)
    return stream


def to_tree(flat: Sequence) -> dict:
    tree: dict = {}
    for path, value in zip(PATHS, flat):
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def from_tree(tree: Mapping) -> list:
    flat = []
    for path in PATHS:
        node = tree
        for key in path:
            node = node[key]
        flat.append(np.asarray(node))
    return flat


def scaled_gradients(grads: Sequence, scale, step: int, nonfinite: Mapping[int, float]) -> list:
    """The gradients of the scaled loss: ``g * scale``, plus a non-finite entry at ``step`` if asked.

    The non-finite value goes to entry 0 of leaf ``step % 5``, so that several leaves get one.
    """
    scale = np.float32(scale)
    out = [np.asarray(g, np.float32) * scale for g in grads]
    if step in nonfinite:
        leaf = step % len(out)
        bad = out[leaf].copy().reshape(-1)
        bad[0] = nonfinite[step]
        out[leaf] = bad.reshape(out[leaf].shape)
    return out


def _keras_value(value):
    return value.keras() if isinstance(value, ScheduleSpec) else value


def _gx_value(value):
    return value.gx() if isinstance(value, ScheduleSpec) else value


def make_keras(optimizer: str, kwargs: Mapping, lso: Mapping | None = None):
    """Keras's optimizer for a config (``Adam`` for ``"adam"``), optionally in a LossScaleOptimizer."""
    kwargs = {key: _keras_value(value) for key, value in kwargs.items()}
    exclude = kwargs.pop("exclude_from_weight_decay", None)
    cls = getattr(keras.optimizers, KERAS_CLASSES[optimizer])
    opt = cls(**kwargs)
    if exclude is not None:
        opt.exclude_from_weight_decay(var_names=list(exclude))
    if lso is not None:
        opt = keras.optimizers.LossScaleOptimizer(opt, **lso)
    return opt


def make_gradxform(optimizer: str, kwargs: Mapping, lso: Mapping | None = None):
    """The ``gx.keras`` preset for the same config."""
    kwargs = {key: _gx_value(value) for key, value in kwargs.items()}
    tx = getattr(gx.keras, optimizer)(**kwargs)
    return tx if lso is None else gx.keras.loss_scale_optimizer(tx, **lso)


def _keras_scale_index(opt) -> int | None:
    for i, variable in enumerate(opt.variables):
        if variable.name == "dynamic_scale":
            return i
    return None


def run_keras(
    optimizer: str,
    kwargs: Mapping,
    *,
    lso: Mapping | None = None,
    grads: Sequence | None = None,
    nonfinite: Mapping[int, float] | None = None,
    built: Any = None,
) -> Run:
    """Replays ``grads`` (default `gradient_stream`) through Keras's jitted ``stateless_apply``.

    ``built``: a Keras optimizer to run instead of the one ``optimizer``/``kwargs``/``lso`` make.
    """
    grads = gradient_stream() if grads is None else grads
    nonfinite = nonfinite or {}
    with jax.numpy_dtype_promotion("standard"):
        variables = [keras.Variable(v, name=n) for v, n in zip(initial_values(), NAMES)]
        opt = make_keras(optimizer, kwargs, lso) if built is None else built
        opt.build(variables)
        scale_index = _keras_scale_index(opt)
        static_scale = 1.0 if scale_index is not None else (opt.loss_scale_factor or 1.0)
        opt_values = [v.value for v in opt.variables]
        values = [v.value for v in variables]
        apply = jax.jit(opt.stateless_apply)

        def current_scale():
            return static_scale if scale_index is None else float(opt_values[scale_index])

        trajectory, loss_scales = [], []
        for step, g in enumerate(grads):
            scaled = scaled_gradients(g, current_scale(), step, nonfinite)
            values, opt_values = apply(opt_values, [jnp.asarray(x) for x in scaled], values)
            trajectory.append([np.asarray(x) for x in values])
            loss_scales.append(current_scale())
        for variable, value in zip(opt.variables, opt_values):
            variable.assign(value)
        for variable, value in zip(variables, values):
            variable.assign(value)
        opt.finalize_variable_values(variables)
        finalized = [np.asarray(v.value) for v in variables]
    return Run(trajectory, finalized, loss_scales, optimizer=opt)


def run_gradxform(
    tx: Any,
    *,
    grads: Sequence | None = None,
    nonfinite: Mapping[int, float] | None = None,
) -> Run:
    """Replays the same stream through a gradxform transformation (jitted), from the same params."""
    grads = gradient_stream() if grads is None else grads
    nonfinite = nonfinite or {}
    params = to_tree([jnp.asarray(v) for v in initial_values()])
    state = tx.init(params)

    @jax.jit
    def step_fn(params, state, g):
        updates, state = tx.update(g, state, params)
        return gx.apply_updates(params, updates), state, gx.current_loss_scale(state)

    scale = gx.current_loss_scale(state)
    trajectory, loss_scales = [], []
    for step, g in enumerate(grads):
        scaled = scaled_gradients(g, scale, step, nonfinite)
        params, state, scale = step_fn(params, state, to_tree([jnp.asarray(x) for x in scaled]))
        trajectory.append(from_tree(params))
        loss_scales.append(float(scale))
    finalized = from_tree(gx.finalize_params(params, state))
    return Run(trajectory, finalized, loss_scales, state=state, params=params)


def assert_trajectories_close(
    ours: Run, ref: Run, label: str, *, rtol: float = RTOL, atol: float = ATOL
) -> None:
    """Every leaf at every step, then the finalized params, within ``rtol``/``atol``; scales exactly."""
    assert len(ours.trajectory) == len(ref.trajectory), label
    steps = len(ref.trajectory)
    for step, (mine, theirs) in enumerate(zip(ours.trajectory, ref.trajectory)):
        for leaf, (a, b) in enumerate(zip(mine, theirs)):
            np.testing.assert_allclose(
                a, b, rtol=rtol, atol=atol,
                err_msg=f"{label}: params after call {step} of {steps}, leaf {LABELS[leaf]}",
            )
    for leaf, (a, b) in enumerate(zip(ours.finalized, ref.finalized)):
        np.testing.assert_allclose(
            a, b, rtol=rtol, atol=atol, err_msg=f"{label}: finalized params, leaf {LABELS[leaf]}"
        )
    np.testing.assert_array_equal(
        ours.loss_scales, ref.loss_scales, err_msg=f"{label}: loss scale after each call"
    )


def assert_runs_equal(ours: Run, ref: Run, label: str) -> None:
    """Bitwise equality of two runs: every step, the finalized params and the scales."""
    for step, (mine, theirs) in enumerate(zip(ours.trajectory, ref.trajectory, strict=True)):
        for leaf, (a, b) in enumerate(zip(mine, theirs)):
            np.testing.assert_array_equal(a, b, err_msg=f"{label}: call {step}, leaf {LABELS[leaf]}")
    for leaf, (a, b) in enumerate(zip(ours.finalized, ref.finalized)):
        np.testing.assert_array_equal(a, b, err_msg=f"{label}: finalized, leaf {LABELS[leaf]}")
    np.testing.assert_array_equal(ours.loss_scales, ref.loss_scales, err_msg=label)


def check_parity(
    optimizer: str,
    kwargs: Mapping,
    *,
    lso: Mapping | None = None,
    grads: Sequence | None = None,
    nonfinite: Mapping[int, float] | None = None,
    label: str | None = None,
) -> tuple[Run, Run]:
    """Runs a config on both sides, asserts they agree, and returns ``(ours, keras)``."""
    label = label or describe(optimizer, kwargs, lso)
    ref = run_keras(optimizer, kwargs, lso=lso, grads=grads, nonfinite=nonfinite)
    ours = run_gradxform(make_gradxform(optimizer, kwargs, lso), grads=grads, nonfinite=nonfinite)
    assert_trajectories_close(ours, ref, label)
    return ours, ref


def describe(optimizer: str, kwargs: Mapping, lso: Mapping | None = None) -> str:
    """``adam(learning_rate=0.05, clipnorm=1.0)``, wrapped in ``lso(...)`` when dynamic scaling."""
    text = f"{optimizer}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"
    if lso is not None:
        text = "lso(" + text + ", " + ", ".join(f"{k}={v!r}" for k, v in lso.items()) + ")"
    return text
