"""gradxform: composable gradient transformations for JAX.

The public API, re-exported flat. Nothing is defined here.
"""

from gradxform.core.base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    Schedule,
    ScalarOrSchedule,
    Updates,
)
from gradxform.core.combine import chain, named_chain
from gradxform.core.primitives import (
    apply_updates,
    identity,
    stateless,
    stateless_with_tree_map,
)
from gradxform.core.tree import tree_global_norm
from gradxform.interop import to_optax
from gradxform.optimizers import adagrad, adam, adamw, rmsprop, sgd
from gradxform.transforms.adam import (
    ScaleByAdamState,
    ScaleByAmsgradState,
    scale_by_adam,
    scale_by_amsgrad,
)
from gradxform.transforms.adaptive import (
    ScaleByAdagradState,
    ScaleByRmsState,
    ScaleByStddevState,
    scale_by_adagrad,
    scale_by_rms,
    scale_by_stddev,
)
from gradxform.transforms.clipping import clip, clip_by_global_norm, clip_by_norm
from gradxform.transforms.momentum import EmaState, TraceState, ema, trace
from gradxform.transforms.scaling import (
    ScaleByScheduleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from gradxform.transforms.weight_decay import AddDecayedWeightsState, add_decayed_weights

__version__ = "0.1.0"

__all__ = [
    "AddDecayedWeightsState",
    "EmaState",
    "EmptyState",
    "GradientTransformation",
    "OptState",
    "Params",
    "ScalarOrSchedule",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByRmsState",
    "ScaleByScheduleState",
    "ScaleByStddevState",
    "Schedule",
    "TraceState",
    "Updates",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "clip_by_norm",
    "ema",
    "identity",
    "named_chain",
    "rmsprop",
    "scale",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_amsgrad",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_schedule",
    "scale_by_stddev",
    "sgd",
    "stateless",
    "stateless_with_tree_map",
    "to_optax",
    "tree_global_norm",
]
