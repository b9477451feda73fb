"""A static bound on a row-sparse gradient's slots, and what happens past it.

A coalesced gradient has one slot per looked-up id, so that its shape is
static; with skewed ids most slots end up empty (a batch of 65,536 Zipf ids
touches about 10,000 rows of a 1M-row table), and every slot costs time in
each transformation. ``max_rows`` gives fewer slots. The number of distinct
rows is data, so a batch can touch more; ``overflow`` says what happens then,
as ``invalid_ids`` does for ids outside the table.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import checkify

OVERFLOW_MODES = ("raise", "checkify", "drop")


def positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


def check_overflow_mode(owner: str, overflow: Any) -> None:
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"{owner}: overflow must be one of {OVERFLOW_MODES}, got {overflow!r}")


def bounds(owner: str, max_rows: Any, tables: Sequence[str]) -> list[int | None]:
    """Each table's slot bound from ``max_rows`` (an int, or a mapping from table paths)."""
    if max_rows is None:
        return [None] * len(tables)
    if not isinstance(max_rows, Mapping):
        size = positive_int(owner, "max_rows", max_rows)
        return [size] * len(tables)
    unknown = [name for name in max_rows if name not in tables]
    if unknown:
        raise ValueError(f"{owner}: max_rows names {unknown[0]!r}, which is not one of the "
                         f"tables {list(tables)}")
    return [None if name not in max_rows
            else positive_int(owner, f"max_rows[{name!r}]", max_rows[name]) for name in tables]


def check_overflow(owner: str, table: str, touched: jax.Array, size: int, mode: str,
                   argument: str) -> None:
    """Raises (``"raise"``) or adds a ``checkify`` check where ``touched`` rows exceed ``size``.

    ``table`` names what the rows belong to, ``argument`` the bound the user set."""
    if mode == "drop":
        return
    if mode == "checkify":
        checkify.check(touched <= size, f"{owner}: {{touched}} rows of {table} were touched, more "
                       f"than {argument}={size}; the rows past it lost their gradient",
                       touched=touched)
        return
    if isinstance(touched, jax.core.Tracer):
        raise ValueError(
            f"{owner}: the rows of {table} touched are counted inside jit (traced), so "
            f"touching more than {argument}={size} cannot raise a Python error. Choose what "
            "happens then: overflow='checkify' (wrap the step in "
            "jax.experimental.checkify.checkify and check the error it returns) or "
            "overflow='drop' (the rows that appear first keep their gradient, the others get "
            "none; count rows with gx.sparse.count_touched_rows)."
        )
    if int(touched) > size:
        raise ValueError(
            f"{owner}: {int(touched)} rows of {table} were touched, more than {argument}={size}. "
            f"Raise {argument}, or pass overflow='drop' to keep the {size} rows that appear first."
        )
