"""Keras optimizer configs in and out: `from_keras_config` and `to_keras_config`.

A Keras optimizer's ``get_config()`` holds its constructor arguments, a
learning-rate schedule as a serialized object (``{"module", "class_name",
"config", "registered_name"}``), and for a ``LossScaleOptimizer`` the inner
optimizer serialized the same way. ``keras.saving.serialize_keras_object``
wraps any of them in that form with its class name. Both directions go
through the presets: a config becomes the preset of its class called with its
arguments, and a preset's recorded arguments become Keras's config.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from gradxform.core.base import GradientTransformation
from gradxform.keras import loss_scale, momentum, presets, regularized
from gradxform.keras.muon import muon as _muon
from gradxform.schedules import keras as keras_schedules

_OWNER_IN, _OWNER_OUT = "keras.from_keras_config", "keras.to_keras_config"
# Keras class name -> preset; a Keras optimizer's default name is its class in snake case.
PRESETS = {
    "Adadelta": presets.adadelta, "Adagrad": presets.adagrad, "Adam": presets.adam,
    "AdamW": presets.adamw, "Adamax": presets.adamax, "Ftrl": regularized.ftrl,
    "Lamb": regularized.lamb, "Lion": momentum.lion, "Nadam": presets.nadam,
    "RMSprop": momentum.rmsprop, "SGD": momentum.sgd, "Adafactor": regularized.adafactor,
    "ScheduleFreeAdamW": regularized.schedule_free_adamw, "Muon": _muon,
    "LossScaleOptimizer": loss_scale.loss_scale_optimizer,
}
_DEFAULT_NAMES = {"adadelta": "Adadelta", "adagrad": "Adagrad", "adam": "Adam", "adam_w": "AdamW",
                  "adamax": "Adamax", "ftrl": "Ftrl", "lamb": "Lamb", "lion": "Lion", "nadam": "Nadam",
                  "rm_sprop": "RMSprop", "sgd": "SGD", "adafactor": "Adafactor",
                  "schedule_free_adam_w": "ScheduleFreeAdamW", "muon": "Muon",
                  "loss_scale_optimizer": "LossScaleOptimizer"}
SCHEDULES = {name: getattr(keras_schedules, name) for name in (
    "CosineDecay", "CosineDecayRestarts", "ExponentialDecay", "InverseTimeDecay",
    "PiecewiseConstantDecay", "PolynomialDecay")}


def _serialized(value: Any) -> bool:
    return isinstance(value, Mapping) and "class_name" in value and "config" in value


def _class_name(config: Mapping, class_name: str | None) -> str:
    if class_name is not None:
        return class_name
    if "inner_optimizer" in config:
        return "LossScaleOptimizer"
    name = config.get("name")
    default = re.sub(r"_\d+$", "", name) if isinstance(name, str) else None
    if default in _DEFAULT_NAMES:
        return _DEFAULT_NAMES[default]
    raise ValueError(
        f"{_OWNER_IN}: cannot tell the optimizer's class from its name {name!r}; pass "
        "class_name= (e.g. 'Adam'), or the keras.saving.serialize_keras_object form")


def _schedule(value: Any) -> Any:
    if not _serialized(value):
        return value
    cls = SCHEDULES.get(value["class_name"])
    if cls is None:
        raise ValueError(
            f"{_OWNER_IN}: the learning rate is a {value['class_name']!r}, which has no "
            f"gx.keras schedule (supported: {', '.join(sorted(SCHEDULES))})")
    return cls(**value["config"])


def from_keras_config(config: Mapping, class_name: str | None = None) -> GradientTransformation:
    r"""The ``gx.keras`` preset for a Keras optimizer's config.

    .. math::
        \mathrm{Cls}(\mathrm{config}) \mapsto \texttt{gx.keras.}\mathrm{cls}(**\mathrm{config})

    ``config`` is ``optimizer.get_config()`` or
    ``keras.saving.serialize_keras_object(optimizer)``. A serialized Keras
    schedule becomes the ``gx.keras`` schedule of that name, and a
    ``LossScaleOptimizer``'s inner optimizer is converted too. The preset then
    gives Keras's numbers (see each preset). Keras does not save
    ``exclude_from_weight_decay`` in its configs: pass the patterns to the
    preset yourself when you use them.

    Args:
      config: the Keras config (a mapping).
      class_name: the Keras class (``"Adam"``); needed with a bare
        ``get_config()`` only when the optimizer was given a name other than
        its default.

    Example:
      >>> import gradxform as gx
      >>> gx.keras.from_keras_config({"name": "adam", "learning_rate": 0.01, "beta_1": 0.8})
      ... # doctest: +ELLIPSIS
      chain(scale_by_adam(b1=0.8, ...), scale_by_learning_rate(learning_rate=0.01, ...))
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"{_OWNER_IN}: config must be a mapping, got {config!r:.80}")
    if class_name is not None and not isinstance(class_name, str):
        raise TypeError(f"{_OWNER_IN}: class_name must be a str or None, got {class_name!r}")
    if _serialized(config):
        class_name, config = config["class_name"], config["config"]
    class_name = _class_name(config, class_name)
    preset = PRESETS.get(class_name)
    if preset is None:
        raise ValueError(
            f"{_OWNER_IN}: class_name {class_name!r} (Keras's optimizer) has no gx.keras preset "
            f"(supported: {', '.join(sorted(PRESETS))})")
    arguments = dict(config)
    if class_name == "LossScaleOptimizer":
        arguments["inner"] = from_keras_config(arguments.pop("inner_optimizer"))
    elif "learning_rate" in arguments:
        arguments["learning_rate"] = _schedule(arguments["learning_rate"])
    return preset(**arguments)


