"""The tables and checks that ``python -m benchmarks.sparse`` prints from its results."""

from __future__ import annotations

from typing import Any


def _f(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _ci(t: dict) -> str:
    lo, hi = t["paired_95_CI"]
    return f"{t['paired']:.1f} ({lo:.1f}-{hi:.1f})"


def _per_id(r: dict, spec: str) -> str:
    """``"sparse ms (per id ms)"``: the step with ``max_rows`` slots, and with one per id."""
    return f"{_f(r['sparse'].get('step_ms'), spec)} ({_f(r['sparse:per-id'].get('step_ms'), spec)})"


def _rows(results: dict):
    for c in results["cases"]:
        if "skipped" not in c:
            yield c, c["optimizer_step"], c["floor"], c["train_step"]


def print_table(results: dict) -> None:
    print("\noptimizer step (update + apply, donated, gradient fixed): sparse = gradxform on the "
          "RowSparse gradient with max_rows slots (in brackets: one slot per id), dense = the "
          "dense reference on it densified; floor x = sparse time / the measured time of the "
          "floor's bytes (ref:rows); train step = loss -> grad -> update -> apply")
    for c in results["cases"]:
        if "skipped" in c:
            print(f"  {c['table']:>12} {c['batch']:>6} {c['optimizer']:<9} skipped: "
                  f"{c['skipped']}")
    cols = [("table", 12), ("ids (uniq) slots", 20), ("optimizer", 9), ("dense ref", 14),
            ("sparse ms (id)", 15), ("dense ms", 9), ("dense/sparse (CI)", 20), ("d/s id", 6),
            ("floor x", 7), ("x stream", 8), ("train ms sp (id)/de", 22), ("train d/s", 9),
            ("peak MB sp/de", 15), ("temp MB sp", 10), ("compile s sp/de", 15), ("agree", 5)]
    print("  ".join(n.ljust(w) for n, w in cols))
    for c, o, fl, tr in _rows(results):
        cells = [c["table"], f"{c['batch']} ({c['unique_rows']}) {c['max_rows']}", c["optimizer"],
                 c["dense_reference"], _per_id(o, ".3g"),
                 _f(o["dense"]["step_ms"], ".4g"), _ci(o["dense/sparse"]),
                 _f(o["dense/sparse:per-id"]["paired"], ".1f"),
                 _f(fl["floor_x"], ".2f"), _f(fl["floor_x_stream"], ".1f"),
                 f"{_per_id(tr, '.3g')}/{_f(tr['dense'].get('step_ms'), '.4g')}",
                 _f(tr.get("dense/sparse", {}).get("paired"), ".1f"),
                 f"{tr['sparse']['peak_bytes'] / 1e6:.4g}/{tr['dense']['peak_bytes'] / 1e6:.4g}",
                 _f(tr["sparse"]["temp_bytes"] / 1e6, ".3g"),
                 f"{tr['sparse']['compile_s']:.2f}/{tr['dense']['compile_s']:.2f}",
                 "yes" if c["agreement"]["ok"] and tr.get("agreement", {"ok": True})["ok"]
                 else "NO"]
        print("  ".join(str(v).ljust(w) for v, (_, w) in zip(cells, cols)))
    print("\nchecks:")
    for line in results["checks"]:
        print("  " + line)


def print_markdown(results: dict) -> None:
    print("\n| table | ids (unique rows) | max_rows | optimizer | dense reference | sparse step ms "
          "(one slot per id) | dense step ms | dense / sparse (95% CI) | dense / sparse, one slot "
          "per id | floor x (rows / stream) | train step ms sparse (one slot per id) / dense | "
          "train dense / sparse | train peak MB sparse / dense | sparse train temp MB (vs table "
          "MB) | compile s sparse / dense |")
    print("|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, o, fl, tr in _rows(results):
        print(f"| {c['rows']:,} x {c['dim']} | {c['batch']:,} ({c['unique_rows']:,}) | "
              f"{c['max_rows']:,} | {c['optimizer']} | {c['dense_reference']} | "
              f"{_per_id(o, '.3g')} | {o['dense']['step_ms']:.4g} | {_ci(o['dense/sparse'])} | "
              f"{o['dense/sparse:per-id']['paired']:.1f} | "
              f"{fl['floor_x']:.2f} / {fl['floor_x_stream']:.1f} | "
              f"{_per_id(tr, '.3g')} / {_f(tr['dense'].get('step_ms'), '.4g')} | "
              f"{_f(tr.get('dense/sparse', {}).get('paired'), '.1f')} | "
              f"{tr['sparse']['peak_bytes'] / 1e6:.4g} / {tr['dense']['peak_bytes'] / 1e6:.4g} | "
              f"{tr['sparse']['temp_bytes'] / 1e6:.3g} "
              f"{'<' if tr['sparse_temp_below_table'] else '>='} {c['table_bytes'] / 1e6:.4g} | "
              f"{tr['sparse']['compile_s']:.2f} / {tr['dense']['compile_s']:.2f} |")
    for note in results["notes"]:
        print(f"\nNote: {note}")


def checks(results: dict) -> tuple[list[str], list[str]]:
    """The report's assertions, as lines, and those that failed."""
    lines, failed = [], []
    for c, _, _, tr in _rows(results):
        key = f"{c['table']} {c['batch']} ids {c['optimizer']}"
        temp = max(tr[lib]["temp_bytes"] for lib in ("sparse", "sparse:per-id"))
        table = c["table_bytes"]
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(tr["sparse"]["table_shaped_ops"].items()))
        if tr["sparse_temp_below_table"]:
            lines.append(f"OK   {key}: no table-sized buffer among the sparse train step's "
                         f"temporaries ({temp / 1e6:.3g} MB in all < table {table / 1e6:.3g} MB;"
                         f" table-shaped HLO: {ops})")
        else:
            failed.append(f"FAIL {key}: the sparse train step's temporaries ({temp}) may hold a "
                          f"table-sized buffer (table {table} bytes; table-shaped HLO: {ops})")
        for where, a, other in (("optimizer step", c["agreement"], "dense"),
                                ("optimizer step", c["agreement_per_id"], "one slot per id"),
                                ("train step", tr.get("agreement"), "dense")):
            if a is None:
                continue
            text = (f"{key} {where}: sparse vs {other} max |diff| touched "
                    f"{a['max_abs_diff_touched']:.2g}, untouched {a['max_abs_diff_untouched']:.2g}"
                    f" (must agree on {a['must_agree_on']}); sparse untouched rows moved by "
                    f"{a['sparse_untouched_max_change']:.2g}")
            (lines if a["ok"] else failed).append(("OK   " if a["ok"] else "FAIL ") + text)
    return lines + failed, failed
