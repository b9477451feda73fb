"""The row-sparse benchmark runs end to end on tiny tables, and sparse and dense agree.

Correctness only: no timing is asserted. ``python -m benchmarks.sparse --smoke``
runs in a subprocess from the repository root, as a user would run it (with
``--markdown`` and ``--dump-params``, without ``--json``): it must exit 0,
write its JSON into a fresh temporary directory, leave the committed
``benchmarks/results*.json`` alone, and give every table x batch x optimizer
its row (``gx.lazy_adam`` and ``gx.ftrl`` rows are "skipped" while gradxform
does not export them). The final tables it dumps after the timed steps are
compared here: sparse adagrad is exact, so it ends on optax's dense numbers;
lazy Adam ends on optax.adam's (with a fixed gradient and zero initial moments
the untouched rows' moments stay 0); FTRL's dense rule moves untouched rows,
so it agrees with the sparse one on the touched rows only. The sparse steps
never move an untouched row.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import sparse as bench

ROOT = Path(__file__).resolve().parents[1]


def _committed_results() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((ROOT / "benchmarks").glob("results*.json"))}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Runs the smoke benchmark once; returns its JSON, dumped tables and stdout."""
    out = tmp_path_factory.mktemp("sparse_bench")
    tmpdir = out / "tmp"
    tmpdir.mkdir()
    npz_path = out / "tables.npz"
    before = _committed_results()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.sparse", "--smoke", "--markdown",
         "--dump-params", str(npz_path)],
        cwd=ROOT, env={**os.environ, "TMPDIR": str(tmpdir)},
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    match = re.search(r"^wrote the JSON results to (.+?)(?: \(a fresh temporary directory.*)?$",
                      proc.stdout, re.MULTILINE)
    assert match, proc.stdout[-3000:]
    json_path = Path(match[1])
    tables: dict = {}
    with np.load(npz_path) as npz:
        for key in npz.files:
            case, part = key.rsplit("/", 1)
            tables.setdefault(case, {})[part] = npz[key]
    return {"results": json.loads(json_path.read_text()), "tables": tables,
            "stdout": proc.stdout, "json": json_path, "tmpdir": tmpdir,
            "before": before, "after": _committed_results()}


def _positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _available(name: str) -> bool:
    return bench.optimizers()[name].sparse is not None


def test_the_json_goes_to_a_temporary_directory_and_the_repository_is_untouched(smoke):
    assert smoke["after"] == smoke["before"]
    path = smoke["json"]
    assert path.name == "results.json"
    assert path.parent.parent.resolve() == smoke["tmpdir"].resolve()
    assert ROOT not in path.resolve().parents
    assert smoke["results"]["meta"]["smoke"] is True
    assert "a fresh temporary directory" in smoke["stdout"]


def test_every_table_batch_and_optimizer_has_its_row(smoke):
    cases = smoke["results"]["cases"]
    expected = [(f"{r}x{d}", b, o) for (r, d), b, o in itertools.product(
        bench.SMOKE["tables"], bench.SMOKE["batches"], bench.OPTIMIZERS)]
    assert [(c["table"], c["batch"], c["optimizer"]) for c in cases] == expected
    for c in cases:
        if not _available(c["optimizer"]):
            assert "not available" in c["skipped"], c
            continue
        assert "skipped" not in c, c
        assert 0 < c["unique_rows"] <= c["max_rows"] <= c["batch"]
        step = c["optimizer_step"]
        for lib in ("sparse", "sparse:per-id", "dense"):
            for key in ("step_ms", "compile_s", "peak_bytes"):
                assert _positive_finite(step[lib][key]), (c["optimizer"], lib, key)
            assert step[lib]["steps"] == step["sparse"]["steps"] > 0
            assert len(step[lib]["step_ms_all"]) == c["rounds"]["timed"]
        for ratio in (step["dense/sparse"], step["dense/sparse:per-id"]):
            lo, hi = ratio["paired_95_CI"]
            assert lo <= ratio["paired"] <= hi and _positive_finite(ratio["paired"])
        floor = c["floor"]
        assert floor["bytes"] > c["unique_rows"] * c["dim"] * 4 * 5
        for key in ("ref_rows_ms", "floor_x", "floor_x_stream", "stream_GBps"):
            assert _positive_finite(floor[key]), key
        train = c["train_step"]
        for lib in ("sparse", "sparse:per-id", "dense"):
            for key in ("step_ms", "compile_s", "peak_bytes"):
                assert _positive_finite(train[lib][key]), ("train", lib, key)
        assert train["sparse_temp_below_table"] is True
        assert train["sparse"]["temp_bytes"] < c["table_bytes"]
        assert train["dense"]["peak_bytes"] > train["sparse"]["peak_bytes"]
        assert c["agreement"]["ok"] and train["agreement"]["ok"], c
        assert c["agreement_per_id"]["ok"], c
    # The bound is below the batch where the batch repeats ids, so the smoke run times it.
    assert any(c["max_rows"] < c["batch"] for c in cases if "skipped" not in c)
    assert smoke["results"]["checks_failed"] == []


