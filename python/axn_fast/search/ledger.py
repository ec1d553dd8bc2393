"""The ledger of one budgeted search: every (item, exact CE score) pair paid for, round by round.

Every method (AXN, RNR, ANNCUR, ADACUR, TOUR, exact search) scores through
:meth:`ScoreLedger.score`, which calls the CE through the one boundary
(:func:`axn_fast.encoders.boundary.call_ce`) and, when the call fails,
attaches everything scored before it to the exception as ``.partial`` (a
:class:`~axn_fast.SearchResult`), so no paid-for score is lost. A
``KeyboardInterrupt`` gets ``.partial`` too and is re-raised as it is.
"""
from __future__ import annotations

import time
from typing import Any, List, Optional

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast.encoders.boundary import call_ce, check_timeout
from axn_fast.encoders.protocol import CrossEncoder
from axn_fast.errors import PaidWorkInterrupted
from axn_fast.search.results import RoundInfo, SearchResult

__all__ = ["ScoreLedger"]

_PAID_NOTE = "; the scores obtained before this call are in .partial"


class ScoreLedger:
    """Accumulates the (id, exact score) pairs and per-round timings of one search for query ``q``.

    q : the query, handed to ``ce`` untouched. ce : the cross-encoder.
    k : how many results :meth:`result` reports.
    timeout : seconds each CE call may take (None: no limit), see
        :func:`~axn_fast.encoders.boundary.call_ce`.
    """

    def __init__(self, q: Any, ce: CrossEncoder, k: int, *, timeout: Optional[float] = None) -> None:
        self.q = q
        self.ce = ce
        self.k = k
        self.timeout = check_timeout(timeout)
        self.u: Optional[NDArray[np.float32]] = None  # the latest query embedding, reported with partial results
        self.ids: List[NDArray[np.int64]] = []
        self.scores: List[NDArray[np.float32]] = []
        self.rounds: List[RoundInfo] = []
        self.n_ce_calls = 0

    def score(self, ids: ArrayLike, *, seconds_search: float = 0.0) -> NDArray[np.float32]:
        """Score ``ids`` (m,) with the CE (one call), record them as a new round; return (m,) float32 scores.

        Raises :class:`~axn_fast.SearchInterrupted` / :class:`~axn_fast.CrossEncoderError`
        with ``.partial`` = :meth:`result` of the rounds before this one.
        """
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        t0 = time.perf_counter()
        try:
            scores = call_ce(self.ce, self.q, ids, timeout=self.timeout)
        except PaidWorkInterrupted as exc:
            exc.partial = self.result()
            exc.args = (str(exc) + _PAID_NOTE,)
            raise
        except (KeyboardInterrupt, SystemExit) as exc:
            exc.partial = self.result()  # type: ignore[union-attr]  # read by callers that catch it
            raise
        seconds = time.perf_counter() - t0
        self.ids.append(ids)
        self.scores.append(scores)
        self.n_ce_calls += ids.size
        self.rounds.append(RoundInfo(ids=ids, scores=scores, seconds_ce=seconds,
                                     seconds_search=seconds_search))
        return scores

    def fail(self, error: PaidWorkInterrupted) -> PaidWorkInterrupted:
        """``error`` with ``.partial`` = everything scored so far, for the caller to raise."""
        error.partial = self.result()
        return error

    @property
    def all_ids(self) -> NDArray[np.int64]:
        """(m,) every id scored so far, in the order scored."""
        return np.concatenate(self.ids) if self.ids else np.zeros(0, dtype=np.int64)

    @property
    def all_scores(self) -> NDArray[np.float32]:
        """(m,) their exact CE scores."""
        return np.concatenate(self.scores) if self.scores else np.zeros(0, dtype=np.float32)

    def result(self, *, ranked_ids: Optional[ArrayLike] = None, ranked_scores: Optional[ArrayLike] = None,
               u: Optional[NDArray[np.float32]] = None) -> SearchResult:
        """The SearchResult so far; ``ranked_*`` restrict the scored set that is ranked and reported."""
        if ranked_ids is None or ranked_scores is None:
            ranked_ids, ranked_scores = self.all_ids, self.all_scores
        if u is None and self.u is not None:
            u = self.u.copy()
        return SearchResult.from_scored(ranked_ids, ranked_scores, self.k, u=u,
                                        n_ce_calls=self.n_ce_calls, rounds=list(self.rounds))
