"""Benchmark gradxform against optax (and torch.optim where installed), side by side.

Run ``python -m benchmarks.run`` from the repository root (``--smoke`` for a
tiny run, ``--train-step`` to add the many-leaf train-step block, ``--full`` to
add the per-leaf parity cases on the 5,000-leaf tree, ``--fresh-buffers`` for
parity runs between equal kernels,
``--trees``/``--optimizers`` to filter, ``--repeats`` to override the number of
timed steps, ``--markdown`` for a README table).

Where the results go: the tables are printed, and the full results are written
as JSON. ``--json PATH`` writes them to PATH (the committed
``benchmarks/results*.json`` files are written this way, on purpose only).
Without ``--json`` the JSON goes to ``results.json`` in a fresh temporary
directory, whose path is printed at the end: a run never writes into the
repository unless asked to.

What is measured, for every tree x optimizer x library, in one process:

* **step time**: ``step(params, state, grads) -> (params, state)``, i.e. the
  update plus ``apply_updates``, jitted with params and state donated and the
  gradients fixed. Libraries are timed round-robin (one call each per round,
  the order rotated from round to round, after a warm-up; on trees larger
  than the last-level cache, a read of twice its size before each call
  leaves it cold and clean) and summarised by their median, so that the
  noise of this shared machine hits all of them alike. Ratios are optax time
  / gradxform time (> 1: gradxform is faster): the ratio of the medians, and
  the *paired* ratio, the median over rounds of the two calls' ratio within
  a round (back-to-back calls share the machine's load of the moment, so
  drift cancels), with a distribution-free 95% confidence interval for that
  median (``paired 95% CI``). An A/A control, optax's executable stepped a
  second time on its own buffers, gives the run's noise floor: ``step
  optax/optax-again``, 1.0 but for noise. ``--fresh-buffers`` moves every
  contender to freshly allocated buffers before each round, which removes
  most of that noise at about 1 s per round (``measure`` says why).
  torch.optim runs ``opt.step()`` on tensors whose ``.grad`` is set once,
  with ``foreach=True`` and with ``fused=True``.
* **compile time**: trace + lower + XLA compile wall time of a fresh function
  object (the persistent compilation cache is switched off for the run); the
  minimum of 3 compiles on the 1-leaf tree and of 2 on the transformer tree,
  1 where a compile takes minutes. The last executable compiled is the one
  that is then stepped.
* **bandwidth**: the minimal bytes an update must move per f32 parameter
  (adam 28: read p, g, m, v, write p, m, v; adagrad 20: read p, g, s, write
  p, s; clip_adamw 32: adam's plus one read of g for the norm) divided by the
  step time, as a fraction of two references measured in the same rounds on as
  many elements as the tree has parameters: a copy ``x + 1.0`` into a new buffer
  and an in-place stream ``x * 0.5 + 1.0`` (donated), both 8 bytes per element.
  XLA's own ``bytes accessed`` per parameter is reported beside it.
* **peak memory**: from ``memory_analysis()`` (arguments + outputs - aliased +
  temporaries); for torch, the bytes of params + grads + state tensors.

``gradxform-flat`` is gradxform on ``gx.flat_tree(params)``: one contiguous
buffer per dtype. With ``--train-step``, a train-step block compares a whole
jitted, donated ``loss -> grad -> update -> apply`` step on the many-leaf
tree, adam only: optax per-leaf, gradxform per-leaf and gradxform flat (the
loss unravels; its jit gets ``gx.flat_compiler_options()``, as the README
recommends). It is not in the default run because optax's per-leaf compile of
that step alone takes 85 to 145 s on 2 cores, which would push the default run
past 5 minutes; run it as ``--train-step --trees many_leaves --optimizers
adam``, which also gives the update-only ratio.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradxform as gx
from benchmarks import measure, trees
from benchmarks.report import print_markdown, print_phases, print_table
from benchmarks.trees import JAX_LIBS, TORCH_LIBS

# A second stepper on optax's own executable: the optax/optax ratio is the
# noise floor of the run, against which the optax/gradxform ratio is read.
AGAIN = "optax-again"
FULL_REPEATS = {"one_leaf": 15, "transformer": 15, "many_leaves": 5, "train_step": 5}
# Compiles per case (the minimum is reported); one where a compile takes minutes.
COMPILE_REPEATS = {"one_leaf": 3, "transformer": 2, "many_leaves": 1, "train_step": 1}
# Each per-leaf compile of the 5,000-leaf tree takes 35-350 s on 2 cores. The default
# run keeps the two that the flat-path ratios need (optax's adam update and train
# step); --full adds the per-leaf parity cases, whose HLO is optax's own.
FULL_ONLY = ("many_leaves/adam/gradxform", "train_step/adam/gradxform") + tuple(
    f"many_leaves/{opt}/{lib}" for opt in ("adagrad", "clip_adamw") + trees.CATALOGUE
    for lib in ("gradxform", "optax"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0],
        epilog="Without --json, the JSON results go to results.json in a fresh temporary "
               "directory (its path is printed at the end); nothing is written into the "
               "repository unless a path there is given.")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 timed steps")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="write the JSON results to PATH (default: results.json in a fresh "
                        "temporary directory, printed at the end; e.g. --json "
                        "benchmarks/results.json to update the committed file)")
    p.add_argument("--trees", nargs="+", choices=trees.TREES, default=list(trees.TREES))
    p.add_argument("--optimizers", nargs="+", choices=trees.OPTIMIZERS + trees.CATALOGUE,
                   default=list(trees.OPTIMIZERS),
                   help="default: %(default)s; also lion, adafactor, lamb (the committed "
                        "results_catalogue.json)")
    p.add_argument("--repeats", type=int, default=None, help="timed steps for every case")
    p.add_argument("--full", action="store_true",
                   help="also the per-leaf 5,000-leaf cases (adds about 20 minutes on 2 cores)")
    p.add_argument("--train-step", action="store_true",
                   help="add the whole-train-step block on the 5,000-leaf tree (about 4 minutes "
                        "on 2 cores; with --smoke it is tiny)")
    p.add_argument("--fresh-buffers", action="store_true",
                   help="move every contender to freshly allocated buffers before each timed "
                        "round (untimed; about 1 s per round on the 16M trees)")
    p.add_argument("--skip", nargs="+", default=[], metavar="TREE/OPT/LIB",
                   help="leave out these cases (recorded as skipped in the JSON), e.g. "
                        "many_leaves/clip_adamw/gradxform")
    p.add_argument("--markdown", action="store_true", help="also print a markdown ratio table")
    p.add_argument("--dump-params", default=None,
                   help="write every case's final params to this .npz (for correctness tests)")
    return p.parse_args(argv)


def make_update_step(tx: Any, apply: Any) -> Any:
    """A fresh ``step(params, state, grads) -> (params, state)`` function object."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return apply(params, updates), state

    return step


