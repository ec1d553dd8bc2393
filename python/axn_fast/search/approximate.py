"""An approximate :class:`~axn_fast.search.protocol.VectorIndex` over a faiss index (HNSW or IVF).

On very large item sets the exact scan of every AXN round is the cost outside
the CE; an HNSW graph (or an IVF partition) answers the same query in a
fraction of it, at some recall. :class:`FaissIndex` puts such an index behind
the protocol, so ``adaptive_search`` runs unchanged on it:

* exclusion (the items already scored) is applied inside faiss with an
  ``IDSelectorNot`` in the search parameters, so excluded items never take a
  result slot;
* results follow :meth:`axn_fast.Index.search`'s conventions: scores
  descending, ties by the smaller id, padding ``-inf`` / ``-1``. When the
  approximate search returns fewer than ``k`` items although more are left
  (exclusions can starve a small ``efSearch``/``nprobe``), it is repeated with
  a wider search until ``k`` come back or the search is exhaustive;
* ``vectors_of`` reconstructs rows from faiss's own (flat) storage, so V is
  not held twice.

faiss is an optional dependency (``pip install faiss-cpu``); it is imported
when a :class:`FaissIndex` is built.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast._validation import as_float32_array, as_ids, check_int
from axn_fast.search.protocol import Exclude, parse_exclude

__all__ = ["FaissIndex"]

_EMPTY = np.zeros(0, dtype=np.int64)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss is in the dev environment
        raise ImportError("FaissIndex needs faiss (pip install faiss-cpu)") from exc
    return faiss


class FaissIndex:
    """A faiss inner-product index (HNSW or IVF, flat storage) as a :class:`~axn_fast.search.protocol.VectorIndex`.

    Build one with :meth:`hnsw` or :meth:`ivf` from item embeddings V (n_items, dim),
    or wrap an existing faiss ``IndexHNSWFlat`` / ``IndexIVFFlat`` with
    ``METRIC_INNER_PRODUCT`` whose ids are 0 .. ntotal - 1.

    index : the faiss index.
    ef_search : HNSW's ``efSearch`` (candidate list size; larger = slower, better recall);
        raised to ``k`` for a search of k items.
    nprobe : IVF's number of lists visited (``nlist`` = exhaustive).
    """

    def __init__(self, index: Any, *, ef_search: int = 64, nprobe: int = 16) -> None:
        faiss = _faiss()
        if getattr(index, "metric_type", None) != faiss.METRIC_INNER_PRODUCT:
            raise ValueError("index must use faiss.METRIC_INNER_PRODUCT (AXN ranks by inner product)")
        if index.ntotal < 1:
            raise ValueError("index holds no items (call .add(V) first)")
        self._kind: str
        if isinstance(index, faiss.IndexHNSW):
            self._kind = "hnsw"
        elif isinstance(index, faiss.IndexIVF):
            self._kind = "ivf"
            index.make_direct_map()  # lets vectors_of reconstruct rows by id
        else:
            raise TypeError(f"index must be a faiss IndexHNSW or IndexIVF, got {type(index).__name__}")
        self.index = index
        self._keep: List[Any] = []  # faiss objects the index points to (an IVF's quantizer)
        self.ef_search = check_int(ef_search, "ef_search", minimum=1)
        self.nprobe = check_int(nprobe, "nprobe", minimum=1)

    @classmethod
    def hnsw(cls, V: ArrayLike, *, M: int = 32, ef_construction: int = 200, ef_search: int = 64) -> "FaissIndex":
        """An HNSW graph over V (n_items, dim): ``M`` links per node, ``ef_construction`` at build time."""
        faiss = _faiss()
        V32 = as_float32_array(V, "V", ndim=(2,), allow_empty=False)
        index = faiss.IndexHNSWFlat(V32.shape[1], check_int(M, "M", minimum=2), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = check_int(ef_construction, "ef_construction", minimum=1)
        index.add(V32)
        return cls(index, ef_search=ef_search)

    @classmethod
    def ivf(cls, V: ArrayLike, *, nlist: Optional[int] = None, nprobe: int = 16, train_size: int = 100_000,
            seed: int = 0) -> "FaissIndex":
        """An inverted file over V (n_items, dim): ``nlist`` k-means lists (default ~4 sqrt(n_items)),
        trained on at most ``train_size`` random items; ``nprobe`` lists visited per query."""
        faiss = _faiss()
        V32 = as_float32_array(V, "V", ndim=(2,), allow_empty=False)
        n, d = V32.shape
        nlist = max(1, min(n, int(4 * np.sqrt(n)))) if nlist is None else check_int(nlist, "nlist", minimum=1,
                                                                                      maximum=n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = V32 if n <= train_size else V32[np.sort(np.random.default_rng(seed).choice(n, train_size,
                                                                                          replace=False))]
        index.cp.seed = int(seed)
        index.train(sample)
        index.add(V32)
        out = cls(index, nprobe=nprobe)
        out._keep.append(quantizer)
        return out

    # ------------------------------------------------------------------ the protocol
    @property
    def n_items(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return self.n_items

    def __repr__(self) -> str:
        knob = f"ef_search={self.ef_search}" if self._kind == "hnsw" else f"nprobe={self.nprobe}"
        return f"FaissIndex({self._kind}, n_items={self.n_items}, dim={self.dim}, {knob})"

    def vectors_of(self, ids: ArrayLike) -> NDArray[np.float32]:
        """(len(ids), dim) float32 rows V[ids], reconstructed from faiss's flat storage."""
        ids = as_ids(ids, "ids", self.n_items)
        if ids.size == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(self.index.reconstruct_batch(ids), dtype=np.float32)

    def search(self, U: ArrayLike, k: int, *, exclude: Exclude = None
               ) -> Tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Approximate top-k by inner product, with :meth:`axn_fast.Index.search`'s arguments and conventions.

        U : (dim,) or (n_queries, dim). k : results per query. exclude : one 1-D id array
        for every query, or a list with one per query. Returns ``(scores, ids)``, float32 /
        int64, (k,) or (n_queries, k), scores descending, ties by the smaller id, padded with
        -inf / -1 where fewer than k items are left.
        """
        U2 = as_float32_array(U, "U", ndim=(1, 2), dim=self.dim)
        single = U2.ndim == 1
        if single:
            U2 = U2.reshape(1, -1)
        k = check_int(k, "k", minimum=0)
        nq = U2.shape[0]
        per_query = self._exclusions(exclude, nq)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        ids = np.full((nq, k), -1, dtype=np.int64)
        if k > 0:
            if per_query is None or len(per_query) == 1:  # one exclusion set: one batched call
                ex = _EMPTY if per_query is None else per_query[0]
                self._search_into(U2, k, ex, scores, ids)
            else:
                for i, ex in enumerate(per_query):
                    self._search_into(U2[i:i + 1], k, ex, scores[i:i + 1], ids[i:i + 1])
        return (scores[0], ids[0]) if single else (scores, ids)

    # ------------------------------------------------------------------ internals
    def _exclusions(self, exclude: Exclude, nq: int) -> Optional[List[NDArray[np.int64]]]:
        """None, or the sorted unique excluded ids: one array for all queries, or one per query."""
        ids, offsets = parse_exclude(exclude, nq, self.n_items)
        if ids is None:
            return None
        if offsets is None:
            return [np.unique(ids)]
        return [np.unique(ids[offsets[i]:offsets[i + 1]]) for i in range(nq)]

    def _params(self, k: int, width: int, selector: Any) -> Any:
        faiss = _faiss()
        if self._kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(width, k))
        return faiss.SearchParametersIVF(sel=selector, nprobe=min(width, self.index.nlist))

    def _search_into(self, U: NDArray[np.float32], k: int, ex: NDArray[np.int64],
                     scores: NDArray[np.float32], ids: NDArray[np.int64]) -> None:
        """Fill rows ``scores``/``ids`` (nq, k) for queries ``U`` sharing the exclusion ``ex`` (sorted, unique)."""
        faiss = _faiss()
        keep = min(k, self.n_items - ex.size)
        if keep <= 0:
            return
        selector = None
        if ex.size:
            inner = faiss.IDSelectorBatch(ex)
            selector = faiss.IDSelectorNot(inner)
        width = self.ef_search if self._kind == "hnsw" else self.nprobe
        full = self.n_items if self._kind == "hnsw" else int(self.index.nlist)
        todo = np.arange(U.shape[0])
        while todo.size:
            params = self._params(keep, width, selector)
            D, I = self.index.search(np.ascontiguousarray(U[todo]), keep, params=params)
            for row, (d_row, i_row) in zip(todo, zip(D, I)):
                valid = i_row >= 0
                i_ok, d_ok = i_row[valid], d_row[valid].astype(np.float32)
                order = np.lexsort((i_ok, -d_ok))  # scores descending, ties by the smaller id
                n_ok = order.size
                ids[row, :n_ok] = i_ok[order]
                scores[row, :n_ok] = d_ok[order]
                ids[row, n_ok:] = -1
                scores[row, n_ok:] = -np.inf
            short = (ids[todo, keep - 1] < 0)
            if not short.any() or width >= full:
                break
            todo = todo[short]  # exclusions starved the search: widen it for those queries
            width = min(full, width * 4)
        del selector
