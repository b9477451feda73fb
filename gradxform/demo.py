"""Compare gradxform optimizers on a small Flax MLP trained on scikit-learn's digits.

Run it with::

    python -m gradxform.demo [--epochs N] [--quick] [--plot PATH] [--seed S]
    python -m gradxform.demo --sparse [--steps N]   # row-sparse embedding tables

With ``--sparse`` it runs `gradxform.demo_sparse` instead (dense against
row-sparse gradients on a click model; only jax and numpy needed).

The 8x8 digit images bundled with scikit-learn (no download) are split once
into train and test sets and standardised. The same MLP, from the same initial
parameters and seeing the same minibatches in the same order, is trained with
each optimizer through one jitted step (``value_and_grad``, ``tx.update``,
``gx.apply_updates``). The demo prints progress, each optimizer's ``repr``, a
table of final training loss, test accuracy, compile time and step time, and
saves a PNG of the training-loss curves.

Timing. Before the first optimizer is timed, JAX is warmed up: the backend
starts and the same train step (same model, same shapes) is compiled and run
with a throwaway stateless optimizer. That one-time cost is printed on its own
and charged to no optimizer. Each optimizer's step is then compiled on its own
(``jax.jit(step).lower(...).compile()``: trace, lower and XLA compile), which
gives the **compile** column, and every training step after that is timed until
its outputs are ready; the **step** column is the median. Step times are
comparable across rows; compile times are comparable across rows because the
warm-up is left out of all of them. All are wall-clock times on the machine at
hand, and noisy.

It needs the "examples" extras (Flax, scikit-learn, matplotlib)::

    pip install -e ".[examples]"

The library itself never imports this module.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx

if __name__ == "__main__" and "--sparse" in sys.argv[1:]:  # needs no "examples" extras
    from gradxform.demo_sparse import main as _sparse_main

    _sparse_main([arg for arg in sys.argv[1:] if arg != "--sparse"])
    sys.exit(0)

try:
    import flax.linen as nn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
except ImportError as err:
    if __name__ != "__main__":
        raise
    sys.exit(
        f"gradxform.demo needs the optional 'examples' dependencies ({err.name} is missing).\n"
        'Install them with:  pip install -e ".[examples]"'
    )

DEFAULT_EPOCHS = 25
BATCH_SIZE = 64
WARMUP_STEPS = 3


class Data(NamedTuple):
    """Standardised features (float32) and integer labels (int32)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class MLP(nn.Module):
    """A fully connected ReLU network returning class logits."""

    hidden: tuple[int, ...] = (128, 128)
    classes: int = 10

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.classes)(x)


def load_data(seed: int) -> Data:
    """Loads digits, makes a fixed stratified 75/25 split, standardises on the train set."""
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=seed, stratify=digits.target
    )
    scaler = StandardScaler().fit(x_train)
    return Data(
        scaler.transform(x_train).astype(np.float32),
        y_train.astype(np.int32),
        scaler.transform(x_test).astype(np.float32),
        y_test.astype(np.int32),
    )


class Result(NamedTuple):
    """One optimizer's outcome: quality, and wall-clock times on this machine."""

    train_loss: float
    test_accuracy: float
    compile_s: float  # trace + lower + XLA compile of the jitted train step
    step_ms: float  # median wall time of one train step, after compilation
    steps: int  # how many timed steps step_ms is the median of


class Comparison(NamedTuple):
    """Every optimizer's result, the loss curves, and the excluded warm-up time."""

    warmup_s: float
    results: dict[str, Result]
    histories: dict[str, list[float]]


def make_optimizers() -> dict[str, gx.GradientTransformation]:
    """The optimizers compared, by display name, with learning rates that suit this data set."""
    return {
        "adagrad chain": gx.chain(
            gx.clip_by_global_norm(1.0),
            gx.scale_by_adagrad(initial_accumulator_value=0.1, eps=1e-7),
            gx.add_decayed_weights(1e-4),
            gx.scale_by_learning_rate(0.1),
        ),
        "adam": gx.adam(1e-3),
        "sgd momentum": gx.sgd(0.02, momentum=0.9),
        "rmsprop": gx.rmsprop(1e-3),
        "adamw": gx.adamw(2e-3, weight_decay=1e-2),
    }


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy against integer labels."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def evaluate(model: nn.Module, params, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Returns (mean loss, accuracy) of the model on a whole data set."""
    logits = model.apply(params, x)
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == y)
    return float(cross_entropy(logits, y)), float(accuracy)


