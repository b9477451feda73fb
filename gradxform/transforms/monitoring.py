"""Recording what the updates look like, for logging: `record_global_norm`, `snapshot`,
`monitor`."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradxform.core import sparse, tree, validation
from gradxform.core.base import (
    EmptyState, GradientTransformation, Updates, public_constructor,
)
from gradxform.core.combine import extra_args_filter


class RecordGlobalNormState(NamedTuple):
    """The global L2 norm of the updates this transformation last saw (float32)."""

    global_norm: jax.Array  # float32, shape ()


@sparse.row_sparse_rule("exact")
@public_constructor
def record_global_norm() -> GradientTransformation:
    r"""Passes the updates through unchanged and keeps their global norm in the state.

    .. math::
        u = g, \qquad S.\mathrm{global\_norm} = \sqrt{\textstyle\sum_i \lVert g_i \rVert_2^2}

    Put it before ``clip_by_global_norm`` to log the norm of the raw gradients
    (optax#326), and read it with ``gx.tree_get(state, "global_norm")``. The
    norm is accumulated in at least float32 and stored in float32; a
    non-finite gradient gives a non-finite norm. It is 0 after ``init``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.chain(gx.record_global_norm(), gx.clip_by_global_norm(1.0), gx.sgd(0.1))
      >>> params = {"w": jnp.zeros(2)}
      >>> _, state = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> float(gx.tree_get(state, "global_norm"))
      5.0
    """

    def init_fn(params):
        del params
        return RecordGlobalNormState(global_norm=jnp.zeros([], jnp.float32))

    def update_fn(updates, state, params=None, **extra_args):
        del state, params, extra_args
        norm = tree.tree_global_norm(updates).astype(jnp.float32)
        return updates, RecordGlobalNormState(global_norm=norm)

    return GradientTransformation(init_fn, update_fn)


def _strong(measurement: Any) -> Any:
    """Every leaf as a strongly typed array: a Python number in a state would make jit retrace."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), measurement)


def _on_params(measure: Any, params: Any) -> Any:
    """``measure(params)``; for abstract params (``jax.ShapeDtypeStruct`` leaves, as an
    Orbax restore target is built), zeros of the measurement's shape and dtype."""
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(params)):
        abstract = jax.eval_shape(measure, params)
        return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract)
    return measure(params)


def _keep_layout(owner: str, name: str, measurement: Any, previous: Any) -> Any:
    """``measurement`` in the structure, shapes and dtypes of ``previous`` (the state's), or raises.

    Cast to the state's dtypes, so that the state's layout never changes; a
    different structure or shape raises, naming the measurement.
    """
    measurement = _strong(measurement)
    shapes = [jnp.shape(x) for x in jax.tree.leaves(measurement)]
    expected = [jnp.shape(x) for x in jax.tree.leaves(previous)]
    if jax.tree.structure(measurement) != jax.tree.structure(previous) or shapes != expected:
        raise ValueError(
            f"{owner}: the measurement {name!r} of the updates must keep the structure and shapes "
            f"it has in the state ({jax.tree.structure(previous)}, shapes {expected}), got "
            f"{jax.tree.structure(measurement)}, shapes {shapes}"
        )
    return jax.tree.map(lambda x, p: x.astype(p.dtype), measurement, previous)


class SnapshotState(NamedTuple):
    """optax's ``SnapshotState``: ``{measure_name: measurement}``."""

    measurement: dict


@public_constructor
def snapshot(measure_name: str, measure: Callable[[Updates], Any]) -> GradientTransformation:
    r"""Passes the updates through and keeps ``measure(updates)`` in the state, by name.

    .. math::
        u = g, \qquad S.\mathrm{measurement}[\mathit{name}] = \mathrm{measure}(g)

    optax's ``snapshot``. Where it sits in a chain decides what it sees (the
    gradients first, the clipped updates after ``clip_by_global_norm``). Read
    the value with ``gx.tree_get(state, measure_name)``. After ``init`` it is
    ``measure(params)``, as in optax; each update's measurement is stored in
    the dtypes of that one, so that the state's layout never changes, and a
    measurement of another structure or shape raises. On a ``gx.flat_tree``,
    ``measure`` sees the flat buffers.

    Args:
      measure_name: the key of the measurement in the state.
      measure: a function ``updates -> array or tree of arrays``.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.chain(gx.snapshot("raw_norm", gx.tree_global_norm), gx.clip_by_global_norm(1.0))
      >>> params = {"w": jnp.zeros(2)}
      >>> _, state = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> float(gx.tree_get(state, "raw_norm"))
      5.0
    """
    owner = "snapshot"
    validation.string(owner, "measure_name", measure_name)
    if not callable(measure):
        raise TypeError(f"{owner}: measure must be callable, got {measure!r}")

    def init_fn(params):
        return SnapshotState(measurement={measure_name: _strong(_on_params(measure, params))})

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        previous = state.measurement[measure_name]
        value = _keep_layout(owner, measure_name, measure(updates), previous)
        return updates, SnapshotState(measurement={measure_name: value})

    return GradientTransformation(init_fn, update_fn)


