"""adabelief, adamax, adamaxw, amsgrad, nadam, nadamw, radam, yogi, novograd.

* Each alias but ``amsgrad`` matches optax's alias of the same name over 50
  jitted steps on a nested pytree (scalars, ``None`` and zero-size leaves),
  with several argument sets (schedules, masks, non-default rates), in float32
  and bfloat16 (compared with optax run in float32, as `compare_with_optax`
  does); the state of its first member is compared field by field with
  optax's. RAdam with ``b2=0.999`` is held to 1e-2 there: optax's float32
  ``rho_t`` loses digits to cancellation (tests/transforms/test_adam_variants.py
  holds ours to float64).
* ``amsgrad`` follows PyTorch's rule, the running maximum of the raw second
  moment: checked against that rule in float64 NumPy and against
  ``torch.optim.Adam(amsgrad=True)`` itself (float64 CPU); optax's ``amsgrad``
  (maximum of the debiased moment) is shown to differ, and to agree with
  ``bias_correction_nu=False``.
* ``nadam`` and ``nadamw`` are ``adam``/``adamw`` with ``nesterov=True``, bit for bit.
* ``inject_hyperparams(alias)`` gives bit for bit the plain alias's updates,
  params and state over 25 jitted steps, for every alias in float32 and for
  radam, yogi, adabelief and nadamw in bfloat16 too; a value changed in its
  state acts as the alias built with that value.
* Every alias converges on a quadratic; errors name the alias.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradxform as gx
from tests.helpers import (
    DEFAULT_COMPILE,
    LOW_PRECISION,
    assert_trees_bitwise_equal,
    assert_trees_close,
    cast_tree,
    gradient_stream,
    random_params,
    run_optax,
    run_updates,
    trajectory,
)
from tests.transforms.test_adam import amsgrad_reference

STEPS = 50
DTYPES = [jnp.float32, jnp.bfloat16]


def _decaying(count):
    return 1e-2 / (1.0 + count.astype(jnp.float32))


def _matrices(params):
    return jax.tree.map(lambda p: p.ndim >= 2, params)


CASES = {
    "adabelief": [dict(learning_rate=1e-3),
                  dict(learning_rate=_decaying, b1=0.8, eps=1e-8, eps_root=0.0, nesterov=True)],
    "adamax": [dict(learning_rate=2e-3), dict(learning_rate=_decaying, b1=0.5, b2=0.9, eps=1e-3)],
    "adamaxw": [dict(learning_rate=2e-3),
                dict(learning_rate=1e-2, weight_decay=0.1, mask=_matrices),
                dict(learning_rate=1e-2, weight_decay=_decaying)],
    "nadam": [dict(learning_rate=1e-3), dict(learning_rate=_decaying, b1=0.8, b2=0.99, eps_root=1e-8)],
    "nadamw": [dict(learning_rate=1e-3), dict(learning_rate=1e-2, weight_decay=0.1, mask=_matrices)],
    "radam": [dict(learning_rate=1e-3), dict(learning_rate=1e-2, b2=0.9, threshold=4.0),
              dict(learning_rate=_decaying, b2=0.95, nesterov=True)],
    "yogi": [dict(learning_rate=1e-2), dict(learning_rate=_decaying, b1=0.5, b2=0.99, eps=1e-4)],
    "novograd": [dict(learning_rate=1e-2),
                 dict(learning_rate=_decaying, b1=0.5, b2=0.9, eps=1e-4, eps_root=1e-6,
                      weight_decay=1e-2)],
}
PARAMS = [pytest.param(name, kwargs, id=f"{name}-{index}")
          for name, arguments in CASES.items() for index, kwargs in enumerate(arguments)]


# (updates, params, state) after every jitted step, the params moved by the updates.
_trajectory = functools.partial(trajectory, move=True, compiler_options=None)


def _assert_first_states_close(ours, theirs, rtol, context):
    """The first member's state (the moments), field by field, to ``rtol`` of each field's scale."""
    mine, ref = ours[0], theirs[0]
    assert mine._fields == ref._fields, context
    assert int(mine.count) == int(ref.count), context
    for name in mine._fields[1:]:
        leaves, ref_leaves = jax.tree.leaves(getattr(mine, name)), jax.tree.leaves(getattr(ref, name))
        assert len(leaves) == len(ref_leaves), (context, name)
        scale = max(float(np.max(np.abs(np.asarray(e, np.float64)), initial=0)) for e in ref_leaves)
        for a, e in zip(leaves, ref_leaves):
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, np.float64),
                                       rtol=rtol, atol=rtol * scale + 1e-30,
                                       err_msg=f"{context} {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name, kwargs", PARAMS)
def test_matches_optax(name, kwargs, dtype):
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours = _trajectory(getattr(gx, name)(**kwargs), params, grads_seq)
    theirs = _trajectory(getattr(optax, name)(**kwargs), cast_tree(params, jnp.float32),
                         [cast_tree(g, jnp.float32) for g in grads_seq], standard=True)
    low = dtype in LOW_PRECISION
    rtol, atol = (2e-2, 2e-4) if low else (2e-5, 1e-8)
    if name == "radam" and kwargs.get("b2", 0.999) == 0.999 and not low:
        rtol = 1e-2  # optax's float32 rho_t (see the module docstring)
    for step, ((u, p, s), (u_ref, p_ref, s_ref)) in enumerate(zip(ours, theirs)):
        context = f"{name} {kwargs} {dtype.__name__} step {step}"
        assert {x.dtype for x in jax.tree.leaves(u)} == {jnp.dtype(dtype)}, context
        assert_trees_close(u, u_ref, rtol, atol, context)
        _assert_first_states_close(s, s_ref, 3e-2 if low else 1e-5, context)
    if not low:  # bfloat16 params round every step's small update: they drift, as they should
        assert_trees_close(p, p_ref, 1e-5, 1e-6, "params after the last step")


# --------------------------------------------------------------------------- amsgrad


AMSGRAD_CASES = [
    dict(learning_rate=1e-3),
    dict(learning_rate=3e-3, b1=0.5, b2=0.9, eps=1e-4, eps_root=1e-6),
    dict(learning_rate=1e-3, bias_correction_mu=False),
]


@pytest.mark.parametrize("kwargs", AMSGRAD_CASES)
def test_amsgrad_follows_the_float64_pytorch_rule(kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=1)
    ours, state = run_updates(gx.amsgrad(**kwargs), params, grads_seq)
    rule = {k: v for k, v in kwargs.items() if k != "learning_rate"}
    expected = amsgrad_reference(grads_seq, **rule)
    lr = kwargs["learning_rate"]
    for step, (mine, ref) in enumerate(zip(ours, expected)):
        assert_trees_close(mine, jax.tree.map(lambda x: -lr * x, ref), 2e-5, 1e-9,
                           context=f"step {step}")
    assert isinstance(state[0], gx.ScaleByAmsgradState)


def _torch_amsgrad_deltas(params, grads_seq, lr, b1, b2, eps):
    """``torch.optim.Adam(amsgrad=True)`` in float64 on CPU: each step's parameter change."""
    import torch

    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    tensors = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in leaves]
    optimizer = torch.optim.Adam(tensors, lr=lr, betas=(b1, b2), eps=eps, amsgrad=True)
    treedef = jax.tree.structure(params)
    deltas = []
    for grads in grads_seq:
        before = [t.detach().clone() for t in tensors]
        for tensor, g in zip(tensors, jax.tree.leaves(grads)):
            tensor.grad = torch.tensor(np.asarray(g, np.float64))
        optimizer.step()
        deltas.append(treedef.unflatten([(t.detach() - b).numpy() for t, b in zip(tensors, before)]))
    return deltas


