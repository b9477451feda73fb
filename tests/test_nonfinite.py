"""Non-finite gradients: what the guards promise, and what happens without one.

This is the specification; every statement below is checked here.

**Guards** (``gx.apply_if_finite``, ``gx.dynamic_loss_scale`` and
``gx.keras.loss_scale_optimizer``, which is ``dynamic_loss_scale``): a step whose
gradients hold a NaN, a +inf or a -inf anywhere is skipped.

* The update is ``-0.0`` in every leaf, so ``gx.apply_updates`` leaves every
  parameter bit-for-bit unchanged (``-0.0`` ones included).
* The inner transformation's state is bit-for-bit unchanged: moments, counters,
  accumulators, parameter averages, schedules, nested guards.
* Only the guard's own fields move. ``apply_if_finite``: ``notfinite_count`` and
  ``total_notfinite`` go up by one and ``last_finite`` becomes False (as long as
  no more than ``max_consecutive_errors`` steps in a row were bad).
  ``dynamic_loss_scale``: the loss scale halves, ``growth_count`` restarts at 0
  and ``skipped_steps`` goes up by one.
* The next finite step works normally: it gives bit-for-bit the update and inner
  state that it would have given had the bad step never happened (with
  ``dynamic_loss_scale`` the caller's gradients are those of the loss scaled by
  the new, halved scale, ``gx.scale_loss``; powers of two make that exact). The
  guard's fields follow their documented rule (``notfinite_count`` back to 0;
  the scale doubles only after ``dynamic_growth_steps`` finite steps in a row).

This holds around the swept entries of ``tests/factories.py`` (``sweep``: every
constructor, or every entry with ``GRADXFORM_FULL_SWEEP=1``), with one jitted
update compiled once per guarded transformation.

**Skip rules that are part of a transformation** (``multi_steps`` with
``skip_not_finite`` or ``skip_large_updates``, and the guards themselves when
run unwrapped) behave the same way: ``-0.0`` updates, state unchanged except the
skip bookkeeping (``skip_state``; the guard fields above).

**Without a guard**, gradxform propagates non-finite values as optax does and
never hides them: after a step whose gradients hold a NaN (or an inf), the
updates or the state (moments, traces, accumulators, recorded norms) hold a
NaN (a non-finite value). Finite updates together with a finite state after
consuming a NaN would be a silent corruption, and is a bug. The exceptions are
by design and listed in `IGNORES_GRADIENT` (``set_to_zero`` never reads the
gradient) and `SATURATES_INF` (elementwise ``clip`` maps ±inf to ±max_delta, as
``optax.clip``, and the sign rules, ``scale_by_sign`` and ``scale_by_rprop``, read
only its sign, as optax's; NaN still propagates). Where optax has the same
transformation, the NaN and inf pattern of the updates and of every moment
(``mu``, ``nu``, ``nu_max``, ``trace``, ``ema``, ``sum_of_squares``) after the
poisoned step equals optax's, element by element, on the same inputs.

**clip_by_global_norm** (its docstring): when the global norm is infinite
because a gradient entry is ±inf, finite entries become ±0 (the sign of the
entry) and infinite entries NaN; when a gradient entry is NaN, every entry is
NaN. Both as ``optax.clip_by_global_norm``, bit for bit, checked live.
(Finite gradients whose squared norm overflows float32 are not covered here.)

Compile time is the cost of this file (about 200 programs): the programs are
compiled with `FAST_COMPILE` (XLA:CPU's backend optimisation off). These tests
compare the library's behaviour with itself and with optax under the same
options, so code quality does not matter, and XLA's HLO passes, which decide
the arithmetic, still run. The parameter tree is `SHAPES`: every kind of node
(dicts, lists, tuples, ``None``, a 0-d and a zero-size leaf) in five leaves, so
as to keep the programs small.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradxform as gx
from tests.factories import FACTORIES, NAMES, sweep
from tests.helpers import FAST_COMPILE, assert_trees_bitwise_equal, gradient_stream, random_params

pytestmark = pytest.mark.allows_nan  # every test here feeds NaN or inf on purpose

SHAPES = {
    "dense": {"kernel": (3, 2), "bias": (2,)},
    "blocks": [None, ()],
    "pair": ((0,), {"inner": (1, 3)}),
}
PARAMS_SEED, GRADS_SEED = 0, 1

# A few derandomized examples per case (the compiled programs are reused across examples);
# another HYPOTHESIS_PROFILE (root conftest.py, e.g. "thorough") takes over when asked for.
EXAMPLES = (
    settings(max_examples=4, deadline=None, derandomize=True, database=None)
    if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci" else settings(deadline=None)
)


# --- trees, poison ----------------------------------------------------------------------------

def _params():
    return random_params(PARAMS_SEED, jnp.float32, SHAPES)


_TREEDEF = jax.tree.structure(_params())
_SIZES = [int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(_params())]
NONEMPTY_LEAVES = [i for i, size in enumerate(_SIZES) if size > 0]


class Poison(NamedTuple):
    value: float  # nan, inf or -inf
    leaf: int  # index into jax.tree.leaves(grads), a non-empty leaf
    element: int  # flat index in that leaf
    seed: int  # for the finite entries of the poisoned gradient

    def apply(self, grads: Any) -> Any:
        leaves = [np.array(x) for x in jax.tree.leaves(grads)]
        leaves[self.leaf].reshape(-1)[self.element] = self.value
        return jax.tree.unflatten(_TREEDEF, [jnp.asarray(x) for x in leaves])


@st.composite
def poisons(draw, values=(np.nan, np.inf, -np.inf)) -> Poison:
    value = draw(st.sampled_from(values))
    leaf = draw(st.sampled_from(NONEMPTY_LEAVES))
    element = draw(st.integers(0, _SIZES[leaf] - 1))
    return Poison(value, leaf, element, draw(st.integers(0, 2**16)))


def _finite_grads(seed: int, scale: Any = 1.0) -> Any:
    """Random normal gradients like `_params`, times ``scale`` (exact: a power of two)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: jnp.asarray(rng.standard_normal(p.shape).astype(np.float32) * np.float32(scale)),
        _params(),
    )


