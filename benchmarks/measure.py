"""Measuring primitives: compile a jitted step, time callables round-robin, and
the two bandwidth references.

Noise handling: the machine is shared, so the contenders of one comparison are
timed *interleaved*, one call each per round (A B C A B C ...), and each is
summarised by its median. A slow minute then hits every contender alike, and
outliers do not move the median.

On request, before each round every contender moves its buffers to fresh
allocations (``replace_buffers``). On this machine the speed of a
memory-bound step depends on where its buffers happen to lie: two steppers
running the *same* executable on equal 64 MB buffers differed by 14% (and
two of equal kernels by up to 22%) for a whole run when each kept its
buffers (a donated step reuses them forever), and by 3 to 6% once they were
re-allocated every round. Without it, run-long placement luck can decide the
sign of a ratio between identical kernels. It costs about 1 s per round on
the 16M-float trees (fresh pages are faulted in), so only parity runs use it.
"""

from __future__ import annotations

import contextlib
import glob
import math
import statistics
import sys
import time
from collections import defaultdict
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np


def compile_step(fn: Callable, args: tuple, donate: tuple[int, ...] = (0, 1),
                 promotion: str | None = None, repeats: int = 1,
                 compiler_options: dict | None = None) -> dict:
    """Traces, lowers and compiles ``jax.jit(fn, donate_argnums=donate)`` on ``args``.

    Each of the ``repeats`` compiles wraps ``fn`` in a fresh function object, so
    that no jit or executable cache is hit; the times reported are the minimum
    over the repeats (the least disturbed by the other load on the machine) and
    all of them. Returns the last compiled executable, XLA's bytes-accessed
    count and the memory analysis. ``promotion`` runs the trace under
    ``jax.numpy_dtype_promotion(promotion)`` (optax needs "standard" where the
    ambient mode is "strict"). ``compiler_options`` go to ``jax.jit``.
    """
    def promotion_context():
        return jax.numpy_dtype_promotion(promotion) if promotion else contextlib.nullcontext()

    lower_s, xla_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with promotion_context():
            lowered = jax.jit(lambda *a: fn(*a), donate_argnums=donate,
                              compiler_options=compiler_options).lower(*args)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        lower_s.append(t1 - t0)
        xla_s.append(time.perf_counter() - t1)
    totals = [a + b for a, b in zip(lower_s, xla_s)]
    return {
        "compiled": compiled,
        "lower_s": min(lower_s),
        "xla_compile_s": min(xla_s),
        "compile_s": min(totals),
        "compile_s_all": totals,
        "xla_bytes_accessed": xla_bytes_accessed(compiled),
        **memory(compiled),
    }


def xla_bytes_accessed(compiled: Any) -> float | None:
    """XLA's 'bytes accessed' estimate; ``cost_analysis()`` is a dict or a list of dicts."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    value = (cost or {}).get("bytes accessed")
    return float(value) if value is not None else None


def memory(compiled: Any) -> dict:
    """Peak bytes from ``memory_analysis()``: arguments + outputs - aliased + temporaries."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        m = None
    if m is None:
        return {"peak_bytes": None, "temp_bytes": None}
    peak = (m.argument_size_in_bytes + m.output_size_in_bytes
            - m.alias_size_in_bytes + m.temp_size_in_bytes)
    return {"peak_bytes": int(peak), "temp_bytes": int(m.temp_size_in_bytes)}


class JaxStepper:
    """Calls a compiled ``step(params, state, *rest) -> (params, state)`` in a loop,
    threading the donated params and state through; ``rest`` is not donated."""

    def __init__(self, compiled: Any, params: Any, state: Any, *rest: Any):
        self.compiled, self.params, self.state, self.rest = compiled, params, state, rest
        self.steps = 0

    def __call__(self) -> None:
        self.params, self.state = self.compiled(self.params, self.state, *self.rest)
        jax.block_until_ready((self.params, self.state))
        self.steps += 1

    def replace_buffers(self) -> None:
        """Moves params, state and the other arguments to freshly allocated copies."""
        self.params, self.state, self.rest = fresh_copy((self.params, self.state, self.rest))


