"""The arguments every Keras optimizer takes: their checks, with Keras's messages, and docs."""

from __future__ import annotations

import inspect
import numbers
from typing import Any, NamedTuple

import numpy as np

from gradxform.core import masks, validation
from gradxform.transforms.loss_scaling import check_scale

DIFFERENCES = r"""
    Differences from Keras 3 (the guide "Porting from Keras" explains each):

    Where Keras 3 silently accepts a value that cannot be meant, this raises a
    `ValueError` (or `TypeError`) instead:

    * ``learning_rate``, ``weight_decay`` negative; a callable ``learning_rate``
      that takes no step argument (Keras calls such callables with no
      arguments; here every callable is a schedule of the step);
    * ``clipnorm``, ``clipvalue``, ``global_clipnorm`` zero or negative (Keras
      then does not clip);
    * ``epsilon`` zero or negative (Keras may then divide 0 by 0);
    * ``initial_accumulator_value`` negative (Adagrad; Keras then gives NaN);
    * ``beta_1`` or ``beta_2`` outside [0, 1) (Adam);
    * ``loss_scale_factor`` zero, negative or not finite (Keras divides by it);
    * ``gradient_accumulation_steps`` not an int, e.g. ``2.5``;
    * ``ema_momentum`` outside [0, 1] or ``ema_overwrite_frequency`` not an int
      >= 1 (``0``, ``True``), even when ``use_ema=False``;
    * ``decay`` (Keras warns and ignores it) and any other unknown argument.

    Also: ``learning_rate`` may be an int or a jax scalar (Keras wants a Python
    float); ``name`` is accepted for compatibility with Keras configs and
    unused, as gradxform states have no variable names;
    ``exclude_from_weight_decay`` patterns are searched in each leaf's key path
    (``"dense/bias"``) rather than in the variable's short name. On non-finite
    gradients ``global_clipnorm`` makes the finite entries 0 and the others NaN
    (optax's formula) where Keras makes all of them NaN.

    Moments are updated as :math:`(1-\beta) g + \beta m` (optax's form) rather
    than Keras's :math:`m + (g - m)(1-\beta)`. At the usual betas (0.9 to
    0.999) both round to within about one float32 unit of the exact value
    (this form at most 1.3 units of the larger of :math:`g` and :math:`m`,
    Keras's at most 0.7); at :math:`\beta = 0` this form is exact
    (:math:`m_t = g_t`) and Keras's is not: with ``beta_1=beta_2=0``, a
    gradient of 1 after one of 1e8 leaves Keras's :math:`m` and :math:`v` at 0
    and its step at 0, where the exact step is :math:`-\eta`; over 24 calls
    Keras's parameters drift from the float64 formula by up to 3e-3 (thousands
    when a few gradients are 30 to 100 times larger), these by 7e-7. For
    :math:`0 < \beta < 3 \cdot 10^{-8}`, :math:`1-\beta` rounds to 1 in
    float32, and Keras's form then drops :math:`\beta` altogether.

    float16 and bfloat16 parameters are computed in float32 and stored in their
    own dtype (Adam's :math:`v` and Adagrad's sum of squares in float32 for
    float16). Keras computes in the variable's dtype, where in bfloat16
    ``beta_2=0.999`` rounds to 1 and Adam never moves; in float16, Adam's
    :math:`v` underflows to 0 for gradients below about 5e-3 (its steps become
    50 to 1300 times the learning rate) and overflows for gradients of 256 and
    more (no step, then NaN), and Adagrad stops for good once its sum of
    squares passes 65504.

    A ``None`` gradient where ``init`` saw an array raises a `ValueError`, as
    does any gradient tree that does not match the state; Keras drops that
    variable from the step with a warning. Put ``None`` in the params given to
    ``init`` too, and the parameter is left out with no state.

    The presets can be pickled: ``pickle.loads(pickle.dumps(tx))`` has the
    same ``repr`` and gives the same numbers.
"""


BASE_ARGS = """weight_decay: :math:`\\lambda \\ge 0`, or None.
      clipnorm: clip each leaf to this L2 norm (at most one clipping argument).
      clipvalue: clip each element to :math:`[-c, c]`.
      global_clipnorm: clip all leaves together to this global norm.
      use_ema: keep an average of the parameters; read it with `finalize_params`.
      ema_momentum: the average's momentum, in [0, 1].
      ema_overwrite_frequency: overwrite the params with the average every this
        many steps, or None.
      loss_scale_factor: divide the gradients by this, a number in [2**-126,
        2**126] (so that its inverse is a normal float32); scale the loss with
        ``gx.scale_loss(loss, state)``.
      gradient_accumulation_steps: update every this many calls (an int >= 2),
        with the mean gradient.
      exclude_from_weight_decay: regex patterns; leaves whose key path matches
        one are not decayed.
      name: accepted for Keras compatibility; unused.
      **kwargs: anything else raises, as in Keras."""


