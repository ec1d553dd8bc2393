"""The score matrix G scored by a pool of cross-encoder actors on Ray Data.

:func:`build_score_matrix_ray` is :func:`axn_fast.build_score_matrix` with the
CE calls spread over ``num_workers`` Ray actors: the same pair selection
(strategy, k_d, seed, DE embeddings), the same checkpoint (the one format of
:mod:`axn_fast.io.checkpoint`, with the same configuration, so a job started
on Ray resumes locally and the other way round) and the same result: equal
pairs in equal order and, for a deterministic CE, equal scores.

How it runs: the driver selects the pairs, opens the checkpoint and turns the
pairs not yet done into CE calls (at most ``batch_size`` pairs of one query
each). A Ray Dataset of those calls is mapped by an actor pool
(``map_batches`` with one call per batch); each actor builds its CE once from
``ce_factory`` (a picklable zero-argument callable, e.g. :class:`CESpec`) and
the driver journals every returned batch into the checkpoint, where finished
shards are committed atomically. An actor whose process dies is restarted by
Ray and its unfinished calls are retried: what is lost is the work in flight
on it (at most ``calls_per_task`` calls, those of its current task), nothing
already returned. Only the driver writes the checkpoint, so ``checkpoint_dir``
is a path on the driver's machine.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from typing import Any, Callable, Dict, Generator, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import ray
import ray.data

from axn_fast._progress import progress
from axn_fast._validation import check_int
from axn_fast.encoders.boundary import check_scores, readonly_ids
from axn_fast.encoders.models import DEFAULT_CE, load_cross_encoder
from axn_fast.encoders.protocol import CrossEncoder
from axn_fast.errors import CrossEncoderError, ScoreMatrixInterrupted
from axn_fast.indexing.score_matrix import ScoreMatrix, check_job_options, plan_score_matrix

__all__ = ["build_score_matrix_ray", "CESpec", "CEFactory"]

CEFactory = Callable[[], CrossEncoder]
"""A picklable zero-argument callable that builds the cross-encoder (called once per actor)."""


@dataclass(frozen=True)
class CESpec:
    """A cross-encoder by name, built in each actor by :func:`axn_fast.encoders.models.load_cross_encoder`.

    items : the item texts (ids index them). name / model / head / max_length /
    batch_size : as in ``load_cross_encoder``. device : "auto" takes the GPU Ray
    gave the actor (``num_gpus_per_worker``) when there is one, else the CPU.
    """

    items: Tuple[str, ...]
    name: str = DEFAULT_CE
    model: Optional[str] = None
    head: Optional[str] = None
    max_length: Optional[int] = None
    batch_size: int = 64
    device: str = "auto"

    def __call__(self) -> CrossEncoder:
        return load_cross_encoder(list(self.items), self.name, model=self.model, head=self.head,
                                  device=self.device, batch_size=self.batch_size, max_length=self.max_length,
                                  show_progress_bar=False)


class _ScoringActor:
    """One actor of the pool: builds its CE once, then scores one CE call per input row."""

    def __init__(self, factory: CEFactory, queries: Sequence[Any], items_ref: Any) -> None:
        self.ce = factory()
        self.queries = queries
        # the item id of every pending pair, shared through the object store (read-only, zero-copy)
        self.items: np.ndarray = ray.get(items_ref[0])

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """One output row per pair: ``pos`` (position among the pending pairs), ``score``; a failed call
        gives one row with ``kind`` 1 (the CE raised) or 2 (unusable scores) and the ``error``."""
        pos: List[np.ndarray] = []
        scores: List[np.ndarray] = []
        for q, lo, hi in zip(batch["q"], batch["lo"], batch["hi"]):
            ids = readonly_ids(self.items[int(lo):int(hi)])
            try:
                out = self.ce(self.queries[int(q)], ids)
            except Exception as exc:
                return _failure(pos, scores, int(q), int(lo), 1, f"{type(exc).__name__}: {exc}")
            try:
                got = check_scores(out, len(ids), ids=ids)
            except CrossEncoderError as exc:
                return _failure(pos, scores, int(q), int(lo), 2, str(exc))
            pos.append(np.arange(int(lo), int(hi), dtype=np.int64))
            scores.append(got)
        return _rows(pos, scores)


def _rows(pos: List[np.ndarray], scores: List[np.ndarray], q: int = -1, kind: int = 0,
          error: str = "") -> Dict[str, np.ndarray]:
    p = np.concatenate(pos) if pos else np.zeros(0, np.int64)
    n = len(p)
    return {"pos": p, "score": np.concatenate(scores) if scores else np.zeros(0, np.float32),
            "q": np.full(n, q, np.int64), "kind": np.full(n, kind, np.int8),
            "error": np.full(n, error, dtype=object)}


def _failure(pos: List[np.ndarray], scores: List[np.ndarray], q: int, lo: int, kind: int,
             error: str) -> Dict[str, np.ndarray]:
    """The pairs scored before the failed call, then one row that reports the failure."""
    rows = _rows(pos, scores)
    return {"pos": np.append(rows["pos"], lo), "score": np.append(rows["score"], np.float32(np.nan)),
            "q": np.append(rows["q"], q), "kind": np.append(rows["kind"], np.int8(kind)),
            "error": np.append(rows["error"], np.array([error], dtype=object))}


def _probe(factory: CEFactory, query: Any, ids: np.ndarray) -> np.ndarray:
    """Scores of the fingerprint pairs, computed where the actors run (the driver may have no CE)."""
    ro = readonly_ids(ids)
    return check_scores(factory()(query, ro), len(ro), ids=ro)


def build_score_matrix_ray(ce_factory: CEFactory, queries: Sequence[Any], n_items: int, *,
                           strategy: str = "de-topk", k_d: int = 100, de_query_emb: Optional[Any] = None,
                           de_item_emb: Optional[Any] = None, seed: int = 0, batch_size: int = 256,
                           checkpoint_dir: Optional[Union[str, "PathLike[str]"]] = None, shard_size: int = 65536,
                           ce_id: Optional[str] = None, num_threads: int = 0, num_workers: int = 1,
                           num_cpus_per_worker: float = 1.0, num_gpus_per_worker: float = 0.0,
                           calls_per_task: int = 16, show_progress_bar: Optional[bool] = None) -> ScoreMatrix:
    """Score (query, item) pairs with a pool of cross-encoder actors: G as :func:`axn_fast.build_score_matrix`.

    ce_factory : picklable zero-argument callable returning the CE
        (``ce(query, ids) -> scores``), called once in every actor, e.g.
        :class:`CESpec` or a top-level function / ``functools.partial``.
    queries, n_items, strategy, k_d, de_query_emb, de_item_emb, seed, batch_size,
    checkpoint_dir, shard_size, ce_id, num_threads, show_progress_bar : as in
        :func:`axn_fast.build_score_matrix` (same pairs, same checkpoint). Without
        ``ce_id`` one Ray task builds the CE once more to score the fingerprint pairs.
    num_workers : actors in the pool (each holds one CE).
    num_cpus_per_worker, num_gpus_per_worker : Ray resources of each actor; with a GPU
        the actor sees only its own (``CUDA_VISIBLE_DEVICES``) and a CE built with
        ``device="auto"`` runs there.
    calls_per_task : CE calls per Ray task (a killed actor re-pays at most its task).

    Uses the running Ray cluster (``ray.init(...)`` first; otherwise Ray starts a
    local one). Returns a :class:`~axn_fast.indexing.score_matrix.ScoreMatrix`
    equal to the local one; ``info`` holds ``pairs_scored`` (returned by the pool
    in this call, fingerprint pairs included), ``pairs_resumed`` and ``num_workers``.
    Errors as in :func:`axn_fast.build_score_matrix`: a CE that raises gives
    :class:`~axn_fast.ScoreMatrixInterrupted`, unusable scores
    :class:`~axn_fast.CrossEncoderError`, both with ``.partial``.
    """
    if not callable(ce_factory):
        raise TypeError(f"ce_factory must be a zero-argument callable returning the cross-encoder, "
                        f"got {type(ce_factory).__name__}")
    batch_size, shard_size = check_job_options(batch_size, shard_size, ce_id, checkpoint_dir)
    plan = plan_score_matrix(queries, n_items, strategy=strategy, k_d=k_d, de_query_emb=de_query_emb,
                             de_item_emb=de_item_emb, seed=seed, num_threads=num_threads)
    num_workers = check_int(num_workers, "num_workers", minimum=1)
    calls_per_task = check_int(calls_per_task, "calls_per_task", minimum=1)
    for name, v in (("num_cpus_per_worker", num_cpus_per_worker), ("num_gpus_per_worker", num_gpus_per_worker)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    starts, cols, total = plan.starts, plan.cols, plan.total
    # the local builder's plan and checkpoint: the two backends share checkpoints
    ckpt = plan.open_checkpoint(checkpoint_dir, shard_size)
    remote_args: Dict[str, Any] = {"num_cpus": float(num_cpus_per_worker)}
    if num_gpus_per_worker:
        remote_args["num_gpus"] = float(num_gpus_per_worker)
    try:
        values, done, put = plan.store(ckpt)
        resumed = int(done.sum())
        paid = [0]
        on_disk = _ON_DISK if ckpt is not None else ""

        def partial() -> ScoreMatrix:
            return plan.result(values, done, pairs_scored=paid[0], pairs_resumed=resumed, num_workers=num_workers)

        try:
            if ckpt is not None:
                first = int(np.argmax(plan.counts > 0))
                probe_units = plan.fingerprint_units()

                def probe() -> np.ndarray:
                    task = ray.remote(_probe).options(**remote_args)
                    try:
                        got: np.ndarray = ray.get(task.remote(ce_factory, queries[first], cols[probe_units]))
                    except ray.exceptions.RayTaskError as exc:
                        raise ScoreMatrixInterrupted(
                            f"building the cross-encoder or scoring the fingerprint pairs failed in a Ray task: "
                            f"{exc}", partial=partial()) from exc
                    paid[0] += len(probe_units)
                    return got

                probed = ckpt.check_identity(ce_id, probe)
                if probed is not None and not done[probe_units].all():
                    put(probe_units, probed.astype(np.float32))
            calls = _plan_calls(starts, done, batch_size)
            if len(calls[0]):
                _run_pool(ce_factory, queries, cols, calls, done, put, paid, partial, on_disk,
                          num_workers=num_workers, remote_args=remote_args, calls_per_task=calls_per_task,
                          show=show_progress_bar, total=total)
        except KeyboardInterrupt as exc:
            exc.partial = partial()  # type: ignore[attr-defined]
            raise
        result = partial()
    finally:
        if ckpt is not None:
            ckpt.close()
    return result


def _plan_calls(starts: np.ndarray, done: np.ndarray, batch_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pending pairs as CE calls: ``(q, lo, hi)``, positions into ``flatnonzero(~done)``.

    A call holds at most ``batch_size`` pending pairs of one query, in unit order
    (the local builder's calls).
    """
    todo = np.flatnonzero(~done)
    q_of = np.searchsorted(starts, todo, side="right") - 1
    qs: List[np.ndarray] = []
    los: List[np.ndarray] = []
    his: List[np.ndarray] = []
    if len(todo):
        bounds = np.flatnonzero(np.diff(q_of)) + 1
        first = np.concatenate([[0], bounds])
        last = np.concatenate([bounds, [len(todo)]])
        for a, b in zip(first, last):
            lo = np.arange(a, b, batch_size, dtype=np.int64)
            los.append(lo)
            his.append(np.minimum(lo + batch_size, b))
            qs.append(np.full(len(lo), q_of[a], dtype=np.int64))
    if not los:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(qs), np.concatenate(los), np.concatenate(his)


