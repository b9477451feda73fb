"""Hyperparameters as state: `inject_hyperparams`.

The factory (``gx.adam``, ``gx.keras.adam``, any function returning a
transformation) is called again inside every ``update`` with the current
hyperparameter values, read from the state. Numbers can thus be changed between
steps without recompiling, and schedules are evaluated once per step, their
value kept in the state for logging.

Bit-for-bit equality with the plain optimizer: values are stored in at least
float32, never in a lower precision params' dtype (in bfloat16 ``b2=0.999`` is
1.0, optax#1414). And while every number still has the value it was given, the
update runs the factory built with the given Python numbers, so it compiles to
exactly the plain optimizer's program: ``1 - b2`` is computed in double
precision as for a Python float, and XLA folds the same constants. A value
changed in the state selects the other branch of a ``lax.cond``, where it is a
runtime value. optax injects runtime values always, which is why its results
drift from the plain optimizer's (optax#583, #1532).

Derivatives: the branch of constants is for values only. Differentiating the
update (``jax.grad`` or ``jax.jvp`` of a loss after a step, with respect to an
injected value, the gradients or the params) differentiates the runtime branch,
so a meta-gradient with respect to, say, the learning rate is the true
derivative, whether or not the value equals the one given.

The guarantee covers the update: ``jax.jit(tx.update)``, whatever the chain,
and a training step that applies the updates in a separate computation. When
``apply_updates`` is compiled into the same program, XLA may fuse the plain
optimizer's last multiply with the parameter add into one fused multiply-add;
it does not fuse across the conditional, so there the two can differ in the
last bit of a step (as a jitted and an eager update already do).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import numerics, sparse, validation
from gradxform.core.base import (
    GradientTransformation,
    OptState,
    describe,
    format_value,
    is_dtype_like,
)
from gradxform.core.combine import extra_args_filter
from gradxform.core.hyperparams import HyperparamRules, Hyperparams

_STATIC, _NUMERIC, _SCHEDULED, _STATEFUL = "static", "numeric", "scheduled", "stateful"


class InjectHyperparamsState(NamedTuple):
    """The step count, the current hyperparameters, stateful schedules' states, the inner state.

    optax's ``InjectStatefulHyperparamsState``, field for field.
    ``hyperparams`` maps each injected name to a 0-d array: the value a
    constant was given (or set to), or the value a schedule took at the latest
    update (at ``count`` 0 right after ``init``); it is a `Hyperparams` dict,
    which checks the values set into it. ``hyperparams_states`` holds the
    state of each stateful schedule (optax's ``StatefulSchedule``); a plain
    schedule is evaluated at ``count`` and keeps none.
    """

    count: jax.Array  # int32, shape (): the argument of the schedules
    hyperparams: dict
    hyperparams_states: dict
    inner_state: OptState
    # The schedules' argument: tree_get(state, "count") prefers the inner optimizer's count.
    mirrored_fields = ("count",)


InjectStatefulHyperparamsState = InjectHyperparamsState


def _is_stateful_schedule(value: Any) -> bool:
    """optax's ``StatefulSchedule``: callable, with ``init()`` and ``update(state, **extra_args)``."""
    return callable(value) and callable(getattr(value, "init", None)) and callable(
        getattr(value, "update", None)
    )


def _takes_other_callables(parameter: inspect.Parameter | None) -> bool:
    """The factory annotates the argument as a function or mask that is not a schedule."""
    if parameter is None or parameter.annotation is inspect.Parameter.empty:
        return False
    annotation = parameter.annotation
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return ("Callable" in text or "Mask" in text) and "Schedule" not in text


def _kind(name: str, value: Any, parameter: inspect.Parameter | None, static_args) -> str:
    """Whether an argument is kept static, stored as a number, or evaluated as a schedule."""
    if name in static_args or isinstance(value, (bool, np.bool_)):
        return _STATIC
    if isinstance(value, (float, np.floating)):
        return _NUMERIC
    if isinstance(value, (jax.Array, np.ndarray)) and not isinstance(value, jax.core.Tracer):
        floating = jnp.issubdtype(value.dtype, jnp.floating)
        return _NUMERIC if floating and value.shape == () else _STATIC
    if _is_stateful_schedule(value):
        return _STATEFUL
    # As optax: a callable is a schedule, unless the factory says it takes another
    # kind of function there (a mask, a skip rule) or static_args names it.
    is_function = callable(value) and not isinstance(value, (tuple, type)) and not is_dtype_like(value)
    if is_function and not _takes_other_callables(parameter):
        return _SCHEDULED
    return _STATIC  # ints (step counts), None, strings, dtypes, masks, transformations


def _factory_name(factory: Callable) -> str:
    """``adam``, or ``keras.adam`` for a Keras preset, as the user would write it after ``gx.``."""
    name = getattr(factory, "__name__", repr(factory))
    module = getattr(factory, "__module__", "") or ""
    return f"keras.{name}" if module.startswith("gradxform.keras") else name


def _check_arguments(inner_factory, static_args, hyperparam_dtype):
    owner = "inject_hyperparams"
    if not callable(inner_factory):
        raise TypeError(f"{owner}: inner_factory must be callable, got {inner_factory!r}")
    given = static_args
    if isinstance(static_args, str):
        static_args = (static_args,)
    if not isinstance(static_args, (tuple, list)) or not all(
        isinstance(name, str) for name in static_args
    ):
        raise TypeError(f"{owner}: static_args must be argument names, got {given!r}")
    validation.float_dtype(owner, "hyperparam_dtype", hyperparam_dtype)
    signature = inspect.signature(inner_factory)
    unknown = [n for n in static_args if n not in signature.parameters]
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        raise ValueError(
            f"{owner}: static_args={given!r} names {unknown!r}, which are not arguments of "
            f"{_factory_name(inner_factory)}; it takes {list(signature.parameters)}"
        )
    return tuple(static_args), signature


def _storage_dtype(hyperparam_dtype: Any, params: Any) -> np.dtype:
    """``hyperparam_dtype``, or float32 widened to the params' widest real dtype (float64)."""
    if hyperparam_dtype is not None:
        return np.dtype(hyperparam_dtype)
    dtypes = [
        numerics.real_dtype(leaf.dtype)
        for leaf in jax.tree.leaves(params)
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)
    ]
    return numerics.compute_dtype(*dtypes)