class Reference:
    """A bandwidth reference on ``n`` float32 elements, moving 8 bytes per element.

    ``copy``: ``x + 1.0`` into a fresh buffer (read x, write y; not donated).
    ``stream``: ``x * 0.5 + 1.0`` in place (``x`` donated, read and written).
    """

    def __init__(self, kind: str, n: int):
        self.kind, self.bytes = kind, 8 * n
        x = jnp.zeros((n,), jnp.float32)
        if kind == "copy":
            self.compiled = jax.jit(lambda v: v + 1.0).lower(x).compile()
        else:
            self.compiled = jax.jit(lambda v: v * 0.5 + 1.0, donate_argnums=0).lower(x).compile()
        self.x = x

    def replace_buffers(self) -> None:
        """Moves ``x`` to a freshly allocated copy."""
        self.x = fresh_copy(self.x)

    def __call__(self) -> None:
        if self.kind == "copy":
            jax.block_until_ready(self.compiled(self.x))
        else:
            self.x = self.compiled(self.x)
            jax.block_until_ready(self.x)


def fresh_copy(tree: Any) -> Any:
    """Copies of every array in ``tree``, in newly allocated buffers (untimed set-up)."""
    return jax.block_until_ready(jax.tree.map(jnp.copy, tree))


def last_level_cache_bytes(default: int = 32 << 20) -> int:
    """The size of CPU 0's largest cache, from Linux's sysfs; ``default`` elsewhere."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        with open(path) as f:
            text = f.read().strip()  # e.g. "32768K"
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes, default=default)


class CacheFlush:
    """Reads a host buffer of twice the last-level cache's size.

    Called before each timed step, it leaves every contender the same cold,
    clean cache. Without it, a step also paid for writing back the dirty lines
    that the previous contender left behind (up to the cache's size: about
    0.7 ms at 46 GB/s here), so in a fixed cyclic order one contender was
    always charged for its neighbour's writes. Only steps whose buffers
    exceed the cache are timed after a flush: a tree that fits in the cache
    stays there between steps in training too."""

    def __init__(self, cache_bytes: int | None = None):
        self.cache_bytes = cache_bytes or last_level_cache_bytes()
        self.bytes = 2 * self.cache_bytes
        self.buffer = np.ones(self.bytes // 8)

    def __call__(self) -> None:
        float(self.buffer.sum())


def round_robin(contenders: dict[str, Callable[[], None]], warmup: int, repeats: int,
                fresh_buffers: bool = False,
                flush: Callable[[], None] | None = None,
                settle: bool = False) -> dict[str, list[float]]:
    """Calls every contender ``warmup`` times, then ``repeats`` rounds of one timed
    call each, interleaved; returns each contender's per-call seconds.

    Round ``r`` starts at the ``r``-th contender (a rotation), so that the
    round's first call, which follows the untimed set-up, is not always the
    same contender's. ``flush`` (a `CacheFlush`) runs, untimed, before every
    timed call. If ``fresh_buffers``, then before a round's timed calls each
    contender that has a ``replace_buffers`` method moves to fresh buffers, in
    the round's order (untimed; see the module docstring for why). If
    ``settle``, each timed call follows an untimed call of the same contender
    (before the flush), so that no step is timed right after another
    contender's: a step that follows one which freed gigabytes of
    temporaries can fault its own temporaries' pages in far more slowly (on
    this VM a sparse FTRL step took 25 ms after itself, 200 ms after the
    dense one)."""
    for _ in range(warmup):
        for call in contenders.values():
            call()
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if fresh_buffers and hasattr(contenders[name], "replace_buffers"):
                contenders[name].replace_buffers()
        for name in order:
            if settle:
                contenders[name]()
            if flush is not None:
                flush()
            t0 = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median(values: list[float]) -> float:
    """The median, or NaN for an empty list."""
    return statistics.median(values) if values else math.nan


def round_ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """``numerators[i] / denominators[i]`` for every round.

    Both lists come from the same `round_robin` rounds, so each pair was timed
    back to back under the same load."""
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval for the median of ``values``.

    The order statistics ``x_(k)`` and ``x_(n+1-k)``, with ``k`` the largest
    rank such that ``P(Binomial(n, 1/2) < k) <= (1 - level) / 2``: the
    median lies below ``x_(k)`` only if fewer than ``k`` values fall below it.
    With too few values for ``level`` (``n < 6`` at 95%), the whole range,
    which then covers less than ``level``. NaNs for an empty list."""
    x, n = sorted(values), len(values)
    if n == 0:
        return math.nan, math.nan
    tail, k = 0.0, 0
    while k < n and tail + math.comb(n, k) / 2 ** n <= (1 - level) / 2:
        tail += math.comb(n, k) / 2 ** n
        k += 1
    k = max(k, 1)
    return x[k - 1], x[n - k]


