"""Leaves seen as stacks of matrices: which axes form the matrix Muon orthogonalises.

A leaf of any rank is seen as a stack of matrices: its reduction axes (the
matrix's rows, the fan-in) and its output axes (the columns, the fan-out) are
flattened into one axis each, and every other axis is a batch axis, so that a
``(kh, kw, c_in, c_out)`` convolution kernel with reduction axes ``(0, 1, 2)``
and output axis 3 is one ``(kh kw c_in, c_out)`` matrix. This is optax's
``MuonDimensionNumbers`` and its reshaping rule, with errors that name the
leaf where optax wraps an out-of-range axis silently. Shape plumbing only, no
arithmetic: `transforms.orthogonalize` and `transforms.shape_scaling` share it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from gradxform.core import flat, masks


class MuonDimensionNumbers(NamedTuple):
    """The axes of a leaf that Muon treats as its matrix's rows and columns.

    ``x W = y``: ``reduction_axis`` (an int or a sequence of ints) are the axes
    summed over in that product, the matrix's rows; ``output_axis`` its
    columns. Every other axis is a batch axis, each of whose entries is
    orthogonalised on its own. optax's ``MuonDimensionNumbers``, field for
    field; optax's own instances are accepted too.
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


def is_dimension_numbers(value: Any) -> bool:
    """True for a `MuonDimensionNumbers`, gradxform's or optax's (a NamedTuple of those fields)."""
    return isinstance(value, tuple) and getattr(type(value), "_fields", None) == (
        "reduction_axis", "output_axis")


