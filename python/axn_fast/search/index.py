"""``Index``: item embeddings with exact top-k inner-product search and AXN."""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from axn_fast import _core
from axn_fast._validation import as_float32_array, as_ids, check_int, resolve_num_threads

_FLOAT16_MAX = float(np.finfo(np.float16).max)
_EMPTY_IDS = np.zeros(0, dtype=np.int64)


class Index:
    """Item embeddings V (n_items, dim) searched by inner product.

    Parameters
    ----------
    V : (n_items, dim) array of float
        Item embeddings. Kept without a copy when it is already a C-contiguous
        float32 array, so do not modify it afterwards.
    dtype : "float32" or "float16"
        How the scan reads the items. "float16" also keeps a float16 copy and
        scans that (half the memory traffic), then re-scores in float32 every
        item that a rigorous rounding bound cannot rule out: results equal the
        float32 index's, ids and scores.
    num_threads : int
        Threads per search call; 0 means every core this process may use.
    normalization : (alpha, beta) or None
        CE score normalisation s -> beta * (s - alpha) applied to the regression
        targets of :meth:`adaptive_search` (AXN paper, Appendix A.4). It never
        changes a ranking; returned scores are always the raw CE scores.

    The index is immutable: it may be searched from many threads at once.
    """

    def __init__(self, V, *, dtype: str = "float32", num_threads: int = 0,
                 normalization: Optional[Tuple[float, float]] = None):
        V32 = as_float32_array(V, "V", ndim=(2,))
        if V32.shape[0] < 1 or V32.shape[1] < 1:
            raise ValueError(f"V must have at least one item and one dimension, got shape {V32.shape}")
        self._init(V32, dtype=dtype, num_threads=num_threads, normalization=normalization)

    @classmethod
    def _from_arrays(cls, V32: np.ndarray, *, dtype: str = "float32", num_threads: int = 0,
                     normalization=None, V16: Optional[np.ndarray] = None,
                     max_row_norm: Optional[float] = None) -> "Index":
        """Build from already validated arrays (e.g. memory-mapped files) without scanning them."""
        self = cls.__new__(cls)
        self._init(V32, dtype=dtype, num_threads=num_threads, normalization=normalization,
                   V16=V16, max_row_norm=max_row_norm)
        return self

    def _init(self, V32, *, dtype, num_threads, normalization, V16=None, max_row_norm=None):
        dtype = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        if dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        self._V = V32.view()
        self._V.flags.writeable = False
        self._dtype = dtype
        self._num_threads = resolve_num_threads(num_threads)
        self._V16 = None
        self._max_row_norm = None if max_row_norm is None else float(max_row_norm)
        if dtype == "float16":
            if V16 is None:
                peak = float(np.abs(V32).max())
                if peak > _FLOAT16_MAX:
                    raise ValueError(
                        f"V has an entry of magnitude {peak:.3g}, beyond float16's range (65504); "
                        "rescale V or use dtype='float32'")
                V16 = V32.astype(np.float16)
            self._V16 = np.ascontiguousarray(V16, dtype=np.float16).view(np.uint16)
        self.normalization = _check_normalization(normalization)
        self.metadata: dict = {}  # free-form, JSON-able; saved with the index
        self.query_encoder = None  # an InductiveMF that embeds new queries (u0), when the index has one

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
    def search(self, U, k: int, *, exclude=None) -> Tuple[np.ndarray, np.ndarray]:
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
            scores, ids = _core.topk_ip(self._V, U2, k, ex_ids, ex_offsets, self._num_threads, norm)
        else:
            scores, ids = _core.topk_ip_f16(self._V16, self._V, self.max_row_norm, U2, k,
                                            ex_ids, ex_offsets, self._num_threads)
        return (scores[0], ids[0]) if single else (scores, ids)

    def _exclusions(self, exclude, nq: int):
        if exclude is None:
            return _EMPTY_IDS, _EMPTY_IDS
        if isinstance(exclude, (list, tuple)) and len(exclude) > 0 and all(
                isinstance(e, (np.ndarray, list, tuple)) for e in exclude):
            if len(exclude) != nq:
                raise ValueError(f"exclude has {len(exclude)} lists but there are {nq} queries; "
                                 "give one list per query, or a single 1-D array for all")
            lists = [as_ids(e, f"exclude[{i}]", self.n_items) for i, e in enumerate(exclude)]
            offsets = np.zeros(nq + 1, dtype=np.int64)
            np.cumsum([len(x) for x in lists], out=offsets[1:])
            ids = np.concatenate(lists) if offsets[-1] else _EMPTY_IDS
            return np.ascontiguousarray(ids, dtype=np.int64), offsets
        ids = as_ids(exclude, "exclude", self.n_items)
        return ids, np.array([0, len(ids)], dtype=np.int64)

    def score(self, u, ids) -> np.ndarray:
        """Approximate scores <V[i], u> of the given items: (len(ids),) float32."""
        u = as_float32_array(u, "u", ndim=(1,), dim=self.dim)
        ids = as_ids(ids, "ids", self.n_items)
        return _core.dot_rows(np.ascontiguousarray(self._V[ids]), u.reshape(1, -1))[:, 0]

    def adaptive_search(self, q, ce, budget: int, *, k: int = 10, rounds: int = 5, init=None,
                        u0=None, lam: float = 0.0, seed=None):
        """AXN (Algorithm 1 of the AXN paper): budgeted k-NN search with a cross-encoder.

        See :func:`axn_fast.search.adaptive.adaptive_search` for the parameters.
        """
        from axn_fast.search.adaptive import adaptive_search
        return adaptive_search(self, q, ce, budget, k=k, rounds=rounds, init=init, u0=u0,
                               lam=lam, seed=seed)

    # ------------------------------------------------------------------ persistence
    def save(self, path, **kwargs):
        """Write the index to ``path`` (a directory of .npy/JSON files; never pickle)."""
        from axn_fast.io.persistence import save_index
        return save_index(self, path, **kwargs)

    @classmethod
    def load(cls, path, *, mmap: bool = True, **kwargs) -> "Index":
        """Open an index written by :meth:`save`; ``mmap`` maps the arrays instead of reading them."""
        from axn_fast.io.persistence import load_index
        return load_index(path, mmap=mmap, **kwargs)


def _check_normalization(normalization) -> Optional[Tuple[float, float]]:
    if normalization is None:
        return None
    if hasattr(normalization, "alpha") and hasattr(normalization, "beta"):
        alpha, beta = normalization.alpha, normalization.beta
    else:
        try:
            alpha, beta = normalization
        except (TypeError, ValueError) as exc:
            raise TypeError("normalization must be (alpha, beta) or an object with .alpha and .beta") from exc
    alpha, beta = float(alpha), float(beta)
    if not (np.isfinite(alpha) and np.isfinite(beta) and beta > 0):
        raise ValueError(f"normalization needs finite alpha and beta > 0 (so rankings are kept), got ({alpha}, {beta})")
    return alpha, beta
