r"""Transformations as JSON: `to_config` and `from_config`.

``to_config`` writes the tree of public constructor calls that built a
transformation as JSON data; ``from_config`` calls them again. Version 1::

    {"format": "gradxform", "version": 1, "transformation": NODE}

Inside, plain JSON values (``null``, bools, ints, finite floats, strings,
lists, objects with string keys other than ``"type"``) stand for themselves;
anything else is an object tagged by ``"type"``:

* ``{"type": "transformation", "name": "chain", "args": [...], "kwargs": {...}}``;
* ``{"type": "schedule", "name": "schedules.linear_schedule", "kwargs": {...}}``;
* ``{"type": "record", "name": "MuonDimensionNumbers", "kwargs": {...}}``, a public
  NamedTuple argument;
* ``{"type": "function", "name": "keras.adam"}``, ``{"type": "partial",
  "function": "skip_large_updates", "args": [...], "kwargs": {...}}``;
* ``{"type": "tuple", "items": [...]}``, ``{"type": "dict", "items": [[key, value], ...]}``;
* ``{"type": "dtype", "name": "bfloat16", "form": "jnp" | "np" | "np.dtype"}``;
* ``{"type": "float", "value": "nan" | "inf" | "-inf"}``;
* ``{"type": "array", "kind": "jax" | "numpy" | "numpy-scalar", "dtype": "float32",
  "shape": [...], "data": nested values}``, plus ``"weak_type": true`` when so.

Qualified names come from the ``__all__`` of ``gradxform`` (no prefix),
``gradxform.schedules`` (``schedules.``), ``gradxform.keras`` (``keras.``) and
``gradxform.torch`` (``torch.``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core.base import GradientTransformation, format_value, is_dtype_like

FORMAT = "gradxform"
VERSION = 1
_INJECT = "inject_hyperparams"
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_REGISTRY: dict[str, Any] = {}


def _registry() -> dict[str, Any]:
    """Qualified name -> public callable, from the namespaces' ``__all__``; built once."""
    if not _REGISTRY:
        import gradxform  # here, not at the top: gradxform imports this module

        for prefix, namespace in (("", gradxform), ("schedules.", gradxform.schedules),
                                  ("keras.", gradxform.keras), ("torch.", gradxform.torch)):
            _REGISTRY.update((prefix + name, getattr(namespace, name)) for name in namespace.__all__
                             if callable(getattr(namespace, name)))
    return _REGISTRY


def _public_name(value: Any) -> str | None:
    """The first qualified name under which ``value`` itself is public, or None."""
    return next((name for name, public in _registry().items() if public is value), None)


def _cannot(value: Any, path: str, why: str = "") -> TypeError:
    return TypeError(
        f"to_config: cannot serialize {format_value(value)} at {path or 'the top level'}{why}; "
        "only public gradxform constructors, schedules and functions, and JSON-like values, "
        "can be serialized"
    )


def _inside(path: str, owner: str, key: Any) -> str:
    """The path to argument ``key`` (an index or a name) of ``owner`` found at ``path``."""
    step = f"{owner}[{key}]" if isinstance(key, int) else f"{owner}.{key}"
    return f"{path} > {step}" if path else step


def _float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return {"type": "float", "value": "nan" if math.isnan(value) else repr(value)}


def _array(value: Any, kind: str, path: str) -> dict:
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        raise _cannot(value, path, " (a typed PRNG key: pass jax.random.key_data(key) or an int seed)")
    array = np.asarray(value)
    dtype = array.dtype
    if not (dtype == np.bool_ or jnp.issubdtype(dtype, jnp.integer)
            or jnp.issubdtype(dtype, jnp.floating)):
        raise _cannot(value, path, f" (arrays of {dtype.name} are not supported)")
    floating = jnp.issubdtype(dtype, jnp.floating)
    data = jax.tree.map(_float, array.astype(np.float64).tolist()) if floating else array.tolist()
    node = {"type": "array", "kind": kind, "dtype": dtype.name, "shape": list(array.shape),
            "data": data}
    if kind == "jax" and getattr(value, "weak_type", False):
        node["weak_type"] = True
    return node