@pytest.mark.parametrize("b1, b2, eps", [(0.9, 0.999, 1e-8), (0.5, 0.9, 1e-4)])
def test_amsgrad_matches_torch(b1, b2, eps):
    params = random_params(0)
    grads_seq = gradient_stream(params, STEPS, seed=2)
    lr = 1e-3
    ours, _ = run_updates(gx.amsgrad(lr, b1=b1, b2=b2, eps=eps), params, grads_seq)
    theirs = _torch_amsgrad_deltas(params, grads_seq, lr, b1, b2, eps)
    for step, (mine, ref) in enumerate(zip(ours, theirs)):
        assert_trees_close(mine, ref, 2e-5, 1e-9, context=f"step {step}")


def test_amsgrad_differs_from_optax_but_agrees_without_nu_correction():
    """With shrinking gradients the raw v keeps growing after step 1 while optax's debiased
    maximum stays at step 1's g**2; the two agree when nu is not debiased."""
    params = random_params(0)
    grads_seq = [jax.tree.map(lambda g, k=k: g * (3.0 * 0.9**k), grads)
                 for k, grads in enumerate(gradient_stream(params, STEPS, seed=1, zero_every=0))]
    ours, _ = run_updates(gx.amsgrad(1e-3), params, grads_seq)
    theirs, _ = run_optax(optax.amsgrad(1e-3), params, grads_seq)
    assert_trees_close(ours[0], theirs[0], 2e-5, 1e-9)  # one moment: the same
    last = [np.concatenate([np.ravel(x) for x in jax.tree.leaves(u)]) for u in (ours[-1], theirs[-1])]
    assert np.median(np.abs(last[0]) / np.abs(last[1])) > 2.0
    ours, _ = run_updates(gx.amsgrad(1e-3, bias_correction_nu=False), params, grads_seq)
    theirs, _ = run_optax(optax.amsgrad(1e-3, bias_correction_nu=False), params, grads_seq)
    for mine, ref in zip(ours, theirs):
        assert_trees_close(mine, ref, 2e-5, 1e-9)


