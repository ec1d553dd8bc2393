"""What AXN and every method need from an index of item embeddings V (n_items, dim).

:class:`VectorIndex` is a structural protocol: :class:`~axn_fast.Index` (exact
scan), :class:`~axn_fast.search.approximate.FaissIndex` (approximate),
:class:`~axn_fast.search.shortlist.ShortlistIndex` (a first-stage top-N) and a
sharded index all satisfy it, so ``adaptive_search`` runs on any of them.

Conventions of :meth:`VectorIndex.search` (those of faiss): scores descending,
ties by the smaller id, rows padded with ``-inf`` / ``-1`` where fewer than
``k`` items remain; excluded ids never come back.
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence, Tuple, Union, cast, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast._validation import as_ids

__all__ = ["VectorIndex", "Exclude", "parse_exclude"]

Exclude = Optional[Union[ArrayLike, Sequence[ArrayLike]]]
"""Ids never returned: one 1-D id array for every query, or a list of one 1-D id array per query."""


def parse_exclude(exclude: Exclude, n_queries: int, n_items: int
                  ) -> Tuple[Optional[NDArray[np.int64]], Optional[NDArray[np.int64]]]:
    """Validate ``exclude`` for ``n_queries`` queries over ``n_items`` items; the one parser of every index.

    Returns ``(None, None)`` without exclusions; ``(ids, None)`` for one id array
    shared by every query; ``(ids, offsets)`` for one list per query in CSR form
    (query i excludes ``ids[offsets[i]:offsets[i + 1]]``; offsets (n_queries + 1,)).
    Ids are int64 in ``[0, n_items)``; a bad id names the list it came from.
    """
    if exclude is None:
        return None, None
    if isinstance(exclude, (list, tuple)):
        nested = [isinstance(e, (np.ndarray, list, tuple)) for e in exclude]
        if any(nested) and not all(nested):
            raise ValueError("exclude mixes id lists and single ids (e.g. [[1], 2]); give one 1-D id array "
                             "for every query, or a list of one id list per query")
    if isinstance(exclude, (list, tuple)) and len(exclude) > 0 and all(
            isinstance(e, (np.ndarray, list, tuple)) for e in exclude):
        if len(exclude) != n_queries:
            raise ValueError(f"exclude has {len(exclude)} lists but there are {n_queries} queries; "
                             "give one list per query, or a single 1-D array for all")
        lists = [as_ids(cast(ArrayLike, e), f"exclude[{i}]", n_items) for i, e in enumerate(exclude)]
        offsets = np.zeros(n_queries + 1, dtype=np.int64)
        np.cumsum([len(x) for x in lists], out=offsets[1:])
        ids = np.concatenate(lists) if offsets[-1] else np.zeros(0, dtype=np.int64)
        return np.ascontiguousarray(ids, dtype=np.int64), offsets
    return as_ids(cast(ArrayLike, exclude), "exclude", n_items), None


@runtime_checkable
class VectorIndex(Protocol):
    """An index of n_items item embeddings of dimension dim, searched by inner product."""

    @property
    def n_items(self) -> int:
        """Number of items; ids are 0 .. n_items - 1."""
        ...

    @property
    def dim(self) -> int:
        """Embedding dimension d."""
        ...

    def search(self, U: ArrayLike, k: int, *, exclude: Exclude = None
               ) -> Tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Top-k items by <V[i], u> for each query row.

        U : (dim,) or (n_queries, dim) float32. k : results per query (>= 0; beyond
        the items left, rows are padded). exclude : see :data:`Exclude`.
        Returns ``(scores, ids)``, float32 / int64, shape (k,) for a 1-D ``U`` and
        (n_queries, k) otherwise, best first, padded with -inf / -1.
        """
        ...

    def vectors_of(self, ids: ArrayLike) -> NDArray[np.float32]:
        """(len(ids), dim) C-contiguous float32 rows V[ids] (a copy), for the least-squares fits."""
        ...
