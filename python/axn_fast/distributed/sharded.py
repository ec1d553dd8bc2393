"""``ShardedIndex``: item embeddings split over Ray actors, searched by scatter-gather.

Each actor holds one contiguous id range ``[bounds[s], bounds[s + 1])`` of V as
an :class:`~axn_fast.search.index.Index` (built from an array the driver put in
the object store, or memory-mapped from a shard saved by :meth:`Index.save`).
:meth:`ShardedIndex.search` sends the queries to every shard, each returns its
top-k with the excluded ids removed, and the driver merges them by the rules of
:class:`~axn_fast.Index`: scores descending (+inf first, then finite scores,
-inf, NaN), ties by the smaller *global* id, rows padded with -inf / -1. So the
result equals one ``Index`` over the whole V, ids and scores, and
:func:`~axn_fast.search.adaptive.adaptive_search` /
:func:`~axn_fast.search.batch.adaptive_search_batch` run on it unchanged (it is
a :class:`~axn_fast.search.protocol.VectorIndex`).

Per search the driver sends U (n_queries x dim float32) to each shard and gets
back n_queries x min(k, shard size) scores and ids (12 bytes each) per shard.
"""
from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import numpy as np
import ray
from numpy.typing import ArrayLike, NDArray

from axn_fast._validation import as_float32_array, as_ids, check_int
from axn_fast.io.files import atomic_write_json, confined, read_json
from axn_fast.search.index import Index
from axn_fast.search.protocol import Exclude, parse_exclude

__all__ = ["ShardedIndex", "merge_topk"]

MANIFEST = "sharded_index.json"
FORMAT = "axn_fast.sharded_index"
_EMPTY = np.zeros(0, dtype=np.int64)


class _Shard:
    """The actor of one shard: an Index over V[lo:hi] answering in local ids."""

    def __init__(self, source: Any, num_threads: int) -> None:
        if isinstance(source, str):
            self.index = Index.load(source, mmap=True, num_threads=num_threads)
        else:
            self.index = Index(source, num_threads=num_threads)

    def shape(self) -> Tuple[int, int]:
        return self.index.n_items, self.index.dim

    def search(self, U: NDArray[np.float32], k: int, ex_ids: Optional[NDArray[np.int64]],
               ex_offsets: Optional[NDArray[np.int64]]) -> Tuple[NDArray[np.float32], NDArray[np.int64]]:
        exclude: Exclude = None
        if ex_ids is not None and ex_offsets is None:
            exclude = ex_ids
        elif ex_ids is not None and ex_offsets is not None:
            exclude = [ex_ids[a:b] for a, b in zip(ex_offsets[:-1], ex_offsets[1:])]
        return self.index.search(U, k, exclude=exclude)

    def vectors_of(self, ids: NDArray[np.int64]) -> NDArray[np.float32]:
        return self.index.vectors_of(ids)

    def save(self, path: str) -> None:
        self.index.save(path)


