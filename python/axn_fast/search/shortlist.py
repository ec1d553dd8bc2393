"""AXN restricted to a first-stage shortlist (the AXN paper's shortlist setting).

A cheap retriever (a dual encoder, BM25) proposes the top-N items of a query
(e.g. N = 10K of millions); AXN then spends its CE budget inside that
shortlist only. :class:`ShortlistIndex` is a :class:`~axn_fast.search.protocol.VectorIndex`
over the N shortlisted rows of a full index (local ids 0 .. N-1, searched
exactly with the C++ kernel); :func:`shortlist_search` runs ``adaptive_search``
on it with the CE, ``init`` and the results all in the full index's numbering.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast._validation import as_ids
from axn_fast.encoders.protocol import CrossEncoder, Ids
from axn_fast.search.adaptive import adaptive_search
from axn_fast.search.index import Index
from axn_fast.search.normalization import NormalizationLike
from axn_fast.search.protocol import Exclude, VectorIndex
from axn_fast.search.results import RoundInfo, SearchResult

__all__ = ["ShortlistIndex", "shortlist_search"]


class ShortlistIndex:
    """The rows ``shortlist`` (N,) of ``index`` as an index of their own, numbered 0 .. N-1.

    index : the full :class:`~axn_fast.search.protocol.VectorIndex` (n_items rows).
    shortlist : (N,) distinct ids of ``index`` (e.g. a retriever's top-N, in any order);
        local id i is full id ``shortlist[i]``.
    num_threads : threads of the exact scan over the N rows (0: all cores).
    """

    def __init__(self, index: VectorIndex, shortlist: ArrayLike, *, num_threads: int = 0) -> None:
        ids = as_ids(shortlist, "shortlist", index.n_items, unique=True)
        if ids.size == 0:
            raise ValueError("shortlist must hold at least one id")
        self.full_ids: NDArray[np.int64] = ids
        self.full_ids.flags.writeable = False
        self.base = index
        self._local = Index(index.vectors_of(ids), num_threads=num_threads)

    @property
    def n_items(self) -> int:
        return int(self.full_ids.size)

    @property
    def dim(self) -> int:
        return self._local.dim

    def __len__(self) -> int:
        return self.n_items

    def __repr__(self) -> str:
        return f"ShortlistIndex(n_items={self.n_items} of {self.base.n_items}, dim={self.dim})"

    def search(self, U: ArrayLike, k: int, *, exclude: Exclude = None
               ) -> Tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Exact top-k among the shortlist, in LOCAL ids (see :meth:`to_full`); :meth:`axn_fast.Index.search`'s conventions."""
        return self._local.search(U, k, exclude=exclude)

    def vectors_of(self, ids: ArrayLike) -> NDArray[np.float32]:
        """(len(ids), dim) rows of the given LOCAL ids."""
        return self._local.vectors_of(ids)

    def to_full(self, local_ids: ArrayLike) -> NDArray[np.int64]:
        """Full-index ids of local ids (-1 padding stays -1)."""
        loc = np.asarray(local_ids, dtype=np.int64)
        out = np.where(loc >= 0, self.full_ids[np.clip(loc, 0, None)], -1)
        return np.ascontiguousarray(out, dtype=np.int64)

    def to_local(self, full_ids: ArrayLike, name: str = "ids") -> NDArray[np.int64]:
        """Local ids of full-index ids that are in the shortlist (ValueError naming any that is not)."""
        full = as_ids(full_ids, name, self.base.n_items)
        order = np.argsort(self.full_ids, kind="stable")
        sorted_full = self.full_ids[order]
        pos = np.searchsorted(sorted_full, full)
        pos_c = np.clip(pos, 0, sorted_full.size - 1)
        missing = sorted_full[pos_c] != full
        if missing.any():
            raise ValueError(f"{name} contains id {int(full[np.argmax(missing)])}, which is not in the shortlist")
        return np.ascontiguousarray(order[pos_c], dtype=np.int64)

    def full_ce(self, ce: CrossEncoder) -> CrossEncoder:
        """A CE over local ids that calls ``ce`` with the full-index ids."""
        def local_ce(query: Any, ids: Ids) -> Any:
            full = self.to_full(ids)
            full.flags.writeable = False
            return ce(query, full)
        return local_ce


def shortlist_search(index: VectorIndex, shortlist: ArrayLike, q: Any, ce: CrossEncoder, budget: int, *,
                     k: int = 10, rounds: int = 5, init: Optional[ArrayLike] = None,
                     u0: Optional[ArrayLike] = None, lam: float = 0.0, seed: Optional[int] = None,
                     normalization: NormalizationLike = None) -> SearchResult:
    """AXN (:func:`~axn_fast.search.adaptive.adaptive_search`) among the items ``shortlist`` only.

    index : the full index. shortlist : (N,) distinct full-index ids (e.g. the DE's
        top 10K for this query), or a :class:`ShortlistIndex` already built over ``index``.
    ce : called with full-index ids. init : ranked full-index ids, all in the shortlist.
    budget <= N. Other arguments as for ``adaptive_search``.

    Returns a :class:`SearchResult` whose ``ids``, ``scored_ids`` and rounds' ids are
    full-index ids; ``.partial`` of an interruption is mapped the same way.
    """
    view = shortlist if isinstance(shortlist, ShortlistIndex) else ShortlistIndex(index, shortlist)
    if view.base is not index:
        raise ValueError("shortlist is a ShortlistIndex over another index")
    local_init = None if init is None else view.to_local(init, "init")
    try:
        res = adaptive_search(view, q, view.full_ce(ce), budget, k=k, rounds=rounds, init=local_init, u0=u0,
                              lam=lam, seed=seed, normalization=normalization)
    except BaseException as exc:
        partial = getattr(exc, "partial", None)
        if isinstance(partial, SearchResult):
            exc.partial = _to_full(view, partial)  # type: ignore[attr-defined]
        raise
    return _to_full(view, res)


def _to_full(view: ShortlistIndex, res: SearchResult) -> SearchResult:
    rounds = [RoundInfo(ids=view.to_full(r.ids), scores=r.scores, fit_rmse=r.fit_rmse, seconds_ce=r.seconds_ce,
                        seconds_search=r.seconds_search, seconds_solve=r.seconds_solve) for r in res.rounds]
    return SearchResult(ids=view.to_full(res.ids), scores=res.scores, scored_ids=view.to_full(res.scored_ids),
                        scored_scores=res.scored_scores, u=res.u, n_ce_calls=res.n_ce_calls, rounds=rounds)