def to_numpy(tree: Any) -> Any:
    """A host copy of a tree of arrays."""
    return jax.tree.map(lambda x: np.array(x), tree)


def torch_version() -> str | None:
    """torch's version, or None where ``import torch`` fails."""
    try:
        import torch
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return str(torch.__version__)


class TorchStepper:
    """``opt.step()`` on tensors whose ``.grad`` is set once (no autograd)."""

    def __init__(self, make: Callable, params_np: list[np.ndarray],
                 grads_np: list[np.ndarray], options: dict):
        import torch

        self.tensors = [torch.from_numpy(p.copy()) for p in params_np]
        for t, g in zip(self.tensors, grads_np):
            t.grad = torch.from_numpy(g.copy())
        self.opt, self.pre_step = make(self.tensors, options)
        self.steps = 0

    def __call__(self) -> None:
        if self.pre_step is not None:
            self.pre_step()
        self.opt.step()
        self.steps += 1

    def replace_buffers(self) -> None:
        """Moves the params, their ``.grad`` and the optimizer state to fresh clones.

        The list of tensors is updated in place, so a ``pre_step`` that closes
        over it (gradient clipping) sees the new tensors."""
        import torch

        with torch.no_grad():
            fresh = {}
            for old in self.tensors:
                fresh[id(old)] = new = old.detach().clone()
                new.grad = old.grad.clone()
                if old in self.opt.state:
                    self.opt.state[new] = {k: v.clone() if isinstance(v, torch.Tensor) else v
                                           for k, v in self.opt.state.pop(old).items()}
            for group in self.opt.param_groups:
                group["params"] = [fresh[id(p)] for p in group["params"]]
            self.tensors[:] = [fresh[id(t)] for t in self.tensors]

    def state_bytes(self) -> int:
        """Bytes of params + grads + optimizer state tensors, after a step."""
        import torch

        total = sum(t.nbytes + t.grad.nbytes for t in self.tensors)
        for st in self.opt.state.values():
            total += sum(v.nbytes for v in st.values() if isinstance(v, torch.Tensor))
        return int(total)

    def final_params(self) -> list[np.ndarray]:
        """Host copies of the current parameters."""
        return [t.detach().numpy().copy() for t in self.tensors]


class Phases:
    """Wall time per named phase of the run, for the cost breakdown; phases over
    ``report_over`` seconds are logged to stderr as they finish (progress)."""

    def __init__(self, report_over: float = 2.0) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.report_over, self.start = report_over, time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.seconds[name] += dt
            if dt > self.report_over:
                print(f"[{time.perf_counter() - self.start:6.0f} s] {name}: {dt:.1f} s",
                      file=sys.stderr, flush=True)


def named_leaves(tree: Any) -> dict[str, np.ndarray]:
    """``{"layer_00/attn/query/kernel": array, ...}`` for a (nested dict) tree."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(x) for path, x in flat}


def max_abs_diff(a: Any, b: Any) -> float:
    """The largest elementwise difference between two trees of the same structure."""
    return float(max(np.max(np.abs(np.asarray(x) - np.asarray(y)), initial=0.0)
                     for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def flat_to_host(flat: Any) -> Any:
    """A host copy of ``flat.unravel()`` (an eager unravel compiles nothing)."""
    return to_numpy(flat.unravel())
