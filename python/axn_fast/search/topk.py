"""Top-n of a score vector with the C++ kernel, the one ranking rule of every method.

Methods whose approximate scores are not inner products with a fixed item
matrix (ANNCUR/ADACUR's CUR scores, lexical retrievers, exact ground truth)
rank their score vector here: the vector is scanned as a (n, 1) "index" with
the query 1.0 (multiplying by 1.0 is exact), so the ranking, the exclusion and
the tie rule (scores descending, ties by the smaller id) are those of
:meth:`axn_fast.Index.search`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast._core import topk_ip
from axn_fast._validation import as_float32_array, as_ids, check_int

__all__ = ["top_ids"]

_ONE = np.ones((1, 1), dtype=np.float32)
_EMPTY = np.zeros(0, dtype=np.int64)


def top_ids(scores: ArrayLike, n: int, exclude: Optional[ArrayLike] = None) -> NDArray[np.int64]:
    """Ids of the ``n`` largest entries of ``scores`` (1-D, float32), skipping ``exclude``.

    scores : (n_items,) finite float scores.
    n : how many ids to return; fewer come back when fewer than ``n`` items are
        not excluded.
    exclude : ids never returned (duplicates are fine).

    Returns (min(n, available),) int64 ids, best first, ties by the smaller id.
    The input is not modified.
    """
    x = as_float32_array(scores, "scores", ndim=(1,), allow_empty=False)
    n = check_int(n, "n", minimum=0)
    ex = _EMPTY if exclude is None else as_ids(exclude, "exclude", x.shape[0])
    n = min(n, x.shape[0])
    _, ids = topk_ip(x.reshape(-1, 1), _ONE, n, ex, np.array([0, ex.size], dtype=np.int64), 1, -1.0)
    out = ids[0]
    return np.ascontiguousarray(out[out >= 0])