def make_train_step(model: nn.Module, tx: gx.GradientTransformation):
    """The jitted ``(params, opt_state, x, y) -> (params, opt_state, loss)`` step."""

    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(model.apply(p, x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return gx.apply_updates(params, updates), opt_state, loss

    return jax.jit(train_step)


def warm_up(model: nn.Module, data: Data, seed: int) -> float:
    """Pays JAX's one-time costs before any optimizer is timed; returns the seconds spent.

    Starts the backend, then compiles and runs a few steps of the same train
    step (same model, same shapes) with a throwaway stateless optimizer
    (``gx.scale``), so that the first compile of anything, and the first trace
    of the model's forward and backward pass, are charged to no optimizer.
    """
    start = time.perf_counter()
    jax.block_until_ready(jax.jit(lambda v: v * 2.0)(jnp.ones(8)))  # backend start-up
    params = model.init(jax.random.key(seed), data.x_train[:1])
    tx = gx.scale(-1e-3)
    opt_state = tx.init(params)
    x, y = data.x_train[:BATCH_SIZE], data.y_train[:BATCH_SIZE]
    step = make_train_step(model, tx).lower(params, opt_state, x, y).compile()
    for _ in range(WARMUP_STEPS):
        params, opt_state, loss = step(params, opt_state, x, y)
    jax.block_until_ready((params, opt_state, loss))
    return time.perf_counter() - start


def train(
    model: nn.Module,
    tx: gx.GradientTransformation,
    data: Data,
    epochs: int,
    seed: int,
    report: Callable[[int, float], None],
):
    """Trains ``model`` with ``tx``; returns the params, per-epoch losses, compile s, step times.

    The initial params and the minibatch order depend on ``seed`` only, so every
    optimizer starts from the same point and sees the same batches. The step is
    compiled on its own first (timed: the compile seconds); then every step is
    timed until its outputs are ready (the list of step seconds).
    """
    params = model.init(jax.random.key(seed), data.x_train[:1])
    opt_state = tx.init(params)
    x0, y0 = data.x_train[:BATCH_SIZE], data.y_train[:BATCH_SIZE]
    start = time.perf_counter()
    train_step = make_train_step(model, tx).lower(params, opt_state, x0, y0).compile()
    compile_s = time.perf_counter() - start

    rng = np.random.default_rng(seed)
    n = len(data.y_train)
    steps = n // BATCH_SIZE  # drop the ragged last batch: one shape, one compilation
    history, step_s = [], []
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        losses = []
        for step in range(steps):
            batch = order[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]
            x, y = data.x_train[batch], data.y_train[batch]
            start = time.perf_counter()
            params, opt_state, loss = train_step(params, opt_state, x, y)
            jax.block_until_ready((params, opt_state, loss))
            step_s.append(time.perf_counter() - start)
            losses.append(float(loss))
        history.append(float(np.mean(losses)))
        report(epoch, history[-1])
    return params, history, compile_s, step_s


def print_progress(name: str, epochs: int, epoch: int, loss: float) -> None:
    """Prints one line of training progress, at once."""
    print(f"  [{name}] epoch {epoch:3d}/{epochs}  loss {loss:.4f}", flush=True)


def plot_losses(histories: dict[str, list[float]], path: str) -> None:
    """Saves the per-epoch training-loss curves as a PNG (Agg, no display needed)."""
    fig = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for (name, losses), marker in zip(histories.items(), "osD^v*xP"):
        epochs = np.arange(1, len(losses) + 1)
        ax.plot(epochs, losses, marker=marker, markersize=4, label=name)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss (cross-entropy, log scale)")
    ax.set_title("gradxform optimizers: Flax MLP on scikit-learn digits")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m gradxform.demo",
        description="Compare gradxform optimizers on a Flax MLP trained on scikit-learn's digits.",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs per optimizer (default {DEFAULT_EPOCHS}, or 2 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny run (two epochs, small model), for tests"
    )
    parser.add_argument(
        "--plot",
        default="gradxform_demo_loss.png",
        help="PNG file for the loss plot (default %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for the split, the init and the batch order"
    )
    parser.add_argument(
        "--sparse", action="store_true",
        help="run the row-sparse embedding demo instead (see --sparse --help for its options)",
    )
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 2 if args.quick else DEFAULT_EPOCHS
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    return args


def compare(
    model: nn.Module,
    optimizers: dict[str, gx.GradientTransformation],
    data: Data,
    epochs: int,
    seed: int,
) -> Comparison:
    """Warms JAX up, then trains with each optimizer in turn, printing progress."""
    print("\nwarming JAX up (backend start-up, first compile of the train step)...", flush=True)
    warmup_s = warm_up(model, data, seed)
    results, histories = {}, {}
    for name, tx in optimizers.items():
        print(f"\n{name}: {tx!r}", flush=True)
        report = functools.partial(print_progress, name, epochs)
        params, histories[name], compile_s, step_s = train(model, tx, data, epochs, seed, report)
        train_loss, _ = evaluate(model, params, data.x_train, data.y_train)
        _, test_accuracy = evaluate(model, params, data.x_test, data.y_test)
        results[name] = Result(
            train_loss, test_accuracy, compile_s, 1e3 * float(np.median(step_s)), len(step_s)
        )
    return Comparison(warmup_s, results, histories)


def print_table(comparison: Comparison) -> None:
    """The results table, and which of its times can be compared."""
    print(
        f"\n{'optimizer':<15} {'train loss':>10} {'test accuracy':>14} "
        f"{'compile (s)':>12} {'step (ms)':>10}"
    )
    for name, r in comparison.results.items():
        print(
            f"{name:<15} {r.train_loss:>10.4f} {r.test_accuracy:>14.2%} "
            f"{r.compile_s:>12.3f} {r.step_ms:>10.3f}"
        )
    steps = next(iter(comparison.results.values())).steps if comparison.results else 0
    notes = [
        "compile: trace + lower + XLA compile of each optimizer's jitted train step, timed",
        "  on its own, before its first step.",
        "step: median wall time of one train step (forward, backward, update, apply), over",
        f"  the {steps} steps after compilation, each until its results are ready.",
        "JAX's one-time warm-up (backend start-up, and a first compile and run of the same",
        f"  step with a throwaway optimizer) took {comparison.warmup_s:.2f} s before the first row;"
        " no row includes it.",
        "Step times are comparable across rows. Compile times are comparable across rows only",
        "  because that warm-up is left out of all of them. All are wall-clock times on this",
        "  machine, and noisy: small differences between rows mean nothing.",
    ]
    print("\n" + "\n".join(notes))


def main(argv: list[str] | None = None) -> Comparison | dict:
    """Runs the comparison, prints the results and saves the plot; returns the results."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--sparse" in argv:
        from gradxform import demo_sparse

        return demo_sparse.main([arg for arg in argv if arg != "--sparse"])
    args = parse_args(argv)
    data = load_data(args.seed)
    model = MLP(hidden=(32,) if args.quick else (128, 128))
    optimizers = make_optimizers()
    print(
        f"digits: {len(data.y_train)} train / {len(data.y_test)} test, MLP{model.hidden}, "
        f"{args.epochs} epochs of batch {BATCH_SIZE}, JAX on {jax.default_backend()}",
        flush=True,
    )
    comparison = compare(model, optimizers, data, args.epochs, args.seed)
    print_table(comparison)
    plot_losses(comparison.histories, args.plot)
    print(f"\nwrote the loss plot to {os.path.abspath(args.plot)}")
    return comparison


if __name__ == "__main__":
    main()
