"""gradxform: composable gradient transformations for JAX.

The public API, re-exported flat. Nothing is defined here.
"""

from gradxform.core.base import (
    EmptyState, GradientTransformation, OptState, Params, ScalarOrSchedule, Schedule, Updates,
)
from gradxform.core.combine import chain, named_chain
from gradxform.core.compile_options import flat_compiler_options
from gradxform.core.flat import FlatTree, flat_tree
from gradxform.core.inspection import tree_get, tree_set
from gradxform.core.matrices import MuonDimensionNumbers
from gradxform.core.primitives import apply_updates, identity, stateless, stateless_with_tree_map
from gradxform.core.tree import tree_global_norm
from gradxform.transforms.accumulation import (
    AccumulateGradientsState, MultiSteps, MultiStepsState, accumulate_gradients, multi_steps,
    skip_large_updates, skip_not_finite,
)
from gradxform.transforms.adadelta import ScaleByAdaDeltaState, scale_by_adadelta
from gradxform.transforms.adam import (
    ScaleByAdamState, ScaleByAmsgradState, scale_by_adam, scale_by_amsgrad,
)
from gradxform.transforms.adam_variants import (
    ScaleByBeliefState, ScaleByRadamState, ScaleByYogiState, scale_by_belief, scale_by_radam,
    scale_by_yogi,
)
from gradxform.transforms.adamax import ScaleByAdamaxState, scale_by_adamax
from gradxform.transforms.adan import ScaleByAdanState, scale_by_adan
from gradxform.transforms.adaptive import (
    ScaleByAdagradState, ScaleByRmsState, ScaleByStddevState, scale_by_adagrad, scale_by_rms,
    scale_by_stddev,
)
from gradxform.transforms.ademamix import (
    ScaleByAdemamixState, ScaleBySimplifiedAdEMAMixState, scale_by_ademamix,
    scale_by_simplified_ademamix,
)
from gradxform.transforms.adopt import ScaleByAdoptState, adopt_clip_value, scale_by_adopt
from gradxform.transforms.backtracking_linesearch import (
    BacktrackingLinesearchInfo, ScaleByBacktrackingLinesearchState,
    scale_by_backtracking_linesearch,
)
from gradxform.transforms.block_clipping import adaptive_grad_clip, clip_by_block_rms
from gradxform.transforms.clipping import clip, clip_by_global_norm, clip_by_norm
from gradxform.transforms.p_norm_clipping import clip_by_global_p_norm
from gradxform.transforms.weight_decay_first import WeightDecayFirstState, weight_decay_first
from gradxform.transforms.cocob import COCOBState, scale_by_cocob
from gradxform.transforms.conditional import (
    ConditionallyMaskState, ConditionallyTransformState, conditionally_mask,
    conditionally_transform,
)
from gradxform.transforms.dog import (
    DoGState, DoWGState, ScaleByDistanceOverGradientsState, scale_by_distance_over_gradients,
    scale_by_dog, scale_by_dowg,
)
from gradxform.transforms.factored import FactoredState, adafactor_decay_rate, scale_by_factored_rms
from gradxform.transforms.finiteness import ApplyIfFiniteState, apply_if_finite
from gradxform.transforms.ftrl import FtrlState, ftrl
from gradxform.transforms.lazy_adam import ScaleByLazyAdamState, scale_by_lazy_adam
from gradxform.transforms.injection import (
    InjectHyperparamsState, InjectStatefulHyperparamsState, inject_hyperparams,
)
from gradxform.transforms.lbfgs import ScaleByLBFGSState, scale_by_lbfgs
from gradxform.transforms.lookahead import LookaheadParams, LookaheadState, lookahead
from gradxform.transforms.loss_scaling import (
    DynamicLossScaleState, StaticLossScaleState, current_loss_scale, dynamic_loss_scale,
    scale_loss, static_loss_scale,
)
from gradxform.transforms.madgrad import MadgradState, scale_by_madgrad
from gradxform.transforms.masking import MaskedNode, MaskedState, freeze, masked, set_to_zero
from gradxform.transforms.mechanic import MechanicState, mechanize
from gradxform.transforms.momentum import DampenedTraceState, EmaState, TraceState, ema, trace
from gradxform.transforms.monitoring import (
    MonitorState, RecordGlobalNormState, SnapshotState, monitor, record_global_norm, snapshot,
)
from gradxform.transforms.noise import AddNoiseState, add_noise
from gradxform.transforms.novograd import ScaleByNovogradState, scale_by_novograd
from gradxform.transforms.optimistic import (
    ScaleByOptimisticGradientState, scale_by_optimistic_gradient,
)
from gradxform.transforms.orthogonalize import (
    MuonState, orthogonalize_via_newton_schulz, scale_by_muon,
)
from gradxform.transforms.nadam import ScaleByNadamState, scale_by_nadam
from gradxform.transforms.params_ema import (
    ParamsAverageState, ParamsEmaState, finalize_params, params_average, params_ema,
)
from gradxform.transforms.partition import PartitionState, partition, partition_by_patterns
from gradxform.transforms.periodic import ApplyEvery, apply_every
from gradxform.transforms.plateau import ReduceLROnPlateauState, reduce_on_plateau
from gradxform.transforms.polyak import scale_by_polyak
from gradxform.transforms.prodigy import ProdigyState, scale_by_prodigy
from gradxform.transforms.rprop import ScaleByRpropState, scale_by_rprop
from gradxform.transforms.sam import NormalizeState, SAMState, normalize, sam
from gradxform.transforms.sanitizing import (
    ZeroNansState, centralize, keep_params_nonnegative, zero_nans,
)
from gradxform.transforms.scaling import (
    ScaleByScheduleState, scale, scale_by_learning_rate, scale_by_schedule,
)
from gradxform.transforms.schedule_free import (
    ScheduleFreeState, schedule_free, schedule_free_eval_params,
)
from gradxform.transforms.shape_scaling import scale_by_shape
from gradxform.transforms.sign import ScaleByLionState, scale_by_lion, scale_by_sign
from gradxform.transforms.sm3 import ScaleBySM3State, scale_by_sm3
from gradxform.transforms.sophia import (
    HutchinsonState, SophiaState, hutchinson_estimator_diag_hessian, scale_by_sophia,
)
from gradxform.transforms.trust_ratio import (
    scale_by_param_block_norm, scale_by_param_block_rms, scale_by_trust_ratio,
)
from gradxform.transforms.weight_decay import (
    AddDecayedWeightsState, DecoupledWeightDecayState, add_decayed_weights,
    decoupled_weight_decay,
)
from gradxform.transforms.zoom_linesearch import (
    ScaleByZoomLinesearchState, ZoomLinesearchInfo, scale_by_zoom_linesearch,
)
from gradxform import keras, schedules, sparse, torch
from gradxform.core.sparse import RowSparse
from gradxform.config import from_config, to_config
from gradxform.interop import to_optax
from gradxform.objective import value_and_grad_from_state
from gradxform.optimizers import (
    adabelief, adadelta, adafactor, adagrad, adam, adamax, adamaxw, adamw, adan, ademamix,
    adopt, amsgrad, cocob, dog, dowg, fromage, lamb, lars, lazy_adam, lbfgs, lion, madgrad,
    muon, nadam, nadamw, noisy_sgd, novograd, optimistic_adam, optimistic_gradient_descent,
    polyak_sgd, prodigy, radam, rmsprop, rprop, schedule_free_adamw, schedule_free_sgd, sgd,
    sign_sgd, signum, simplified_ademamix, sm3, sophia, yogi,
)
from gradxform.sharding import state_shardings
from gradxform.tree_updates import incremental_update, periodic_update

