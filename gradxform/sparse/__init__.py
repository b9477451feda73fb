"""Row-sparse gradients for embedding tables: ``gx.sparse.value_and_grad`` and its lookup.

The gradient type itself is ``gx.RowSparse``.
"""

from gradxform.sparse.gradients import lookup, value_and_grad
from gradxform.sparse.ids import count_invalid_ids, count_touched_rows
from gradxform.sparse.tools import coalesce, densify, row_sparse_rules

__all__ = [
    "coalesce",
    "count_invalid_ids",
    "count_touched_rows",
    "densify",
    "lookup",
    "row_sparse_rules",
    "value_and_grad",
]
