"""Row-sparse gradients for embedding tables: ``gx.sparse.value_and_grad`` and its lookup."""

from gradxform.core.sparse import RowSparse
from gradxform.sparse.gradients import count_invalid_ids, lookup, value_and_grad
from gradxform.sparse.tools import coalesce, densify, row_sparse_rules

__all__ = [
    "RowSparse",
    "coalesce",
    "count_invalid_ids",
    "densify",
    "lookup",
    "row_sparse_rules",
    "value_and_grad",
]
