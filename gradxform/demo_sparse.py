"""Row-sparse embedding gradients on a click model: ``python -m gradxform.demo --sparse``.

Run it with::

    python -m gradxform.demo --sparse [--steps N] [--batch B] [--rows R] [--seed S]

Synthetic click logs are generated with NumPy from a fixed seed: each example
has 8 categorical fields whose values follow Zipf laws (a few values are very
common, most are rare), hashed into one table of 1,000,000 ids. Labels come
from a hidden logistic model: a true weight per id plus a low-rank pairwise
interaction. The model is a factorisation machine: a bias, one scalar weight
per id (a ``(rows, 1)`` table) and a ``(rows, 8)`` table of factors whose
pairwise dot products are added to the logit; the loss is the mean logistic
loss.

Every optimizer starts from the same parameters and sees the same minibatches:

* **adagrad (dense)**: ``jax.value_and_grad``, a dense gradient the size of
  the tables, and `gx.adagrad`;
* **adagrad (sparse)**: `gx.sparse.value_and_grad`, whose table gradients are
  `gx.RowSparse` (only the rows a batch touched), and the same `gx.adagrad`:
  exact, so its losses match the dense run's;
* **lazy adam** (`gx.lazy_adam`) and **ftrl** (`gx.ftrl`, FTRL-Proximal with
  an L1 penalty, which sets many weights to exactly 0), on row-sparse
  gradients: both update only the touched rows.

Each step is jitted with the params and optimizer state donated (the touched
rows are written in place), compiled before the run, and timed until its
outputs are ready; the first steps are left out of the median. The demo prints
the final training loss, the held-out loss, the median step time and the
speed-up over dense Adagrad, and exits with status 1 if the dense and sparse
Adagrad losses differ by more than float rounding. It needs only jax and numpy.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import gradxform as gx

DEFAULT_STEPS = 300
BATCH_SIZE = 1024
TABLE_ROWS = 1_000_000
FACTORS = 8
# Values per categorical field, and the Zipf exponent of their frequencies.
FIELD_VALUES = (4, 30, 200, 2_000, 20_000, 200_000, 1_000_000, 5_000_000)
ZIPF_EXPONENT = 1.1
HELD_OUT_BATCHES = 16
WARMUP_STEPS = 5
TOLERANCE = 1e-5  # dense and sparse Adagrad losses: |difference| <= TOLERANCE * max(1, |loss|)
TABLES = ("linear", "factors")
DENSE_LOOKUP = functools.partial(gx.sparse.lookup, invalid_ids="drop")


class Data(NamedTuple):
    """Minibatches of ids (int32) and click labels (float32), and the true model's loss."""

    train_ids: np.ndarray  # (steps, batch, fields)
    train_labels: np.ndarray  # (steps, batch)
    test_ids: np.ndarray  # (held-out batches, batch, fields)
    test_labels: np.ndarray
    true_test_loss: float  # the held-out loss of the model that drew the labels
    rows: int


def make_data(rows: int = TABLE_ROWS, steps: int = DEFAULT_STEPS, batch: int = BATCH_SIZE,
              seed: int = 0) -> Data:
    """Zipf-distributed categorical fields hashed into ``rows`` ids, labels from a logistic model."""
    rng = np.random.default_rng(seed)
    n = (steps + HELD_OUT_BATCHES) * batch
    ids = np.empty((n, len(FIELD_VALUES)), np.int64)
    for field, values in enumerate(FIELD_VALUES):
        cdf = np.cumsum(np.arange(1, values + 1, dtype=np.float64) ** -ZIPF_EXPONENT)
        value = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
        value = np.minimum(value, values - 1).astype(np.uint64)
        # The hashing trick: (field, value) -> one id of the shared table (collisions allowed).
        salt = np.uint64((field + 1) * 0xC2B2AE3D27D4EB4F % 2**64)
        hashed = ((value + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)) ^ salt
        ids[:, field] = ((hashed >> np.uint64(17)) % np.uint64(rows)).astype(np.int64)
    weights = rng.normal(0.0, 0.8, rows)  # the hidden true weight of each id
    factors = rng.normal(0.0, 0.35, (rows, 4))  # and a hidden low-rank interaction
    logits = np.empty(n)
    for start in range(0, n, 65_536):  # in chunks, to bound the memory of long runs
        chunk = ids[start:start + 65_536]
        v = factors[chunk]  # (chunk, fields, 4)
        interaction = 0.5 * (np.sum(v.sum(1) ** 2, -1) - np.sum(v * v, (1, 2)))
        logits[start:start + 65_536] = -1.5 + weights[chunk].sum(1) + interaction
    p = 1.0 / (1.0 + np.exp(-logits))
    labels = (rng.random(n) < p).astype(np.float32)
    split = steps * batch
    eps = 1e-7
    true_loss = -np.mean(labels[split:] * np.log(p[split:] + eps)
                         + (1 - labels[split:]) * np.log(1 - p[split:] + eps))
    ids = ids.astype(np.int32).reshape(-1, batch, len(FIELD_VALUES))
    labels = labels.reshape(-1, batch)
    return Data(ids[:steps], labels[:steps], ids[steps:], labels[steps:], float(true_loss), rows)


