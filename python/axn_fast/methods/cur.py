"""CUR-based k-NN search with a cross-encoder: ANNCUR (two variants) and ADACUR.

ANNCUR (Yadav et al., EMNLP 2022, §2.2-2.4): a fixed set of ``k_i`` anchor items; a
test query is embedded by its exact CE scores at the anchors, ``e_q`` (k_i,); items
are embedded offline as ``E = pinv(C) @ S_train`` (k_i, n_items) where ``S_train``
(n_train, n_items) holds exact CE scores of the train (anchor) queries and
``C = S_train[:, anchors]``; approximate scores are ``e_q @ E``; the top ``k_r``
are re-ranked by exact CE score. Cost: ``k_i + k_r`` CE calls.

ADACUR (Yadav et al., 2023; the AXN paper's strongest baseline): the same
approximation, but over R rounds, with the items scored so far as the anchor
columns, each round adding the top items not yet scored.

Both need *dense* train rows: every train query scored against every item.
"""
from __future__ import annotations

import time
from typing import Any, List, Optional

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast._validation import as_float32_array, as_ids, check_float, check_int
from axn_fast.encoders.protocol import CrossEncoder
from axn_fast.search.budget import check_budget, first_round, round_sizes
from axn_fast.search.ledger import ScoreLedger
from axn_fast.search.results import SearchResult
from axn_fast.search.topk import top_ids

VARIANTS = ("reference", "improved")


def _train_scores(train_scores: ArrayLike) -> NDArray[np.float32]:
    return as_float32_array(train_scores, "train_scores", ndim=(2,), allow_empty=False)


def pinv_float32(C: NDArray[Any]) -> NDArray[Any]:
    """Pseudo-inverse of a float32 matrix, cutting singular values below ``max(C.shape) * eps32``
    of the largest (float32 round-off), where numpy's default cutoff (1e-15) keeps round-off
    directions and blows them up when C is rank-deficient (more anchors than the rank)."""
    return np.linalg.pinv(C, rcond=max(C.shape) * float(np.finfo(np.float32).eps))


#: Relative singular-value cutoff of the improved ANNCUR's ``pinv(C)``. With k_i near the
#: number of train rows, C is (close to) square and its smallest singular values carry only
#: the noise of the scores; inverting them blows the noise up (recall on a rank-10 matrix with
#: noise 0.3, 60 train rows, m=100: 0.19 at k_i=60 against 0.71 at k_i=50 with a round-off
#: cutoff; 0.83 and 0.86 with this one). Exactly low-rank matrices are still recovered exactly.
IMPROVED_RCOND = 3e-2


def reference_anchor_grid(n_items: int) -> List[int]:
    """The k_i values, ascending, for which the authors' evaluation script (iesl/anncur,
    ``eval/run_retrieval_eval_wrt_exact_crossenc_w_fixed_train_test_splits.py``) draws anchors
    from one generator: the k_r values 1, 10, 50, ..., 1000 and ``int(k_r * f)`` for
    ``f = numpy.arange(0.1, 1.0, 0.1)``, the anchor counts 10, 50, ..., 2000 below ``n_items``,
    and ``n_items``. Values above ``n_items`` (which the script cannot draw) are left out; the
    0 of ``int(1 * 0.1)`` is kept, since the script draws it too (an empty draw)."""
    n_items = check_int(n_items, "n_items", minimum=1)
    k_r = (1, 10, 50, 100, 200, 500, 1000)
    fractions = np.arange(0.1, 1.0, 0.1)
    values = set(k_r) | {int(k * f) for k in k_r for f in fractions}
    values |= {v for v in (10, 50, 100, 200, 500, 1000, 2000) if v < n_items} | {n_items}
    return sorted(v for v in values if v <= n_items)


def reference_anchors(n_items: int, n_anchors: int, seed: Optional[int]) -> NDArray[np.int64]:
    """The anchors the authors' script uses for ``n_anchors`` items: one
    ``numpy.random.default_rng(seed)`` walks :func:`reference_anchor_grid` in ascending order,
    drawing ``sorted(rng.choice(n_items, k_i, replace=False))`` for every k_i up to ``n_anchors``.

    Raises ValueError when ``n_anchors`` is not in that grid.
    """
    grid = reference_anchor_grid(n_items)
    if n_anchors not in grid:
        raise ValueError(f"n_anchors must be one of the k_i values of the authors' script for the reference "
                         f"variant ({n_items} items: {grid}), got {n_anchors}")
    rng = np.random.default_rng(seed)
    for k_i in grid:
        drawn = sorted(rng.choice(n_items, k_i, replace=False))
        if k_i == n_anchors:
            return np.asarray(drawn, dtype=np.int64)
    raise AssertionError("unreachable: n_anchors is in the grid")  # pragma: no cover


