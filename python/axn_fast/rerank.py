"""Retrieve-and-rerank (RNR): score the first candidates with the CE, keep the best."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ._ce_call import call_ce
from ._validation import check_int
from .search_result import RoundInfo, SearchResult


def retrieve_and_rerank(candidates, q, ce: Callable, budget: int, *, k: int = 10) -> SearchResult:
    """Score the first ``budget`` distinct ``candidates`` with ``ce`` and return the top-k.

    candidates : ranked 1-D array of item ids (best first), e.g. a dual-encoder's
        or BM25's top items; duplicates are scored once. When fewer than
        ``budget`` distinct candidates exist, all of them are scored.
    ce : ``ce(q, ids) -> scores``, called once.
    Returns a :class:`SearchResult` (``u`` is None, one round).
    """
    budget = check_int(budget, "budget", minimum=1)
    k = check_int(k, "k", minimum=1)
    if k > budget:
        raise ValueError(f"k ({k}) must be <= budget ({budget}): only scored items can be returned")
    cand = np.asarray(candidates)
    if cand.size and not np.issubdtype(cand.dtype, np.integer):
        raise TypeError(f"candidates must be integer item ids, got dtype {cand.dtype}")
    if cand.ndim != 1:
        raise ValueError(f"candidates must be a 1-D array of item ids, got shape {cand.shape}")
    cand = cand.astype(np.int64, copy=False)
    if cand.size and cand.min() < 0:
        raise ValueError(f"candidates contains a negative id ({int(cand.min())})")
    if not callable(ce):
        raise TypeError(f"ce must be callable as ce(q, ids) -> scores, got {type(ce).__name__}")
    _, first = np.unique(cand, return_index=True)
    ids = np.ascontiguousarray(cand[np.sort(first)][:budget])

    def partial() -> SearchResult:
        return SearchResult.from_scored(ids[:0], np.zeros(0, np.float32), k)

    t0 = time.perf_counter()
    scores = call_ce(ce, q, ids, partial)
    t_ce = time.perf_counter() - t0
    return SearchResult.from_scored(ids, scores, k, n_ce_calls=len(ids),
                                    rounds=[RoundInfo(ids=ids, scores=scores, seconds_ce=t_ce)])