def _split_static(tree: Any) -> tuple[list, list, Any]:
    """``tree``'s leaves split into JAX values (differentiable operands) and the rest."""
    leaves, treedef = jax.tree.flatten(tree)
    is_value = [isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float, complex))
                for leaf in leaves]
    dynamic = [leaf if keep else None for leaf, keep in zip(leaves, is_value)]
    static = [None if keep else leaf for leaf, keep in zip(leaves, is_value)]
    return dynamic, static, treedef


def _join_static(dynamic: list, static: list, treedef: Any) -> Any:
    return treedef.unflatten([d if s is None else s for d, s in zip(dynamic, static)])


def _run_injected(run: Callable, given: dict, current: dict, operands: Any) -> Any:
    """``run(given, operands)`` while every value equals the one given, else ``run(current, ...)``.

    The values are those of ``run(current, operands)`` up to the constants XLA
    folds; the derivatives (a custom JVP) are always those of
    ``run(current, operands)``, the function of the runtime values.
    """
    if not given:
        return run({}, operands)

    @jax.custom_jvp
    def injected(current, operands):
        unchanged = jnp.all(jnp.stack([
            current[name] == np.asarray(value, current[name].dtype) for name, value in given.items()
        ]))
        try:
            return jax.lax.cond(
                unchanged, lambda: run(given, operands), lambda: run(current, operands)
            )
        except (TypeError, ValueError):  # the constants build another chain (a 0 left out)
            return run(current, operands)

    @injected.defjvp
    def _differentiate_at_runtime_values(primals, tangents):
        return jax.jvp(run, primals, tangents)

    return injected(current, operands)


