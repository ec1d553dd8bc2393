"""Shared plumbing of the budgeted baselines (ANNCUR, ADACUR, TOUR, exact search).

Every CE call goes through :class:`ScoredSoFar`, which checks what the CE
returned and, when the CE raises or returns something unusable, attaches
everything already scored to the exception (``.partial``) so that no paid-for
score is lost.
"""
from __future__ import annotations

import time
from typing import List, Optional

import numpy as np

from ._ce_call import call_ce
from ._validation import check_int
from .adaptive import round_sizes
from .search_result import RoundInfo, SearchResult


def split_budget(budget: int, rounds: int) -> List[int]:
    """Items to score in each round, as AXN splits them (:func:`axn_fast.adaptive.round_sizes`):
    ``budget // rounds`` each, the remainder to the last rounds."""
    return round_sizes(budget, rounds)


def check_budget(budget, k, n_items: int, *, rounds: int = 1):
    """Validate ``budget`` (CE calls) and ``k`` (results wanted) for one search."""
    budget = check_int(budget, "budget", minimum=1)
    k = check_int(k, "k", minimum=1)
    if budget > n_items:
        raise ValueError(f"budget must be <= the number of items ({n_items}), got {budget}")
    if k > budget:
        raise ValueError(f"k must be <= budget (the top-k is chosen among the budget items scored), "
                         f"got k={k} > budget={budget}")
    if budget < rounds:
        raise ValueError(f"budget must be >= rounds (at least one CE call per round), "
                         f"got budget={budget} < rounds={rounds}")
    return budget, k


def top_new(approx: np.ndarray, n: int, exclude: Optional[np.ndarray] = None) -> np.ndarray:
    """Ids of the ``n`` largest entries of ``approx`` (1-D), skipping ``exclude``.

    Ties are broken by the smaller id (stable sort), so results are deterministic.
    """
    if exclude is not None and len(exclude):
        approx = approx.copy()
        approx[exclude] = -np.inf
    n = min(n, approx.shape[0] - (0 if exclude is None else len(exclude)))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    # argpartition keeps this O(n_items); the stable sort of the few kept makes ties deterministic
    if n < approx.shape[0]:
        part = np.argpartition(-approx, n - 1)[:n]
        kth = approx[part].min()
        # every id scoring strictly above the n-th value, then the smallest ids among exact ties
        above = np.flatnonzero(approx > kth)
        ties = np.flatnonzero(approx == kth)[: n - above.size]
        cand = np.concatenate([above, ties])
    else:
        cand = np.arange(approx.shape[0])
    order = np.lexsort((cand, -approx[cand]))
    return cand[order][:n].astype(np.int64)


class ScoredSoFar:
    """Accumulates (id, exact score) pairs and per-round timings of one search."""

    def __init__(self, q, ce, k: int):
        self.q = q
        self.ce = ce
        self.k = k
        self.ids: List[np.ndarray] = []
        self.scores: List[np.ndarray] = []
        self.rounds: List[RoundInfo] = []
        self.n_ce_calls = 0

    def score(self, ids: np.ndarray, *, seconds_search: float = 0.0) -> np.ndarray:
        """Score ``ids`` with the CE (one call), record them as a new round, return the scores."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        t0 = time.perf_counter()
        scores = call_ce(self.ce, self.q, ids, self.result)
        seconds = time.perf_counter() - t0
        self.ids.append(ids)
        self.scores.append(scores)
        self.n_ce_calls += ids.size
        self.rounds.append(RoundInfo(ids=ids, scores=scores, seconds_ce=seconds,
                                     seconds_search=seconds_search))
        return scores

    @property
    def all_ids(self) -> np.ndarray:
        return np.concatenate(self.ids) if self.ids else np.zeros(0, dtype=np.int64)

    @property
    def all_scores(self) -> np.ndarray:
        return np.concatenate(self.scores) if self.scores else np.zeros(0, dtype=np.float32)

    def result(self, *, ranked_ids=None, ranked_scores=None, u=None) -> SearchResult:
        """The SearchResult so far; ``ranked_*`` restrict the scored set that is ranked and reported."""
        if ranked_ids is None:
            ranked_ids, ranked_scores = self.all_ids, self.all_scores
        return SearchResult.from_scored(ranked_ids, ranked_scores, self.k, u=u,
                                        n_ce_calls=self.n_ce_calls, rounds=list(self.rounds))


def timed(fn, *args):
    """``(fn(*args), seconds)``."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0