def _run_pool(ce_factory: CEFactory, queries: Sequence[Any], cols: np.ndarray,
              calls: Tuple[np.ndarray, np.ndarray, np.ndarray], done: np.ndarray,
              put: Callable[[np.ndarray, np.ndarray], None], paid: List[int], partial: Callable[[], ScoreMatrix],
              on_disk: str, *, num_workers: int, remote_args: Dict[str, Any], calls_per_task: int,
              show: Optional[bool], total: int) -> None:
    todo = np.flatnonzero(~done)
    items_ref = ray.put(np.ascontiguousarray(cols[todo]))
    q_arr, lo_arr, hi_arr = calls
    blocks = [pa.table({"q": q_arr[s:s + calls_per_task], "lo": lo_arr[s:s + calls_per_task],
                        "hi": hi_arr[s:s + calls_per_task]}) for s in range(0, len(q_arr), calls_per_task)]
    ds = ray.data.from_arrow(blocks).map_batches(
        _ScoringActor, fn_constructor_args=(ce_factory, queries, [items_ref]), batch_size=None,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=min(num_workers, len(blocks))),
        **remote_args)
    batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
    with progress(total=total, initial=int(done.sum()), desc="CE scores (ray)", unit="pair",
                  show=show) as bar, closing_iterator(batches):
        for out in batches:
            pos, kind = out["pos"], out["kind"]
            bad = np.flatnonzero(kind != 0)
            ok = pos[:bad[0]] if len(bad) else pos
            scores = out["score"][:len(ok)]
            units = todo[ok]
            fresh = ~done[units]  # a retried task may return what an earlier attempt already did
            if fresh.any():
                put(units[fresh], scores[fresh])
                paid[0] += int(fresh.sum())
                bar.update(int(fresh.sum()))
            if len(bad):
                i = int(bad[0])
                q, msg = int(out["q"][i]), str(out["error"][i])
                if kind[i] == 1:
                    raise ScoreMatrixInterrupted(
                        f"the cross-encoder raised {msg} while scoring query row {q}; the pairs "
                        f"scored before are in .partial{on_disk}", partial=partial())
                raise CrossEncoderError(f"{msg} (query row {q}); the pairs scored before are in "
                                        f".partial{on_disk}", partial=partial())


@contextmanager
def closing_iterator(it: Iterator[Any]) -> Generator[None, None, None]:
    """Close a generator on the way out: on a failure Ray Data then stops the pool at once (no more CE
    calls paid for results nobody records) instead of when the generator is collected."""
    try:
        yield
    finally:
        close = getattr(it, "close", None)
        if callable(close):
            close()


_ON_DISK = " and on disk: re-run with the same arguments to resume"
