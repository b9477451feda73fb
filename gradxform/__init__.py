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
from gradxform.core.inspection import tree_get, tree_set
from gradxform.core.tree import tree_global_norm
from gradxform.core.compile_options import flat_compiler_options
from gradxform.core.flat import FlatTree, flat_tree
from gradxform import keras, schedules
from gradxform.interop import to_optax
from gradxform.sharding import state_shardings
from gradxform.config import from_config, to_config
from gradxform.optimizers import adagrad, adam, adamw, rmsprop, sgd
from gradxform.transforms.accumulation import (
    AccumulateGradientsState,
    MultiSteps,
    MultiStepsState,
    accumulate_gradients,
    multi_steps,
    skip_large_updates,
    skip_not_finite,
)
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
from gradxform.transforms.finiteness import ApplyIfFiniteState, apply_if_finite
from gradxform.transforms.injection import (
    InjectHyperparamsState,
    InjectStatefulHyperparamsState,
    inject_hyperparams,
)
from gradxform.transforms.loss_scaling import (
    DynamicLossScaleState,
    StaticLossScaleState,
    current_loss_scale,
    dynamic_loss_scale,
    scale_loss,
    static_loss_scale,
)
from gradxform.transforms.monitoring import RecordGlobalNormState, record_global_norm
from gradxform.transforms.momentum import EmaState, TraceState, ema, trace
from gradxform.transforms.masking import MaskedNode, MaskedState, freeze, masked, set_to_zero
from gradxform.transforms.params_ema import ParamsEmaState, finalize_params, params_ema
from gradxform.transforms.partition import PartitionState, partition, partition_by_patterns
from gradxform.transforms.scaling import (
    ScaleByScheduleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from gradxform.transforms.weight_decay import (
    AddDecayedWeightsState,
    DecoupledWeightDecayState,
    add_decayed_weights,
    decoupled_weight_decay,
)

import importlib.metadata as _importlib_metadata  # noqa: E402

try:
    __version__ = _importlib_metadata.version("gradxform")
except _importlib_metadata.PackageNotFoundError:
    # A source tree on sys.path without being installed: no release to name.
    __version__ = "0+unknown"
del _importlib_metadata

__all__ = [
    "AccumulateGradientsState",
    "AddDecayedWeightsState",
    "ApplyIfFiniteState",
    "DecoupledWeightDecayState",
    "DynamicLossScaleState",
    "EmaState",
    "EmptyState",
    "FlatTree",
    "GradientTransformation",
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "MaskedNode",
    "MaskedState",
    "MultiSteps",
    "MultiStepsState",
    "OptState",
    "Params",
    "ParamsEmaState",
    "PartitionState",
    "RecordGlobalNormState",
    "ScalarOrSchedule",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByRmsState",
    "ScaleByScheduleState",
    "ScaleByStddevState",
    "Schedule",
    "StaticLossScaleState",
    "TraceState",
    "Updates",
    "accumulate_gradients",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "apply_if_finite",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "clip_by_norm",
    "current_loss_scale",
    "decoupled_weight_decay",
    "dynamic_loss_scale",
    "ema",
    "finalize_params",
    "flat_compiler_options",
    "flat_tree",
    "freeze",
    "from_config",
    "identity",
    "inject_hyperparams",
    "keras",
    "masked",
    "multi_steps",
    "named_chain",
    "params_ema",
    "partition",
    "partition_by_patterns",
    "record_global_norm",
    "rmsprop",
    "scale",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_amsgrad",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_schedule",
    "scale_by_stddev",
    "scale_loss",
    "schedules",
    "set_to_zero",
    "sgd",
    "skip_large_updates",
    "skip_not_finite",
    "stateless",
    "stateless_with_tree_map",
    "static_loss_scale",
    "state_shardings",
    "to_config",
    "to_optax",
    "trace",
    "tree_get",
    "tree_global_norm",
    "tree_set",
]
