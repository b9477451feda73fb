"""Constructor checks of ``gx.keras.adagrad`` / ``adam`` / ``loss_scale_optimizer`` vs live Keras.

The tables below are explicit; every row runs Keras 3.15.1 live. They hold:

* KERAS_ERRORS: 16 argument sets Keras rejects with a ValueError; both presets
  must raise a ValueError containing Keras's message verbatim (32 cases);
* KERAS_ACCEPTS: 32 arguments Keras accepts silently although they cannot be
  meant; the preset must raise a ValueError or TypeError naming the argument
  and the value (58 cases over the presets that take the argument);
* KERAS_REJECTS_WE_ACCEPT: 4 learning rates Keras rejects and the presets take;
* LSO_KERAS_ERRORS: 6 ``LossScaleOptimizer`` argument sets;
* plus an inner preset with ``loss_scale_factor`` under ``loss_scale_optimizer``.

`test_docstring_differences_are_all_in_the_table` parses the presets'
documented list of stricter checks and requires a row for each item.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
import warnings
from ast import literal_eval

import jax.numpy as jnp
import keras
import numpy as np
import pytest

import gradxform as gx
from tests.keras.harness import assert_runs_equal, run_gradxform

_KERAS = {"adam": keras.optimizers.Adam, "adagrad": keras.optimizers.Adagrad}
_OWN_ARGS = {
    "adam": {"beta_1", "beta_2", "amsgrad"},
    "adagrad": {"initial_accumulator_value"},
}


def _optimizers_for(kwargs: dict) -> list:
    """Both presets, unless an argument belongs to only one of them."""
    foreign = {name: set().union(*_OWN_ARGS.values()) - own for name, own in _OWN_ARGS.items()}
    return [name for name in _OWN_ARGS if not set(kwargs) & foreign[name]]


def _keras_error(build) -> str:
    with pytest.raises(ValueError) as info:
        build()
    return str(info.value)


def _keras_builds(build) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns about `decay`
        build()


# --------------------------------------------------------------------------- Keras raises

KERAS_ERRORS = {
    "clipnorm+global_clipnorm": dict(clipnorm=1.0, global_clipnorm=1.0),
    "clipnorm+clipvalue": dict(clipnorm=1.0, clipvalue=0.5),
    "clipvalue+global_clipnorm": dict(clipvalue=0.5, global_clipnorm=1.0),
    "clipnorm=0.0+global_clipnorm": dict(clipnorm=0.0, global_clipnorm=1.0),
    "all-three-clips": dict(clipnorm=1.0, clipvalue=1.0, global_clipnorm=1.0),
    "gas=1": dict(gradient_accumulation_steps=1),
    "gas=-2": dict(gradient_accumulation_steps=-2),
    "gas=True": dict(gradient_accumulation_steps=True),
    "ema_momentum=1.5": dict(use_ema=True, ema_momentum=1.5),
    "ema_momentum=-0.1": dict(use_ema=True, ema_momentum=-0.1),
    "ema_overwrite_frequency=-1": dict(use_ema=True, ema_overwrite_frequency=-1),
    "ema_overwrite_frequency=2.0": dict(use_ema=True, ema_overwrite_frequency=2.0),
    "unknown-foo": dict(foo=1),
    "unknown-two": dict(foo=1, bar="x"),
    "legacy-lr": dict(lr=0.1),
    "legacy-jit_compile": dict(jit_compile=True),
}


@pytest.mark.parametrize("optimizer", ["adam", "adagrad"])
@pytest.mark.parametrize("case", list(KERAS_ERRORS))
def test_keras_constructor_errors_reproduced_verbatim(case, optimizer):
    kwargs = KERAS_ERRORS[case]
    expected = _keras_error(lambda: _KERAS[optimizer](**kwargs))
    with pytest.raises(ValueError) as info:
        getattr(gx.keras, optimizer)(**kwargs)
    message = str(info.value)
    assert message.startswith(f"keras.{optimizer}: "), message
    assert expected in message, (expected, message)


# --------------------------------------------------------------------------- Keras accepts, we raise


def _no_argument_rate():
    return 0.1


# (id, kwargs): the error must name the argument (the one besides use_ema) and its value
KERAS_ACCEPTS = [
    ("learning_rate<0", dict(learning_rate=-0.1)),
    ("learning_rate-callable-no-step", dict(learning_rate=_no_argument_rate)),
    ("learning_rate-lambda-no-step", dict(learning_rate=lambda: 0.1)),
    ("weight_decay<0", dict(weight_decay=-0.1)),
    ("clipnorm=0", dict(clipnorm=0.0)),
    ("clipnorm<0", dict(clipnorm=-1.0)),
    ("clipvalue=0", dict(clipvalue=0.0)),
    ("clipvalue<0", dict(clipvalue=-0.5)),
    ("global_clipnorm=0", dict(global_clipnorm=0.0)),
    ("global_clipnorm<0", dict(global_clipnorm=-1.0)),
    ("epsilon=0", dict(epsilon=0.0)),
    ("epsilon<0", dict(epsilon=-1e-7)),
    ("initial_accumulator_value<0", dict(initial_accumulator_value=-0.1)),
    ("beta_1=1", dict(beta_1=1.0)),
    ("beta_1<0", dict(beta_1=-0.1)),
    ("beta_2=1", dict(beta_2=1.0)),
    ("beta_2>1", dict(beta_2=1.5)),
    ("beta_2<0", dict(beta_2=-0.5)),
    ("loss_scale_factor=0", dict(loss_scale_factor=0.0)),
    ("loss_scale_factor<0", dict(loss_scale_factor=-1.0)),
    ("loss_scale_factor=inf", dict(loss_scale_factor=math.inf)),
    ("loss_scale_factor=nan", dict(loss_scale_factor=math.nan)),
    ("gas=2.5", dict(gradient_accumulation_steps=2.5)),
    ("ema_overwrite_frequency=0", dict(use_ema=True, ema_overwrite_frequency=0)),
    ("ema_overwrite_frequency=True", dict(use_ema=True, ema_overwrite_frequency=True)),
    ("no-ema-overwrite_frequency=0", dict(use_ema=False, ema_overwrite_frequency=0)),
    ("no-ema-overwrite_frequency=True", dict(use_ema=False, ema_overwrite_frequency=True)),
    ("no-ema-overwrite_frequency=-1", dict(use_ema=False, ema_overwrite_frequency=-1)),
    ("no-ema-overwrite_frequency=2.0", dict(use_ema=False, ema_overwrite_frequency=2.0)),
    ("no-ema-momentum=1.5", dict(use_ema=False, ema_momentum=1.5)),
    ("no-ema-momentum<0", dict(use_ema=False, ema_momentum=-0.1)),
    ("decay", dict(decay=0.1)),
]
_ROWS = [
    pytest.param(kwargs, optimizer, id=f"{case}-{optimizer}")
    for case, kwargs in KERAS_ACCEPTS
    for optimizer in _optimizers_for(kwargs)
]


@pytest.mark.parametrize("kwargs, optimizer", _ROWS)
def test_nonsense_keras_accepts_raises_here(kwargs, optimizer):
    (argument,) = [key for key in kwargs if key != "use_ema"]
    _keras_builds(lambda: _KERAS[optimizer](**kwargs))
    with pytest.raises((ValueError, TypeError)) as info:
        getattr(gx.keras, optimizer)(**kwargs)
    message, value = str(info.value), kwargs[argument]
    assert message.startswith(f"keras.{optimizer}: ") and argument in message, message
    assert f"={value!r}" in message or f"got {value!r}" in message, (value, message)


# --------------------------------------------------------------------------- Keras raises, we accept

KERAS_REJECTS_WE_ACCEPT = {
    "int": 1,
    "numpy-int64": np.int64(1),
    "numpy-float32": np.float32(1.0),
    "jax-scalar": jnp.float32(1.0),
}


@pytest.mark.parametrize("case", list(KERAS_REJECTS_WE_ACCEPT))
def test_learning_rate_types_keras_rejects_are_accepted_as_the_float(case):
    value = KERAS_REJECTS_WE_ACCEPT[case]
    message = _keras_error(lambda: keras.optimizers.Adam(learning_rate=value))
    assert "Argument `learning_rate` should be float" in message
    kwargs = dict(weight_decay=0.1, name="my_adagrad", gradient_accumulation_steps=2)
    assert_runs_equal(
        run_gradxform(gx.keras.adagrad(learning_rate=value, **kwargs)),
        run_gradxform(gx.keras.adagrad(learning_rate=1.0, **kwargs)),
        f"learning_rate={value!r}",
    )


# --------------------------------------------------------------------------- LossScaleOptimizer

LSO_KERAS_ERRORS = [
    pytest.param(dict(dynamic=False), id="dynamic=False"),
    pytest.param(dict(foo=1), id="unknown"),
    pytest.param(dict(foo=1, bar=2), id="two-unknown"),
    pytest.param(dict(learning_rate=0.1), id="learning_rate"),
    pytest.param(dict(clipnorm=1.0), id="base-kwarg-clipnorm"),
    pytest.param(dict(clipnorm=None), id="base-kwarg-default"),
]


@pytest.mark.parametrize("kwargs", LSO_KERAS_ERRORS)
def test_loss_scale_optimizer_errors_reproduced_verbatim(kwargs):
    inner = keras.optimizers.Adam()
    try:
        keras.optimizers.LossScaleOptimizer(inner, **kwargs)
        expected = None
    except ValueError as error:
        expected = str(error)
    if expected is None:  # Keras accepts: so must we
        gx.keras.loss_scale_optimizer(gx.keras.adam(), **kwargs)
        return
    with pytest.raises(ValueError) as info:
        gx.keras.loss_scale_optimizer(gx.keras.adam(), **kwargs)
    assert str(info.value).startswith("keras.loss_scale_optimizer: ")
    assert expected in str(info.value), (expected, str(info.value))


@pytest.mark.parametrize("optimizer", ["adam", "adagrad"])
def test_loss_scale_optimizer_rejects_inner_static_loss_scale(optimizer):
    inner = _KERAS[optimizer](loss_scale_factor=64.0)
    keras.optimizers.LossScaleOptimizer(inner)  # Keras silently drops the factor
    assert inner.loss_scale_factor is None
    preset = getattr(gx.keras, optimizer)(loss_scale_factor=64.0, gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match="loss_scale_factor"):
        gx.keras.loss_scale_optimizer(preset)
    gx.keras.loss_scale_optimizer(getattr(gx.keras, optimizer)(loss_scale_factor=None))


# --------------------------------------------------------------------------- bookkeeping

_PARAMS = set(inspect.signature(gx.keras.adam).parameters) | set(
    inspect.signature(gx.keras.adagrad).parameters
)
_TOKEN = re.compile(
    r"``(?P<code>[^`]+)``|(?P<negative>\bnegative\b)|(?P<zero>\bzero\b)"
    r"|(?P<nonfinite>not finite)|outside \[(?P<lo>[^,]+), (?P<hi>[^\])]+)(?P<close>[\])])"
    r"|(?P<callable>\bcallable\b)|(?P<unknown>unknown argument)"
)


def _bullets(doc: str) -> list:
    section = doc.split("instead:", 1)[1].split("Also:", 1)[0]
    return [" ".join(b.split()) for b in re.split(r"\n\s*\* ", section)[1:]]


def _is(value, literal) -> bool:
    if isinstance(literal, float) and math.isnan(literal):
        return isinstance(value, float) and math.isnan(value)
    return type(value) is type(literal) and value == literal


def _requirements(bullet: str):
    """(names, description, predicate, all_names) items, each qualifier applied to its names."""
    group, fresh, items, names, assignments = [], False, [], [], []

    def qualify(description, predicate, every=True):
        nonlocal fresh
        fresh = False
        items.append((tuple(group), description, predicate, every))

    for m in _TOKEN.finditer(bullet):
        code = m.group("code")
        if code is not None and (code in _PARAMS or code == "decay"):
            group = group if fresh else []
            fresh = True
            group.append(code)
            names.append(code)
        elif code is not None and "=" in code:
            key, value = code.split("=")
            assignments.append((key, literal_eval(value)))
        elif code is not None:
            literal = literal_eval(code)
            qualify(f"== {code}", lambda v, lit=literal: _is(v, lit))
        elif m.group("negative"):
            qualify("negative", lambda v: not isinstance(v, bool) and not callable(v) and v < 0)
        elif m.group("zero"):
            qualify("zero", lambda v: not isinstance(v, bool) and v == 0)
        elif m.group("nonfinite"):
            qualify("inf", lambda v: isinstance(v, float) and math.isinf(v))
            qualify("nan", lambda v: isinstance(v, float) and math.isnan(v))
        elif m.group("lo"):
            lo, hi = float(m.group("lo")), float(m.group("hi"))
            qualify(f"< {lo}", lambda v, lo=lo: v < lo)
            if m.group("close") == ")":
                qualify(f">= {hi}", lambda v, hi=hi: v >= hi)
            else:
                qualify(f"> {hi}", lambda v, hi=hi: v > hi)
        elif m.group("callable"):
            qualify("callable", callable, every=False)
        elif m.group("unknown"):
            items.append(((), "unknown argument", None, False))
    return names, assignments, items


def test_docstring_differences_are_all_in_the_table():
    assert _bullets(gx.keras.adam.__doc__) == _bullets(gx.keras.adagrad.__doc__)
    bullets = _bullets(gx.keras.adam.__doc__)
    assert len(bullets) >= 9, bullets
    rows = [kwargs for _, kwargs in KERAS_ACCEPTS]
    for bullet in bullets:
        names, assignments, items = _requirements(bullet)
        assert names, f"no argument found in: {bullet}"
        for name in names:
            assert any(name in row for row in rows), (bullet, name)
        for group, description, predicate, every in items:
            if predicate is None:  # an unknown argument: Keras rejects it too
                assert any(set(kw) - _PARAMS - {"decay"} for kw in KERAS_ERRORS.values()), bullet
                continue
            # "even when use_ema=False": each case also with the assignment
            for candidates in (rows, [r for r in rows if all(_is(r.get(k), v) for k, v in assignments)]):
                found = [any(n in row and predicate(row[n]) for row in candidates) for n in group]
                assert (all if every else any)(found), (bullet, group, description, assignments)


def test_case_counts_in_module_docstring():
    doc = sys.modules[__name__].__doc__
    counts = {name: int(n) for name, n in re.findall(r"\* (\w+): (\d+)", doc)}
    assert counts == {
        "KERAS_ERRORS": len(KERAS_ERRORS),
        "KERAS_ACCEPTS": len(KERAS_ACCEPTS),
        "KERAS_REJECTS_WE_ACCEPT": len(KERAS_REJECTS_WE_ACCEPT),
        "LSO_KERAS_ERRORS": len(LSO_KERAS_ERRORS),
    }
    assert f"({2 * len(KERAS_ERRORS)} cases)" in doc
    assert f"({len(_ROWS)} cases over" in doc
