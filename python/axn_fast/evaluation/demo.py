"""The computation behind ``axn-fast demo``: AXN versus retrieve-and-rerank with live CE calls.

Both methods start from the dual-encoder's (DE) top items; retrieve-and-rerank (RNR)
scores the DE's top-m with the CE, AXN (``Index.adaptive_search``) spends the same m
calls over several rounds. Each (method, budget) run gets a fresh CE cache, so every
call is paid for and timed. AXN's two knobs come from queries with known scores, never
from the test queries: the CE -> DE normalisation (AXN paper, App. A.4,
:func:`demo_normalization`) and λ (:func:`axn_fast.evaluation.tuning.tune_lambda`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from axn_fast._progress import progress
from axn_fast._validation import as_float32_array, check_int
from axn_fast.encoders.cross_encoder import CachedCrossEncoder, PairScoreCache
from axn_fast.evaluation.metrics import topk_recall
from axn_fast.indexing.normalization import estimate_normalization
from axn_fast.methods.rerank import retrieve_and_rerank
from axn_fast.search.index import Index
from axn_fast.search.normalization import ScoreNormalization

#: The two methods the demo compares, in the order they run at each budget.
DEMO_METHODS = ("RNR-DE", "AXN-DE")


@dataclass
class DemoRow:
    """One (method, budget) run over the test queries.

    ce_calls: CE calls the searches reported (summed over queries); model_pairs: pairs the
    CE model actually scored (``ce.n_calls`` difference; equal to ce_calls with a fresh
    cache); seconds_ce / seconds_search: total seconds inside / outside the CE;
    link_acc: fraction of queries whose top item is the gold one; recall: k -> mean
    Top-k-Recall@m.
    """

    method: str
    m: int
    ce_calls: int
    model_pairs: int
    seconds_ce: float
    seconds_search: float
    link_acc: float
    recall: Dict[int, float] = field(default_factory=dict)


def demo_normalization(query_emb: np.ndarray, item_emb: np.ndarray, scores: np.ndarray) -> ScoreNormalization:
    """CE -> DE normalisation ``s -> beta (s - alpha)`` fitted on queries with known scores.

    query_emb: (n, d) DE embeddings of the fitting queries; item_emb: (n_items, d);
    scores: (n, n_items) their exact CE scores. Moment matching over every (query, item)
    pair (:func:`~axn_fast.indexing.normalization.estimate_normalization`).
    """
    U = as_float32_array(query_emb, "query_emb", ndim=(2,), allow_empty=False)
    V = as_float32_array(item_emb, "item_emb", ndim=(2,), dim=U.shape[1], allow_empty=False)
    S = as_float32_array(scores, "scores", ndim=(2,), allow_empty=False)
    if S.shape != (U.shape[0], V.shape[0]):
        raise ValueError(f"scores must be ({U.shape[0]}, {V.shape[0]}) (queries x items), got {S.shape}")
    return estimate_normalization(S.ravel(), (U @ V.T).ravel())


def compare_axn_rnr(index: Index, ce: Any, queries: Sequence[Any], query_emb: np.ndarray, true_ids: np.ndarray,
                    gold: np.ndarray, budgets: Sequence[int], *, rounds: int, lam: float, ks: Sequence[int],
                    normalization: Optional[ScoreNormalization] = None,
                    show_progress_bar: Optional[bool] = None) -> List[DemoRow]:
    """Run RNR-DE and AXN-DE on every query at every budget.

    index: the item embeddings; normalization: AXN's CE -> DE score map, if any; ce: ``ce(query, ids)``
    (a :class:`~axn_fast.encoders.cross_encoder.CachedCrossEncoder` gets a fresh cache per run);
    queries: what the CE takes (texts); query_emb: (n, d) their DE embeddings (round 1 and
    AXN's u0); true_ids: (n, >= max(ks)) exact top ids; gold: (n,) gold item per query.
    Returns one row per (budget, method), budgets ascending.
    """
    U = as_float32_array(query_emb, "query_emb", ndim=(2,), allow_empty=False)
    n = len(queries)
    if U.shape[0] != n or len(true_ids) != n or len(gold) != n:
        raise ValueError(f"queries ({n}), query_emb ({U.shape[0]}), true_ids ({len(true_ids)}) and gold "
                         f"({len(gold)}) must have one entry per query")
    rounds = check_int(rounds, "rounds", minimum=1)
    rows: List[DemoRow] = []
    for m in sorted(set(int(b) for b in budgets)):
        for method in DEMO_METHODS:
            if isinstance(ce, CachedCrossEncoder):
                ce.cache = PairScoreCache()  # every CE call of this run is paid for and timed
            calls0 = int(getattr(ce, "n_calls", 0))
            found, top1 = [], []
            t_ce = t_search = 0.0
            n_ce = 0
            for j in progress(range(n), desc=f"{method} m={m}", unit="query", show=show_progress_bar):
                t = time.perf_counter()
                cand = index.search(U[j], m)[1]
                if method == "RNR-DE":
                    res = retrieve_and_rerank(cand, queries[j], ce, m, k=min(10, m))
                else:
                    res = index.adaptive_search(queries[j], ce, m, k=min(10, m), rounds=rounds, init=cand,
                                                u0=U[j], lam=lam, normalization=normalization)
                t_search += time.perf_counter() - t - res.seconds_ce
                t_ce += res.seconds_ce
                n_ce += res.n_ce_calls
                found.append(res.scored_ids)
                top1.append(int(res.ids[0]))
            row = DemoRow(method, m, n_ce, int(getattr(ce, "n_calls", 0)) - calls0, t_ce, t_search,
                          float(np.mean(np.array(top1) == np.asarray(gold))))
            for k in ks:
                row.recall[k] = float(np.mean([topk_recall(f, t, k) for f, t in zip(found, true_ids)]))
            rows.append(row)
    return rows
