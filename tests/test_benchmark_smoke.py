"""The benchmark script runs end to end on tiny trees, and its libraries agree.

Correctness only: no timing is asserted. The smoke benchmark is run as a user
would run it, ``python -m benchmarks.run --smoke`` in a subprocess from the
repository root (with ``--fresh-buffers --train-step --markdown``: every tree,
optimizer and library, the train-step block, the markdown table), and without
``--json``: it must write its JSON into a fresh temporary directory and leave
the committed ``benchmarks/results*.json`` files byte for byte as they were.
The final parameters it dumps after its timed steps must agree across
libraries, since every library ran the same number of steps from the same
parameters with the same gradients.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import measure, run, trees

ROOT = Path(__file__).resolve().parents[1]


def _committed_results() -> dict[str, str]:
    """sha256 of every committed ``benchmarks/results*.json``, by file name."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((ROOT / "benchmarks").glob("results*.json"))}


def _benchmark_files() -> set[str]:
    return {str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").rglob("*")
            if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Runs the smoke benchmark once, as a user would, without ``--json``.

    Returns the JSON results, the dumped params, stdout, where the JSON was
    written, the temporary directory the run was given, and the committed
    results files' hashes and the ``benchmarks/`` listing before and after.
    """
    out = tmp_path_factory.mktemp("bench")
    tmpdir = out / "tmp"
    tmpdir.mkdir()
    npz_path = out / "p.npz"
    before = _committed_results(), _benchmark_files()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--fresh-buffers", "--train-step",
         "--markdown", "--dump-params", str(npz_path)],
        cwd=ROOT, env={**os.environ, "TMPDIR": str(tmpdir)},
        capture_output=True, text=True, timeout=900,
    )
    after = _committed_results(), _benchmark_files()
    assert proc.returncode == 0, proc.stderr[-5000:]
    match = re.search(r"^wrote the JSON results to (.+?)(?: \(a fresh temporary directory.*)?$",
                      proc.stdout, re.MULTILINE)
    assert match, proc.stdout[-3000:]
    json_path = Path(match[1])
    results = json.loads(json_path.read_text())
    params: dict = collections.defaultdict(dict)  # "tree/opt/lib" -> {leaf path: array}
    with np.load(npz_path) as npz:
        for key in npz.files:
            tree, opt, lib, leaf = key.split("/", 3)
            params[f"{tree}/{opt}/{lib}"][leaf] = npz[key]
    return {"results": results, "params": params, "stdout": proc.stdout, "json": json_path,
            "tmpdir": tmpdir, "before": before, "after": after}


def test_a_run_without_json_leaves_the_committed_results_alone(smoke):
    hashes_before, files_before = smoke["before"]
    hashes_after, files_after = smoke["after"]
    assert "results.json" in hashes_before and len(hashes_before) >= 2
    assert hashes_after == hashes_before
    assert files_after == files_before  # nothing new under benchmarks/ either
    path = smoke["json"]
    assert path.name == "results.json"
    assert path.parent.parent.resolve() == smoke["tmpdir"].resolve()
    assert path.parent.name.startswith("gradxform-benchmark-")
    assert ROOT not in path.resolve().parents
    assert smoke["results"]["meta"]["smoke"] is True
    assert "a fresh temporary directory" in smoke["stdout"]


def test_json_path_writes_there_and_nowhere_else(tmp_path, capsys):
    before = _committed_results()
    path = tmp_path / "new" / "r.json"  # its folder does not exist yet
    returned = run.main(["--smoke", "--trees", "one_leaf", "--optimizers", "adam",
                         "--json", str(path)])
    assert _committed_results() == before
    written = json.loads(path.read_text())
    assert written["meta"]["args"]["json"] == str(path)
    assert [(c["tree"], c["optimizer"]) for c in written["cases"]] == [("one_leaf", "adam")]
    assert written["total_wall_s"] == pytest.approx(returned["total_wall_s"])
    stdout = capsys.readouterr().out
    assert f"wrote the JSON results to {path}\n" in stdout
    assert "temporary" not in stdout


def test_help_says_where_the_results_go(capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--json PATH" in text
    assert "Without --json, the JSON results go to results.json in a fresh temporary directory" \
        in text
    assert run.parse_args(["--smoke"]).json is None


def _positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_every_case_has_every_library(smoke):
    results = smoke["results"]
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
    results = smoke["results"]
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
    results, stdout = smoke["results"], smoke["stdout"]
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
    params = smoke["params"]
    _assert_trees_close(params[f"{case}/gradxform"], params[f"{case}/optax"],
                        f"{case}: gradxform vs optax")
    _assert_trees_close(params[f"{case}/gradxform-flat"], params[f"{case}/gradxform"],
                        f"{case}: gradxform-flat unravel() vs gradxform")
