"""AXN: adaptive cross-encoder nearest-neighbour search (Algorithm 1 of the AXN paper)."""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast._core import IncrementalLstsq
from axn_fast._validation import as_float32_array, as_ids, check_float, check_seed
from axn_fast.encoders.boundary import check_timeout
from axn_fast.encoders.protocol import CrossEncoder
from axn_fast.errors import CrossEncoderError
from axn_fast.search.budget import check_budget, first_round, random_ids, round_sizes, unique_in_order
from axn_fast.search.ledger import ScoreLedger
from axn_fast.search.normalization import NormalizationLike, as_normalization
from axn_fast.search.protocol import VectorIndex
from axn_fast.search.results import SearchResult

__all__ = ["adaptive_search", "round_sizes"]


def adaptive_search(index: VectorIndex, q: Any, ce: CrossEncoder, budget: int, *, k: int = 10, rounds: int = 5,
                    init: Optional[ArrayLike] = None, u0: Optional[ArrayLike] = None, lam: float = 0.0,
                    seed: Optional[int] = None, normalization: NormalizationLike = None,
                    ce_timeout: Optional[float] = None) -> SearchResult:
    """Find the cross-encoder's top-k items for query ``q`` with exactly ``budget`` CE calls.

    index : any :class:`~axn_fast.search.protocol.VectorIndex` over item
        embeddings V (n_items, d): :class:`axn_fast.Index` (exact scan), a faiss
        index (:class:`~axn_fast.search.approximate.FaissIndex`), a shortlist
        (:class:`~axn_fast.search.shortlist.ShortlistIndex`), a sharded index.
    q : the query, passed to ``ce`` untouched (text, row number, anything).
    ce : ``ce(q, ids) -> scores`` (:class:`~axn_fast.encoders.protocol.CrossEncoder`);
        ids is a read-only int64 array, scores one finite float per id. Called once per round.
    budget : total number of (q, item) pairs the CE scores (B_CE); <= n_items.
    k : number of items returned (<= budget).
    rounds : number of rounds R (<= budget). Round 1 scores ``budget // rounds``
        items; the remainder of the division goes to the last rounds.
    init : ranked candidate ids (dual-encoder, BM25, ...), best first; the first
        ``budget // rounds`` distinct ones form round 1. Without it (or for what
        it lacks), round 1 takes the top items by ``V @ u0`` when ``u0`` is
        given, or uniformly random items (from ``seed``) otherwise.
    u0 : (d,) parametric query embedding (DE or MF_IND) used for round 1 and
        for Eq. 7: u = (1 - lam) * u_linreg + lam * u0.
    lam : weight lambda in [0, 1] of Eq. 7 (needs ``u0`` when > 0).
    seed : seed of the random first round (None or an int >= 0).
    normalization : a :class:`~axn_fast.search.normalization.ScoreNormalization`
        or (alpha, beta): u is fitted to beta (s - alpha) instead of the raw CE
        scores s (AXN paper, A.4); the reported scores stay raw.
    ce_timeout : seconds each CE call may take (for remote CEs); None (default)
        waits forever at no cost. A call that does not answer in time raises
        :class:`axn_fast.SearchInterrupted` with ``.partial``; the CE's call
        cannot be killed, it runs on in a background thread and its late result
        is discarded.

    After every round, u is refitted to all CE scores so far by minimum-norm
    least squares (Eq. 4, ``pinv(V_A^T V_A) V_A^T a``, solved incrementally in
    C++); the next round retrieves the best items by ``V @ u`` among those not
    yet scored (Eq. 5). Returns the top-k of everything scored by exact CE
    score (Eq. 6) as a :class:`SearchResult`; ``u`` is the final embedding.

    If ``ce`` raises, :class:`axn_fast.SearchInterrupted` is raised from it;
    if it returns unusable scores (or scores so large that the fit overflows),
    :class:`axn_fast.CrossEncoderError`; both carry ``.partial``, the result of
    all rounds completed before. ``KeyboardInterrupt`` is re-raised as it is,
    with ``.partial`` attached.
    """
    n, d = index.n_items, index.dim
    budget, k = check_budget(budget, k, n, rounds=rounds)
    lam = check_float(lam, "lam", minimum=0.0, maximum=1.0)
    u0_arr: Optional[NDArray[np.float32]] = None
    if u0 is not None:
        u0_arr = as_float32_array(u0, "u0", ndim=(1,), dim=d)
    elif lam > 0:
        raise ValueError("lam > 0 needs u0, the parametric query embedding that Eq. 7 mixes in")
    init_ids = None if init is None else as_ids(init, "init", n)
    seed = check_seed(seed)
    ce_timeout = check_timeout(ce_timeout, "ce_timeout")
    if not callable(ce):
        raise TypeError(f"ce must be callable as ce(q, ids) -> scores, got {type(ce).__name__}")
    norm = as_normalization(normalization)
    if norm is None:  # the deprecated Index(normalization=) still forwards here
        norm = as_normalization(getattr(index, "normalization", None))

    solver = IncrementalLstsq(d)
    ledger = ScoreLedger(q, ce, k, timeout=ce_timeout)
    rows = np.zeros((0, d), dtype=np.float32)  # V[A]: each row fetched once
    targets = np.zeros(0, dtype=np.float32)
    u: Optional[NDArray[np.float32]] = None

    def fill(chosen: NDArray[np.int64], need: int) -> NDArray[np.int64]:
        if u0_arr is not None:
            return index.search(u0_arr, need, exclude=chosen)[1]
        return random_ids(n, need, chosen, seed)

    for r, size in enumerate(round_sizes(budget, rounds)):
        t0 = time.perf_counter()
        if r == 0:
            new_ids = first_round(size, init_ids, fill)
        else:
            assert u is not None  # fitted after every round
            _, new_ids = index.search(u, size, exclude=ledger.all_ids)
            new_ids = new_ids[new_ids >= 0]
        scores = ledger.score(new_ids, seconds_search=time.perf_counter() - t0)

        t0 = time.perf_counter()
        new_rows = index.vectors_of(new_ids)
        new_targets = scores if norm is None else norm.targets(scores)
        rows = np.concatenate([rows, new_rows])
        targets = np.concatenate([targets, new_targets])
        solver.add(new_rows, new_targets)
        u_fit = solver.solve()
        if not np.isfinite(u_fit).all():
            raise ledger.fail(CrossEncoderError(
                "the query embedding fitted to the CE scores is not finite (scores too large for float32 "
                f"arithmetic? largest |score| so far {float(np.abs(ledger.all_scores).max()):.3g}); "
                "the scores obtained are in .partial"))
        u = u_fit if u0_arr is None else ((1.0 - lam) * u_fit + lam * u0_arr).astype(np.float32)
        ledger.u = u
        resid = rows.astype(np.float64) @ u_fit - targets
        info = ledger.rounds[-1]
        info.fit_rmse = float(np.sqrt(np.mean(resid ** 2)))
        info.seconds_solve = time.perf_counter() - t0

    return ledger.result()


_unique_in_order = unique_in_order  # kept for callers of the old private name
