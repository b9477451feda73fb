"""The benchmark's printed reports: the ratio table, the markdown table, the time breakdown."""

from __future__ import annotations

from benchmarks.trees import JAX_LIBS, TORCH_LIBS


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _with_ci(ratios: dict, key: str) -> str:
    """``"0.97 (0.93-1.02)"``: a paired ratio and its 95% confidence interval."""
    if key not in ratios:
        return "-"
    lo, hi = ratios.get(f"{key} 95% CI", (None, None))
    return f"{ratios[key]:.2f} ({_fmt(lo, '.2f')}-{_fmt(hi, '.2f')})"


def _triple(r: dict, key: str, spec: str, libs: tuple = JAX_LIBS, scale: float = 1.0) -> str:
    """``"a/b/c"``: one value per library, ``-`` where missing."""
    vals = [r.get(lib, {}).get(key) for lib in libs]
    return "/".join(_fmt(None if v is None else v * scale, spec) for v in vals)


def print_table(results: dict) -> None:
    """One row per tree x optimizer; triples are gradxform/optax/gradxform-flat."""
    torch = any("step_ms" in c["libraries"].get(t, {}) for c in results["cases"] for t in TORCH_LIBS)
    cols = [("tree", 11), ("optimizer", 10), ("step ms gx/optax/flat", 24), ("optax/gx", 8),
            ("paired (95% CI)", 17), ("A/A", 5), ("optax/flat", 10),
            ("compile s gx/optax/flat", 23), ("bw/copy", 15),
            ("bw/stream", 15), ("XLA B/param", 13), ("peak MB", 17)]
    if torch:
        cols.append(("torch ms fe/fu", 15))
    print("\nupdate + apply step; triples are gradxform / optax / gradxform-flat;"
          " bw = minimal bytes per step / time, as a fraction of the copy / in-place stream;"
          " A/A = optax / optax again (paired), the noise floor")
    print("  ".join(name.ljust(w) for name, w in cols))
    for c in results["cases"]:
        r, q = c["libraries"], c["ratios"]
        cells = [c["tree"], c["optimizer"], _triple(r, "step_ms", ".4g"),
                 _fmt(q.get("step optax/gradxform"), ".2f"),
                 _with_ci(q, "step optax/gradxform paired"),
                 _fmt(q.get("step optax/optax-again paired"), ".2f"),
                 _fmt(q.get("step optax/gradxform-flat"), ".1f"),
                 _triple(r, "compile_s", ".3g"), _triple(r, "bw_frac_copy", ".2f"),
                 _triple(r, "bw_frac_stream", ".2f"), _triple(r, "xla_bytes_per_param", ".0f"),
                 _triple(r, "peak_bytes", ".4g", scale=1e-6)]
        if torch:
            cells.append(_triple(r, "step_ms", ".4g", libs=tuple(TORCH_LIBS)))
        print("  ".join(str(v).ljust(w) for v, (_, w) in zip(cells, cols)))
    refs: dict[str, list[str]] = {}
    for c in results["cases"]:
        ref = c["references_GBps"]
        refs.setdefault(f"{c['tree']} ({c['n_params']:,} floats)", []).append(
            f"{c['optimizer']} {ref['copy']:.1f}/{ref['stream']:.1f}")
    for tree, cells in refs.items():
        print(f"  references, GB/s copy/stream, {tree}: " + ", ".join(cells))
    ts = results.get("train_step")
    if ts:
        r, q = ts["libraries"], ts["ratios"]
        print("\ntrain step (loss -> grad -> adam -> apply), many_leaves; gradxform/optax/flat:")
        print(f"  step ms {_triple(r, 'step_ms', '.4g')}   compile s {_triple(r, 'compile_s', '.3g')}")
        for k, v in q.items():
            if not k.endswith("CI"):
                print(f"  {k}: {v:.2f}")


def print_markdown(results: dict) -> None:
    """The ratio table as GitHub markdown (for the README)."""
    print("\n| tree | optimizer | gradxform ms | optax ms | gradxform-flat ms | optax / gradxform"
          " | paired (95% CI) | A/A | optax / flat | compile s (gx / optax / flat) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = list(results["cases"])
    if results.get("train_step"):
        rows.append({**results["train_step"], "optimizer": "adam, whole train step"})
    for c in rows:
        r, q = c["libraries"], c["ratios"]
        ms = [format(r[lib]["step_ms"], ".4g") if "step_ms" in r.get(lib, {}) else "-"
              for lib in JAX_LIBS]
        ratio = [_fmt(q.get("step optax/gradxform"), ".2f"),
                 _with_ci(q, "step optax/gradxform paired"),
                 _fmt(q.get("step optax/optax-again paired"), ".2f"),
                 _fmt(q.get("step optax/gradxform-flat"), ".2f")]
        print(f"| {c['tree']} | {c['optimizer']} | {' | '.join(ms)} | {' | '.join(ratio)} | "
              f"{_triple(r, 'compile_s', '.3g').replace('/', ' / ')} |")


def print_phases(results: dict) -> None:
    """Where the wall time went, grouped by phase kind and tree, largest first."""
    groups: dict[str, float] = {}
    for name, s in results["phases_s"].items():
        kind, _, what = name.partition(" ")
        key = f"{kind} {what.split('/')[0]}".strip()
        groups[key] = groups.get(key, 0.0) + s
    print("\ntime breakdown (s):")
    for key, s in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<28} {s:7.1f}")
    print("  largest single phases: " + ", ".join(
        f"{k} {v:.1f}" for k, v in sorted(results["phases_s"].items(), key=lambda kv: -kv[1])[:8]))
    accounted = sum(results["phases_s"].values())
    print(f"  unaccounted {results['total_wall_s'] - accounted:.1f}")
