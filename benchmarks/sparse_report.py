"""The tables and checks that ``python -m benchmarks.sparse`` prints from its results."""

from __future__ import annotations

from typing import Any


def _f(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _pair(r: dict, key: str, spec_sparse: str, spec_dense: str, sep: str) -> str:
    """``"sparse<sep>dense"`` of ``r[lib][key]``, ``-`` where missing."""
    return sep.join(_f(r[lib].get(key), spec)
                    for lib, spec in (("sparse", spec_sparse), ("dense", spec_dense)))


def _ci(t: dict) -> str:
    lo, hi = t["paired_95_CI"]
    return f"{t['paired']:.1f} ({lo:.1f}-{hi:.1f})"


def _rows(results: dict):
    for c in results["cases"]:
        if "skipped" not in c:
            yield c, c["optimizer_step"], c["floor"], c["train_step"]


def print_table(results: dict) -> None:
    print("\noptimizer step (update + apply, donated, gradient fixed): sparse = gradxform on the "
          "RowSparse gradient, dense = the dense reference on it densified; floor x = sparse time"
          " / the measured time of the floor's bytes (ref:rows); train step = loss -> grad -> "
          "update -> apply")
    for c in results["cases"]:
        if "skipped" in c:
            print(f"  {c['table']:>12} {c['batch']:>6} {c['optimizer']:<9} skipped: "
                  f"{c['skipped']}")
    cols = [("table", 12), ("ids (uniq)", 14), ("optimizer", 9), ("dense ref", 14),
            ("sparse ms", 9), ("dense ms", 9), ("dense/sparse (CI)", 20), ("floor x", 7),
            ("x stream", 8), ("train ms sp/de", 15), ("train d/s", 9),
            ("peak MB sp/de", 15), ("temp MB sp", 10), ("compile s sp/de", 15), ("agree", 5)]
    print("  ".join(n.ljust(w) for n, w in cols))
    for c, o, fl, tr in _rows(results):
        cells = [c["table"], f"{c['batch']} ({c['unique_rows']})", c["optimizer"],
                 c["dense_reference"], _f(o["sparse"]["step_ms"], ".3g"),
                 _f(o["dense"]["step_ms"], ".4g"), _ci(o["dense/sparse"]),
                 _f(fl["floor_x"], ".2f"), _f(fl["floor_x_stream"], ".1f"),
                 _pair(tr, "step_ms", ".3g", ".4g", "/"),
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
    print("\n| table | ids (unique rows) | optimizer | dense reference | sparse step ms | dense "
          "step ms | dense / sparse (95% CI) | floor x (rows / stream) | train step ms sparse / "
          "dense | train dense / sparse | train peak MB sparse / dense | sparse train temp MB "
          "(vs table MB) | compile s sparse / dense |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, o, fl, tr in _rows(results):
        print(f"| {c['rows']:,} x {c['dim']} | {c['batch']:,} ({c['unique_rows']:,}) | "
              f"{c['optimizer']} | {c['dense_reference']} | {o['sparse']['step_ms']:.3g} | "
              f"{o['dense']['step_ms']:.4g} | {_ci(o['dense/sparse'])} | "
              f"{fl['floor_x']:.2f} / {fl['floor_x_stream']:.1f} | "
              f"{_pair(tr, 'step_ms', '.3g', '.4g', ' / ')} | "
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
        temp, table = tr["sparse"]["temp_bytes"], c["table_bytes"]
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(tr["sparse"]["table_shaped_ops"].items()))
        if tr["sparse_temp_below_table"]:
            lines.append(f"OK   {key}: no table-sized buffer among the sparse train step's "
                         f"temporaries ({temp / 1e6:.3g} MB in all < table {table / 1e6:.3g} MB;"
                         f" table-shaped HLO: {ops})")
        else:
            failed.append(f"FAIL {key}: the sparse train step's temporaries ({temp}) may hold a "
                          f"table-sized buffer (table {table} bytes; table-shaped HLO: {ops})")
        for where, a in (("optimizer step", c["agreement"]), ("train step", tr.get("agreement"))):
            if a is None:
                continue
            text = (f"{key} {where}: sparse vs dense max |diff| touched "
                    f"{a['max_abs_diff_touched']:.2g}, untouched {a['max_abs_diff_untouched']:.2g}"
                    f" (must agree on {a['must_agree_on']}); sparse untouched rows moved by "
                    f"{a['sparse_untouched_max_change']:.2g}")
            (lines if a["ok"] else failed).append(("OK   " if a["ok"] else "FAIL ") + text)
    return lines + failed, failed