def setup_jax(lib: str, pair: trees.OptimizerPair, params_np: Any, grads: Any) -> dict:
    """The step function, its arguments and trace options for one JAX library."""
    params = jax.tree.map(jnp.array, params_np)
    if lib == "optax":
        tx = pair.optax()
        with jax.numpy_dtype_promotion("standard"):
            state = tx.init(params)
        return {"fn": make_update_step(tx, optax.apply_updates), "promotion": "standard",
                "args": (params, state, grads), "final": measure.to_numpy}
    tx = pair.gradxform()
    if lib == "gradxform-flat":
        params = gx.flat_tree(params)
        grads = params.ravel(grads)
    return {"fn": make_update_step(tx, gx.apply_updates), "promotion": None,
            "args": (params, tx.init(params), grads),
            "final": measure.flat_to_host if lib == "gradxform-flat" else measure.to_numpy}


def run_case(tree: str, opt: str, params_np: Any, grads_np: Any, cfg: dict,
             phases: measure.Phases, finals: dict) -> dict:
    """Compiles, times and measures one tree x optimizer for every library."""
    pair = trees.optimizers()[opt]
    n = sum(x.size for x in jax.tree.leaves(params_np))
    grads = jax.tree.map(jnp.array, grads_np)
    case: dict[str, Any] = {"tree": tree, "optimizer": opt, "n_params": int(n),
                            "n_leaves": len(jax.tree.leaves(params_np)),
                            "min_bytes_per_param": pair.bytes_per_param,
                            "bytes_model": pair.bytes_note, "libraries": {}}
    libs, contenders = case["libraries"], {}
    for lib in JAX_LIBS:
        reason = cfg["skip"].get(f"{tree}/{opt}/{lib}")
        if lib == "gradxform-flat" and pair.flat_path is not None:
            reason = pair.flat_path
        if reason is not None:
            libs[lib] = {"skipped": reason}
            print(f"skipped {tree}/{opt}/{lib} ({libs[lib]['skipped']})")
            continue
        t0 = time.perf_counter()
        with phases(f"setup {tree}/{opt}/{lib}"):
            s = setup_jax(lib, pair, params_np, grads)
        setup_s = time.perf_counter() - t0
        with phases(f"compile {tree}/{opt}/{lib}"):
            c = measure.compile_step(s["fn"], s["args"], promotion=s["promotion"],
                                     repeats=cfg["compile_repeats"][tree])
        compiled = c.pop("compiled")
        libs[lib] = {**c, "setup_s": setup_s}
        if lib == "optax":
            contenders[AGAIN] = measure.JaxStepper(compiled, *measure.fresh_copy(s["args"]))
            contenders[AGAIN].final = s["final"]
            libs[AGAIN] = {"note": "optax's executable again, on its own buffers (A/A control)"}
        contenders[lib] = measure.JaxStepper(compiled, *s["args"])
        contenders[lib].final = s["final"]
    if cfg["torch"] and pair.torch is not None:
        flat_p, flat_g = jax.tree.leaves(params_np), jax.tree.leaves(grads_np)
        for lib, options in TORCH_LIBS.items():
            try:
                contenders[lib] = measure.TorchStepper(pair.torch, flat_p, flat_g, options)
                libs[lib] = {"memory_note": "peak_bytes = params + grads + optimizer state tensors"}
            except Exception as e:  # noqa: BLE001 - e.g. no fused kernel for this optimizer
                libs[lib] = {"error": f"{type(e).__name__}: {e}"}
    with phases(f"setup {tree}/{opt}/references"):
        contenders["ref:copy"] = measure.Reference("copy", n)
        contenders["ref:stream"] = measure.Reference("stream", n)
    with phases(f"timing {tree}/{opt}"):
        in_cache = 4 * n <= cfg["flush"].cache_bytes  # stays warm between steps, as in training
        times = measure.round_robin(contenders, cfg["warmup"], cfg["repeats"][tree],
                                    fresh_buffers=cfg["fresh_buffers"],
                                    flush=None if in_cache else cfg["flush"])
    ref = {k.split(":")[1]: contenders[k].bytes / measure.median(times[k]) for k in
           ("ref:copy", "ref:stream")}
    case["references_GBps"] = {k: v / 1e9 for k, v in ref.items()}
    with phases(f"collect {tree}/{opt}"):
        min_bytes = pair.bytes_per_param * n
        for lib, stepper in contenders.items():
            if lib.startswith("ref:"):
                continue
            t = measure.median(times[lib])
            r = libs[lib]
            r.update(step_ms=1e3 * t, step_ms_all=[1e3 * x for x in times[lib]], steps=stepper.steps,
                     achieved_GBps=min_bytes / t / 1e9, bw_frac_copy=min_bytes / t / ref["copy"],
                     bw_frac_stream=min_bytes / t / ref["stream"])
            if r.get("xla_bytes_accessed") is not None:
                r["xla_bytes_per_param"] = r["xla_bytes_accessed"] / n
            if lib in TORCH_LIBS:
                r["peak_bytes"] = stepper.state_bytes()
                final = jax.tree.unflatten(jax.tree.structure(params_np), stepper.final_params())
            else:
                final = stepper.final(stepper.params)
            finals[f"{tree}/{opt}/{lib}"] = final
    _ratios_and_checks(case, finals, f"{tree}/{opt}")
    return case


