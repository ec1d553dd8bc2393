"""CE score normalisation s -> beta (s - alpha) (AXN paper, Appendix A.4).

When the CE and the dual-encoder (DE) score in different ranges, the MF
embeddings initialised from the DE start far from the CE targets. The paper
rescales CE scores to the DE's score distribution, estimated on ~100 train
queries. We match the first two moments over paired (CE, DE) scores of the same
(query, item) pairs:

    beta = std(DE) / std(CE),   alpha = mean(CE) - mean(DE) / beta,

so beta (s - alpha) has the DE's mean and standard deviation. beta > 0, so the
map is increasing and never changes a ranking. Apply it to G before factorising
(:meth:`ScoreNormalization.apply`) and pass it to the search
(``adaptive_search(..., normalization=norm)``), which applies it to the
test-time CE scores it fits, and still returns raw CE scores. The type itself
lives in :mod:`axn_fast.search.normalization` (the search layer applies it).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from axn_fast._validation import as_float32_array, check_int
from axn_fast.search.normalization import ScoreNormalization

__all__ = ["ScoreNormalization", "estimate_normalization", "normalization_from_score_matrix"]


def estimate_normalization(ce_scores: ArrayLike, de_scores: ArrayLike) -> ScoreNormalization:
    """Moment-matching (alpha, beta) from paired scores of the same (query, item) pairs.

    ce_scores, de_scores : (n,) float arrays (n >= 2), e.g. the entries of G for
    ~100 train queries and the DE inner products of the same pairs.
    """
    ce = as_float32_array(ce_scores, "ce_scores", ndim=(1,)).astype(np.float64)
    de = as_float32_array(de_scores, "de_scores", ndim=(1,)).astype(np.float64)
    if ce.shape != de.shape:
        raise ValueError(f"ce_scores and de_scores must be paired (same length), got {ce.shape} and {de.shape}")
    if ce.shape[0] < 2:
        raise ValueError(f"need at least 2 paired scores to estimate a normalisation, got {ce.shape[0]}")
    sd_ce, sd_de = ce.std(), de.std()
    if not sd_ce > 0:
        raise ValueError("ce_scores are all equal: their scale cannot be matched")
    if not sd_de > 0:
        raise ValueError("de_scores are all equal: there is no distribution to match")
    beta = sd_de / sd_ce
    alpha = ce.mean() - de.mean() / beta
    return ScoreNormalization(alpha, beta)


def normalization_from_score_matrix(G: Any, de_query_emb: ArrayLike, de_item_emb: ArrayLike, *, n_queries: int = 100,
                                    seed: int = 0) -> ScoreNormalization:
    """Estimate the normalisation on the entries of ``n_queries`` random rows of G
    (Appendix A.4 uses 100 train queries).

    G : ScoreMatrix (or scipy sparse) of raw CE scores, (n_train_queries, n_items).
    de_query_emb : (n_train_queries, d); de_item_emb : (n_items, d) DE embeddings.
    """
    from axn_fast.indexing.score_matrix import ScoreMatrix

    G = ScoreMatrix.from_any(G)
    Q = as_float32_array(de_query_emb, "de_query_emb", ndim=(2,))
    I = as_float32_array(de_item_emb, "de_item_emb", ndim=(2,), dim=Q.shape[1])
    if Q.shape[0] != G.shape[0] or I.shape[0] != G.shape[1]:
        raise ValueError(f"G has shape {G.shape} but the DE embeddings have {Q.shape[0]} queries and "
                         f"{I.shape[0]} items")
    n_queries = check_int(n_queries, "n_queries", minimum=1)
    present = np.unique(G.rows)
    if present.size > n_queries:
        present = np.sort(np.random.default_rng(seed).choice(present, size=n_queries, replace=False))
    mask = np.isin(G.rows, present)
    r, c = G.rows[mask], G.cols[mask]
    de = np.einsum("ij,ij->i", Q[r].astype(np.float64), I[c].astype(np.float64))
    return estimate_normalization(G.vals[mask], de)