BASE_DEFAULTS = {
    "weight_decay": None,
    "clipnorm": None,
    "global_clipnorm": None,
    "clipvalue": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}


def keras_error(owner: str, message: str) -> ValueError:
    return ValueError(f"{owner}: {message}")


def _check_learning_rate(owner: str, learning_rate: Any) -> None:
    if callable(learning_rate):
        try:
            inspect.signature(learning_rate).bind(0)
        except TypeError:
            raise TypeError(
                f"{owner}: learning_rate must be a float or a schedule called with the step, "
                f"got {learning_rate!r}, which cannot be called with one argument"
            ) from None
        except ValueError:  # no signature to inspect (a builtin): trust it
            pass
        return
    validation.non_negative(owner, "learning_rate", learning_rate)


def _check_positive_or_none(owner: str, name: str, value: Any) -> None:
    if value is None:
        return
    number = validation.real_number(owner, name, value)  # None for a traced (injected) value
    if number is not None and number <= 0:
        raise keras_error(owner, f"{name} must be > 0 or None, got {value!r} (Keras would not clip)")
    validation.positive(owner, name, value)  # and not 0 once rounded to float32


class KerasBase(NamedTuple):
    """The arguments every Keras optimizer takes, beside its own."""

    learning_rate: Any
    weight_decay: Any
    clipnorm: Any
    clipvalue: Any
    global_clipnorm: Any
    use_ema: Any
    ema_momentum: Any
    ema_overwrite_frequency: Any
    loss_scale_factor: Any
    gradient_accumulation_steps: Any
    exclude_from_weight_decay: Any


def checked_base(owner: str, arguments: dict) -> KerasBase:
    """The shared arguments from a preset's ``locals()``, checked (``name`` and ``kwargs`` too)."""
    base = KerasBase(**{field: arguments[field] for field in KerasBase._fields})
    check_base_arguments(owner, base, arguments["kwargs"])
    validation.string(owner, "name", arguments["name"], allow_none=True)
    return base


def check_base_arguments(owner: str, base: KerasBase, kwargs: dict) -> None:
    """Keras's constructor checks with Keras's messages, then the stricter ones."""
    if kwargs:
        if "decay" in kwargs:
            raise keras_error(
                owner,
                f"argument `decay` is no longer supported (Keras ignores it), got "
                f"decay={kwargs['decay']!r}",
            )
        raise keras_error(owner, f"Argument(s) not recognized: {kwargs}")
    clipping = (base.clipnorm, base.clipvalue, base.global_clipnorm)
    if sum(value is not None for value in clipping) > 1:
        raise keras_error(
            owner,
            "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
            f"Received: clipnorm={base.clipnorm}, clipvalue={base.clipvalue}, "
            f"global_clipnorm={base.global_clipnorm}",
        )
    gas = base.gradient_accumulation_steps
    if gas is not None and not isinstance(gas, (int, np.integer)):  # bools: Keras's error below
        validation.positive_int(owner, "gradient_accumulation_steps", gas, minimum=2)
    if gas is not None and gas != 0 and not _is_int_at_least(gas, 2):
        raise keras_error(
            owner,
            "`gradient_accumulation_steps` must be an integer >= 2. "
            f"Received: gradient_accumulation_steps={gas!r}",
        )
    if gas:
        validation.positive_int(owner, "gradient_accumulation_steps", gas, minimum=2)
    ema_momentum = validation.real_number(owner, "ema_momentum", base.ema_momentum)
    if ema_momentum is not None and not 0 <= ema_momentum <= 1:
        raise keras_error(
            owner,
            "`ema_momentum` must be in the range [0, 1]. "
            f"Received: ema_momentum={base.ema_momentum!r}",
        )
    frequency = base.ema_overwrite_frequency
    if frequency is not None and not isinstance(frequency, numbers.Real):  # 2.0: Keras's error
        validation.positive_int(owner, "ema_overwrite_frequency", frequency, allow_none=True)
    if frequency is not None and not _is_int_at_least(frequency, 1):
        raise keras_error(
            owner,
            "`ema_overwrite_frequency` must be an integer >= 1 or None. "
            f"Received: ema_overwrite_frequency={frequency!r}",
        )
    validation.positive_int(owner, "ema_overwrite_frequency", frequency, allow_none=True)
    validation.boolean(owner, "use_ema", base.use_ema)
    masks.compile_patterns(owner, "exclude_from_weight_decay", base.exclude_from_weight_decay)
    _check_learning_rate(owner, base.learning_rate)
    if base.weight_decay is not None:
        validation.non_negative(owner, "weight_decay", base.weight_decay)
    for name, value in zip(("clipnorm", "clipvalue", "global_clipnorm"), clipping):
        _check_positive_or_none(owner, name, value)
    if base.loss_scale_factor is not None:
        validation.positive(owner, "loss_scale_factor", base.loss_scale_factor)
        check_scale(owner, "loss_scale_factor", base.loss_scale_factor)


def _is_int_at_least(value: Any, minimum: int) -> bool:
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    return is_int and value >= minimum
