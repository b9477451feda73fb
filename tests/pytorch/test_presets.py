"""``gx.torch`` presets against ``torch.optim`` run live on CPU: 60 steps on a nested tree.

Every argument of each preset is exercised by at least one configuration,
with large (x30) and all-zero gradient steps in the stream, and a learning-rate
schedule (``LambdaLR`` on torch's side) for each optimizer. Params are compared
after every step at rtol 1e-5, atol 1e-6.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradxform as gx
from tests.pytorch.harness import check_parity, gradient_stream, initial_params, run_gradxform


def _decay(k):
    return 0.95 ** k


def _inverse(k):
    return 1.0 / (1.0 + 0.1 * k)


CONFIGS = {
    "SGD": [
        (dict(lr=0.05), None),
        (dict(lr=0.05, momentum=0.9), None),
        (dict(lr=0.05, momentum=0.9, nesterov=True), None),
        (dict(lr=0.05, momentum=0.9, dampening=0.3), None),
        (dict(lr=0.05, momentum=0.5, weight_decay=1e-2, maximize=True), None),
        (dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3), _decay),
        (dict(), None),
    ],
    "Adagrad": [
        (dict(), None),
        (dict(lr=0.1, lr_decay=0.05), None),
        (dict(lr=0.1, initial_accumulator_value=0.1, eps=1e-6, weight_decay=1e-2), None),
        (dict(lr=0.1, lr_decay=0.02, maximize=True), _inverse),
    ],
    "Adam": [
        (dict(), None),
        (dict(lr=1e-2, amsgrad=True), None),
        (dict(lr=1e-2, weight_decay=1e-2), None),
        (dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-3, maximize=True), None),
        (dict(lr=1e-2, amsgrad=True, weight_decay=1e-3), _decay),
    ],
    "AdamW": [
        (dict(), None),
        (dict(lr=1e-2, amsgrad=True, weight_decay=0.1), None),
        (dict(lr=1e-2, betas=(0.8, 0.95), eps=1e-6, maximize=True), None),
        (dict(lr=1e-2, weight_decay=0.05), _inverse),
        (dict(lr=1e-2, weight_decay=0.0), None),
    ],
    "RMSprop": [
        (dict(), None),
        (dict(lr=1e-3, centered=True), None),
        (dict(lr=1e-3, momentum=0.9), None),
        (dict(lr=1e-3, momentum=0.5, centered=True, weight_decay=1e-2, alpha=0.9), None),
        (dict(lr=1e-3, eps=1e-3, maximize=True), _decay),
    ],
}
_PARAMS = [pytest.param(name, kwargs, factor, id=f"{name}-{i}")
           for name, configs in sorted(CONFIGS.items())
           for i, (kwargs, factor) in enumerate(configs)]


@pytest.mark.parametrize("name, kwargs, factor", _PARAMS)
def test_preset_matches_torch(name, kwargs, factor):
    check_parity(name, kwargs, factor)


def test_every_argument_of_every_preset_is_exercised():
    import inspect

    for name, configs in CONFIGS.items():
        used = {key for kwargs, _ in configs for key in kwargs} | {"lr"}
        assert set(inspect.signature(getattr(gx.torch, name)).parameters) <= used, name
        assert any(factor is not None for _, factor in configs), name


def test_sgd_dampening_spares_the_first_step_as_torch_does():
    """torch's buffer starts as the first gradient; a zero buffer with (1 - d) g would not."""
    ours, ref = check_parity("SGD", dict(lr=0.1, momentum=0.9, dampening=0.5))
    start = jax.tree.leaves(initial_params())[0]
    first_grad = jax.tree.leaves(gradient_stream()[0])[0]
    np.testing.assert_allclose(ref[0][0], start - 0.1 * first_grad, rtol=1e-6)
    state = gx.torch.SGD(momentum=0.9, dampening=0.5).init({"w": jnp.ones(2)})
    assert int(gx.tree_get(state, "count")) == 0


def test_adamw_decay_is_decoupled_and_adam_decay_is_coupled():
    """The same weight_decay: AdamW's shrinks the params by lr * wd, Adam's passes through v."""
    grads = [jax.tree.map(np.zeros_like, g) for g in gradient_stream(steps=3)]
    adam = run_gradxform(gx.torch.Adam(lr=0.1, weight_decay=0.5), grads)
    adamw = run_gradxform(gx.torch.AdamW(lr=0.1, weight_decay=0.5), grads)
    start = jax.tree.leaves(initial_params())[0]
    np.testing.assert_allclose(adamw[0][0], start * (1 - 0.1 * 0.5), rtol=1e-6)
    assert not np.allclose(adam[0][0], adamw[0][0], rtol=1e-3)
    check_parity("Adam", dict(lr=0.1, weight_decay=0.5))
    check_parity("AdamW", dict(lr=0.1, weight_decay=0.5))