def _arguments(kwargs: Any, owner: str, path: str) -> dict:
    return {key: _encode(value, _inside(path, owner, key)) for key, value in kwargs.items()}


def _transformation(tx: GradientTransformation, path: str) -> dict:
    if tx.name is None:
        raise _cannot(tx, path, " (a transformation built by hand has no constructor to call)")
    if tx.name == _INJECT:
        name = _INJECT
    else:
        name = _public_name(tx.constructor) if tx.constructor is not None else None
        if name is None:
            raise _cannot(tx, path, f" ({tx.name} was not built by a public gradxform constructor)")
    args = [_encode(child, _inside(path, name, i)) for i, child in enumerate(tx.children)]
    kwargs = _arguments(tx.hyperparams, name, path)
    return {"type": "transformation", "name": name, "args": args, "kwargs": kwargs}


def _encode(value: Any, path: str) -> Any:
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float:
        return _float(value)
    if isinstance(value, np.generic):
        return _array(value, "numpy-scalar", path)
    if isinstance(value, GradientTransformation):
        return _transformation(value, path)
    if isinstance(value, tuple) and callable(getattr(value, "init", None)):
        raise _cannot(value, path, " (a transformation from another library)")
    if type(value) in (list, tuple):
        items = [_encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return items if type(value) is list else {"type": "tuple", "items": items}
    if type(value) is dict:
        if all(type(key) is str for key in value) and "type" not in value:
            return {key: _encode(item, f"{path}[{key!r}]") for key, item in value.items()}
        return {"type": "dict", "items": [
            [_encode(key, f"{path}[{key!r}]"), _encode(item, f"{path}[{key!r}]")]
            for key, item in value.items()]}
    if is_dtype_like(value):
        name = jnp.dtype(value).name
        form = "np.dtype" if isinstance(value, np.dtype) else (
            "jnp" if getattr(jnp, name, None) is value else "np")
        return {"type": "dtype", "name": name, "form": form}
    if isinstance(value, (np.ndarray, jax.Array)):
        return _array(value, "numpy" if isinstance(value, np.ndarray) else "jax", path)
    schedule = _public_name(type(value))
    if schedule is not None and isinstance(value, tuple) and hasattr(value, "_fields"):
        return {"type": "record", "name": schedule,
                "kwargs": _arguments(value._asdict(), schedule, path)}
    if schedule is not None and dataclasses.is_dataclass(value):
        if hasattr(value, "arguments"):
            kwargs = value.arguments()
        else:
            kwargs = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
        return {"type": "schedule", "name": schedule, "kwargs": _arguments(kwargs, schedule, path)}
    name = _public_name(value)
    if name is not None:
        return {"type": "function", "name": name}
    if isinstance(value, functools.partial) and _public_name(value.func) is not None:
        name = _public_name(value.func)
        owner = f"partial({name})"
        return {"type": "partial", "function": name,
                "args": [_encode(a, _inside(path, owner, i)) for i, a in enumerate(value.args)],
                "kwargs": _arguments(value.keywords, owner, path)}
    if callable(value):
        raise _cannot(value, path, " (a callable that is not public gradxform API)")
    raise _cannot(value, path)


def to_config(tx: GradientTransformation) -> dict:
    r"""Describes a transformation as JSON data that `from_config` turns back into it.

    .. math::
        \mathrm{from\_config}(\mathrm{to\_config}(T)) = T

    The result, plain data for ``json.dumps``, is the tree of public
    constructor calls that built ``tx`` (the module docstring gives the
    encoding). What `from_config` rebuilds has the same ``repr`` and gives
    bit-identical updates and states.

    Args:
      tx: a transformation built by gradxform's public constructors (``gx``,
        ``gx.keras``, ``gx.inject_hyperparams``), with arguments that are JSON
        values, public schedules, dtypes, arrays or public functions. Anything
        else (a lambda, a transformation built by hand, an optax one) raises a
        `TypeError` that shows the value and where it is, e.g.
        ``chain[1] > masked.inner > scale_by_schedule.step_size_fn``.

    Example:
      >>> import json
      >>> import gradxform as gx
      >>> tx = gx.chain(gx.clip_by_global_norm(1.0), gx.adam(1e-3))
      >>> config = gx.to_config(tx)
      >>> config["transformation"]["args"][0]["kwargs"]
      {'max_norm': 1.0}
      >>> repr(gx.from_config(json.loads(json.dumps(config)))) == repr(tx)
      True
    """
    if not isinstance(tx, GradientTransformation):
        raise TypeError(
            f"to_config: argument tx: expected a gradxform transformation, got {format_value(tx)}"
        )
    return {"format": FORMAT, "version": VERSION, "transformation": _encode(tx, "")}


def _bad(path: str, message: str) -> ValueError:
    return ValueError(f"from_config: {message} at {path}")


def _field(node: dict, key: str, kind: type | tuple, path: str) -> Any:
    if key not in node:
        raise _bad(path, f"a {node['type']!r} node needs a {key!r} field")
    if not isinstance(node[key], kind):
        raise _bad(f"{path}.{key}", f"{key!r} has the wrong type: {node[key]!r}")
    return node[key]


def _lookup(node: dict, key: str, path: str) -> Any:
    name, by_name = _field(node, key, str, path), _registry()
    if name not in by_name:
        raise _bad(f"{path}.{key}", f"unknown name {name!r} (not in the __all__ of gradxform, "
                                    "gradxform.schedules or gradxform.keras)")
    return by_name[name]


def _call(node: dict, path: str, function: Any, with_args: bool = True) -> Any:
    """``function(*args, **kwargs)`` with the node's decoded arguments."""
    args = _field(node, "args", list, path) if with_args else []
    args = [_decode(a, f"{path}.args[{i}]") for i, a in enumerate(args)]
    kwargs = _field(node, "kwargs", dict, path)
    kwargs = {key: _decode(value, f"{path}.kwargs.{key}") for key, value in kwargs.items()}
    try:
        if node.get("name") == _INJECT:
            factory = function(kwargs["inner_factory"], static_args=kwargs["static_args"],
                               hyperparam_dtype=kwargs["hyperparam_dtype"])
            return factory(**kwargs["arguments"])
        return function(*args, **kwargs)
    except (KeyError, TypeError, ValueError) as error:
        name = node.get("name", node.get("function"))
        raise _bad(path, f"{name} could not be rebuilt: {error!r}") from error


def _dtype_named(name: str, path: str) -> np.dtype:
    try:
        return jnp.dtype(name)
    except TypeError:
        raise _bad(path, f"unknown dtype {name!r}") from None


def _decode_array(node: dict, path: str) -> Any:
    kind = _field(node, "kind", str, path)
    dtype = _dtype_named(_field(node, "dtype", str, path), f"{path}.dtype")
    data = jax.tree.map(lambda x: _decode(x, f"{path}.data"), _field(node, "data", object, path),
                        is_leaf=lambda x: isinstance(x, dict))
    try:
        array = np.array(data, dtype=dtype).reshape(_field(node, "shape", list, path))
    except (TypeError, ValueError) as error:
        raise _bad(f"{path}.data", f"bad {dtype.name} array data: {error}") from None
    if kind in ("numpy", "numpy-scalar"):
        return array if kind == "numpy" else array[()]
    if kind != "jax":
        raise _bad(f"{path}.kind", f"unknown array kind {kind!r}")
    if not node.get("weak_type"):
        return jnp.asarray(array)
    # Arrays made from Python scalars are weakly typed; a shape-() one is such a scalar.
    weak = jnp.stack([jnp.asarray(x) for x in array.ravel().tolist()]
                     or [jnp.asarray(array.dtype.type(0).item())])
    if weak.dtype != dtype:
        raise _bad(path, f"cannot make a weakly typed {dtype.name} array")
    return weak[: array.size].reshape(array.shape)


def _decode_tagged(node: dict, tag: Any, path: str) -> Any:
    if tag == "transformation":
        tx = _call(node, path, _lookup(node, "name", path))
        if not isinstance(tx, GradientTransformation):
            raise _bad(f"{path}.name", f"{node['name']!r} is not a transformation constructor")
        return tx
    if tag in ("schedule", "record"):
        return _call(node, path, _lookup(node, "name", path), with_args=False)
    if tag == "function":
        return _lookup(node, "name", path)
    if tag == "partial":
        function = _lookup(node, "function", path)
        return _call(node, path, functools.partial(functools.partial, function))
    if tag in ("tuple", "dict"):
        items = [_decode(item, f"{path}.items[{i}]")
                 for i, item in enumerate(_field(node, "items", list, path))]
        if tag == "dict" and not all(isinstance(item, list) and len(item) == 2 for item in items):
            raise _bad(f"{path}.items", "a 'dict' node's items must be [key, value] pairs")
        return tuple(items) if tag == "tuple" else {key: value for key, value in items}
    if tag == "dtype":
        dtype = _dtype_named(_field(node, "name", str, path), f"{path}.name")
        forms = {"jnp": getattr(jnp, dtype.name, None), "np": dtype.type, "np.dtype": dtype}
        if forms.get(_field(node, "form", str, path)) is None:
            raise _bad(f"{path}.form", f"unknown dtype form {node['form']!r} for {dtype.name}")
        return forms[node["form"]]
    if tag == "float" and _field(node, "value", str, path) in _NON_FINITE:
        return _NON_FINITE[node["value"]]
    if tag == "float":
        raise _bad(f"{path}.value", f"unknown non-finite float {node['value']!r}")
    if tag == "array":
        return _decode_array(node, path)
    raise _bad(f"{path}.type", f"unknown type tag {tag!r}")


def _decode(node: Any, path: str) -> Any:
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(item, f"{path}[{i}]") for i, item in enumerate(node)]
    if not isinstance(node, dict):
        raise _bad(path, f"unexpected value {node!r}")
    if "type" not in node:
        return {key: _decode(value, f"{path}.{key}") for key, value in node.items()}
    return _decode_tagged(node, node["type"], path)


