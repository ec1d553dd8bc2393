"""What a cross-encoder (CE) is to the rest of axn_fast.

A CE is anything callable as ``ce(query, ids) -> scores``:

* ``query`` is passed through untouched (a text, a row number of a score
  matrix, anything the CE understands);
* ``ids`` is a read-only (m,) int64 array of item ids (a copy: the CE may not
  reorder the caller's array);
* ``scores`` holds one finite score per id, in the order of ``ids``: a numpy
  array, a list, or a torch tensor (any dtype, on any device, with or without
  ``requires_grad``); (m, 1) logits are accepted too.

Plain functions and lambdas qualify. A CE that scores many queries' pairs in
one forward batch may also implement :class:`BatchCrossEncoder`'s
``score_batch``; callers that have many queries use it when it is there and
otherwise call the CE once per query. Every call goes through
:func:`axn_fast.encoders.boundary.call_ce`, which validates what comes back.
"""
from __future__ import annotations

from typing import Any, List, Protocol, Sequence, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["CrossEncoder", "BatchCrossEncoder", "Ids", "Scores"]

Ids = NDArray[np.int64]
"""(m,) int64 item ids."""

Scores = NDArray[np.float32]
"""(m,) float32 scores, one per id."""


@runtime_checkable
class CrossEncoder(Protocol):
    """``ce(query, ids) -> scores``: exact scores of ``query`` against items ``ids`` (m,)."""

    def __call__(self, query: Any, ids: Ids, /) -> ArrayLike: ...


@runtime_checkable
class BatchCrossEncoder(CrossEncoder, Protocol):
    """A CE that can also score many queries in one call.

    ``score_batch(queries, ids_per_query)`` returns one score array per query,
    ``out[i]`` of shape ``(len(ids_per_query[i]),)``, the same scores that
    ``ce(queries[i], ids_per_query[i])`` would return.
    """

    def score_batch(self, queries: Sequence[Any], ids_per_query: Sequence[Ids], /) -> List[ArrayLike]: ...
