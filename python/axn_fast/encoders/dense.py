"""A cross-encoder backed by a precomputed dense score matrix (for exact evaluation)."""
from __future__ import annotations

import threading

import numpy as np

from axn_fast._validation import as_float32_array, as_ids, check_int


class DenseScoreCE:
    """``ce(q, ids) -> S[q, ids]`` over a dense (n_queries, n_items) score matrix.

    Lets every method be evaluated exactly on a precomputed CE matrix, as the
    papers do. ``q`` is a row number. Counts what it is asked: ``n_calls`` is
    the number of (query, item) pairs scored, ``n_batches`` the number of calls.
    Thread-safe.
    """

    def __init__(self, S):
        self.S = as_float32_array(S, "S", ndim=(2,))
        self._lock = threading.Lock()
        self.n_calls = 0
        self.n_batches = 0

    @property
    def n_queries(self) -> int:
        return int(self.S.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.S.shape[1])

    def __call__(self, q, ids) -> np.ndarray:
        q = check_int(q, "q (a row of the score matrix)", minimum=0, maximum=self.n_queries - 1)
        ids = as_ids(ids, "ids", self.n_items)
        with self._lock:
            self.n_calls += len(ids)
            self.n_batches += 1
        return self.S[q, ids].copy()

    def reset_counts(self) -> None:
        with self._lock:
            self.n_calls = 0
            self.n_batches = 0

    def __repr__(self) -> str:
        return f"DenseScoreCE(n_queries={self.n_queries}, n_items={self.n_items}, n_calls={self.n_calls})"
