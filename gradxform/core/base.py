"""The transformation type, its state types, and hyperparameters as data.

A gradient transformation is a pair of pure functions::

    init(params) -> state
    update(updates, state, params=None, **extra_args) -> (updates, state)

`GradientTransformation` is a ``NamedTuple(init, update)``, so every library
that reads ``.init`` and ``.update`` (Flax, Haiku and Equinox loops, optax's
combinators) accepts it. On top of that, a transformation built by a public
constructor knows its name and its arguments: ``repr(tx)`` shows them, and a
later config layer can serialise them.
"""

from __future__ import annotations

import functools
import inspect
from types import MappingProxyType
from typing import Any, Callable, NamedTuple, Protocol, Union

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import attribution, checks

Array = jax.Array
PyTree = Any
Params = PyTree
Updates = PyTree
OptState = PyTree
Schedule = Callable[[jax.typing.ArrayLike], jax.typing.ArrayLike]
ScalarOrSchedule = Union[float, jax.typing.ArrayLike, Schedule]


class TransformInitFn(Protocol):
    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    def __call__(
        self,
        updates: Updates,
        state: OptState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, OptState]: ...


class EmptyState(NamedTuple):
    """The state of a transformation that keeps none."""


def init_empty_state(params: Params) -> EmptyState:
    """Returns an `EmptyState`, whatever the params."""
    del params
    return EmptyState()


class _InitUpdate(NamedTuple):
    init: TransformInitFn
    update: TransformUpdateFn


class GradientTransformation(_InitUpdate):
    """A pure ``(init, update)`` pair that may also describe itself.

    It is a ``NamedTuple`` with the two fields ``init`` and ``update``; build a
    custom one exactly as in optax::

        tx = gx.GradientTransformation(init_fn, update_fn)

    Transformations returned by gradxform's public constructors also carry:

    * ``name``: the constructor's name, e.g. ``"scale_by_adam"``;
    * ``hyperparams``: the constructor's keyword arguments, defaults included;
    * ``children``: its positional arguments (the members of a ``chain``);
    * ``inner``: for constructors built from other constructors (the
      optimizers), the described transformation they return;
    * ``constructor``: the public function that built it (what a config
      round-trip calls again).

    Their ``repr`` is the call that rebuilds them, for example
    ``chain(clip_by_global_norm(max_norm=1.0), scale(step_size=-0.1))``.
    """

    # Not fields: a transformation without a description (built by hand, or by
    # `_replace`) falls back to these.
    name: str | None = None
    hyperparams: MappingProxyType = MappingProxyType({})
    children: tuple = ()
    inner: GradientTransformation | None = None
    constructor: Callable[..., GradientTransformation] | None = None
    # The call, when it is not ``name(*children, **hyperparams)`` (a two-stage call).
    call_repr: str | None = None
    # ``(function, args)`` that rebuilds it, when it is not ``constructor(*children, **hyperparams)``.
    rebuild: tuple | None = None
    # ``{"name": ...}``: the public function that returned it, when not its constructor.
    called_as: dict = MappingProxyType({})

    def __reduce__(self):
        """Pickles a described transformation as the call that builds it.

        Its ``init`` and ``update`` are closures, which ``pickle`` cannot store;
        the constructor and its arguments can (schedules are small objects;
        a lambda among the arguments still cannot be pickled).
        """
        if self.rebuild is not None:
            return self.rebuild
        if self.constructor is not None:
            return (_construct, (self.constructor, self.children, dict(self.hyperparams)))
        return super().__reduce__()

    def __repr__(self) -> str:
        if self.call_repr is not None:
            return self.call_repr
        if self.name is None:
            return f"GradientTransformation(init={self.init!r}, update={self.update!r})"
        parts = [format_value(child) for child in self.children]
        parts += [f"{key}={format_value(value)}" for key, value in self.hyperparams.items()]
        return f"{self.name}({', '.join(parts)})"


def _construct(constructor: Callable[..., GradientTransformation], children: tuple,
               hyperparams: dict) -> GradientTransformation:
    return constructor(*children, **hyperparams)


def format_value(value: Any) -> str:
    """Formats a hyperparameter the way it would be written in a call."""
    if isinstance(value, GradientTransformation):
        return repr(value)
    if _is_foreign_transformation(value):
        return _foreign_transformation_name(value)
    if isinstance(value, tuple):
        inner = ", ".join(format_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {format_value(v)}" for k, v in value.items()) + "}"
    if is_dtype_like(value):
        return repr(jnp.dtype(value).name)
    if inspect.isfunction(value) or inspect.ismethod(value) or inspect.isbuiltin(value):
        return f"<function {value.__qualname__}>"
    return repr(value)


def _is_foreign_transformation(value: Any) -> bool:
    """An ``(init, update)`` pair from another library (an optax transformation)."""
    return isinstance(value, tuple) and callable(getattr(value, "init", None)) and callable(
        getattr(value, "update", None)
    )


