"""``Index``: item embeddings with exact top-k inner-product search (a :class:`~axn_fast.search.protocol.VectorIndex`)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast._core import dot_rows, topk_ip, topk_ip_f16
from axn_fast._validation import as_float32_array, as_ids, check_int, resolve_num_threads
from axn_fast.encoders.protocol import CrossEncoder
from axn_fast.io.persistence import Verify, load_vectors, save_vectors
from axn_fast.search.adaptive import adaptive_search as _adaptive_search
from axn_fast.search.batch import PerQuery, adaptive_search_batch as _adaptive_search_batch
from axn_fast.search.normalization import NormalizationLike, as_normalization
from axn_fast.search.protocol import Exclude, parse_exclude
from axn_fast.search.results import SearchResult

__all__ = ["Index"]

_FLOAT16_MAX = float(np.finfo(np.float16).max)
_EMPTY_IDS = np.zeros(0, dtype=np.int64)


def _is_float16(dtype: Any) -> bool:
    try:
        return bool(np.dtype(dtype) == np.float16)
    except TypeError:  # not a dtype at all: _init names the problem
        return False


class Index:
    """Item embeddings V (n_items, dim) searched by inner product.

    Parameters
    ----------
    V : (n_items, dim) array of float
        Item embeddings. With ``dtype="float32"`` it is kept without a copy
        when it is already a C-contiguous float32 array, so do not modify it
        afterwards. With ``dtype="float16"`` the index always owns its float32
        vectors (a copy of V when V is that array already) next to their
        float16 copy: changing V afterwards does not change the index.
    dtype : "float32" or "float16"
        How the scan reads the items. "float16" also keeps a float16 copy and
        scans that (half the memory traffic), then re-scores in float32 every
        item that a rigorous rounding bound cannot rule out: results equal the
        float32 index's, ids and scores.
    num_threads : int
        Threads per search call; 0 means every core this process may use.
    normalization : deprecated
        Pass ``normalization=`` to :meth:`adaptive_search` (or keep it in the
        index bundle) instead; still forwarded to :meth:`adaptive_search`, with a
        ``DeprecationWarning``.

    The index is vectors and search only (it satisfies
    :class:`~axn_fast.search.protocol.VectorIndex`); it is immutable and may be
    searched from many threads at once.
    """

    def __init__(self, V: ArrayLike, *, dtype: str = "float32", num_threads: int = 0,
                 normalization: NormalizationLike = None) -> None:
        V32 = as_float32_array(V, "V", ndim=(2,))
        if V32.shape[0] < 1 or V32.shape[1] < 1:
            raise ValueError(f"V must have at least one item and one dimension, got shape {V32.shape}")
        normalization = as_normalization(normalization)  # refuse a bad one before warning
        if normalization is not None:
            warnings.warn("Index(normalization=) is deprecated: pass normalization= to adaptive_search "
                          "(the index is vectors and search only)", DeprecationWarning, stacklevel=2)
        if _is_float16(dtype) and isinstance(V, np.ndarray) and np.may_share_memory(V32, V):
            # the float16 copy is made now: a later change to V would leave the two copies disagreeing
            V32 = V32.copy()
        self._init(V32, dtype=dtype, num_threads=num_threads, normalization=normalization)

    @classmethod
    def _from_arrays(cls, V32: NDArray[np.float32], *, dtype: str = "float32", num_threads: int = 0,
                     normalization: NormalizationLike = None, V16: Optional[np.ndarray] = None,
                     max_row_norm: Optional[float] = None) -> "Index":
        """Build from already validated arrays (e.g. memory-mapped files) without scanning them."""
        self = cls.__new__(cls)
        self._init(V32, dtype=dtype, num_threads=num_threads, normalization=normalization,
                   V16=V16, max_row_norm=max_row_norm)
        return self

    def _init(self, V32: NDArray[np.float32], *, dtype: Any, num_threads: int, normalization: NormalizationLike,
              V16: Optional[np.ndarray] = None, max_row_norm: Optional[float] = None) -> None:
        dtype = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        self._V = V32.view()
        self._V.flags.writeable = False
        self._dtype = dtype
        self._num_threads = resolve_num_threads(num_threads)
        self._V16: Optional[np.ndarray] = None
        self._max_row_norm = None if max_row_norm is None else float(max_row_norm)
        if dtype == "float16":
            if V16 is None:
                peak = max(float(V32.max()), -float(V32.min()))  # no |V| temporary: peak stays V + V16
                if peak > _FLOAT16_MAX:
                    raise ValueError(
                        f"V has an entry of magnitude {peak:.3g}, beyond float16's range (65504); "
                        "rescale V or use dtype='float32'")
                V16 = V32.astype(np.float16)
            self._V16 = np.ascontiguousarray(V16, dtype=np.float16).view(np.uint16)
        self._normalization = as_normalization(normalization)
        self.metadata: Dict[str, Any] = {}  # free-form, JSON-able; saved with the index

    @property
    def normalization(self) -> Optional[Tuple[float, float]]:
        """Deprecated: ``(alpha, beta)`` given to the constructor, forwarded to :meth:`adaptive_search`."""
        n = self._normalization
        return None if n is None else (n.alpha, n.beta)

    # ------------------------------------------------------------------ properties
    @property
    def n_items(self) -> int:
        return int(self._V.shape[0])

    @property
    def dim(self) -> int:
        return int(self._V.shape[1])

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def num_threads(self) -> int:
        return self._num_threads

    @property
    def max_row_norm(self) -> float:
        """max_i ||V[i]||_2 (float64), computed on first use: it bounds the rounding
        error of the fast scans, which lets them re-score only what rounding could misorder."""
        if self._max_row_norm is None:  # a benign race: every thread computes the same value
            norms = np.zeros(self.n_items)
            for s in range(0, self.n_items, 1 << 16):
                block = self._V[s:s + (1 << 16)]
                norms[s:s + len(block)] = np.einsum("ij,ij->i", block, block, dtype=np.float64)
            self._max_row_norm = float(np.sqrt(norms.max()))
        return self._max_row_norm

    @property
    def vectors(self) -> np.ndarray:
        """(n_items, dim) float32, read-only."""
        return self._V

    def __len__(self) -> int:
        return self.n_items

    def __repr__(self) -> str:
        return f"Index(n_items={self.n_items}, dim={self.dim}, dtype={self._dtype!r}, num_threads={self._num_threads})"

    # ------------------------------------------------------------------ search
    def search(self, U: ArrayLike, k: int, *, exclude: Exclude = None
               ) -> Tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Exact top-k items by inner product.

        U : (dim,) or (n_queries, dim) float query embeddings.
        k : number of results per query (k > n_items is allowed: padded).
        exclude : ids never returned: a 1-D array (for every query) or a list
            with one 1-D array per query. Duplicates are fine.

        Returns ``(scores, ids)``: float32 / int64 arrays of shape (k,) for a 1-D
        ``U`` or (n_queries, k), best first (ties: smaller id first), padded
        with -inf / -1 where fewer than k items remain.
        """
        U = as_float32_array(U, "U", ndim=(1, 2), dim=self.dim)
        single = U.ndim == 1
        U2 = U.reshape(1, -1) if single else U
        k = check_int(k, "k", minimum=0)
        ex_ids, ex_offsets = self._exclusions(exclude, U2.shape[0])
        if self._V16 is None:
            norm = self.max_row_norm if U2.shape[0] > 1 else -1.0
            scores, ids = topk_ip(self._V, U2, k, ex_ids, ex_offsets, self._num_threads, norm)
        else:
            scores, ids = topk_ip_f16(self._V16, self._V, self.max_row_norm, U2, k,
                                            ex_ids, ex_offsets, self._num_threads)
        return (scores[0], ids[0]) if single else (scores, ids)

    def _exclusions(self, exclude: Exclude, nq: int) -> Tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Exclusions in the kernels' CSR form (a shared list is one row the kernel applies to all)."""
        ids, offsets = parse_exclude(exclude, nq, self.n_items)
        if ids is None:
            return _EMPTY_IDS, _EMPTY_IDS
        return ids, (offsets if offsets is not None else np.array([0, len(ids)], dtype=np.int64))

    def vectors_of(self, ids: ArrayLike) -> NDArray[np.float32]:
        """(len(ids), dim) C-contiguous float32 copy of the rows V[ids]."""
        ids = as_ids(ids, "ids", self.n_items)
        return np.ascontiguousarray(self._V[ids])

    def score(self, u: ArrayLike, ids: ArrayLike) -> NDArray[np.float32]:
        """Approximate scores <V[i], u> of the given items: (len(ids),) float32."""
        u = as_float32_array(u, "u", ndim=(1,), dim=self.dim)
        ids = as_ids(ids, "ids", self.n_items)
        return dot_rows(np.ascontiguousarray(self._V[ids]), u.reshape(1, -1))[:, 0]

    def adaptive_search(self, q: Any, ce: CrossEncoder, budget: int, *, k: int = 10, rounds: int = 5,
                        init: Optional[ArrayLike] = None, u0: Optional[ArrayLike] = None, lam: float = 0.0,
                        seed: Optional[int] = None, normalization: NormalizationLike = None,
                        ce_timeout: Optional[float] = None) -> SearchResult:
        """AXN (Algorithm 1 of the AXN paper): budgeted k-NN search with a cross-encoder.

        See :func:`axn_fast.search.adaptive.adaptive_search` for the parameters.
        """
        return _adaptive_search(self, q, ce, budget, k=k, rounds=rounds, init=init, u0=u0, lam=lam,
                                seed=seed, normalization=normalization, ce_timeout=ce_timeout)

    def adaptive_search_batch(self, queries: Sequence[Any], ce: CrossEncoder, budget: PerQuery[int], *,
                              k: PerQuery[int] = 10, rounds: PerQuery[int] = 5,
                              init: Optional[Sequence[Optional[ArrayLike]]] = None,
                              u0: Optional[Union[ArrayLike, Sequence[Optional[ArrayLike]]]] = None,
                              lam: PerQuery[float] = 0.0, seed: PerQuery[Optional[int]] = None,
                              normalization: NormalizationLike = None,
                              ce_timeout: Optional[float] = None) -> List[SearchResult]:
        """AXN for many queries in lockstep (one batched scan and one CE call per round); ``out[i]``
        equals :meth:`adaptive_search` for ``queries[i]``. See
        :func:`axn_fast.search.batch.adaptive_search_batch` for the parameters."""
        return _adaptive_search_batch(self, queries, ce, budget, k=k, rounds=rounds, init=init, u0=u0, lam=lam,
                                      seed=seed, normalization=normalization, ce_timeout=ce_timeout)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Union[str, Path], *, overwrite: bool = False) -> Path:
        """Write the vectors, scan dtype and ``metadata`` to the directory ``path`` (.npy + JSON, never
        pickle; see :mod:`axn_fast.io.persistence`). A saved search (query encoder, normalisation,
        items, CE) is an :class:`axn_fast.indexing.bundle.IndexBundle`."""
        return save_vectors(path, self._V, dtype=self._dtype, metadata=self.metadata, overwrite=overwrite)

    @classmethod
    def load(cls, path: Union[str, Path], *, mmap: bool = True, verify: Verify = "cheap",
             num_threads: int = 0) -> "Index":
        """Open an index written by :meth:`save`.

        mmap : memory-map the vectors (opening reads only headers) instead of reading them.
        verify : "cheap" (sizes, headers, finiteness of what is read) or "full" (also
            SHA-256 and finiteness of everything); see :mod:`axn_fast.io.persistence`.
        num_threads : threads per search of the opened index (0 = all cores).
        """
        resolve_num_threads(num_threads)  # a bad argument is not the file's fault
        saved = load_vectors(path, mmap=mmap, verify=verify)
        index = cls._from_arrays(saved.vectors, dtype=saved.dtype, num_threads=num_threads)
        index.metadata = saved.metadata
        return index
