"""One zero-argument factory per public transformation, optimizer, wrapper and preset.

The property, sharding, non-finite and reproducibility tests run these entries:
the cheap checks every entry, the costly per-entry sweeps the entries `sweep`
picks (every constructor at least once; ``GRADXFORM_FULL_SWEEP=1`` picks all).
Each entry works on any parameter tree (masks and labels are callables or name
patterns, never a fixed tree), so that hypothesis can draw the trees.
`constructors_covered` lists the public constructors an entry exercises;
``tests/test_properties.py`` checks that together they cover every public one.
"""

import os

import jax
import jax.numpy as jnp

import gradxform as gx


def _decaying(count):
    return 0.1 / (1.0 + count.astype(jnp.float32))


def _two_d_or_other(params):
    """torch's Muon takes the 2-D leaves, AdamW the others (torch's param groups)."""
    return jax.tree.map(lambda p: "muon" if p.ndim == 2 else "other", params)


def _matrices_only(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def _prefix_mask(params):
    """A prefix of ``params``: one bool per top-level entry, standing for its whole subtree."""
    if isinstance(params, dict):
        return {key: len(str(key)) % 2 == 0 for key in params}
    if isinstance(params, (list, tuple)):
        return type(params)(index % 2 == 0 for index in range(len(params)))
    return True


def _by_rank(params):
    return jax.tree.map(lambda x: "adam" if x.ndim >= 2 else "sgd", params)


def _muon_dimension_numbers(params):
    """Muon's matrices: each leaf of rank >= 2, its last axis the output, the others reduced."""
    return jax.tree.map(lambda p: gx.MuonDimensionNumbers(tuple(range(len(p.shape) - 1)), -1)
                        if len(p.shape) >= 2 else None, params)


def _slow_decay(count):
    """A b3 schedule for AdEMAMix: rises from 0.5 towards 0.999."""
    return 0.999 - 0.499 / (1.0 + count.astype(jnp.float32))


def _alpha_warmup(count):
    """An alpha schedule for AdEMAMix: 0 at step 0, 5 from step 10 on."""
    return 5.0 * jnp.minimum(count.astype(jnp.float32) / 10.0, 1.0)


def _adopt_clip(count):
    """An ADOPT clipping bound: 1 + sqrt(t)."""
    return 1.0 + jnp.sqrt(count.astype(jnp.float32))


def _doubled(updates, params):
    del params
    return jax.tree.map(lambda g: 2 * g, updates)


def _keras_adam_everything():
    return gx.keras.adam(
        gx.keras.CosineDecay(1e-3, 10, warmup_target=1e-2, warmup_steps=2),
        amsgrad=True, weight_decay=0.01, clipnorm=1.0, use_ema=True, ema_overwrite_frequency=2,
        loss_scale_factor=8.0, gradient_accumulation_steps=2, exclude_from_weight_decay=["bias"],
    )


def _not_every_third(step):
    """Holds steps 0, 3, 6, ...; runs steps 1 and 2, where tests/test_nonfinite.py poisons one."""
    return step % 3 != 0


def _after_first_step(step, **extra_args):
    return step >= 1


def lookahead_on_fast_params(lookahead_tx):
    """``lookahead_tx`` called as the generic tests call a transformation (their params, their
    updates): the params are the fast ones, the slow ones ride in the state beside the
    lookahead state, as a training loop keeps them, and the updates are the fast params'."""

    def init(params):
        return (lookahead_tx.init(gx.LookaheadParams.init_synced(params)), params)

    def update(updates, state, params=None, **extra_args):
        inner_state, slow = state
        both, inner_state = lookahead_tx.update(
            updates, inner_state, gx.LookaheadParams(fast=params, slow=slow), **extra_args
        )
        return both.fast, (inner_state, gx.apply_updates(slow, both.slow))

    tx = gx.GradientTransformation(init, update)
    tx.inner, tx.call_repr = lookahead_tx, f"lookahead_on_fast_params({lookahead_tx!r})"
    tx.rebuild = (lookahead_on_fast_params, (lookahead_tx,))
    return tx


def with_loss_value(polyak_tx):
    """``polyak_tx``, whose update needs the loss as ``value=``, called as the generic tests
    call a transformation (without it): the value passed is a real loss of the params,
    ``1 + sum |p|**2 / 2`` (1 for no params)."""

    def loss(params):
        leaves = [jnp.asarray(p) for p in jax.tree.leaves(params)]
        squares = [jnp.sum(jnp.abs(p).astype(jnp.float32) ** 2) for p in leaves
                   if jnp.issubdtype(p.dtype, jnp.inexact)]
        return 1.0 + 0.5 * sum(squares, jnp.zeros([], jnp.float32))

    def update(updates, state, params=None, **extra_args):
        return polyak_tx.update(updates, state, params, value=loss(params), **extra_args)

    tx = gx.GradientTransformation(polyak_tx.init, update)
    tx.inner, tx.call_repr = polyak_tx, f"with_loss_value({polyak_tx!r})"
    tx.rebuild = (with_loss_value, (polyak_tx,))
    return tx


def _gradient_of_half_squares(params, index):
    """``grad_fn`` for `with_grad_fn`: the gradient of ``sum p**2 / 2`` at ``params`` (``p``)."""
    del index
    return jax.tree.map(
        lambda p: p if jnp.issubdtype(jnp.asarray(p).dtype, jnp.inexact) else None, params)


def with_grad_fn(sam_tx):
    """``sam_tx`` in opaque mode, whose update needs ``grad_fn=``, called as the generic tests
    call a transformation (without it): ``grad_fn`` is the gradient of ``sum p**2 / 2``."""

    def update(updates, state, params=None, **extra_args):
        return sam_tx.update(updates, state, params, grad_fn=_gradient_of_half_squares,
                             **extra_args)

    tx = gx.GradientTransformation(sam_tx.init, update)
    tx.inner, tx.call_repr = sam_tx, f"with_grad_fn({sam_tx!r})"
    tx.rebuild = (with_grad_fn, (sam_tx,))
    return tx


def half_squares(params):
    """The objective `with_objective` supplies: ``1 + sum |p|**2 / 2`` over the float leaves,
    summed leaf by leaf also on a `gx.flat_tree` (a line search's interpolation magnifies a
    last-bit difference in the value: tests/core/test_flat.py compares the two layouts)."""
    if isinstance(params, gx.FlatTree):
        params = params.unravel()
    squares = [jnp.sum(jnp.abs(p).astype(jnp.float32) ** 2) for p in jax.tree.leaves(params)
               if jnp.issubdtype(jnp.asarray(p).dtype, jnp.inexact)]
    return 1.0 + 0.5 * sum(squares, jnp.zeros([], jnp.float32))


def with_objective(linesearch_tx):
    """``linesearch_tx``, whose update needs the objective (``value=``, ``grad=``,
    ``value_fn=``), called as the generic tests call a transformation (without it): the
    objective is `half_squares`, its value and gradient taken at the params."""

    def update(updates, state, params=None, **extra_args):
        value, grad = jax.value_and_grad(half_squares)(params)
        return linesearch_tx.update(updates, state, params, value=value, grad=grad,
                                    value_fn=half_squares, **extra_args)

    tx = gx.GradientTransformation(linesearch_tx.init, update)
    tx.inner, tx.call_repr = linesearch_tx, f"with_objective({linesearch_tx!r})"
    tx.rebuild = (with_objective, (linesearch_tx,))
    return tx


def quartic_objective(params):
    """The ``obj_fn`` `with_obj_fn` supplies: ``sum q / 2 + q**2 / 12`` with ``q = |p|**2``
    over the float leaves (a complex entry as two reals); its Hessian diagonal varies."""
    total = jnp.zeros([], jnp.float32)
    for p in jax.tree.leaves(params):
        p = jnp.asarray(p)
        if jnp.issubdtype(p.dtype, jnp.inexact):
            q = jnp.real(p).astype(jnp.float32) ** 2 + jnp.imag(p).astype(jnp.float32) ** 2
            total = total + jnp.sum(0.5 * q + q * q / 12)
    return total


def with_obj_fn(sophia_tx):
    """``sophia_tx``, whose update needs ``obj_fn=`` (a function of the params), called as the
    generic tests call a transformation (without it): ``obj_fn`` is `quartic_objective`."""

    def update(updates, state, params=None, **extra_args):
        return sophia_tx.update(updates, state, params, obj_fn=quartic_objective, **extra_args)

    tx = gx.GradientTransformation(sophia_tx.init, update)
    tx.inner, tx.call_repr = sophia_tx, f"with_obj_fn({sophia_tx!r})"
    tx.rebuild = (with_obj_fn, (sophia_tx,))
    return tx


# What the entries that return a foreign (optax) transformation wrap.
WRAPPED_BY_FOREIGN = {"to_optax": lambda: gx.chain(gx.clip_by_norm(1.0), gx.adam(1e-3))}

FACTORIES = {
    "scale": lambda: gx.scale(-0.5),
    "scale_by_learning_rate": lambda: gx.scale_by_learning_rate(0.1),
    "scale_by_learning_rate_schedule": lambda: gx.scale_by_learning_rate(_decaying),
    "scale_by_schedule": lambda: gx.scale_by_schedule(_decaying),
    "scale_by_adagrad": lambda: gx.scale_by_adagrad(),
    "scale_by_adam": lambda: gx.scale_by_adam(),
    "scale_by_adam_nesterov": lambda: gx.scale_by_adam(nesterov=True),
    "scale_by_adam_bf16_moments": lambda: gx.scale_by_adam(mu_dtype=jnp.bfloat16),
    "scale_by_amsgrad": lambda: gx.scale_by_amsgrad(),
    "scale_by_rms": lambda: gx.scale_by_rms(),
    "scale_by_rms_debiased": lambda: gx.scale_by_rms(bias_correction=True, eps_in_sqrt=False),
    "scale_by_stddev": lambda: gx.scale_by_stddev(),
    # Factored second moments and SM3: the defaults factor no leaf of the test trees;
    # min_dim_size_to_factor=1 factors every leaf with two dimensions of size >= 1.
    "scale_by_factored_rms": lambda: gx.scale_by_factored_rms(),
    "scale_by_factored_rms_factoring": lambda: gx.scale_by_factored_rms(
        decay_rate=0.5, step_offset=1, min_dim_size_to_factor=1, epsilon=1e-20
    ),
    "scale_by_muon_torch_form": lambda: gx.masked(gx.chain(
        gx.scale_by_muon(eps=1e-7, momentum_form="ema", eps_as_floor=True, ns_dtype=jnp.bfloat16),
        gx.scale_by_learning_rate(0.02)), _matrices_only),
    "scale_by_muon_keras_form": lambda: gx.masked(gx.chain(
        gx.scale_by_muon(beta=0.9, nesterov=False, momentum_form="sum"),
        gx.scale_by_learning_rate(0.02)), _matrices_only),
    "scale_by_factored_rms_torch": lambda: gx.scale_by_factored_rms(
        min_dim_size_to_factor=1, epsilon=0.0, factored_axes="last", floor="machine_epsilon"),
    "scale_by_sm3": lambda: gx.scale_by_sm3(),
    "scale_by_sm3_decaying": lambda: gx.scale_by_sm3(b1=0.5, b2=0.99, eps=1e-6),
    "adafactor": lambda: gx.adafactor(),
    "adafactor_everything": lambda: gx.adafactor(
        _decaying, min_dim_size_to_factor=1, decay_offset=1, momentum=0.9,
        dtype_momentum=jnp.bfloat16, weight_decay_rate=1e-3, weight_decay_mask=_matrices_only,
    ),
    "sm3": lambda: gx.sm3(0.1),
    "trace": lambda: gx.trace(0.9),
    "trace_nesterov": lambda: gx.trace(0.9, nesterov=True),
    "ema": lambda: gx.ema(0.9),
    "ema_biased": lambda: gx.ema(0.9, debias=False),
    "clip": lambda: gx.clip(0.5),
    "clip_by_norm": lambda: gx.clip_by_norm(1.0),
    "clip_by_global_norm": lambda: gx.clip_by_global_norm(1.0),
    "clip_by_global_p_norm": lambda: gx.clip_by_global_p_norm(1.0, norm_type=3.0, eps=1e-6),
    "torch_clip_grad_norm_inf": lambda: gx.torch.clip_grad_norm_(1.0, "inf"),
    "torch_clip_grad_value": lambda: gx.torch.clip_grad_value_(0.5),
    "add_decayed_weights": lambda: gx.add_decayed_weights(1e-2),
    "add_decayed_weights_mask": lambda: gx.add_decayed_weights(_decaying, mask=_matrices_only),
    "add_decayed_weights_prefix_mask": lambda: gx.add_decayed_weights(1e-2, mask=_prefix_mask),
    "identity": lambda: gx.identity(),
    "stateless": lambda: gx.stateless(_doubled),
    "stateless_with_tree_map": lambda: gx.stateless_with_tree_map(lambda g, p: g * 0.5),
    "chain": lambda: gx.chain(
        gx.clip_by_global_norm(1.0), gx.scale_by_adam(), gx.scale_by_learning_rate(1e-2)
    ),
    "named_chain": lambda: gx.named_chain(
        ("clip", gx.clip(1.0)), ("momentum", gx.trace(0.9)), ("lr", gx.scale(-0.1))
    ),
    "sgd": lambda: gx.sgd(0.1),
    "sgd_momentum": lambda: gx.sgd(0.1, momentum=0.9, nesterov=True),
    "adagrad": lambda: gx.adagrad(0.1),
    "lazy_adam": lambda: gx.lazy_adam(1e-3),
    "lazy_adam_schedule": lambda: gx.lazy_adam(_decaying, eps_hat=True),
    "scale_by_lazy_adam": lambda: gx.scale_by_lazy_adam(),
    "scale_by_lazy_adam_options": lambda: gx.scale_by_lazy_adam(
        b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8, mu_dtype=jnp.bfloat16, eps_hat=True
    ),
    "ftrl": lambda: gx.ftrl(0.1),
    "ftrl_everything": lambda: gx.ftrl(
        _decaying, learning_rate_power=-0.7, initial_accumulator_value=0.2,
        l1_regularization_strength=1e-3, l2_regularization_strength=1e-2,
        l2_shrinkage_regularization_strength=1e-2, beta=0.5),
    "adam": lambda: gx.adam(1e-3),
    "adam_schedule": lambda: gx.adam(_decaying),
    "adam_amsgrad": lambda: gx.adam(1e-3, amsgrad=True),
    "adamw": lambda: gx.adamw(1e-3, weight_decay=1e-2, mask=_prefix_mask),
    "rmsprop": lambda: gx.rmsprop(1e-3),
    "rmsprop_centered_momentum": lambda: gx.rmsprop(1e-3, centered=True, momentum=0.9),
    "scale_by_belief": lambda: gx.scale_by_belief(),
    "scale_by_belief_nesterov": lambda: gx.scale_by_belief(eps=1e-8, eps_root=0.0, nesterov=True),
    "scale_by_yogi": lambda: gx.scale_by_yogi(),
    "scale_by_yogi_options": lambda: gx.scale_by_yogi(
        b1=0.5, b2=0.99, eps=1e-4, eps_root=1e-8, initial_accumulator_value=1e-3
    ),
    "scale_by_radam": lambda: gx.scale_by_radam(),
    "scale_by_radam_nesterov": lambda: gx.scale_by_radam(b2=0.9, threshold=4.0, nesterov=True),
    "scale_by_adamax": lambda: gx.scale_by_adamax(),
    "scale_by_novograd": lambda: gx.scale_by_novograd(),
    "scale_by_novograd_decay_bf16_mu": lambda: gx.scale_by_novograd(
        b1=0.5, b2=0.9, eps_root=1e-8, weight_decay=1e-2, mu_dtype=jnp.bfloat16
    ),
    "adabelief": lambda: gx.adabelief(1e-3),
    "adamax": lambda: gx.adamax(_decaying),
    "adamaxw": lambda: gx.adamaxw(2e-3, weight_decay=1e-2, mask=_matrices_only),
    "amsgrad": lambda: gx.amsgrad(1e-3, bias_correction_mu=False),
    "nadam": lambda: gx.nadam(1e-3),
    "nadamw": lambda: gx.nadamw(1e-3, weight_decay=1e-2, mask=_prefix_mask),
    "radam": lambda: gx.radam(1e-3),
    "yogi": lambda: gx.yogi(1e-2),
    "novograd": lambda: gx.novograd(1e-2, weight_decay=1e-3),
    "inject_radam": lambda: gx.inject_hyperparams(gx.radam)(1e-3, b2=0.99, nesterov=True),
    "inject_novograd": lambda: gx.inject_hyperparams(gx.novograd)(1e-2, weight_decay=1e-3),
    "scale_by_sign": lambda: gx.scale_by_sign(),
    "scale_by_lion": lambda: gx.scale_by_lion(),
    "scale_by_lion_smooth_bf16_mu": lambda: gx.scale_by_lion(
        b1=0.5, b2=0.9, mu_dtype=jnp.bfloat16, mode="smooth", smooth_beta=2.0
    ),
    "scale_by_lion_refined": lambda: gx.scale_by_lion(b1=1.0, mode="refined"),
    "lion": lambda: gx.lion(1e-3),
    "lion_schedule_mask": lambda: gx.lion(_decaying, weight_decay=_decaying, mask=_matrices_only),
    "sign_sgd": lambda: gx.sign_sgd(_decaying),
    "signum": lambda: gx.signum(1e-3),
    "signum_f32_accumulator": lambda: gx.signum(1e-3, beta=0.5, accumulator_dtype=jnp.float32),
    "inject_lion": lambda: gx.inject_hyperparams(gx.lion)(1e-3, b1=0.8, weight_decay=1e-2),
    "scale_by_trust_ratio": lambda: gx.scale_by_trust_ratio(),
    "scale_by_trust_ratio_options": lambda: gx.scale_by_trust_ratio(
        min_norm=0.5, trust_coefficient=0.02, eps=1e-3
    ),
    "scale_by_param_block_norm": lambda: gx.scale_by_param_block_norm(),
    "scale_by_param_block_rms": lambda: gx.scale_by_param_block_rms(min_scale=0.5),
    "clip_by_block_rms": lambda: gx.clip_by_block_rms(0.5),
    "adaptive_grad_clip": lambda: gx.adaptive_grad_clip(0.05),
    "adaptive_grad_clip_eps": lambda: gx.adaptive_grad_clip(0.1, eps=0.5),
    "lamb": lambda: gx.lamb(1e-3, weight_decay=1e-2, mask=_matrices_only),
    "lars": lambda: gx.lars(0.1),
    "lars_masks": lambda: gx.lars(
        _decaying, weight_decay=1e-2, weight_decay_mask=_matrices_only,
        trust_ratio_mask=["kernel", "bias"], momentum=0.8, nesterov=True,
    ),
    "fromage": lambda: gx.fromage(0.01),
    "fromage_schedule": lambda: gx.fromage(_decaying, min_norm=1e-3),
    "scale_by_adam_eps_hat": lambda: gx.scale_by_adam(eps_hat=True),
    "scale_by_amsgrad_eps_hat": lambda: gx.scale_by_amsgrad(eps_hat=True),
    "add_decayed_weights_exclude": lambda: gx.add_decayed_weights(1e-2, exclude=["bias", "^pair"]),
    "decoupled_weight_decay": lambda: gx.decoupled_weight_decay(
        1e-2, _decaying, mask=_matrices_only, exclude="(^|/)kernel$"
    ),
    "params_ema": lambda: gx.params_ema(0.9),
    "params_ema_overwrite": lambda: gx.params_ema(0.9, overwrite_frequency=2, calls_per_step=2),
    "accumulate_gradients": lambda: gx.accumulate_gradients(gx.adam(1e-3), every_k=2),
    "multi_steps": lambda: gx.multi_steps(gx.adam(1e-3), every_k_schedule=2),
    "multi_steps_skip": lambda: gx.multi_steps(
        gx.sgd(0.1), lambda step: 2 + step % 2, should_skip_update_fn=gx.skip_not_finite
    ),
    "multi_steps_skip_large": lambda: gx.multi_steps(
        gx.sgd(0.1), 2, should_skip_update_fn=lambda u, s, p: gx.skip_large_updates(u, s, p, 1e6)
    ),
    "static_loss_scale": lambda: gx.static_loss_scale(128.0),
    "dynamic_loss_scale": lambda: gx.dynamic_loss_scale(gx.adam(1e-3), 2.0**4, 2),
    "masked_patterns": lambda: gx.masked(gx.adam(1e-3), mask=["kernel", "^pair"]),
    "masked_nested": lambda: gx.masked(gx.masked(gx.trace(0.9), _prefix_mask), _matrices_only),
    "freeze": lambda: gx.chain(gx.adam(1e-3), gx.freeze(["bias"])),
    "set_to_zero": lambda: gx.set_to_zero(),
    "partition": lambda: gx.partition(
        {"adam": gx.adam(1e-3), "sgd": gx.sgd(0.1, momentum=0.9)}, _by_rank
    ),
    "partition_by_patterns": lambda: gx.partition_by_patterns(
        [("bias|scalar", gx.sgd(0.1)), ("blocks", gx.adagrad(0.1))], default=gx.adam(1e-3)
    ),
    "apply_if_finite": lambda: gx.apply_if_finite(gx.adam(1e-3), max_consecutive_errors=2),
    "inject_adam_scheduled": lambda: gx.inject_hyperparams(gx.adam)(
        learning_rate=gx.schedules.warmup_cosine_decay_schedule(0.0, 1e-2, 3, 20), b2=0.99
    ),
    "inject_rmsprop": lambda: gx.inject_hyperparams(gx.rmsprop)(
        1e-3, decay=0.95, centered=True, momentum=0.5
    ),
    "inject_sgd": lambda: gx.inject_hyperparams(gx.sgd)(0.1, momentum=0.9, nesterov=True),
    "inject_adagrad": lambda: gx.inject_hyperparams(gx.adagrad)(0.1, eps=1e-6),
    "inject_adamw": lambda: gx.inject_hyperparams(gx.adamw)(1e-3, weight_decay=1e-2),
    "inject_keras_adam": lambda: gx.inject_hyperparams(gx.keras.adam)(
        1e-3, weight_decay=0.01, clipnorm=1.0, use_ema=True, gradient_accumulation_steps=2
    ),
    "record_global_norm": lambda: gx.chain(
        gx.record_global_norm(), gx.clip_by_global_norm(1.0), gx.sgd(0.1)
    ),
    "snapshot": lambda: gx.chain(
        gx.sgd(0.1, momentum=0.9), gx.snapshot("norm", gx.tree_global_norm),
        gx.clip_by_global_norm(1.0),
    ),
    "monitor": lambda: gx.chain(
        gx.monitor({"norm": gx.tree_global_norm, "grad_ema": gx.ema(0.9)}), gx.adam(1e-3)
    ),
    "lookahead": lambda: lookahead_on_fast_params(
        gx.lookahead(gx.adam(1e-3), sync_period=3, slow_step_size=0.5)
    ),
    "lookahead_reset": lambda: lookahead_on_fast_params(
        # No step count in the inner state: a reset count is not a saturating one (test_counters).
        gx.lookahead(gx.chain(gx.trace(0.9, nesterov=True), gx.scale(-0.1)), 2, 0.8, reset_state=True)
    ),
    "conditionally_transform": lambda: gx.conditionally_transform(gx.adam(1e-3), _not_every_third),
    "conditionally_mask": lambda: gx.conditionally_mask(gx.sgd(0.1, momentum=0.9), _not_every_third),
    "conditionally_mask_extra_args": lambda: gx.conditionally_mask(
        gx.adam(1e-3), _after_first_step, forward_extra_args=True
    ),
    "add_noise": lambda: gx.add_noise(0.01, 0.55, key=0),
    "add_noise_seed": lambda: gx.add_noise(0.1, 1.0, seed=3),
    "noisy_sgd": lambda: gx.noisy_sgd(_decaying, key=1),
    "inject_noisy_sgd": lambda: gx.inject_hyperparams(gx.noisy_sgd)(0.1, eta=0.05, gamma=0.6, key=2),
    "centralize": lambda: gx.chain(gx.centralize(), gx.sgd(0.1, momentum=0.9)),
    # After the moments: a NaN it zeroes stays visible in them (tests/test_nonfinite.py).
    "zero_nans": lambda: gx.chain(gx.adam(1e-3), gx.zero_nans()),
    "keep_params_nonnegative": lambda: gx.chain(
        gx.sgd(0.5, momentum=0.9), gx.keep_params_nonnegative()),
    "apply_every": lambda: gx.apply_every(3),
    "apply_every_1": lambda: gx.chain(gx.apply_every(), gx.sgd(0.1)),
    "scale_by_adadelta": lambda: gx.scale_by_adadelta(),
    "adadelta": lambda: gx.adadelta(
        1.0, rho=0.95, eps=1e-5, weight_decay=1e-2, weight_decay_mask=_matrices_only
    ),
    "scale_by_adan": lambda: gx.scale_by_adan(),
    "adan": lambda: gx.adan(_decaying, b3=0.9, weight_decay=1e-2, mask=_prefix_mask),
    "scale_by_rprop": lambda: gx.scale_by_rprop(0.1),
    "rprop": lambda: gx.rprop(
        0.01, eta_minus=0.3, eta_plus=1.5, min_step_size=1e-3, max_step_size=1.0
    ),
    "scale_by_optimistic_gradient": lambda: gx.scale_by_optimistic_gradient(0.5, 2.0),
    "optimistic_gradient_descent": lambda: gx.optimistic_gradient_descent(_decaying),
    "optimistic_adam": lambda: gx.optimistic_adam(1e-2, optimism=0.5),
    "scale_by_polyak": lambda: with_loss_value(gx.scale_by_polyak()),
    "polyak_sgd": lambda: with_loss_value(gx.polyak_sgd(
        max_learning_rate=0.5, scaling=_decaying, f_min=0.5, eps=1e-3, variant="sps+"
    )),
    # Muon and optax.contrib's adaptive methods (transforms/{orthogonalize,shape_scaling,
    # adopt,ademamix,madgrad}.py, optimizers/{muon,contrib_adaptive}.py). Alone, Muon's
    # transforms are masked to the leaves they treat as matrices, and followed by a learning
    # rate as in use: the iteration magnifies a last-bit difference (a sharded program's) to
    # about 3e-7 of its order-1 output.
    "scale_by_muon": lambda: gx.masked(
        gx.chain(gx.scale_by_muon(), gx.scale_by_learning_rate(0.02)), _matrices_only),
    "scale_by_muon_options": lambda: gx.masked(gx.chain(
        gx.scale_by_muon("dion", beta=0.9, eps=1e-6, mu_dtype=jnp.bfloat16, nesterov=False,
                         adaptive=True, preconditioning="aol",
                         weight_dimension_numbers=_muon_dimension_numbers),
        gx.scale_by_shape(_muon_dimension_numbers, consistent_rms=0.2),
        gx.scale_by_learning_rate(_decaying),
    ), _matrices_only),
    "muon": lambda: gx.muon(1e-3),
    "muon_everything": lambda: gx.muon(
        _decaying, ns_steps=3, weight_decay=1e-2, weight_decay_mask=["kernel"],
        preconditioning="schatten", adam_b1=0.8, adam_b2=0.99, adam_eps_root=1e-8,
        adam_weight_decay=_decaying, adam_learning_rate=1e-3,
        muon_weight_dimension_numbers=_muon_dimension_numbers, consistent_rms=0.2,
    ),
    "scale_by_adopt_no_clipping": lambda: gx.scale_by_adopt(b2=0.5, nesterov=True,
                                                            use_clipping=False),
    "adopt": lambda: gx.adopt(1e-3),
    "adopt_options": lambda: gx.adopt(_decaying, b1=0.8, b2=0.99, eps=1e-4,
                                      mu_dtype=jnp.bfloat16, clip_value_fn=_adopt_clip),
    "scale_by_ademamix": lambda: gx.scale_by_ademamix(),
    "ademamix": lambda: gx.ademamix(1e-3, b3=_slow_decay, alpha=_alpha_warmup,
                                    mu_dtype=jnp.bfloat16, weight_decay=1e-2, mask=_matrices_only),
    "scale_by_simplified_ademamix": lambda: gx.scale_by_simplified_ademamix(),
    "simplified_ademamix": lambda: gx.simplified_ademamix(
        _decaying, b1=0.9, alpha=_alpha_warmup, eps_root=1e-8, weight_decay=1e-2,
        mask=_prefix_mask),
    "scale_by_madgrad": lambda: gx.scale_by_madgrad(0.01),
    "madgrad": lambda: gx.madgrad(_decaying, momentum=0.5, weight_decay=1e-2, eps=1e-4),
    # Schedule-free, SAM, reduce-on-plateau (transforms/{schedule_free,sam,plateau}.py).
    "schedule_free": lambda: gx.schedule_free(gx.adam(1e-2, b1=0.0), learning_rate=1e-2),
    "schedule_free_options": lambda: gx.schedule_free(
        gx.sgd(_decaying), _decaying, b1=0.5, weight_lr_power=1.0, state_dtype=jnp.float32
    ),
    "schedule_free_adamw": lambda: gx.schedule_free_adamw(1e-2, warmup_steps=3, weight_decay=1e-3),
    "schedule_free_sgd": lambda: gx.schedule_free_sgd(0.1, b1=0.8, weight_decay=1e-3),
    "inject_schedule_free_adamw": lambda: gx.inject_hyperparams(gx.schedule_free_adamw)(
        1e-2, b1=0.8, b2=0.99, weight_decay=1e-3
    ),
    # No step count in the reset adversarial state: a reset count is not a saturating one.
    "sam": lambda: gx.sam(gx.adam(1e-3), gx.chain(gx.normalize(), gx.scale(-0.05))),
    "sam_options": lambda: gx.sam(
        gx.sgd(0.1, momentum=0.9), gx.chain(gx.normalize(), gx.adam(1e-3)), sync_period=3,
        reset_state=False,
    ),
    "sam_opaque": lambda: with_grad_fn(gx.sam(
        gx.adam(1e-3), gx.chain(gx.normalize(), gx.scale(-0.05)), sync_period=3, opaque_mode=True
    )),
    "reduce_on_plateau": lambda: with_loss_value(gx.reduce_on_plateau()),
    # The loss of fixed params never improves: the scale drops on every other check.
    "reduce_on_plateau_options": lambda: with_loss_value(gx.chain(gx.adam(1e-3), gx.reduce_on_plateau(
        factor=0.5, patience=1, rtol=0.0, atol=1e-3, cooldown=1, accumulation_size=2,
        min_scale=0.2,
    ))),
    # Parameter-free step sizes and Sophia (transforms/{prodigy,dog,mechanic,cocob,sophia}.py,
    # optimizers/parameter_free.py).
    "scale_by_prodigy": lambda: gx.scale_by_prodigy(),
    "prodigy": lambda: gx.prodigy(0.5, betas=(0.8, 0.99), beta3=0.9, weight_decay=1e-2,
                                  safeguard_warmup=True),
    "inject_prodigy": lambda: gx.inject_hyperparams(gx.prodigy)(learning_rate=_decaying),
    "scale_by_dog": lambda: gx.scale_by_dog(("heuristic", 1e-6)),
    "dog": lambda: gx.dog(1.0),
    "dog_distance": lambda: gx.dog(_decaying, init_step=("distance", 1e-3), weight_decay=1e-3,
                                   mask=_matrices_only),
    "scale_by_dowg": lambda: gx.scale_by_dowg(),
    "dowg": lambda: gx.dowg(1.0, init_estim_sq_dist=1e-4, weight_decay=1e-3, mask=_matrices_only),
    "scale_by_distance_over_gradients": lambda: gx.scale_by_distance_over_gradients(),
    "scale_by_distance_over_gradients_options": lambda: gx.scale_by_distance_over_gradients(
        reps_rel=1e-3, eps=1e-6, global_scale=0.5),
    "mechanize_adam": lambda: gx.mechanize(gx.adam(1e-3)),
    "mechanize_sgd": lambda: gx.mechanize(gx.sgd(0.1, momentum=0.9), weight_decay=0.0, num_betas=3),
    "scale_by_cocob": lambda: gx.scale_by_cocob(),
    "cocob": lambda: gx.cocob(1.0, alpha=50.0, weight_decay=1e-3, mask=_matrices_only),
    "scale_by_sophia": lambda: with_obj_fn(gx.scale_by_sophia(update_interval=2)),
    "sophia": lambda: with_obj_fn(gx.sophia(
        1e-3, update_interval=1, weight_decay_mask=_matrices_only, mu_dtype=jnp.bfloat16,
        hessian_diagonal_fn=gx.hutchinson_estimator_diag_hessian(1))),
    # L-BFGS and line searches (transforms/{lbfgs,zoom_linesearch,backtracking_linesearch}.py,
    # optimizers/lbfgs.py): the generic tests' updates are random directions, often uphill.
    "scale_by_lbfgs": lambda: gx.scale_by_lbfgs(memory_size=3, scale_init_precond=False),
    "scale_by_backtracking_linesearch": lambda: with_objective(gx.scale_by_backtracking_linesearch(
        8, slope_rtol=1e-3, decrease_factor=0.5, increase_factor=2.0, max_learning_rate=0.5,
        atol=1e-6, rtol=1e-4, store_grad=True,
    )),
    "scale_by_zoom_linesearch": lambda: with_objective(gx.scale_by_zoom_linesearch(
        8, max_learning_rate=2.0, tol=1e-6, increase_factor=1.5, slope_rtol=1e-3, curv_rtol=0.5,
        approx_dec_rtol=None, stepsize_precision=1e-3, initial_guess_strategy="one",
    )),
    # The default line search; compiling L-BFGS with a zoom search takes seconds, so one entry.
    "lbfgs": lambda: with_objective(gx.lbfgs()),
    "keras_adam": lambda: gx.keras.adam(1e-3),
    "keras_adam_everything": _keras_adam_everything,
    "keras_adagrad_everything": lambda: gx.keras.loss_scale_optimizer(
        gx.keras.adagrad(0.1, weight_decay=0.01, clipvalue=0.5, use_ema=True,
                         gradient_accumulation_steps=3),
        initial_scale=2.0**4, dynamic_growth_steps=2,
    ),
    "keras_sgd_everything": lambda: gx.keras.sgd(
        gx.keras.ExponentialDecay(0.1, 4, 0.5), momentum=0.9, nesterov=True, weight_decay=0.01,
        clipnorm=1.0, use_ema=True, loss_scale_factor=4.0, gradient_accumulation_steps=2),
    "keras_rmsprop_everything": lambda: gx.keras.rmsprop(
        0.01, rho=0.8, momentum=0.5, epsilon=1e-6, centered=True, global_clipnorm=1.0,
        weight_decay=0.01, exclude_from_weight_decay=["bias"]),
    "keras_lion": lambda: gx.keras.lion(1e-3, beta_1=0.95, beta_2=0.98, clipvalue=0.5),
    "keras_adamw": lambda: gx.keras.adamw(1e-3, amsgrad=True, use_ema=True,
                                          ema_overwrite_frequency=3),
    "keras_adamax": lambda: gx.keras.adamax(2e-3, weight_decay=0.01,
                                            gradient_accumulation_steps=3),
    "keras_adadelta": lambda: gx.keras.adadelta(1.0, rho=0.9, epsilon=1e-6, clipnorm=1.0),
    "keras_ftrl_everything": lambda: gx.keras.ftrl(
        0.05, learning_rate_power=-0.3, initial_accumulator_value=0.2,
        l1_regularization_strength=1e-3, l2_regularization_strength=1e-3,
        l2_shrinkage_regularization_strength=1e-3, beta=0.1, weight_decay=0.01),
    "keras_lamb": lambda: gx.keras.lamb(1e-3, weight_decay=0.01, global_clipnorm=1.0),
    "keras_nadam": lambda: gx.keras.nadam(2e-3, beta_1=0.8, use_ema=True, clipvalue=0.5),
    "keras_muon": lambda: gx.keras.muon(1e-3),
    "keras_muon_everything": lambda: gx.keras.muon(
        gx.keras.ExponentialDecay(0.02, 4, 0.5), adam_weight_decay=0.01, weight_decay=0.01,
        exclude_layers=["blocks"], adam_lr_ratio=0.5, momentum=0.9, ns_steps=3, nesterov=False,
        rms_rate=None, clipnorm=1.0, use_ema=True, gradient_accumulation_steps=2,
        exclude_from_weight_decay=["scalar"]),
    "torch_muon": lambda: gx.partition(
        {"muon": gx.torch.Muon(lr=0.02, weight_decay=0.01, adjust_lr_fn="match_rms_adamw"),
         "other": gx.torch.AdamW(lr=1e-3)}, _two_d_or_other),
    "torch_sparse_adam": lambda: gx.torch.SparseAdam(lr=1e-2, betas=(0.8, 0.99), eps=1e-6,
                                                     maximize=True),
    "keras_adafactor": lambda: gx.keras.adafactor(0.05, clip_threshold=0.5, weight_decay=0.01,
                                                  use_ema=True),
    "keras_schedule_free_adamw": lambda: gx.keras.schedule_free_adamw(
        0.01, warmup_steps=3, weight_decay=0.01, clipnorm=1.0),
    "weight_decay_first": lambda: gx.weight_decay_first(gx.decoupled_weight_decay(0.1, 0.01),
                                                        gx.chain(gx.scale_by_adam(),
                                                                 gx.scale_by_trust_ratio())),
    "torch_sgd_everything": lambda: gx.torch.SGD(
        lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-3, maximize=True),
    "torch_sgd_nesterov": lambda: gx.torch.SGD(lr=0.1, momentum=0.9, nesterov=True),
    "torch_adagrad_everything": lambda: gx.torch.Adagrad(
        lr=0.1, lr_decay=0.01, weight_decay=1e-3, initial_accumulator_value=0.1, eps=1e-8),
    "torch_adam_everything": lambda: gx.torch.Adam(
        lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-3, amsgrad=True, maximize=True),
    "torch_adamw": lambda: gx.torch.AdamW(lr=1e-3),
    "scale_by_nadam": lambda: gx.scale_by_nadam(),
    "scale_by_nadam_keras": lambda: gx.scale_by_nadam(b1=0.8, momentum_decay=1.0, eps=1e-7),
    "params_average": lambda: gx.chain(gx.sgd(0.1), gx.params_average(t0=2)),
    "torch_adadelta_everything": lambda: gx.torch.Adadelta(
        lr=0.5, rho=0.8, eps=1e-5, weight_decay=1e-3, maximize=True),
    "torch_adafactor_everything": lambda: gx.torch.Adafactor(
        lr=0.05, beta2_decay=-0.5, eps=(1e-3, 1e-2), d=2.0, weight_decay=1e-2, maximize=True),
    "torch_adamax_everything": lambda: gx.torch.Adamax(
        lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-3, maximize=True),
    "torch_nadam_everything": lambda: gx.torch.NAdam(
        lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-3, momentum_decay=0.01,
        maximize=True),
    "torch_nadamw": lambda: gx.torch.NAdam(lr=1e-3, weight_decay=1e-2,
                                           decoupled_weight_decay=True),
    "torch_radam_everything": lambda: gx.torch.RAdam(
        lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-3, decoupled_weight_decay=True,
        maximize=True),
    "torch_rprop_everything": lambda: gx.torch.Rprop(
        lr=1e-2, etas=(0.4, 1.3), step_sizes=(1e-5, 1.0), maximize=True),
    "torch_asgd_everything": lambda: gx.torch.ASGD(
        lr=_decaying, lambd=1e-3, alpha=0.5, t0=2, weight_decay=1e-3, maximize=True),
    "torch_sgd_sequential_lr": lambda: gx.torch.SGD(lr=gx.torch.SequentialLR(
        [gx.torch.LinearLR(0.1, total_iters=5), gx.torch.CosineAnnealingLR(0.1, T_max=20)], [5]),
        momentum=0.9),
    "torch_reduce_lr_on_plateau": lambda: with_loss_value(gx.chain(
        gx.torch.SGD(lr=0.1), gx.torch.ReduceLROnPlateau(0.1, patience=2))),
    "torch_rmsprop_everything": lambda: gx.torch.RMSprop(
        lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=1e-3, momentum=0.9, centered=True),
    "from_config": lambda: gx.from_config(gx.to_config(_keras_adam_everything())),
    "to_optax": lambda: gx.to_optax(WRAPPED_BY_FOREIGN["to_optax"]()),
}
NAMES = sorted(FACTORIES)


# Public constructors whose result does not carry their name (the Keras presets
# return the chain they build; to_optax and from_config return other objects),
# with the entries that exercise them.
UNNAMED_CONSTRUCTORS = {
    "keras.adam": ["keras_adam", "keras_adam_everything", "inject_keras_adam"],
    "keras.adagrad": ["keras_adagrad_everything"],
    "keras.loss_scale_optimizer": ["keras_adagrad_everything"],
    "keras.sgd": ["keras_sgd_everything"],
    "keras.rmsprop": ["keras_rmsprop_everything"],
    "keras.lion": ["keras_lion"],
    "keras.adamw": ["keras_adamw"],
    "keras.adamax": ["keras_adamax"],
    "keras.adadelta": ["keras_adadelta"],
    "keras.ftrl": ["keras_ftrl_everything"],
    "keras.lamb": ["keras_lamb"],
    "keras.nadam": ["keras_nadam"],
    "keras.adafactor": ["keras_adafactor"],
    "keras.muon": ["keras_muon", "keras_muon_everything"],
    "keras.schedule_free_adamw": ["keras_schedule_free_adamw"],
    "torch.SGD": ["torch_sgd_everything", "torch_sgd_nesterov"],
    "torch.Adagrad": ["torch_adagrad_everything"],
    "torch.Adam": ["torch_adam_everything"],
    "torch.AdamW": ["torch_adamw"],
    "torch.RMSprop": ["torch_rmsprop_everything"],
    "torch.clip_grad_norm_": ["torch_clip_grad_norm_inf"],
    "torch.Adadelta": ["torch_adadelta_everything"],
    "torch.Adamax": ["torch_adamax_everything"],
    "torch.Adafactor": ["torch_adafactor_everything"],
    "torch.Muon": ["torch_muon"],
    "torch.SparseAdam": ["torch_sparse_adam"],
    "torch.NAdam": ["torch_nadam_everything", "torch_nadamw"],
    "torch.RAdam": ["torch_radam_everything"],
    "torch.Rprop": ["torch_rprop_everything"],
    "torch.ASGD": ["torch_asgd_everything"],
    "torch.clip_grad_value_": ["torch_clip_grad_value"],
    "to_optax": ["to_optax"],
    "from_config": ["from_config"],
}


def constructors_covered(value) -> set:
    """The names of the described constructors that built ``value`` and everything inside it."""
    if isinstance(value, gx.GradientTransformation):
        found = {value.name} if value.name is not None else set()
        found |= {value.called_as["name"]} if "name" in value.called_as else set()
        parts = [*value.children, value.inner, *value.hyperparams.values()]
        return found.union(*(constructors_covered(part) for part in parts))
    if isinstance(value, (list, tuple)):
        return set().union(*(constructors_covered(part) for part in value))
    if isinstance(value, dict):
        return set().union(*(constructors_covered(part) for part in value.values()))
    return set()


def _swept(name) -> set:
    """The constructors an entry builds whose own code runs in its updates.

    A preset (``keras.adam``, ``torch.SGD``) returns a chain of constructors
    that are swept themselves; its own code runs when it is built, which every
    cheap check does, so it needs no entry of its own in the costly sweeps.
    """
    value = FACTORIES[name]()
    return {c for c in constructors_covered(value) if not c.startswith(("keras.", "torch."))
            or c in _PRESET_TRANSFORMS}


# gx.torch names that are transformations of their own (not chains of swept ones).
_PRESET_TRANSFORMS = {"torch.ReduceLROnPlateau"}


def representative(names) -> list:
    """Fewest entries, taken in order, that together build every constructor ``names`` build.

    The costliest sweeps (an 8-device compile per entry) run these; the others
    run every entry.
    """
    chosen, covered = [], set()
    for name in sorted(names, key=lambda n: (-len(_swept(n)), n)):
        new = _swept(name) - covered
        if new:
            chosen.append(name)
            covered |= new
    return sorted(chosen)


FULL_SWEEP = os.environ.get("GRADXFORM_FULL_SWEEP") == "1"


def sweep(names) -> list:
    """The entries of ``names`` a costly per-entry sweep runs.

    By default `representative` ones, so that every constructor is swept and
    the suite stays short; with ``GRADXFORM_FULL_SWEEP=1`` in the environment,
    every entry.
    """
    return sorted(names) if FULL_SWEEP else representative(names)
