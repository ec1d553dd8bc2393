"""Search methods behind one protocol, so that :func:`axn_fast.evaluate` treats them alike.

A method has a ``name``, a ``grid(budget)`` of parameter settings to choose from on a
dev split (one setting: nothing to tune), and
``search(q, ce, budget, *, k, **params) -> SearchResult``, where ``q`` is a query row id
(the row of the score matrix, and the row of any per-query array the method holds)
and ``ce(q, ids)`` returns exact CE scores. ``SearchResult.scored_ids`` are the m items
whose recall is measured, and ``n_ce_calls`` is the budget spent.

Wrappers: :class:`RetrieveRerank` (RNR from any candidate lists: DE, TF-IDF, BM25),
:class:`AXNMethod` (``Index.adaptive_search``), :class:`ANNCURMethod`,
:class:`ADACURMethod`, :class:`TOURMethod`; and :func:`exact_search`, brute force.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast._validation import as_float32_array, check_float, check_int
from axn_fast.encoders.protocol import CrossEncoder
from axn_fast.methods.cur import ADACUR, ANNCUR, VARIANTS, reference_anchor_grid
from axn_fast.methods.rerank import retrieve_and_rerank
from axn_fast.methods.tour import TOUR
from axn_fast.search.adaptive import adaptive_search
from axn_fast.search.index import Index
from axn_fast.search.ledger import ScoreLedger
from axn_fast.search.normalization import NormalizationLike, as_normalization
from axn_fast.search.protocol import VectorIndex
from axn_fast.search.results import SearchResult


@runtime_checkable
class SearchMethod(Protocol):
    """What the evaluator needs from a method (see the module docstring)."""

    name: str

    def grid(self, budget: int) -> List[Dict[str, Any]]: ...

    def search(self, q: Any, ce: CrossEncoder, budget: int, *, k: int, **params: Any) -> SearchResult: ...


def exact_search(q: Any, ce: CrossEncoder, n_items: int, *, k: int = 10, batch_size: int = 1024) -> SearchResult:
    """Brute force: score every item (in batches of ``batch_size``, one CE call each).

    Returns the exact top-k; ``n_ce_calls == n_items``. This is the ground truth of
    Top-k-Recall and the EXACT row of the evaluation.
    """
    n_items = check_int(n_items, "n_items", minimum=1)
    k = check_int(k, "k", minimum=1, maximum=n_items)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    acc = ScoreLedger(q, ce, k)
    for start in range(0, n_items, batch_size):
        acc.score(np.arange(start, min(start + batch_size, n_items), dtype=np.int64))
    return acc.result()


def _per_query(x: ArrayLike, name: str, n_rows: Optional[int] = None, *, ids: bool = False) -> np.ndarray:
    if ids:
        arr = np.asarray(x)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be a 2-D integer array (one ranked id list per query row), "
                             f"got shape {arr.shape} dtype {arr.dtype}")
        return np.ascontiguousarray(arr, dtype=np.int64)
    return as_float32_array(x, name, ndim=(2,), allow_empty=False)


class Method:
    """Base class of the evaluator's methods (see the module docstring)."""

    name: str = "method"

    def grid(self, budget: int) -> List[Dict[str, Any]]:
        """Parameter settings to choose from on dev queries at this budget."""
        return [{}]

    def search(self, q: Any, ce: CrossEncoder, budget: int, *, k: int,
               **params: Any) -> SearchResult:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class RetrieveRerank(Method):
    """RNR_X: re-rank the first ``budget`` of each query's candidate list by exact CE score.

    ranked: (n_query_rows, max_budget) int64 candidate ids, best first (e.g. from
        ``Index.search``, :class:`~axn_fast.methods.lexical.TfidfRetriever.retrieve`, BM25).
    """

    def __init__(self, name: str, ranked: ArrayLike) -> None:
        self.name = name
        self.ranked = _per_query(ranked, "ranked", ids=True)

    @classmethod
    def from_embeddings(cls, name: str, item_emb: ArrayLike, query_emb: ArrayLike,
                        max_budget: int) -> "RetrieveRerank":
        """RNR from any embedding matrices: candidates are the top ``max_budget`` items by
        ``query_emb @ item_emb.T`` ((n_query_rows, d) and (n_items, d)), found with :class:`axn_fast.Index`."""
        _, ranked = Index(item_emb).search(as_float32_array(query_emb, "query_emb", ndim=(2,)),
                                           check_int(max_budget, "max_budget", minimum=1))
        return cls(name, ranked)

    def search(self, q: Any, ce: CrossEncoder, budget: int, *, k: int, **params: Any) -> SearchResult:
        if budget > self.ranked.shape[1]:
            raise ValueError(f"{self.name}: budget {budget} exceeds the {self.ranked.shape[1]} candidates per query")
        return retrieve_and_rerank(self.ranked[q], q, ce, budget, k=k)