def _ratios_and_checks(case: dict, finals: dict, key: str) -> None:
    """optax / gradxform ratios of step and compile time; param agreement."""
    libs, ratios, checks = case["libraries"], {}, {}
    base = libs.get("optax", {})
    for lib in ("gradxform", "gradxform-flat", AGAIN, *TORCH_LIBS):
        r = libs.get(lib, {})
        if "step_ms" in r and "step_ms" in base:
            ratios[f"step optax/{lib}"] = base["step_ms"] / r["step_ms"]
            per_round = measure.round_ratios(base["step_ms_all"], r["step_ms_all"])
            ratios[f"step optax/{lib} paired"] = measure.median(per_round)
            ratios[f"step optax/{lib} paired 95% CI"] = measure.median_ci(per_round)
        if "compile_s" in r and "compile_s" in base:
            ratios[f"compile optax/{lib}"] = base["compile_s"] / r["compile_s"]
    for a, b in (("gradxform", "optax"), ("gradxform-flat", "gradxform"), (AGAIN, "optax"),
                 ("gradxform-flat", "optax"), ("torch-foreach", "optax"), ("torch-fused", "optax")):
        if f"{key}/{a}" in finals and f"{key}/{b}" in finals:
            checks[f"max_abs_diff {a} vs {b}"] = measure.max_abs_diff(finals[f"{key}/{a}"],
                                                              finals[f"{key}/{b}"])
    case["ratios"], case["param_checks"] = ratios, checks


