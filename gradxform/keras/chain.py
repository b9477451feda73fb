"""The chain every Keras preset is: Keras's order of operations around an optimizer's own rule.

In Keras's order (``keras_semantics.md`` section 1):

1. ``static_loss_scale(loss_scale_factor)``: gradients divided first;
2. ``accumulate_gradients(..., gradient_accumulation_steps)`` around 3 to 6;
3. ``clip_by_norm(clipnorm)``, ``clip(clipvalue)`` or ``clip_by_global_norm(global_clipnorm)``;
4. the optimizer's rule, learning rate included (``scale_by_adagrad`` then
   ``scale_by_learning_rate(learning_rate)``, for example);
5. ``decoupled_weight_decay(weight_decay, learning_rate, exclude=exclude_from_weight_decay)``;
6. ``params_ema(ema_momentum, ema_overwrite_frequency, calls_per_step=gradient_accumulation_steps)``.

Keras decays the weights before its rule runs. For rules that do not read the
params the order of 4 and 5 does not change the numbers; a rule that does
(FTRL, LAMB) runs inside ``weight_decay_first(decay, rule)`` instead.
"""

from __future__ import annotations

from typing import Callable, Sequence

from gradxform.core.base import GradientTransformation, ScalarOrSchedule, returned_by
from gradxform.core.combine import chain
from gradxform.keras.arguments import BASE_ARGS, DIFFERENCES, KerasBase
from gradxform.schedules.micro_steps import AtLastMicroStep
from gradxform.transforms.accumulation import accumulate_gradients
from gradxform.transforms.clipping import clip, clip_by_global_norm, clip_by_norm
from gradxform.transforms.loss_scaling import static_loss_scale
from gradxform.transforms.params_ema import params_ema
from gradxform.transforms.scaling import scale_by_learning_rate
from gradxform.transforms.weight_decay import decoupled_weight_decay
from gradxform.transforms.weight_decay_first import weight_decay_first

Rule = Callable[[ScalarOrSchedule], Sequence[GradientTransformation]]


def scaled_by_learning_rate(scaling: GradientTransformation) -> Rule:
    """The rule ``scaling`` followed by the learning rate (Adagrad, Adam, ...)."""
    return lambda learning_rate: [scaling, scale_by_learning_rate(learning_rate)]


def keras_chain(rule: Rule, base: KerasBase, reads_params: bool = False) -> GradientTransformation:
    """The chain in Keras's order (see the module docstring); ``rule(learning_rate)`` is step 4.

    ``reads_params``: the rule reads the params, so it must see them decayed."""
    every_k = base.gradient_accumulation_steps or None
    learning_rate = base.learning_rate
    if every_k and callable(learning_rate):
        learning_rate = AtLastMicroStep(learning_rate, every_k)
    update = []
    if base.clipnorm is not None:
        update.append(clip_by_norm(base.clipnorm))
    elif base.clipvalue is not None:
        update.append(clip(base.clipvalue))
    elif base.global_clipnorm is not None:
        update.append(clip_by_global_norm(base.global_clipnorm))
    steps = list(rule(learning_rate))
    if base.weight_decay is not None:
        decay = decoupled_weight_decay(
            base.weight_decay, learning_rate, exclude=base.exclude_from_weight_decay)
        steps = ([weight_decay_first(decay, chain(*steps))] if reads_params
                 else steps + [decay])
    update += steps
    members = [] if base.loss_scale_factor is None else [static_loss_scale(base.loss_scale_factor)]
    members += [accumulate_gradients(chain(*update), every_k)] if every_k else update
    if base.use_ema:
        members.append(
            params_ema(base.ema_momentum, base.ema_overwrite_frequency, calls_per_step=every_k or 1)
        )
    return chain(*members)


def keras_preset(owner: str, tx: GradientTransformation, arguments: dict) -> GradientTransformation:
    """``tx`` as what the preset ``owner`` returned, called with ``arguments``.

    Its update's errors name the preset; ``pickle`` stores it as that call (so a
    pickled preset stays a preset), and `to_keras_config` reads the arguments.
    """
    tx = returned_by(tx, owner)
    call = {name: value for name, value in arguments.items() if name != "kwargs"}
    tx.called_as["keras_arguments"] = call
    tx.rebuild = (_call_preset, (owner, call))
    return tx


def _call_preset(owner: str, arguments: dict) -> GradientTransformation:
    import gradxform.keras as presets  # the package that imports this module

    return getattr(presets, owner.split(".", 1)[1])(**arguments)


def fill_docstrings(*presets: Callable) -> None:
    """Puts the shared arguments and the differences from Keras into each preset's docstring."""
    for preset in presets:
        if preset.__doc__:  # None under python -OO
            preset.__doc__ = preset.__doc__.replace("{differences}", DIFFERENCES).replace(
                "{base_args}", BASE_ARGS)