def _foreign_transformation_name(value: Any) -> str:
    """``<optax transformation clip_by_global_norm>``, from where its update was defined."""
    update = value.update
    library = (getattr(update, "__module__", None) or "foreign").split(".")[0]
    where = getattr(update, "__qualname__", type(update).__name__).split(".<locals>")[0]
    return f"<{library} transformation {where}>"


def is_dtype_like(value: Any) -> bool:
    """True for ``jnp.float32``, ``np.dtype('bfloat16')``, ``'float16'`` and the like."""
    if isinstance(value, np.dtype):
        return True
    if isinstance(value, type):
        try:
            np.dtype(value)
        except TypeError:
            return False
        return issubclass(value, np.generic) or hasattr(value, "dtype")
    return False


# Transformations that only pass gradients on (to members, to the selected
# leaves) or leave them to a user function: gradient dtypes are checked where
# arithmetic happens, so that integer leaves can be masked out or zeroed.
_ROUTES_GRADIENTS = frozenset({
    "chain", "named_chain", "masked", "partition", "partition_by_patterns", "freeze",
    "set_to_zero", "identity", "inject_hyperparams", "stateless", "stateless_with_tree_map",
})
_CHECKS_OWN_STATE = frozenset({"chain", "named_chain"})


def _checked_update(
    name: str, update: TransformUpdateFn, init: TransformInitFn, called_as: dict,
    check_sparse: bool = True,
) -> TransformUpdateFn:
    check_state = name not in _CHECKS_OWN_STATE
    check_dtypes = name not in _ROUTES_GRADIENTS

    def update_fn(updates, state, params=None, **extra_args):
        caller = called_as.get("name")
        container = caller is None and name in _CHECKS_OWN_STATE
        with attribution.call("update", caller or name, container=container):
            if check_state:
                checks.state_from_init(name, state)
            if check_dtypes:
                checks.gradient_dtypes(name, updates)
            if check_sparse:
                checks.row_sparse_gradients(name, updates)
            try:
                return update(updates, state, params, **extra_args)
            except AttributeError:
                # A field the state lacks: find out what init would have made, to say so.
                if check_state:
                    checks.state_from_init(name, state, _state_type(init, updates, params))
                raise

    update_fn.__wrapped__ = update
    return update_fn


def _state_type(init: TransformInitFn, updates: Any, params: Any) -> type | None:
    """The type of the state ``init`` makes for params shaped like these (None if unknown)."""
    try:
        return type(jax.eval_shape(init, updates if params is None else params))
    except Exception:  # init needs more than shapes: nothing more to say
        return None


def describe(
    tx: GradientTransformation,
    name: str,
    hyperparams: dict[str, Any],
    children: tuple = (),
    constructor: Callable[..., GradientTransformation] | None = None,
) -> GradientTransformation:
    """Returns ``tx`` carrying a description: its constructor's name and arguments.

    Its ``update`` first checks what it receives (`checks`): the state, unless
    the transformation checks its own (chains); the gradients' dtypes, unless it
    only routes them to other transformations, which check for themselves; and
    that a row-sparse leaf meets a rule for it, unless ``tx`` is itself
    described (an optimizer returning a chain, whose members check).
    """
    called_as: dict = {}
    check_sparse = tx.name is None
    described = GradientTransformation(
        tx.init, _checked_update(name, tx.update, tx.init, called_as, check_sparse))
    described.called_as = called_as
    described.constructor = constructor
    described.name = name
    described.hyperparams = MappingProxyType(dict(hyperparams))
    described.children = tuple(children)
    described.inner = tx if tx.name is not None else None
    return described


def returned_by(tx: GradientTransformation, name: str) -> GradientTransformation:
    """Marks ``tx`` as what the public function ``name`` returned, for its update's errors.

    For functions that return another constructor's transformation as it is
    (``gx.keras.adam`` returns a ``chain``): errors found while updating then
    name the function the user called.
    """
    attribution.PUBLIC_NAMES.add(name)
    tx.called_as["name"] = name
    return tx


def public_constructor(constructor: Callable[..., GradientTransformation]):
    """Decorates a constructor so that what it returns knows its name and arguments.

    The constructor's arguments are bound to its signature with defaults
    applied; ``*args`` become the children and the rest the hyperparameters.
    An unknown argument (``lr=``) raises a `TypeError` naming the constructor
    and suggesting the right name, and an error raised by a constructor it
    calls names this one (`attribution`).
    """
    signature = inspect.signature(constructor)
    name = constructor.__name__
    attribution.PUBLIC_NAMES.add(name)
    varargs = next(
        (p.name for p in signature.parameters.values() if p.kind is p.VAR_POSITIONAL),
        None,
    )

    @functools.wraps(constructor)
    def build(*args, **kwargs):
        bound = attribution.bind(name, signature, args, kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        children = arguments.pop(varargs, ()) if varargs else ()
        with attribution.call("build", name, signature.parameters):
            tx = constructor(*args, **kwargs)
        return describe(tx, name, arguments, children, build)

    return build
