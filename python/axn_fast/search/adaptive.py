"""AXN: adaptive cross-encoder nearest-neighbour search (Algorithm 1 of the AXN paper)."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from axn_fast import _core
from axn_fast.search.budget import check_budget, round_sizes
from axn_fast.search.ledger import ScoreLedger
from axn_fast._validation import as_float32_array, as_ids, check_float
from axn_fast.search.results import SearchResult

__all__ = ["adaptive_search", "round_sizes"]


def adaptive_search(index, q, ce: Callable, budget: int, *, k: int = 10, rounds: int = 5, init=None,
                    u0=None, lam: float = 0.0, seed=None) -> SearchResult:
    """Find the cross-encoder's top-k items for query ``q`` with exactly ``budget`` CE calls.

    index : :class:`axn_fast.Index` over item embeddings V (n_items, d).
    q : the query, passed to ``ce`` untouched (text, row number, anything).
    ce : ``ce(q, ids) -> scores``; ids is an int64 array, scores one finite
        float per id. Called once per round.
    budget : total number of (q, item) pairs the CE scores (B_CE); <= n_items.
    k : number of items returned (<= budget).
    rounds : number of rounds R (<= budget). Round 1 scores ``budget // rounds``
        items; the remainder of the division goes to the last rounds.
    init : ranked candidate ids (dual-encoder, BM25, ...) for round 1; without
        it, round 1 takes the top items by ``V @ u0`` when ``u0`` is given, or
        uniformly random items (from ``seed``) otherwise. When ``init`` has
        fewer distinct ids than round 1 needs, the rest is chosen that way too.
    u0 : (d,) parametric query embedding (DE or MF_IND) used for round 1 and
        for Eq. 7: u = (1 - lam) * u_linreg + lam * u0.
    lam : weight lambda in [0, 1] of Eq. 7 (needs ``u0`` when > 0).
    seed : seed of the random first round.

    After every round, u is refitted to all CE scores so far by minimum-norm
    least squares (Eq. 4, ``pinv(V_A^T V_A) V_A^T a``, solved incrementally in
    C++); the next round retrieves the best items by ``V @ u`` among those not
    yet scored (Eq. 5). Returns the top-k of everything scored by exact CE
    score (Eq. 6) as a :class:`SearchResult`; ``u`` is the final embedding.

    If ``ce`` raises, :class:`axn_fast.SearchInterrupted` is raised from it,
    and if it returns unusable scores, :class:`axn_fast.CrossEncoderError`;
    both carry ``.partial``, the result of all rounds completed before.
    """
    n, d = index.n_items, index.dim
    budget, k = check_budget(budget, k, n, rounds=rounds)
    lam = check_float(lam, "lam", minimum=0.0, maximum=1.0)
    if u0 is not None:
        u0 = as_float32_array(u0, "u0", ndim=(1,), dim=d)
    elif lam > 0:
        raise ValueError("lam > 0 needs u0, the parametric query embedding that Eq. 7 mixes in")
    if init is not None:
        init = _unique_in_order(as_ids(init, "init", n))
    if not callable(ce):
        raise TypeError(f"ce must be callable as ce(q, ids) -> scores, got {type(ce).__name__}")

    V = index.vectors
    norm = index.normalization
    solver = _core.IncrementalLstsq(d)
    scored = ScoreLedger(q, ce, k)

    for r, size in enumerate(round_sizes(budget, rounds)):
        t0 = time.perf_counter()
        if r == 0:
            new_ids = _first_round(index, size, init, u0, seed)
        else:
            _, new_ids = index.search(scored.u, size, exclude=scored.all_ids)
            new_ids = new_ids[new_ids >= 0]
        scores = scored.score(new_ids, seconds_search=time.perf_counter() - t0)

        t0 = time.perf_counter()
        solver.add(np.ascontiguousarray(V[new_ids]), _targets(scores, norm))
        u_fit = solver.solve()
        scored.u = u_fit if u0 is None else ((1.0 - lam) * u_fit + lam * u0).astype(np.float32)
        resid = V[scored.all_ids].astype(np.float64) @ u_fit - _targets(scored.all_scores, norm)
        info = scored.rounds[-1]
        info.fit_rmse = float(np.sqrt(np.mean(resid ** 2)))
        info.seconds_solve = time.perf_counter() - t0

    return scored.result()


def _targets(scores: np.ndarray, norm) -> np.ndarray:
    """Regression targets of Eq. 4: the CE scores, normalised as beta * (s - alpha) when asked."""
    if norm is None:
        return scores
    return np.ascontiguousarray(norm[1] * (scores.astype(np.float64) - norm[0]), dtype=np.float32)


def _first_round(index, size: int, init, u0, seed) -> np.ndarray:
    chosen = init[:size] if init is not None else np.zeros(0, dtype=np.int64)
    need = size - len(chosen)
    if need == 0:
        return chosen
    if u0 is not None:
        _, extra = index.search(u0, need, exclude=chosen)
    else:
        rng = np.random.default_rng(seed)
        mask = np.ones(index.n_items, dtype=bool)
        mask[chosen] = False
        pool = np.flatnonzero(mask) if index.n_items <= 4 * size + 1024 else None
        if pool is not None:
            extra = rng.choice(pool, size=need, replace=False)
        else:  # sample without materialising a permutation of all items
            extra = np.zeros(0, dtype=np.int64)
            while len(extra) < need:
                draw = rng.integers(0, index.n_items, size=2 * need + 16)
                draw = draw[mask[draw]]
                draw = _unique_in_order(draw)[: need - len(extra)]
                mask[draw] = False
                extra = np.concatenate([extra, draw])
    return np.concatenate([chosen, extra.astype(np.int64)])


def _unique_in_order(ids: np.ndarray) -> np.ndarray:
    _, first = np.unique(ids, return_index=True)
    return ids[np.sort(first)]
