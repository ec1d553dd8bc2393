"""Top-k-Recall@m, the papers' measure of k-NN search quality."""
from __future__ import annotations

from typing import Any, Iterable, Sequence, Union, cast

import numpy as np
from numpy.typing import ArrayLike

from axn_fast._validation import check_int


def topk_recall(found_ids: Union[ArrayLike, Sequence[ArrayLike]], true_ids: ArrayLike,
                k: int) -> Union[float, np.ndarray]:
    """Fraction of the true top-k items found among the items a method scored.

    found_ids : (m,) ids a method found/scored (``-1`` padding is ignored), or
        (n_queries, m) / a list of 1-D arrays, one per query.
    true_ids : (>= k,) the exact top items, best first, or (n_queries, >= k).
    k : how many of ``true_ids`` count.

    Returns |found ∩ true[:k]| / k: a float for one query, (n_queries,) float64 for several.
    Ids must be integers (floats and strings are refused) and
    the first k true ids of a query distinct: ``ValueError`` otherwise.
    """
    k = check_int(k, "k", minimum=1)
    true = np.asarray(true_ids)
    if true.ndim not in (1, 2) or (true.size and not np.issubdtype(true.dtype, np.integer)):
        raise ValueError(f"true_ids must be a 1-D or 2-D array of integer ids, got shape {true.shape}, dtype {true.dtype}")
    if true.shape[-1] < k:
        raise ValueError(f"true_ids has {true.shape[-1]} ids per query, fewer than k={k}")
    if true.ndim == 1:
        _check_distinct(true, k)
        return _one(np.asarray(found_ids), true[:k], k)
    found_rows = (list(cast(Iterable[Any], found_ids))
                  if not isinstance(found_ids, np.ndarray) or found_ids.ndim == 2 else None)
    if found_rows is None:
        raise ValueError("found_ids must be 2-D (or a list of arrays) when true_ids is 2-D")
    if len(found_rows) != true.shape[0]:
        raise ValueError(f"found_ids has {len(found_rows)} queries but true_ids has {true.shape[0]}")
    _check_distinct(true, k)
    return np.array([_one(np.asarray(f), t[:k], k) for f, t in zip(found_rows, true)], dtype=np.float64)


def _check_distinct(true: np.ndarray, k: int) -> None:
    top = np.sort(true.reshape(-1, true.shape[-1])[:, :k], axis=1)
    dup = np.flatnonzero((top[:, 1:] == top[:, :-1]).any(axis=1))
    if dup.size:
        where = "" if true.ndim == 1 else f" of query {int(dup[0])}"
        raise ValueError(f"true_ids must hold distinct ids; the first k={k}{where} repeat an id "
                         "(a repeated id would deflate the recall)")


def _one(found: np.ndarray, true_k: np.ndarray, k: int) -> float:
    if found.ndim != 1:
        raise ValueError(f"found_ids must be 1-D for one query, got shape {found.shape}")
    if found.size and not np.issubdtype(found.dtype, np.integer):
        raise ValueError(f"found_ids must hold integer ids, got dtype {found.dtype}")
    found = found[found >= 0] if found.size else found
    return float(np.isin(np.unique(true_k), found).sum()) / k
