"""``gx.torch.Muon`` against ``torch.optim.Muon`` (torch/optim/_muon.py), run live.

torch's Muon takes 2-D parameters only, so these runs use their own tree of
three matrices (tall, square, wide) instead of the harness's, with the
harness's kind of stream: 60 steps, x30 gradients on steps 5, 23, 41 and
all-zero ones on 10, 11, 30. Both sides get the same arrays (the preset reads
a leaf's shape as torch reads ``param.shape``). The gradients do not depend
on the parameters, so differences add up along the path without feeding back.

Each leaf is held to ``|ours - torch| <= 1e-5 |torch| + k * P``, with ``P``
the leaf's distance moved: the largest, over its entries, of the sum of
torch's absolute moves so far. The Newton–Schulz iteration mixes a matrix's
entries, so a rounding difference in one entry of its input reaches them all
(hence the leaf's path, not the entry's own), and it multiplies a
perturbation along a weak singular direction by up to :math:`a` per step.

* torch iterates in bfloat16. The preset rounds the same intermediate values
  (``scale_by_muon(ns_dtype=jnp.bfloat16)``) and agreed with torch's iteration
  bit for bit on small matrices; but its float32 input, the momentum, is
  rounded differently (torch's ``lerp`` is a fused multiply-add; XLA fuses
  ours only when it optimises), and a last-bit difference there can turn one
  bfloat16 rounding the other way, which moves that value by one unit in the
  last place, :math:`2^{-7}` of itself (twice the unit roundoff). So ``k =
  2**-7``. Measured under the suite's compile options, the largest
  ``(|ours - torch| - 1e-5 |torch|) / P`` was 2.5e-3, 4e-7, 2.3e-3 and 3e-8
  for the four configurations below; over 12 gradient streams of the first
  and third, half had no turned rounding (below 1e-6) and the largest was
  3.0e-3 (0.39 k). Under XLA's default options, which fuse as torch does, the
  four gave 1.7e-4, 4e-7, 1.5e-4 and 1.2e-4. The same chain with a float32
  iteration gave at least 0.014, with optax's debiased momentum 0.036, and
  with ``eps`` added to the norm rather than flooring it 0.026 (eps 1e-2):
  `test_the_tolerance_tells_forms_apart` keeps each of those above ``k``.
* With torch's iteration switched to float32 (its own source, with
  ``grad.bfloat16()`` replaced by a float32 copy) and the preset's
  ``ns_dtype`` set to None, only float32 roundings differ: ``k = 2**-24 *
  a**ns_steps``, float32's unit roundoff grown by the iteration's largest
  slope, 2.9e-5 for the default coefficients. Measured: at most 6.7e-6 over
  8 streams (bound 1.6e-6, at most 3.8e-7, for 3 steps with a = 3). This
  shows the rest of the rule (momentum, Nesterov, eps as a floor, the shape
  factor, the decoupled decay) exact: a mistake in any of them moves a step
  by far more than 3e-5 of itself. (rtol 1e-5 alone, without the path term,
  is not met: the iteration's slope makes up to 1.9 times that of the
  float32 last-bit differences.)
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.optim._muon as torch_muon

import gradxform as gx
from gradxform.torch.muon import Muon
from tests.pytorch.harness import gradient_stream, initial_params, run_gradxform, run_torch

STEPS = 60
SHAPES = {"encoder": {"kernel": (4, 3)}, "hidden": (6, 6), "head": {"w": (3, 5)}}
BFLOAT16_ULP = 2.0**-7  # one unit in the last place, relative: twice the unit roundoff 2**-8
FLOAT32_UNIT_ROUNDOFF = 2.0**-24


def _initial(seed=0):
    return initial_params(seed, SHAPES)


def _stream(seed=1):
    return gradient_stream(STEPS, seed, SHAPES)


def _run_torch(kwargs, grads):
    return run_torch("Muon", kwargs, grads=grads, params=_initial())


def _run_ours(tx, grads):
    return run_gradxform(tx, grads, params=_initial())


class _LeafPaths:
    """Each leaf's distance moved so far: the largest, over its entries, of torch's summed
    absolute moves."""

    def __init__(self, initial):
        self.previous = [np.asarray(x, np.float64) for x in initial]
        self.paths = [np.zeros_like(x) for x in self.previous]

    def advance(self, i, value):
        value = np.asarray(value, np.float64)
        self.paths[i] += np.abs(value - self.previous[i])
        self.previous[i] = value
        return float(np.max(self.paths[i]))


def _excess_over_path(ours, theirs):
    """The largest ``(|ours - torch| - 1e-5 |torch|) / P`` over leaves and steps (module doc)."""
    paths = _LeafPaths(jax.tree.leaves(_initial()))
    worst = 0.0
    for mine, reference in zip(ours, theirs, strict=True):
        for i, (a, b) in enumerate(zip(mine, reference, strict=True)):
            path = paths.advance(i, b)
            excess = np.abs(a - b.astype(np.float64)) - 1e-5 * np.abs(b)
            worst = max(worst, float(np.max(excess)) / path)
    return worst


CONFIGS = [
    dict(lr=0.02),
    dict(lr=0.02, nesterov=False),
    dict(lr=0.02, adjust_lr_fn="match_rms_adamw", weight_decay=0.05),
    dict(lr=0.05, momentum=0.9, ns_steps=3, eps=1e-2, weight_decay=0.0,
         ns_coefficients=(3.0, -3.2, 1.2), adjust_lr_fn="original"),
]
_IDS = ["defaults", "no-nesterov", "match-rms-adamw", "own-coefficients"]


@pytest.mark.parametrize("shape", [(3, 4), (4, 3), (6, 6), (16, 5)])
def test_bfloat16_iteration_is_torchs_bit_for_bit(shape):
    """orthogonalize_via_newton_schulz(eps_as_floor=True, ns_dtype=bfloat16) on the same float32
    input as torch's _zeropower_via_newtonschulz: the same bits, scales from 1e-3 to 30."""
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    coefficients = (3.4445, -4.7750, 2.0315)
    iterate = jax.jit(lambda x: gx.orthogonalize_via_newton_schulz(
        x, coefficients, 5, eps=1e-7, eps_as_floor=True, ns_dtype=jnp.bfloat16))
    for scale in (1e-3, 0.1, 1.0, 30.0):
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        expected = torch_muon._zeropower_via_newtonschulz(torch.tensor(x), coefficients, 5, 1e-7)
        np.testing.assert_array_equal(iterate(x), expected.float().numpy(), err_msg=str(scale))