class ANNCUR:
    """ANNCUR with ``n_anchors`` (k_i) anchor items drawn at random.

    Args:
        train_scores: (n_train, n_items) exact CE scores of the train queries against
            every item (the paper's R_anc; rows are the anchor queries).
        n_anchors: k_i, the number of anchor items (CE calls to embed a test query).
        variant: ``"reference"`` reproduces the authors' public code: the k_r retrieved
            items may include anchors (they are scored again and counted again), and the
            anchors' scores are not merged into the final ranking, so ``scored_ids`` of the
            result holds only the k_r re-ranked items while ``rounds[0]`` holds the anchors.
            ``"improved"`` excludes the anchors from retrieval and ranks anchors and
            retrieved items together, so the same budget buys k_i + k_r distinct items;
            it also cuts the singular values of C below ``rcond`` times the largest, so a
            rank-r matrix is recovered exactly for any k_i >= r (the reference cutoff,
            numpy's 1e-15, recovers it only when C has full column rank, e.g. k_i = r) and
            a noisy C does not collapse when k_i is close to n_train (square C).
        seed: in the improved variant, anchors are ``sorted(numpy.random.default_rng(seed).choice(
            n_items, k_i, replace=False))``; in the reference variant, the draw the authors'
            evaluation script makes for this k_i from its one generator per seed
            (:func:`reference_anchors`; k_i must be a value of :func:`reference_anchor_grid`).
        rcond: relative singular-value cutoff of ``pinv(C)`` for the improved variant (default
            :data:`IMPROVED_RCOND`); the reference variant keeps numpy's default and refuses it.

    Attributes: anchors (k_i,) int64; item_emb (k_i, n_items) float32, ``E = pinv(C) @ S_train``
    computed in float32.
    """

    def __init__(self, train_scores: ArrayLike, n_anchors: int, *, variant: str = "improved",
                 seed: Optional[int] = 0, rcond: Optional[float] = None) -> None:
        S = _train_scores(train_scores)
        n_items = S.shape[1]
        self.n_anchors = check_int(n_anchors, "n_anchors", minimum=1, maximum=n_items)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if rcond is not None and variant == "reference":
            raise ValueError("rcond is a setting of the improved variant; the reference variant "
                             "keeps numpy's default pinv cutoff, as in the authors' code")
        self.rcond: Optional[float] = None if variant == "reference" else (
            IMPROVED_RCOND if rcond is None else check_float(rcond, "rcond", minimum=0.0, maximum=1.0))
        self.variant = variant
        self.n_items = n_items
        if variant == "reference":
            self.anchors = reference_anchors(n_items, self.n_anchors, seed)
        else:
            rng = np.random.default_rng(seed)
            self.anchors = np.asarray(sorted(rng.choice(n_items, self.n_anchors, replace=False)), dtype=np.int64)
        C = S[:, self.anchors]
        # (k_i, n_train), float32 in, float32 out; the reference keeps numpy's default cutoff
        U = np.linalg.pinv(C) if variant == "reference" else np.linalg.pinv(C, rcond=self.rcond)
        self.item_emb = np.ascontiguousarray(U @ S, dtype=np.float32)

    def approx_scores(self, anchor_scores: ArrayLike) -> NDArray[np.float32]:
        """(n_items,) approximate CE scores ``e_q @ E`` from the (k_i,) exact anchor scores."""
        e_q = as_float32_array(anchor_scores, "anchor_scores", ndim=(1,), dim=self.n_anchors)
        return e_q @ self.item_emb

    def search(self, q: Any, ce: CrossEncoder, budget: int, *, k: int = 10) -> SearchResult:
        """Spend ``budget`` CE calls on query ``q``: k_i anchors, then k_r = budget - k_i re-ranked.

        ce(q, ids) -> (len(ids),) exact scores. Returns a SearchResult with n_ce_calls = budget.
        """
        budget, k = check_budget(budget, k, self.n_items)
        k_r = budget - self.n_anchors
        pool = self.n_items if self.variant == "reference" else self.n_items - self.n_anchors
        if k_r < 1:
            raise ValueError(f"budget must exceed n_anchors (k_i={self.n_anchors}) so that at least one "
                             f"item is retrieved, got budget={budget}")
        if k_r > pool:
            raise ValueError(f"budget - n_anchors (k_r={k_r}) exceeds the {pool} items that can be retrieved")
        if self.variant == "reference" and k > k_r:
            raise ValueError(f"k must be <= k_r = budget - n_anchors ({k_r}) in the reference variant, got {k}")
        acc = ScoreLedger(q, ce, k)
        e_q = acc.score(self.anchors)
        t0 = time.perf_counter()
        approx = self.approx_scores(e_q)
        exclude = None if self.variant == "reference" else self.anchors
        retrieved = top_ids(approx, k_r, exclude)
        t_search = time.perf_counter() - t0
        scores = acc.score(retrieved, seconds_search=t_search)
        if self.variant == "reference":
            return acc.result(ranked_ids=retrieved, ranked_scores=scores)
        return acc.result()