def run_train_step(params_np: Any, cfg: dict, phases: measure.Phases, finals: dict) -> dict:
    """A whole jitted, donated train step with adam on the many-leaf tree.

    Loss: sum over leaves of ``sum((w * x - y) ** 2)``, with fixed data trees
    ``x, y`` shaped like the params and passed as jit arguments. Each variant
    stores the data as it stores the params: per-leaf variants get the trees,
    the flat variant gets them as ``flat.ravel(x)`` and unravels all three in
    the loss. (Ravelling the data for the per-leaf variants too would give one
    operand thousands of consumers, and XLA's compile time grows quadratically.)
    The flat variant is jitted with ``gx.flat_compiler_options()``.
    """
    rng = np.random.default_rng(7)
    data = [jax.tree.map(lambda p: jnp.array(rng.standard_normal(p.shape, np.float32)), params_np)
            for _ in range(2)]

    def loss_of_tree(p, x, y):
        terms = [jnp.sum((w * a - b) ** 2) for w, a, b in
                 zip(jax.tree.leaves(p), jax.tree.leaves(x), jax.tree.leaves(y))]
        return jnp.sum(jnp.stack(terms))

    def loss_of_flat(flat, x, y):
        return loss_of_tree(flat.unravel(), x.unravel(), y.unravel())

    def make(tx, apply, loss):
        def train_step(params, state, x, y):
            grads = jax.grad(loss)(params, x, y)
            updates, state = tx.update(grads, state, params)
            return apply(params, updates), state
        return train_step

    out: dict[str, Any] = {"tree": "many_leaves", "optimizer": "adam", "libraries": {},
                           "loss": "sum_leaves sum((w*x - y)**2)",
                           "data": "x, y passed as jit args: trees (per-leaf), FlatTrees (flat)"}
    libs, contenders = out["libraries"], {}
    # Flat first, in a process that has compiled nothing large yet: optax's
    # compile took as long second as first, the flat one a third longer.
    for lib in sorted(JAX_LIBS, key=lambda lib: lib != "gradxform-flat"):
        if f"train_step/adam/{lib}" in cfg["skip"]:
            libs[lib] = {"skipped": cfg["skip"][f"train_step/adam/{lib}"]}
            continue
        params, xy = jax.tree.map(jnp.array, params_np), tuple(data)
        with phases(f"setup train_step/{lib}"):
            if lib == "optax":
                tx, promo = optax.adam(1e-3), "standard"
                with jax.numpy_dtype_promotion("standard"):
                    state = tx.init(params)
                fn = make(tx, optax.apply_updates, loss_of_tree)
            else:
                tx, promo = gx.adam(1e-3), None
                if lib == "gradxform-flat":
                    params = gx.flat_tree(params)
                    xy = tuple(params.ravel(d) for d in data)
                state = tx.init(params)
                fn = make(tx, gx.apply_updates,
                          loss_of_flat if lib == "gradxform-flat" else loss_of_tree)
        options = gx.flat_compiler_options() if lib == "gradxform-flat" else {}
        with phases(f"compile train_step/{lib}"):
            c = measure.compile_step(fn, (params, state, *xy), promotion=promo,
                                     compiler_options=options)
        contenders[lib] = measure.JaxStepper(c.pop("compiled"), params, state, *xy)
        libs[lib] = {**c, "compiler_options": options}
    with phases("timing train_step"):
        times = measure.round_robin(contenders, cfg["warmup"], cfg["repeats"]["train_step"],
                                    fresh_buffers=cfg["fresh_buffers"])
    for lib, stepper in contenders.items():
        libs[lib].update(step_ms=1e3 * measure.median(times[lib]),
                         step_ms_all=[1e3 * t for t in times[lib]], steps=stepper.steps)
        to_host = measure.flat_to_host if lib == "gradxform-flat" else measure.to_numpy
        finals[f"train_step/adam/{lib}"] = to_host(stepper.params)
    _ratios_and_checks(out, finals, "train_step/adam")
    return out


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark, prints the tables, writes the JSON; returns the results."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    phases = measure.Phases()
    saved_cache = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        results, finals = _run(args, phases)
    finally:
        jax.config.update("jax_enable_compilation_cache", saved_cache)
    with phases("report"):
        print_table(results)
        if args.markdown:
            print_markdown(results)
        if args.dump_params:
            np.savez(args.dump_params, **{f"{k}/{leaf}": v for k, tree in finals.items()
                                          for leaf, v in measure.named_leaves(tree).items()})
    results["phases_s"] = dict(phases.seconds)
    results["total_wall_s"] = time.perf_counter() - t_start
    path = json_path(args.json)
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=_json_default)
    print_phases(results)
    print(f"\ntotal wall time {results['total_wall_s']:.1f} s")
    where = "" if args.json else " (a fresh temporary directory; --json PATH to choose)"
    print(f"wrote the JSON results to {path}{where}")
    return results


