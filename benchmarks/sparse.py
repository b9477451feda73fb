"""Benchmark row-sparse embedding updates (``gx.sparse``) against dense ones.

Run ``python -m benchmarks.sparse`` from the repository root (``--smoke`` for
a tiny run in well under a minute, ``--markdown`` for a README table,
``--tables``/``--batches``/``--optimizers`` to filter, ``--repeats`` to
override the number of timed rounds, ``--no-flush`` to time with a warm cache).
Where the results go is as for ``benchmarks.run``: the tables are printed, and
the JSON goes to ``--json PATH``, or else to ``results.json`` in a fresh
temporary directory whose path is printed at the end.

The cases: tables of 1,000,000 x 64 and 10,000,000 x 32 float32 (fewer rows,
with a note in the JSON and the output, where ``MemAvailable`` in
``/proc/meminfo`` cannot hold a case's buffers); batches of 4,096 and 65,536
ids; the optimizers adagrad, lazy Adam and FTRL (``gx.lazy_adam`` and
``gx.ftrl`` are looked up with ``getattr``; a row whose optimizer is missing
is recorded as skipped).

**The ids** are drawn from a bounded Zipf law over the table's rows: rank
``k`` in ``1..num_rows`` with probability proportional to ``k ** -1.2``
(``--zipf``), sampled exactly by inverting its CDF, and the ranks mapped to
rows by a fixed random permutation, so that the hot rows are scattered over
the table as hashed ids are (numpy's unbounded ``zipf`` clipped into range
would pile its tail, 6% of the ids at ``a=1.2`` on 1M rows, onto one row).
The same ids serve every optimizer of a table and batch.

What is measured, per table x batch x optimizer, in one process:

* **max_rows**: the sparse gradient's slots, set as a user would set them:
  from 16 other batches of the same law, the most rows any of them touched,
  times 1.25, rounded up to a multiple of 64 (``overflow="drop"``; the timed
  batch must fit, or the run stops).
* **The optimizer step**: ``step(params, state, grads) -> (params, state)``,
  update plus apply, jitted with params and state donated, the gradient fixed:
  the coalesced `RowSparse` gradient that ``gx.sparse.value_and_grad`` gives
  for the batch with ``max_rows`` slots (the touched rows first), and, as a
  second sparse contender (``sparse:per-id``), the same with one slot per id,
  against a dense reference on the same gradient densified: ``optax.adagrad`` for adagrad;
  ``optax.adam`` for lazy Adam (dense Adam; with a fixed gradient and zero
  initial moments the untouched rows' moments stay 0 and so do their updates,
  so the two end on the same numbers here); for FTRL, which optax lacks,
  ``gx.ftrl``'s own dense path (labelled ``gx.ftrl dense``). Timing is
  ``benchmarks.measure``'s: round-robin, the order rotated each round, medians,
  and the paired ratio dense / sparse (the median over rounds of the two
  calls' ratio) with its distribution-free 95% confidence interval; 11 timed
  rounds after 2 warm-up ones, 5 after 1 on tables over 2**27 floats, whose
  dense steps take seconds. Each timed call follows an untimed call of the
  same step (``settle``), as in training, where a step follows its own kind:
  right after a dense step that freed gigabytes, a sparse step's fresh
  temporaries faulted in up to 8x more slowly on this machine. Then a read of
  twice the last-level cache leaves the cache cold (``measure.CacheFlush``):
  the touched rows come from memory, as after a forward pass over the rest
  of a model; ``--no-flush`` leaves them warm. Each call's minor page faults are counted
  too (``page_faults_per_step``): XLA:CPU allocates every call's temporaries
  anew, and a block that the allocator maps from the kernel (glibc: from
  32 MB) faults on every page, every call.
* **The bytes-touched floor**: an update must read the touched rows of the
  params, of each state table and of the gradient, write those of the params
  and the state, and read the ids: ``unique rows x row bytes x (reads +
  writes) + unique rows x 4`` (adagrad 3 + 2 arrays: p, s, g / p, s; lazy
  Adam and FTRL 4 + 3: p, m, v, g / p, m, v and p, n, z, g / p, n, z). Rows
  scattered over a table that does not fit in the cache do not move at a
  streaming rate: each row is a few cache lines and a TLB miss. The floor's
  time is therefore *measured*, with the same rows, tables of the same shape
  and the same cold cache: ``ref:rows`` is the minimal jitted, donated XLA
  program that moves exactly those bytes, ``t.at[rows].add(g_rows)`` for the
  params and every state table at the unique touched rows (sorted, unique,
  in bounds). It is timed round-robin with the sparse step once the dense
  step's buffers are freed (so that a case never holds more than three
  contenders' tables), and ``floor x`` is the sparse step's median time over
  its median (1.0 would be optimal; the paired ratio is in the JSON). For
  comparison, ``floor x stream`` divides the floor's bytes by a streaming
  rate measured in the same rounds (``measure.Reference("stream")`` on
  64 MB, in place): an optimistic bound that scattered rows cannot reach.
* **The whole train step** ``loss -> grad -> update -> apply`` (params, state
  donated; the ids an argument): sparse is ``gx.sparse.value_and_grad`` with
  ``invalid_ids="drop"`` and ``max_rows`` (``sparse:per-id`` without), dense is ``jax.grad`` of the same loss through the
  same lookup (``gx.sparse.lookup(..., invalid_ids="drop")``) followed by the
  dense reference. Compiled from abstract shapes first, for the compile time
  and ``memory_analysis()``: peak bytes (arguments + outputs - aliased +
  temporaries) and the temporaries. A temporary buffer the size of the table
  would show in the temporaries, so ``temp_bytes < table bytes`` proves the
  sparse steps have none (it is asserted: the run exits with status 1 if not);
  the HLO's instructions of the table's shape are listed beside it. The three
  train steps are then timed round-robin, as above.
* **Agreement**: after the timed optimizer steps (the same number for each
  contender) and after the timed train steps, the final tables are compared
  on device: on the touched rows, on the
  others, and the sparse table's untouched rows against their initial values
  (which must be exact). Adagrad is exact, so sparse and dense agree
  everywhere; lazy Adam agrees everywhere with these fixed gradients; FTRL's
  dense rule moves untouched rows (to 0 here), so it agrees on the touched
  rows only. The two sparse contenders must agree everywhere.

The loss is ``sum(tanh(lookup(embed, ids) @ w))`` with a dense vector ``w``;
the tables start from a fixed hash of (row, column), uniform in +-2**-7.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import json
import os
import platform
import re
import resource
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradxform as gx
from benchmarks import measure, sparse_report
from benchmarks.run import json_path

# Timed rounds: fewer on tables over LARGE floats, whose dense steps take seconds.
FULL = {"tables": ((1_000_000, 64), (10_000_000, 32)), "batches": (4096, 65536),
        "warmup": 2, "repeats": 11, "large_warmup": 1, "large_repeats": 5, "compile_repeats": 1}
SMOKE = {"tables": ((20_000, 8), (50_000, 4)), "batches": (64, 512),
         "warmup": 1, "repeats": 3, "large_warmup": 1, "large_repeats": 3, "compile_repeats": 1}
LARGE = 1 << 27  # 512 MB of float32
OPTIMIZERS = ("adagrad", "lazy_adam", "ftrl")
STREAM_FLOATS = 1 << 24  # the streaming reference: 64 MB, twice the last-level cache
TOLERANCE = 1e-6  # agreement, absolute, on tables of magnitude <= ~1
SLOT_SAMPLES, SLOT_MARGIN = 16, 1.25  # max_rows: batches sampled, headroom over their most rows


class Optimizer(NamedTuple):
    """One optimizer: its gradxform constructor (None if missing) and its dense reference."""

    sparse: Callable[[], Any] | None
    dense: Callable[[], Any]
    dense_label: str
    promotion: str | None  # optax needs "standard" where the ambient mode is "strict"
    state_tables: int  # state arrays of the table's shape
    agree: str  # where sparse and dense must end on the same numbers: "all" or "touched"


def optimizers() -> dict[str, Optimizer]:
    """The three optimizers; ``gx.lazy_adam`` and ``gx.ftrl`` may not exist yet."""
    lazy_adam, ftrl = getattr(gx, "lazy_adam", None), getattr(gx, "ftrl", None)
    ftrl_args = {"learning_rate": 0.05, "l1_regularization_strength": 1e-3,
                 "l2_regularization_strength": 1e-3}
    return {
        "adagrad": Optimizer(lambda: gx.adagrad(0.01), lambda: optax.adagrad(0.01),
                             "optax.adagrad", "standard", 1, "all"),
        "lazy_adam": Optimizer(lazy_adam and (lambda: lazy_adam(1e-3)),
                               lambda: optax.adam(1e-3), "optax.adam", "standard", 2, "all"),
        "ftrl": Optimizer(ftrl and (lambda: ftrl(**ftrl_args)), lambda: ftrl(**ftrl_args),
                          "gx.ftrl dense", None, 2, "touched"),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.sparse", description=__doc__.split("\n")[0],
        epilog="Without --json, the JSON results go to results.json in a fresh temporary "
               "directory (its path is printed at the end); nothing is written into the "
               "repository unless a path there is given.")
    p.add_argument("--smoke", action="store_true", help="tiny tables and batches, 3 rounds")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write the JSON results to PATH (default: results.json in a fresh "
                        "temporary directory, printed at the end)")
    p.add_argument("--markdown", action="store_true", help="also print a markdown table")
    p.add_argument("--tables", nargs="+", default=None, metavar="ROWSxDIM",
                   help="e.g. 1000000x64 (default: 1000000x64 10000000x32)")
    p.add_argument("--batches", nargs="+", type=int, default=None, help="ids per batch")
    p.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=list(OPTIMIZERS))
    p.add_argument("--repeats", type=int, default=None, help="timed rounds for every case")
    p.add_argument("--zipf", type=float, default=1.2, help="the Zipf exponent (default 1.2)")
    p.add_argument("--no-flush", action="store_true",
                   help="do not flush the cache before each timed call")
    p.add_argument("--no-train-timing", action="store_true",
                   help="compile and analyse the train steps but do not time them")
    p.add_argument("--dump-params", default=None, metavar="NPZ",
                   help="write every case's initial and final tables to this .npz (small runs)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data

def zipf_batches(num_rows: int, batch: int, s: float, seed: int, count: int) -> np.ndarray:
    """``count`` batches of ``batch`` int32 rows, ``(count, batch)``: ranks from a Zipf law
    bounded to ``num_rows``, mapped to rows by one permutation."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(np.arange(1, num_rows + 1, dtype=np.float64) ** -s)
    ranks = np.minimum(np.searchsorted(cdf, rng.random((count, batch)) * cdf[-1], side="right"),
                       num_rows - 1)
    del cdf
    return rng.permutation(num_rows).astype(np.int32)[ranks]


