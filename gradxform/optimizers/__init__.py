"""The optimizers: each a short chain of public transforms, defining no arithmetic of its own.

One module per family; names, arguments and defaults are optax's.
"""

from gradxform.optimizers.adam_family import (
    adabelief, adamax, adamaxw, amsgrad, nadam, nadamw, novograd, radam, yogi,
)
from gradxform.optimizers.factored import adafactor, sm3
from gradxform.optimizers.noisy import noisy_sgd
from gradxform.optimizers.rules import (
    adadelta, adan, optimistic_adam, optimistic_gradient_descent, polyak_sgd, rprop,
)
from gradxform.optimizers.sign import lion, sign_sgd, signum
from gradxform.optimizers.standard import adagrad, adam, adamw, rmsprop, sgd
from gradxform.optimizers.trust_ratio import fromage, lamb, lars

__all__ = ["adabelief", "adadelta", "adafactor", "adagrad", "adam", "adamax", "adamaxw", "adamw", "adan", "amsgrad", "fromage", "lamb", "lars", "lion", "nadam", "nadamw", "noisy_sgd", "novograd", "optimistic_adam", "optimistic_gradient_descent", "polyak_sgd", "radam", "rmsprop", "rprop", "sgd", "sign_sgd", "signum", "sm3", "yogi"]