def from_config(config: dict) -> GradientTransformation:
    r"""Rebuilds the transformation that `to_config` described, by calling its constructors.

    .. math::
        \mathrm{from\_config}(\mathrm{to\_config}(T)) = T

    Args:
      config: the dict `to_config` returned, or the same read back from JSON.
        A wrong ``format`` or ``version``, an unknown constructor name or type
        tag, or a malformed node raises a `ValueError` naming it and its place
        (e.g. ``transformation.args[1].name``).

    Example:
      >>> import gradxform as gx
      >>> gx.from_config({"format": "gradxform", "version": 1, "transformation": {
      ...     "type": "transformation", "name": "sgd", "args": [],
      ...     "kwargs": {"learning_rate": 0.1, "momentum": 0.9}}})
      sgd(learning_rate=0.1, momentum=0.9, nesterov=False, accumulator_dtype=None)
    """
    if not isinstance(config, dict):
        raise ValueError(f"from_config: config: expected a dict, got {config!r}")
    if config.get("format") != FORMAT:
        raise ValueError(
            f"from_config: config's format must be {FORMAT!r}, got {config.get('format')!r}"
        )
    if type(config.get("version")) is not int or config["version"] != VERSION:
        raise ValueError(f"from_config: version must be {VERSION}, got {config.get('version')!r}")
    node = config.get("transformation")
    if not (isinstance(node, dict) and node.get("type") == "transformation"):
        raise ValueError(f"from_config: 'transformation' must be a transformation, got {node!r}")
    return _decode(node, "transformation")