def _schedule_config(value: Any) -> Any:
    if callable(value):
        name = type(value).__name__
        if SCHEDULES.get(name) is not type(value):
            raise ValueError(
                f"{_OWNER_OUT}: the learning rate {value!r:.80} is not a Keras schedule "
                f"(Keras configs hold {', '.join(sorted(SCHEDULES))} or a float)")
        return {"module": "keras.optimizers.schedules", "class_name": name,
                "config": value.get_config(), "registered_name": None}
    return value


def to_keras_config(tx: GradientTransformation) -> dict:
    r"""Keras's serialized config of the optimizer a ``gx.keras`` preset reproduces.

    .. math::
        \texttt{gx.keras.}\mathrm{cls}(**a) \mapsto
        \{\mathrm{class\_name}: \mathrm{Cls},\ \mathrm{config}: a\}

    The inverse of `from_keras_config`:
    ``keras.optimizers.deserialize(to_keras_config(tx))`` builds the Keras
    optimizer. ``tx`` must be what a preset returned (or its pickle), so that
    its arguments are known; ``exclude_from_weight_decay`` and non-Keras
    schedules have no place in a Keras config and raise.

    Args:
      tx: a transformation returned by a ``gx.keras`` preset.

    Example:
      >>> import gradxform as gx
      >>> config = gx.keras.to_keras_config(gx.keras.sgd(0.1, momentum=0.9))
      >>> config["class_name"], config["config"]["momentum"]
      ('SGD', 0.9)
    """
    if not isinstance(tx, GradientTransformation):
        raise TypeError(f"{_OWNER_OUT}: tx must be a transformation a gx.keras preset returned, "
                        f"got {tx!r}")
    called = tx.called_as
    owner = called.get("name", "")
    class_name = next((cls for cls, preset in PRESETS.items()
                       if owner == "keras." + preset.__name__), None)
    if class_name is None or "keras_arguments" not in called:
        raise ValueError(
            f"{_OWNER_OUT}: tx={tx!r} is not what a gx.keras preset returned, so its Keras "
            "arguments are unknown (a chain rebuilt by from_config is not a preset)")
    arguments = dict(called["keras_arguments"])
    if arguments.pop("exclude_from_weight_decay", None) is not None:
        raise ValueError(
            f"{_OWNER_OUT}: exclude_from_weight_decay is not part of Keras configs; call "
            "optimizer.exclude_from_weight_decay(var_names=...) on the Keras side instead")
    if arguments.get("name") is None:
        arguments["name"] = next(n for n, cls in _DEFAULT_NAMES.items() if cls == class_name)
    if class_name == "LossScaleOptimizer":
        arguments["inner_optimizer"] = to_keras_config(arguments.pop("inner"))
    else:
        arguments["learning_rate"] = _schedule_config(arguments["learning_rate"])
    module = "keras.optimizers"
    return {"module": module, "class_name": class_name, "config": arguments,
            "registered_name": None}
