"""AXN for many queries at once: the rounds of all queries in lockstep.

:func:`adaptive_search_batch` returns, for every query, exactly what
:func:`~axn_fast.search.adaptive.adaptive_search` returns for it alone (same
ids, scores, fitted embedding and rounds), while doing per round

* **one batched scan** for all queries, each with its own exclusion set
  (:meth:`axn_fast.Index.search` with a (n_queries, d) ``U`` uses the
  register-tiled kernel, whose results equal the single-query scan's bit for
  bit);
* **one cross-encoder call** for all the queries' pairs
  (:func:`~axn_fast.encoders.boundary.call_ce_batch`: one ``ce.score_batch``
  when the CE has it, so a GPU CE sees one large batch; a plain callable is
  called once per query);
* the per-query least-squares updates (each in C++).

It reuses the single-query pieces: :func:`~axn_fast.search.budget.check_budget`,
:func:`~axn_fast.search.budget.round_sizes`,
:func:`~axn_fast.search.budget.first_round` and the
:class:`~axn_fast.search.ledger.ScoreLedger` of each query.
"""
from __future__ import annotations

import numbers
import time
from typing import Any, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast._core import IncrementalLstsq
from axn_fast._validation import as_float32_array, as_ids, check_float, check_seed
from axn_fast.encoders.boundary import call_ce_batch, check_timeout
from axn_fast.encoders.protocol import CrossEncoder
from axn_fast.errors import CrossEncoderError, PaidWorkInterrupted
from axn_fast.search.budget import check_budget, first_round, random_ids, round_sizes
from axn_fast.search.ledger import ScoreLedger
from axn_fast.search.normalization import NormalizationLike, ScoreNormalization, as_normalization
from axn_fast.search.protocol import VectorIndex
from axn_fast.search.results import SearchResult

__all__ = ["adaptive_search_batch"]

T = TypeVar("T")
PerQuery = Union[T, Sequence[T]]
"""One value for every query, or a sequence with one value per query."""

_PARTIAL_NOTE = "; the results of every query so far are in .partial (a list, one SearchResult per query)"


class _Feed:
    """The CE a query's ledger calls: hands back scores already obtained in the batch call, or
    calls the real CE (plain callables are scored per query, through the ledger as usual)."""

    def __init__(self, ce: CrossEncoder) -> None:
        self.ce = ce
        self.ready: Optional[NDArray[np.float32]] = None

    def __call__(self, q: Any, ids: NDArray[np.int64]) -> ArrayLike:
        if self.ready is None:
            return self.ce(q, ids)
        out, self.ready = self.ready, None
        return out


class _Query:
    """The state of one query's search: its settings, ledger and least-squares fit."""

    def __init__(self, q: Any, ce: CrossEncoder, *, n: int, d: int, budget: int, k: int, rounds: int,
                 init: Optional[NDArray[np.int64]], u0: Optional[NDArray[np.float32]], lam: float,
                 seed: Optional[int], timeout: Optional[float]) -> None:
        self.sizes = round_sizes(budget, rounds)
        self.init, self.u0, self.lam, self.seed = init, u0, lam, seed
        self.feed = _Feed(ce)
        self.ledger = ScoreLedger(q, self.feed, k, timeout=timeout)
        self.solver = IncrementalLstsq(d)
        self.rows = np.zeros((0, d), dtype=np.float32)
        self.targets = np.zeros(0, dtype=np.float32)
        self.u: Optional[NDArray[np.float32]] = None
        self.n = n

    def fit(self, index: VectorIndex, new_ids: NDArray[np.int64], scores: NDArray[np.float32],
            norm: Optional[ScoreNormalization]) -> None:
        """Eq. 4 (and Eq. 7 with u0) on everything scored so far: the single-query update, step for step."""
        t0 = time.perf_counter()
        ledger = self.ledger
        new_rows = index.vectors_of(new_ids)
        new_targets = scores if norm is None else norm.targets(scores)
        self.rows = np.concatenate([self.rows, new_rows])
        self.targets = np.concatenate([self.targets, new_targets])
        self.solver.add(new_rows, new_targets)
        u_fit = self.solver.solve()
        if not np.isfinite(u_fit).all():
            raise CrossEncoderError(
                "the query embedding fitted to the CE scores is not finite (scores too large for float32 "
                f"arithmetic? largest |score| so far {float(np.abs(ledger.all_scores).max()):.3g})")
        self.u = u_fit if self.u0 is None else ((1.0 - self.lam) * u_fit + self.lam * self.u0).astype(np.float32)
        ledger.u = self.u
        resid = self.rows.astype(np.float64) @ u_fit - self.targets
        info = ledger.rounds[-1]
        info.fit_rmse = float(np.sqrt(np.mean(resid ** 2)))
        info.seconds_solve = time.perf_counter() - t0