def _scaled(grads: Any, state: Any) -> Any:
    """The gradients of ``gx.scale_loss(loss, state)``: ``grads`` times the current loss scale."""
    scale = np.float32(gx.current_loss_scale(state))
    return jax.tree.map(lambda g: jnp.asarray(np.asarray(g) * scale), grads)


def _counting_jit(fn: Callable) -> tuple[Callable, list]:
    traces = []

    def traced(*args):
        traces.append(None)
        return fn(*args)

    return jax.jit(traced, compiler_options=FAST_COMPILE), traces


def _is_minus_zero(tree: Any) -> bool:
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree)]
    return all(np.all(x == 0) and np.all(np.signbit(x)) for x in leaves)


def _float_leaves(tree: Any) -> list[np.ndarray]:
    return [
        np.asarray(x, np.float32) for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
    ]


def _any(tree: Any, predicate: Callable) -> bool:
    return any(np.any(predicate(x)) for x in _float_leaves(tree))


def _not_finite(x):
    return ~np.isfinite(x)


# --- a finite trajectory, compiled once per transformation ------------------------------------

class Trajectory(NamedTuple):
    tx: Any
    update: Callable  # jitted, compiled once
    traces: list
    params: list  # params[i]: before step i
    states: list  # states[i]: before step i
    updates: list  # updates[i]: of step i
    grads: list  # grads[i]: the (already loss-scaled) gradients of step i