class AXNMethod(Method):
    """AXN (:func:`~axn_fast.search.adaptive.adaptive_search`) with a choice of λ tuned on dev queries.

    index: any :class:`~axn_fast.search.protocol.VectorIndex` over the item embeddings.
    query_emb: (n_query_rows, d) parametric query embeddings (u0; e.g. the DE's), or None.
    init: (n_query_rows, n_candidates) ranked candidate ids per query row (e.g. the DE's top
        items), whose first distinct ones form round 1 (see ``adaptive_search``), or None.
    lams: the λ values of Eq. 7 to choose from (a single value: nothing tuned).
    normalization: CE score normalisation of AXN's regression targets, or None.
    """

    def __init__(self, index: VectorIndex, *, query_emb: Optional[ArrayLike] = None,
                 init: Optional[ArrayLike] = None, rounds: int = 5,
                 lams: Sequence[float] = (0.0,), name: Optional[str] = None, seed: Optional[int] = 0,
                 normalization: NormalizationLike = None) -> None:
        self.index = index
        self.normalization = as_normalization(normalization)
        self.query_emb = None if query_emb is None else _per_query(query_emb, "query_emb")
        self.init = None if init is None else _per_query(init, "init", ids=True)
        self.rounds = check_int(rounds, "rounds", minimum=1)
        self.lams = [check_float(l, "lams", minimum=0.0, maximum=1.0) for l in lams]
        if not self.lams:
            raise ValueError("lams must hold at least one λ value")
        if any(l > 0 for l in self.lams) and self.query_emb is None:
            raise ValueError("λ > 0 mixes in the parametric query embedding: pass query_emb")
        self.seed = seed
        self.name = name or (f"AXN (λ={self.lams[0]:g})" if len(self.lams) == 1 else "AXN (dev λ)")

    def grid(self, budget: int) -> List[Dict[str, Any]]:
        return [{"lam": l} for l in self.lams]

    def search(self, q: Any, ce: CrossEncoder, budget: int, *, k: int, lam: Optional[float] = None,
               **params: Any) -> SearchResult:
        lam = self.lams[0] if lam is None else lam
        return adaptive_search(
            self.index, q, ce, budget, k=k, rounds=self.rounds,
            init=None if self.init is None else self.init[q],
            u0=None if self.query_emb is None else self.query_emb[q],
            lam=lam, seed=self.seed, normalization=self.normalization)


class ANNCURMethod(Method):
    """ANNCUR with the k_i / k_r split of each budget chosen on dev queries.

    train_scores: (n_train, n_items) dense exact CE scores of the train queries.
    variant: "reference" or "improved" (see :class:`axn_fast.methods.cur.ANNCUR`).
    fractions: candidate shares of the budget given to anchors (k_i = round(f * budget));
        or n_anchors: fixed k_i values to choose from (those < budget are used). The reference
        variant keeps only the k_i of the authors' grid (:func:`~axn_fast.methods.cur.reference_anchor_grid`).
    """

    def __init__(self, train_scores: ArrayLike, *, variant: str = "improved",
                 fractions: Sequence[float] = (0.2, 0.4, 0.5, 0.6, 0.8),
                 n_anchors: Optional[Sequence[int]] = None, seed: Optional[int] = 0,
                 name: Optional[str] = None) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.train_scores = as_float32_array(train_scores, "train_scores", ndim=(2,), allow_empty=False)
        self.variant = variant
        self.fractions = [check_float(f, "fractions", minimum=0.0, maximum=1.0) for f in fractions]
        self.n_anchors = None if n_anchors is None else [check_int(a, "n_anchors", minimum=1) for a in n_anchors]
        self.seed = seed
        self.name = name or f"ANNCUR ({variant})"
        self._cache: Dict[int, ANNCUR] = {}

    def grid(self, budget: int) -> List[Dict[str, Any]]:
        if self.n_anchors is not None:
            cands = [a for a in self.n_anchors if a < budget]
        else:
            cands = [min(max(1, int(round(f * budget))), budget - 1) for f in self.fractions]
        cands = sorted(set(c for c in cands if 1 <= c <= self.train_scores.shape[1]))
        if self.variant == "reference":  # the k_i the authors' script draws anchors for
            allowed = set(reference_anchor_grid(self.train_scores.shape[1]))
            cands = [c for c in cands if c in allowed]
        if not cands:
            raise ValueError(f"{self.name}: no k_i / k_r split fits budget {budget}")
        return [{"n_anchors": c} for c in cands]

    def cur(self, n_anchors: int) -> ANNCUR:
        """The ANNCUR with ``n_anchors`` anchors (built once, then cached)."""
        if n_anchors not in self._cache:
            self._cache[n_anchors] = ANNCUR(self.train_scores, n_anchors, variant=self.variant, seed=self.seed)
        return self._cache[n_anchors]

    def search(self, q: Any, ce: CrossEncoder, budget: int, *, k: int, n_anchors: Optional[int] = None,
               **params: Any) -> SearchResult:
        if n_anchors is None:
            n_anchors = self.grid(budget)[0]["n_anchors"]
        if self.variant == "reference":
            k = min(k, budget - n_anchors)  # only the k_r retrieved items are ranked
        return self.cur(n_anchors).search(q, ce, budget, k=k)


