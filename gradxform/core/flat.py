"""Flat parameters: a tree's leaves stored in a few contiguous buffers, one per dtype.

On CPU, XLA pays a fixed cost per kernel and per array passed into a jitted
function (about 10 µs each), so an optimizer update over 5,000 small leaves
costs the same whether they hold 16 floats or 16,000. A `FlatTree` keeps the
leaves of each dtype in one 1-D buffer, so an elementwise update is a few
kernels whatever the number of leaves. The model sees its usual tree through
`FlatTree.unravel`, called inside the loss; its gradient is again a
`FlatTree` (the transpose of the split in `unravel` is one concatenation).

Every transformation accepts a `FlatTree` as params and updates. Elementwise
ones act on the buffers as they are. Per-leaf ones see the logical leaves:
masks, labels and name patterns are resolved on `FlatTree.logical` (a tree of
``jax.ShapeDtypeStruct`` with the original key paths), and per-leaf reductions
(`clip_by_norm`) run through `gradxform.core.leafwise` as segment operations.

Inside a buffer the leaves are ordered by shape, so that leaves of equal shape
form one ``(k, *shape)`` block: a per-leaf reduction is one batched reduction
per distinct shape, not one per leaf. Leaves that are sharded over several
devices, or that ``keep`` selects, stay arrays of their own ("kept" leaves), so
no sharded leaf is ever gathered into a buffer.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gradxform.core import paths


@dataclasses.dataclass(frozen=True)
class LeafSlot:
    """Where one logical leaf lives: its key path, shape, dtype and place in a buffer."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    buffer: int
    offset: int  # in elements; 0 for a kept leaf

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class BufferSpec:
    """One buffer: its dtype, its logical leaves in storage order, and whether it is kept."""

    dtype: np.dtype
    members: tuple[int, ...]  # indices into Layout.slots, in storage order
    kept: bool
    name: str

    def runs(self, slots: tuple[LeafSlot, ...]) -> list[tuple[int, tuple[int, ...], list[int]]]:
        """``(offset, shape, member indices)`` for each run of consecutive equal-shape leaves."""
        result: list = []
        for index in self.members:
            slot = slots[index]
            if result and result[-1][1] == slot.shape:
                result[-1][2].append(index)
            else:
                result.append((slot.offset, slot.shape, [index]))
        return result


@dataclasses.dataclass(frozen=True)
class Layout:
    """The static description of a `FlatTree`: the original treedef and where each leaf lives.

    Hashable and compared by value, so it is the pytree's auxiliary data and two
    trees flattened from the same structure share one jit cache entry.
    """

    treedef: Any
    slots: tuple[LeafSlot, ...]
    buffers: tuple[BufferSpec, ...]

    def logical(self) -> Any:
        """The original tree, with a ``jax.ShapeDtypeStruct`` per leaf."""
        return self.treedef.unflatten(
            [jax.ShapeDtypeStruct(slot.shape, slot.dtype) for slot in self.slots]
        )


def _is_sharded(leaf: Any) -> bool:
    sharding = getattr(leaf, "sharding", None)
    if sharding is None or isinstance(leaf, jax.core.Tracer):
        return False
    return len(sharding.device_set) > 1 and not sharding.is_fully_replicated


def _build_layout(params: Any, keep: Callable[[str, Any], bool] | None) -> tuple[Layout, list]:
    treedef = jax.tree.structure(params)
    with_paths = [(path, leaf) for path, leaf in paths.leaves_with_paths(params)
                  if leaf is not None]
    arrays = [jnp.asarray(leaf) for _, leaf in with_paths]
    leaf_paths = [path for path, _ in with_paths]
    kept = [
        _is_sharded(leaf) or (keep is not None and bool(keep(path, leaf)))
        for path, leaf in zip(leaf_paths, arrays)
    ]
    groups: dict[np.dtype, list[int]] = {}
    for index, (array, is_kept) in enumerate(zip(arrays, kept)):
        if not is_kept:
            groups.setdefault(np.dtype(array.dtype), []).append(index)
    # Equal shapes side by side: a per-leaf reduction becomes one batched reduction per shape.
    order = {
        dtype: sorted(indices, key=lambda i: (arrays[i].size, arrays[i].shape, i))
        for dtype, indices in groups.items()
    }
    slots: list[LeafSlot | None] = [None] * len(arrays)
    buffers: list[BufferSpec] = []
    for dtype, members in order.items():
        offset = 0
        for index in members:
            slots[index] = LeafSlot(leaf_paths[index], tuple(arrays[index].shape), dtype,
                                    len(buffers), offset)
            offset += arrays[index].size
        buffers.append(BufferSpec(dtype, tuple(members), False, f"<{dtype.name}>"))
    for index, is_kept in enumerate(kept):
        if is_kept:
            array = arrays[index]
            slots[index] = LeafSlot(leaf_paths[index], tuple(array.shape), np.dtype(array.dtype),
                                    len(buffers), 0)
            buffers.append(BufferSpec(np.dtype(array.dtype), (index,), True, leaf_paths[index]))
    return Layout(treedef, tuple(slots), tuple(buffers)), arrays


