"""Errors that name the function the user called.

gradxform's own checks raise messages that start with the public function
that found the problem (``scale_by_learning_rate: learning_rate must be in
[0, inf), got -1.0``). When that function was called by another one the user
called (``gx.adagrad(-1.0)`` builds ``scale_by_learning_rate``; ``adam``'s
``update`` runs ``scale_by_adam``'s), the error leaves the outermost call
naming the user's function instead (``adagrad: learning_rate must be ...``),
and says where it was found when the argument has another name there.

Calls are tracked per thread, for construction and for ``update`` separately;
``jit`` traces in the calling thread, so errors raised while tracing are named
the same way.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import re
import threading
from typing import Any, Iterator

# Names of gradxform's public constructors, added as they are decorated.
PUBLIC_NAMES: set[str] = set()

# Names users bring from Keras, PyTorch and optax's older spellings.
ALIASES = {
    "lr": "learning_rate", "beta1": "b1", "beta_1": "b1", "beta2": "b2", "beta_2": "b2",
    "epsilon": "eps", "betas": "b1", "rho": "decay", "weight_decay_rate": "weight_decay",
}

_LOCAL = threading.local()
_OWNER = re.compile(r"([\w.]+): ")


def _stack(kind: str) -> list[str]:
    stacks = _LOCAL.__dict__.setdefault("stacks", {})
    return stacks.setdefault(kind, [])


@contextlib.contextmanager
def call(kind: str, name: str, parameters: Any = None, *, container: bool = False) -> Iterator[None]:
    """Runs the body as a call of ``name``; the outermost call renames errors from inner ones.

    Args:
      kind: ``"build"`` or ``"update"``: the two are tracked apart.
      name: the public name of the function being called.
      parameters: its parameter names (for ``"build"``), so that an inner
        error about an argument the outer function also takes reads as the
        outer function's.
      container: a plain ``chain`` the user assembled: its members' errors keep
        their own names, which say more than "chain".
    """
    if container:
        yield
        return
    stack = _stack(kind)
    outermost = not stack
    stack.append(name)
    try:
        yield
    except (TypeError, ValueError) as error:
        renamed = attributed(name, error, parameters) if outermost else None
        if renamed is None:
            raise
        raise renamed.with_traceback(error.__traceback__) from None
    finally:
        stack.pop()


def attributed(outer: str, error: Exception, parameters: Any = None) -> Exception | None:
    """``error`` re-worded to name ``outer``, or None when it names no other public function."""
    message = str(error)
    match = _OWNER.match(message)
    if match is None or match.group(1) == outer or match.group(1) not in PUBLIC_NAMES:
        return None
    inner, rest = match.group(1), message[match.end():]
    argument = re.match(r"\w+", rest)
    if parameters is not None and argument is not None and argument.group(0) in parameters:
        text = f"{outer}: {rest}"
    else:
        first, newline, details = rest.partition("\n")
        text = f"{outer}: {first} (found by the {inner} it builds){newline}{details}"
    try:
        return type(error)(text)
    except Exception:  # an exception type with another constructor: keep it as it is
        return None


def signature_text(name: str, signature: inspect.Signature) -> str:
    """``adam(learning_rate, b1=0.9, ...)``: the call, without annotations."""
    parts = []
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            parts.append(f"*{parameter.name}")
        elif parameter.kind is parameter.VAR_KEYWORD:
            parts.append(f"**{parameter.name}")
        elif parameter.default is parameter.empty:
            parts.append(parameter.name)
        else:
            parts.append(f"{parameter.name}={parameter.default!r}")
    return f"{name}({', '.join(parts)})"


def bind(name: str, signature: inspect.Signature, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    """``signature.bind(*args, **kwargs)``, with an error naming ``name``, the argument and a fix."""
    parameters = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    named = [p.name for p in parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key, value in kwargs.items():
        if takes_any or key in named:
            continue
        guess = ALIASES.get(key)
        guess = guess if guess in named else next(iter(difflib.get_close_matches(key, named, 1)), None)
        hint = f"; did you mean {guess}={value!r}?" if guess else "."
        raise TypeError(
            f"{name}: got an unexpected argument {key}={value!r}{hint} "
            f"It takes {signature_text(name, signature)}"
        )
    try:
        return signature.bind(*args, **kwargs)
    except TypeError as error:
        raise TypeError(f"{name}: {error}. It takes {signature_text(name, signature)}") from None
