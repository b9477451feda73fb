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

__all__ = [
    "ASGD", "Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "ConstantLR", "NAdam", "RAdam",
    "Rprop", "CosineAnnealingLR", "CosineAnnealingWarmRestarts",
    "ExponentialLR", "LambdaLR", "LinearLR", "MultiStepLR", "OneCycleLR", "OneCycleMomentum",
    "PolynomialLR", "RMSprop", "ReduceLROnPlateau", "SGD", "SequentialLR", "StepLR",
    "TorchPlateauState", "clip_grad_norm_", "clip_grad_value_",
]
