"""The optimizer aliases against optax's optimizers of the same name and arguments.

Each case builds ``gx.<name>(**kwargs)`` and ``optax.<name>(**kwargs)`` from the
same keyword arguments and runs 50 jitted steps of the same random gradients
over a nested pytree (`tests.helpers.compare_with_optax`); learning rates are
given both as numbers and as a schedule. Also checked: ``adam(amsgrad=True)``
is gradxform's AMSGrad rule (not optax's), and each optimizer's ``.inner`` is
the documented chain.
"""

import jax
import jax.numpy as jnp
import optax
import pytest

import gradxform as gx
from tests.helpers import compare_with_optax, gradient_stream, random_params, run_updates


def exponential_decay(count):
    """A schedule valid under strict promotion (and under optax's standard promotion)."""
    return 0.1 * 0.99 ** count.astype(jnp.float32)


def decay_matrices(params):
    """A mask callable: weight decay for the leaves of rank 2 or more only."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


# A prefix of `tests.helpers.nested_shapes()`: whole subtrees masked at once.
MASK_TREE = {
    "dense": {"kernel": True, "bias": False},
    "blocks": True,
    "pair": (False, {"inner": True, "empty": True}),
    "scalar": False,
}

F32_CASES = [
    ("sgd", {"learning_rate": 0.1}),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9}),
    ("sgd", {"learning_rate": exponential_decay, "momentum": 0.8, "nesterov": True}),
    ("adagrad", {"learning_rate": 0.1}),
    (
        "adagrad",
        {"learning_rate": exponential_decay, "initial_accumulator_value": 0.5, "eps": 1e-5},
    ),
    ("adam", {"learning_rate": 0.1}),
    ("adam", {"learning_rate": exponential_decay, "b1": 0.8, "b2": 0.99, "nesterov": True}),
    ("adam", {"learning_rate": 0.01, "eps": 1e-4, "eps_root": 1e-6}),
    ("adamw", {"learning_rate": 0.1, "weight_decay": 1e-2}),
    ("adamw", {"learning_rate": 0.1, "weight_decay": 0.1, "mask": MASK_TREE}),
    (
        "adamw",
        {"learning_rate": exponential_decay, "weight_decay": 0.1, "mask": decay_matrices,
         "nesterov": True},
    ),
    ("rmsprop", {"learning_rate": 0.1}),
    ("rmsprop", {"learning_rate": exponential_decay, "centered": True}),
    ("rmsprop", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
    ("rmsprop", {"learning_rate": 0.1, "decay": 0.99, "bias_correction": True}),
    ("rmsprop", {"learning_rate": 0.1, "eps": 1e-3, "eps_in_sqrt": False, "initial_scale": 0.1}),
]


def _case_id(case):
    name, kwargs = case[:2]

    def short(key, value):
        if key == "mask":
            return "fn" if callable(value) else "tree"
        if key == "learning_rate" and callable(value):
            return "schedule"
        if isinstance(value, type):  # a dtype
            return jnp.dtype(value).name
        return value

    return f"{name}({','.join(f'{k}={short(k, v)}' for k, v in kwargs.items())})"


@pytest.mark.parametrize("case", F32_CASES, ids=[_case_id(c) for c in F32_CASES])
def test_optimizer_matches_optax_float32(case):
    name, kwargs = case
    compare_with_optax(getattr(gx, name)(**kwargs), getattr(optax, name)(**kwargs))


# Low precision: gradxform runs on bf16/f16 params and gradients, optax on the
# same values in float32. Where the optimizer exposes a state dtype it is set to
# float32 (sgd's accumulator_dtype, adam's mu_dtype) and the default tolerance
# of `compare_with_optax` (one rounding of the update) applies. The other
# accumulators (adagrad's sum, adam's nu, rmsprop's moments) live in the
# params' dtype, as in optax, and are rounded every step, so their error grows
# with the number of steps; those cases get a looser tolerance, as in
# tests/transforms/test_adaptive.py (over these 50 steps the largest error
# seen was about 0.7 % of the update, for centred rmsprop in bf16). Learning
# rates are 1.0 so that the absolute tolerance is relative to updates of order one.
LOOSE = 3e-2
LOW_CASES = [
    ("sgd", {"learning_rate": 1.0}, None),
    ("sgd", {"learning_rate": 1.0, "momentum": 0.9, "accumulator_dtype": jnp.float32}, None),
    ("sgd", {"learning_rate": 1.0, "momentum": 0.9, "nesterov": True,
             "accumulator_dtype": jnp.float32}, None),
    ("adagrad", {"learning_rate": 1.0}, LOOSE),
    ("adam", {"learning_rate": 1.0, "mu_dtype": jnp.float32}, LOOSE),
    ("adamw", {"learning_rate": 1.0, "mu_dtype": jnp.float32, "weight_decay": 0.1,
               "mask": MASK_TREE}, LOOSE),
    ("rmsprop", {"learning_rate": 1.0}, LOOSE),
    ("rmsprop", {"learning_rate": 1.0, "centered": True, "momentum": 0.5}, LOOSE),
]


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=lambda d: d.__name__)
@pytest.mark.parametrize(
    "case", LOW_CASES, ids=[_case_id(c) for c in LOW_CASES]
)
def test_optimizer_matches_optax_low_precision(case, dtype):
    name, kwargs, tolerance = case
    compare_with_optax(
        getattr(gx, name)(**kwargs), getattr(optax, name)(**kwargs),
        dtype=dtype, rtol=tolerance, atol=tolerance,
    )


# ---------------------------------------------------------------------- AMSGrad


def test_adam_amsgrad_is_the_gradxform_amsgrad_chain():
    """``adam(amsgrad=True)`` is ``chain(scale_by_amsgrad(...), scale_by_learning_rate(lr))``.

    That is the PyTorch/Keras rule (max of the raw second moment), tested
    against NumPy in tests/transforms/test_adam.py; here the alias must give
    exactly the chain's numbers, hyperparameters passed through.
    """
    hyper = {"b1": 0.8, "b2": 0.99, "eps": 1e-6, "eps_root": 1e-8}
    params = random_params(0)
    grads_seq = gradient_stream(params, 50, seed=1)
    ours, _ = run_updates(gx.adam(exponential_decay, amsgrad=True, **hyper), params, grads_seq)
    chained, _ = run_updates(
        gx.chain(gx.scale_by_amsgrad(**hyper), gx.scale_by_learning_rate(exponential_decay)),
        params, grads_seq,
    )
    for mine, ref in zip(ours, chained):
        for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(ref)):
            assert a.dtype == b.dtype
            assert jnp.array_equal(a, b)


def test_adam_nesterov_and_amsgrad_raise():
    with pytest.raises(ValueError, match="nesterov"):
        gx.adam(0.1, nesterov=True, amsgrad=True)


# ------------------------------------------------------------------- .inner


LR = "scale_by_learning_rate(learning_rate=0.1, flip_sign=True)"
ADAM_DEFAULTS = "b1=0.9, b2=0.999, eps=1e-08, eps_root=0.0, mu_dtype=None, nu_dtype=None"

INNER_CASES = [
    (lambda: gx.sgd(0.1), f"chain(identity(), {LR})"),
    (
        lambda: gx.sgd(0.1, momentum=0.9),
        f"chain(trace(decay=0.9, nesterov=False, accumulator_dtype=None, dampening=None), {LR})",
    ),
    (
        lambda: gx.sgd(exponential_decay, momentum=0.5, nesterov=True,
                       accumulator_dtype=jnp.float32),
        "chain(trace(decay=0.5, nesterov=True, accumulator_dtype='float32', dampening=None), "
        "scale_by_learning_rate(learning_rate=<function exponential_decay>, flip_sign=True))",
    ),
    (
        lambda: gx.adagrad(0.1),
        "chain(scale_by_adagrad(initial_accumulator_value=0.1, eps=1e-07, "
        f"accumulator_dtype=None, eps_in_sqrt=True), {LR})",
    ),
    (lambda: gx.adam(0.1), f"chain(scale_by_adam({ADAM_DEFAULTS}, nesterov=False, eps_hat=False, accurate_bias_correction=False), {LR})"),
    (
        lambda: gx.adam(0.1, b1=0.5, mu_dtype=jnp.bfloat16, nesterov=True),
        "chain(scale_by_adam(b1=0.5, b2=0.999, eps=1e-08, eps_root=0.0, mu_dtype='bfloat16', "
        f"nu_dtype=None, nesterov=True, eps_hat=False, accurate_bias_correction=False), {LR})",
    ),
    (
        lambda: gx.adam(0.1, amsgrad=True),
        f"chain(scale_by_amsgrad({ADAM_DEFAULTS}, bias_correction_mu=True, "
        f"bias_correction_nu=True, eps_hat=False, accurate_bias_correction=False), {LR})",
    ),
    (
        lambda: gx.adamw(0.1),
        f"chain(scale_by_adam({ADAM_DEFAULTS}, nesterov=False, eps_hat=False, accurate_bias_correction=False), "
        f"add_decayed_weights(weight_decay=0.0001, mask=None, exclude=None), {LR})",
    ),
    (
        lambda: gx.adamw(0.1, weight_decay=0.01, mask=decay_matrices),
        f"chain(scale_by_adam({ADAM_DEFAULTS}, nesterov=False, eps_hat=False, accurate_bias_correction=False), "
        f"add_decayed_weights(weight_decay=0.01, mask=<function decay_matrices>, exclude=None), {LR})",
    ),
    (
        lambda: gx.adamw(0.1, mask={"w": True, "b": False}),
        f"chain(scale_by_adam({ADAM_DEFAULTS}, nesterov=False, eps_hat=False, accurate_bias_correction=False), "
        f"add_decayed_weights(weight_decay=0.0001, mask={{'w': True, 'b': False}}, exclude=None), {LR})",
    ),
    (
        lambda: gx.rmsprop(0.1),
        "chain(scale_by_rms(decay=0.9, eps=1e-08, initial_scale=0.0, eps_in_sqrt=True, "
        f"bias_correction=False), {LR})",
    ),
    (
        lambda: gx.rmsprop(0.1, centered=True, momentum=0.9, nesterov=True, eps_in_sqrt=False),
        "chain(scale_by_stddev(decay=0.9, eps=1e-08, initial_scale=0.0, eps_in_sqrt=False, "
        f"bias_correction=False), {LR}, trace(decay=0.9, nesterov=True, accumulator_dtype=None, dampening=None))",
    ),
]


INNER_IDS = [
    "sgd", "sgd-momentum", "sgd-nesterov-schedule", "adagrad", "adam", "adam-nesterov-bf16-mu",
    "adam-amsgrad", "adamw", "adamw-mask-fn", "adamw-mask-tree", "rmsprop",
    "rmsprop-centered-momentum",
]


@pytest.mark.parametrize("build, expected", INNER_CASES, ids=INNER_IDS)
def test_inner_is_the_documented_chain(build, expected):
    optimizer = build()
    assert optimizer.inner is not None
    assert optimizer.inner.name == "chain"
    assert repr(optimizer.inner) == expected


def test_inner_equals_the_chain_built_by_hand():
    """The repr of ``.inner`` is also that of the same chain written with the public pieces."""
    by_hand = gx.chain(
        gx.scale_by_adam(b1=0.9, b2=0.99),
        gx.add_decayed_weights(0.01, decay_matrices),
        gx.scale_by_learning_rate(0.1),
    )
    optimizer = gx.adamw(0.1, b2=0.99, weight_decay=0.01, mask=decay_matrices)
    assert repr(optimizer.inner) == repr(by_hand)
    assert repr(optimizer).startswith("adamw(learning_rate=0.1, ")
