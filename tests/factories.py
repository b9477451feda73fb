"""One zero-argument factory per public transformation, optimizer, wrapper and preset.

The property, sharding, non-finite and reproducibility tests run every entry.
Each entry works on any parameter tree (masks and labels are callables or name
patterns, never a fixed tree), so that hypothesis can draw the trees.
`constructors_covered` lists the public constructors an entry exercises;
``tests/test_properties.py`` checks that together they cover every public one.
"""

import jax
import jax.numpy as jnp

import gradxform as gx


def _decaying(count):
    return 0.1 / (1.0 + count.astype(jnp.float32))


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
    "keras_adam": lambda: gx.keras.adam(1e-3),
    "keras_adam_everything": _keras_adam_everything,
    "keras_adagrad_everything": lambda: gx.keras.loss_scale_optimizer(
        gx.keras.adagrad(0.1, weight_decay=0.01, clipvalue=0.5, use_ema=True,
                         gradient_accumulation_steps=3),
        initial_scale=2.0**4, dynamic_growth_steps=2,
    ),
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


def representative(names) -> list:
    """Fewest entries, taken in order, that together build every constructor ``names`` build.

    The costliest sweeps (an 8-device compile per entry) run these; the others
    run every entry.
    """
    chosen, covered = [], set()
    for name in sorted(names, key=lambda n: (-len(constructors_covered(FACTORIES[n]())), n)):
        new = constructors_covered(FACTORIES[name]()) - covered
        if new:
            chosen.append(name)
            covered |= new
    return sorted(chosen)
