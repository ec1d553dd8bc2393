"""The matrix G of exact CE scores (AXN paper, §2.1 and Appendix B.4), sparse or dense.

``G`` has one row per query and one column per item; only the chosen
(query, item) pairs are observed. :func:`build_score_matrix` chooses the pairs
(``strategy``; ``"all"`` scores every item for every query, the dense matrix
that evaluations compare against), scores them with the cross-encoder in
batches and returns a :class:`ScoreMatrix` (:meth:`ScoreMatrix.to_dense` gives
the (n_queries, n_items) array).

Why an own COO container rather than ``scipy.sparse``: a CE score of exactly
0.0 is an observation, not a missing entry, and scipy treats stored zeros as
droppable (``eliminate_zeros``, arithmetic, format conversions). ``ScoreMatrix``
keeps every observed pair and needs nothing beyond numpy;
:meth:`ScoreMatrix.to_scipy` converts when scipy is installed, and
:func:`axn_fast.indexing.factorize` accepts either.

Checkpoints: with ``checkpoint_dir`` the scores go to the package's one
resumable format (:mod:`axn_fast.io.checkpoint`), keyed by pair: every CE batch
is journalled (checksummed, fsync'd) before the next one starts, and a re-run
with the same job resumes whatever batch size it uses, re-paying at most the
batch that was in flight when the job died (plus, without ``ce_id``, the few
fingerprint pairs that check it is the same cross-encoder). A different job
(strategy, k_d, seed, queries, DE embeddings, hence pairs) or a different
cross-encoder is refused, and a second job on the same directory fails at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from axn_fast._progress import progress
from axn_fast._validation import as_float32_array, check_int
from axn_fast.encoders.boundary import check_scores, readonly_ids
from axn_fast.errors import CrossEncoderError, ScoreMatrixInterrupted
from axn_fast.io.checkpoint import Checkpoint, digest_arrays, digest_texts
from axn_fast.search.index import Index

STRATEGIES = ("de-topk", "random", "per-item", "all")
#: how many pairs of the first scored query identify the cross-encoder of a checkpoint without ce_id
FINGERPRINT_PAIRS = 4


@dataclass(frozen=True)
class ScoreMatrix:
    """Observed entries of G in coordinate form.

    rows : (nnz,) int64 query row numbers in [0, shape[0]).
    cols : (nnz,) int64 item ids in [0, shape[1]).
    vals : (nnz,) float32 exact CE scores (raw, or normalised by
        :meth:`ScoreNormalization.apply <axn_fast.ScoreNormalization.apply>`).
    shape : (n_queries, n_items).
    """

    rows: np.ndarray
    cols: np.ndarray
    vals: np.ndarray
    shape: Tuple[int, int]
    info: Dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("rows", "cols"):
            arr = np.asarray(getattr(self, name))
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                raise TypeError(f"{name} must hold integer ids, got dtype {arr.dtype}")
        rows = np.ascontiguousarray(self.rows, dtype=np.int64)
        cols = np.ascontiguousarray(self.cols, dtype=np.int64)
        vals = as_float32_array(self.vals, "vals", ndim=(1,))
        if not (rows.ndim == cols.ndim == 1 and rows.shape == cols.shape == vals.shape):
            raise ValueError(f"rows, cols and vals must be 1-D of one length, got shapes "
                             f"{rows.shape}, {cols.shape}, {vals.shape}")
        try:
            n_rows, n_cols = (int(s) for s in self.shape)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"shape must be (n_queries, n_items), got {self.shape!r}") from exc
        if n_rows < 1 or n_cols < 1:
            raise ValueError(f"shape must be positive, got {(n_rows, n_cols)}")
        if rows.size:
            if rows.min() < 0 or rows.max() >= n_rows:
                raise ValueError(f"rows must lie in [0, {n_rows}), got [{rows.min()}, {rows.max()}]")
            if cols.min() < 0 or cols.max() >= n_cols:
                raise ValueError(f"cols must lie in [0, {n_cols}), got [{cols.min()}, {cols.max()}]")
        for name, arr in (("rows", rows), ("cols", cols), ("vals", vals)):
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "shape", (n_rows, n_cols))

    @property
    def nnz(self) -> int:
        return int(self.vals.shape[0])

    def to_scipy(self) -> Any:
        """A ``scipy.sparse.csr_matrix`` (float32). Stored zeros are kept, but see the module docstring."""
        try:
            from scipy import sparse
        except ImportError as exc:
            raise ImportError("ScoreMatrix.to_scipy needs scipy: pip install scipy") from exc
        return sparse.csr_matrix((self.vals, (self.rows, self.cols)), shape=self.shape)

    def to_dense(self, fill: float = np.nan) -> np.ndarray:
        """(n_queries, n_items) float32 with ``fill`` where unobserved (nothing is for ``strategy="all"``)."""
        out = np.full(self.shape, fill, dtype=np.float32)
        out[self.rows, self.cols] = self.vals
        return out

    def with_values(self, vals: Any) -> "ScoreMatrix":
        """The same pairs with other values (e.g. normalised scores)."""
        return ScoreMatrix(self.rows, self.cols, vals, self.shape, dict(self.info))

    @classmethod
    def from_any(cls, G: Any, name: str = "G") -> "ScoreMatrix":
        """Accept a ScoreMatrix, a scipy sparse matrix/array, or (rows, cols, vals, shape)."""
        if isinstance(G, ScoreMatrix):
            return G
        if hasattr(G, "tocoo") and hasattr(G, "shape"):
            coo = G.tocoo()
            vals = np.asarray(coo.data)
            if vals.size and not np.isfinite(vals).all():
                raise ValueError(f"{name} holds a non-finite score (NaN or inf) at entry "
                                 f"{int(np.argmax(~np.isfinite(vals)))}")
            return cls(coo.row, coo.col, vals, coo.shape)
        if isinstance(G, (tuple, list)) and len(G) == 4:
            rows, cols, vals, shape = G
            vals = np.asarray(vals)
            if vals.size and np.issubdtype(vals.dtype, np.floating) and not np.isfinite(vals).all():
                raise ValueError(f"{name} holds a non-finite score (NaN or inf) at entry "
                                 f"{int(np.argmax(~np.isfinite(vals)))}")
            return cls(np.asarray(rows), np.asarray(cols), vals, shape)
        raise TypeError(f"{name} must be a ScoreMatrix, a scipy sparse matrix or (rows, cols, vals, shape), "
                        f"got {type(G).__name__}")




# ---------------------------------------------------------------------------- pair selection
def _select_pairs(strategy: str, n_queries: int, n_items: int, k_d: int, Q: Optional[np.ndarray],
                  I: Optional[np.ndarray], seed: int, num_threads: int) -> List[np.ndarray]:
    """One sorted int64 array of item ids per query (deterministic given the arguments)."""
    if strategy == "all":
        every = np.arange(n_items, dtype=np.int64)
        every.flags.writeable = False
        return [every] * n_queries
    if strategy == "de-topk":
        assert Q is not None and I is not None
        index = Index(I, num_threads=num_threads)
        out: List[np.ndarray] = []
        for s in range(0, n_queries, 1024):
            _, ids = index.search(Q[s:s + 1024], k_d)
            out.extend(np.sort(row) for row in ids)
        return out
    if strategy == "random":
        return [np.sort(np.random.default_rng([seed, q]).choice(n_items, size=k_d, replace=False))
                for q in range(n_queries)]
    # per-item: k_d queries for every item (the DE's top-k_d queries when embeddings are given)
    if Q is not None and I is not None:
        index = Index(Q, num_threads=num_threads)
        chosen = np.concatenate([index.search(I[s:s + 1024], k_d)[1] for s in range(0, n_items, 1024)])
    else:
        chosen = np.stack([np.random.default_rng([seed, i]).choice(n_queries, size=k_d, replace=False)
                           for i in range(n_items)])
    q_of_pair = chosen.reshape(-1)
    item_of_pair = np.repeat(np.arange(n_items, dtype=np.int64), k_d)
    order = np.lexsort((item_of_pair, q_of_pair))
    q_sorted, i_sorted = q_of_pair[order], item_of_pair[order]
    bounds = np.searchsorted(q_sorted, np.arange(n_queries + 1))
    return [i_sorted[bounds[q]:bounds[q + 1]] for q in range(n_queries)]



# ---------------------------------------------------------------------------- the job: pairs and checkpoint
@dataclass(frozen=True)
class PairPlan:
    """The pairs of one G job in checkpoint order (one unit per (query, item) pair, query-major).

    Built by :func:`plan_score_matrix`; every backend (the local loop here, the Ray
    pool in :mod:`axn_fast.distributed`) scores these units and keeps them in the
    same checkpoint, so their checkpoints are interchangeable.
    """

    n_queries: int
    n_items: int
    counts: np.ndarray  # (n_queries,) int64: pairs of each query
    starts: np.ndarray  # (n_queries + 1,) int64: first unit of each query
    cols: np.ndarray  # (total,) int64: the item of each unit
    info: Dict[str, Any]  # strategy, k_d, seed: copied into the result's info
    config: Dict[str, Any]  # what identifies the job in a checkpoint

    @property
    def total(self) -> int:
        return int(self.starts[-1])

    def open_checkpoint(self, checkpoint_dir: Optional[Union[str, "PathLike[str]"]],
                        shard_size: int) -> Optional[Checkpoint]:
        """The job's checkpoint in ``checkpoint_dir`` (opened and locked), or None without one."""
        if checkpoint_dir is None or not self.total:
            return None
        return Checkpoint(checkpoint_dir, kind="score_matrix", config=self.config, n_units=self.total,
                          shard_units=shard_size).open()

    def store(self, ckpt: Optional[Checkpoint]
              ) -> Tuple[np.ndarray, np.ndarray, Callable[[np.ndarray, np.ndarray], None]]:
        """``(values, done, put)``: the scores and done flags of every unit (the checkpoint's own arrays
        when there is one, so resumed units are already done) and ``put(units, scores)``, which records
        scored units (journalled first with a checkpoint)."""
        if ckpt is not None:
            return ckpt.values[:, 0], ckpt.done, ckpt.record
        values, done = np.zeros(self.total, dtype=np.float32), np.zeros(self.total, dtype=bool)

        def put(units: np.ndarray, scores: np.ndarray) -> None:
            values[units] = scores
            done[units] = True

        return values, done, put

    def fingerprint_units(self) -> np.ndarray:
        """The units that identify the cross-encoder of a checkpoint without ``ce_id``."""
        first = int(np.argmax(self.counts > 0))
        return np.arange(self.starts[first], self.starts[first] + min(FINGERPRINT_PAIRS, self.counts[first]))

    def result(self, values: np.ndarray, done: np.ndarray, **info: Any) -> ScoreMatrix:
        """A :class:`ScoreMatrix` of the units ``done`` (scores in ``values``), ``info`` added."""
        rows = np.repeat(np.arange(self.n_queries, dtype=np.int64), self.counts)
        return ScoreMatrix(rows[done], self.cols[done], values[done].astype(np.float32),
                           (self.n_queries, self.n_items), {**self.info, **info})


