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
from gradxform.optimizers.adam_family import (
    adabelief,
    adamax,
    adamaxw,
    amsgrad,
    nadam,
    nadamw,
    novograd,
    radam,
    yogi,
)
from gradxform.optimizers.sign import lion, sign_sgd, signum
from gradxform.optimizers.factored import adafactor, sm3
from gradxform.optimizers.noisy import noisy_sgd
from gradxform.tree_updates import incremental_update, periodic_update
from gradxform.optimizers.trust_ratio import fromage, lamb, lars
from gradxform.optimizers.rules import (
    adadelta,
    adan,
    optimistic_adam,
    optimistic_gradient_descent,
    polyak_sgd,
    rprop,
)
from gradxform.transforms.adadelta import ScaleByAdaDeltaState, scale_by_adadelta
from gradxform.transforms.adan import ScaleByAdanState, scale_by_adan
from gradxform.transforms.optimistic import (
    ScaleByOptimisticGradientState,
    scale_by_optimistic_gradient,
)
from gradxform.transforms.polyak import scale_by_polyak
from gradxform.transforms.rprop import ScaleByRpropState, scale_by_rprop
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
from gradxform.transforms.adam_variants import (
    ScaleByBeliefState,
    ScaleByRadamState,
    ScaleByYogiState,
    scale_by_belief,
    scale_by_radam,
    scale_by_yogi,
)
from gradxform.transforms.adamax import ScaleByAdamaxState, scale_by_adamax
from gradxform.transforms.novograd import ScaleByNovogradState, scale_by_novograd
from gradxform.transforms.adaptive import (
    ScaleByAdagradState,
    ScaleByRmsState,
    ScaleByStddevState,
    scale_by_adagrad,
    scale_by_rms,
    scale_by_stddev,
)
from gradxform.transforms.block_clipping import adaptive_grad_clip, clip_by_block_rms
from gradxform.transforms.clipping import clip, clip_by_global_norm, clip_by_norm
from gradxform.transforms.factored import FactoredState, adafactor_decay_rate, scale_by_factored_rms
from gradxform.transforms.sm3 import ScaleBySM3State, scale_by_sm3
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
from gradxform.transforms.monitoring import (
    MonitorState,
    RecordGlobalNormState,
    SnapshotState,
    monitor,
    record_global_norm,
    snapshot,
)
from gradxform.transforms.lookahead import LookaheadParams, LookaheadState, lookahead
from gradxform.transforms.conditional import (
    ConditionallyMaskState,
    ConditionallyTransformState,
    conditionally_mask,
    conditionally_transform,
)
from gradxform.transforms.momentum import EmaState, TraceState, ema, trace
from gradxform.transforms.noise import AddNoiseState, add_noise
from gradxform.transforms.periodic import ApplyEvery, apply_every
from gradxform.transforms.sanitizing import (
    ZeroNansState,
    centralize,
    keep_params_nonnegative,
    zero_nans,
)
from gradxform.transforms.masking import MaskedNode, MaskedState, freeze, masked, set_to_zero
from gradxform.transforms.params_ema import ParamsEmaState, finalize_params, params_ema
from gradxform.transforms.partition import PartitionState, partition, partition_by_patterns
from gradxform.transforms.scaling import (
    ScaleByScheduleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from gradxform.transforms.sign import ScaleByLionState, scale_by_lion, scale_by_sign
from gradxform.transforms.trust_ratio import (
    scale_by_param_block_norm,
    scale_by_param_block_rms,
    scale_by_trust_ratio,
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
    "AddNoiseState",
    "ApplyEvery",
    "ApplyIfFiniteState",
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "DecoupledWeightDecayState",
    "DynamicLossScaleState",
    "EmaState",
    "EmptyState",
    "FactoredState",
    "FlatTree",
    "GradientTransformation",
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "LookaheadParams",
    "LookaheadState",
    "MaskedNode",
    "MaskedState",
    "MonitorState",
    "MultiSteps",
    "MultiStepsState",
    "OptState",
    "Params",
    "ParamsEmaState",
    "PartitionState",
    "RecordGlobalNormState",
    "ScalarOrSchedule",
    "ScaleByAdaDeltaState",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAdanState",
    "ScaleByAmsgradState",
    "ScaleByBeliefState",
    "ScaleByLionState",
    "ScaleByNovogradState",
    "ScaleByOptimisticGradientState",
    "ScaleByRadamState",
    "ScaleByRmsState",
    "ScaleByRpropState",
    "ScaleBySM3State",
    "ScaleByScheduleState",
    "ScaleByStddevState",
    "ScaleByYogiState",
    "Schedule",
    "SnapshotState",
    "StaticLossScaleState",
    "TraceState",
    "Updates",
    "ZeroNansState",
    "accumulate_gradients",
    "adabelief",
    "adadelta",
    "adafactor",
    "adafactor_decay_rate",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "adan",
    "adaptive_grad_clip",
    "add_decayed_weights",
    "add_noise",
    "amsgrad",
    "apply_every",
    "apply_if_finite",
    "apply_updates",
    "centralize",
    "chain",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "clip_by_norm",
    "conditionally_mask",
    "conditionally_transform",
    "current_loss_scale",
    "decoupled_weight_decay",
    "dynamic_loss_scale",
    "ema",
    "finalize_params",
    "flat_compiler_options",
    "flat_tree",
    "freeze",
    "from_config",
    "fromage",
    "identity",
    "incremental_update",
    "inject_hyperparams",
    "keep_params_nonnegative",
    "keras",
    "lamb",
    "lars",
    "lion",
    "lookahead",
    "masked",
    "monitor",
    "multi_steps",
    "nadam",
    "nadamw",
    "named_chain",
    "noisy_sgd",
    "novograd",
    "optimistic_adam",
    "optimistic_gradient_descent",
    "params_ema",
    "partition",
    "partition_by_patterns",
    "periodic_update",
    "polyak_sgd",
    "radam",
    "record_global_norm",
    "rmsprop",
    "rprop",
    "scale",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_adan",
    "scale_by_amsgrad",
    "scale_by_belief",
    "scale_by_factored_rms",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_novograd",
    "scale_by_optimistic_gradient",
    "scale_by_param_block_norm",
    "scale_by_param_block_rms",
    "scale_by_polyak",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_schedule",
    "scale_by_sign",
    "scale_by_sm3",
    "scale_by_stddev",
    "scale_by_trust_ratio",
    "scale_by_yogi",
    "scale_loss",
    "schedules",
    "set_to_zero",
    "sgd",
    "sign_sgd",
    "signum",
    "skip_large_updates",
    "skip_not_finite",
    "sm3",
    "snapshot",
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
    "yogi",
    "zero_nans",
]