def init_params(rows: int, factors: int = FACTORS, seed: int = 0) -> dict[str, np.ndarray]:
    """Zero bias and linear weights; small random factors (zero ones would get no gradient)."""
    rng = np.random.default_rng(seed + 1)
    return {
        "bias": np.zeros((), np.float32),
        "linear": np.zeros((rows, 1), np.float32),
        "factors": (0.01 * rng.standard_normal((rows, factors))).astype(np.float32),
    }


def loss_fn(params, ids, labels, lookup=gx.sparse.lookup):
    """Mean logistic loss of the factorisation machine; each table is looked up once."""
    linear = lookup(params["linear"], ids)[..., 0]  # (batch, fields)
    v = lookup(params["factors"], ids)  # (batch, fields, factors)
    pairs = 0.5 * (jnp.sum(jnp.sum(v, 1) ** 2, -1) - jnp.sum(v * v, (1, 2)))
    z = params["bias"] + jnp.sum(linear, 1) + pairs
    return jnp.mean(jax.nn.softplus(z) - labels * z)


def make_optimizers() -> dict[str, tuple[gx.GradientTransformation, bool]]:
    """By display name: the optimizer, and whether its table gradients are row-sparse."""
    # A mean loss has small gradients: an initial accumulator of 0.1 (the default) would
    # dwarf a rare id's squared gradients and flatten its per-coordinate rate.
    adagrad = functools.partial(gx.adagrad, 0.1, initial_accumulator_value=1e-6, eps=1e-10)
    return {
        "adagrad (dense)": (adagrad(), False),
        "adagrad (sparse)": (adagrad(), True),
        "lazy adam": (gx.lazy_adam(0.01), True),
        "ftrl": (gx.ftrl(0.1, initial_accumulator_value=1e-6, l1_regularization_strength=3e-4),
                 True),
    }


def make_step(tx: gx.GradientTransformation, row_sparse: bool):
    """The jitted, donating ``(params, state, ids, labels) -> (params, state, loss)`` step."""
    if row_sparse:
        grad_fn = gx.sparse.value_and_grad(loss_fn, TABLES, invalid_ids="drop")
    else:
        grad_fn = jax.value_and_grad(functools.partial(loss_fn, lookup=DENSE_LOOKUP))

    def step(params, state, ids, labels):
        loss, grads = grad_fn(params, ids, labels)
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state, loss

    return jax.jit(step, donate_argnums=(0, 1))


@jax.jit
def evaluate(params, ids, labels) -> jax.Array:
    """The mean loss over equal-size batches ``(n, batch, fields)``."""
    losses = jax.lax.map(lambda b: loss_fn(params, *b, lookup=DENSE_LOOKUP), (ids, labels))
    return jnp.mean(losses)


class Result(NamedTuple):
    """One optimizer's losses and step times (wall clock, this machine)."""

    losses: np.ndarray  # the minibatch loss of every step, before its update
    train_loss: float  # over the whole training set, after training
    test_loss: float  # over the held-out set, after training
    step_ms: float  # median wall time of one step after the warm-up steps
    compile_s: float


def train(tx: gx.GradientTransformation, row_sparse: bool, data: Data,
          init: dict[str, np.ndarray]) -> Result:
    """Trains from ``init`` over every minibatch once; times each step until it is ready."""
    params = jax.tree.map(jnp.array, init)
    state = tx.init(params)
    start = time.perf_counter()
    step = make_step(tx, row_sparse).lower(
        params, state, data.train_ids[0], data.train_labels[0]).compile()
    compile_s = time.perf_counter() - start
    losses, times = [], []
    for ids, labels in zip(data.train_ids, data.train_labels):
        start = time.perf_counter()
        params, state, loss = step(params, state, ids, labels)
        jax.block_until_ready((params, state, loss))
        times.append(time.perf_counter() - start)
        losses.append(loss)
    timed = times[WARMUP_STEPS:] if len(times) > WARMUP_STEPS else times
    train_loss = float(evaluate(params, data.train_ids, data.train_labels))
    test_loss = float(evaluate(params, data.test_ids, data.test_labels))
    return Result(np.asarray(jnp.stack(losses)), train_loss, test_loss,
                  1e3 * float(np.median(timed)), compile_s)