def _trajectory(tx, steps: int, loss_scaled: bool) -> Trajectory:
    update, traces = _counting_jit(tx.update)
    params = [_params()]
    states = [tx.init(params[0])]
    updates, grads = [], []
    for step, g in enumerate(gradient_stream(params[0], steps, seed=GRADS_SEED, zero_every=0)):
        g = _scaled(g, states[step]) if loss_scaled else g
        u, s = update(g, states[step], params[step])
        grads.append(g)
        updates.append(u)
        states.append(s)
        params.append(gx.apply_updates(params[step], u))
    return Trajectory(tx, update, traces, params, states, updates, grads)


# --- the guards' documented rules ---------------------------------------------------------------

MAX_CONSECUTIVE_ERRORS = 3
INITIAL_SCALE, GROWTH_STEPS = 2.0**4, 2


def _keras_adam():
    return gx.keras.adam(
        1e-3, weight_decay=0.01, clipnorm=1.0, use_ema=True, ema_overwrite_frequency=3,
        gradient_accumulation_steps=2,
    )


GUARDS = {
    "apply_if_finite": lambda inner: gx.apply_if_finite(inner, MAX_CONSECUTIVE_ERRORS),
    "dynamic_loss_scale": lambda inner: gx.dynamic_loss_scale(inner, INITIAL_SCALE, GROWTH_STEPS),
}
# The swept FACTORIES entries are each wrapped in both guards, guards and skip rules
# included (a guard around a guard must leave the inner one untouched too).
SWEPT = sweep(NAMES)
GUARDED_CASES = [(guard, name) for guard in GUARDS for name in SWEPT]
GUARDED_CASES.append(("keras.loss_scale_optimizer", "keras.adam"))


def _build_guarded(guard: str, name: str):
    if guard == "keras.loss_scale_optimizer":
        return gx.keras.loss_scale_optimizer(
            _keras_adam(), initial_scale=INITIAL_SCALE, dynamic_growth_steps=GROWTH_STEPS
        )
    return GUARDS[guard](FACTORIES[name]())


def _i32(x) -> jax.Array:
    return jnp.asarray(x, jnp.int32)


def _after_bad_step(old: Any) -> Any:
    """The documented state of a guard after skipping a bad step (the inner state as it was)."""
    if isinstance(old, gx.ApplyIfFiniteState):
        assert int(old.notfinite_count) < MAX_CONSECUTIVE_ERRORS
        return old._replace(
            notfinite_count=_i32(int(old.notfinite_count) + 1),
            last_finite=jnp.asarray(False),
            total_notfinite=_i32(int(old.total_notfinite) + 1),
        )
    if isinstance(old, gx.DynamicLossScaleState):
        return old._replace(
            loss_scale=jnp.asarray(np.float32(old.loss_scale) * np.float32(0.5)),
            growth_count=_i32(0),
            skipped_steps=_i32(int(old.skipped_steps) + 1),
        )
    raise AssertionError(f"not a guard state: {type(old).__name__}")


def _after_good_step(old: Any, inner_state: Any, growth_steps: int = GROWTH_STEPS) -> Any:
    """The documented state of a guard after a finite step, given the inner state it reached."""
    if isinstance(old, gx.ApplyIfFiniteState):
        return old._replace(
            notfinite_count=_i32(0), last_finite=jnp.asarray(True), inner_state=inner_state
        )
    if isinstance(old, gx.DynamicLossScaleState):
        grow = int(old.growth_count) == growth_steps - 1
        scale = np.float32(old.loss_scale) * np.float32(2.0 if grow else 1.0)
        return old._replace(
            loss_scale=jnp.asarray(scale),
            growth_count=_i32(0 if grow else int(old.growth_count) + 1),
            inner_state=inner_state,
        )
    raise AssertionError(f"not a guard state: {type(old).__name__}")


FINITE_STEPS_BEFORE = (1, 2, 3)  # the bad step comes after this many finite ones (varies phase)


@functools.cache
def _guarded_run(guard: str, name: str) -> Trajectory:
    return _trajectory(_build_guarded(guard, name), max(FINITE_STEPS_BEFORE) + 1, loss_scaled=True)