def _is_hole(buffer: Any) -> bool:
    """True for a buffer a mask left out: ``None``, or a ``MaskedNode`` (a node with no arrays)."""
    return not jax.tree.leaves(buffer)


def _joined(pieces: list) -> jax.Array:
    """The 1-D pieces end to end (a single piece as it is: no copy)."""
    return jnp.concatenate(pieces) if len(pieces) > 1 else pieces[0]


# Outside a trace, a split or a concatenation with one operand per leaf is
# compiled for that one layout: over a minute at 5,000 leaves on CPU. Eager
# calls copy through host memory instead, which compiles nothing.
def _eager(x: Any) -> bool:
    """A concrete array whose every shard is local, so that it can go to the host and back."""
    return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer) and x.is_fully_addressable


def _placement(x: jax.Array) -> jax.sharding.Sharding:
    """``x``'s devices (and mesh), replicated: a sharding that fits an array of any shape."""
    sharding = x.sharding
    if isinstance(sharding, jax.sharding.NamedSharding):
        return jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(),
                                          memory_kind=sharding.memory_kind)
    if len(sharding.device_set) == 1:
        return jax.sharding.SingleDeviceSharding(next(iter(sharding.device_set)),
                                                 memory_kind=sharding.memory_kind)
    return sharding  # several devices: replicated, since a buffer holds no sharded leaf


def _packed(spec: BufferSpec, arrays: list) -> jax.Array:
    members = [arrays[i] for i in spec.members]
    if len(members) > 1 and all(map(_eager, members)):
        host = np.concatenate([np.asarray(leaf).reshape(-1) for leaf in members])
        return jax.device_put(host, _placement(members[0]))
    return _joined([jnp.reshape(leaf, (-1,)) for leaf in members])


def _pack(layout: Layout, arrays: list) -> list:
    return [arrays[spec.members[0]] if spec.kept else _packed(spec, arrays)
            for spec in layout.buffers]


@jax.tree_util.register_pytree_with_keys_class
class FlatTree:
    """A parameter (or gradient, or state) tree stored as per-dtype contiguous buffers.

    Build one with `flat_tree`. Its pytree children are the buffers (a
    ``MaskedNode`` or ``None`` for a part a mask left out) and its auxiliary
    data is the `Layout`.
    """

    def __init__(self, buffers: Any, layout: Layout):
        self.buffers = tuple(buffers)
        self.layout = layout

    def tree_flatten_with_keys(self):
        keys = [jax.tree_util.DictKey(spec.name) for spec in self.layout.buffers]
        return list(zip(keys, self.buffers)), self.layout

    def tree_flatten(self):
        return self.buffers, self.layout

    @classmethod
    def tree_unflatten(cls, layout, buffers):
        return cls(buffers, layout)

    @property
    def logical(self) -> Any:
        """The original tree's structure, with a ``jax.ShapeDtypeStruct`` per leaf."""
        return self.layout.logical()

    def unravel(self) -> Any:
        """The original tree: one split per buffer, then reshapes (differentiable).

        Call it inside the loss; ``jax.grad`` of the loss with respect to the
        `FlatTree` is a `FlatTree`. Outside a trace (after training, say) the
        leaves are cut on the host and put back on the buffer's devices, so an
        eager call compiles nothing.
        """
        leaves: list = [None] * len(self.layout.slots)
        for spec, buffer in zip(self.layout.buffers, self.buffers):
            if spec.kept:
                leaves[spec.members[0]] = buffer
                continue
            slots = [self.layout.slots[i] for i in spec.members]
            if len(slots) > 1 and _eager(buffer):
                host = np.asarray(buffer)
                pieces = [host[s.offset:s.offset + s.size].reshape(s.shape) for s in slots]
                for index, piece in zip(spec.members, jax.device_put(pieces, _placement(buffer))):
                    leaves[index] = piece
                continue
            cuts = np.cumsum([slot.size for slot in slots])[:-1]
            pieces = jnp.split(buffer, cuts) if len(slots) > 1 else [buffer]
            for index, slot, piece in zip(spec.members, slots, pieces):
                leaves[index] = jnp.reshape(piece, slot.shape)
        return self.layout.treedef.unflatten(leaves)

    def ravel(self, tree: Any) -> "FlatTree":
        """``tree`` (same structure, shapes and dtypes as the original) in this layout."""
        leaves, treedef = jax.tree.flatten(tree)
        if treedef != self.layout.treedef:
            raise ValueError(
                f"FlatTree.ravel: tree has structure {treedef}, the layout was built from "
                f"{self.layout.treedef}"
            )
        for slot, leaf in zip(self.layout.slots, leaves):
            shape, dtype = tuple(jnp.shape(leaf)), np.dtype(jnp.result_type(leaf))
            if (shape, dtype) != (slot.shape, slot.dtype):
                raise ValueError(
                    f"FlatTree.ravel: leaf {slot.path!r} is {dtype.name}{list(shape)}, "
                    f"the layout has {slot.dtype.name}{list(slot.shape)}"
                )
        return FlatTree(_pack(self.layout, [jnp.asarray(leaf) for leaf in leaves]), self.layout)

    def __repr__(self) -> str:
        parts = []
        for spec, buffer in zip(self.layout.buffers, self.buffers):
            shape = None if _is_hole(buffer) else tuple(jnp.shape(buffer))
            parts.append(f"{spec.name}: {len(spec.members)} leaves, shape {shape}")
        return f"FlatTree({'; '.join(parts)})"