def _per_query(value: Any, name: str, nq: int, *, scalar: type) -> List[Any]:
    """``value`` repeated ``nq`` times when it is one ``scalar`` (or None), else checked to have ``nq`` entries."""
    if value is None or isinstance(value, scalar) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return [value] * nq
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be one value or a sequence with one per query, got {value!r}")
    try:
        out = list(value)
    except TypeError:
        return [value] * nq  # e.g. a float for an int argument: check_* names the problem
    if len(out) != nq:
        raise ValueError(f"{name} has {len(out)} entries but there are {nq} queries; give one value for all "
                         "or one per query")
    return out


def _validate(index: VectorIndex, queries: Sequence[Any], ce: CrossEncoder, budget: PerQuery[int],
              k: PerQuery[int], rounds: PerQuery[int], init: Any, u0: Any, lam: PerQuery[float],
              seed: PerQuery[Optional[int]], timeout: Optional[float]) -> List[_Query]:
    n, d = index.n_items, index.dim
    nq = len(queries)
    budgets = _per_query(budget, "budget", nq, scalar=numbers.Integral)
    ks = _per_query(k, "k", nq, scalar=numbers.Integral)
    rounds_ = _per_query(rounds, "rounds", nq, scalar=numbers.Integral)
    lams = _per_query(lam, "lam", nq, scalar=numbers.Real)
    seeds = _per_query(seed, "seed", nq, scalar=numbers.Integral)
    inits: List[Any] = [None] * nq if init is None else _per_query(init, "init", nq, scalar=type(None))
    if u0 is None:
        u0s: List[Any] = [None] * nq
    elif isinstance(u0, np.ndarray) and u0.ndim == 2:
        if u0.shape[0] != nq:
            raise ValueError(f"u0 has {u0.shape[0]} rows but there are {nq} queries")
        u0s = list(u0)
    else:
        u0s = _per_query(u0, "u0", nq, scalar=type(None))
    out = []
    for i, q in enumerate(queries):
        try:
            b, kk = check_budget(budgets[i], ks[i], n, rounds=rounds_[i])
            lam_i = check_float(lams[i], "lam", minimum=0.0, maximum=1.0)
            u0_i = None if u0s[i] is None else as_float32_array(u0s[i], "u0", ndim=(1,), dim=d)
            if u0_i is None and lam_i > 0:
                raise ValueError("lam > 0 needs u0, the parametric query embedding that Eq. 7 mixes in")
            init_i = None if inits[i] is None else as_ids(inits[i], "init", n)
            seed_i = check_seed(seeds[i])
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"query {i}: {exc}") from None
        out.append(_Query(q, ce, n=n, d=d, budget=b, k=kk, rounds=int(rounds_[i]), init=init_i, u0=u0_i,
                          lam=lam_i, seed=seed_i, timeout=timeout))
    return out


def _first_rounds(index: VectorIndex, states: List[_Query]) -> List[NDArray[np.int64]]:
    """Round 1 of every query by :func:`first_round`; the top-ups by u0 in one batched scan."""
    asks: List[Optional[Tuple[NDArray[np.int64], int]]] = [None] * len(states)

    def ask(i: int) -> Any:
        def fill(chosen: NDArray[np.int64], need: int) -> NDArray[np.int64]:
            asks[i] = (chosen, need)
            return np.zeros(need, dtype=np.int64)
        return fill

    for i, s in enumerate(states):
        first_round(s.sizes[0], s.init, ask(i))
    fills: List[Optional[NDArray[np.int64]]] = [None] * len(states)
    by_u0 = [i for i, a in enumerate(asks) if a is not None and states[i].u0 is not None]
    if by_u0:
        need = max(asks[i][1] for i in by_u0)  # type: ignore[index]
        U = np.stack([states[i].u0 for i in by_u0])  # type: ignore[misc]
        _, ids = index.search(U, need, exclude=[asks[i][0] for i in by_u0])  # type: ignore[index]
        for j, i in enumerate(by_u0):
            fills[i] = ids[j, :asks[i][1]]  # type: ignore[index]
    for i, a in enumerate(asks):
        if a is not None and fills[i] is None:
            fills[i] = random_ids(states[i].n, a[1], a[0], states[i].seed)
    return [first_round(s.sizes[0], s.init, lambda chosen, need, f=fills[i]: f)  # type: ignore[misc]
            for i, s in enumerate(states)]


def _fail(exc: BaseException, states: List[_Query], note: str = _PARTIAL_NOTE) -> BaseException:
    """``exc`` with ``.partial`` = the list of every query's result so far."""
    exc.partial = [s.ledger.result() for s in states]  # type: ignore[attr-defined]
    if isinstance(exc, PaidWorkInterrupted):
        msg = str(exc)
        for old in ("; the scores obtained before this call are in .partial", _PARTIAL_NOTE):
            msg = msg[:-len(old)] if msg.endswith(old) else msg
        exc.args = (msg + note,)
    return exc


