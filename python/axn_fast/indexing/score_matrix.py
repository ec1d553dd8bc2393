"""The sparse matrix G of exact CE scores (AXN paper, §2.1 and Appendix B.4).

``G`` has one row per train query and one column per item; only the sampled
(query, item) pairs are observed. :func:`build_score_matrix` chooses the pairs
(``strategy``), scores them with the cross-encoder in batches and returns a
:class:`ScoreMatrix`.

Why an own COO container rather than ``scipy.sparse``: a CE score of exactly
0.0 is an observation, not a missing entry, and scipy treats stored zeros as
droppable (``eliminate_zeros``, arithmetic, format conversions). ``ScoreMatrix``
keeps every observed pair and needs nothing beyond numpy;
:meth:`ScoreMatrix.to_scipy` converts when scipy is installed, and
:func:`axn_fast.indexing.factorize` accepts either.

Checkpoints: with ``checkpoint_dir`` the pairs are cut into deterministic
shards of ``shard_size`` consecutive queries. Every finished CE batch is
appended to the shard's journal (with a CRC, flushed and fsync'd), and a
finished shard is written to a temporary file, fsync'd and atomically renamed
to ``shard-NNNNN.npy``. ``manifest.json`` records the configuration and its
hash; a re-run with the same configuration skips finished shards and finished
batches (so at most the batch in flight when the job died is paid twice), and a
re-run with a different configuration is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from axn_fast.errors import ScoreMatrixInterrupted
from axn_fast._validation import as_float32_array, check_int

STRATEGIES = ("de-topk", "random", "per-item")
_MANIFEST = "manifest.json"
_FORMAT = "axn_fast.score_matrix"
_FORMAT_VERSION = 1
_RECORD_HEAD = struct.Struct("<4sqqI")  # magic, offset, count, crc32 of the values
_RECORD_MAGIC = b"AXNB"


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
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
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

    def to_scipy(self):
        """A ``scipy.sparse.csr_matrix`` (float32). Stored zeros are kept, but see the module docstring."""
        try:
            from scipy import sparse
        except ImportError as exc:
            raise ImportError("ScoreMatrix.to_scipy needs scipy: pip install scipy") from exc
        return sparse.csr_matrix((self.vals, (self.rows, self.cols)), shape=self.shape)

    def to_dense(self, fill: float = np.nan) -> np.ndarray:
        """(n_queries, n_items) float32 with ``fill`` where unobserved."""
        out = np.full(self.shape, fill, dtype=np.float32)
        out[self.rows, self.cols] = self.vals
        return out

    def with_values(self, vals) -> "ScoreMatrix":
        return ScoreMatrix(self.rows, self.cols, vals, self.shape, dict(self.info))

    @classmethod
    def from_any(cls, G, name: str = "G") -> "ScoreMatrix":
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
def _digest_queries(queries: Sequence) -> str:
    h = hashlib.sha1()
    for q in queries:
        h.update((q if isinstance(q, str) else repr(q)).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _digest_array(x: Optional[np.ndarray]) -> Optional[str]:
    return None if x is None else hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()


def _select_pairs(strategy, n_queries, n_items, k_d, Q, I, seed, num_threads) -> List[np.ndarray]:
    """One sorted int64 array of item ids per query (deterministic given the arguments)."""
    from axn_fast.search.index import Index

    if strategy == "de-topk":
        index = Index(I, num_threads=num_threads)
        out = []
        for s in range(0, n_queries, 1024):
            _, ids = index.search(Q[s:s + 1024], k_d)
            out.extend(np.sort(row) for row in ids)
        return out
    if strategy == "random":
        return [np.sort(np.random.default_rng([seed, q]).choice(n_items, size=k_d, replace=False))
                for q in range(n_queries)]
    # per-item: k_d queries for every item (the DE's top-k_d queries when embeddings are given)
    if Q is not None:
        index = Index(Q, num_threads=num_threads)
        chosen = np.concatenate([index.search(I[s:s + 1024], k_d)[1] for s in range(0, n_items, 1024)])
    else:
        chosen = np.stack([np.random.default_rng([seed, i]).choice(n_queries, size=k_d, replace=False)
                           for i in range(n_items)]) if n_items else np.zeros((0, k_d), np.int64)
    q_of_pair = chosen.reshape(-1)
    item_of_pair = np.repeat(np.arange(n_items, dtype=np.int64), k_d)
    order = np.lexsort((item_of_pair, q_of_pair))
    q_sorted, i_sorted = q_of_pair[order], item_of_pair[order]
    bounds = np.searchsorted(q_sorted, np.arange(n_queries + 1))
    return [i_sorted[bounds[q]:bounds[q + 1]] for q in range(n_queries)]


# ---------------------------------------------------------------------------- durable files
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable) -> None:
    """Write via ``write(fileobj)`` to a temporary file, fsync it, then rename it to ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class _Checkpoint:
    def __init__(self, directory, config: dict):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        body = json.dumps(config, sort_keys=True)
        self.config_hash = hashlib.sha256(body.encode()).hexdigest()
        manifest = self.dir / _MANIFEST
        if manifest.exists():
            try:
                old = json.loads(manifest.read_text())
                old_hash, old_config = old["config_hash"], old["config"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"checkpoint_dir {str(self.dir)!r} has an unreadable {_MANIFEST}; "
                                 "delete the directory to start afresh") from exc
            if old_hash != self.config_hash:
                diff = sorted(k for k in set(config) | set(old_config) if config.get(k) != old_config.get(k))
                raise ValueError(
                    f"checkpoint_dir {str(self.dir)!r} holds a score matrix built with a different "
                    f"configuration (differs in: {', '.join(diff)}); use another directory or delete it "
                    "to start afresh")
        else:
            doc = {"format": _FORMAT, "format_version": _FORMAT_VERSION, "config_hash": self.config_hash,
                   "config": config}
            _atomic_write(manifest, lambda f: f.write(json.dumps(doc, indent=1, sort_keys=True).encode()))

    def shard_path(self, s: int) -> Path:
        return self.dir / f"shard-{s:05d}.npy"

    def journal_path(self, s: int) -> Path:
        return self.dir / f"shard-{s:05d}.journal"

    def load_shard(self, s: int, n_pairs: int) -> Optional[np.ndarray]:
        path = self.shard_path(s)
        if not path.exists():
            return None
        try:
            vals = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"checkpoint shard {str(path)!r} is corrupt ({exc}); delete it to recompute "
                             "that shard") from exc
        if vals.dtype != np.float32 or vals.shape != (n_pairs,) or not np.isfinite(vals).all():
            raise ValueError(f"checkpoint shard {str(path)!r} holds {vals.dtype} {vals.shape}, expected "
                             f"{n_pairs} finite float32 scores; delete it to recompute that shard")
        return vals

    def read_journal(self, s: int, vals: np.ndarray) -> int:
        """Fill ``vals`` from the shard's journal; return how many leading pairs are done."""
        path = self.journal_path(s)
        if not path.exists():
            return 0
        done, good_bytes = 0, 0
        data = path.read_bytes()
        pos = 0
        while pos + _RECORD_HEAD.size <= len(data):
            magic, offset, count, crc = _RECORD_HEAD.unpack_from(data, pos)
            end = pos + _RECORD_HEAD.size + 4 * count
            if magic != _RECORD_MAGIC or offset != done or count <= 0 or offset + count > vals.shape[0] \
                    or end > len(data):
                break
            chunk = data[pos + _RECORD_HEAD.size:end]
            if zlib.crc32(chunk) != crc:
                break
            vals[offset:offset + count] = np.frombuffer(chunk, dtype="<f4")
            done, pos, good_bytes = offset + count, end, end
        if good_bytes < len(data):  # a record cut short by a kill: drop it
            with open(path, "r+b") as f:
                f.truncate(good_bytes)
                f.flush()
                os.fsync(f.fileno())
        return done

    def append(self, journal, offset: int, vals: np.ndarray) -> None:
        chunk = np.ascontiguousarray(vals, dtype="<f4").tobytes()
        journal.write(_RECORD_HEAD.pack(_RECORD_MAGIC, offset, len(vals), zlib.crc32(chunk)) + chunk)
        journal.flush()
        os.fsync(journal.fileno())

    def finish_shard(self, s: int, vals: np.ndarray) -> None:
        _atomic_write(self.shard_path(s), lambda f: np.save(f, np.ascontiguousarray(vals, np.float32),
                                                              allow_pickle=False))
        try:
            os.remove(self.journal_path(s))
        except FileNotFoundError:
            pass