def test_sparse_and_dense_final_tables_agree_where_they_should(smoke):
    tables, checked = smoke["tables"], 0
    for c in smoke["results"]["cases"]:
        if "skipped" in c:
            continue
        key = f"{c['rows']}x{c['dim']}/{c['batch']}/{c['optimizer']}"
        t = tables[key]
        sparse, dense, initial = t["sparse"], t["dense"], t["initial"]
        touched = np.zeros(c["rows"], bool)
        touched[t["touched"]] = True
        assert touched.sum() == c["unique_rows"]
        # The sparse step never moves an untouched row, and moves every touched one.
        np.testing.assert_array_equal(sparse[~touched], initial[~touched], err_msg=key)
        assert (sparse[touched] != initial[touched]).any(axis=1).all(), key
        np.testing.assert_allclose(sparse[touched], dense[touched], rtol=1e-6, atol=1e-7,
                                   err_msg=key)
        if c["optimizer"] == "ftrl":
            # FTRL's dense rule rewrites every entry from its z: untouched rows go to 0.
            np.testing.assert_array_equal(dense[~touched], 0.0, err_msg=key)
        else:
            np.testing.assert_allclose(sparse, dense, rtol=1e-6, atol=1e-7, err_msg=key)
        checked += 1
    assert checked >= len(bench.SMOKE["tables"]) * len(bench.SMOKE["batches"])


def test_reports(smoke):
    stdout = smoke["stdout"]
    assert "| table | ids (unique rows) | max_rows | optimizer |" in stdout
    assert "no table-sized buffer among the sparse train step's temporaries" in stdout
    results = smoke["results"]
    for key in ("jax", "optax", "gradxform", "cpu_count", "timestamp", "ids"):
        assert results["meta"][key] is not None
    assert results["total_wall_s"] > 0 and results["phases_s"]


def test_the_ids_follow_a_bounded_zipf_law_over_permuted_rows():
    rows, n, s = 1000, 200_000, 1.2
    ids = bench.zipf_ids(rows, n, s, seed=3)
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < rows
    np.testing.assert_array_equal(ids, bench.zipf_ids(rows, n, s, seed=3))
    counts = np.sort(np.bincount(ids, minlength=rows))[::-1]
    p = np.arange(1, rows + 1, dtype=np.float64) ** -s
    p /= p.sum()
    for rank in (0, 1, 9):  # the k-th most frequent row is drawn about p_k * n times
        assert abs(counts[rank] - p[rank] * n) < 5 * math.sqrt(p[rank] * n), rank
    assert np.argmax(np.bincount(ids)) != 0  # the hot rows are scattered, not rows 0, 1, ...


def test_max_rows_is_set_from_sample_batches_with_headroom():
    samples = np.array([[1, 2, 3, 3], [5, 5, 5, 5], [1, 2, 3, 4]], np.int32)  # 3, 1, 4 rows
    assert bench.slot_bound(samples, margin=1.25, multiple=2) == 4  # 5 rounded up, capped
    assert bench.slot_bound(samples[:2], margin=1.25, multiple=2) == 4  # 3.75 -> 4
    assert bench.slot_bound(samples[1:2], margin=2.0, multiple=1) == 2
    batches = bench.zipf_batches(1000, 64, 1.2, seed=2, count=3)
    assert batches.shape == (3, 64)
    np.testing.assert_array_equal(bench.zipf_ids(1000, 64, 1.2, seed=2), bench.zipf_batches(
        1000, 64, 1.2, seed=2, count=1)[0])


def test_the_table_shaped_hlo_ops_and_the_initial_table():
    table = bench.initial_table(6, 3)
    assert table.dtype == jnp.float32 and float(jnp.max(jnp.abs(table))) <= 2.0 ** -7
    np.testing.assert_array_equal(bench._hash_table(2, 3, jnp.int32(4)), table[4:])
    hlo = jax.jit(lambda t, i: t.at[i].add(1.0), donate_argnums=0).lower(
        jnp.zeros((7, 3)), jnp.array([1, 2])).compile().as_text()
    ops = bench.table_shaped_ops(hlo, 7, 3)
    assert ops.get("parameter", 0) >= 1 and set(ops) - {"parameter"}  # the update's op too
    assert bench.table_shaped_ops(hlo, 7, 4) == {}
    assert bench.fit_rows(1000, 4, tables_held=3) == (1000, None)
    rows, note = bench.fit_rows(1 << 40, 64, tables_held=9)
    assert rows < 1 << 40 and "shrunk" in note


def test_round_robin_settle_calls_each_contender_untimed_right_before_its_timed_call():
    from benchmarks import measure

    log: list = []
    contenders = {name: (lambda name=name: log.append(name)) for name in "ab"}
    times = measure.round_robin(contenders, warmup=1, repeats=2, settle=True,
                                flush=lambda: log.append("."))
    assert "".join(log) == "ab" "a.ab.b" "b.ba.a"
    assert all(len(t) == 2 for t in times.values())
