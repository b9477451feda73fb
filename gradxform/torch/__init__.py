"""PyTorch presets: ``gx.torch.Adam(...)`` reproduces ``torch.optim.Adam``'s numbers.

torch is never imported: the presets are chains of gradxform's own transforms.
"""

from gradxform.torch.annealing import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    OneCycleLR,
    OneCycleMomentum,
)
from gradxform.torch.clipping import clip_grad_norm_, clip_grad_value_
from gradxform.torch.more_optimizers import Adadelta, Adafactor, Adamax, NAdam, RAdam
from gradxform.torch.muon import Muon
from gradxform.torch.optimizers import SGD, Adagrad, Adam, AdamW, RMSprop
from gradxform.torch.plateau import ReduceLROnPlateau, TorchPlateauState
from gradxform.torch.rprop_asgd import ASGD, Rprop
from gradxform.torch.schedules import (
    ConstantLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiStepLR,
    PolynomialLR,
    SequentialLR,
    StepLR,
)
from gradxform.torch.sparse_adam import SparseAdam

__all__ = [
    "ASGD", "Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "ConstantLR",
    "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "ExponentialLR", "LambdaLR", "LinearLR",
    "MultiStepLR", "Muon", "NAdam", "OneCycleLR", "OneCycleMomentum", "PolynomialLR", "RAdam",
    "RMSprop", "ReduceLROnPlateau", "Rprop", "SGD", "SequentialLR", "SparseAdam", "StepLR",
    "TorchPlateauState", "clip_grad_norm_", "clip_grad_value_",
]
