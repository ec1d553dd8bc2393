"""Shared plumbing of every budgeted search (AXN, RNR, ANNCUR, ADACUR, TOUR, exact search).

Every CE call goes through :func:`call_ce` (usually via :class:`ScoredSoFar`),
which makes one batched call, checks what the CE returned and, when the CE
raises or returns something unusable, attaches everything already scored to
the exception (``.partial``) so that no paid-for score is lost.
"""
from __future__ import annotations

import time
from typing import Callable, List, Optional

import numpy as np

from axn_fast._validation import check_int
from axn_fast.errors import CrossEncoderError, SearchInterrupted
from axn_fast.search.results import RoundInfo, SearchResult


def round_sizes(budget: int, rounds: int) -> List[int]:
    """CE calls per round: ``budget // rounds`` each, the remainder spread over the last rounds."""
    base, rem = divmod(budget, rounds)
    return [base + (1 if r >= rounds - rem else 0) for r in range(rounds)]


def call_ce(ce: Callable, q, ids: np.ndarray, partial: Callable) -> np.ndarray:
    """Return ``ce(q, ids)`` as a (len(ids),) float32 array of finite scores.

    ``partial()`` builds the result of everything scored before this call; it
    is attached to the exception when the CE raises (:class:`SearchInterrupted`)
    or returns something unusable (:class:`CrossEncoderError`).
    """
    try:
        out = ce(q, ids)
    except Exception as exc:
        raise SearchInterrupted(
            f"the cross-encoder raised {type(exc).__name__} while scoring {len(ids)} items: {exc}; "
            "the scores obtained before this call are in .partial",
            partial=partial(),
        ) from exc
    try:
        scores = np.asarray(out, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise CrossEncoderError(
            f"the cross-encoder must return numeric scores, got {type(out).__name__}", partial=partial()
        ) from exc
    if scores.ndim == 2 and scores.shape[1] == 1:  # (m, 1) logits are common
        scores = scores[:, 0]
    if scores.shape != (len(ids),):
        raise CrossEncoderError(
            f"the cross-encoder returned scores of shape {scores.shape} for {len(ids)} items; "
            f"expected shape ({len(ids)},)",
            partial=partial(),
        )
    bad = ~np.isfinite(scores)
    if bad.any():
        raise CrossEncoderError(
            f"the cross-encoder returned {int(bad.sum())} non-finite scores (NaN or inf), "
            f"e.g. for item {int(ids[np.argmax(bad)])}",
            partial=partial(),
        )
    return np.ascontiguousarray(scores)


def check_budget(budget, k, n_items: int, *, rounds: int = 1):
    """Validate ``budget`` (CE calls) and ``k`` (results wanted) for one search."""
    budget = check_int(budget, "budget", minimum=1)
    k = check_int(k, "k", minimum=1)
    rounds = check_int(rounds, "rounds", minimum=1)
    if budget > n_items:
        raise ValueError(f"budget must be <= the number of items ({n_items}), got {budget}")
    if budget < rounds:
        raise ValueError(f"budget must be >= rounds (at least one CE call per round), "
                         f"got budget={budget} < rounds={rounds}")
    if k > budget:
        raise ValueError(f"k must be <= budget (the top-k is chosen among the budget items scored), "
                         f"got k={k} > budget={budget}")
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
        self.u: Optional[np.ndarray] = None  # the latest query embedding, reported with partial results
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
        if u is None and self.u is not None:
            u = self.u.copy()
        return SearchResult.from_scored(ranked_ids, ranked_scores, self.k, u=u,
                                        n_ce_calls=self.n_ce_calls, rounds=list(self.rounds))


def timed(fn, *args):
    """``(fn(*args), seconds)``."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0