@pytest.mark.parametrize("guard, name", GUARDED_CASES)
@EXAMPLES
@given(poison=poisons(), before=st.sampled_from(FINITE_STEPS_BEFORE))
def test_guard_skips_the_bad_step_bitwise_and_resumes(guard, name, poison, before):
    run = _guarded_run(guard, name)
    params, state = run.params[before], run.states[before]

    # The bad step: finite gradients of the loss-scaled size with one NaN or inf entry.
    bad = poison.apply(_finite_grads(poison.seed, np.float32(gx.current_loss_scale(state))))
    updates, skipped = run.update(bad, state, params)
    chex.assert_trees_all_equal_structs(updates, bad)
    assert _is_minus_zero(updates), f"{name}: a skipped step's update must be -0.0 everywhere"
    assert_trees_bitwise_equal(gx.apply_updates(params, updates), params, "params after a skip")
    # Every inner leaf bit for bit; only the guard's fields move, by the documented rule.
    assert_trees_bitwise_equal(skipped.inner_state, state.inner_state, "inner state after a skip")
    assert_trees_bitwise_equal(skipped, _after_bad_step(state), "guard state after a skip")

    # The next finite step (gradients of the loss at the new scale) is the one that would
    # have come without the bad step: same update and inner state, bit for bit.
    # run.grads[before] were scaled by the old scale; the ratio is a power of two (1 or 1/2).
    ratio = np.float32(gx.current_loss_scale(skipped)) / np.float32(gx.current_loss_scale(state))
    grads = jax.tree.map(lambda g: jnp.asarray(np.asarray(g) * ratio), run.grads[before])
    updates, resumed = run.update(grads, skipped, params)
    assert_trees_bitwise_equal(updates, run.updates[before], "update of the next finite step")
    assert_trees_bitwise_equal(
        resumed, _after_good_step(skipped, run.states[before + 1].inner_state),
        "state after the next finite step",
    )
    assert len(run.traces) == 1, "the jitted update was traced more than once"


# --- without a guard ----------------------------------------------------------------------------

def _skip_rule_state(state: Any) -> str | None:
    """Which skip rule the top of ``state`` belongs to, if any."""
    if isinstance(state, (gx.ApplyIfFiniteState, gx.DynamicLossScaleState)):
        return "guard"
    if isinstance(state, gx.MultiStepsState) and isinstance(state.skip_state, dict) and (
        "should_skip" in state.skip_state
    ):
        return "multi_steps"
    return None


# The poison may land in any non-empty leaf: every entry reads every leaf's gradient. Masked-out
# leaves of `masked` and `add_decayed_weights` pass the gradient through unchanged (as optax),
# and `freeze`'s frozen leaves still feed the Adam before it, so a NaN there shows in its moments.
# Guards and skip rules: the poisoned step is skipped by design.
SKIPS_BY_DESIGN = {
    "apply_if_finite", "dynamic_loss_scale", "keras_adagrad_everything",
    "multi_steps_skip", "multi_steps_skip_large",
}
# Never reads the gradient: -0.0 updates and no state, whatever the gradient holds.
IGNORES_GRADIENT = {"set_to_zero"}
# Elementwise clipping first: ±inf becomes ±max_delta, a legitimate finite value (optax.clip too).
SATURATES_INF = {"clip": 0.5, "named_chain": 1.0, "scale_by_sign": 1.0, "sign_sgd": 1.0,
                 "scale_by_rprop": 1.0, "rprop": 1.0, "torch_rprop_everything": 1.0,
                 # clipvalue / clip_grad_value_ first: ±inf becomes ±0.5
                 "keras_lion": 0.5, "keras_nadam": 0.5, "torch_clip_grad_value": 0.5}

MOMENT_FIELDS = ("mu", "nu", "nu_max", "trace", "ema", "sum_of_squares")


def _decaying(count):
    return 0.1 / (1.0 + count.astype(jnp.float32))


