"""The parameter trees, optimizer pairs and libraries that the benchmark runs.

Trees are built as NumPy float32 arrays on the host, from a fixed seed, so that
every library starts from the same numbers; each library then gets its own copy
(the steps donate their buffers).

* ``one_leaf``: one vector, the best case for a per-leaf library.
* ``transformer``: about 200 leaves shaped like a pre-norm transformer
  (token embedding; per layer q/k/v/out kernels and biases, MLP up/down kernels
  and biases, two LayerNorm scales and biases; a final norm), nested so that
  name-based masks make sense.
* ``many_leaves``: thousands of tiny leaves, where per-kernel overhead dominates.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

# Sizes: the full run and the --smoke run.
FULL = {
    "one_leaf": {"n": 16_777_216},
    # 12 * (12 d^2 + 13 d) + vocab * d + 2 d = 16.1M floats in 195 leaves.
    "transformer": {"d_model": 320, "n_layers": 12, "vocab": 4096},
    "many_leaves": {"n_leaves": 5_000, "leaf_size": 16},
}
SMOKE = {
    "one_leaf": {"n": 4096},
    "transformer": {"d_model": 16, "n_layers": 2, "vocab": 64},
    "many_leaves": {"n_leaves": 50, "leaf_size": 16},
}
TREES = tuple(FULL)
# gradxform-flat is gradxform on gx.flat_tree(params); torch runs when installed.
JAX_LIBS = ("gradxform", "optax", "gradxform-flat")
TORCH_LIBS = {"torch-foreach": {"foreach": True}, "torch-fused": {"fused": True}}


def _normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)).astype(np.float32)


def one_leaf(rng: np.random.Generator, n: int) -> dict:
    """One float32 vector of ``n`` elements, as ``{"w": ...}``."""
    return {"w": _normal(rng, (n,), 0.02)}


def transformer(rng: np.random.Generator, d_model: int, n_layers: int, vocab: int) -> dict:
    """A pre-norm transformer's parameters: 16 leaves per layer plus 3."""
    d, h = d_model, 4 * d_model

    def dense(fan_in: int, fan_out: int) -> dict:
        return {"kernel": _normal(rng, (fan_in, fan_out), fan_in**-0.5),
                "bias": np.zeros((fan_out,), np.float32)}

    def norm() -> dict:
        return {"scale": np.ones((d,), np.float32), "bias": np.zeros((d,), np.float32)}

    tree: dict[str, Any] = {"embed": {"embedding": _normal(rng, (vocab, d), 0.02)}}
    for i in range(n_layers):
        tree[f"layer_{i:02d}"] = {
            "ln_attn": norm(),
            "attn": {name: dense(d, d) for name in ("query", "key", "value", "out")},
            "ln_mlp": norm(),
            "mlp": {"up": dense(d, h), "down": dense(h, d)},
        }
    tree["final_norm"] = norm()
    return tree


def many_leaves(rng: np.random.Generator, n_leaves: int, leaf_size: int) -> dict:
    """``{"layer_0000": {"w": (leaf_size,)}, ...}``: ``n_leaves`` tiny leaves."""
    return {f"layer_{i:04d}": {"w": _normal(rng, (leaf_size,), 0.1)} for i in range(n_leaves)}


_BUILDERS: dict[str, Callable[..., dict]] = {
    "one_leaf": one_leaf, "transformer": transformer, "many_leaves": many_leaves,
}


def build(name: str, smoke: bool, seed: int = 0) -> tuple[dict, dict]:
    """Returns ``(params, grads)`` for tree ``name`` as NumPy float32 trees."""
    sizes = (SMOKE if smoke else FULL)[name]
    rng = np.random.default_rng(seed)
    params = _BUILDERS[name](rng, **sizes)
    grads = _BUILDERS[name](np.random.default_rng(seed + 1), **sizes)
    grads = {k: _scaled(v, 0.01) for k, v in grads.items()}
    return params, grads


def _scaled(tree: Any, factor: float) -> Any:
    if isinstance(tree, dict):
        return {k: _scaled(v, factor) for k, v in tree.items()}
    return (tree * np.float32(factor) + np.float32(factor)).astype(np.float32)


class OptimizerPair(NamedTuple):
    """One optimizer in three libraries, and its minimal bytes per f32 parameter."""

    gradxform: Callable[[], Any]
    optax: Callable[[], Any]
    torch: Callable[[list, dict], Any] | None  # (tensors, options) -> (optimizer, pre_step)
    bytes_per_param: int
    bytes_note: str
    flat_path: str | None = None  # why gradxform-flat cannot run it; None: it can


def _torch_pair(kind: str) -> Callable[[list, dict], Any]:
    """Builds ``(optimizer, pre_step)`` for torch; ``options`` selects foreach/fused."""

    def make(tensors: list, options: dict):
        import torch

        if kind == "adam":
            return torch.optim.Adam(tensors, lr=1e-3, **options), None
        if kind == "adagrad":
            # torch puts eps outside the root; optax/gradxform inside. Same bytes.
            return torch.optim.Adagrad(
                tensors, lr=1e-2, initial_accumulator_value=0.1, eps=1e-7, **options
            ), None
        opt = torch.optim.AdamW(tensors, lr=1e-3, weight_decay=1e-4, **options)

        def clip() -> None:
            torch.nn.utils.clip_grad_norm_(tensors, 1.0, foreach=True)

        return opt, clip

    return make


def optimizers() -> dict[str, OptimizerPair]:
    """The three optimizers, built lazily so that importing this module is cheap."""
    import optax

    import gradxform as gx

    return {
        "adam": OptimizerPair(
            lambda: gx.adam(1e-3), lambda: optax.adam(1e-3), _torch_pair("adam"),
            28, "read p, g, m, v; write p, m, v"),
        "adagrad": OptimizerPair(
            lambda: gx.adagrad(1e-2), lambda: optax.adagrad(1e-2), _torch_pair("adagrad"),
            20, "read p, g, s; write p, s"),
        "clip_adamw": OptimizerPair(
            lambda: gx.chain(gx.clip_by_global_norm(1.0), gx.adamw(1e-3, weight_decay=1e-4)),
            lambda: optax.chain(optax.clip_by_global_norm(1.0),
                                optax.adamw(1e-3, weight_decay=1e-4)),
            _torch_pair("clip_adamw"),
            32, "adam's 28 plus one read of g for the global norm"),
        # torch.optim has no Lion or LAMB, and its Adafactor is another variant of the rule.
        "lion": OptimizerPair(
            lambda: gx.lion(1e-4), lambda: optax.lion(1e-4), None,
            20, "read p, g, m; write p, m"),
        "adafactor": OptimizerPair(
            lambda: gx.adafactor(1e-2), lambda: optax.adafactor(1e-2), None,
            20, "read p, g, v; write p, v (a vector leaf; a factored matrix moves 12: "
                "read p, g; write p)",
            flat_path="a factored second moment needs each leaf's 2-D shape"),
        "lamb": OptimizerPair(
            lambda: gx.lamb(1e-3), lambda: optax.lamb(1e-3), None,
            28, "adam's 28 (read p, g, m, v; write p, m, v)"),
    }


# The default run; CATALOGUE runs with --optimizers lion adafactor lamb.
OPTIMIZERS = ("adam", "adagrad", "clip_adamw")
CATALOGUE = ("lion", "adafactor", "lamb")
