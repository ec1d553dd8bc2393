"""Result types of the search methods (AXN, retrieve-and-rerank, baselines)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

import numpy as np
from numpy.typing import ArrayLike


@dataclass
class RoundInfo:
    """What one round of a multi-round search did.

    ids, scores: (m_r,) int64 / float32, the items scored by the CE in this
        round and their exact CE scores, in the order scored.
    fit_rmse: root-mean-square error of the query embedding fitted after this
        round on all items scored so far (NaN when no embedding was fitted).
    seconds_ce / seconds_search / seconds_solve: wall time spent in the CE
        call, in the inner-product retrieval, and in the least-squares fit.
    """

    ids: np.ndarray
    scores: np.ndarray
    fit_rmse: float = float("nan")
    seconds_ce: float = 0.0
    seconds_search: float = 0.0
    seconds_solve: float = 0.0


@dataclass
class SearchResult:
    """The outcome of a budgeted CE search for one query.

    ids, scores: (k',) int64 / float32, the top-k items by exact CE score,
        descending (k' = min(k, number scored)).
    scored_ids, scored_scores: (m,) every item the CE scored, in the order
        scored, and their exact CE scores.
    u: (d,) float32 final query embedding (None for methods without one).
    n_ce_calls: number of (query, item) pairs sent to the CE.
    rounds: per-round details.
    """

    ids: np.ndarray
    scores: np.ndarray
    scored_ids: np.ndarray
    scored_scores: np.ndarray
    u: Optional[np.ndarray] = None
    n_ce_calls: int = 0
    rounds: List[RoundInfo] = field(default_factory=list)

    @property
    def seconds_ce(self) -> float:
        return float(sum(r.seconds_ce for r in self.rounds))

    @property
    def seconds_search(self) -> float:
        """Time outside the CE: retrieval scans plus least-squares fits."""
        return float(sum(r.seconds_search + r.seconds_solve for r in self.rounds))

    @staticmethod
    def from_scored(scored_ids: ArrayLike, scored_scores: ArrayLike, k: int, **kwargs: Any) -> "SearchResult":
        """Build a result whose top-k is taken from everything scored (ties: first scored wins)."""
        scored_ids = np.asarray(scored_ids, dtype=np.int64)
        scored_scores = np.asarray(scored_scores, dtype=np.float32)
        order = np.argsort(-scored_scores, kind="stable")[:k]
        return SearchResult(
            ids=scored_ids[order],
            scores=scored_scores[order],
            scored_ids=scored_ids,
            scored_scores=scored_scores,
            **kwargs,
        )