def json_path(requested: str | None) -> str:
    """Where the JSON goes: ``requested`` (its folder created), else a fresh temporary folder."""
    if requested is None:
        return os.path.join(tempfile.mkdtemp(prefix="gradxform-benchmark-"), "results.json")
    os.makedirs(os.path.dirname(os.path.abspath(requested)), exist_ok=True)
    return requested


def _json_default(x: Any) -> Any:
    return float(x) if isinstance(x, (np.floating, np.integer)) else str(x)


def _run(args: argparse.Namespace, phases: measure.Phases) -> tuple[dict, dict]:
    torch_v = measure.torch_version()
    skip = {} if args.full or args.smoke else dict.fromkeys(FULL_ONLY, "default run; --full")
    skip.update(dict.fromkeys(args.skip, "--skip"))
    cfg = {"torch": torch_v is not None, "skip": skip,
           "warmup": 1 if args.smoke else 2,
           "repeats": {k: args.repeats or (2 if args.smoke else v) for k, v in FULL_REPEATS.items()},
           "compile_repeats": {k: 1 if args.smoke else v for k, v in COMPILE_REPEATS.items()},
           "fresh_buffers": args.fresh_buffers, "flush": measure.CacheFlush()}
    if not torch_v:
        print("torch not installed")
    results: dict[str, Any] = {"meta": {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "jax": jax.__version__, "optax": optax.__version__, "gradxform": gx.__version__,
        "torch": torch_v or "torch not installed", "python": sys.version.split()[0],
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "smoke": args.smoke, "warmup": cfg["warmup"],
        "repeats": cfg["repeats"], "compile_repeats": cfg["compile_repeats"],
        "fresh_buffers": cfg["fresh_buffers"], "cache_flush_bytes": cfg["flush"].bytes,
        "compilation_cache": "disabled", "args": vars(args)},
        "cases": []}
    finals: dict[str, Any] = {}
    with phases("setup"):
        jax.block_until_ready(jax.jit(lambda x: x * 2.0)(jnp.ones(8)))  # backend start-up
    # The train step goes first: a large compile slows the next compile of
    # thousands of distinct kernels (RESULTS.md), so each runs as early as it can.
    if args.train_step:
        with phases("setup train_step"):
            params_np, _ = trees.build("many_leaves", args.smoke)
        results["train_step"] = run_train_step(params_np, cfg, phases, finals)
        gc.collect()
    for tree in args.trees:
        with phases(f"setup {tree}"):
            params_np, grads_np = trees.build(tree, args.smoke)
        for opt in args.optimizers:
            results["cases"].append(run_case(tree, opt, params_np, grads_np, cfg, phases, finals))
            gc.collect()  # release this case's executables and buffers
    row = next((c for c in results["cases"] if c["tree"] == "many_leaves"
                and c["optimizer"] == "adam"), None)
    if "train_step" in results and row and "step optax/gradxform-flat" in row["ratios"]:
        results["train_step"]["ratios"]["update-only step optax/gradxform-flat"] = \
            row["ratios"]["step optax/gradxform-flat"]
    return results, finals


if __name__ == "__main__":
    main()
