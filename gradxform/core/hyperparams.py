"""The ``hyperparams`` dict of an injected optimizer's state, which checks what is set into it.

`inject_hyperparams` keeps the current hyperparameters in
``state.hyperparams``, a dict that users change between steps
(``state.hyperparams["learning_rate"] = 5e-4``, or ``gx.tree_set``). A value set
there is checked as the optimizer's constructor would check it (``b2=1.0`` and
a NaN or negative learning rate raise), and setting a value that a schedule
recomputes at every update raises instead of being silently overwritten.

The rules travel with the dict as static pytree data, so a state rebuilt by
``jax.tree.map``, ``jit`` or a checkpoint restore (with a target) still
checks. Two rule sets are equal when they come from the same factory with the
same injected names, so states of two identically built optimizers have the
same tree structure.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core.base import format_value


class HyperparamRules:
    """What may be set in a `Hyperparams` dict, and how a new value is checked.

    Args:
      factory_name: the factory as the user wrote it (``"adam"``).
      factory: the optimizer factory, called with a new value to check it.
      arguments: the factory's bound arguments, the values the others keep.
      numeric: the names stored as numbers, which may be set.
      scheduled: name -> schedule, for the names recomputed at every update.
    """

    def __init__(
        self,
        factory_name: str,
        factory: Callable[..., Any],
        arguments: inspect.BoundArguments,
        numeric: tuple[str, ...],
        scheduled: dict[str, Any],
    ):
        self.factory_name = factory_name
        self._factory = factory
        self._arguments = arguments
        self.numeric = tuple(sorted(numeric))
        self.scheduled = dict(scheduled)
        self._key = (factory, self.numeric, tuple(sorted(scheduled)))

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, HyperparamRules) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"HyperparamRules({self.factory_name}, numeric={list(self.numeric)})"

    def check(self, owner: str, name: str, value: Any, dtype: Any) -> None:
        """Raises unless ``value`` (stored in ``dtype``) is a valid new value for ``name``."""
        where = f"inject_hyperparams({self.factory_name})"
        if name in self.scheduled:
            raise ValueError(
                f"{owner}: {name} is computed by the schedule "
                f"{format_value(self.scheduled[name])} at every update of {where}, so a value "
                f"set for it would be overwritten at the next update, got {name}={value!r}. "
                f"To change it, rebuild the optimizer with {name}=<a number or another schedule>."
            )
        if name not in self.numeric:
            return
        if isinstance(value, jax.core.Tracer):
            return
        array = np.asarray(value)
        if array.shape != ():
            raise ValueError(
                f"{owner}: {name} must have shape () like the value it replaces, got shape "
                f"{array.shape}: {value!r}"
            )
        if not jnp.issubdtype(array.dtype, jnp.number) or jnp.issubdtype(array.dtype, jnp.complexfloating):
            raise TypeError(
                f"{owner}: {name} of {where} must be a real number (a float or a 0-d array), "
                f"got {value!r}"
            )
        number = float(np.asarray(array, dtype))  # the value the update will see
        call = inspect.BoundArguments(
            self._arguments.signature, dict(self._arguments.arguments, **{name: number})
        )
        try:
            self._factory(*call.args, **call.kwargs)
        except (TypeError, ValueError) as error:
            same = np.array_equal(number, float(array), equal_nan=True)
            stored = "" if same else f" (stored as {number!r} in {np.dtype(dtype).name})"
            raise type(error)(
                f"{owner}: {name}={value!r}{stored} is not a valid value for {where}: {error}"
            ) from None


class Hyperparams(dict):
    """A dict of injected hyperparameters that checks each value set into it.

    It is a ``dict`` (``state.hyperparams["b2"]``, ``.items()``, ...) and a
    pytree whose children are its values, keyed like a dict. Setting an item
    checks the value with the optimizer's own argument checks (see
    `HyperparamRules`); values that are jax tracers are not checked.
    """

    def __init__(self, rules: HyperparamRules, values: Any = ()):
        super().__init__(values)
        self.rules = rules

    def __setitem__(self, name: str, value: Any) -> None:
        self.check_set("state.hyperparams", name, value)
        super().__setitem__(name, value)

    def check_set(self, owner: str, name: Any, value: Any) -> None:
        """Raises unless ``value`` may be set for ``name`` (called by ``gx.tree_set`` too)."""
        old = self.get(name)
        dtype = getattr(old, "dtype", np.float32)
        self.rules.check(owner, name, value, dtype)

    def __reduce__(self):
        return (Hyperparams, (self.rules, dict(self)))


def _flatten_with_keys(hyperparams: Hyperparams):
    names = sorted(hyperparams)
    children = [(jax.tree_util.DictKey(name), dict.__getitem__(hyperparams, name)) for name in names]
    return children, (tuple(names), hyperparams.rules)


def _flatten(hyperparams: Hyperparams):
    names = sorted(hyperparams)
    return [dict.__getitem__(hyperparams, name) for name in names], (tuple(names), hyperparams.rules)


def _unflatten(aux, children) -> Hyperparams:
    names, rules = aux
    # Built without checks: unflattening carries tracers and placeholders, not user values.
    return Hyperparams(rules, zip(names, children))


jax.tree_util.register_pytree_with_keys(
    Hyperparams, _flatten_with_keys, _unflatten, flatten_func=_flatten
)
