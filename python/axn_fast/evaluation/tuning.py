"""Running a method over a set of queries, and choosing a method's setting on dev queries.

One implementation serves :func:`axn_fast.evaluate` (AXN's λ, ANNCUR's k_i/k_r split,
TOUR's learning rate, per (k, m), on the dev split) and the demo (λ on the train+dev queries): every setting
of the method's ``grid(budget)`` is run on the tuning queries, and the setting with the
best mean Top-k-Recall wins, the first one on ties.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike

from axn_fast._validation import as_float32_array, check_int
from axn_fast.encoders.boundary import CountingCrossEncoder
from axn_fast.encoders.dense import DenseScoreCE
from axn_fast.evaluation.metrics import topk_recall
from axn_fast.methods.baselines import AXNMethod, Method
from axn_fast.search.index import Index
from axn_fast.search.normalization import ScoreNormalization

#: Mean recalls closer than this are a tie (float noise of the mean over queries).
TIE_TOLERANCE = 1e-9

#: λ values the demo chooses from (AXN paper, Eq. 7).
DEMO_LAM_GRID = (0.0, 0.25, 0.5, 0.75)


@dataclass
class QueryRuns:
    """One method, one setting, one budget, over a set of queries.

    recall: k -> mean Top-k-Recall@m over the queries (for every k <= m asked for);
    top1: the method's top item per query (-1 when it returned none);
    ce_calls: mean CE calls per query; seconds: mean wall time per query outside the CE.
    """

    recall: Dict[int, float]
    top1: List[int]
    ce_calls: float
    seconds: float


def run_queries(method: Method, ce: Callable[[Any, np.ndarray], Any], queries: ArrayLike,
                truth: Mapping[int, np.ndarray], budget: int, *, ks: Sequence[int],
                params: Optional[Mapping[str, Any]] = None, bar: Optional[Any] = None) -> QueryRuns:
    """Search every query row of ``queries`` with ``method.search(q, ce, budget, k=max(ks), **params)``.

    truth: query row -> its exact top ids, best first (at least max(ks) of them).
    Checks the budget accounting: the CE calls the method made must equal its reported
    ``n_ce_calls`` and stay within ``budget`` (RuntimeError otherwise).
    """
    ks_m = [k for k in ks if k <= budget]
    if not ks_m:
        raise ValueError(f"no k <= budget {budget} in ks={list(ks)}")
    counting = ce if isinstance(ce, CountingCrossEncoder) else CountingCrossEncoder(ce)
    params = dict(params or {})
    rec: Dict[int, List[float]] = {k: [] for k in ks_m}
    top1: List[int] = []
    calls: List[int] = []
    secs: List[float] = []
    for q in np.asarray(queries).tolist():
        counting.reset()
        t0 = time.perf_counter()
        res = method.search(q, counting, budget, k=max(ks_m), **params)
        wall = time.perf_counter() - t0
        if counting.n_calls != res.n_ce_calls:
            raise RuntimeError(f"{method.name} reported n_ce_calls={res.n_ce_calls} but made "
                               f"{counting.n_calls} CE calls (query {q}, budget {budget})")
        if counting.n_calls > budget:
            raise RuntimeError(f"{method.name} spent {counting.n_calls} CE calls, over the budget {budget}")
        for k in ks_m:
            rec[k].append(float(topk_recall(res.scored_ids, truth[q], k)))
        top1.append(int(res.ids[0]) if len(res.ids) else -1)
        calls.append(counting.n_calls)
        secs.append(wall - counting.seconds)
        if bar is not None:
            bar.update(1)
    return QueryRuns({k: float(np.mean(v)) for k, v in rec.items()}, top1, float(np.mean(calls)),
                     float(np.mean(secs)))


def best_setting(mean_recalls: Sequence[float]) -> int:
    """Index of the best mean recall; the first one wins ties (within :data:`TIE_TOLERANCE`)."""
    if len(mean_recalls) == 0:
        raise ValueError("mean_recalls must not be empty")
    best, best_value = 0, float(mean_recalls[0])
    for i, value in enumerate(mean_recalls[1:], start=1):
        if float(value) > best_value + TIE_TOLERANCE:
            best, best_value = i, float(value)
    return best


def tune_on_queries(method: Method, ce: Callable[[Any, np.ndarray], Any], queries: ArrayLike,
                    truth: Mapping[int, np.ndarray], budget: int, *, ks: Sequence[int],
                    bar: Optional[Any] = None) -> Dict[int, int]:
    """Choose ``method``'s setting at ``budget`` for each k of ``ks`` (k <= budget) on ``queries``.

    Returns k -> index into ``method.grid(budget)``. With a single setting nothing is run
    and every k gets 0. Never pass test queries here: this is the dev-split step.
    """
    grid = method.grid(budget)
    ks_m = [k for k in ks if k <= budget]
    if len(grid) == 1:
        return {k: 0 for k in ks_m}
    runs = [run_queries(method, ce, queries, truth, budget, ks=ks_m, params=p, bar=bar) for p in grid]
    return {k: best_setting([r.recall[k] for r in runs]) for k in ks_m}


def exact_top(scores: np.ndarray, k: int) -> np.ndarray:
    """(n_queries, k) int64: the exact top-k ids of each row of a dense score matrix, best first
    (ties: the lower id first)."""
    S = as_float32_array(scores, "scores", ndim=(2,), allow_empty=False)
    k = check_int(k, "k", minimum=1, maximum=S.shape[1])
    return np.argsort(-S, axis=1, kind="stable")[:, :k].astype(np.int64)


def tune_lambda(index: Index, query_emb: np.ndarray, scores: np.ndarray, budget: int, *, rounds: int,
                k: int, grid: Sequence[float] = DEMO_LAM_GRID,
                normalization: Optional[ScoreNormalization] = None) -> float:
    """AXN's λ (Eq. 7) with the best mean Top-k-Recall@budget on queries whose dense scores are known.

    index: the item embeddings AXN searches; normalization: its CE -> DE score map, if any.
    query_emb: (n, d) the queries' parametric embeddings; round 1 takes their top items.
    scores: (n, n_items) exact CE scores of the same queries (never test queries).
    Returns the chosen value of ``grid`` (the first on ties).
    """
    U = as_float32_array(query_emb, "query_emb", ndim=(2,), allow_empty=False)
    S = as_float32_array(scores, "scores", ndim=(2,), allow_empty=False)
    if S.shape[0] != U.shape[0]:
        raise ValueError(f"query_emb has {U.shape[0]} rows but scores has {S.shape[0]}")
    budget = check_int(budget, "budget", minimum=1, maximum=S.shape[1])
    k = min(check_int(k, "k", minimum=1), budget)
    ranked = index.search(U, budget)[1]
    method = AXNMethod(index, query_emb=U, init=ranked, rounds=rounds, lams=tuple(grid),
                       normalization=normalization)
    true = exact_top(S, k)
    truth = {r: true[r] for r in range(S.shape[0])}
    choice = tune_on_queries(method, DenseScoreCE(S), range(S.shape[0]), truth, budget, ks=[k])
    return float(method.grid(budget)[choice[k]]["lam"])