def zipf_ids(num_rows: int, batch: int, s: float, seed: int) -> np.ndarray:
    """One batch of `zipf_batches`."""
    return zipf_batches(num_rows, batch, s, seed, 1)[0]


def slot_bound(samples: np.ndarray, margin: float = SLOT_MARGIN, multiple: int = 64) -> int:
    """``max_rows`` as a user would set it: the most rows any sample batch touched, times
    ``margin``, rounded up to ``multiple`` (at most the batch size)."""
    most = max(np.unique(ids).size for ids in samples)
    return int(min(samples.shape[1], -(-int(most * margin) // multiple) * multiple))


def _hash_table(num_rows: int, dim: int, start: Any = 0) -> jax.Array:
    """Rows ``start, ..., start + num_rows - 1`` of a fixed pseudo-random table, uniform in
    +-2**-7, cheap to recompute.

    A hash of each entry's flat index, in integers, then one exact conversion and
    one multiplication by a power of two: the same bits however XLA fuses it."""
    row = jax.lax.iota(jnp.uint32, num_rows) + jnp.asarray(start).astype(jnp.uint32)
    x = row[:, None] * jnp.uint32(dim) + jax.lax.iota(jnp.uint32, dim)[None, :]
    x = (x ^ (x >> 16)) * jnp.uint32(0x45D9F3B)
    x = (x ^ (x >> 16)) * jnp.uint32(0x45D9F3B)
    x = x ^ (x >> 16)
    centred = (x >> 8).astype(jnp.int32) - jnp.int32(1 << 23)  # in [-2**23, 2**23)
    return centred.astype(jnp.float32) * jnp.float32(2.0 ** -30)


def initial_table(num_rows: int, dim: int) -> jax.Array:
    return jax.jit(_hash_table, static_argnums=(0, 1))(num_rows, dim)


def loss(params: dict, ids: jax.Array, lookup: Callable = gx.sparse.lookup) -> jax.Array:
    return jnp.sum(jnp.tanh(lookup(params["embed"], ids) @ params["w"]))


DENSE_LOOKUP = functools.partial(gx.sparse.lookup, invalid_ids="drop")


def mem_available() -> int:
    """``MemAvailable`` from /proc/meminfo, in bytes (a large number where it is absent)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 50


def fit_rows(rows: int, dim: int, tables_held: int, fraction: float = 0.8,
             baseline: float = 1.5e9) -> tuple[int, str | None]:
    """``rows``, halved until ``tables_held`` float32 tables of that shape, plus ``baseline``
    bytes (the process, its executables, the cache flush), fit in ``fraction`` of
    ``MemAvailable``; and a note where it had to shrink."""
    avail, fitted = mem_available(), rows
    while fitted > 1024 and tables_held * fitted * dim * 4 + baseline > fraction * avail:
        fitted //= 2
    if fitted == rows:
        return rows, None
    return fitted, (f"{rows:,} x {dim} shrunk to {fitted:,} rows: {tables_held} tables of it "
                    f"and {baseline / 1e9:.1f} GB must fit in {fraction:.0%} of MemAvailable "
                    f"({avail / 1e9:.1f} GB)")


# ----------------------------------------------------------------------------- steps

def update_step(tx: Any, apply: Callable) -> Callable:
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return apply(params, updates), state
    return step


def sparse_grad(max_rows: int | None) -> Callable:
    """``value_and_grad`` of the loss: one slot per id, or ``max_rows`` slots."""
    return gx.sparse.value_and_grad(loss, "embed", invalid_ids="drop", max_rows=max_rows,
                                    overflow="drop")


def sparse_train_step(tx: Any, max_rows: int | None) -> Callable:
    grad_fn = sparse_grad(max_rows)

    def step(params, state, ids):
        _, grads = grad_fn(params, ids)
        updates, state = tx.update(grads, state, params)
        return gx.apply_updates(params, updates), state
    return step


def dense_train_step(tx: Any, apply: Callable) -> Callable:
    def step(params, state, ids):
        grads = jax.grad(loss)(params, ids, lookup=DENSE_LOOKUP)
        updates, state = tx.update(grads, state, params)
        return apply(params, updates), state
    return step


def rows_reference(params: jax.Array, states: tuple, rows: jax.Array, values: jax.Array):
    """The floor's bytes and nothing else: each table's touched rows += the gradient's rows."""
    def add(t):
        return t.at[rows].add(values, indices_are_sorted=True, unique_indices=True,
                              mode="promise_in_bounds")
    return add(params), tuple(add(s) for s in states)


_densify = jax.jit(lambda g: g.todense())  # jitted: the scatter goes into the zeros in place


class Counted:
    """A contender that also counts the minor page faults of each call (all threads).

    XLA:CPU allocates each call's temporaries and fresh outputs anew; where the
    allocator maps large blocks from the kernel, every page of them faults on
    first touch, on every call."""

    def __init__(self, inner: Callable[[], None]):
        self.inner, self.faults = inner, []

    def __call__(self) -> None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        self.inner()
        self.faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)


def _timed(contenders: dict, cfg: dict) -> tuple[dict, dict]:
    """Round-robin times, and each contender's median page faults per call."""
    counted = {k: Counted(v) for k, v in contenders.items()}
    times = measure.round_robin(counted, cfg["warmup"], cfg["repeats"], flush=cfg["flush"],
                                settle=True)
    return times, {k: float(np.median(c.faults)) for k, c in counted.items()}


def _init(tx: Any, params: Any, promotion: str | None) -> Any:
    with jax.numpy_dtype_promotion(promotion or "strict"):
        return tx.init(params)


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


# ----------------------------------------------------------------------------- checks

@functools.partial(jax.jit, static_argnums=3)
def _compare(a: jax.Array, b: jax.Array, touched: jax.Array, block: int):
    """Max |a - b| on touched and untouched rows, and max |a - initial| on untouched rows.

    Block by block: XLA:CPU does not fuse the differences into the reductions, and
    three temporaries of the table's size would cost more than the comparison."""
    rows, dim = a.shape

    def body(i, acc):
        start = jnp.minimum(i * block, rows - block)  # the last block overlaps: max is idempotent
        x, y = (jax.lax.dynamic_slice_in_dim(t, start, block) for t in (a, b))
        mask = jax.lax.dynamic_slice_in_dim(touched, start, block)[:, None]
        diff, change = jnp.abs(x - y), jnp.abs(x - _hash_table(block, dim, start))
        zero = jnp.float32(0)
        return (jnp.maximum(acc[0], jnp.max(jnp.where(mask, diff, zero))),
                jnp.maximum(acc[1], jnp.max(jnp.where(mask, zero, diff))),
                jnp.maximum(acc[2], jnp.max(jnp.where(mask, zero, change))))

    zeros = (jnp.float32(0),) * 3
    return jax.lax.fori_loop(0, -(-rows // block), body, zeros)


def agreement(sparse_table: jax.Array, dense_table: jax.Array, touched: jax.Array,
              where: str) -> dict:
    """How far apart the final tables are; ``ok`` where they must agree."""
    block = min(sparse_table.shape[0], 1 << 16)
    t, u, c = (float(x) for x in _compare(sparse_table, dense_table, touched, block))
    ok = t <= TOLERANCE and c == 0.0 and (where == "touched" or u <= TOLERANCE)
    return {"must_agree_on": where + " rows", "max_abs_diff_touched": t,
            "max_abs_diff_untouched": u, "sparse_untouched_max_change": c, "ok": ok}


_SHAPE = re.compile(r"^\s*(?:ROOT )?%\S+ = f32\[(\d+),(\d+)\]\S* (\S+?)\(", re.MULTILINE)


def table_shaped_ops(hlo: str, rows: int, dim: int) -> dict[str, int]:
    """Opcodes of the HLO instructions whose result has the table's shape, with counts."""
    ops: dict[str, int] = {}
    for r, d, op in _SHAPE.findall(hlo):
        if (int(r), int(d)) == (rows, dim):
            ops[op] = ops.get(op, 0) + 1
    return ops


def _compile(fn: Callable, args: tuple, promotion: str | None, repeats: int) -> tuple[Any, dict]:
    c = measure.compile_step(fn, args, promotion=promotion, repeats=repeats)
    return c.pop("compiled"), c


def _timing(times: dict, a: str, b: str) -> dict:
    """Medians, the ratio of medians ``a / b`` and the paired ratio with its 95% CI."""
    per_round = measure.round_ratios(times[a], times[b])
    return {"ratio": measure.median(times[a]) / measure.median(times[b]),
            "paired": measure.median(per_round), "paired_95_CI": measure.median_ci(per_round)}


def _ms(times: list[float]) -> dict:
    return {"step_ms": 1e3 * measure.median(times), "step_ms_all": [1e3 * t for t in times]}


# ----------------------------------------------------------------------------- one case

def run_case(rows: int, dim: int, batch: int, name: str, opt: Optimizer, ids_np: np.ndarray,
             max_rows: int, cfg: dict, phases: measure.Phases, dumps: dict) -> dict:
    key = f"{rows}x{dim}/{batch}/{name}"
    table_bytes = rows * dim * 4
    case: dict[str, Any] = {"table": f"{rows}x{dim}", "rows": rows, "dim": dim, "batch": batch,
                            "optimizer": name, "dense_reference": opt.dense_label,
                            "table_bytes": table_bytes, "max_rows": max_rows,
                            "rounds": {"warmup": cfg["warmup"], "timed": cfg["repeats"]}}
    ids = jnp.asarray(ids_np)
    touched_np = np.unique(ids_np)
    unique = int(touched_np.size)
    case["unique_rows"] = unique
    if unique > max_rows:
        raise RuntimeError(f"{key}: the batch touches {unique} rows, over max_rows={max_rows}")
    tx, dtx = opt.sparse(), opt.dense()
    dense_apply = optax.apply_updates if opt.promotion else gx.apply_updates

    # The fixed gradients: value_and_grad's coalesced RowSparse with max_rows slots, the
    # same with one slot per id, and it densified.
    with phases(f"setup {key}"):
        init = initial_table(rows, dim)
        w = jnp.ones((dim,), jnp.float32)
        g_sparse, g_per_id = (
            {"embed": jax.jit(sparse_grad(m))({"embed": init, "w": w}, ids)[1]["embed"]}
            for m in (max_rows, None))
        assert g_sparse["embed"].unique and g_sparse["embed"].indices.shape == (max_rows,)
        assert g_per_id["embed"].indices.shape == (batch,)
        g_dense = {"embed": _densify(g_sparse["embed"])}
        touched = jnp.zeros((rows,), bool).at[touched_np].set(True)
        p_sparse, p_per_id, p_dense = ({"embed": jnp.copy(init)} for _ in range(3))
        s_sparse, s_per_id = _init(tx, p_sparse, None), _init(tx, p_per_id, None)
        s_dense = _init(dtx, p_dense, opt.promotion)
        jax.block_until_ready((g_dense, s_sparse, s_per_id, s_dense))
    with phases(f"compile {key}"):
        compiled = {lib: _compile(update_step(t, apply), args, promo, cfg["compile_repeats"])
                    for lib, t, apply, args, promo in (
                        ("sparse", tx, gx.apply_updates, (p_sparse, s_sparse, g_sparse), None),
                        ("sparse:per-id", tx, gx.apply_updates, (p_per_id, s_per_id, g_per_id),
                         None),
                        ("dense", dtx, dense_apply, (p_dense, s_dense, g_dense), opt.promotion))}
    contenders = {"sparse": measure.JaxStepper(compiled["sparse"][0], p_sparse, s_sparse,
                                               g_sparse),
                  "sparse:per-id": measure.JaxStepper(compiled["sparse:per-id"][0], p_per_id,
                                                      s_per_id, g_per_id),
                  "dense": measure.JaxStepper(compiled["dense"][0], p_dense, s_dense, g_dense)}
    sparse = contenders["sparse"]
    del p_sparse, p_per_id, p_dense, s_sparse, s_per_id, s_dense, init, g_dense, g_per_id
    # Block A: sparse (max_rows slots, and one per id) against dense, then the agreement of
    # their final tables.
    with phases(f"timing {key}"):
        times, faults = _timed(contenders, cfg)
    case["optimizer_step"] = {
        lib: {**compiled[lib][1], **_ms(times[lib]), "steps": contenders[lib].steps,
              "page_faults_per_step": faults[lib]} for lib in contenders}
    case["optimizer_step"]["dense/sparse"] = _timing(times, "dense", "sparse")
    case["optimizer_step"]["dense/sparse:per-id"] = _timing(times, "dense", "sparse:per-id")
    del compiled
    with phases(f"check {key}"):
        final_dense = contenders.pop("dense").params["embed"]
        case["agreement"] = agreement(sparse.params["embed"], final_dense, touched, opt.agree)
        case["agreement_per_id"] = agreement(sparse.params["embed"],
                                             contenders.pop("sparse:per-id").params["embed"],
                                             touched, "all")
        if cfg["dump"]:
            dumps[key] = {"initial": np.asarray(initial_table(rows, dim)),
                          "sparse": np.asarray(sparse.params["embed"]),
                          "dense": np.asarray(final_dense), "touched": touched_np}
        del final_dense
        gc.collect()
    # Block B, with the dense buffers freed: sparse against the floor's program, which
    # adds the gradient's rows into the params and every state table at the touched rows.
    with phases(f"setup floor {key}"):
        n_tables = 1 + opt.state_tables
        ref_tables = [jnp.zeros((rows, dim), jnp.float32) for _ in range(n_tables)]
        ref_args = (ref_tables[0], tuple(ref_tables[1:]), jnp.asarray(touched_np),
                    g_sparse["embed"].values[:unique])
        c_ref, _ = _compile(rows_reference, ref_args, None, 1)
        contenders["ref:rows"] = measure.JaxStepper(c_ref, *ref_args)
        contenders["ref:stream"] = measure.Reference("stream", STREAM_FLOATS)
        del ref_tables, ref_args
    with phases(f"timing floor {key}"):
        times, faults = _timed(contenders, cfg)
    floor_bytes = unique * dim * 4 * (2 * n_tables + 1) + unique * 4
    stream_rate = contenders["ref:stream"].bytes / measure.median(times["ref:stream"])
    t_sparse, t_ref = measure.median(times["sparse"]), measure.median(times["ref:rows"])
    case["floor"] = {
        "bytes": floor_bytes, "arrays": f"read {n_tables + 1}, write {n_tables}, rows {unique}",
        "sparse_ms": 1e3 * t_sparse, "ref_rows_ms": 1e3 * t_ref,
        "ref_rows_GBps": floor_bytes / t_ref / 1e9,
        "ref_rows_page_faults_per_step": faults["ref:rows"],
        "stream_GBps": stream_rate / 1e9,
        "floor_x": t_sparse / t_ref, "floor_x_paired": _timing(times, "sparse", "ref:rows"),
        "floor_x_stream": t_sparse / (floor_bytes / stream_rate),
    }
    del contenders, sparse, g_sparse
    gc.collect()
    case["train_step"] = run_train_step(rows, dim, batch, key, tx, dtx, dense_apply, opt, ids,
                                        max_rows, touched, cfg, phases)
    return case


def run_train_step(rows: int, dim: int, batch: int, key: str, tx: Any, dtx: Any,
                   dense_apply: Callable, opt: Optimizer, ids: jax.Array, max_rows: int,
                   touched: jax.Array, cfg: dict, phases: measure.Phases) -> dict:
    """The whole train step, sparse (``max_rows`` slots, and one per id) and dense: compiled
    from shapes, analysed, then timed."""
    table_bytes = rows * dim * 4
    params = {"embed": jax.ShapeDtypeStruct((rows, dim), jnp.float32),
              "w": jax.ShapeDtypeStruct((dim,), jnp.float32)}
    out: dict[str, Any] = {}
    compiled = {}
    with phases(f"compile train {key}"):
        for lib, t, fn, promo in (("sparse", tx, sparse_train_step(tx, max_rows), None),
                                  ("sparse:per-id", tx, sparse_train_step(tx, None), None),
                                  ("dense", dtx, dense_train_step(dtx, dense_apply),
                                   opt.promotion)):
            state = jax.eval_shape(functools.partial(_init, t, promotion=promo), params)
            compiled[lib], out[lib] = _compile(fn, (params, state, _abstract(ids)), promo,
                                               cfg["compile_repeats"])
            out[lib]["table_shaped_ops"] = table_shaped_ops(compiled[lib].as_text(), rows, dim)
    out["sparse_temp_below_table"] = all(
        out[lib]["temp_bytes"] is not None and out[lib]["temp_bytes"] < table_bytes
        for lib in ("sparse", "sparse:per-id"))
    out["peak dense/sparse"] = (out["dense"]["peak_bytes"] / out["sparse"]["peak_bytes"]
                                if out["sparse"]["peak_bytes"] else None)
    if cfg["train_timing"]:
        contenders = {}
        with phases(f"setup train {key}"):
            for lib, t, promo in (("sparse", tx, None), ("sparse:per-id", tx, None),
                                  ("dense", dtx, opt.promotion)):
                p = {"embed": initial_table(rows, dim), "w": jnp.ones((dim,), jnp.float32)}
                contenders[lib] = measure.JaxStepper(compiled[lib], p, _init(t, p, promo), ids)
        with phases(f"timing train {key}"):
            times, faults = _timed(contenders, cfg)
        for lib in contenders:
            out[lib].update(_ms(times[lib]), steps=contenders[lib].steps,
                            page_faults_per_step=faults[lib])
        out["dense/sparse"] = _timing(times, "dense", "sparse")
        out["dense/sparse:per-id"] = _timing(times, "dense", "sparse:per-id")
        out["agreement"] = agreement(contenders["sparse"].params["embed"],
                                     contenders["dense"].params["embed"], touched, opt.agree)
        del contenders
    del compiled
    gc.collect()
    return out


# ----------------------------------------------------------------------------- main

def _parse_tables(specs: list[str] | None, default: tuple) -> list[tuple[int, int]]:
    if not specs:
        return list(default)
    return [tuple(int(v) for v in s.lower().split("x")) for s in specs]  # type: ignore[misc]


def _run(args: argparse.Namespace, phases: measure.Phases, dumps: dict) -> dict:
    sizes = SMOKE if args.smoke else FULL
    cfg = {"compile_repeats": sizes["compile_repeats"], "dump": bool(args.dump_params),
           "flush": None if args.no_flush else measure.CacheFlush(),
           "train_timing": not args.no_train_timing}
    opts = optimizers()
    results: dict[str, Any] = {"meta": {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "jax": jax.__version__, "optax": optax.__version__, "gradxform": gx.__version__,
        "python": sys.version.split()[0], "platform": platform.platform(),
        "cpu_count": os.cpu_count(), "backend": jax.default_backend(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "smoke": args.smoke,
        "warmup_repeats": {
            "up to 2**27 floats": [sizes["warmup"], args.repeats or sizes["repeats"]],
            "larger": [sizes["large_warmup"], args.repeats or sizes["large_repeats"]]},
        "compile_repeats": cfg["compile_repeats"],
        "cache_flush_bytes": cfg["flush"].bytes if cfg["flush"] else 0,
        "mem_available_bytes_at_start": mem_available(),
        "ids": f"bounded Zipf, P(rank k) ~ k^-{args.zipf} over the rows, ranks permuted",
        "compilation_cache": "disabled", "args": vars(args)},
        "notes": [], "cases": []}
    with phases("setup"):
        jax.block_until_ready(jax.jit(lambda x: x * 2.0)(jnp.ones(8)))  # backend start-up
    for t, (rows, dim) in enumerate(_parse_tables(args.tables, sizes["tables"])):
        # Held at once, at most (FTRL's): the optimizer step, 10 tables (p, n, z for each of
        # the two sparse contenders; dense p, n, z and its gradient); the train steps, 9
        # (sparse 3 + 3; dense p, n, z and its step's temporaries, 6 from memory_analysis,
        # compiled but not yet run); the floor's block 6 (sparse 3, reference 3).
        fitted, note = fit_rows(rows, dim, tables_held=10)
        if note:
            results["notes"].append(note)
            print("note: " + note, flush=True)
        large = fitted * dim > LARGE
        table_cfg = {**cfg, "warmup": sizes["large_warmup" if large else "warmup"],
                     "repeats": args.repeats or sizes["large_repeats" if large else "repeats"]}
        for b, batch in enumerate(args.batches or sizes["batches"]):
            with phases(f"setup ids {fitted}x{dim}/{batch}"):
                # The timed batch, and the batches that set max_rows from their rows touched.
                ids_np, *samples = zipf_batches(fitted, batch, args.zipf, 1000 * t + b,
                                                1 + SLOT_SAMPLES)
                max_rows = slot_bound(np.stack(samples))
            for name in args.optimizers:
                opt = opts[name]
                if opt.sparse is None:
                    results["cases"].append({"table": f"{fitted}x{dim}", "rows": fitted,
                                             "dim": dim, "batch": batch, "optimizer": name,
                                             "skipped": f"gx.{name} is not available"})
                    print(f"skipped {name}: gx.{name} is not available", flush=True)
                    continue
                results["cases"].append(run_case(fitted, dim, batch, name, opt, ids_np,
                                                 max_rows, table_cfg, phases, dumps))
                gc.collect()
    return results


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark, prints the tables, writes the JSON; returns the results."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    phases = measure.Phases()
    saved_cache = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    dumps: dict[str, dict] = {}
    try:
        results = _run(args, phases, dumps)
    finally:
        jax.config.update("jax_enable_compilation_cache", saved_cache)
    results["checks"], failed = sparse_report.checks(results)
    results["checks_failed"] = failed
    sparse_report.print_table(results)
    if args.markdown:
        sparse_report.print_markdown(results)
    if args.dump_params:
        np.savez(args.dump_params, **{f"{k}/{part}": v for k, d in dumps.items()
                                      for part, v in d.items()})
    results["phases_s"] = dict(phases.seconds)
    results["total_wall_s"] = time.perf_counter() - t_start
    path = json_path(args.json)
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=_json_default)
    print(f"\ntotal wall time {results['total_wall_s']:.1f} s")
    where = "" if args.json else " (a fresh temporary directory; --json PATH to choose)"
    print(f"wrote the JSON results to {path}{where}")
    if failed:
        print(f"{len(failed)} check(s) FAILED:\n  " + "\n  ".join(failed), file=sys.stderr)
    return results


def _json_default(x: Any) -> Any:
    return float(x) if isinstance(x, (np.floating, np.integer)) else str(x)


if __name__ == "__main__":
    sys.exit(1 if main()["checks_failed"] else 0)
