"""Synthetic CE score matrices: low rank plus noise, with weak dual-encoder embeddings.

Used by the tests and by ``axn-fast eval --synthetic`` when no real score
matrix is at hand. A cross-encoder's query-item score matrix is close to low
rank (ANNCUR §2.6); a dual encoder sees a noisy version of the same factors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from axn_fast._validation import check_float, check_int


@dataclass
class LowRankScores:
    """scores: (n_queries, n_items) float32 "exact CE" scores.
    query_emb: (n_queries, rank) float32, item_emb: (n_items, rank) float32: weak DE embeddings
    (the true factors plus noise), so that ``query_emb @ item_emb.T`` correlates with ``scores``.
    """

    scores: np.ndarray
    query_emb: np.ndarray
    item_emb: np.ndarray


def low_rank_scores(n_queries: int, n_items: int, rank: int, noise: float, seed: int = 0, *,
                    de_noise: float = 1.0, item_de_noise: Optional[float] = None) -> LowRankScores:
    """Draw ``S = Q Iᵀ / √rank + noise · N`` with standard normal Q, I, N.

    The signal part has unit variance per entry, so ``noise`` is the noise-to-signal ratio of
    the standard deviations. The DE embeddings are ``Q + de_noise·N_q`` and ``I + item_de_noise·N_i``
    (``item_de_noise`` defaults to ``de_noise``; scaled by ``rank**-0.25`` each so their dot products
    are on the scale of ``S``). The random draws do not depend on the noise levels.
    """
    n_queries = check_int(n_queries, "n_queries", minimum=1)
    n_items = check_int(n_items, "n_items", minimum=1)
    rank = check_int(rank, "rank", minimum=1)
    noise = check_float(noise, "noise", minimum=0.0)
    de_noise = check_float(de_noise, "de_noise", minimum=0.0)
    item_de_noise = de_noise if item_de_noise is None else check_float(item_de_noise, "item_de_noise", minimum=0.0)
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n_queries, rank))
    it = rng.standard_normal((n_items, rank))
    scores = q @ it.T / np.sqrt(rank) + noise * rng.standard_normal((n_queries, n_items))
    scale = rank ** -0.25
    q_de = (q + de_noise * rng.standard_normal(q.shape)) * scale
    i_de = (it + item_de_noise * rng.standard_normal(it.shape)) * scale
    return LowRankScores(scores.astype(np.float32), q_de.astype(np.float32), i_de.astype(np.float32))
