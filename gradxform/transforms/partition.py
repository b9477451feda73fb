"""Different transformations for different parameters: `partition` and `partition_by_patterns`."""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import jax

from gradxform.core import flat, masks, paths, sparse, tree, validation
from gradxform.core.base import GradientTransformation, public_constructor
from gradxform.core.masks import MaskedState


class PartitionState(NamedTuple):
    """One `MaskedState` per label, holding the state built on that label's leaves only."""

    inner_states: dict


def _label_prefix(owner: str, labels: Any, transforms: Mapping, reference: Any) -> Any:
    """The labels, a prefix of ``reference`` with its Flax boxes opened; all with a transformation."""
    view = paths.unbox(flat.logical(reference))
    if masks.is_masked_node(view):  # an outer mask left out everything: nothing to label
        return view
    is_function = masks.is_mask_function(labels, masks.is_label_entry)
    label_tree = paths.unbox(labels(view) if is_function else labels)
    masks.broadcast(owner, "labels", label_tree, view)
    used = set(jax.tree.leaves(label_tree))
    missing = sorted(map(str, used - set(transforms)))
    if missing:
        raise ValueError(
            f"{owner}: some parameters have labels without a transformation: {missing}; "
            f"transforms are keyed {sorted(map(str, transforms))}"
        )
    return label_tree


def _flags_for(owner: str, label_tree: Any, label: Any, target: Any) -> Any:
    prefix = jax.tree.map(lambda x: x == label, label_tree)
    return masks.selection(owner, prefix, target, what="labels")


@sparse.row_sparse_rule("routes")
@public_constructor
def partition(transforms: Mapping[Any, GradientTransformation], labels: Any) -> GradientTransformation:
    r"""Applies ``transforms[label]`` to the parameters with that label (optax's ``partition``).

    .. math::
        u_i = T_{\ell(i)}(g)_i

    As in optax, each transformation is run as `masked` by its label: it sees
    the params with a `MaskedNode` in place of the parts that are not its own,
    so it keeps state only for its parameters, and the state holds one
    `MaskedState` per label. Each transformation gets only the extra keyword
    arguments its ``update`` accepts.

    Args:
      transforms: a mapping from label to transformation.
      labels: the label of each parameter: a pytree of labels shaped like (a
        prefix of) the params, or a function ``params -> such a tree``; an
        ``equinox.Module`` of labels is a tree even if it has a ``__call__``.
        The function sees the params with their Flax boxes opened. For labels
        by key-path patterns see `partition_by_patterns`.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.partition({"adam": gx.adam(1e-3), "sgd": gx.sgd(1e-2)},
      ...                   labels={"encoder": "adam", "head": "sgd"})
    """
    owner = "partition"
    if not isinstance(transforms, Mapping) or not transforms:
        raise TypeError(f"{owner}: transforms must be a non-empty mapping label -> transformation, "
                        f"got {transforms!r}")
    with validation.inside("transforms", transforms):
        for label, tx in transforms.items():
            validation.transformation(owner, f"transforms[{label!r}]", tx)
    if labels is None or (
        not masks.is_mask_function(labels, masks.is_label_entry) and not jax.tree.leaves(labels)
    ):
        raise ValueError(f"{owner}: labels must be a pytree of labels or a callable, got {labels!r}")

    def init_fn(params):
        if masks.is_params_placeholder(params):  # optax.tree_utils.tree_map_params, as optax
            return PartitionState(
                {label: MaskedState(tx.init(params)) for label, tx in transforms.items()})
        label_tree = _label_prefix(owner, labels, transforms, params)
        states = {}
        for label, tx in transforms.items():
            flags = _flags_for(owner, label_tree, label, params)
            states[label] = MaskedState(inner_state=tx.init(masks.select(flags, params)))
        return PartitionState(inner_states=states)

    def update_fn(updates, state, params=None, **extra_args):
        if params is not None:
            tree.check_same_structure(owner, "params", params, updates, none_matches=True)
        label_tree = _label_prefix(owner, labels, transforms, updates if params is None else params)
        states = {}
        for label, tx in transforms.items():
            # Each label's leaves are disjoint, so feeding one group's output to the
            # next changes only that group's leaves.
            flags = _flags_for(owner, label_tree, label, updates)
            updates, inner_state = masks.update_selected(
                tx, state.inner_states[label].inner_state, flags, updates, params, extra_args
            )
            states[label] = MaskedState(inner_state=inner_state)
        return updates, PartitionState(inner_states=states)

    return GradientTransformation(init_fn, update_fn)


@sparse.row_sparse_rule("routes")
@public_constructor
def partition_by_patterns(
    rules: Sequence[tuple[str, GradientTransformation]],
    default: GradientTransformation,
) -> GradientTransformation:
    r"""`partition` by regex patterns on key paths, first match wins (Keras's ``MultiOptimizer``).

    .. math::
        u_i = T_{r(i)}(g)_i, \qquad r(i) = \min\{k : \text{pattern}_k \text{ found in path}_i\}
        \text{ or default}

    Args:
      rules: ``(pattern, transformation)`` pairs; each pattern is searched
        (``re.search``) in the leaf's key path, ``"dense/kernel"``.
      default: the transformation for leaves no pattern matches.

    Example:
      >>> import gradxform as gx
      >>> tx = gx.partition_by_patterns([("bias|norm", gx.sgd(1e-2))], default=gx.adam(1e-3))
    """
    owner = "partition_by_patterns"
    if not isinstance(rules, (list, tuple)):
        raise TypeError(f"{owner}: rules must be a list of (pattern, transformation), got {rules!r}")
    regexes = []
    with validation.inside("rules", rules):
        for index, rule in enumerate(rules):
            if not (isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[0], str)):
                raise TypeError(f"{owner}: rules[{index}] must be a (pattern, transformation) "
                                f"pair, got {rule!r}")
            regexes.append(masks.compile_patterns(owner, f"rules[{index}]", rule[0]))
            validation.transformation(owner, f"rules[{index}][1]", rule[1])
    validation.transformation(owner, "default", default)
    transforms = {f"rule{index}": tx for index, (_, tx) in enumerate(rules)}
    transforms["default"] = default

    def label_of(params):
        def first_match(path):
            return next(
                (f"rule{i}" for i, regex in enumerate(regexes) if regex.search(path)), "default"
            )

        return jax.tree.map(first_match, masks.tree_paths(params))

    return partition(transforms, label_of)
