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