def adaptive_search_batch(index: VectorIndex, queries: Sequence[Any], ce: CrossEncoder, budget: PerQuery[int], *,
                          k: PerQuery[int] = 10, rounds: PerQuery[int] = 5,
                          init: Optional[Sequence[Optional[ArrayLike]]] = None,
                          u0: Optional[Union[ArrayLike, Sequence[Optional[ArrayLike]]]] = None,
                          lam: PerQuery[float] = 0.0, seed: PerQuery[Optional[int]] = None,
                          normalization: NormalizationLike = None,
                          ce_timeout: Optional[float] = None) -> List[SearchResult]:
    """AXN for ``queries``, all in lockstep; ``out[i]`` equals ``adaptive_search(index, queries[i], ce, ...)``.

    index : any :class:`~axn_fast.search.protocol.VectorIndex` (n_items, d).
    queries : (n_queries,) sequence of queries, each handed to ``ce`` untouched.
    ce : a cross-encoder. When it has ``score_batch(queries, ids_per_query)``
        (:class:`~axn_fast.encoders.protocol.BatchCrossEncoder`) it is called
        once per round for all the queries' pairs; otherwise once per query and round.
    budget, k, rounds : CE calls, results and rounds, one int for every query or
        one per query (see :func:`~axn_fast.search.adaptive.adaptive_search`).
        Queries with fewer rounds simply finish earlier.
    init : None, or one entry per query: ranked candidate ids (best first) or None.
    u0 : None, a (n_queries, d) array, or one (d,) embedding (or None) per query.
    lam, seed : one value for every query or one per query.
    normalization : as in ``adaptive_search`` (one for the index).
    ce_timeout : seconds each CE invocation may take (one ``score_batch`` call,
        or one per-query call), None for no limit; as in ``adaptive_search``.

    Returns one :class:`SearchResult` per query, in order. Per round, the time
    of the batched scan is split evenly among the queries in it and the time of
    a batched CE call in proportion to each query's pairs, so summing
    ``seconds_ce`` over the results gives the CE's wall time.

    Errors: bad arguments raise TypeError/ValueError naming the query and the
    argument, before any CE call. If the CE raises (:class:`~axn_fast.SearchInterrupted`)
    or returns unusable scores, or a query's fit overflows
    (:class:`~axn_fast.CrossEncoderError`), the exception's ``.partial`` is a
    list with every query's result so far (what each query had paid for); a
    ``KeyboardInterrupt`` gets the same list and is re-raised as it is.
    """
    if isinstance(queries, (str, bytes)):
        raise TypeError("queries must be a sequence of queries (e.g. a list of texts), got a single "
                        f"{type(queries).__name__}; for one query use adaptive_search")
    queries = list(queries)
    if not callable(ce):
        raise TypeError(f"ce must be callable as ce(q, ids) -> scores, got {type(ce).__name__}")
    norm = as_normalization(normalization)
    if norm is None:  # the deprecated Index(normalization=), as adaptive_search does
        norm = as_normalization(getattr(index, "normalization", None))
    ce_timeout = check_timeout(ce_timeout, "ce_timeout")
    batched = callable(getattr(ce, "score_batch", None))
    # batched: the timeout guards the one score_batch call; the ledgers then only read its scores
    states = _validate(index, queries, ce, budget, k, rounds, init, u0, lam, seed,
                       None if batched else ce_timeout)
    n_rounds = max((len(s.sizes) for s in states), default=0)

    for r in range(n_rounds):
        active = [s for s in states if r < len(s.sizes)]
        t0 = time.perf_counter()
        if r == 0:
            new_ids = _first_rounds(index, active)
        else:
            U = np.stack([s.u for s in active])  # type: ignore[misc]  # fitted after every round
            _, ids = index.search(U, max(s.sizes[r] for s in active), exclude=[s.ledger.all_ids for s in active])
            new_ids = [row[:s.sizes[r]] for row, s in zip(ids, active)]
            new_ids = [np.ascontiguousarray(x[x >= 0]) for x in new_ids]
        seconds_search = (time.perf_counter() - t0) / len(active)

        try:
            if batched:
                t0 = time.perf_counter()
                scored = call_ce_batch(ce, [s.ledger.q for s in active], new_ids, timeout=ce_timeout)
                seconds_ce = time.perf_counter() - t0
                total = max(sum(len(x) for x in new_ids), 1)
                for s, ids_i, sc in zip(active, new_ids, scored):
                    s.feed.ready = sc
                    s.ledger.score(ids_i, seconds_search=seconds_search)
                    s.ledger.rounds[-1].seconds_ce = seconds_ce * len(ids_i) / total
                scores = scored
            else:
                scores = [s.ledger.score(ids_i, seconds_search=seconds_search) for s, ids_i in zip(active, new_ids)]
        except (PaidWorkInterrupted, KeyboardInterrupt, SystemExit) as exc:
            raise _fail(exc, states)

        for i, (s, ids_i, sc) in enumerate(zip(active, new_ids, scores)):
            try:
                s.fit(index, ids_i, sc, norm)
            except CrossEncoderError as exc:
                exc.args = (f"query {states.index(s)}: {exc}",)
                raise _fail(exc, states) from None

    return [s.ledger.result() for s in states]