def _reference(inner_factory, bound, first_values: Callable[[], dict]) -> GradientTransformation:
    """The factory's transformation for the given arguments, checking them now.

    A factory that takes numbers only where optax would take a schedule
    (``momentum``, ``b1``) rejects the schedule itself; it is then built, and
    checked, with each schedule's first value (``first_values()``).
    """
    try:
        return inner_factory(*bound.args, **bound.kwargs)
    except (TypeError, ValueError):
        first = first_values()
        if not first:
            raise
    call = inspect.BoundArguments(bound.signature, dict(bound.arguments, **first))
    return inner_factory(*call.args, **call.kwargs)


def _rebuild(inner_factory, static_args, hyperparam_dtype, arguments) -> GradientTransformation:
    """What a pickled injected transformation is rebuilt with."""
    return inject_hyperparams(inner_factory, static_args, hyperparam_dtype)(**arguments)


@sparse.row_sparse_rule("routes")
def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Sequence[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    r"""Makes a factory's hyperparameters part of the state, readable and settable between steps.

    .. math::
        T_t = \mathrm{factory}(h_t), \qquad h_t[k] = s_k(t) \text{ for a schedule }
        s_k, \text{ else the stored value}; \qquad (u_t, S_t) = T_t(g_t, S_{t-1})

    ``inject_hyperparams(gx.adam)(learning_rate=schedule, b2=0.999)`` computes
    exactly the updates of ``gx.adam(learning_rate=schedule, b2=0.999)``, bit
    for bit (see the module docstring for how, and for a step that fuses
    ``apply_updates`` into the same program), and its state holds
    ``hyperparams['learning_rate']`` (the rate used by the latest update) and
    ``hyperparams['b1']``, ``['b2']``, ... Changing ``state.hyperparams['b2']``
    (or ``gx.tree_set(state, b2=0.99)``) takes effect at the next update
    without recompiling; the new value is checked as the factory checks its
    arguments, and setting a scheduled value raises. Derivatives through the
    update with respect to any injected value are the true ones.

    Which arguments are injected, after applying the factory's defaults, as in
    optax: float numbers and float 0-d arrays are stored; callables are
    schedules, evaluated at the step count (the number of calls to this
    transformation's ``update``), unless the factory annotates the argument as
    another kind of function (a mask, a skip rule); optax's stateful schedules
    (objects with ``init()``, ``update(state, **extra_args)`` and
    ``__call__(state, **extra_args)``) keep their state in
    ``hyperparams_states``. Everything else (ints such as step counts, bools,
    None, masks, dtypes, transformations) and every name in ``static_args`` is
    fixed when the transformation is built.

    Args:
      inner_factory: a function returning a transformation, e.g. ``gx.adam`` or
        ``gx.keras.adam``. It is called once here (so bad arguments fail now)
        and again inside each ``init`` and ``update``: twice in ``update``,
        once with the given numbers and once with the state's values, the two
        branches of a ``lax.cond`` (compiled both, one run per step); only the
        second where a given 0 leaves a member out (``gx.torch.SGD()``'s momentum).
      static_args: names of arguments never to inject.
      hyperparam_dtype: the dtype the values are stored in. None means
        float32, or float64 for float64 params, whatever lower precision the
        params have, so that nothing is rounded to bfloat16 or float16; a
        schedule's value is stored in its own dtype (at least float32).

    Returns:
      A function taking the factory's arguments and returning the transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.inject_hyperparams(gx.adam)(learning_rate=1e-3)
      >>> state = tx.init({"w": jnp.zeros(3)})
      >>> state.hyperparams["learning_rate"] = jnp.asarray(5e-4)  # next update uses 5e-4
    """
    static_args, signature = _check_arguments(inner_factory, static_args, hyperparam_dtype)
    factory_name = _factory_name(inner_factory)

    def build(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        kinds = {
            name: _kind(name, value, signature.parameters.get(name), static_args)
            for name, value in bound.arguments.items()
            if signature.parameters[name].kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                       inspect.Parameter.VAR_KEYWORD)
        }

        def of_kind(kind):
            return {n: bound.arguments[n] for n, k in kinds.items() if k == kind}

        numeric, scheduled, stateful = of_kind(_NUMERIC), of_kind(_SCHEDULED), of_kind(_STATEFUL)
        rules = HyperparamRules(
            factory_name, inner_factory, bound, tuple(numeric), {**scheduled, **stateful}
        )
        schedule_filters = {
            name: (extra_args_filter(schedule.__call__), extra_args_filter(schedule.update))
            for name, schedule in stateful.items()
        }

        def factory_with(values):
            call = inspect.BoundArguments(signature, dict(bound.arguments, **values))
            return inner_factory(*call.args, **call.kwargs)

        def initial_schedule_states():
            return {name: schedule.init() for name, schedule in stateful.items()}

        def schedule_values(count, schedule_states, extra_args):
            values = {name: numerics.schedule_value(
                schedule, count, f"inject_hyperparams({factory_name})", name)
                for name, schedule in scheduled.items()}
            for name, schedule in stateful.items():
                values[name] = schedule(schedule_states[name], **schedule_filters[name][0](extra_args))
            return values

        reference = _reference(inner_factory, bound, lambda: schedule_values(
            numerics.zero_count(), initial_schedule_states(), {}))
        inner_filter = extra_args_filter(reference.update)

        def stored(values, dtypes):
            return {name: jnp.asarray(value).astype(dtypes[name]) for name, value in values.items()}

        def init_fn(params):
            dtype = _storage_dtype(hyperparam_dtype, params)
            count = numerics.zero_count()
            schedule_states = initial_schedule_states()
            values = schedule_values(count, schedule_states, {})
            # A schedule's value keeps its own precision (at least float32): storing a
            # float32 schedule in float64 would only record its rounding.
            dtypes = {
                name: dtype if hyperparam_dtype is not None or name in numeric
                else numerics.compute_dtype(jnp.asarray(value).dtype)
                for name, value in {**values, **numeric}.items()
            }
            hyperparams = stored({**values, **numeric}, dtypes)
            # From the arrays, as update builds it (a member left out for a Python 0 stays).
            inner_state = factory_with(hyperparams).init(params)
            return InjectHyperparamsState(
                count, Hyperparams(rules, hyperparams), schedule_states, inner_state
            )

        def update_fn(updates, state, params=None, **extra_args):
            values = schedule_values(state.count, state.hyperparams_states, extra_args)
            # A value set as a Python number has no dtype yet: it gets init's default.
            dtypes = {
                name: value.dtype if hasattr(value, "dtype")
                else _storage_dtype(hyperparam_dtype, params)
                for name, value in state.hyperparams.items()
            }
            current = stored({name: state.hyperparams[name] for name in numeric}, dtypes)
            dynamic_extra, static_extra, extra_def = _split_static(inner_filter(extra_args))

            def run(numbers, operands):
                values, updates, inner_state, params, dynamic_extra = operands
                inner = factory_with({**values, **numbers})
                extra = _join_static(dynamic_extra, static_extra, extra_def)
                return inner.update(updates, inner_state, params, **extra)

            updates, inner_state = _run_injected(
                run, numeric, current,
                (values, updates, state.inner_state, params, dynamic_extra),
            )
            schedule_states = {
                name: schedule.update(
                    state.hyperparams_states[name], **schedule_filters[name][1](extra_args)
                )
                for name, schedule in stateful.items()
            }
            hyperparams = Hyperparams(rules, {**stored(values, dtypes), **current})
            return updates, InjectHyperparamsState(
                numerics.safe_increment(state.count), hyperparams, schedule_states, inner_state
            )

        arguments = {
            name: value for name, value in bound.arguments.items() if name in kinds
        }
        tx = describe(
            GradientTransformation(init_fn, update_fn),
            "inject_hyperparams",
            {
                "inner_factory": inner_factory,
                "static_args": static_args,
                "hyperparam_dtype": hyperparam_dtype,
                "arguments": arguments,
            },
        )
        tx.inner = reference
        tx.rebuild = (_rebuild, (inner_factory, static_args, hyperparam_dtype, arguments))
        options = "".join(
            f", {key}={format_value(value)}"
            for key, value in (("static_args", static_args), ("hyperparam_dtype", hyperparam_dtype))
            if value
        )
        call = ", ".join(f"{key}={format_value(value)}" for key, value in arguments.items())
        tx.call_repr = f"inject_hyperparams({factory_name}{options})({call})"
        return tx

    build.__name__ = build.__qualname__ = f"inject_hyperparams({factory_name})"
    return build
