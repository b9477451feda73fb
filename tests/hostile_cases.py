"""Table data for ``tests/test_errors.py``: hostile values for every public argument.

`SPECS` maps each public function (by its public name) to valid keyword
arguments (``base``) and, per argument, a battery of ``(bad value, exception)``
pairs. `CASES` expands it into one `Case` per (function, argument, value).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import numpy as np

import gradxform as gx
from gradxform import schedules as S

NAN = float("nan")
INF = float("inf")
ARRAY2 = jnp.ones(2)
SGD = gx.sgd(0.1)
CONST = S.constant_schedule(0.1)
CYCLE = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10)


class Case(NamedTuple):
    owner: str  # the public name: "adam", "keras.adam", "schedules.linear_schedule"
    ctor: Callable
    argument: str  # the parameter under test (as in the signature)
    value: Any
    exc: type
    kwargs: dict  # the call's keyword arguments (valid ones plus the bad value)
    args: tuple = ()  # positional arguments, for ``*transforms``
    shown: str | None = None  # what the message must show; default repr(value)


# --- batteries of (value, exception) ------------------------------------------------

WRONG_TYPE = [("0.1", TypeError), (True, TypeError), ([0.1], TypeError),
              (ARRAY2, TypeError), (0.5 + 0.1j, TypeError)]
# Finite in Python, not in float32, where the arithmetic runs: 1e39 is inf there.
NONFINITE = [(NAN, ValueError), (INF, ValueError), (-INF, ValueError),
             (1e39, ValueError), (-1e39, ValueError)]
NEGATIVE = [(-1e-3, ValueError), (-1.0, ValueError)]


def _none(optional: bool) -> list:
    return [] if optional else [(None, TypeError)]


def real(optional=False):
    return WRONG_TYPE + NONFINITE + _none(optional)


def non_negative(optional=False):
    return real(optional) + NEGATIVE


def positive(optional=False):
    # 1e-50 rounds to 0 in float32, 1e-40 to a subnormal that XLA flushes to 0.
    return non_negative(optional) + [(0.0, ValueError), (1e-50, ValueError), (1e-40, ValueError)]


def rate(optional=False, *, allow_one=False):
    """A decay or momentum: [0, 1), or [0, 1] when ``allow_one``."""
    # 0.99999999 rounds to 1.0 in float32.
    above = [(1.01, ValueError), (1.5, ValueError)] + (
        [] if allow_one else [(1.0, ValueError), (0.99999999, ValueError)])
    return real(optional) + [(-0.1, ValueError)] + above


def count(minimum=1, optional=False):
    """An int step count in [minimum, 2**31 - 1]."""
    low = sorted({minimum - 1, -1})
    return ([(v, ValueError) for v in low] + [(2**31, ValueError)]
            + [(v, TypeError) for v in (2.5, float(minimum + 1), True, "2")] + _none(optional))


BOOL = [(1, TypeError), (0, TypeError), (1.0, TypeError), ("yes", TypeError), (None, TypeError)]
DTYPE = [("not_a_dtype", TypeError), (3.5, TypeError), ("int32", ValueError),
         (jnp.int8, ValueError), (np.dtype("bool"), ValueError)]
CALLABLE = [(3, TypeError), ("f", TypeError), (0.1, TypeError)]
TX = [(3, TypeError), ("adam", TypeError), (None, TypeError), (gx.adam, TypeError),
      ({"init": 1}, TypeError)]
PATTERNS = [("(", ValueError), ("bias[", ValueError), (3, TypeError), (b"bias", TypeError),
            (["bias", 3], TypeError)]
MASK = [("bias(", ValueError), ({}, ValueError), (["bias", 3], TypeError), (3, TypeError),
        ({"w": 0.5}, TypeError)]
NAME = [(3, TypeError), (b"adam", TypeError), (["adam"], TypeError)]
LEARNING_RATE = non_negative(optional=True)  # None: no learning-rate scaling
WEIGHT_DECAY = non_negative()
KERAS_LR = non_negative() + [((lambda: 0.1), TypeError)]
KERAS_GAS = [(1, ValueError), (-2, ValueError), (True, ValueError), (2**31, ValueError),
             (2.5, TypeError), (2.0, TypeError), ("2", TypeError)]
KERAS_EMA_FREQUENCY = [(0, ValueError), (-1, ValueError), (True, ValueError), (2.0, ValueError),
                       (2**31, ValueError), ("2", TypeError), (ARRAY2, TypeError)]
# A random key: an int seed in [-2**63, 2**63), a jax.random.key or a PRNGKey (None: seed 0).
SEED = [("0", TypeError), (1.5, TypeError), (True, TypeError), ([0], TypeError),
        (0.5 + 0.1j, TypeError), (2**63, ValueError), (-(2**63) - 1, ValueError)]
KEY = SEED + [(ARRAY2, TypeError), (jnp.ones(3, jnp.uint32), TypeError)]
# A step count that may also be a 0-d integer array.
STEP_ARRAYS = [(jnp.float32(1.0), TypeError), (jnp.ones(2, jnp.int32), TypeError),
         (np.bool_(True), TypeError), (jnp.int32(-1), ValueError)]


def _keras_base(**own):
    """The arguments every Keras preset takes."""
    return dict(
        own, weight_decay=non_negative(True), clipnorm=positive(True), clipvalue=positive(True),
        global_clipnorm=positive(True), use_ema=BOOL, ema_momentum=rate(allow_one=True),
        ema_overwrite_frequency=KERAS_EMA_FREQUENCY,
        loss_scale_factor=positive(True) + _SCALE_OUT_OF_RANGE,
        gradient_accumulation_steps=KERAS_GAS, exclude_from_weight_decay=PATTERNS, name=NAME,
        kwargs=[({"decay": 0.1}, ValueError), ({"foo": 1}, ValueError), ({"lr": 0.1}, ValueError)],
    )


# torch schedulers' factors, milestones and one-cycle phases.
_FACTOR = real() + [(0.0, ValueError), (-0.1, ValueError), (1.01, ValueError), (1e-50, ValueError)]
_MILESTONES = [(3, TypeError), ([10.5], TypeError), ([-1], ValueError), (["10"], TypeError),
               (None, TypeError), ([2**31], ValueError)]
_CYCLE = dict(total_steps=count(optional=True), epochs=count(optional=True),
              steps_per_epoch=count(optional=True),
              pct_start=rate(allow_one=True) + [(0.01, ValueError)],
              anneal_strategy=[("cosine", ValueError), (3, TypeError), (None, TypeError)],
              base_momentum=rate(allow_one=True), max_momentum=rate(allow_one=True),
              three_phase=BOOL)
# torch's Rprop (etaminus, etaplus) and (min step, max step).
_TORCH_ETAS = [(0.5, TypeError), ((0.5,), TypeError), (None, TypeError), (("0.5", 1.2), TypeError),
               ((0.5, 1.0), ValueError), ((1.0, 1.2), ValueError), ((0.0, 1.2), ValueError),
               ((-0.5, 1.2), ValueError), ((0.5, NAN), ValueError), ((0.5, INF), ValueError)]
_TORCH_STEP_SIZES = [(1e-6, TypeError), ((1e-6,), TypeError), (None, TypeError),
                     (("a", 50), TypeError), ((True, 50), TypeError), ((-1.0, 50), ValueError),
                     ((0.0, 0.0), ValueError), ((1.0, 0.5), ValueError), ((0.1, 50), ValueError),
                     ((1e-6, NAN), ValueError), ((1e-6, 1e39), ValueError)]
# A p-norm's order: a Python number > 0, or inf.
_NORM_TYPE = [(None, TypeError), ([2.0], TypeError), (ARRAY2, TypeError), (True, TypeError),
              (0.0, ValueError), (-1.0, ValueError), (NAN, ValueError), (-INF, ValueError)]
# torch's (beta1, beta2): a pair of rates.
_TORCH_BETAS = [(0.9, TypeError), ((0.9,), TypeError), (None, TypeError),
                (("0.9", 0.999), TypeError), ((0.9, 1.0), ValueError), ((-0.1, 0.999), ValueError),
                ((0.9, NAN), ValueError)]


def _keras_schedule(**own):
    return dict(initial_learning_rate=real(), name=NAME, **own)


# --- the specs: public name -> (constructor, valid kwargs, {argument: battery}) ----------

_ADAM = dict(b1=rate(), b2=rate(), eps=non_negative(), eps_root=non_negative(), mu_dtype=DTYPE)
_RMS = dict(decay=rate(allow_one=True), eps=non_negative(), initial_scale=non_negative(),
            eps_in_sqrt=BOOL, bias_correction=BOOL)
# A phase that would end on the step another ends on (pct_start = 1 leaves no decay).
_ONECYCLE = dict(transition_steps=count(), peak_value=real(),
                 pct_start=rate(allow_one=True) + [(1.0, ValueError)],
                 div_factor=positive(), final_div_factor=positive())
# Scales are kept in float32's normal range, where 1/s is normal too: [2**-126, 2**126].
_SCALE_OUT_OF_RANGE = [(1e-40, ValueError), (2.0**127, ValueError)]
# Schedule-free (its b1 in (0, 1]) and a state of it for schedule_free_eval_params.
_SF_B1 = real() + [(0.0, ValueError), (-0.1, ValueError), (1.01, ValueError), (1e-50, ValueError),
                   (1e-40, ValueError)]
_SF_STATE = gx.schedule_free(SGD, 0.1).init({"w": ARRAY2})
_PIECEWISE_BAD = [
    (3, TypeError), ([(10, 0.5)], TypeError), ({10: -0.5}, ValueError), ({10: "x"}, TypeError),
    ({10: NAN}, ValueError), ({-1: 0.5}, ValueError), ({2.5: 0.5}, TypeError),
]

# Adam's family (transforms/adam_variants.py, transforms/novograd.py, optimizers/adam_family.py).
_MOMENTS = dict(b1=rate(), b2=rate(), eps=non_negative())
_BELIEF = dict(_MOMENTS, eps_root=non_negative(), nesterov=BOOL)
# r_t is real only for rho_t >= 4, so the threshold must be at least 4.
_RADAM = dict(_BELIEF, threshold=real() + [(3.9, ValueError), (0.0, ValueError), (-5.0, ValueError)])
_RADAM_TRANSFORM = dict(_RADAM, eps_hat=BOOL, accurate_bias_correction=BOOL)
# A number, as optax's transform needs: a schedule is not one.
_NOVOGRAD = dict(b1=rate(allow_one=True), b2=rate(), eps=non_negative(), eps_root=non_negative(),
                 weight_decay=non_negative() + [(CONST, TypeError)])
# Parameter-free methods: Prodigy's (beta1, beta2) pair, DoG's (kind, value) start, Sophia.
_PRODIGY = dict(
    learning_rate=non_negative(),
    betas=[(0.9, TypeError), ((0.9,), TypeError), (None, TypeError), (("0.9", 0.999), TypeError),
           ((0.9, 1.0), ValueError), ((-0.1, 0.999), ValueError), ((0.9, NAN), ValueError)],
    beta3=rate(True, allow_one=True), eps=non_negative(), estim_lr0=positive(),
    estim_lr_coef=non_negative(), weight_decay=non_negative(), safeguard_warmup=BOOL)
_INIT_STEP = [(None, TypeError), ("heuristic", TypeError), (("heuristic",), TypeError),
              ((1e-6, "heuristic"), TypeError), (("guess", 1e-6), ValueError),
              (("heuristic", 0.0), ValueError), (("distance", -1.0), ValueError),
              (("learning_rate", NAN), ValueError), (("distance", "1"), TypeError),
              (("heuristic", 1e39), ValueError)]
_SOPHIA = dict(b1=rate(), b2=rate(), eps=positive(), gamma=non_negative(),
               clip_threshold=positive(True), update_interval=count(), hessian_diagonal_fn=TX,
               mu_dtype=DTYPE, verbose=BOOL, print_win_rate_every_n_steps=count(0))
# Muon (transforms/{orthogonalize,shape_scaling}.py, optimizers/muon.py): coefficients are a
# triple or at most ns_steps (5) of them, or a preset's name; dimension numbers a
# MuonDimensionNumbers, a tree of them, or a callable.
_NS_COEFFS = [(3, TypeError), (True, TypeError), (None, TypeError), (("a", "b", "c"), TypeError),
              ("quintic", ValueError), ((1.0, 2.0), ValueError), ((1.0, 2.0, NAN), ValueError),
              ((1.0, 2.0, 1e39), ValueError), (((1.0, 2.0, 3.0),) * 6, ValueError)]
_PRECONDITIONING = [("svd", ValueError), ("Frobenius", ValueError), (3, TypeError),
                    (None, TypeError), (b"aol", TypeError)]
_DIMENSION_NUMBERS = [(3, TypeError), ("x", TypeError), ({"w": (0, 1)}, TypeError),
                      ({"w": True}, TypeError), (gx.MuonDimensionNumbers(0, 0), ValueError),
                      (gx.MuonDimensionNumbers((0, 0), 1), ValueError),
                      (gx.MuonDimensionNumbers("0", 1), TypeError),
                      (gx.MuonDimensionNumbers(True, 1), TypeError)]
_TORCH_NS_COEFFICIENTS = [(3, TypeError), (None, TypeError), ("abc", TypeError),
                          ((1.0, 2.0), ValueError), ((1.0, 2.0, 3.0, 4.0), ValueError),
                          (("a", "b", "c"), TypeError), ((1.0, 2.0, True), TypeError),
                          ((1.0, 2.0, NAN), ValueError), ((1.0, 2.0, 1e39), ValueError),
                          (((1.0, 2.0, 3.0),) * 3, TypeError)]
_MOMENTUM_FORM = [("torch", ValueError), ("Debiased", ValueError), (3, TypeError),
                  (None, TypeError), (b"ema", TypeError)]
_NS_DTYPE = DTYPE + [(jnp.complex64, ValueError), ("complex64", ValueError)]
_MUON = dict(ns_coeffs=_NS_COEFFS, ns_steps=count(0), beta=rate(), eps=positive(), mu_dtype=DTYPE,
             nesterov=BOOL, adaptive=BOOL, preconditioning=_PRECONDITIONING)
# ADOPT, AdEMAMix, MADGRAD (transforms/{adopt,ademamix,madgrad}.py, optimizers/contrib_adaptive.py).
_ADOPT = dict(b1=rate(allow_one=True), b2=rate(allow_one=True), eps=positive(), mu_dtype=DTYPE,
              nesterov=BOOL, use_clipping=BOOL, clip_value_fn=CALLABLE + _none(False))
_ADEMAMIX = dict(b1=rate(), b2=rate(), b3=rate(allow_one=True), alpha=real(),
                 eps=non_negative(), eps_root=non_negative(), mu_dtype=DTYPE)
_SIMPLIFIED_ADEMAMIX = dict(b1=rate(allow_one=True), b2=rate(), alpha=real(), eps=non_negative(),
                            eps_root=non_negative())
_ADAM_FAMILY_SPECS = {
    "scale_by_belief": (gx.scale_by_belief, {}, _BELIEF),
    "scale_by_yogi": (gx.scale_by_yogi, {},
                      dict(_MOMENTS, eps_root=non_negative(), initial_accumulator_value=positive())),
    "scale_by_radam": (gx.scale_by_radam, {}, _RADAM_TRANSFORM),
    "scale_by_adamax": (gx.scale_by_adamax, {}, dict(_MOMENTS, eps_in_max=BOOL,
                                                     accurate_bias_correction=BOOL)),
    "scale_by_nadam": (gx.scale_by_nadam, {}, dict(_MOMENTS, momentum_decay=non_negative(),
                                                   accurate_bias_correction=BOOL)),
    "params_average": (gx.params_average, {}, dict(t0=non_negative(), average_dtype=DTYPE)),
    "schedules.averaged_sgd_schedule": (
        S.averaged_sgd_schedule, dict(learning_rate=0.1),
        dict(learning_rate=non_negative(), lambd=non_negative(), alpha=non_negative())),
    "schedules.relative_step_size": (S.relative_step_size, dict(learning_rate=0.1),
                                     dict(learning_rate=non_negative())),
    "schedules.warmup_scaled_schedule": (
        S.warmup_scaled_schedule, dict(learning_rate=0.1, warmup_steps=3),
        dict(learning_rate=non_negative(), warmup_steps=count(0))),
    "scale_by_novograd": (gx.scale_by_novograd, {}, dict(_NOVOGRAD, mu_dtype=DTYPE)),
    "adabelief": (gx.adabelief, dict(learning_rate=0.1), dict(_BELIEF, learning_rate=LEARNING_RATE)),
    "adamax": (gx.adamax, dict(learning_rate=0.1), dict(_MOMENTS, learning_rate=LEARNING_RATE)),
    "adamaxw": (gx.adamaxw, dict(learning_rate=0.1),
                dict(_MOMENTS, learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, mask=MASK)),
    "amsgrad": (gx.amsgrad, dict(learning_rate=0.1),
                dict(_ADAM, learning_rate=LEARNING_RATE, bias_correction_mu=BOOL,
                     bias_correction_nu=BOOL)),
    "nadam": (gx.nadam, dict(learning_rate=0.1),
              dict(_ADAM, learning_rate=LEARNING_RATE, nesterov=BOOL)),
    "nadamw": (gx.nadamw, dict(learning_rate=0.1),
               dict(_ADAM, learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, mask=MASK,
                    nesterov=BOOL)),
    "radam": (gx.radam, dict(learning_rate=0.1), dict(_RADAM, learning_rate=LEARNING_RATE)),
    "yogi": (gx.yogi, dict(learning_rate=0.1), dict(_MOMENTS, learning_rate=LEARNING_RATE)),
    "novograd": (gx.novograd, dict(learning_rate=0.1), dict(_NOVOGRAD, learning_rate=LEARNING_RATE)),
}

SPECS = {
    **_ADAM_FAMILY_SPECS,
    "accumulate_gradients": (gx.accumulate_gradients, dict(inner=SGD, every_k=2),
                             dict(inner=TX, every_k=count(), accumulator_dtype=DTYPE)),
    "adagrad": (gx.adagrad, dict(learning_rate=0.1),
                dict(learning_rate=LEARNING_RATE, initial_accumulator_value=non_negative(),
                     eps=non_negative())),
    "adam": (gx.adam, dict(learning_rate=0.1),
             dict(learning_rate=LEARNING_RATE, nesterov=BOOL, amsgrad=BOOL, **_ADAM)),
    "RowSparse": (gx.RowSparse, dict(indices=jnp.array([0, 1]), values=jnp.ones((2, 3)),
                                     num_rows=4), dict(
        indices=[(jnp.array([5, 0]), ValueError, "got 5 at position 0"),
                 (jnp.array([0, -1]), ValueError, "got -1 at position 1"),
                 (jnp.array([0.0, 1.0]), TypeError, "float32[2]"),
                 (jnp.array([[0, 1]]), TypeError, "int32[1, 2]"),
                 (jnp.array([0, 1, 2]), ValueError, "for 3 indices")],
        values=[(jnp.ones((3, 3)), ValueError, "(3, 3)"),
                (jnp.ones((2, 3), jnp.int32), TypeError, "int32"),
                (jnp.ones(()), ValueError, "shape ()")],
        num_rows=[(0, ValueError), (-3, ValueError), (2.0, ValueError), (True, ValueError),
                  (None, ValueError), ("4", ValueError)],
        unique=[(1, TypeError), ("yes", TypeError), (None, TypeError)])),
    "scale_by_lazy_adam": (gx.scale_by_lazy_adam, {}, dict(nu_dtype=DTYPE, eps_hat=BOOL,
                                                            accurate_bias_correction=BOOL, **_ADAM)),
    "lazy_adam": (gx.lazy_adam, dict(learning_rate=0.1),
                  dict(learning_rate=LEARNING_RATE, nu_dtype=DTYPE, eps_hat=BOOL, **_ADAM)),
    "ftrl": (gx.ftrl, {}, dict(
        learning_rate=positive(),
        learning_rate_power=real() + [(1e-3, ValueError), (0.5, ValueError)],
        initial_accumulator_value=non_negative(), l1_regularization_strength=non_negative(),
        l2_regularization_strength=non_negative(),
        l2_shrinkage_regularization_strength=non_negative(), beta=non_negative())),
    "adamw": (gx.adamw, dict(learning_rate=0.1),
              dict(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, mask=MASK,
                   nesterov=BOOL, **_ADAM)),
    "add_decayed_weights": (gx.add_decayed_weights, {},
                            dict(weight_decay=WEIGHT_DECAY, mask=MASK, exclude=PATTERNS)),
    "add_noise": (gx.add_noise, dict(eta=0.01, gamma=0.55),
                  dict(eta=non_negative(), gamma=non_negative(), key=KEY, seed=SEED)),
    "apply_every": (gx.apply_every, {}, dict(k=count())),
    "apply_if_finite": (gx.apply_if_finite, dict(inner=SGD, max_consecutive_errors=3),
                        dict(inner=TX, max_consecutive_errors=count(0))),
    "chain": (gx.chain, {}, dict(transforms=TX)),
    "clip": (gx.clip, {}, dict(max_delta=positive())),
    "clip_by_global_norm": (gx.clip_by_global_norm, {}, dict(max_norm=positive())),
    "clip_by_global_p_norm": (gx.clip_by_global_p_norm, dict(max_norm=1.0),
                              dict(max_norm=positive(), norm_type=_NORM_TYPE, eps=non_negative(),
                                   error_if_nonfinite=BOOL)),
    "clip_by_norm": (gx.clip_by_norm, {}, dict(max_norm=positive())),
    # Trust ratios and per-block norms (transforms/trust_ratio.py, transforms/block_clipping.py,
    # optimizers/trust_ratio.py).
    "scale_by_trust_ratio": (gx.scale_by_trust_ratio, {},
                             dict(min_norm=non_negative(), trust_coefficient=non_negative(),
                                  eps=non_negative())),
    "scale_by_param_block_norm": (gx.scale_by_param_block_norm, {}, dict(min_scale=non_negative())),
    "scale_by_param_block_rms": (gx.scale_by_param_block_rms, {}, dict(min_scale=non_negative())),
    "clip_by_block_rms": (gx.clip_by_block_rms, {}, dict(threshold=positive())),
    "adaptive_grad_clip": (
        gx.adaptive_grad_clip, dict(clipping=0.1),
        dict(clipping=non_negative(), eps=non_negative(),
             axis=[("0", TypeError), (1.5, TypeError), (True, TypeError), ([0], TypeError),
                   ((0, "1"), TypeError), ((0, 0), ValueError), ((1, -2, 1), ValueError)])),
    "lamb": (gx.lamb, dict(learning_rate=0.1),
             dict(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, mask=MASK,
                  **{k: v for k, v in _ADAM.items() if k != "mu_dtype"})),
    "lars": (gx.lars, dict(learning_rate=0.1),
             dict(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, weight_decay_mask=MASK,
                  trust_coefficient=non_negative(), eps=non_negative(), trust_ratio_mask=MASK,
                  momentum=rate(allow_one=True), nesterov=BOOL)),
    # Fromage computes eta / sqrt(1 + eta**2): None is no learning rate there.
    "fromage": (gx.fromage, dict(learning_rate=0.1),
                dict(learning_rate=non_negative(), min_norm=non_negative())),
    **{name: (getattr(gx, name), dict(inner=SGD, should_transform_fn=lambda step: step >= 0),
              dict(inner=TX, should_transform_fn=CALLABLE + _none(False), forward_extra_args=BOOL))
       for name in ("conditionally_mask", "conditionally_transform")},
    "decoupled_weight_decay": (
        gx.decoupled_weight_decay, dict(weight_decay=0.1, learning_rate=0.1),
        dict(weight_decay=WEIGHT_DECAY, learning_rate=WEIGHT_DECAY, mask=MASK, exclude=PATTERNS)),
    "dynamic_loss_scale": (
        gx.dynamic_loss_scale, dict(inner=SGD),
        dict(inner=TX, dynamic_growth_steps=count(),
             # Below the default floor min_loss_scale=1.
             initial_scale=positive() + _SCALE_OUT_OF_RANGE + [(0.5, ValueError)],
             min_loss_scale=real() + [(0.0, ValueError), (-1.0, ValueError), (1e-40, ValueError),
                                      (2.0**16, ValueError), (2.0**127, ValueError)],
             max_loss_scale=real() + [(0.0, ValueError), (-1.0, ValueError), (1024.0, ValueError),
                                      (2.0**127, ValueError), (1e39, ValueError)])),
    "ema": (gx.ema, dict(decay=0.9),
            dict(decay=rate(), debias=BOOL, accumulator_dtype=DTYPE)),
    # keep is a predicate (key_path, leaf) -> bool; a mask tree or a pattern is not one.
    "flat_tree": (gx.flat_tree, dict(params={"w": ARRAY2}),
                  dict(keep=[(3, TypeError), ("x", TypeError), (0.1, TypeError), (True, TypeError),
                             (["embedding"], TypeError), ({"w": True}, TypeError)])),
    # backend is a platform name ("cpu", "gpu", "tpu") or None.
    "flat_compiler_options": (gx.flat_compiler_options, {},
                              dict(backend=[(0, TypeError), (["cpu"], TypeError), (1.5, TypeError)])),
    "freeze": (gx.freeze, {}, dict(mask=MASK)),
    # A malformed config is a ValueError whatever its type (tests/test_config.py).
    "from_config": (gx.from_config, {},
                    dict(config=[([1, 2], ValueError), ("adam", ValueError), (None, ValueError),
                                 ({"format": "optax"}, ValueError, "'optax'")])),
    "inject_hyperparams": (
        gx.inject_hyperparams, dict(inner_factory=gx.adam),
        dict(inner_factory=CALLABLE, hyperparam_dtype=DTYPE,
             static_args=[(7, TypeError), ([1], TypeError), (("beta",), ValueError),
                          ("beta", ValueError)])),
    "lion": (gx.lion, dict(learning_rate=0.1),
             dict(learning_rate=LEARNING_RATE, b1=rate(allow_one=True), b2=rate(allow_one=True),
                  mu_dtype=DTYPE, weight_decay=WEIGHT_DECAY, mask=MASK)),
    "lookahead": (gx.lookahead, dict(fast_optimizer=SGD, sync_period=2, slow_step_size=0.5),
                  dict(fast_optimizer=TX, sync_period=count(), slow_step_size=rate(allow_one=True),
                       reset_state=BOOL)),
    # Schedule-free, SAM, reduce-on-plateau (transforms/{schedule_free,sam,plateau}.py,
    # optimizers/schedule_free.py). Schedule-free's b1 is in (0, 1]: x is recovered dividing by it.
    **{name: (getattr(gx, name), base,
              dict(own, learning_rate=non_negative(), b1=_SF_B1, weight_lr_power=non_negative(),
                   state_dtype=DTYPE))
       for name, base, own in (
           ("schedule_free", dict(base_optimizer=SGD, learning_rate=0.1), dict(base_optimizer=TX)),
           ("schedule_free_sgd", {},
            dict(warmup_steps=count(optional=True), weight_decay=non_negative(True))),
           ("schedule_free_adamw", {},
            dict(warmup_steps=count(optional=True), b2=rate(), eps=non_negative(),
                 weight_decay=non_negative())))},
    "schedule_free_eval_params": (
        gx.schedule_free_eval_params, dict(state=_SF_STATE, params={"w": ARRAY2}),
        dict(state=[(3, TypeError), (None, TypeError), ("z", TypeError),
                    (SGD.init({"w": ARRAY2}), TypeError), ((_SF_STATE, _SF_STATE), TypeError)],
             params=[({"v": ARRAY2}, ValueError), (ARRAY2, ValueError), (None, ValueError),
                     ({"w": jnp.ones(3)}, ValueError), ([ARRAY2], ValueError)])),
    "sam": (gx.sam, dict(optimizer=SGD, adv_optimizer=SGD),
            dict(optimizer=TX, adv_optimizer=TX, sync_period=count(), reset_state=BOOL,
                 opaque_mode=BOOL, batch_axis_name=NAME)),
    # rtol = 0 with the default atol = 0: no improvement could ever count.
    "reduce_on_plateau": (
        gx.reduce_on_plateau, {},
        dict(factor=real() + [(0.0, ValueError), (1.0, ValueError), (-0.5, ValueError),
                              (1.5, ValueError), (0.99999999, ValueError), (1e-50, ValueError)],
             patience=count(), rtol=real() + [(-0.1, ValueError), (1.01, ValueError), (0.0, ValueError)],
             atol=non_negative(), cooldown=count(0), accumulation_size=count(),
             min_scale=real() + [(-0.1, ValueError), (1.01, ValueError)])),
    # A measure is a function or a transformation, by str name.
    "monitor": (gx.monitor, {},
                dict(measures=[(3, TypeError), (None, TypeError), ([gx.tree_global_norm], TypeError),
                               ({1: gx.tree_global_norm}, TypeError), ({"norm": 3}, TypeError),
                               ({"norm": "f"}, TypeError), ({"norm": None}, TypeError)])),
    # Own scaling rules (transforms/{adadelta,adan,rprop,optimistic,polyak}.py, optimizers/rules.py).
    # Rprop: eta_minus in (0, 1], eta_plus >= 1, max_step_size >= min_step_size (1e-6 by default).
    **{name: (getattr(gx, name), dict(learning_rate=0.1),
              dict(learning_rate=positive(),
                   eta_minus=real() + [(0.0, ValueError), (-0.5, ValueError), (1.5, ValueError),
                                       (1e-50, ValueError)],
                   eta_plus=real() + [(0.5, ValueError), (-1.0, ValueError)],
                   min_step_size=non_negative(), max_step_size=positive() + [(1e-7, ValueError)]))
       for name in ("scale_by_rprop", "rprop")},
    **{name: (getattr(gx, name), {},
              dict(f_min=real(), max_learning_rate=non_negative(), eps=non_negative(),
                   variant=[("sps-", ValueError), ("SPS", ValueError), (3, TypeError),
                            (None, TypeError), (b"sps", TypeError)],
                   **({"scaling": non_negative()} if name == "polyak_sgd" else {})))
       for name in ("scale_by_polyak", "polyak_sgd")},
    # L-BFGS and line searches (transforms/{lbfgs,zoom_linesearch,backtracking_linesearch}.py,
    # optimizers/lbfgs.py, objective.py). inf is a valid increase_factor (backtracking: start
    # at the largest step) and curv_rtol (zoom: no curvature condition), as optax documents.
    "scale_by_lbfgs": (gx.scale_by_lbfgs, {}, dict(memory_size=count(), scale_init_precond=BOOL)),
    "lbfgs": (gx.lbfgs, {},
              dict(learning_rate=LEARNING_RATE, memory_size=count(), scale_init_precond=BOOL,
                   linesearch=[case for case in TX if case[0] is not None])),
    "scale_by_backtracking_linesearch": (
        gx.scale_by_backtracking_linesearch, dict(max_backtracking_steps=10),
        dict(max_backtracking_steps=count(0), slope_rtol=rate(),
             decrease_factor=rate() + [(0.0, ValueError), (1e-40, ValueError)],
             increase_factor=[case for case in real() if case[0] is not INF]
             + [(0.5, ValueError), (-1.0, ValueError)],
             max_learning_rate=positive(), atol=non_negative(), rtol=non_negative(),
             store_grad=BOOL, verbose=BOOL)),
    "scale_by_zoom_linesearch": (
        gx.scale_by_zoom_linesearch, dict(max_linesearch_steps=10),
        dict(max_linesearch_steps=count(), max_learning_rate=positive(True), tol=non_negative(),
             increase_factor=real() + [(0.5, ValueError), (0.0, ValueError)], slope_rtol=rate(),
             curv_rtol=[case for case in real() if case[0] is not INF] + NEGATIVE,
             approx_dec_rtol=non_negative(True), stepsize_precision=non_negative(),
             initial_guess_strategy=[("two", ValueError), ("ONE", ValueError), (3, TypeError),
                                     (None, TypeError), (b"one", TypeError)],
             verbose=BOOL)),
    "value_and_grad_from_state": (gx.value_and_grad_from_state, {},
                                  dict(value_fn=CALLABLE + _none(False))),
    # Parameter-free methods (transforms/{prodigy,dog,mechanic,cocob,sophia}.py,
    # optimizers/parameter_free.py). Prodigy's learning rate multiplies its estimate: no None.
    **{name: (getattr(gx, name), {}, _PRODIGY) for name in ("scale_by_prodigy", "prodigy")},
    "scale_by_dog": (gx.scale_by_dog, dict(init_step=("heuristic", 1e-6)),
                     dict(init_step=_INIT_STEP, eps=non_negative())),
    "dog": (gx.dog, {}, dict(learning_rate=LEARNING_RATE, init_step=_INIT_STEP,
                            eps=non_negative(), weight_decay=non_negative(True), mask=MASK)),
    "scale_by_dowg": (gx.scale_by_dowg, {},
                      dict(init_estim_sq_dist=positive(True), eps=positive())),
    "dowg": (gx.dowg, {}, dict(learning_rate=LEARNING_RATE, init_estim_sq_dist=positive(True),
                              eps=positive(), weight_decay=non_negative(True), mask=MASK)),
    "scale_by_distance_over_gradients": (
        gx.scale_by_distance_over_gradients, {},
        dict(reps_rel=positive(), eps=non_negative(), param_dtype=DTYPE, global_scale=real())),
    "mechanize": (gx.mechanize, dict(base_optimizer=SGD),
                  dict(base_optimizer=TX, weight_decay=non_negative(), eps=positive(),
                       s_init=positive(), num_betas=count())),
    "scale_by_cocob": (gx.scale_by_cocob, {}, dict(alpha=non_negative(), eps=positive())),
    "cocob": (gx.cocob, {}, dict(learning_rate=LEARNING_RATE, alpha=non_negative(),
                                eps=positive(), weight_decay=WEIGHT_DECAY, mask=MASK)),
    "hutchinson_estimator_diag_hessian": (gx.hutchinson_estimator_diag_hessian, {},
                                          dict(random_seed=KEY)),
    "scale_by_sophia": (gx.scale_by_sophia, {}, _SOPHIA),
    "sophia": (gx.sophia, dict(learning_rate=0.1),
               dict(_SOPHIA, learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY,
                    weight_decay_mask=MASK)),
    "scale_by_adadelta": (gx.scale_by_adadelta, {}, dict(rho=rate(allow_one=True), eps=positive())),
    "adadelta": (gx.adadelta, {},
                 dict(learning_rate=LEARNING_RATE, rho=rate(allow_one=True), eps=positive(),
                      weight_decay=WEIGHT_DECAY, weight_decay_mask=MASK)),
    "scale_by_adan": (gx.scale_by_adan, {},
                      dict(b1=rate(), b2=rate(), b3=rate(), eps=non_negative(),
                           eps_root=non_negative())),
    "adan": (gx.adan, dict(learning_rate=0.1),
             dict(learning_rate=LEARNING_RATE, b1=rate(), b2=rate(), b3=rate(),
                  eps=non_negative(), eps_root=non_negative(), weight_decay=WEIGHT_DECAY,
                  mask=MASK)),
    "scale_by_optimistic_gradient": (gx.scale_by_optimistic_gradient, {},
                                     dict(alpha=real(), beta=real())),
    "optimistic_gradient_descent": (gx.optimistic_gradient_descent, dict(learning_rate=0.1),
                                    dict(learning_rate=LEARNING_RATE, alpha=real(), beta=real())),
    # The learning rate is the optimistic transform's alpha: a number, never a schedule.
    "optimistic_adam": (gx.optimistic_adam, dict(learning_rate=0.1),
                        dict(learning_rate=non_negative() + [(CONST, TypeError)],
                             optimism=real(True), nesterov=BOOL, **_ADAM)),
    "masked": (gx.masked, dict(inner=SGD, mask={"w": True}), dict(inner=TX, mask=MASK)),
    "multi_steps": (gx.multi_steps, dict(inner=SGD, every_k_schedule=2),
                    dict(inner=TX, every_k_schedule=count(), use_grad_mean=BOOL,
                         should_skip_update_fn=CALLABLE, accumulator_dtype=DTYPE)),
    "MultiSteps": (gx.MultiSteps, dict(opt=SGD, every_k_schedule=2),
                   dict(opt=TX, every_k_schedule=count(), use_grad_mean=BOOL,
                        should_skip_update_fn=CALLABLE, accumulator_dtype=DTYPE)),
    "incremental_update": (
        gx.incremental_update, dict(new_tensors={"w": ARRAY2}, old_tensors={"w": ARRAY2},
                                    step_size=0.5),
        dict(step_size=rate(allow_one=True))),
    "noisy_sgd": (gx.noisy_sgd, dict(learning_rate=0.1),
                  dict(learning_rate=LEARNING_RATE, eta=non_negative(), gamma=non_negative(),
                       key=KEY, seed=SEED)),
    "periodic_update": (
        gx.periodic_update, dict(new_tensors={"w": ARRAY2}, old_tensors={"w": ARRAY2}, steps=0,
                                 update_period=2),
        dict(steps=count(0) + STEP_ARRAYS,
             update_period=count() + STEP_ARRAYS + [(jnp.int32(0), ValueError)])),
    "named_chain": (gx.named_chain, {},
                    dict(transforms=[(("b", 3), TypeError), ((3, SGD), TypeError),
                                     (3, TypeError), (("b",), TypeError)])),
    "params_ema": (gx.params_ema, {},
                   dict(decay=rate(allow_one=True), overwrite_frequency=count(optional=True),
                        calls_per_step=count(), ema_dtype=DTYPE)),
    "partition": (gx.partition, dict(transforms={"a": SGD}, labels={"w": "a"}),
                  dict(transforms=[(3, TypeError), ({"a": 3}, TypeError), (None, TypeError),
                                   ([SGD], TypeError)],
                       labels=[(None, ValueError), ({}, ValueError)])),
    "partition_by_patterns": (
        gx.partition_by_patterns, dict(rules=[("bias", SGD)], default=SGD),
        dict(rules=[(3, TypeError), ([("(", SGD)], ValueError), ([("bias", 3)], TypeError),
                    ([3], TypeError), ([(3, SGD)], TypeError)],
             default=TX)),
    "rmsprop": (gx.rmsprop, dict(learning_rate=0.1),
                dict(learning_rate=LEARNING_RATE, centered=BOOL, nesterov=BOOL,
                     momentum=rate(True, allow_one=True), **_RMS)),
    "scale": (gx.scale, {}, dict(step_size=real())),
    "scale_by_adagrad": (gx.scale_by_adagrad, {},
                         dict(initial_accumulator_value=non_negative(), eps=non_negative(),
                              accumulator_dtype=DTYPE, eps_in_sqrt=BOOL)),
    "scale_by_adam": (gx.scale_by_adam, {},
                      dict(nu_dtype=DTYPE, nesterov=BOOL, eps_hat=BOOL,
                           accurate_bias_correction=BOOL, **_ADAM)),
    "scale_by_amsgrad": (gx.scale_by_amsgrad, {},
                         dict(nu_dtype=DTYPE, bias_correction_mu=BOOL, bias_correction_nu=BOOL,
                              eps_hat=BOOL, accurate_bias_correction=BOOL, **_ADAM)),
    "scale_by_learning_rate": (gx.scale_by_learning_rate, dict(learning_rate=0.1),
                               dict(learning_rate=LEARNING_RATE, flip_sign=BOOL)),
    "scale_by_lion": (gx.scale_by_lion, {},
                      dict(b1=rate(allow_one=True), b2=rate(allow_one=True), mu_dtype=DTYPE,
                           mode=[("soft", ValueError), ("HARD", ValueError), ("", ValueError),
                                 (3, TypeError), (None, TypeError), (["hard"], TypeError),
                                 (b"hard", TypeError)],
                           smooth_beta=positive())),
    "scale_by_rms": (gx.scale_by_rms, {}, _RMS),
    "scale_by_schedule": (gx.scale_by_schedule, {}, dict(step_size_fn=CALLABLE + _none(False))),
    "scale_by_stddev": (gx.scale_by_stddev, {}, _RMS),
    # Factored second moments and SM3 (transforms/factored.py, sm3.py, optimizers/factored.py).
    "scale_by_factored_rms": (gx.scale_by_factored_rms, {},
                              dict(factored=BOOL, decay_rate=non_negative(), step_offset=count(0),
                                   min_dim_size_to_factor=count(), epsilon=positive(),
                                   decay_rate_fn=CALLABLE + _none(False),
                                   factored_axes=[("first", ValueError), ("Last", ValueError),
                                                  (-1, TypeError), (None, TypeError)],
                                   floor=positive(True) + [("machine", TypeError),
                                                           ("eps", TypeError)])),
    "adafactor_decay_rate": (gx.adafactor_decay_rate, dict(step=3),
                             dict(step=count(0), exponent=non_negative())),
    "adafactor": (gx.adafactor, {},
                  dict(learning_rate=LEARNING_RATE, min_dim_size_to_factor=count(),
                       decay_rate=non_negative(), decay_offset=count(0),
                       multiply_by_parameter_scale=BOOL, clipping_threshold=positive(True),
                       momentum=rate(True, allow_one=True), dtype_momentum=DTYPE,
                       weight_decay_rate=non_negative(True), eps=positive(), factored=BOOL,
                       weight_decay_mask=MASK)),
    "scale_by_sm3": (gx.scale_by_sm3, {},
                     dict(b1=rate(), b2=rate(allow_one=True), eps=non_negative())),
    "sm3": (gx.sm3, dict(learning_rate=0.1), dict(learning_rate=LEARNING_RATE, momentum=rate())),
    # Muon, ADOPT, AdEMAMix, MADGRAD (batteries above _ADAM_FAMILY_SPECS).
    "scale_by_muon": (gx.scale_by_muon, {},
                      dict(_MUON, weight_dimension_numbers=_DIMENSION_NUMBERS,
                           momentum_form=_MOMENTUM_FORM, eps_as_floor=BOOL, ns_dtype=_NS_DTYPE)),
    "scale_by_shape": (gx.scale_by_shape, {},
                       dict(weight_dimension_numbers=_DIMENSION_NUMBERS,
                            consistent_rms=non_negative(True))),
    "orthogonalize_via_newton_schulz": (
        gx.orthogonalize_via_newton_schulz,
        dict(x=jnp.ones((2, 3)), ns_coeffs=(3.4445, -4.775, 2.0315)),
        dict(x=[("x", TypeError), (jnp.ones(3), ValueError, "(3,)"),
                (jnp.ones((2, 3), jnp.int32), TypeError, "int32")],
             ns_coeffs=_NS_COEFFS, ns_steps=count(0), preconditioning=_PRECONDITIONING,
             eps=positive(), eps_as_floor=BOOL, ns_dtype=_NS_DTYPE,
             dimension_numbers=[(3, TypeError), ((0, 1), TypeError),
                                ({"w": gx.MuonDimensionNumbers()}, TypeError),
                                (gx.MuonDimensionNumbers(0, 0), ValueError)])),
    "muon": (gx.muon, dict(learning_rate=0.1),
             dict(_MUON, learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY,
                  weight_decay_mask=MASK, adam_b1=rate(), adam_b2=rate(),
                  adam_eps_root=non_negative(), adam_weight_decay=WEIGHT_DECAY,
                  adam_learning_rate=non_negative(True),
                  muon_weight_dimension_numbers=_DIMENSION_NUMBERS,
                  consistent_rms=non_negative(True))),
    "adopt_clip_value": (gx.adopt_clip_value, dict(count=3), dict(count=count(0) + STEP_ARRAYS)),
    "scale_by_adopt": (gx.scale_by_adopt, {}, _ADOPT),
    "adopt": (gx.adopt, dict(learning_rate=0.1), dict(_ADOPT, learning_rate=LEARNING_RATE)),
    "scale_by_ademamix": (gx.scale_by_ademamix, {}, _ADEMAMIX),
    "ademamix": (gx.ademamix, dict(learning_rate=0.1),
                 dict(_ADEMAMIX, learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY,
                      mask=MASK)),
    "scale_by_simplified_ademamix": (gx.scale_by_simplified_ademamix, {}, _SIMPLIFIED_ADEMAMIX),
    "simplified_ademamix": (gx.simplified_ademamix, dict(learning_rate=0.1),
                            dict(_SIMPLIFIED_ADEMAMIX, learning_rate=LEARNING_RATE,
                                 weight_decay=WEIGHT_DECAY, mask=MASK)),
    # MADGRAD's learning rate is part of its rule: no None.
    **{name: (getattr(gx, name), dict(learning_rate=0.1),
              dict(learning_rate=non_negative(), momentum=rate(), eps=positive(),
                   **({"weight_decay": WEIGHT_DECAY} if name == "madgrad" else {})))
       for name in ("scale_by_madgrad", "madgrad")},
    "scale_loss": (gx.scale_loss, dict(loss=1.0, opt_state=()),
                   dict(loss=[("1.0", TypeError), (True, TypeError), (1 + 2j, TypeError),
                              (None, TypeError), (3, TypeError)])),
    "sgd": (gx.sgd, dict(learning_rate=0.1),
            dict(learning_rate=LEARNING_RATE, momentum=rate(True, allow_one=True),
                 nesterov=BOOL, accumulator_dtype=DTYPE)),
    "sign_sgd": (gx.sign_sgd, dict(learning_rate=0.1), dict(learning_rate=LEARNING_RATE)),
    "signum": (gx.signum, dict(learning_rate=0.1),
               dict(learning_rate=LEARNING_RATE, beta=rate(allow_one=True),
                    accumulator_dtype=DTYPE)),
    "snapshot": (gx.snapshot, dict(measure_name="norm", measure=gx.tree_global_norm),
                 dict(measure_name=NAME + _none(False), measure=CALLABLE + _none(False))),
    "skip_large_updates": (
        gx.skip_large_updates,
        dict(updates={"w": ARRAY2}, gradient_step=0, params=None, max_squared_norm=1.0),
        dict(max_squared_norm=positive())),
    "state_shardings": (gx.state_shardings, dict(tx=SGD, params={"w": ARRAY2}),
                        dict(tx=TX, zero_axis=[(3, TypeError), (b"data", TypeError),
                                               ("data", ValueError)])),
    "stateless": (gx.stateless, {}, dict(f=CALLABLE + _none(False))),
    "stateless_with_tree_map": (gx.stateless_with_tree_map, {}, dict(f=CALLABLE + _none(False))),
    "static_loss_scale": (gx.static_loss_scale, {},
                          dict(loss_scale=positive() + _SCALE_OUT_OF_RANGE)),
    # Functions are shown as written in a call, without their address.
    "to_config": (gx.to_config, {},
                  dict(tx=[c for c in TX if c[0] is not gx.adam]
                       + [(gx.adam, TypeError, "<function adam>")])),
    "to_optax": (gx.to_optax, {}, dict(tx=TX)),
    "trace": (gx.trace, dict(decay=0.9),
              dict(decay=rate(allow_one=True), nesterov=BOOL, accumulator_dtype=DTYPE,
                   dampening=rate(optional=True, allow_one=True))),
    "tree_global_norm": (
        gx.tree_global_norm, dict(tree={"a": ARRAY2}),
        dict(ord=[(3, ValueError), (0, ValueError), (-1, ValueError), (2.5, ValueError),
                  (NAN, ValueError), (-INF, ValueError), ("fro", ValueError), (True, TypeError),
                  ([2], TypeError), (ARRAY2, TypeError), (0.5 + 0.1j, TypeError)],
             squared=BOOL)),
    "tree_get": (gx.tree_get, dict(tree={"count": 0}, key="count"),
                 dict(key=[(3, TypeError), (None, TypeError), (b"count", TypeError)],
                      filtering=[(3, TypeError), ("count", TypeError)])),
    # --- Keras presets and schedules
    "keras.adagrad": (gx.keras.adagrad, {},
                      _keras_base(learning_rate=KERAS_LR, epsilon=positive(),
                                  initial_accumulator_value=non_negative())),
    "keras.adam": (gx.keras.adam, {},
                   _keras_base(learning_rate=KERAS_LR, epsilon=positive(), beta_1=rate(),
                               beta_2=rate(), amsgrad=BOOL)),
    "keras.adamw": (gx.keras.adamw, {},
                    _keras_base(learning_rate=KERAS_LR, epsilon=positive(), beta_1=rate(),
                                beta_2=rate(), amsgrad=BOOL,
                                weight_decay=WRONG_TYPE + NONFINITE + NEGATIVE + [
                                    (None, ValueError)])),  # None: Keras's ValueError
    "keras.adamax": (gx.keras.adamax, {},
                     _keras_base(learning_rate=KERAS_LR, epsilon=positive(), beta_1=rate(),
                                 beta_2=rate())),
    "keras.ftrl": (gx.keras.ftrl, {},
                   _keras_base(learning_rate=KERAS_LR, learning_rate_power=real() + [(0.5, ValueError)],
                               initial_accumulator_value=non_negative(),
                               l1_regularization_strength=non_negative(),
                               l2_regularization_strength=non_negative(),
                               l2_shrinkage_regularization_strength=non_negative(),
                               beta=non_negative())),
    "keras.nadam": (gx.keras.nadam, {},
                    _keras_base(learning_rate=KERAS_LR, epsilon=positive(), beta_1=rate(),
                                beta_2=rate())),
    "keras.lamb": (gx.keras.lamb, {},
                   _keras_base(learning_rate=KERAS_LR, epsilon=positive(), beta_1=rate(),
                               beta_2=rate())),
    "keras.muon": (gx.keras.muon, {},
                   _keras_base(learning_rate=KERAS_LR, epsilon=positive(), adam_beta_1=rate(),
                               adam_beta_2=rate(), adam_weight_decay=non_negative(True),
                               exclude_layers=PATTERNS, exclude_embeddings=BOOL, muon_a=real(),
                               muon_b=real(), muon_c=real(), adam_lr_ratio=non_negative(),
                               momentum=rate(), ns_steps=count(0), nesterov=BOOL,
                               rms_rate=non_negative(True))),
    "keras.muon_labels": (gx.keras.muon_labels, dict(params={"w": ARRAY2}),
                          dict(exclude_layers=PATTERNS, exclude_embeddings=BOOL)),
    "keras.adafactor": (gx.keras.adafactor, {},
                        _keras_base(learning_rate=KERAS_LR,
                                    beta_2_decay=real() + [(0.5, ValueError), (1e-3, ValueError)],
                                    epsilon_1=positive(), epsilon_2=non_negative(),
                                    clip_threshold=positive(), relative_step=BOOL)),
    "keras.schedule_free_adamw": (
        gx.keras.schedule_free_adamw, {},
        _keras_base(learning_rate=KERAS_LR, warmup_steps=count(0), epsilon=positive(),
                    beta_1=real() + [(0.0, ValueError), (-0.1, ValueError), (1.01, ValueError)],
                    beta_2=rate())),
    "weight_decay_first": (gx.weight_decay_first, dict(decay=SGD, rule=SGD),
                           dict(decay=TX, rule=TX)),
    "keras.adadelta": (gx.keras.adadelta, {},
                       _keras_base(learning_rate=KERAS_LR, epsilon=positive(),
                                   rho=rate(allow_one=True))),
    "keras.sgd": (gx.keras.sgd, {},
                  _keras_base(learning_rate=KERAS_LR, nesterov=BOOL,
                              momentum=WRONG_TYPE + NONFINITE + NEGATIVE + [(None, TypeError),
                                                                              (1.5, ValueError)])),
    "keras.rmsprop": (gx.keras.rmsprop, {},
                      _keras_base(learning_rate=KERAS_LR, rho=rate(), momentum=rate(),
                                  epsilon=positive(), centered=BOOL)),
    "keras.lion": (gx.keras.lion, {},
                   _keras_base(learning_rate=KERAS_LR, beta_2=rate(allow_one=True),
                               beta_1=WRONG_TYPE + NONFINITE + NEGATIVE + [
                                   (None, TypeError), (0.0, ValueError), (1.5, ValueError)])),
    "keras.from_keras_config": (gx.keras.from_keras_config, dict(config={"name": "adam"}),
                                dict(config=[(None, TypeError), ([("name", "adam")], TypeError),
                                             ("adam", TypeError)],
                                     class_name=[(3, TypeError), ("MultiOptimizer", ValueError),
                                                 (b"Adam", TypeError)])),
    "keras.to_keras_config": (gx.keras.to_keras_config, dict(tx=gx.keras.adam()),
                              dict(tx=[(SGD, ValueError), (None, TypeError), (3, TypeError)])),
    # --- PyTorch schedulers
    "torch.StepLR": (gx.torch.StepLR, dict(lr=0.1, step_size=10),
                     dict(lr=non_negative(), step_size=count(), gamma=non_negative())),
    "torch.MultiStepLR": (gx.torch.MultiStepLR, dict(lr=0.1, milestones=[10, 20]),
                          dict(lr=non_negative(), milestones=_MILESTONES, gamma=non_negative())),
    "torch.ConstantLR": (gx.torch.ConstantLR, dict(lr=0.1),
                         dict(lr=non_negative(), factor=_FACTOR, total_iters=count())),
    "torch.LinearLR": (gx.torch.LinearLR, dict(lr=0.1),
                       dict(lr=non_negative(), start_factor=_FACTOR,
                            end_factor=rate(allow_one=True), total_iters=count())),
    "torch.ExponentialLR": (gx.torch.ExponentialLR, dict(lr=0.1, gamma=0.9),
                            dict(lr=non_negative(), gamma=non_negative())),
    "torch.PolynomialLR": (gx.torch.PolynomialLR, dict(lr=0.1),
                           dict(lr=non_negative(), total_iters=count(), power=non_negative())),
    "torch.CosineAnnealingLR": (gx.torch.CosineAnnealingLR, dict(lr=0.1, T_max=10),
                                dict(lr=non_negative(), T_max=count(), eta_min=non_negative())),
    "torch.CosineAnnealingWarmRestarts": (
        gx.torch.CosineAnnealingWarmRestarts, dict(lr=0.1, T_0=10),
        dict(lr=non_negative(), T_0=count(), T_mult=count(), eta_min=non_negative())),
    "torch.OneCycleLR": (gx.torch.OneCycleLR, dict(max_lr=1.0, total_steps=100),
                         dict(_CYCLE, max_lr=non_negative(), cycle_momentum=BOOL,
                              div_factor=positive(), final_div_factor=positive())),
    "torch.OneCycleMomentum": (gx.torch.OneCycleMomentum, dict(total_steps=100), _CYCLE),
    "torch.SequentialLR": (
        gx.torch.SequentialLR, dict(schedulers=[CONST, CONST], milestones=[10]),
        dict(schedulers=[(3, TypeError), ([CONST, 0.5], TypeError), ([CONST], ValueError),
                         ([], ValueError), (None, TypeError)],
             milestones=[(3, TypeError), ([10.5], TypeError), ([-1], ValueError),
                         (["10"], TypeError), (None, TypeError), ([10, 20], ValueError)])),
    "torch.LambdaLR": (gx.torch.LambdaLR, dict(lr=0.1, lr_lambda=CONST),
                       dict(lr=non_negative(), lr_lambda=CALLABLE + [(None, TypeError)])),
    "torch.ReduceLROnPlateau": (
        gx.torch.ReduceLROnPlateau, dict(lr=0.1),
        dict(lr=positive(), mode=[("mean", ValueError), (1, TypeError), (None, TypeError)],
             factor=rate(), patience=count(0),
             threshold=non_negative() + [(1.0, ValueError), (1.5, ValueError)],
             threshold_mode=[("relative", ValueError), (1, TypeError), (None, TypeError)],
             cooldown=count(0), min_lr=non_negative(), eps=non_negative())),
    # --- PyTorch presets
    "torch.Adadelta": (gx.torch.Adadelta, {},
                       dict(lr=non_negative(), rho=rate(allow_one=True), eps=positive(),
                            weight_decay=non_negative(), maximize=BOOL)),
    "torch.Muon": (gx.torch.Muon, {},
                   dict(lr=non_negative(), weight_decay=non_negative(), momentum=rate(),
                        nesterov=BOOL, ns_coefficients=_TORCH_NS_COEFFICIENTS, eps=positive(),
                        ns_steps=count(0) + [(100, ValueError)],
                        adjust_lr_fn=[("orig", ValueError), ("Original", ValueError),
                                      (3, TypeError), (b"original", TypeError)])),
    "torch.SparseAdam": (gx.torch.SparseAdam, {},
                         dict(lr=positive(), betas=_TORCH_BETAS, eps=positive(), maximize=BOOL)),
    "torch.Adafactor": (gx.torch.Adafactor, {},
                        dict(lr=non_negative(), beta2_decay=real() + [(0.5, ValueError)],
                             eps=[(1e-3, TypeError), ((None,), TypeError), (None, TypeError),
                                  ((0.0, 1e-3), ValueError), ((1e-30, 1e-3), ValueError),
                                  ((None, -1.0), ValueError), (("1e-3", 1e-3), TypeError),
                                  ((None, NAN), ValueError)],
                             d=real() + [(0.5, ValueError), (0.0, ValueError)],
                             weight_decay=non_negative(), maximize=BOOL)),
    "torch.Adamax": (gx.torch.Adamax, {},
                     dict(lr=non_negative(), betas=_TORCH_BETAS, eps=non_negative(),
                          weight_decay=non_negative(), maximize=BOOL)),
    "torch.NAdam": (gx.torch.NAdam, {},
                    dict(lr=non_negative(), betas=_TORCH_BETAS, eps=non_negative(),
                         weight_decay=non_negative(), momentum_decay=non_negative(),
                         decoupled_weight_decay=BOOL, maximize=BOOL)),
    "torch.RAdam": (gx.torch.RAdam, {},
                    dict(lr=non_negative(), betas=_TORCH_BETAS, eps=non_negative(),
                         weight_decay=non_negative(), decoupled_weight_decay=BOOL, maximize=BOOL)),
    "torch.Rprop": (gx.torch.Rprop, {},
                    dict(lr=positive() + [(100.0, ValueError), (1e-7, ValueError),
                                          ((lambda count: 0.1), TypeError)],
                         etas=_TORCH_ETAS, step_sizes=_TORCH_STEP_SIZES, maximize=BOOL)),
    "torch.ASGD": (gx.torch.ASGD, {},
                   dict(lr=non_negative(), lambd=non_negative(), alpha=non_negative(),
                        t0=non_negative(), weight_decay=non_negative(), maximize=BOOL)),
    "torch.clip_grad_norm_": (gx.torch.clip_grad_norm_, dict(max_norm=1.0),
                              dict(max_norm=positive(), error_if_nonfinite=BOOL,
                                   norm_type=_NORM_TYPE + [("fro", ValueError)],
                                   foreach=[(1, TypeError), ("yes", TypeError)])),
    "torch.clip_grad_value_": (gx.torch.clip_grad_value_, dict(clip_value=1.0),
                               dict(clip_value=positive(), foreach=[(1, TypeError)])),
    "torch.SGD": (gx.torch.SGD, {},
                  dict(lr=non_negative(), momentum=rate(allow_one=True),
                       dampening=rate(allow_one=True), weight_decay=non_negative(),
                       nesterov=BOOL, maximize=BOOL)),
    "torch.Adagrad": (gx.torch.Adagrad, {},
                      dict(lr=non_negative(), lr_decay=non_negative(), weight_decay=non_negative(),
                           initial_accumulator_value=non_negative(), eps=non_negative(),
                           maximize=BOOL)),
    "torch.Adam": (gx.torch.Adam, {}, dict(lr=non_negative(), betas=_TORCH_BETAS,
                                           eps=non_negative(), weight_decay=non_negative(),
                                           amsgrad=BOOL, maximize=BOOL)),
    "torch.AdamW": (gx.torch.AdamW, {}, dict(lr=non_negative(), betas=_TORCH_BETAS,
                                             eps=non_negative(), weight_decay=non_negative(),
                                             amsgrad=BOOL, maximize=BOOL)),
    "torch.RMSprop": (gx.torch.RMSprop, {},
                      dict(lr=non_negative(), alpha=rate(), eps=non_negative(),
                           weight_decay=non_negative(), momentum=rate(allow_one=True),
                           centered=BOOL, maximize=BOOL)),
    "keras.loss_scale_optimizer": (
        gx.keras.loss_scale_optimizer, dict(inner=SGD),
        dict(inner=TX, initial_scale=positive() + _SCALE_OUT_OF_RANGE, dynamic_growth_steps=count(),
             name=NAME,
             kwargs=[({"dynamic": False}, ValueError), ({"foo": 1}, ValueError),
                     ({"clipnorm": 1.0}, ValueError)])),
    "keras.CosineDecay": (gx.keras.CosineDecay, dict(initial_learning_rate=0.1, decay_steps=10),
                          _keras_schedule(decay_steps=positive(), alpha=real(),
                                          warmup_target=real(True), warmup_steps=non_negative())),
    "keras.CosineDecayRestarts": (
        gx.keras.CosineDecayRestarts, dict(initial_learning_rate=0.1, first_decay_steps=10),
        # t_mul < 1: the periods sum to a finite step, after which Keras gives NaN.
        _keras_schedule(first_decay_steps=positive(),
                        t_mul=positive() + [(0.5, ValueError), (0.999, ValueError)],
                        m_mul=non_negative(), alpha=real())),
    **{
        f"keras.{name}": (
            getattr(gx.keras, name),
            dict(initial_learning_rate=0.1, decay_steps=10, decay_rate=0.5),
            _keras_schedule(decay_steps=positive(), decay_rate=non_negative(), staircase=BOOL))
        for name in ("ExponentialDecay", "InverseTimeDecay")
    },
    "keras.PiecewiseConstantDecay": (
        gx.keras.PiecewiseConstantDecay, dict(boundaries=[10], values=[1.0, 0.5]),
        dict(name=NAME,
             boundaries=[(3, TypeError), (["10"], TypeError), ([NAN], ValueError),
                         ([True], TypeError), ([20, 10], ValueError), ([10, 10], ValueError)],
             values=[(3, TypeError), (["x", 0.5], TypeError), ([1.0, INF], ValueError),
                     ([1.0, 0.5, 0.1], ValueError)])),
    "keras.PolynomialDecay": (gx.keras.PolynomialDecay,
                              dict(initial_learning_rate=0.1, decay_steps=10),
                              _keras_schedule(decay_steps=positive(), end_learning_rate=real(),
                                              power=real() + [(-1.0, ValueError)], cycle=BOOL)),
    # --- optax-style schedules
    "schedules.AtLastMicroStep": (S.AtLastMicroStep, dict(schedule=CONST, every_k=2),
                                  dict(schedule=CALLABLE + _none(False), every_k=count())),
    "schedules.cosine_decay_schedule": (
        S.cosine_decay_schedule, dict(init_value=1.0, decay_steps=10),
        dict(init_value=real(), decay_steps=count(), alpha=real(),
             exponent=real() + [(-1.0, ValueError)])),  # 0**-1 = inf at the last step
    "schedules.cosine_onecycle_schedule": (S.cosine_onecycle_schedule,
                                           dict(transition_steps=100, peak_value=1.0), _ONECYCLE),
    "schedules.exponential_decay": (
        S.exponential_decay, dict(init_value=1.0, transition_steps=10, decay_rate=0.5),
        dict(init_value=real(), transition_steps=count(), decay_rate=positive(),
             transition_begin=count(0), staircase=BOOL, end_value=real(True))),
    "schedules.join_schedules": (
        S.join_schedules, dict(schedules=[CONST, CONST], boundaries=[10]),
        dict(schedules=[(3, TypeError), ([CONST, 0.5], TypeError), ([CONST], ValueError)],
             boundaries=[(3, TypeError), ([10.5], TypeError), ([-1], ValueError),
                         (["10"], TypeError), ([10, 20], ValueError), ([0], ValueError)])),
    "schedules.linear_onecycle_schedule": (
        S.linear_onecycle_schedule, dict(transition_steps=100, peak_value=1.0),
        dict(pct_final=rate(allow_one=True) + [(0.2, ValueError), (1.0, ValueError)],
             **dict(_ONECYCLE, pct_start=_ONECYCLE["pct_start"] + [(0.9, ValueError)],
                    transition_steps=_ONECYCLE["transition_steps"] + [(1, ValueError)]))),
    "schedules.linear_schedule": (
        S.linear_schedule, dict(init_value=1.0, end_value=0.0, transition_steps=10),
        dict(init_value=real(), end_value=real(), transition_steps=count(),
             transition_begin=count(0))),
    "schedules.piecewise_constant_schedule": (
        S.piecewise_constant_schedule, dict(init_value=1.0),
        dict(init_value=real(), boundaries_and_scales=_PIECEWISE_BAD)),
    "schedules.polynomial_schedule": (
        S.polynomial_schedule, dict(init_value=1.0, end_value=0.0, power=2, transition_steps=10),
        dict(init_value=real(), end_value=real(), power=real() + [(-0.5, ValueError), (-2, ValueError)],
             transition_steps=count(), transition_begin=count(0))),
    "schedules.sgdr_schedule": (
        S.sgdr_schedule, dict(cosine_kwargs=[CYCLE]),
        dict(cosine_kwargs=[(3, TypeError), ([], ValueError), ([3], TypeError),
                            ([{"init_value": 0.0}], TypeError),
                            ([dict(CYCLE, decay_steps=0)], ValueError),
                            ([dict(CYCLE, peak_value="1")], TypeError)])),
    "schedules.warmup_constant_schedule": (
        S.warmup_constant_schedule, dict(init_value=0.0, peak_value=1.0, warmup_steps=4),
        dict(init_value=real(), peak_value=real(), warmup_steps=count())),
    "schedules.piecewise_interpolate_schedule": (
        S.piecewise_interpolate_schedule, dict(interpolate_type="linear", init_value=1.0),
        dict(interpolate_type=[(3, TypeError), (None, TypeError), (b"linear", TypeError),
                               ("quadratic", ValueError), ("Linear", ValueError)],
             init_value=real(), boundaries_and_scales=_PIECEWISE_BAD)),
    "schedules.warmup_exponential_decay_schedule": (
        S.warmup_exponential_decay_schedule,
        dict(init_value=0.0, peak_value=1.0, warmup_steps=2, transition_steps=10, decay_rate=0.5),
        dict(init_value=real(), peak_value=real(), warmup_steps=count(0), transition_steps=count(),
             decay_rate=positive(), transition_begin=count(0), staircase=BOOL,
             end_value=real(True))),
    "schedules.warmup_cosine_decay_schedule": (
        S.warmup_cosine_decay_schedule,
        dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10),
        dict(init_value=real(), peak_value=real(), end_value=real(),
             exponent=real() + [(-1.0, ValueError)], warmup_steps=count(0), decay_steps=count())),
}

# Arguments with no bad value: (public name, argument) -> why.
EXEMPT = {
    ("keras.muon_labels", "params"): "any pytree; each leaf's rank and key path are read",
    **{(name, arg): "any pytree is a valid params/updates/state tree"
       for name, args in (
           ("apply_updates", ("params", "updates")), ("current_loss_scale", ("opt_state",)),
           ("finalize_params", ("params", "opt_state")), ("flat_tree", ("params",)),
           ("scale_loss", ("opt_state",)),
           ("state_shardings", ("params",)), ("tree_global_norm", ("tree",)),
           ("tree_get", ("tree",)), ("tree_set", ("tree",)),
           ("skip_large_updates", ("updates", "params")),
           ("skip_not_finite", ("updates", "params")))
       for arg in args},
    ("skip_large_updates", "gradient_step"): "the step count multi_steps passes; unused",
    ("skip_not_finite", "gradient_step"): "the step count multi_steps passes; unused",
    ("tree_get", "default"): "any value may be returned when nothing matches",
    ("schedules.constant_schedule", "value"):
        "returned as given, any value (tests/test_config.py carries every kind through it)",
    ("tree_set", "values"): "any names and values; each is checked against the tree's entry",
    ("tree_set", "filtering"): "positional-only, as optax's; tests/core/test_inspection.py",
    ("GradientTransformation", "init"): "a plain NamedTuple (core/base.py); chain etc. check it",
    **{("MuonDimensionNumbers", arg): "a plain NamedTuple, as optax's; scale_by_muon, "
                                      "scale_by_shape, muon and orthogonalize_via_newton_schulz "
                                      "check it (_DIMENSION_NUMBERS)"
       for arg in ("reduction_axis", "output_axis")},
    ("GradientTransformation", "update"): "a plain NamedTuple (core/base.py); chain etc. check it",
    ("LookaheadParams", "fast"): "a NamedTuple of two params trees; lookahead's update checks them",
    ("LookaheadParams", "slow"): "a NamedTuple of two params trees; lookahead's update checks them",
    ("FlatTree", "buffers"): "the pytree constructor JAX unflattens with; flat_tree builds one",
    ("FlatTree", "layout"): "the pytree constructor JAX unflattens with; flat_tree builds one",
    ("ApplyEvery", "count"): "a plain NamedTuple (apply_every's state, optax's name)",
    ("ApplyEvery", "grad_acc"): "a plain NamedTuple (apply_every's state, optax's name)",
    **{(name, field): "a plain NamedTuple (part of a line search's state, optax's fields)"
       for name, fields in (
           ("ZoomLinesearchInfo", ("num_linesearch_steps", "decrease_error", "curvature_error")),
           ("BacktrackingLinesearchInfo", ("num_linesearch_steps", "decrease_error")))
       for field in fields},
    **{(name, arg): "any pytree of arrays; the two trees' structures are checked "
                    "(tests/test_tree_updates.py)"
       for name in ("incremental_update", "periodic_update")
       for arg in ("new_tensors", "old_tensors")},
}


def _call(owner, ctor, base, argument, value, exc, shown=()):
    """One case; ``*transforms`` values go after a valid member, ``**kwargs`` values merge in."""
    if owner in ("chain", "named_chain"):
        first = SGD if owner == "chain" else ("a", SGD)
        return Case(owner, ctor, argument, value, exc, dict(base), (first, value))
    if argument == "kwargs":
        return Case(owner, ctor, argument, value, exc, {**base, **value})
    return Case(owner, ctor, argument, value, exc, {**base, argument: value}, (), *shown)


CASES = [
    _call(owner, ctor, base, argument, value, exc, shown)
    for owner, (ctor, base, batteries) in SPECS.items()
    for argument, battery in batteries.items()
    for value, exc, *shown in battery
]