def compare(data: Data, init: dict[str, np.ndarray],
            optimizers: dict[str, tuple[gx.GradientTransformation, bool]],
            report: Callable[[str], None] = print) -> dict[str, Result]:
    """Trains with each optimizer in turn, from the same params on the same batches."""
    results = {}
    for name, (tx, row_sparse) in optimizers.items():
        report(f"  training {name} ({'row-sparse' if row_sparse else 'dense'} gradients)...")
        results[name] = train(tx, row_sparse, data, init)
    return results


def curves_agree(a: np.ndarray, b: np.ndarray, tolerance: float = TOLERANCE) -> tuple[bool, float]:
    """Whether two loss curves agree to float rounding, and their largest difference."""
    difference = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    ok = a.shape == b.shape and bool(np.all(difference <= tolerance * np.maximum(1.0, np.abs(a))))
    return ok, float(difference.max(initial=0.0))


def print_table(results: dict[str, Result], data: Data) -> None:
    """The results table: losses, median step time and speed-up over dense Adagrad."""
    base = results.get("adagrad (dense)")
    print(f"\n{'optimizer':<18} {'train loss':>10} {'held-out loss':>13} {'step (ms)':>10} "
          f"{'speed-up':>9}")
    for name, r in results.items():
        speed_up = f"{base.step_ms / r.step_ms:>8.1f}x" if base else f"{'-':>9}"
        print(f"{name:<18} {r.train_loss:>10.4f} {r.test_loss:>13.4f} {r.step_ms:>10.3f} "
              f"{speed_up}")
    rate = float(np.mean(data.train_labels))
    constant = -float(np.mean(data.test_labels * np.log(rate) + (1 - data.test_labels)
                              * np.log(1 - rate)))
    print(f"\nheld-out loss of the true model (the floor): {data.true_test_loss:.4f}; of "
          f"predicting the training click rate ({rate:.1%}) for all: {constant:.4f}")
    steps = len(next(iter(results.values())).losses)
    print(f"step: median wall time of one jitted, donated step over steps {WARMUP_STEPS + 1} to "
          f"{steps}; speed-up: dense Adagrad's step time over each row's.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m gradxform.demo --sparse",
        description="Dense against row-sparse gradients on a click model with a "
                    f"{TABLE_ROWS:,}-row embedding table.",
    )
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="training steps, one minibatch each (default %(default)s)")
    parser.add_argument("--batch", type=int, default=BATCH_SIZE,
                        help="examples per minibatch (default %(default)s)")
    parser.add_argument("--rows", type=int, default=TABLE_ROWS,
                        help="rows of the embedding tables (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data and the init")
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "rows"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Result]:
    """Runs the comparison and prints it; exits with status 1 if the Adagrad curves disagree."""
    args = parse_args(argv)
    start = time.perf_counter()
    data = make_data(args.rows, args.steps, args.batch, args.seed)
    init = init_params(args.rows, FACTORS, args.seed)
    touched = len(np.unique(data.train_ids[0]))
    print(f"click model: {len(FIELD_VALUES)} fields hashed into {args.rows:,} ids, tables "
          f"({args.rows:,}, 1) and ({args.rows:,}, {FACTORS}); {args.steps} steps of batch "
          f"{args.batch} (~{touched:,} rows touched per step); data made in "
          f"{time.perf_counter() - start:.1f} s; JAX on {jax.default_backend()}", flush=True)
    results = compare(data, init, make_optimizers(),
                      report=functools.partial(print, flush=True))
    print_table(results, data)
    ok, difference = curves_agree(results["adagrad (dense)"].losses,
                                  results["adagrad (sparse)"].losses)
    verdict = "OK" if ok else "FAILED"
    print(f"\ncheck: dense and sparse Adagrad losses agree at every step (max |difference| "
          f"{difference:.2e}, tolerance {TOLERANCE:g} x max(1, |loss|)): {verdict}", flush=True)
    if not ok:
        sys.exit(1)
    return results


if __name__ == "__main__":
    main()
