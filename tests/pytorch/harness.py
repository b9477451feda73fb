"""Replaying one gradient stream through ``torch.optim`` (CPU, run live) and a ``gx.torch`` preset.

The params are a nested tree of float32 leaves; torch gets one ``nn.Parameter``
per leaf, in ``jax.tree`` order, and each step sets every ``.grad`` to the same
gradient gradxform sees, then calls ``optimizer.step()``. A learning-rate
schedule is a ``LambdaLR`` factor on torch's side (stepped after each
optimizer step, so step ``k`` uses ``lr * factor(k)``) and the schedule
``lambda k: lr * factor(k)`` on ours.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import torch

import gradxform as gx

STEPS = 60
SHAPES = {"encoder": {"kernel": (4, 3), "bias": (3,)}, "head": {"w": (3, 2), "b": (2,)},
          "scale": ()}
RTOL, ATOL = 1e-5, 1e-6  # ATOL per unit of the leaf's largest magnitude
LARGE_STEPS = (5, 23, 41)
ZERO_STEPS = (10, 11, 30)


def initial_params(seed: int = 0, shapes: Any = SHAPES) -> Any:
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda shape: rng.standard_normal(shape).astype(np.float32), shapes,
                        is_leaf=lambda x: isinstance(x, tuple))


def gradient_stream(steps: int = STEPS, seed: int = 1, shapes: Any = SHAPES) -> list:
    """``steps`` gradient trees: normal, x30 on a few steps, all zeros on others."""
    rng = np.random.default_rng(seed)
    stream = []
    for step in range(steps):
        factor = 30.0 if step in LARGE_STEPS else 0.0 if step in ZERO_STEPS else 1.0
        stream.append(jax.tree.map(
            lambda shape: (rng.standard_normal(shape) * factor).astype(np.float32), shapes,
            is_leaf=lambda x: isinstance(x, tuple)))
    return stream


def run_torch(cls_name: str, kwargs: dict, factor: Callable[[int], float] | None = None,
              grads: Sequence | None = None, *, with_states: bool = False,
              params: Any = None) -> Any:
    """The params (as numpy leaves, tree order) after every step of ``torch.optim.<cls_name>``,
    from ``params`` (default `initial_params`); with ``with_states``, also each step's
    per-leaf ``optimizer.state`` as numpy dicts."""
    grads = gradient_stream() if grads is None else grads
    params = initial_params() if params is None else params
    leaves = [torch.nn.Parameter(torch.tensor(x)) for x in jax.tree.leaves(params)]
    optimizer = getattr(torch.optim, cls_name)(leaves, **kwargs)
    scheduler = None if factor is None else torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    trajectory, states = [], []
    for g in grads:
        for p, gi in zip(leaves, jax.tree.leaves(g)):
            p.grad = torch.tensor(gi)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        trajectory.append([p.detach().numpy().copy() for p in leaves])
        if with_states:
            states.append([{k: v.detach().numpy().copy() for k, v in optimizer.state[p].items()}
                           for p in leaves])
    return (trajectory, states) if with_states else trajectory


def run_gradxform(tx: Any, grads: Sequence | None = None, *, with_states: bool = False,
                  params: Any = None) -> Any:
    """Our params (numpy leaves) after every step, from ``params`` (default
    `initial_params`); with ``with_states``, also the states."""
    grads = gradient_stream() if grads is None else grads
    params = jax.tree.map(jnp.asarray, initial_params() if params is None else params)
    state = tx.init(params)

    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return gx.apply_updates(params, updates), state

    trajectory, states = [], []
    for g in grads:
        params, state = step(params, state, jax.tree.map(jnp.asarray, g))
        trajectory.append([np.asarray(x) for x in jax.tree.leaves(params)])
        states.append(state)
    return (trajectory, states) if with_states else trajectory


def assert_leaves_close(ours: Sequence, theirs: Sequence, what: str, *, rtol: float = RTOL,
                        atol: float = ATOL) -> None:
    """Leaf by leaf, ``atol`` scaled by each leaf's largest magnitude: an entry near 0 in a
    leaf of entries near 20 carries the rounding of those (float32's unit there is 2e-6)."""
    for i, (a, b) in enumerate(zip(jax.tree.leaves(ours), theirs, strict=True)):
        scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
        np.testing.assert_allclose(np.asarray(a), b, rtol=rtol, atol=atol * scale,
                                   err_msg=f"{what}, leaf {i}")


def check_parity(cls_name: str, kwargs: dict, factor: Callable[[int], float] | None = None,
                 grads: Sequence | None = None, *, rtol: float = RTOL,
                 atol: float = ATOL) -> tuple[list, list]:
    """Runs both sides and asserts every leaf agrees after every step."""
    ours_kwargs = dict(kwargs)
    if factor is not None:
        lr = kwargs.get("lr", getattr(gx.torch, cls_name).__defaults__[0])
        ours_kwargs["lr"] = lambda count: lr * factor_jnp(factor, count)
    ref = run_torch(cls_name, kwargs, factor, grads)
    ours = run_gradxform(getattr(gx.torch, cls_name)(**ours_kwargs), grads)
    for step, (mine, theirs) in enumerate(zip(ours, ref, strict=True)):
        assert_leaves_close(mine, theirs, f"{cls_name}({kwargs}): step {step}", rtol=rtol,
                            atol=atol)
    return ours, ref


def factor_jnp(factor: Callable, count: Any) -> Any:
    """A torch ``LambdaLR`` factor (Python arithmetic on the epoch) evaluated on a traced count."""
    return factor(jnp.asarray(count, jnp.float32))
