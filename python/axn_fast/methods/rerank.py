"""Retrieve-and-rerank (RNR): score the first candidates with the CE, keep the best."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
from numpy.typing import ArrayLike

from axn_fast.encoders.boundary import check_timeout
from axn_fast.encoders.protocol import CrossEncoder
from axn_fast.search.ledger import ScoreLedger
from axn_fast._validation import check_int
from axn_fast.search.results import SearchResult


def retrieve_and_rerank(candidates: ArrayLike, q: Any, ce: CrossEncoder, budget: int, *, k: int = 10,
                        ce_timeout: Optional[float] = None) -> SearchResult:
    """Score the first ``budget`` distinct ``candidates`` with ``ce`` and return the top-k.

    candidates : ranked 1-D array of item ids (best first), e.g. a dual-encoder's
        or BM25's top items; duplicates are scored once. When fewer than
        ``budget`` distinct candidates exist, all of them are scored.
    ce : ``ce(q, ids) -> scores``, called once.
    ce_timeout : seconds the CE call may take (None: no limit); past it,
        :class:`axn_fast.SearchInterrupted` (as in ``adaptive_search``).
    Returns a :class:`SearchResult` (``u`` is None, one round).
    """
    budget = check_int(budget, "budget", minimum=1)
    k = check_int(k, "k", minimum=1)
    if k > budget:
        raise ValueError(f"k must be <= budget (the top-k is chosen among the budget items scored), "
                         f"got k={k} > budget={budget}")
    cand = np.asarray(candidates)
    if cand.size and not np.issubdtype(cand.dtype, np.integer):
        raise TypeError(f"candidates must be integer item ids, got dtype {cand.dtype}")
    if cand.ndim != 1:
        raise ValueError(f"candidates must be a 1-D array of item ids, got shape {cand.shape}")
    if cand.size == 0:
        raise ValueError("candidates must hold at least one item id (got none: nothing to re-rank)")
    cand = cand.astype(np.int64, copy=False)
    if cand.size and cand.min() < 0:
        raise ValueError(f"candidates contains a negative id ({int(cand.min())})")
    if not callable(ce):
        raise TypeError(f"ce must be callable as ce(q, ids) -> scores, got {type(ce).__name__}")
    _, first = np.unique(cand, return_index=True)
    scored = ScoreLedger(q, ce, k, timeout=check_timeout(ce_timeout, "ce_timeout"))
    scored.score(cand[np.sort(first)][:budget])
    return scored.result()
