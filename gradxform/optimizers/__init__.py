"""The optimizers: each a short chain of public transforms, defining no arithmetic of its own.

One module per family; names, arguments and defaults are optax's.
"""

from gradxform.optimizers.standard import adagrad, adam, adamw, rmsprop, sgd

__all__ = ["adagrad", "adam", "adamw", "rmsprop", "sgd"]