class ADACURMethod(Method):
    """ADACUR; init: optional (n_query_rows, n_candidates) ranked candidate ids per query row for round 1."""

    def __init__(self, train_scores: ArrayLike, *, init: Optional[ArrayLike] = None, rounds: int = 5,
                 seed: Optional[int] = 0, name: Optional[str] = None) -> None:
        self.adacur = ADACUR(train_scores)
        self.init = None if init is None else _per_query(init, "init", ids=True)
        self.rounds = check_int(rounds, "rounds", minimum=1)
        self.seed = seed
        self.name = name or "ADACUR"

    def search(self, q: Any, ce: CrossEncoder, budget: int, *, k: int, **params: Any) -> SearchResult:
        return self.adacur.search(q, ce, budget, k=k, rounds=self.rounds,
                                  init=None if self.init is None else self.init[q], seed=self.seed)


class TOURMethod(Method):
    """TOUR-CE / TOUR-MSE from each query's embedding ``query_emb[q]``; ``item_emb`` an
    (n_items, d) array or any :class:`~axn_fast.search.protocol.VectorIndex`; ``init`` as for AXN.

    lr: the learning rate when nothing is tuned (default: the paper's, ``DEFAULT_LR``);
    lrs: learning rates to choose from on dev queries (e.g. :data:`axn_fast.methods.tour.LR_GRID`
    ``[loss]``, as the TOUR paper did per dataset); None or one value: nothing tuned.
    """

    def __init__(self, item_emb: ArrayLike | VectorIndex, query_emb: ArrayLike, *, loss: str = "kl",
                 lr: Optional[float] = None, rounds: int = 5, init: Optional[ArrayLike] = None,
                 normalization: NormalizationLike = None, name: Optional[str] = None,
                 lrs: Optional[Sequence[float]] = None) -> None:
        self.tour = TOUR(item_emb, loss=loss, lr=lr, normalization=normalization)
        self.query_emb = as_float32_array(query_emb, "query_emb", ndim=(2,), dim=self.tour.dim)
        self.init = None if init is None else _per_query(init, "init", ids=True)
        self.rounds = check_int(rounds, "rounds", minimum=1)
        self.lrs = None if lrs is None else [check_float(x, "lrs", minimum=0.0) for x in lrs]
        if self.lrs is not None and not self.lrs:
            raise ValueError("lrs must hold at least one learning rate (or be None)")
        self.name = name or ("TOUR-CE" if loss == "kl" else "TOUR-MSE")

    def grid(self, budget: int) -> List[Dict[str, Any]]:
        if self.lrs is None or len(self.lrs) == 1:
            return [{}]
        return [{"lr": x} for x in self.lrs]

    def search(self, q: Any, ce: CrossEncoder, budget: int, *, k: int, lr: Optional[float] = None,
               **params: Any) -> SearchResult:
        if lr is None and self.lrs is not None:
            lr = self.lrs[0]
        return self.tour.search(q, ce, budget, u0=self.query_emb[q], k=k, rounds=self.rounds,
                                init=None if self.init is None else self.init[q], lr=lr)