def _ce_name(ce, ce_name: Optional[str]) -> str:
    if ce_name is not None:
        return str(ce_name)
    config = getattr(ce, "config", None)
    if isinstance(config, dict):
        return json.dumps(config, sort_keys=True, default=str)
    return type(ce).__qualname__


def _show_bar(show_progress_bar) -> bool:
    if show_progress_bar is None:
        import sys

        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(show_progress_bar)


# ---------------------------------------------------------------------------- build
def build_score_matrix(ce: Callable, queries: Sequence, n_items: int, *, strategy: str = "de-topk",
                       k_d: int = 100, de_query_emb=None, de_item_emb=None, seed: int = 0,
                       batch_size: int = 256, checkpoint_dir=None, shard_size: Optional[int] = None,
                       ce_name: Optional[str] = None, num_threads: int = 0,
                       show_progress_bar=None) -> ScoreMatrix:
    """Score sampled (train query, item) pairs with the cross-encoder: the sparse matrix G.

    ce : ``ce(query, ids) -> scores`` (``ids`` int64, one finite score per id),
        e.g. :class:`axn_fast.HFCrossEncoder`; called with ``queries[j]`` for row j.
    queries : the train queries (texts, or anything ``ce`` accepts), one per row of G.
    n_items : number of items (columns of G).
    strategy : "de-topk": for each query the k_d items with the largest DE score
        ``de_query_emb[j] . de_item_emb[i]``; "random": k_d items per query uniformly
        at random; "per-item": k_d queries per item (the DE's top k_d queries for
        the item when DE embeddings are given, else random), k_d |items| pairs.
    k_d : items per query (de-topk, random; <= n_items) or queries per item (per-item).
    de_query_emb, de_item_emb : (n_queries, d), (n_items, d) DE embeddings.
    seed : seed of the random strategies (pairs depend only on it, not on sharding).
    batch_size : most pairs per CE call (a call never mixes queries).
    checkpoint_dir : directory for resumable shards (see the module docstring).
    shard_size : queries per shard (default: enough for ~8192 pairs); part of the configuration.
    ce_name : what identifies the CE in the checkpoint configuration (default:
        ``ce.config`` when the CE has one, else its class name).
    show_progress_bar : None means on when stderr is a terminal.

    Returns a :class:`ScoreMatrix` of shape (len(queries), n_items) with rows sorted
    by query and, inside a row, by item id. When the CE raises, raises
    :class:`ScoreMatrixInterrupted` carrying ``.partial``.
    """
    if not callable(ce):
        raise TypeError(f"ce must be callable as ce(query, ids) -> scores, got {type(ce).__name__}")
    if isinstance(queries, (str, bytes)) or not hasattr(queries, "__len__"):
        raise TypeError(f"queries must be a sequence (list of query texts), got {type(queries).__name__}")
    n_queries = len(queries)
    if n_queries < 1:
        raise ValueError("queries must hold at least one query")
    n_items = check_int(n_items, "n_items", minimum=1)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    k_d = check_int(k_d, "k_d", minimum=1)
    limit, what = (n_queries, "the number of queries") if strategy == "per-item" else (n_items, "n_items")
    if k_d > limit:
        raise ValueError(f"k_d ({k_d}) must be <= {what} ({limit}) for strategy {strategy!r}")
    seed = check_int(seed, "seed", minimum=0)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    Q = I = None
    if strategy == "de-topk" or de_query_emb is not None or de_item_emb is not None:
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
    if strategy == "random":
        Q = I = None  # the DE plays no part: keep it out of the configuration

    per_query = _select_pairs(strategy, n_queries, n_items, k_d, Q, I, seed, num_threads)
    counts = np.array([len(p) for p in per_query], dtype=np.int64)
    total = int(counts.sum())
    if shard_size is None:
        shard_size = max(1, 8192 // max(1, int(np.ceil(total / n_queries))))
    shard_size = check_int(shard_size, "shard_size", minimum=1)
    n_shards = -(-n_queries // shard_size)

    ckpt = None
    if checkpoint_dir is not None:
        config = {"ce": _ce_name(ce, ce_name), "strategy": strategy, "k_d": k_d, "seed": seed,
                  "n_queries": n_queries, "n_items": n_items, "shard_size": shard_size,
                  "queries_sha1": _digest_queries(queries), "de_query_sha1": _digest_array(Q),
                  "de_item_sha1": _digest_array(I)}
        ckpt = _Checkpoint(checkpoint_dir, config)

    shard_vals: List[np.ndarray] = []
    shard_done = np.zeros(n_shards, dtype=np.int64)
    for s in range(n_shards):
        n_pairs = int(counts[s * shard_size:(s + 1) * shard_size].sum())
        vals = ckpt.load_shard(s, n_pairs) if ckpt is not None else None
        if vals is not None:
            shard_done[s] = n_pairs
        else:
            vals = np.zeros(n_pairs, dtype=np.float32)
            if ckpt is not None:
                shard_done[s] = ckpt.read_journal(s, vals)
        shard_vals.append(vals)

    def assemble(done_only: bool) -> ScoreMatrix:
        rows, cols, vals = [], [], []
        for s in range(n_shards):
            q0, q1 = s * shard_size, min(n_queries, (s + 1) * shard_size)
            ids = per_query[q0:q1]
            r = np.repeat(np.arange(q0, q1, dtype=np.int64), counts[q0:q1])
            c = np.concatenate(ids) if ids else np.zeros(0, np.int64)
            keep = int(shard_done[s]) if done_only else len(c)
            rows.append(r[:keep]); cols.append(c[:keep]); vals.append(shard_vals[s][:keep])
        return ScoreMatrix(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
                           (n_queries, n_items), {"strategy": strategy, "k_d": k_d, "seed": seed})

    bar = None
    if _show_bar(show_progress_bar):
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=int(shard_done.sum()), desc="CE scores for G", unit="pair")
    try:
        for s in range(n_shards):
            n_pairs = shard_vals[s].shape[0]
            if shard_done[s] == n_pairs and (ckpt is None or ckpt.shard_path(s).exists()):
                continue
            journal = open(ckpt.journal_path(s), "ab") if ckpt is not None else None
            try:
                offset = 0
                for q in range(s * shard_size, min(n_queries, (s + 1) * shard_size)):
                    ids = per_query[q]
                    for b in range(0, len(ids), batch_size):
                        batch = ids[b:b + batch_size]
                        start = offset + b
                        if start + len(batch) <= shard_done[s]:
                            continue
                        scores = _call(ce, queries[q], batch, q, assemble)
                        shard_vals[s][start:start + len(batch)] = scores
                        shard_done[s] = start + len(batch)
                        if journal is not None:
                            ckpt.append(journal, start, scores)
                        if bar is not None:
                            bar.update(len(batch))
                    offset += len(ids)
            finally:
                if journal is not None:
                    journal.close()
            if ckpt is not None:
                ckpt.finish_shard(s, shard_vals[s])
    finally:
        if bar is not None:
            bar.close()
    return assemble(False)


def _call(ce, query, ids: np.ndarray, row: int, assemble) -> np.ndarray:
    try:
        out = ce(query, ids)
    except Exception as exc:
        raise ScoreMatrixInterrupted(
            f"the cross-encoder raised {type(exc).__name__} while scoring query row {row}: {exc}; the pairs "
            "scored before are in .partial (and on disk when checkpoint_dir was given: re-run to resume)",
            partial=assemble(True)) from exc
    try:
        scores = np.asarray(out, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the cross-encoder must return numeric scores, got {type(out).__name__}") from exc
    if scores.shape != (len(ids),):
        raise ValueError(f"the cross-encoder returned {scores.shape[0]} scores for {len(ids)} items "
                         f"(query row {row})")
    if not np.isfinite(scores).all():
        raise ValueError(f"the cross-encoder returned a non-finite score (NaN or inf) for query row {row}")
    return scores
