"""Hyperparameters as state: `inject_hyperparams`.

The factory (``gx.adam``, ``gx.keras.adam``, any function returning a
transformation) is called again inside every ``update`` with the current
hyperparameter values, read from the state. Numbers can thus be changed between
steps without recompiling, and schedules are evaluated once per step, their
value kept in the state for logging.

Bit-for-bit equality with the plain optimizer: values are stored in float32,
never in the params' dtype (in bfloat16 ``b2=0.999`` is 1.0, optax#1414). And
while every number still has the value it was given, the update runs the
factory built with the given Python numbers, so it compiles to exactly the
plain optimizer's program: ``1 - b2`` is computed in double precision as for a
Python float, and XLA folds the same constants. A value changed in the state
selects the other branch of a ``lax.cond``, where it is a runtime float32 value.
optax injects runtime values always, which is why its results drift from the
plain optimizer's (optax#583, #1532).

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

from gradxform.core import numerics, validation
from gradxform.core.base import GradientTransformation, OptState, describe, format_value

_STATIC, _NUMERIC, _SCHEDULED = "static", "numeric", "scheduled"


class InjectHyperparamsState(NamedTuple):
    """The step count, the current hyperparameters and the inner state.

    ``hyperparams`` maps each injected name to a 0-d array: the value a
    constant was given (or set to), or the value a schedule took at the latest
    update (at ``count`` 0 right after ``init``).
    """

    count: jax.Array  # int32, shape (): the argument of the schedules
    hyperparams: dict
    inner_state: OptState


def _annotated_as_schedule(parameter: inspect.Parameter | None) -> bool:
    """A callable is a schedule where the factory says so, or says nothing."""
    if parameter is None or parameter.annotation is inspect.Parameter.empty:
        return True
    annotation = parameter.annotation
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return "Schedule" in text


def _kind(name: str, value: Any, parameter: inspect.Parameter | None, static_args) -> str:
    """Whether an argument is kept static, stored as a number, or evaluated as a schedule."""
    if name in static_args or isinstance(value, (bool, np.bool_)):
        return _STATIC
    if isinstance(value, (float, np.floating)):
        return _NUMERIC
    if isinstance(value, (jax.Array, np.ndarray)) and not isinstance(value, jax.core.Tracer):
        floating = jnp.issubdtype(value.dtype, jnp.floating)
        return _NUMERIC if floating and value.shape == () else _STATIC
    if callable(value) and not isinstance(value, tuple) and _annotated_as_schedule(parameter):
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
    ``apply_updates`` into the same program), and
    its state holds ``hyperparams['learning_rate']`` (the rate used by the
    latest update) and ``hyperparams['b1']``, ``['b2']``, ... Changing
    ``state.hyperparams['b2']`` (to a 0-d array) takes effect at the next update
    without recompiling.

    Which arguments are injected, after applying the factory's defaults: float
    numbers and float 0-d arrays are stored; callables are schedules, evaluated
    at the step count, when the factory annotates the argument as a schedule
    (``ScalarOrSchedule``) or does not annotate it; schedules see the number
    of calls to this transformation's ``update``. Everything else (ints such
    as step counts, bools, None, masks, dtypes, transformations) and every name
    in ``static_args`` is fixed when the transformation is built.

    Args:
      inner_factory: a function returning a transformation, e.g. ``gx.adam`` or
        ``gx.keras.adam``. It is called once here (so bad arguments fail now)
        and again inside each ``init`` and ``update``: twice in ``update``,
        once with the given numbers and once with the state's values, the two
        branches of a ``lax.cond`` (compiled both, one run per step).
      static_args: names of arguments never to inject.
      hyperparam_dtype: the dtype the values are stored in. None means
        float32, whatever the params' dtype, so that nothing is rounded to
        bfloat16 or float16.

    Returns:
      A function taking the factory's arguments and returning the transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.inject_hyperparams(gx.adam)(learning_rate=1e-3)
      >>> state = tx.init({"w": jnp.zeros(3)})
      >>> state.hyperparams["learning_rate"] = jnp.asarray(5e-4)  # next update uses 5e-4
    """
    static_args, signature = _check_arguments(inner_factory, static_args, hyperparam_dtype)
    dtype = np.dtype(jnp.float32 if hyperparam_dtype is None else hyperparam_dtype)

    def build(*args: Any, **kwargs: Any) -> GradientTransformation:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        reference = inner_factory(*bound.args, **bound.kwargs)  # validates the arguments
        kinds = {
            name: _kind(name, value, signature.parameters.get(name), static_args)
            for name, value in bound.arguments.items()
            if signature.parameters[name].kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                       inspect.Parameter.VAR_KEYWORD)
        }
        numeric = {n: bound.arguments[n] for n, kind in kinds.items() if kind == _NUMERIC}
        scheduled = {n: bound.arguments[n] for n, kind in kinds.items() if kind == _SCHEDULED}
        given = {n: np.asarray(v, dtype) for n, v in numeric.items()}

        def factory_with(values):
            call = inspect.BoundArguments(signature, dict(bound.arguments, **values))
            return inner_factory(*call.args, **call.kwargs)

        def evaluate_schedules(count):
            return {name: schedule(count) for name, schedule in scheduled.items()}

        def stored(values):
            return {name: jnp.asarray(value).astype(dtype) for name, value in values.items()}

        def init_fn(params):
            count = numerics.zero_count()
            values = evaluate_schedules(count)
            inner_state = factory_with(values).init(params)
            return InjectHyperparamsState(count, stored({**values, **given}), inner_state)

        def update_fn(updates, state, params=None, **extra_args):
            values = evaluate_schedules(state.count)
            current = stored({name: state.hyperparams[name] for name in numeric})

            def run(numbers):
                inner = factory_with({**values, **numbers})
                return inner.update(updates, state.inner_state, params, **extra_args)

            if numeric:
                unchanged = jnp.all(jnp.stack([current[n] == given[n] for n in numeric]))
                updates, inner_state = jax.lax.cond(
                    unchanged, lambda: run(numeric), lambda: run(current)
                )
            else:
                updates, inner_state = run({})
            count = numerics.safe_increment(state.count)
            return updates, InjectHyperparamsState(count, {**stored(values), **current}, inner_state)

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
        options = "".join(
            f", {key}={format_value(value)}"
            for key, value in (("static_args", static_args), ("hyperparam_dtype", hyperparam_dtype))
            if value
        )
        call = ", ".join(f"{key}={format_value(value)}" for key, value in arguments.items())
        tx.call_repr = f"inject_hyperparams({_factory_name(inner_factory)}{options})({call})"
        return tx

    build.__name__ = build.__qualname__ = f"inject_hyperparams({_factory_name(inner_factory)})"
    return build