def check_job_options(batch_size: int, shard_size: int, ce_id: Optional[str],
                      checkpoint_dir: Optional[Union[str, "PathLike[str]"]]) -> Tuple[int, int]:
    """Validate the options of a G job that are not part of its pairs; return (batch_size, shard_size)."""
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    shard_size = check_int(shard_size, "shard_size", minimum=1)
    if ce_id is not None and (not isinstance(ce_id, str) or not ce_id):
        raise TypeError(f"ce_id must be a non-empty string, got {ce_id!r}")
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, PathLike)):
        raise TypeError(f"checkpoint_dir must be a path, got {type(checkpoint_dir).__name__}")
    return batch_size, shard_size


def plan_score_matrix(queries: Sequence[Any], n_items: int, *, strategy: str = "de-topk", k_d: int = 100,
                      de_query_emb: Optional[Any] = None, de_item_emb: Optional[Any] = None, seed: int = 0,
                      num_threads: int = 0) -> PairPlan:
    """Validate a G job and choose its pairs (arguments as in :func:`build_score_matrix`)."""
    if isinstance(queries, (str, bytes)) or not hasattr(queries, "__len__"):
        raise TypeError(f"queries must be a sequence (list of query texts), got {type(queries).__name__}")
    n_queries = len(queries)
    if n_queries < 1:
        raise ValueError("queries must hold at least one query")
    n_items = check_int(n_items, "n_items", minimum=1)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "all":
        k_d = n_items
    k_d = check_int(k_d, "k_d", minimum=1)
    limit, what = (n_queries, "the number of queries") if strategy == "per-item" else (n_items, "n_items")
    if k_d > limit:
        raise ValueError(f"k_d ({k_d}) must be <= {what} ({limit}) for strategy {strategy!r}")
    seed = check_int(seed, "seed", minimum=0)
    Q = I = None
    if strategy in ("de-topk", "per-item") and (
            strategy == "de-topk" or de_query_emb is not None or de_item_emb is not None):
        if de_query_emb is None or de_item_emb is None:
            raise ValueError(f"strategy {strategy!r} needs both de_query_emb and de_item_emb"
                             if strategy == "de-topk" else "give both de_query_emb and de_item_emb, or neither")
        Q = as_float32_array(de_query_emb, "de_query_emb", ndim=(2,))
        I = as_float32_array(de_item_emb, "de_item_emb", ndim=(2,))
        if Q.shape[0] != n_queries:
            raise ValueError(f"de_query_emb has {Q.shape[0]} rows but there are {n_queries} queries")
        if I.shape[0] != n_items:
            raise ValueError(f"de_item_emb has {I.shape[0]} rows but n_items is {n_items}")
        if Q.shape[1] != I.shape[1]:
            raise ValueError(f"de_query_emb and de_item_emb must have the same dimension, got "
                             f"{Q.shape[1]} and {I.shape[1]}")

    per_query = _select_pairs(strategy, n_queries, n_items, k_d, Q, I, seed, num_threads)
    counts = np.array([len(p) for p in per_query], dtype=np.int64)
    starts = np.zeros(n_queries + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    cols = np.concatenate(per_query) if starts[-1] else np.zeros(0, np.int64)
    config = {"job": "score_matrix", "strategy": strategy, "k_d": k_d, "seed": seed,
              "n_queries": n_queries, "n_items": n_items,
              "queries_sha256": digest_texts(queries), "de_query_sha256": digest_arrays(Q),
              "de_item_sha256": digest_arrays(I), "pairs_sha256": digest_arrays(counts, cols)}
    return PairPlan(n_queries, n_items, counts, starts, cols, {"strategy": strategy, "k_d": k_d, "seed": seed},
                    config)


# ---------------------------------------------------------------------------- build
def build_score_matrix(ce: Callable[..., Any], queries: Sequence[Any], n_items: int, *, strategy: str = "de-topk",
                       k_d: int = 100, de_query_emb: Optional[Any] = None, de_item_emb: Optional[Any] = None,
                       seed: int = 0, batch_size: int = 256,
                       checkpoint_dir: Optional[Union[str, "PathLike[str]"]] = None,
                       shard_size: int = 65536, ce_id: Optional[str] = None, num_threads: int = 0,
                       show_progress_bar: Optional[bool] = None) -> ScoreMatrix:
    """Score (query, item) pairs with the cross-encoder: the sparse matrix G, or the dense one.

    ce : ``ce(query, ids) -> scores`` (``ids`` int64, one finite score per id),
        e.g. :class:`axn_fast.HFCrossEncoder`; called with ``queries[j]`` for row j
        and a read-only copy of the ids.
    queries : the queries (texts, or anything ``ce`` accepts), one per row of G.
    n_items : number of items (columns of G).
    strategy : "de-topk": for each query the k_d items with the largest DE score
        ``de_query_emb[j] . de_item_emb[i]``; "random": k_d items per query uniformly
        at random; "per-item": k_d queries per item (the DE's top k_d queries for
        the item when DE embeddings are given, else random), k_d |items| pairs;
        "all": every item for every query (``k_d`` and the DE are unused) —
        ``.to_dense()`` of the result is the (n_queries, n_items) score matrix.
    k_d : items per query (de-topk, random; <= n_items) or queries per item (per-item).
    de_query_emb, de_item_emb : (n_queries, d), (n_items, d) DE embeddings.
    seed : seed of the random strategies (the pairs depend only on it).
    batch_size : most pairs per CE call (a call never mixes queries). Not part of
        the job: a resume may use another one.
    checkpoint_dir : directory of the resumable checkpoint (see the module docstring).
    shard_size : pairs per checkpoint shard (a finished shard is compacted into one file).
    ce_id : a string naming the cross-encoder and everything that changes its
        scores (model, head, max_length ...), stored in the checkpoint and required
        equal on resume. Without it the checkpoint stores the scores of the first
        few pairs (:data:`FINGERPRINT_PAIRS`) and a resume re-scores them and refuses
        a cross-encoder that scores them differently.
    num_threads : threads of the DE top-k search (0: all cores).
    show_progress_bar : None: shown when stderr is a terminal.

    Returns a :class:`ScoreMatrix` of shape (len(queries), n_items) with rows sorted
    by query and, inside a row, by item id; ``info`` holds ``pairs_scored`` (CE
    pairs paid by this call) and ``pairs_resumed`` (read from the checkpoint).

    Raises :class:`~axn_fast.ScoreMatrixInterrupted` when the CE raises and
    :class:`~axn_fast.CrossEncoderError` when it returns something unusable
    (wrong length, NaN/inf, not numeric), both carrying ``.partial``: a
    ScoreMatrix of every pair scored so far (also on disk with ``checkpoint_dir``:
    re-run to resume). On ``KeyboardInterrupt`` the same partial is attached to the
    exception as ``.partial`` before it propagates. Raises
    :class:`~axn_fast.io.checkpoint.CheckpointMismatch` for a checkpoint of another
    job or cross-encoder and :class:`~axn_fast.io.files.DirectoryBusyError` while
    another job uses ``checkpoint_dir``.
    """
    if not callable(ce):
        raise TypeError(f"ce must be callable as ce(query, ids) -> scores, got {type(ce).__name__}")
    batch_size, shard_size = check_job_options(batch_size, shard_size, ce_id, checkpoint_dir)
    plan = plan_score_matrix(queries, n_items, strategy=strategy, k_d=k_d, de_query_emb=de_query_emb,
                             de_item_emb=de_item_emb, seed=seed, num_threads=num_threads)
    n_queries, starts, cols, total = plan.n_queries, plan.starts, plan.cols, plan.total

    ckpt = plan.open_checkpoint(checkpoint_dir, shard_size)
    try:
        values, done, put = plan.store(ckpt)
        resumed = int(done.sum())
        paid = [0]

        def partial() -> ScoreMatrix:
            return plan.result(values, done, pairs_scored=paid[0], pairs_resumed=resumed)

        def score(q: int, units: np.ndarray) -> np.ndarray:
            ids = readonly_ids(cols[units])
            try:
                out = ce(queries[q], ids)
            except Exception as exc:
                raise ScoreMatrixInterrupted(
                    f"the cross-encoder raised {type(exc).__name__} while scoring query row {q}: {exc}; the "
                    f"pairs scored before are in .partial{_ON_DISK if ckpt is not None else ''}",
                    partial=partial()) from exc
            try:
                scores = check_scores(out, len(ids), ids=ids)
            except CrossEncoderError as exc:
                raise CrossEncoderError(f"{exc} (query row {q}); the pairs scored before are in .partial"
                                        f"{_ON_DISK if ckpt is not None else ''}", partial=partial()) from exc
            paid[0] += len(ids)
            return scores

        try:
            if ckpt is not None:
                probe_units = plan.fingerprint_units()
                first = int(np.argmax(plan.counts > 0))
                probed = ckpt.check_identity(ce_id, lambda: score(first, probe_units))
                if probed is not None and not done[probe_units].all():
                    put(probe_units, probed.astype(np.float32))
            with progress(total=total, initial=int(done.sum()), desc="CE scores", unit="pair",
                          show=show_progress_bar) as bar:
                for q in range(n_queries):
                    lo, hi = int(starts[q]), int(starts[q + 1])
                    if hi == lo or done[lo:hi].all():
                        continue
                    todo = lo + np.flatnonzero(~done[lo:hi])
                    for b in range(0, len(todo), batch_size):
                        units = todo[b:b + batch_size]
                        put(units, score(q, units))
                        bar.update(len(units))
        except KeyboardInterrupt as exc:
            exc.partial = partial()  # type: ignore[attr-defined]
            raise
        result = partial()
    finally:
        if ckpt is not None:
            ckpt.close()
    return result


_ON_DISK = " and on disk: re-run with the same arguments to resume"