import importlib.metadata as _importlib_metadata

try:
    __version__ = _importlib_metadata.version("gradxform")
except _importlib_metadata.PackageNotFoundError:
    # A source tree on sys.path without being installed: no release to name.
    __version__ = "0+unknown"
del _importlib_metadata

__all__ = [
    "FtrlState", "RowSparse", "ScaleByLazyAdamState", "ftrl", "lazy_adam", "scale_by_lazy_adam",
    "sparse", "torch", "DampenedTraceState", "clip_by_global_p_norm", "WeightDecayFirstState",
    "weight_decay_first", "ScaleByNadamState", "scale_by_nadam", "ParamsAverageState",
    "params_average",
    "AccumulateGradientsState", "AddDecayedWeightsState", "AddNoiseState", "ApplyEvery",
    "ApplyIfFiniteState", "BacktrackingLinesearchInfo", "COCOBState", "ConditionallyMaskState",
    "ConditionallyTransformState", "DecoupledWeightDecayState", "DoGState", "DoWGState",
    "DynamicLossScaleState", "EmaState", "EmptyState", "FactoredState", "FlatTree",
    "GradientTransformation", "HutchinsonState", "InjectHyperparamsState",
    "InjectStatefulHyperparamsState", "LookaheadParams", "LookaheadState", "MadgradState",
    "MaskedNode", "MaskedState", "MechanicState", "MonitorState", "MultiSteps",
    "MultiStepsState", "MuonDimensionNumbers", "MuonState", "NormalizeState", "OptState",
    "Params", "ParamsEmaState", "PartitionState", "ProdigyState", "RecordGlobalNormState",
    "ReduceLROnPlateauState", "SAMState", "ScalarOrSchedule", "ScaleByAdaDeltaState",
    "ScaleByAdagradState", "ScaleByAdamState", "ScaleByAdamaxState", "ScaleByAdanState",
    "ScaleByAdemamixState", "ScaleByAdoptState", "ScaleByAmsgradState",
    "ScaleByBacktrackingLinesearchState", "ScaleByBeliefState",
    "ScaleByDistanceOverGradientsState", "ScaleByLBFGSState", "ScaleByLionState",
    "ScaleByNovogradState", "ScaleByOptimisticGradientState", "ScaleByRadamState",
    "ScaleByRmsState", "ScaleByRpropState", "ScaleBySM3State", "ScaleByScheduleState",
    "ScaleBySimplifiedAdEMAMixState", "ScaleByStddevState", "ScaleByYogiState",
    "ScaleByZoomLinesearchState", "Schedule", "ScheduleFreeState", "SnapshotState",
    "SophiaState", "StaticLossScaleState", "TraceState", "Updates", "ZeroNansState",
    "ZoomLinesearchInfo", "accumulate_gradients", "adabelief", "adadelta", "adafactor",
    "adafactor_decay_rate", "adagrad", "adam", "adamax", "adamaxw", "adamw", "adan",
    "adaptive_grad_clip", "add_decayed_weights", "add_noise", "ademamix", "adopt",
    "adopt_clip_value", "amsgrad", "apply_every", "apply_if_finite", "apply_updates",
    "centralize", "chain", "clip", "clip_by_block_rms", "clip_by_global_norm", "clip_by_norm",
    "cocob", "conditionally_mask", "conditionally_transform", "current_loss_scale",
    "decoupled_weight_decay", "dog", "dowg", "dynamic_loss_scale", "ema", "finalize_params",
    "flat_compiler_options", "flat_tree", "freeze", "from_config", "fromage",
    "hutchinson_estimator_diag_hessian", "identity", "incremental_update", "inject_hyperparams",
    "keep_params_nonnegative", "keras", "lamb", "lars", "lbfgs", "lion", "lookahead", "madgrad",
    "masked", "mechanize", "monitor", "multi_steps", "muon", "nadam", "nadamw", "named_chain",
    "noisy_sgd", "normalize", "novograd", "optimistic_adam", "optimistic_gradient_descent",
    "orthogonalize_via_newton_schulz", "params_ema", "partition", "partition_by_patterns",
    "periodic_update", "polyak_sgd", "prodigy", "radam", "record_global_norm",
    "reduce_on_plateau", "rmsprop", "rprop", "sam", "scale", "scale_by_adadelta",
    "scale_by_adagrad", "scale_by_adam", "scale_by_adamax", "scale_by_adan",
    "scale_by_ademamix", "scale_by_adopt", "scale_by_amsgrad",
    "scale_by_backtracking_linesearch", "scale_by_belief", "scale_by_cocob",
    "scale_by_distance_over_gradients", "scale_by_dog", "scale_by_dowg",
    "scale_by_factored_rms", "scale_by_lbfgs", "scale_by_learning_rate", "scale_by_lion",
    "scale_by_madgrad", "scale_by_muon", "scale_by_novograd", "scale_by_optimistic_gradient",
    "scale_by_param_block_norm", "scale_by_param_block_rms", "scale_by_polyak",
    "scale_by_prodigy", "scale_by_radam", "scale_by_rms", "scale_by_rprop", "scale_by_schedule",
    "scale_by_shape", "scale_by_sign", "scale_by_simplified_ademamix", "scale_by_sm3",
    "scale_by_sophia", "scale_by_stddev", "scale_by_trust_ratio", "scale_by_yogi",
    "scale_by_zoom_linesearch", "scale_loss", "schedule_free", "schedule_free_adamw",
    "schedule_free_eval_params", "schedule_free_sgd", "schedules", "set_to_zero", "sgd",
    "sign_sgd", "signum", "simplified_ademamix", "skip_large_updates", "skip_not_finite", "sm3",
    "snapshot", "sophia", "state_shardings", "stateless", "stateless_with_tree_map",
    "static_loss_scale", "to_config", "to_optax", "trace", "tree_get", "tree_global_norm",
    "tree_set", "value_and_grad_from_state", "yogi", "zero_nans",
]