@pytest.mark.parametrize("call, error, words", [
    (lambda: gx.torch.SGD(lr=-0.1), ValueError, ["torch.SGD", "lr", "-0.1"]),
    (lambda: gx.torch.SGD(nesterov=True), ValueError,
     ["torch.SGD", "Nesterov momentum requires a momentum and zero dampening"]),
    (lambda: gx.torch.SGD(momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     ["dampening=0.1"]),
    (lambda: gx.torch.Adam(betas=(0.9, 1.0)), ValueError, ["torch.Adam", "betas[1]", "(0.9, 1.0)"]),
    (lambda: gx.torch.Adam(betas=0.9), TypeError, ["torch.Adam", "betas", "0.9"]),
    (lambda: gx.torch.AdamW(weight_decay=-1.0), ValueError, ["torch.AdamW", "weight_decay"]),
    (lambda: gx.torch.Adagrad(lr_decay=-0.1), ValueError, ["torch.Adagrad", "lr_decay"]),
    (lambda: gx.torch.RMSprop(alpha=1.0), ValueError, ["torch.RMSprop", "alpha", "1.0"]),
    (lambda: gx.torch.RMSprop(maximize=1), TypeError, ["torch.RMSprop", "maximize"]),
    (lambda: gx.torch.SGD(momentum=0.9, dampening=1.5), ValueError, ["dampening", "1.5"]),
])
def test_bad_arguments_raise_naming_the_preset_and_the_argument(call, error, words):
    with pytest.raises(error) as caught:
        call()
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


def test_presets_are_ordinary_chains_with_config_and_injection():
    tx = gx.torch.RMSprop(lr=1e-3, momentum=0.9, centered=True, weight_decay=1e-2,
                          maximize=True)
    assert [m.name for m in tx.children] == [
        "scale", "add_decayed_weights", "scale_by_stddev", "trace", "scale_by_learning_rate"]
    rebuilt = gx.from_config(gx.to_config(tx))
    assert repr(rebuilt) == repr(tx)
    injected = gx.inject_hyperparams(gx.torch.Adam)(lr=1e-3)
    state = injected.init({"w": jnp.ones(3)})
    assert float(gx.tree_get(state, "lr")) == pytest.approx(1e-3)


def _every_preset():
    return {
        "SGD": dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3),
        "Adagrad": dict(lr=0.1, lr_decay=0.01, weight_decay=1e-3),
        "Adam": dict(lr=1e-2, weight_decay=1e-3),
        "AdamW": dict(lr=1e-2),
        "RMSprop": dict(lr=1e-3, momentum=0.9, weight_decay=1e-3),
        "Adadelta": dict(lr=0.5, weight_decay=1e-3),
        "Adamax": dict(lr=1e-2, weight_decay=1e-3),
        "NAdam": dict(lr=1e-2, weight_decay=1e-3, decoupled_weight_decay=True),
        "RAdam": dict(lr=1e-2, weight_decay=1e-3),
        "ASGD": dict(lr=1e-2, lambd=1e-3, weight_decay=1e-3),
    }


@pytest.mark.parametrize("name", sorted(_every_preset()))
def test_inject_hyperparams_gives_the_preset_numbers_and_defaults_at_zero_stay_injectable(name):
    """Every float argument is injected (zeros too: the chain cannot depend on their values)."""
    kwargs = _every_preset()[name]
    preset = getattr(gx.torch, name)
    injected = gx.inject_hyperparams(preset)(**kwargs)
    plain = preset(**kwargs)
    params = jax.tree.map(jnp.asarray, initial_params())
    s1, s2 = injected.init(params), plain.init(params)
    step1, step2 = jax.jit(injected.update), jax.jit(plain.update)
    for g in gradient_stream(steps=5):
        g = jax.tree.map(jnp.asarray, g)
        u1, s1 = step1(g, s1, params)
        u2, s2 = step2(g, s2, params)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-8)
    # A default of 0 (weight decay, momentum) is injected too and can be set later.
    if "weight_decay" in inspect.signature(preset).parameters:
        assert "weight_decay" in gx.inject_hyperparams(preset)().init(params).hyperparams


def test_param_groups_map_onto_partition_by_patterns():
    """torch's param_groups (their own lr and weight decay) as one preset per group."""
    params0 = initial_params()
    leaves = {"/".join(str(getattr(k, "key", k)) for k in path): x for path, x in
              jax.tree_util.tree_flatten_with_path(params0)[0]}
    tensors = {name: torch.nn.Parameter(torch.tensor(x)) for name, x in leaves.items()}
    biases = [t for name, t in tensors.items() if name.endswith(("bias", "b"))]
    others = [t for name, t in tensors.items() if not name.endswith(("bias", "b"))]
    opt = torch.optim.AdamW([{"params": others}, {"params": biases, "lr": 3e-2, "weight_decay": 0.0}],
                            lr=1e-2, weight_decay=0.1)
    tx = gx.partition_by_patterns([("bias$|/b$", gx.torch.AdamW(lr=3e-2, weight_decay=0.0))],
                                  default=gx.torch.AdamW(lr=1e-2, weight_decay=0.1))
    params = jax.tree.map(jnp.asarray, params0)
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: (lambda u, s2: (gx.apply_updates(p, u), s2))(
        *tx.update(g, s, p)))
    for g in gradient_stream():
        for (path, gi) in jax.tree_util.tree_flatten_with_path(g)[0]:
            tensors["/".join(str(getattr(k, "key", k)) for k in path)].grad = torch.tensor(gi)
        opt.step()
        params, state = step(params, state, jax.tree.map(jnp.asarray, g))
        for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
            name = "/".join(str(getattr(k, "key", k)) for k in path)
            np.testing.assert_allclose(x, tensors[name].detach().numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=name)