# optax counterparts, built like the FACTORIES entry of the same name. clip_by_norm has none
# (optax.clip_by_block_rms divides by the RMS, not the norm).
OPTAX = {
    "scale": lambda tx: optax.scale(-0.5),
    "identity": lambda tx: optax.identity(),
    "scale_by_adam": lambda tx: optax.scale_by_adam(),
    "scale_by_adam_nesterov": lambda tx: optax.scale_by_adam(nesterov=True),
    "scale_by_amsgrad": lambda tx: optax.scale_by_amsgrad(),
    "scale_by_adagrad": lambda tx: optax.scale_by_rss(),
    "scale_by_rms": lambda tx: optax.scale_by_rms(),
    "scale_by_rms_debiased": lambda tx: optax.scale_by_rms(bias_correction=True, eps_in_sqrt=False),
    "scale_by_stddev": lambda tx: optax.scale_by_stddev(),
    "trace": lambda tx: optax.trace(0.9),
    "trace_nesterov": lambda tx: optax.trace(0.9, nesterov=True),
    "ema": lambda tx: optax.ema(0.9),
    "ema_biased": lambda tx: optax.ema(0.9, debias=False),
    "clip": lambda tx: optax.clip(0.5),
    "clip_by_global_norm": lambda tx: optax.clip_by_global_norm(1.0),
    "add_decayed_weights": lambda tx: optax.add_decayed_weights(1e-2),
    "sgd": lambda tx: optax.sgd(0.1),
    "sgd_momentum": lambda tx: optax.sgd(0.1, momentum=0.9, nesterov=True),
    "adam": lambda tx: optax.adam(1e-3),
    "adam_schedule": lambda tx: optax.adam(_decaying),
    "adamw": lambda tx: optax.adamw(1e-3, weight_decay=1e-2, mask=tx.hyperparams["mask"]),
    "adagrad": lambda tx: optax.adagrad(0.1),
    "rmsprop": lambda tx: optax.rmsprop(1e-3),
    "rmsprop_centered_momentum": lambda tx: optax.rmsprop(1e-3, centered=True, momentum=0.9),
    "chain": lambda tx: optax.chain(
        optax.clip_by_global_norm(1.0), optax.scale_by_adam(), optax.scale(-1e-2)
    ),
    "named_chain": lambda tx: optax.named_chain(
        ("clip", optax.clip(1.0)), ("momentum", optax.trace(0.9)), ("lr", optax.scale(-0.1))
    ),
}


def _moments(state: Any) -> list[tuple[str, list[np.ndarray]]]:
    """``(field, leaves)`` for every moment field of every NamedTuple in ``state``, in order."""
    found = []

    def walk(node):
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            for field, value in zip(node._fields, node):
                if field in MOMENT_FIELDS:
                    leaves = [np.asarray(x, np.float32) for x in jax.tree.leaves(value)]
                    found.append((field, leaves))
                else:
                    walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(state)
    return found


def _pattern(leaves: list[np.ndarray]) -> list[tuple[list, list]]:
    return [(np.isnan(x).tolist(), np.isinf(x).tolist()) for x in leaves]


def _standard_promotion(fn: Callable) -> Callable:
    def wrapped(*args):
        with jax.numpy_dtype_promotion("standard"):
            return fn(*args)

    return wrapped


UNGUARDED_STEPS_BEFORE = (1, 2)  # mid-window and window-end for the every-2 accumulators


@functools.cache
def _unguarded_run(name: str) -> Trajectory:
    return _trajectory(FACTORIES[name](), max(UNGUARDED_STEPS_BEFORE), loss_scaled=False)


@functools.cache
def _optax_run(name: str) -> tuple[Callable, list]:
    """optax's jitted update and its states along the gradxform trajectory's inputs."""
    run = _unguarded_run(name)
    tx = OPTAX[name](run.tx)
    update = _standard_promotion(jax.jit(tx.update, compiler_options=FAST_COMPILE))
    states = [_standard_promotion(tx.init)(run.params[0])]
    for step, grads in enumerate(run.grads):
        states.append(update(grads, states[step], run.params[step])[1])
    return update, states


