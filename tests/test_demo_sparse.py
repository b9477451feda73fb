"""The row-sparse demo: dense and sparse Adagrad give the same losses, everything learns, CLI."""

import math
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradxform as gx
from gradxform import demo, demo_sparse

ROWS, STEPS, BATCH = 20_000, 40, 256
ROW = re.compile(
    r"^(?P<name>.+?)\s+(?P<train>\d+\.\d+)\s+(?P<test>\d+\.\d+)\s+(?P<step>\d+\.\d+)"
    r"\s+(?P<speed>\d+\.\d+)x$"
)


@pytest.fixture(scope="module")
def data():
    return demo_sparse.make_data(rows=ROWS, steps=STEPS, batch=BATCH, seed=0)


@pytest.fixture(scope="module")
def results(data):
    init = demo_sparse.init_params(ROWS, seed=0)
    return demo_sparse.compare(data, init, demo_sparse.make_optimizers(), report=lambda _: None)


def test_data_is_skewed_and_reproducible(data):
    assert data.train_ids.shape == (STEPS, BATCH, len(demo_sparse.FIELD_VALUES))
    assert data.train_ids.dtype == np.int32 and data.train_labels.dtype == np.float32
    assert data.train_ids.min() >= 0 and data.train_ids.max() < ROWS
    assert 0.1 < data.train_labels.mean() < 0.9
    # Zipf: the commonest id of the table is in most batches, most ids are seen rarely or never.
    _, counts = np.unique(data.train_ids, return_counts=True)
    assert counts.max() > 50 * np.median(counts)
    again = demo_sparse.make_data(rows=ROWS, steps=STEPS, batch=BATCH, seed=0)
    np.testing.assert_array_equal(again.train_ids, data.train_ids)
    np.testing.assert_array_equal(again.test_labels, data.test_labels)


def test_sparse_gradient_is_the_dense_one_on_touched_rows(data):
    params = jax.tree.map(jnp.asarray, demo_sparse.init_params(ROWS, seed=0))
    ids, labels = data.train_ids[0], data.train_labels[0]
    loss, grads = gx.sparse.value_and_grad(demo_sparse.loss_fn, demo_sparse.TABLES)(
        params, ids, labels)
    dense_loss, dense = jax.value_and_grad(demo_sparse.loss_fn)(params, ids, labels)
    np.testing.assert_allclose(loss, dense_loss, rtol=1e-6)
    for table in demo_sparse.TABLES:
        assert isinstance(grads[table], gx.RowSparse), table
        assert grads[table].values.shape[0] == ids.size  # one slot per id, not per row
        np.testing.assert_allclose(gx.sparse.densify(grads[table]), dense[table],
                                   rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(grads["bias"], dense["bias"], rtol=1e-6)


def test_dense_and_sparse_adagrad_losses_agree(results):
    dense, sparse = results["adagrad (dense)"], results["adagrad (sparse)"]
    assert dense.losses.shape == sparse.losses.shape == (STEPS,)
    np.testing.assert_allclose(sparse.losses, dense.losses, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sparse.train_loss, dense.train_loss, rtol=1e-5)
    np.testing.assert_allclose(sparse.test_loss, dense.test_loss, rtol=1e-5)
    ok, difference = demo_sparse.curves_agree(dense.losses, sparse.losses)
    assert ok and difference < 1e-5, difference


def test_every_optimizer_learns(results, data):
    assert list(results) == ["adagrad (dense)", "adagrad (sparse)", "lazy adam", "ftrl"]
    start_loss = math.log(2.0)  # zero logits at the start
    for name, r in results.items():
        assert np.all(np.isfinite(r.losses)), name
        np.testing.assert_allclose(r.losses[0], start_loss, rtol=1e-2, err_msg=name)
        assert r.losses[-10:].mean() < r.losses[:10].mean() - 0.02, (name, r.losses)
        assert r.train_loss < start_loss - 0.05 and r.test_loss < start_loss - 0.02, (name, r)
        assert r.test_loss > data.true_test_loss - 0.05, (name, r)
        assert r.step_ms > 0 and r.compile_s > 0, (name, r)


def test_curves_agree_catches_a_difference():
    a = np.linspace(0.7, 0.5, 50, dtype=np.float32)
    assert demo_sparse.curves_agree(a, a + 1e-7)[0]
    ok, difference = demo_sparse.curves_agree(a, a + np.where(np.arange(50) == 30, 1e-3, 0))
    assert not ok and difference == pytest.approx(1e-3, rel=1e-3)


def test_main_prints_the_table_and_fails_when_the_curves_differ(monkeypatch, capsys):
    argv = ["--sparse", "--steps", "12", "--rows", "5000", "--batch", "64"]
    results = demo.main(argv)  # the digits demo's main dispatches to the sparse one
    out = capsys.readouterr().out
    assert list(results) == list(demo_sparse.make_optimizers())
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("optimizer"))
    assert header.split() == ["optimizer", "train", "loss", "held-out", "loss", "step", "(ms)",
                              "speed-up"]
    start = lines.index(header) + 1
    rows = {}
    for line in lines[start:start + len(results)]:
        match = ROW.match(line)
        assert match, line
        rows[match["name"]] = {k: float(match[k]) for k in ("train", "test", "step", "speed")}
    assert list(rows) == list(results)
    assert rows["adagrad (dense)"]["speed"] == 1.0
    assert all(row["step"] > 0 for row in rows.values()), rows
    assert re.search(r"check: dense and sparse Adagrad losses agree .*: OK$", out, re.M), out

    # A sparse Adagrad with another learning rate must be caught.
    original = demo_sparse.make_optimizers

    def mismatched():
        optimizers = original()
        optimizers["adagrad (sparse)"] = (gx.adagrad(0.05, initial_accumulator_value=1e-6), True)
        return optimizers

    monkeypatch.setattr(demo_sparse, "make_optimizers", mismatched)
    with pytest.raises(SystemExit) as exit_info:
        demo_sparse.main(argv[1:])
    assert exit_info.value.code == 1
    assert re.search(r"^check: .*: FAILED$", capsys.readouterr().out, re.M)


def test_cli_exits_zero(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gradxform.demo", "--sparse", "--steps", "8"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1,000,000 ids" in result.stdout and "speed-up" in result.stdout
    assert re.search(r"^check: .*: OK$", result.stdout, re.M), result.stdout


def test_cli_rejects_bad_arguments(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gradxform.demo", "--sparse", "--steps", "0"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 2 and "--steps must be at least 1" in result.stderr
