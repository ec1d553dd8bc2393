"""Plain-numpy references the C++ kernels are checked against."""
from __future__ import annotations

import numpy as np


def topk_reference(V, U, k, exclude_lists=None):
    """Exact top-k by inner product in float64, ties broken by smaller id; -inf/-1 padding.

    exclude_lists: None or one list of ids per query.
    """
    V = np.asarray(V, dtype=np.float64)
    U = np.atleast_2d(np.asarray(U, dtype=np.float64))
    n = V.shape[0]
    S = U @ V.T
    scores = np.full((U.shape[0], k), -np.inf)
    ids = np.full((U.shape[0], k), -1, dtype=np.int64)
    for q in range(U.shape[0]):
        keep = np.ones(n, dtype=bool)
        if exclude_lists is not None and len(exclude_lists[q]):
            keep[np.asarray(exclude_lists[q], dtype=np.int64)] = False
        cand = np.flatnonzero(keep)
        order = np.lexsort((cand, -S[q, cand]))[:k]
        ids[q, : len(order)] = cand[order]
        scores[q, : len(order)] = S[q, cand[order]]
    return scores, ids


def assert_topk_close(V, U, k, scores, ids, exclude_lists=None, atol=1e-4):
    """Tie-aware check of a float top-k result against float64 numpy.

    Items whose exact scores lie within ``atol`` of each other may be swapped;
    anything else must match: the right items, sorted, not excluded, distinct.
    """
    V64 = np.asarray(V, dtype=np.float64)
    U = np.atleast_2d(U)
    scores, ids = np.atleast_2d(scores), np.atleast_2d(ids)
    ref_s, ref_i = topk_reference(V, U, k, exclude_lists)
    for q in range(U.shape[0]):
        valid = ids[q] >= 0
        assert (valid == (ref_i[q] >= 0)).all(), "padding differs from the reference"
        got = ids[q][valid]
        assert len(np.unique(got)) == len(got), "duplicate ids returned"
        if exclude_lists is not None:
            assert not np.isin(got, exclude_lists[q]).any(), "an excluded id was returned"
        exact = V64[got] @ np.asarray(U[q], dtype=np.float64)
        np.testing.assert_allclose(scores[q][valid], exact, rtol=1e-5, atol=atol)
        assert (np.diff(scores[q][valid]) <= 0).all(), "scores are not sorted descending"
        # same multiset of scores up to near-ties: the i-th best must match the reference's
        np.testing.assert_allclose(np.sort(exact)[::-1], ref_s[q][valid], rtol=1e-5, atol=atol)
        assert np.isneginf(scores[q][~valid]).all()