def _assert_skipped(name, old, new, updates, params):
    assert _is_minus_zero(updates), f"{name}: a skipped step's update must be -0.0 everywhere"
    assert_trees_bitwise_equal(gx.apply_updates(params, updates), params, "params after a skip")
    rule = _skip_rule_state(old)
    if rule == "guard":
        assert_trees_bitwise_equal(new, _after_bad_step(old), f"{name}: state after a skip")
    elif rule == "multi_steps":
        assert bool(new.skip_state["should_skip"])
        assert_trees_bitwise_equal(
            new._replace(skip_state=old.skip_state), old, f"{name}: state after a skip"
        )
    else:
        raise AssertionError(f"{name}: no skip rule at the top of its state ({type(old).__name__})")


# The swept entries, and every entry with a rule of its own below.
UNGUARDED = sorted(set(SWEPT) | SKIPS_BY_DESIGN | IGNORES_GRADIENT | set(SATURATES_INF))


@pytest.mark.parametrize("kind", ["nan", "inf"])
@pytest.mark.parametrize("name", UNGUARDED)
@EXAMPLES
@given(data=st.data())
def test_without_a_guard_nonfinite_is_skipped_or_visible_never_hidden(name, kind, data):
    values = (np.nan,) if kind == "nan" else (np.inf, -np.inf)
    poison = data.draw(poisons(values), label="poison")
    before = data.draw(st.sampled_from(UNGUARDED_STEPS_BEFORE), label="before")
    run = _unguarded_run(name)
    params, state = run.params[before], run.states[before]
    bad = poison.apply(_finite_grads(poison.seed))
    updates, new_state = run.update(bad, state, params)
    chex.assert_trees_all_equal_structs(updates, bad)
    chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)

    if name in SKIPS_BY_DESIGN:
        _assert_skipped(name, state, new_state, updates, params)
    elif name in IGNORES_GRADIENT:
        assert _is_minus_zero(updates)
        assert_trees_bitwise_equal(new_state, state, f"{name}: state")
    elif kind == "inf" and name in SATURATES_INF:
        assert not _any(updates, _not_finite) and not _any(new_state, _not_finite)
        if name == "clip":
            entry = np.asarray(jax.tree.leaves(updates)[poison.leaf]).reshape(-1)[poison.element]
            assert entry == np.copysign(SATURATES_INF[name], poison.value)
    else:
        # Propagated, visibly: a NaN stays a NaN; an inf becomes an inf or a NaN somewhere.
        visible = np.isnan if kind == "nan" else _not_finite
        assert _any(updates, visible) or _any(new_state, visible), (
            f"{name} consumed a {kind} gradient without skipping and returned finite updates "
            "and a finite state"
        )
    assert len(run.traces) == 1

    if name in OPTAX:
        optax_update, optax_states = _optax_run(name)
        ref_updates, ref_state = optax_update(bad, optax_states[before], params)
        assert _pattern(_float_leaves(updates)) == _pattern(_float_leaves(ref_updates)), (
            f"{name}: NaN/inf pattern of the updates differs from optax's"
        )
        mine, ref = _moments(new_state), _moments(ref_state)
        assert [field for field, _ in mine] == [field for field, _ in ref]
        for (field, a), (_, b) in zip(mine, ref):
            assert _pattern(a) == _pattern(b), f"{name}: NaN/inf pattern of {field} differs"