class MonitorState(NamedTuple):
    """optax's ``MonitorState``: the latest measurements by name, and the measures' states."""

    measurements: dict
    measure_states: tuple


def _check_measures(owner: str, measures: Any) -> None:
    if not isinstance(measures, dict):
        raise TypeError(
            f"{owner}: measures must be a dict of names to functions or transformations, got "
            f"{measures!r}"
        )
    for name, measure in measures.items():
        if not isinstance(name, str):
            raise TypeError(f"{owner}: measures must be keyed by str names, got {name!r} in "
                            f"measures={measures!r}")
        if not callable(measure):
            with validation.inside("measures", measures):
                validation.transformation(owner, f"measures[{name!r}]", measure)


@public_constructor
def monitor(measures: dict[str, Any]) -> GradientTransformation:
    r"""Passes the updates through and keeps several measurements of them, stateful ones too.

    .. math::
        u = g, \qquad S.\mathrm{measurements}[n] = \begin{cases} m_n(g) & m_n
        \text{ a function} \\ \mathrm{first}(m_n.\mathrm{update}(g, S_n, p)) &
        m_n \text{ a transformation} \end{cases}

    optax's ``monitor``, with the same state. A measure that is a
    transformation keeps its state in ``measure_states`` (one entry per
    measure, in the dict's order; ``EmptyState()`` for a function), and its
    measurement is the first output of its ``update``, which gets the
    params and the extra keyword arguments it accepts; its ``init`` gets the
    params. Read a measurement with ``gx.tree_get(state, name)``.

    One difference from optax: the measurements are zeros after ``init``
    (optax's dict is empty there, and fills at the first update, which
    changes the state's structure: a jit retrace, a checkpoint target that no
    longer fits). To shape them, ``init`` measures the params once (under
    ``jit``, only the shapes are kept), without extra keyword arguments: a
    measure's extra arguments need defaults. Each update's measurement is
    stored in the dtypes of that first one, and one of another structure or
    shape raises.

    Args:
      measures: a dict ``{name: measure}``; a measure is a function
        ``updates -> array or tree of arrays`` or a transformation.

    Example:
      >>> import jax.numpy as jnp, gradxform as gx
      >>> tx = gx.chain(
      ...     gx.monitor({"norm": gx.tree_global_norm, "grad_ema": gx.ema(0.5, debias=False)}),
      ...     gx.sgd(0.1))
      >>> params = {"w": jnp.zeros(2)}
      >>> _, state = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params), params)
      >>> float(gx.tree_get(state, "norm")), gx.tree_get(state, "grad_ema")["w"]
      (5.0, Array([1.5, 2. ], dtype=float32))
    """
    owner = "monitor"
    _check_measures(owner, measures)
    names = tuple(measures)
    stateful = {name: not callable(measure) for name, measure in measures.items()}
    accepted = {
        name: extra_args_filter(measure.update) for name, measure in measures.items()
        if stateful[name]
    }

    def measure_once(name, measure_state, updates, params, extra_args):
        measure = measures[name]
        if not stateful[name]:
            return measure(updates), measure_state
        return measure.update(updates, measure_state, params, **accepted[name](extra_args))[:2]

    def init_fn(params):
        measure_states = tuple(
            measures[name].init(params) if stateful[name] else EmptyState() for name in names
        )
        # Zeros like a measurement of the params: sharded as it would be (under jit, the
        # measurement itself is dead code).
        measurements = {}
        for name, measure_state in zip(names, measure_states):
            try:
                # Measured as a gradient of the params would be: integer leaves have none.
                trainable = jax.tree.map(lambda x: x if tree.is_trainable(x) else None, params)
                value = _on_params(
                    lambda p, n=name, s=measure_state: measure_once(n, s, p, p, {})[0], trainable)
            except (TypeError, ValueError) as error:
                raise type(error)(
                    f"{owner}: init could not measure {name!r} on the params: {error}. init "
                    "measures the params once, without extra keyword arguments, to fix the "
                    "measurement's shape in the state; give a measure's extra arguments defaults"
                ) from error
            measurements[name] = jax.tree.map(jnp.zeros_like, _strong(value))
        return MonitorState(measurements=measurements, measure_states=measure_states)

    def update_fn(updates, state, params=None, **extra_args):
        measurements, measure_states = {}, []
        for name, measure_state in zip(names, state.measure_states):
            value, measure_state = measure_once(name, measure_state, updates, params, extra_args)
            measurements[name] = _keep_layout(owner, name, value, state.measurements[name])
            measure_states.append(measure_state)
        return updates, MonitorState(measurements, tuple(measure_states))

    return GradientTransformation(init_fn, update_fn)
