"""A cross-encoder backed by a precomputed dense score matrix (for exact evaluation)."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast._validation import as_float32_array, as_ids, check_int
from axn_fast.encoders.boundary import CallCounter


class DenseScoreCE:
    """``ce(q, ids) -> S[q, ids]`` over a dense (n_queries, n_items) score matrix.

    Lets every method be evaluated exactly on a precomputed CE matrix, as the
    papers do. ``q`` is a row number. Counts what it is asked in a
    :class:`~axn_fast.encoders.boundary.CallCounter`: ``n_calls`` is the number
    of (query, item) pairs scored, ``n_batches`` the number of calls.
    Thread-safe. Implements ``score_batch`` (one call for many rows).
    """

    def __init__(self, S: ArrayLike) -> None:
        self.S = as_float32_array(S, "S", ndim=(2,))
        if self.S.shape[0] < 1 or self.S.shape[1] < 1:
            raise ValueError(f"S must have at least one query row and one item column, got shape {self.S.shape}")
        self.counter = CallCounter()

    @property
    def n_queries(self) -> int:
        return int(self.S.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.S.shape[1])

    @property
    def n_calls(self) -> int:
        """(query, item) pairs scored."""
        return self.counter.n_calls

    @property
    def n_batches(self) -> int:
        """Calls (``score_batch`` counts one)."""
        return self.counter.n_batches

    def _row(self, q: object) -> int:
        return check_int(q, "q (a row of the score matrix)", minimum=0, maximum=self.n_queries - 1)

    def __call__(self, q: object, ids: ArrayLike) -> NDArray[np.float32]:
        """(len(ids),) float32: ``S[q, ids]``."""
        row = self._row(q)
        ids = as_ids(ids, "ids", self.n_items)
        self.counter.add(len(ids))
        return self.S[row, ids].copy()

    def score_batch(self, queries: Sequence[object], ids_per_query: Sequence[ArrayLike]) -> List[NDArray[np.float32]]:
        """One (len(ids_per_query[i]),) float32 array ``S[queries[i], ids_per_query[i]]`` per query."""
        if len(queries) != len(ids_per_query):
            raise ValueError(f"queries and ids_per_query must have the same length, "
                             f"got {len(queries)} and {len(ids_per_query)}")
        rows = [self._row(q) for q in queries]
        lists = [as_ids(ids, f"ids_per_query[{i}]", self.n_items) for i, ids in enumerate(ids_per_query)]
        self.counter.add(sum(len(x) for x in lists))
        return [self.S[r, x].copy() for r, x in zip(rows, lists)]

    def reset_counts(self) -> None:
        self.counter.reset()

    def __repr__(self) -> str:
        return f"DenseScoreCE(n_queries={self.n_queries}, n_items={self.n_items}, n_calls={self.n_calls})"