def test_the_optax_comparison_covers_the_documented_list():
    # clip_by_norm has no optax counterpart; everything else the spec lists is compared.
    wanted = {
        "scale_by_adam", "scale_by_adagrad", "scale_by_rms", "scale_by_stddev", "trace", "ema",
        "clip", "clip_by_global_norm", "add_decayed_weights", "sgd", "adam", "adamw", "adagrad",
        "rmsprop",
    }
    assert wanted <= set(OPTAX) <= set(NAMES)
    assert SKIPS_BY_DESIGN | IGNORES_GRADIENT | set(SATURATES_INF) <= set(NAMES)


# --- clip_by_global_norm with an infinite or NaN norm ---------------------------------------------

@functools.cache
def _clip_updates() -> tuple[Callable, Callable]:
    mine = gx.clip_by_global_norm(1.0)
    theirs = optax.clip_by_global_norm(1.0)
    return (
        jax.jit(mine.update, compiler_options=FAST_COMPILE),
        _standard_promotion(jax.jit(theirs.update, compiler_options=FAST_COMPILE)),
    )


def _flat_positions() -> list[tuple[int, int]]:
    return [(leaf, element) for leaf in NONEMPTY_LEAVES for element in range(_SIZES[leaf])]


def _with_entries(grads: Any, entries: dict) -> Any:
    leaves = [np.array(x) for x in jax.tree.leaves(grads)]
    for (leaf, element), value in entries.items():
        leaves[leaf].reshape(-1)[element] = value
    return jax.tree.unflatten(_TREEDEF, [jnp.asarray(x) for x in leaves])


def _bits(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).reshape(-1).view(np.uint32)


@EXAMPLES
@given(
    seed=st.integers(0, 2**16),
    entries=st.dictionaries(
        st.sampled_from(_flat_positions()), st.sampled_from([np.inf, -np.inf]),
        min_size=1, max_size=3,
    ),
    zeros=st.sets(st.sampled_from(_flat_positions()), max_size=3),
)
def test_clip_by_global_norm_infinite_norm(seed, entries, zeros):
    """±inf entries become NaN; every finite entry becomes ±0 (its own sign), as in optax."""
    finite = _with_entries(_finite_grads(seed), {position: -0.0 for position in zeros})
    grads = _with_entries(finite, entries)
    mine, theirs = _clip_updates()
    updates, _ = mine(grads, optax.EmptyState())
    ref, _ = theirs(grads, optax.EmptyState())
    chex.assert_trees_all_equal_shapes_and_dtypes(updates, grads)
    for u, r, g in zip(jax.tree.leaves(updates), jax.tree.leaves(ref), jax.tree.leaves(grads)):
        u, r, g = (np.asarray(x).reshape(-1) for x in (u, r, g))
        infinite = np.isinf(g)
        np.testing.assert_array_equal(np.isnan(u), infinite)
        np.testing.assert_array_equal(np.isnan(r), infinite)
        expected_zeros = np.copysign(np.float32(0), g[~infinite]).astype(np.float32)
        np.testing.assert_array_equal(_bits(u[~infinite]), _bits(expected_zeros))
        np.testing.assert_array_equal(_bits(u[~infinite]), _bits(r[~infinite]))


@EXAMPLES
@given(
    seed=st.integers(0, 2**16),
    entries=st.dictionaries(
        st.sampled_from(_flat_positions()), st.sampled_from([np.nan, np.nan, np.inf, -np.inf]),
        min_size=1, max_size=3,
    ).filter(lambda entries: any(np.isnan(v) for v in entries.values())),
)
def test_clip_by_global_norm_nan_norm(seed, entries):
    """One NaN entry (with or without infs beside it) makes every entry NaN, as in optax."""
    grads = _with_entries(_finite_grads(seed), entries)
    mine, theirs = _clip_updates()
    updates, _ = mine(grads, optax.EmptyState())
    ref, _ = theirs(grads, optax.EmptyState())
    chex.assert_trees_all_equal_shapes_and_dtypes(updates, grads)
    for u, r in zip(jax.tree.leaves(updates), jax.tree.leaves(ref)):
        assert np.all(np.isnan(np.asarray(u))) and np.all(np.isnan(np.asarray(r)))