@pytest.mark.parametrize("kwargs", CONFIGS, ids=_IDS)
def test_muon_matches_torch_up_to_bfloat16_rounding(kwargs):
    grads = _stream()
    worst = _excess_over_path(_run_ours(Muon(**kwargs), grads), _run_torch(kwargs, grads))
    assert worst <= BFLOAT16_ULP, (kwargs, worst)


def test_the_tolerance_tells_forms_apart():
    """The bound fails for optax's momentum, a float32 iteration, and eps added to the norm."""
    kwargs = CONFIGS[-1]
    grads = _stream()
    reference = _run_torch(kwargs, grads)
    (muon_step, *rest) = Muon(**kwargs).children
    for change in (dict(momentum_form="debiased"), dict(ns_dtype=None),
                   dict(eps_as_floor=False)):
        changed = gx.scale_by_muon(**{**muon_step.hyperparams, **change})
        worst = _excess_over_path(_run_ours(gx.chain(changed, *rest), grads), reference)
        assert worst > BFLOAT16_ULP, (change, worst)


@pytest.fixture
def float32_torch_muon(monkeypatch):
    """torch's own iteration, from its source, on a float32 copy instead of a bfloat16 one
    (a copy: torch normalises it in place, and without Nesterov it is the momentum buffer)."""
    source = inspect.getsource(torch_muon._zeropower_via_newtonschulz)
    assert source.count("grad.bfloat16()") == 1
    namespace = dict(vars(torch_muon))
    exec(source.replace("grad.bfloat16()", "grad.float().clone()"), namespace)  # noqa: S102
    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz",
                        namespace["_zeropower_via_newtonschulz"])


@pytest.mark.parametrize("kwargs", CONFIGS, ids=_IDS)
def test_muon_with_a_float32_iteration_matches_torch(kwargs, float32_torch_muon):
    grads = _stream()
    reference = _run_torch(kwargs, grads)
    (muon_step, *rest) = Muon(**kwargs).children
    assert muon_step.hyperparams["ns_dtype"] is not None
    float32 = gx.scale_by_muon(**{**muon_step.hyperparams, "ns_dtype": None})
    worst = _excess_over_path(_run_ours(gx.chain(float32, *rest), grads), reference)
    a = abs(kwargs.get("ns_coefficients", (3.4445,))[0])
    assert worst <= FLOAT32_UNIT_ROUNDOFF * a ** kwargs.get("ns_steps", 5), (kwargs, worst)


