"""Shardings for optimizer state: like the params, or ZeRO-1 style over a data axis.

JAX shards arrays itself (``jax.sharding``); gradxform only has to keep the
optimizer state where it belongs. Eagerly, ``tx.init(params)`` already returns
every per-parameter leaf with its parameter's sharding, and so does
``jax.jit(tx.init)`` on a mesh with explicit axes. On a mesh with automatic
axes, ``jit`` places freshly created zeros itself: whole on every device inside
``jax.set_mesh``, on one device outside it. `state_shardings` gives the
``out_shardings`` that keep them sharded like the params,
and, with ``zero_axis``, the shardings that spread the state over a
data-parallel axis while the params stay replicated.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec, SingleDeviceSharding

from gradxform.core import validation
from gradxform.core.base import GradientTransformation


def _leaf_sharding(path: Any, leaf: Any) -> jax.sharding.Sharding:
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        raise TypeError(
            "state_shardings: params leaf at "
            f"{jax.tree_util.keystr(path) or '<root>'} has no sharding ({leaf!r}); pass "
            "jax.Arrays, or jax.ShapeDtypeStruct(shape, dtype, sharding=...)"
        )
    return sharding


def _common_mesh(shardings: list) -> Any:
    """The one mesh (or device) every params leaf lives on."""
    if all(isinstance(s, SingleDeviceSharding) for s in shardings):
        devices = {next(iter(s.device_set)) for s in shardings}
        if len(devices) == 1:
            return devices.pop()
        raise ValueError(
            f"state_shardings: params live on {len(devices)} different devices "
            f"({sorted(map(str, devices))}); put every leaf on one device or one mesh"
        )
    if all(isinstance(s, NamedSharding) for s in shardings):
        meshes = {s.mesh for s in shardings}
        if len(meshes) == 1:
            return meshes.pop()
        raise ValueError(
            f"state_shardings: params live on {len(meshes)} different meshes "
            f"({sorted(map(repr, meshes))}); put every leaf on one mesh"
        )
    kinds = sorted({type(s).__name__ for s in shardings})
    raise TypeError(
        "state_shardings: params must all be NamedSharding on one mesh, or all on "
        f"one device; got shardings of kinds {kinds}"
    )


def _with_zero_axis(spec: PartitionSpec, shape: tuple, axis: str, axis_size: int):
    """``spec`` with ``axis`` added on the first unsharded dimension it divides."""
    entries = list(spec) + [None] * (len(shape) - len(spec))
    used = {name for entry in entries if entry is not None
            for name in (entry if isinstance(entry, tuple) else (entry,))}
    if axis in used:
        return spec
    for dim, (entry, size) in enumerate(zip(entries, shape)):
        if entry is None and size % axis_size == 0 and size >= axis_size:
            entries[dim] = axis
            return PartitionSpec(*entries)
    return spec


def state_shardings(
    tx: GradientTransformation, params: Any, *, zero_axis: str | None = None
) -> Any:
    r"""The shardings of ``tx.init(params)``, derived from the params' shardings.

    .. math::
        \mathrm{sharding}(s) = \mathrm{sharding}(p) \text{ for a state leaf } s
        \text{ made from parameter } p; \quad \text{replicated otherwise}

    JAX's own sharding propagation decides which parameter a state leaf comes
    from: ``init`` is traced abstractly on the params' mesh with explicit axes,
    so a moment made by ``zeros_like(p)`` gets ``p``'s partition spec, and a
    step counter is replicated. Nothing is computed or allocated.

    With ``zero_axis`` (ZeRO stage 1), every state leaf of rank >= 1 is
    additionally split over that mesh axis, on its first unsharded dimension
    whose size the axis divides (a leaf with no such dimension keeps its
    parameter's sharding). The params may then stay replicated over
    ``zero_axis``; each device keeps and updates only its slice of the state.

    Args:
      tx: the transformation whose state is sharded.
      params: the params pytree: ``jax.Array`` leaves, or
        ``jax.ShapeDtypeStruct`` leaves with a ``sharding``; all on one mesh
        (``NamedSharding``) or all on one device. ``None`` leaves are allowed.
      zero_axis: a mesh axis name to shard the state over, or ``None``.

    Returns:
      A pytree of ``jax.sharding.Sharding`` with the structure of
      ``jax.eval_shape(tx.init, params)``, for ``jax.jit(...,
      out_shardings=...)``, ``jax.device_put`` or an orbax restore target.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> params = {"w": jnp.ones((4, 2))}
      >>> tx = gx.adam(1e-3)
      >>> shardings = gx.state_shardings(tx, params)
      >>> state = jax.jit(tx.init, out_shardings=shardings)(params)
    """
    validation.transformation("state_shardings", "tx", tx)
    validation.string("state_shardings", "zero_axis", zero_axis, allow_none=True)
    leaves_with_paths = jax.tree_util.tree_leaves_with_path(params)
    shardings = [_leaf_sharding(path, leaf) for path, leaf in leaves_with_paths]
    shapes = jax.eval_shape(tx.init, params)
    if not shardings:
        return jax.tree.map(lambda _: None, shapes)
    place = _common_mesh(shardings)
    if not isinstance(place, jax.sharding.Mesh):
        if zero_axis is not None:
            raise ValueError(
                f"state_shardings: zero_axis={zero_axis!r} needs params on a mesh; "
                f"they are all on one device, {place}"
            )
        return jax.tree.map(lambda _: SingleDeviceSharding(place), shapes)
    if zero_axis is not None and zero_axis not in place.axis_names:
        raise ValueError(
            f"state_shardings: zero_axis={zero_axis!r} is not an axis of the params' "
            f"mesh; its axes are {place.axis_names}"
        )

    explicit = place.abstract_mesh.update_axis_types(
        {name: AxisType.Explicit for name in place.axis_names}
    )
    abstract_params = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(
            leaf.shape, leaf.dtype, sharding=NamedSharding(explicit, leaf.sharding.spec)
        ),
        params,
    )
    with jax.sharding.use_abstract_mesh(explicit):
        typed_state = jax.eval_shape(tx.init, abstract_params)

    def concrete(leaf):
        # A leaf made from no parameter (a step counter) has no sharding in its type.
        spec = PartitionSpec() if leaf.sharding is None else leaf.sharding.spec
        if zero_axis is not None:
            spec = _with_zero_axis(spec, leaf.shape, zero_axis, place.shape[zero_axis])
        return NamedSharding(place, spec)

    return jax.tree.map(concrete, typed_state)
