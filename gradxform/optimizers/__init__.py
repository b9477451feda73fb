"""The optimizers: each a short chain of public transforms, defining no arithmetic of its own.

One module per family; names, arguments and defaults are optax's.
"""

from gradxform.optimizers.adam_family import (
    adabelief, adamax, adamaxw, amsgrad, nadam, nadamw, novograd, radam, yogi,
)
from gradxform.optimizers.contrib_adaptive import ademamix, adopt, madgrad, simplified_ademamix
from gradxform.optimizers.factored import adafactor, sm3
from gradxform.optimizers.lazy_adam import lazy_adam
from gradxform.optimizers.lbfgs import lbfgs
from gradxform.optimizers.muon import muon
from gradxform.optimizers.noisy import noisy_sgd
from gradxform.optimizers.parameter_free import cocob, dog, dowg, prodigy, sophia
from gradxform.optimizers.rules import (
    adadelta, adan, optimistic_adam, optimistic_gradient_descent, polyak_sgd, rprop,
)
from gradxform.optimizers.schedule_free import schedule_free_adamw, schedule_free_sgd
from gradxform.optimizers.sign import lion, sign_sgd, signum
from gradxform.optimizers.standard import adagrad, adam, adamw, rmsprop, sgd
from gradxform.optimizers.trust_ratio import fromage, lamb, lars

__all__ = ["adabelief", "adadelta", "adafactor", "adagrad", "adam", "adamax", "adamaxw", "adamw", "adan", "ademamix", "adopt", "amsgrad", "cocob", "dog", "dowg", "fromage", "lamb", "lars", "lazy_adam", "lbfgs", "lion", "madgrad", "muon", "nadam", "nadamw", "noisy_sgd", "novograd", "optimistic_adam", "optimistic_gradient_descent", "polyak_sgd", "prodigy", "radam", "rmsprop", "rprop", "schedule_free_adamw", "schedule_free_sgd", "sgd", "sign_sgd", "signum", "simplified_ademamix", "sm3", "sophia", "yogi"]