def test_param_groups_route_other_leaves_to_adamw():
    """torch's way: Muon for the 2-D parameters, AdamW for the others in a second optimizer;
    here one partition_by_patterns over the harness's tree (kernels, biases, a scalar)."""
    params0 = initial_params()
    names = ["/".join(str(getattr(k, "key", k)) for k in path)
             for path, _ in jax.tree_util.tree_flatten_with_path(params0)[0]]
    tensors = {name: torch.nn.Parameter(torch.tensor(x))
               for name, x in zip(names, jax.tree.leaves(params0))}
    matrices = [t for t in tensors.values() if t.ndim == 2]
    others = [t for t in tensors.values() if t.ndim != 2]
    optimizers = [torch.optim.Muon(matrices, lr=0.02, weight_decay=0.05),
                  torch.optim.AdamW(others, lr=1e-2, weight_decay=0.1)]
    tx = gx.partition_by_patterns(
        [("bias|/b$|^scale$", gx.torch.AdamW(lr=1e-2, weight_decay=0.1))],
        default=Muon(lr=0.02, weight_decay=0.05))
    params = jax.tree.map(jnp.asarray, params0)
    state = tx.init(params)
    step = jax.jit(lambda p, s, g: (lambda u, s2: (gx.apply_updates(p, u), s2))(
        *tx.update(g, s, p)))
    paths = _LeafPaths(jax.tree.leaves(params0))
    for g in gradient_stream():
        for name, gi in zip(names, jax.tree.leaves(g)):
            tensors[name].grad = torch.tensor(gi)
        for optimizer in optimizers:
            optimizer.step()
        params, state = step(params, state, jax.tree.map(jnp.asarray, g))
        for i, (name, x) in enumerate(zip(names, jax.tree.leaves(params))):
            expected = tensors[name].detach().numpy()
            path = paths.advance(i, expected)
            scale = max(1.0, float(np.max(np.abs(expected))))
            bound = 1e-5 * np.abs(expected) + 1e-6 * scale  # the harness's, for AdamW's leaves
            if tensors[name].ndim == 2:  # Muon's leaves: bfloat16's rounding, as above
                bound = bound + BFLOAT16_ULP * path
            assert np.all(np.abs(np.asarray(x) - expected) <= bound), name


def test_leaves_that_are_not_matrices_raise_naming_the_leaf():
    tx = Muon()
    params = {"encoder": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)}}
    state = tx.init(params)
    with pytest.raises(ValueError) as caught:
        tx.update(params, state, params)
    message = str(caught.value)
    for words in ("torch.Muon", "['encoder']['bias']", "(3,)", "2-D", "partition_by_patterns"):
        assert words in message, message
    with pytest.raises(ValueError, match=r"torch.Muon: .*<root> has shape \(\)"):
        jax.jit(tx.update)(jnp.float32(1.0), tx.init(jnp.float32(1.0)))


@pytest.mark.parametrize("kwargs, exc, torch_refuses", [
    (dict(lr=-1.0), ValueError, True),
    (dict(weight_decay=-0.1), ValueError, True),
    (dict(ns_steps=100), ValueError, True),  # torch: at the first step
    (dict(adjust_lr_fn="spectral"), ValueError, True),
    (dict(momentum=1.0), ValueError, False),  # torch: a momentum buffer that never moves
    (dict(eps=0.0), ValueError, False),  # torch: 0 / 0 for a zero gradient
    (dict(ns_coefficients=(1.0, 2.0)), ValueError, True),  # torch: at the first step
    (dict(ns_coefficients=(1.0, 2.0, "3")), TypeError, False),
])
def test_bad_arguments_raise_naming_the_preset_and_the_argument(kwargs, exc, torch_refuses):
    (argument,) = kwargs
    with pytest.raises(exc) as caught:
        Muon(**kwargs)
    assert "torch.Muon" in str(caught.value) and argument in str(caught.value), caught.value
    if torch_refuses:
        with pytest.raises(ValueError):
            optimizer = torch.optim.Muon([torch.nn.Parameter(torch.ones(2, 2))], **kwargs)
            optimizer.param_groups[0]["params"][0].grad = torch.ones(2, 2)
            optimizer.step()