def flat_tree(params: Any, keep: Callable[[str, Any], bool] | None = None) -> FlatTree:
    r"""Stores ``params`` as a `FlatTree`: one contiguous 1-D buffer per dtype.

    .. math::
        \mathrm{buffer}_d = \mathrm{concat}\big(\mathrm{vec}(\theta_i) : \mathrm{dtype}(\theta_i) = d\big),
        \qquad \theta = \mathrm{unravel}(\mathrm{buffers})

    Use it when a model has many small leaves (hundreds to thousands, e.g.
    per-layer biases and norms of a deep small model): the optimizer then runs a
    few kernels per step instead of a few per leaf, and the jitted step passes a
    few arrays instead of thousands. For a model of a few large leaves the
    per-leaf path already streams at memory bandwidth; flattening then only adds
    a split in the forward pass and a concatenation in the backward pass.

    Args:
      params: a pytree of arrays (``None`` entries allowed).
      keep: optional ``(key_path, leaf) -> bool``; leaves for which it returns
        True stay arrays of their own, outside the buffers (a large embedding,
        say). Leaves sharded over several devices always stay their own: call
        ``flat_tree`` outside ``jit``, on the placed arrays, since a traced leaf
        does not tell whether it is sharded.

    Example:
      >>> import jax, jax.numpy as jnp, gradxform as gx
      >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
      >>> flat = gx.flat_tree(params)
      >>> tx = gx.adamw(1e-3, weight_decay=1e-4, mask=lambda p: {"w": True, "b": False})
      >>> state = tx.init(flat)
      >>> loss = lambda f: jnp.sum(f.unravel()["w"] ** 2)
      >>> updates, state = tx.update(jax.grad(loss)(flat), state, flat)
      >>> gx.apply_updates(flat, updates).unravel()["w"].shape
      (2, 3)
    """
    if keep is not None and not callable(keep):
        raise TypeError(f"flat_tree: keep must be a callable (key_path, leaf) -> bool or None, got {keep!r}")
    layout, arrays = _build_layout(params, keep)
    return FlatTree(_pack(layout, arrays), layout)


def is_flat(tree: Any) -> bool:
    """True for a `FlatTree`."""
    return isinstance(tree, FlatTree)


def logical(tree: Any) -> Any:
    """The tree masks and labels are resolved on: a `FlatTree`'s original structure, else ``tree``."""
    return tree.logical if is_flat(tree) else tree


def _expand(layout: Layout, spec: BufferSpec, values: dict[int, Any]) -> jax.Array:
    """One entry per element of the buffer, each leaf's value (keyed by slot index) repeated."""
    blocks = []
    for _, shape, members in spec.runs(layout.slots):
        per_leaf = jnp.stack([jnp.asarray(values[i]) for i in members])
        blocks.append(jnp.repeat(per_leaf, math.prod(shape)))
    return _joined(blocks)


def per_buffer(tree: Any, values: Any) -> Any:
    """``values`` (one per logical leaf, shaped like `logical`) laid out like ``tree``.

    For a `FlatTree`, a buffer whose leaves share one static value gets that
    Python value; otherwise it gets an array with each leaf's value repeated
    over its elements. For any other tree, ``values`` is returned as it is.
    """
    if not is_flat(tree):
        return values
    layout = tree.layout
    flat_values = layout.treedef.flatten_up_to(values)
    result = []
    for spec, buffer in zip(layout.buffers, tree.buffers):
        mine = [flat_values[i] for i in spec.members]
        static = all(isinstance(v, (bool, np.bool_)) for v in mine)
        if _is_hole(buffer):
            result.append(False)
        elif static and len(set(map(bool, mine))) == 1:
            result.append(bool(mine[0]))
        elif spec.kept:
            result.append(mine[0])
        else:
            full = dict(zip(spec.members, mine))
            result.append(_expand(layout, spec, full))
    return FlatTree(result, layout)