# ------------------------------------------------------------------- composition


@pytest.mark.parametrize("alias, base, kwargs", [
    (gx.nadam, gx.adam, dict(learning_rate=1e-3, b1=0.8)),
    (gx.nadamw, gx.adamw, dict(learning_rate=1e-3, weight_decay=0.1, mask=_matrices)),
])
def test_nadam_and_nadamw_are_adam_and_adamw_with_nesterov(alias, base, kwargs):
    params = random_params(0)
    grads_seq = gradient_stream(params, 20, seed=3)
    ours = _trajectory(alias(**kwargs), params, grads_seq)
    expected = _trajectory(base(**kwargs, nesterov=True), params, grads_seq)
    for (u, p, s), (u_e, p_e, s_e) in zip(ours, expected):
        assert_trees_bitwise_equal((u, p, s), (u_e, p_e, s_e))
    tx = alias(1e-3)
    assert tx.inner.children[0].name == "scale_by_adam"
    assert tx.inner.children[0].hyperparams["nesterov"] is True


def test_each_alias_is_a_chain_of_public_transforms():
    expected = {
        "adabelief": ["scale_by_belief", "scale_by_learning_rate"],
        "adamax": ["scale_by_adamax", "scale_by_learning_rate"],
        "adamaxw": ["scale_by_adamax", "add_decayed_weights", "scale_by_learning_rate"],
        "amsgrad": ["scale_by_amsgrad", "scale_by_learning_rate"],
        "nadam": ["scale_by_adam", "scale_by_learning_rate"],
        "nadamw": ["scale_by_adam", "add_decayed_weights", "scale_by_learning_rate"],
        "radam": ["scale_by_radam", "scale_by_learning_rate"],
        "yogi": ["scale_by_yogi", "scale_by_learning_rate"],
        "novograd": ["scale_by_novograd", "scale_by_learning_rate"],
    }
    for name, members in expected.items():
        tx = getattr(gx, name)(0.1)
        assert tx.name == name and tx.inner.name == "chain", name
        assert [member.name for member in tx.inner.children] == members, name
        assert repr(tx).startswith(f"{name}(learning_rate=0.1"), repr(tx)
        rebuilt = gx.from_config(gx.to_config(tx))
        assert repr(rebuilt) == repr(tx)


INJECTED = {
    "radam": dict(learning_rate=_decaying, b2=0.99, threshold=4.5, nesterov=True),
    "yogi": dict(learning_rate=1e-2, b1=0.8, eps=1e-4),
    "adabelief": dict(learning_rate=_decaying, b2=0.995, eps=1e-12, nesterov=True),
    "nadamw": dict(learning_rate=_decaying, b1=0.85, weight_decay=1e-2, mask=_matrices),
    "nadam": dict(learning_rate=1e-3, b2=0.99),
    "adamax": dict(learning_rate=2e-3, b2=0.99),
    "adamaxw": dict(learning_rate=2e-3, weight_decay=_decaying),
    "amsgrad": dict(learning_rate=1e-3, b1=0.8, bias_correction_mu=False),
    "novograd": dict(learning_rate=1e-2, b2=0.5, weight_decay=1e-3),
}