def _axes(value: Any) -> tuple | None:
    """An int or a sequence of ints as a tuple of Python ints; None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (int(value),)
    if isinstance(value, (list, tuple)) and all(
            isinstance(a, int) and not isinstance(a, bool) for a in value):
        return tuple(int(a) for a in value)
    return None


def _check_entry(owner: str, name: str, entry: Any, given: Any) -> None:
    wanted = (f"{owner}: {name} must be None, a MuonDimensionNumbers, a pytree of them "
              "(None for a leaf that is a plain matrix) or a callable params -> such a tree")
    if not is_dimension_numbers(entry):
        raise TypeError(f"{wanted}; it has the entry {entry!r}, got {given!r}")
    reduction, output = _axes(entry.reduction_axis), _axes(entry.output_axis)
    if reduction is None or output is None:
        raise TypeError(f"{owner}: {name} must give each axis as an int or a sequence of ints; it "
                        f"has the entry {entry!r}, got {given!r}")
    if set(reduction) & set(output) or len(set(reduction)) < len(reduction) or len(
            set(output)) < len(output):
        raise ValueError(f"{owner}: {name} must name each axis once, the reduction and output "
                         f"axes disjoint; it has the entry {entry!r}, got {given!r}")


def check_dimension_numbers(owner: str, name: str, value: Any) -> None:
    """Checks a ``weight_dimension_numbers`` argument at construction (a callable is let through)."""
    if value is None or (callable(value) and not is_dimension_numbers(value)):
        return
    for entry in jax.tree.leaves(value, is_leaf=is_dimension_numbers):
        _check_entry(owner, name, entry, value)


class _Opaque:
    """A `MuonDimensionNumbers` hidden from tree maps: one leaf of a prefix tree."""

    def __init__(self, numbers):
        self.numbers = numbers


def leaf_dimensions(owner: str, name: str, value: Any, updates: Any) -> list:
    """The dimension numbers (or None) of each array leaf of ``updates``, in flattening order.

    ``value`` is a `MuonDimensionNumbers`, a prefix tree of them and None
    (``None`` entries standing for their whole subtree), or a callable that
    returns one given ``updates`` (as optax calls it: only shapes matter).
    """
    spec = value(updates) if callable(value) and not is_dimension_numbers(value) else value
    if spec is None:
        return [None] * len(jax.tree.leaves(updates))
    for entry in jax.tree.leaves(spec, is_leaf=is_dimension_numbers):
        _check_entry(owner, name, entry, spec)
    hidden = jax.tree.map(_Opaque, spec, is_leaf=is_dimension_numbers)
    full = masks.broadcast(owner, name, hidden, updates)
    entries = jax.tree.structure(updates).flatten_up_to(full)
    return [entry.numbers if isinstance(entry, _Opaque) else None for entry in entries]


@dataclasses.dataclass(frozen=True)
class MatrixView:
    """A leaf seen as a ``(batch, fan_in, fan_out)`` stack of matrices, and back."""

    shape: tuple
    permutation: tuple  # batch axes, then reduction axes, then output axes
    batch: int
    fan_in: int
    fan_out: int

    def to_matrices(self, x: jax.Array) -> jax.Array:
        return x.transpose(self.permutation).reshape(self.batch, self.fan_in, self.fan_out)

    def from_matrices(self, x: jax.Array) -> jax.Array:
        inverse = sorted(range(len(self.shape)), key=self.permutation.__getitem__)
        return x.reshape(tuple(self.shape[a] for a in self.permutation)).transpose(inverse)


def matrix_view(owner: str, path: str, shape: tuple, numbers: Any) -> MatrixView:
    """How a leaf of ``shape`` is a stack of matrices under ``numbers`` (None: a plain matrix)."""
    ndim = len(shape)
    if numbers is None:
        if ndim != 2:
            raise ValueError(
                f"{owner}: the update at {path} has shape {tuple(shape)}, but without weight "
                "dimension numbers every leaf must be a matrix (2-D). Give a MuonDimensionNumbers "
                "for this leaf, or send the leaves that are not matrices to another optimizer, "
                "as muon does (to adamw) and torch's param groups do: partition_by_patterns(["
                "('bias|norm', gx.torch.AdamW(...))], default=gx.torch.Muon(...))")
        numbers = MuonDimensionNumbers()
    if ndim < 2:
        raise ValueError(f"{owner}: the update at {path} has shape {tuple(shape)}; a leaf given "
                         f"dimension numbers ({numbers!r}) must have rank >= 2")
    reduction, output = _axes(numbers.reduction_axis), _axes(numbers.output_axis)
    if any(not -ndim <= a < ndim for a in reduction + output):
        raise ValueError(f"{owner}: the update at {path} has rank {ndim}, but its dimension "
                         f"numbers {numbers!r} name an axis outside [-{ndim}, {ndim})")
    reduction = tuple(a % ndim for a in reduction)
    output = tuple(a % ndim for a in output)
    if set(reduction) & set(output):
        raise ValueError(f"{owner}: the dimension numbers {numbers!r} of the update at {path} "
                         f"(shape {tuple(shape)}) give the same axis as reduction and output axis")
    batch = tuple(a for a in range(ndim) if a not in reduction + output)
    return MatrixView(
        tuple(shape), batch + reduction + output, math.prod(shape[a] for a in batch),
        math.prod(shape[a] for a in reduction), math.prod(shape[a] for a in output))


def refuse_flat(owner: str, value: Any, what: str) -> None:
    """Raises the `TypeError` for a `gx.flat_tree` buffer, which lost the leaves' shapes."""
    if flat.is_flat(value):
        raise TypeError(
            f"{owner}: got a gx.flat_tree buffer as {what}, but {owner} (and muon, which uses it) "
            "treats each leaf as a matrix and needs the leaf's shape (its 2-D shape, or the axes "
            "its dimension numbers name), which a flat buffer does not keep. Use the per-leaf "
            "tree instead: pass params.unravel() (and its gradients) rather than the FlatTree")


def map_matrices(owner: str, name: str, value: Any, fn: Callable, num_outputs: int,
                 updates: Any, *rest: Any) -> tuple:
    """``fn(view, g, *others)`` for each leaf of ``updates`` (its `MatrixView` under ``value``)
    and the leaves of ``rest`` there; returns one tree per output, as `tree.tree_map_multi`."""
    treedef = jax.tree.structure(updates)
    with_paths = [(path, jnp.asarray(leaf))
                  for path, leaf in jax.tree_util.tree_flatten_with_path(updates)[0]]
    numbers = leaf_dimensions(owner, name, value, updates)
    views = [matrix_view(owner, "".join(map(str, path)) or "<root>", leaf.shape, n)
             for (path, leaf), n in zip(with_paths, numbers)]
    rest_leaves = [treedef.flatten_up_to(r) for r in rest]
    results = [fn(view, leaf, *others)
               for view, (_, leaf), *others in zip(views, with_paths, *rest_leaves)]
    return tuple(treedef.unflatten([r[i] for r in results]) for i in range(num_outputs))