def merge_topk(scores: Sequence[NDArray[np.float32]], ids: Sequence[NDArray[np.int64]], k: int
               ) -> Tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Merge per-shard top-k lists (global ids, each (n_queries, k_s), padded -inf / -1) into one top-k.

    Order of :func:`axn_fast.Index.search`: +inf first, finite scores descending,
    -inf, NaN; ties by the smaller id; padding (id -1) last. Returns (n_queries, k)
    float32 / int64 arrays, padded where fewer than k items came in.
    """
    S = np.concatenate(scores, axis=1) if scores else np.zeros((0, 0), np.float32)
    ID = np.concatenate(ids, axis=1) if ids else np.zeros((0, 0), np.int64)
    nq = S.shape[0]
    pad = ID < 0
    cls = np.where(pad, 3, np.where(np.isnan(S), 2, np.where(S == -np.inf, 1, 0))).astype(np.int8)
    with np.errstate(invalid="ignore"):
        neg = np.where(cls == 0, -S.astype(np.float64), 0.0)
    id_key = np.where(pad, np.iinfo(np.int64).max, ID)
    order = np.lexsort((id_key, neg, cls), axis=-1)[:, :k]
    out_s = np.full((nq, k), -np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    take = order.shape[1]
    out_s[:, :take] = np.take_along_axis(S, order, axis=1)
    out_i[:, :take] = np.take_along_axis(ID, order, axis=1)
    padded = out_i < 0
    out_s[padded] = -np.inf
    return out_s, out_i


class ShardedIndex:
    """Item embeddings V (n_items, dim) over Ray actors, one contiguous id range each; a VectorIndex.

    Build it with :meth:`from_arrays` or :meth:`load` (not the constructor). The
    actors live as long as this object's creator keeps them (see :meth:`shutdown`);
    the object itself pickles (actor handles), so it can be handed to Ray tasks
    and Serve deployments.
    """

    def __init__(self, actors: Sequence[Any], bounds: Sequence[int], dim: int) -> None:
        self._actors: List[Any] = list(actors)
        self._bounds = np.asarray(bounds, dtype=np.int64)
        self._dim = int(dim)
        if len(self._bounds) != len(self._actors) + 1 or self._bounds[0] != 0 or (np.diff(self._bounds) < 1).any():
            raise ValueError(f"bounds must be 0 < ... increasing, one more than the actors, got {list(bounds)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, V: ArrayLike, n_shards: int, *, num_threads: int = 0,
                    actor_options: Optional[Dict[str, Any]] = None) -> "ShardedIndex":
        """Split V (n_items, dim) into ``n_shards`` contiguous ranges (sizes differing by at most one),
        one actor each.

        num_threads : threads of each shard's scan (0: the cores its process may use).
        actor_options : Ray actor options of each shard (``num_cpus``, ``resources``,
            ``scheduling_strategy`` ...); default ``{"num_cpus": 1}``.
        """
        V32 = as_float32_array(V, "V", ndim=(2,))
        n = V32.shape[0]
        n_shards = check_int(n_shards, "n_shards", minimum=1)
        if V32.shape[1] < 1 or n < n_shards:
            raise ValueError(f"V must have at least n_shards ({n_shards}) items and one dimension, "
                             f"got shape {V32.shape}")
        bounds = np.linspace(0, n, n_shards + 1).round().astype(np.int64)
        remote = cls._remote(actor_options)
        actors = [remote.remote(ray.put(np.ascontiguousarray(V32[a:b])), num_threads)
                  for a, b in zip(bounds[:-1], bounds[1:])]
        index = cls(actors, bounds.tolist(), V32.shape[1])
        index._check_shapes()
        return index

    @classmethod
    def load(cls, directory: Union[str, Path], *, num_threads: int = 0,
             actor_options: Optional[Dict[str, Any]] = None) -> "ShardedIndex":
        """Open an index written by :meth:`save`: each actor memory-maps its shard
        (``Index.load(mmap=True)``), so ``directory`` must be readable where the actors run."""
        directory = Path(directory).resolve()
        doc = read_json(directory / MANIFEST, what="sharded index manifest")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"{str(directory)!r} holds no sharded index ({MANIFEST} missing or not {FORMAT!r})")
        bounds, names, dim = doc.get("bounds"), doc.get("shards"), doc.get("dim")
        if not (isinstance(bounds, list) and isinstance(names, list) and isinstance(dim, int)
                and len(bounds) == len(names) + 1 and all(isinstance(x, str) for x in names)):
            raise ValueError(f"{str(directory / MANIFEST)!r} is malformed")
        remote = cls._remote(actor_options)
        actors = [remote.remote(str(confined(directory, name)), num_threads) for name in names]
        index = cls(actors, [int(b) for b in bounds], dim)
        index._check_shapes()
        return index

    def save(self, directory: Union[str, Path]) -> Path:
        """Write every shard (by its actor, :meth:`Index.save`) under ``directory`` and a JSON manifest;
        :meth:`load` opens it. The actors write, so ``directory`` must be writable where they run."""
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        names = [f"shard-{s:05d}" for s in range(self.n_shards)]
        ray.get([a.save.remote(str(directory / name)) for a, name in zip(self._actors, names)])
        atomic_write_json(directory / MANIFEST, {"format": FORMAT, "format_version": 1, "dim": self._dim,
                                                 "bounds": self._bounds.tolist(), "shards": names})
        return directory

    @staticmethod
    def _remote(actor_options: Optional[Dict[str, Any]]) -> Any:
        options: Dict[str, Any] = {"num_cpus": 1}
        if actor_options is not None:
            if not isinstance(actor_options, dict):
                raise TypeError(f"actor_options must be a dict of Ray actor options, got "
                                f"{type(actor_options).__name__}")
            options.update(actor_options)
        return ray.remote(_Shard).options(**options)

    def _check_shapes(self) -> None:
        shapes = ray.get([a.shape.remote() for a in self._actors])
        sizes = np.diff(self._bounds)
        for s, (n, d) in enumerate(shapes):
            if n != sizes[s] or d != self._dim:
                raise ValueError(f"shard {s} holds ({n}, {d}) but the index expects ({sizes[s]}, {self._dim})")

    def shutdown(self) -> None:
        """Kill the shard actors (the index is unusable afterwards)."""
        for a in self._actors:
            ray.kill(a)
        self._actors = []

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ VectorIndex
    @property
    def n_items(self) -> int:
        return int(self._bounds[-1])

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def n_shards(self) -> int:
        return len(self._actors)

    @property
    def bounds(self) -> Tuple[int, ...]:
        """Shard s holds ids ``bounds[s] .. bounds[s + 1] - 1``."""
        return tuple(int(b) for b in self._bounds)

    def __len__(self) -> int:
        return self.n_items

    def __repr__(self) -> str:
        return f"ShardedIndex(n_items={self.n_items}, dim={self.dim}, n_shards={self.n_shards})"

    def search(self, U: ArrayLike, k: int, *, exclude: Exclude = None
               ) -> Tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Exact top-k items by inner product, as :meth:`axn_fast.Index.search` (same arguments, same result)."""
        if not self._actors:
            raise RuntimeError("this ShardedIndex was shut down")
        U = as_float32_array(U, "U", ndim=(1, 2), dim=self.dim)
        single = U.ndim == 1
        U2 = U.reshape(1, -1) if single else U
        nq = U2.shape[0]
        k = check_int(k, "k", minimum=0)
        ex_ids, ex_offsets = parse_exclude(exclude, nq, self.n_items)
        if k == 0 or nq == 0:
            S, ids = np.zeros((nq, k), np.float32), np.zeros((nq, k), np.int64)
        else:
            u_ref = ray.put(U2) if self.n_shards > 1 and U2.nbytes > 100_000 else U2
            refs = []
            for s, a in enumerate(self._actors):
                lo, hi = int(self._bounds[s]), int(self._bounds[s + 1])
                loc_ids, loc_off = self._local(ex_ids, ex_offsets, lo, hi, nq)
                refs.append(a.search.remote(u_ref, min(k, hi - lo), loc_ids, loc_off))
            parts = ray.get(refs)
            S, ids = merge_topk([p[0] for p in parts],
                                [np.where(p[1] >= 0, p[1] + self._bounds[s], -1) for s, p in enumerate(parts)], k)
        return (S[0], ids[0]) if single else (S, ids)

    @staticmethod
    def _local(ids: Optional[NDArray[np.int64]], offsets: Optional[NDArray[np.int64]], lo: int, hi: int,
               nq: int) -> Tuple[Optional[NDArray[np.int64]], Optional[NDArray[np.int64]]]:
        if ids is None:
            return None, None
        inside = (ids >= lo) & (ids < hi)
        local = np.ascontiguousarray(ids[inside] - lo)
        if offsets is None:
            return local, None
        q_of = np.repeat(np.arange(nq), np.diff(offsets))
        loc_off = np.zeros(nq + 1, dtype=np.int64)
        np.cumsum(np.bincount(q_of[inside], minlength=nq), out=loc_off[1:])
        return local, loc_off

    def vectors_of(self, ids: ArrayLike) -> NDArray[np.float32]:
        """(len(ids), dim) C-contiguous float32 rows V[ids], fetched from the shards that hold them."""
        if not self._actors:
            raise RuntimeError("this ShardedIndex was shut down")
        ids = as_ids(ids, "ids", self.n_items)
        out = np.empty((len(ids), self._dim), dtype=np.float32)
        shard_of = np.searchsorted(self._bounds, ids, side="right") - 1
        wanted = [(s, np.flatnonzero(shard_of == s)) for s in np.unique(shard_of)]
        rows = ray.get([self._actors[s].vectors_of.remote(ids[pos] - self._bounds[s]) for s, pos in wanted])
        for (_, pos), r in zip(wanted, rows):
            out[pos] = r
        return out