class ADACUR:
    """Adaptive multi-round CUR search (ADACUR).

    Args:
        train_scores: (n_train, n_items) dense exact CE scores of the train queries.

    In round r the items scored so far, A, are the anchor columns: with
    ``C = S_train[:, A]`` and the query's exact scores ``a`` at A, approximate scores are
    ``(a @ pinv(C)) @ S_train``; the top ``budget/rounds`` items not yet scored are added.
    """

    def __init__(self, train_scores: ArrayLike) -> None:
        self.train_scores = _train_scores(train_scores)
        self.n_items = self.train_scores.shape[1]

    def approx_scores(self, anchor_ids: ArrayLike, anchor_scores: ArrayLike) -> NDArray[np.float32]:
        """(n_items,) approximate scores with ``anchor_ids`` (m,) as the CUR columns."""
        C = self.train_scores[:, np.asarray(anchor_ids, dtype=np.int64)].astype(np.float64)
        # w = a @ pinv(C) is the minimum-norm least-squares solution of Cᵀ w = a: lstsq gets it
        # without forming pinv(C); float64 is both faster than LAPACK's float32 SVD here and safer
        rcond = max(C.shape) * float(np.finfo(np.float32).eps)
        w = np.linalg.lstsq(C.T, np.asarray(anchor_scores, dtype=np.float64), rcond=rcond)[0]
        return w.astype(np.float32) @ self.train_scores

    def search(self, q: Any, ce: CrossEncoder, budget: int, *, k: int = 10, rounds: int = 5,
               init: Optional[ArrayLike] = None, seed: Optional[int] = 0) -> SearchResult:
        """Adaptive search for query ``q`` with ``budget`` CE calls over ``rounds`` rounds.

        init: ranked candidate ids, best first (e.g. from a dual encoder or TF-IDF); the first
            ``budget/rounds`` distinct ones form round 1 (the same meaning as for AXN and TOUR).
            Without it, or for what it lacks, round 1 is drawn uniformly at random with ``seed``.
        """
        rounds = check_int(rounds, "rounds", minimum=1)
        budget, k = check_budget(budget, k, self.n_items, rounds=rounds)
        init_ids = None if init is None else as_ids(init, "init", self.n_items)
        sizes = round_sizes(budget, rounds)
        acc = ScoreLedger(q, ce, k)

        def fill(chosen: NDArray[np.int64], need: int) -> NDArray[np.int64]:
            rng = np.random.default_rng(seed)
            pool: Any = self.n_items if chosen.size == 0 else np.setdiff1d(np.arange(self.n_items), chosen)
            return rng.choice(pool, need, replace=False).astype(np.int64)

        acc.score(first_round(sizes[0], init_ids, fill))
        for n_r in sizes[1:]:
            ids, scores = acc.all_ids, acc.all_scores
            t0 = time.perf_counter()
            approx = self.approx_scores(ids, scores)
            t1 = time.perf_counter()
            new = top_ids(approx, n_r, ids)
            t2 = time.perf_counter()
            # the fit uses the items scored up to the previous round: record it there
            fit = approx[ids] - scores
            acc.rounds[-1].seconds_solve = t1 - t0
            acc.rounds[-1].fit_rmse = float(np.sqrt(np.mean(fit * fit)))
            acc.score(new, seconds_search=t2 - t1)
        return acc.result()