@pytest.mark.parametrize(
    "name, dtype",
    [(name, jnp.float32) for name in INJECTED]
    + [(name, jnp.bfloat16) for name in ("radam", "yogi", "adabelief", "nadamw")],
    ids=lambda x: getattr(x, "__name__", x),
)
def test_inject_hyperparams_is_bitwise_the_plain_alias(name, dtype):
    factory, kwargs = getattr(gx, name), INJECTED[name]
    params = random_params(0, dtype)
    grads_seq = gradient_stream(params, 25, seed=4)
    plain = _trajectory(factory(**kwargs), params, grads_seq, compiler_options=DEFAULT_COMPILE)
    injected = _trajectory(gx.inject_hyperparams(factory)(**kwargs), params, grads_seq,
                           compiler_options=DEFAULT_COMPILE)
    for step, ((u, p, s), (u_i, p_i, s_i)) in enumerate(zip(plain, injected)):
        context = f"{name} {dtype.__name__} step {step}"
        assert_trees_bitwise_equal(u_i, u, context)
        assert_trees_bitwise_equal(p_i, p, context)
        assert_trees_bitwise_equal(s_i.inner_state, s, context)


def test_an_injected_value_changed_in_the_state_acts_as_the_alias_built_with_it():
    params = random_params(0)
    grads_seq = gradient_stream(params, 10, seed=5)
    tx = gx.inject_hyperparams(gx.radam)(learning_rate=1e-3, b2=0.99)
    state = tx.init(params)
    state.hyperparams["b2"] = 0.95
    state.hyperparams["threshold"] = 4.0
    update = jax.jit(tx.update)
    expected, _ = run_updates(gx.radam(1e-3, b2=0.95, threshold=4.0), params, grads_seq)
    for step, grads in enumerate(grads_seq):
        updates, state = update(grads, state, params)
        assert_trees_close(updates, expected[step], 1e-5, 1e-9, context=f"step {step}")


# ------------------------------------------------------------------ convergence, errors


@pytest.mark.parametrize("name, learning_rate, steps", [
    ("adabelief", 0.1, 300), ("adamax", 0.1, 300), ("adamaxw", 0.1, 300), ("amsgrad", 0.1, 300),
    ("nadam", 0.1, 300), ("nadamw", 0.1, 300), ("radam", 0.1, 300), ("yogi", 0.1, 300),
    ("novograd", 0.05, 400),
])
def test_converges_on_a_quadratic(name, learning_rate, steps):
    target = jnp.array([1.0, -2.0, 3.0, 0.5])
    tx = getattr(gx, name)(learning_rate)

    @jax.jit
    def run(x):
        def step(carry, _):
            x, state = carry
            updates, state = tx.update(jax.grad(lambda y: jnp.sum((y - target) ** 2))(x), state, x)
            return (gx.apply_updates(x, updates), state), None

        return jax.lax.scan(step, (x, tx.init(x)), None, length=steps)[0][0]

    final = run(jnp.zeros(4))
    # adamaxw/nadamw's default decay of 1e-4 moves the minimiser by about 1e-4 |target|.
    np.testing.assert_allclose(final, target, atol=5e-2)


@pytest.mark.parametrize("call, match", [
    (lambda: gx.radam(0.1, threshold=3.0), r"radam: threshold must be in \[4, inf\), got 3.0"),
    (lambda: gx.yogi(0.1, b2=1.0), r"yogi: b2 must be in \[0, 1\), got 1.0"),
    (lambda: gx.adabelief(0.1, eps=-1.0), r"adabelief: eps must be in \[0, inf\), got -1.0"),
    (lambda: gx.novograd(0.1, weight_decay=_decaying), r"novograd: weight_decay must be a real"),
    (lambda: gx.nadamw(0.1, nesterov=1), r"nadamw: nesterov must be a bool, got 1"),
    (lambda: gx.adamaxw(-0.1), r"adamaxw: learning_rate must be in \[0, inf\), got -0.1"),
    (lambda: gx.amsgrad(0.1, lr=0.1), r"amsgrad.*learning_rate"),
])
def test_errors_name_the_alias(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()
