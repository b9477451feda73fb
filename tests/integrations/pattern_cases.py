"""Key-path patterns and the optax equivalents they must match, shared by the Flax tests.

The kernels of an MLP are exactly its rank-2 leaves, so optax, which has no key-path
patterns, gets the same selection from a rank mask (a callable, evaluated on whatever
tree optax is given).
"""

import jax
import optax

import gradxform as gx

KERNEL = r"(^|/)kernel$"


def is_kernel(params):
    return jax.tree.map(lambda x: x.ndim > 1, params)


def kernel_or_rest(params):
    return jax.tree.map(lambda x: "kernel" if x.ndim > 1 else "rest", params)


# name -> (gradxform with patterns, optax with the rank mask)
PATTERN_CASES = {
    "masked": (
        lambda: gx.chain(gx.masked(gx.scale_by_adam(), [KERNEL]), gx.scale(-0.05)),
        lambda: optax.chain(optax.masked(optax.scale_by_adam(), is_kernel), optax.scale(-0.05)),
    ),
    "partition_by_patterns": (
        lambda: gx.partition_by_patterns([(KERNEL, gx.adam(0.05))], default=gx.sgd(0.1)),
        lambda: optax.partition({"kernel": optax.adam(0.05), "rest": optax.sgd(0.1)},
                                kernel_or_rest),
    ),
    "add_decayed_weights-exclude": (
        lambda: gx.chain(gx.add_decayed_weights(0.5, exclude=[r"(^|/)bias$"]), gx.sgd(0.1)),
        lambda: optax.chain(optax.add_decayed_weights(0.5, mask=is_kernel), optax.sgd(0.1)),
    ),
    "adamw-mask": (
        lambda: gx.adamw(0.05, weight_decay=0.5, mask=[KERNEL]),
        lambda: optax.adamw(0.05, weight_decay=0.5, mask=is_kernel),
    ),
}
