"""PyTorch presets: ``gx.torch.Adam(...)`` reproduces ``torch.optim.Adam``'s numbers.

torch is never imported: the presets are chains of gradxform's own transforms.
"""

from gradxform.torch.clipping import clip_grad_norm_, clip_grad_value_
from gradxform.torch.optimizers import SGD, Adagrad, Adam, AdamW, RMSprop

__all__ = ["Adagrad", "Adam", "AdamW", "RMSprop", "SGD", "clip_grad_norm_", "clip_grad_value_"]
