"""``gx.torch.Adafactor`` against ``torch.optim.Adafactor``, run live.

60 steps on the harness's nested tree (two factored matrices, vectors and a
scalar; large and all-zero gradient steps), every argument in some
configuration, a ``LambdaLR`` schedule, params compared after every step at
rtol 1e-5. Then torch's factoring of the last two axes of a 3-D leaf, the
machine-epsilon floor, torch's states, and bad arguments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import gradxform as gx
from tests.pytorch.harness import assert_leaves_close, check_parity, run_gradxform, run_torch

CONFIGS = [
    (dict(), None),
    (dict(lr=0.5), None),
    (dict(lr=0.05, beta2_decay=-0.5, eps=(1e-3, 1e-2), d=2.0), None),
    (dict(lr=0.05, weight_decay=0.1, maximize=True), None),
    (dict(lr=0.2, beta2_decay=0.0, eps=(1e-18, 0.0)), None),
    (dict(lr=0.1, weight_decay=0.01), lambda k: 0.9 ** k),
]


@pytest.mark.parametrize("kwargs, factor", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
def test_matches_torch(kwargs, factor):
    check_parity("Adafactor", kwargs, factor)


def test_factors_the_last_two_axes_and_keeps_torchs_statistics():
    """A (5, 2, 3) leaf: torch factors axes 1 and 2 (optax's rule would take 0 and 2); its
    row and column statistics are ours with the reduced axis kept."""
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((5, 2, 3)).astype(np.float32)}
    grads = [{"w": rng.standard_normal((5, 2, 3)).astype(np.float32)} for _ in range(8)]
    p = torch.nn.Parameter(torch.tensor(params["w"]))
    opt = torch.optim.Adafactor([p], lr=0.1)
    tx = gx.torch.Adafactor(lr=0.1)
    ours, state = jax.tree.map(jnp.asarray, params), tx.init(params)
    for g in grads:
        p.grad = torch.tensor(g["w"])
        opt.step()
        updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, ours)
        ours = gx.apply_updates(ours, updates)
        assert_leaves_close([ours["w"]], [p.detach().numpy()], "3-D leaf")
    factored = gx.tree_get(state, "v_row")["w"]
    np.testing.assert_allclose(factored, opt.state[p]["row_var"].numpy()[..., 0], rtol=1e-5)
    np.testing.assert_allclose(gx.tree_get(state, "v_col")["w"],
                               opt.state[p]["col_var"].numpy()[..., 0, :], rtol=1e-5)


def test_default_floor_is_the_float32_machine_epsilon():
    """Gradients of 1e-8 square below torch's default floor (float32 eps squared, 1.4e-14)
    on the unfactored leaves; a floor of 1e-9 gives other steps."""
    grads = [jax.tree.map(lambda x: np.full_like(x, 1e-8 if x.ndim < 2 else 1.0), g)
             for g in _stream(12)]
    ref = run_torch("Adafactor", dict(lr=0.1), grads=grads)
    ours = run_gradxform(gx.torch.Adafactor(lr=0.1), grads)
    for step, (mine, theirs) in enumerate(zip(ours, ref)):
        assert_leaves_close(mine, theirs, f"step {step}")
    other = run_gradxform(gx.torch.Adafactor(lr=0.1, eps=(1e-9, 1e-3)), grads)
    assert not np.allclose(other[-1][0], ref[-1][0], rtol=1e-3)  # encoder/bias, a vector


def _stream(steps):
    from tests.pytorch.harness import gradient_stream

    return gradient_stream(steps)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(beta2_decay=0.5), ValueError, ["torch.Adafactor", "beta2_decay", "0.5"]),
    (dict(eps=(0.0, 1e-3)), ValueError, ["torch.Adafactor", "eps[0]", "0.0"]),
    (dict(eps=(1e-30, 1e-3)), ValueError, ["torch.Adafactor", "eps[0]", "1e-30"]),
    (dict(eps=(None, -1.0)), ValueError, ["torch.Adafactor", "eps[1]", "-1.0"]),
    (dict(eps=1e-3), TypeError, ["torch.Adafactor", "eps", "pair"]),
    (dict(d=0.5), ValueError, ["torch.Adafactor", "d", "0.5"]),
    (dict(weight_decay=-0.1), ValueError, ["torch.Adafactor", "weight_decay"]),
    (dict(lr=-1.0), ValueError, ["torch.Adafactor", "lr"]),
])
def test_bad_arguments(kwargs, error, words):
    with pytest.raises(error) as caught:
        gx.torch.Adafactor(**kwargs)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))
