"""The benchmark script runs end to end on tiny trees, and its libraries agree.

Correctness only: no timing is asserted. ``benchmarks.run.main`` is run in
process with ``--smoke --fresh-buffers --train-step`` (every tree, optimizer and library,
the train-step block, JSON, markdown); the final parameters it dumps after its
timed steps must agree across libraries, since every library ran the same
number of steps from the same parameters with the same gradients.
"""

from __future__ import annotations

import collections
import json
import math

import numpy as np
import pytest

from benchmarks import measure, run, trees


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Runs the smoke benchmark once; returns (json results, dumped params, stdout)."""
    out = tmp_path_factory.mktemp("bench")
    json_path, npz_path = out / "r.json", out / "p.npz"
    capture = _Capture()
    with capture:
        run.main(["--smoke", "--fresh-buffers", "--train-step", "--markdown",
                  "--json", str(json_path), "--dump-params", str(npz_path)])
    results = json.loads(json_path.read_text())
    params: dict = collections.defaultdict(dict)  # "tree/opt/lib" -> {leaf path: array}
    with np.load(npz_path) as npz:
        for key in npz.files:
            tree, opt, lib, leaf = key.split("/", 3)
            params[f"{tree}/{opt}/{lib}"][leaf] = npz[key]
    return results, params, capture.text


class _Capture:
    """Captures stdout (the fixture is module-scoped, so capsys is not available)."""

    def __enter__(self):
        import contextlib
        import io

        self._buffer = io.StringIO()
        self._redirect = contextlib.redirect_stdout(self._buffer)
        self._redirect.__enter__()
        return self

    def __exit__(self, *exc):
        self._redirect.__exit__(*exc)
        self.text = self._buffer.getvalue()


def _positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_every_case_has_every_library(smoke):
    results, _, _ = smoke
    cases = {(c["tree"], c["optimizer"]): c for c in results["cases"]}
    assert set(cases) == {(t, o) for t in trees.TREES for o in trees.OPTIMIZERS}
    for (tree, opt), case in cases.items():
        for lib in trees.JAX_LIBS:
            r = case["libraries"][lib]
            for key in ("step_ms", "compile_s", "bw_frac_copy", "bw_frac_stream", "peak_bytes"):
                assert _positive_finite(r.get(key)), (tree, opt, lib, key, r.get(key))
            assert r["steps"] == case["libraries"]["optax"]["steps"] > 0
        assert _positive_finite(case["ratios"]["step optax/optax-again paired"])
        lo, hi = case["ratios"]["step optax/gradxform paired 95% CI"]
        assert lo <= case["ratios"]["step optax/gradxform paired"] <= hi
        assert case["param_checks"]["max_abs_diff optax-again vs optax"] == 0.0
        assert _positive_finite(case["references_GBps"]["copy"])
        assert _positive_finite(case["references_GBps"]["stream"])


def test_train_step_block(smoke):
    results, _, _ = smoke
    block = results["train_step"]
    for lib in trees.JAX_LIBS:
        assert _positive_finite(block["libraries"][lib]["step_ms"])
        assert _positive_finite(block["libraries"][lib]["compile_s"])
    assert _positive_finite(block["ratios"]["step optax/gradxform-flat"])
    assert _positive_finite(block["ratios"]["step optax/gradxform-flat paired"])


class _Recorder:
    """A contender that logs its calls ("a") and buffer moves ("A")."""

    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def __call__(self) -> None:
        self.log.append(self.name)

    def replace_buffers(self) -> None:
        self.log.append(self.name.upper())


def test_round_robin_rotates_the_order_and_pairs_rounds():
    calls = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = measure.round_robin(contenders, warmup=1, repeats=4)
    assert calls == list("abc" "abc" "bca" "cab" "abc")
    assert all(len(t) == 4 for t in times.values())
    log: list = []
    contenders = {name: _Recorder(name, log) for name in "ab"}
    contenders["c"] = lambda: log.append("c")  # no buffers to move
    measure.round_robin(contenders, warmup=1, repeats=2, fresh_buffers=True,
                        flush=lambda: log.append("."))
    assert "".join(log) == "abc" "AB" ".a.b.c" "BA" ".b.c.a"
    flush = measure.CacheFlush(cache_bytes=1 << 20)
    flush()
    assert flush.bytes == flush.buffer.nbytes == 2 << 20
    assert measure.last_level_cache_bytes() >= 1 << 20
    assert measure.median(measure.round_ratios([2.0, 9.0, 4.0], [1.0, 3.0, 1.0])) == 3.0
    assert math.isnan(measure.median(measure.round_ratios([], [])))


def test_median_ci_is_the_order_statistics_of_the_binomial_tails():
    # n = 15 at 95%: P(Binomial(15, 1/2) <= 3) = 0.018 <= 0.025 < P(<= 4) = 0.059,
    # so the interval is [x_(4), x_(12)].
    assert measure.median_ci([float(v) for v in range(15, 0, -1)]) == (4.0, 12.0)
    # n = 60: P(<= 21) = 0.0136 <= 0.025 < P(<= 22) = 0.0259: [x_(22), x_(39)].
    assert measure.median_ci([float(v) for v in range(1, 61)]) == (22.0, 39.0)
    assert measure.median_ci([3.0, 1.0]) == (1.0, 3.0)  # too few: the range
    assert all(math.isnan(v) for v in measure.median_ci([]))


def test_a_stepper_moved_to_fresh_buffers_steps_on_from_the_same_values():
    import jax
    import jax.numpy as jnp

    step = jax.jit(lambda p, s, g: (p - g, s + 1), donate_argnums=(0, 1))
    params, state, grads = jnp.arange(4.0), jnp.int32(0), jnp.ones(4)
    stepper = measure.JaxStepper(step.lower(params, state, grads).compile(), params, state, grads)
    stepper()
    before = [x.unsafe_buffer_pointer() for x in (stepper.params, *stepper.rest)]
    stepper.replace_buffers()
    after = [x.unsafe_buffer_pointer() for x in (stepper.params, *stepper.rest)]
    assert not set(before) & set(after)
    stepper()
    np.testing.assert_array_equal(stepper.params, np.arange(4.0) - 2)
    assert int(stepper.state) == 2 and stepper.steps == 2
    reference = measure.Reference("stream", 8)
    old = reference.x.unsafe_buffer_pointer()
    reference.replace_buffers()
    reference()
    assert reference.x.unsafe_buffer_pointer() != old


@pytest.mark.parametrize("opt", trees.OPTIMIZERS)
def test_a_torch_stepper_moved_to_fresh_buffers_matches_one_that_was_not(opt):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(np.float32) for s in ((3, 4), (5,))]
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    make = trees.optimizers()[opt].torch
    kept, moved = (measure.TorchStepper(make, params, grads, {"foreach": True}) for _ in range(2))
    for _ in range(3):
        old = [t.data_ptr() for t in moved.tensors]
        moved.replace_buffers()
        assert not set(old) & {t.data_ptr() for t in moved.tensors}
        kept()
        moved()
    assert len(moved.opt.state) == len(params)
    for a, b in zip(kept.final_params(), moved.final_params()):
        np.testing.assert_array_equal(a, b)


def test_metadata_and_reports(smoke):
    results, _, stdout = smoke
    meta = results["meta"]
    for key in ("jax", "optax", "torch", "cpu_count", "platform", "timestamp"):
        assert meta[key] is not None
    if meta["torch"] == "torch not installed":
        assert "torch not installed" in stdout
    assert "| tree | optimizer |" in stdout
    assert results["total_wall_s"] > 0 and results["phases_s"]


def _assert_trees_close(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for leaf in a:
        np.testing.assert_allclose(a[leaf], b[leaf], rtol=1e-5, atol=1e-7, err_msg=f"{what}: {leaf}")


@pytest.mark.parametrize("case", [f"{t}/{o}" for t in trees.TREES for o in trees.OPTIMIZERS]
                         + ["train_step/adam"])
def test_libraries_agree_after_the_timed_steps(smoke, case):
    _, params, _ = smoke
    _assert_trees_close(params[f"{case}/gradxform"], params[f"{case}/optax"],
                        f"{case}: gradxform vs optax")
    _assert_trees_close(params[f"{case}/gradxform-flat"], params[f"{case}/gradxform"],
                        f"{case}: gradxform-flat unravel() vs gradxform")
