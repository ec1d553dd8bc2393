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

from typing import Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["VectorIndex", "Exclude"]

Exclude = Optional[Union[ArrayLike, Sequence[ArrayLike]]]
"""Ids never returned: one 1-D id array for every query, or a list of one 1-D id array per query."""


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
