"""AXN as a Ray Serve deployment: concurrent requests batched with ``@serve.batch``.

:func:`axn_deployment` returns a Serve application; ``serve.run(app)`` starts it.
Each replica builds its cross-encoder once (``ce_factory``) and opens the index
once (an :class:`~axn_fast.Index` or :class:`~axn_fast.distributed.sharded.ShardedIndex`
object, or the directory of a saved one). Concurrent requests are gathered
(up to ``max_batch_size``, waiting at most ``batch_wait_timeout_s``) into one
:func:`~axn_fast.search.batch.adaptive_search_batch` call, run in a worker
thread; each answer equals ``adaptive_search`` for that query alone.

Requests: over HTTP, ``POST <route_prefix>`` with a JSON body ``{"query": ...,
"k": 10, "budget": 100, "rounds": 5}`` (numbers optional, the deployment's
defaults otherwise); from Python, ``handle.search.remote(query, k=, budget=,
rounds=)``. The answer is ``{"ids": [...], "scores": [...], "n_ce_calls": int,
"batch_size": int}`` (``batch_size``: requests served by the same batch call).
A request whose numbers do not fit (k <= budget, rounds <= budget, budget <=
number of items) is refused alone (HTTP 422) before it joins a batch.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from axn_fast.distributed.score_matrix import CEFactory
from axn_fast.distributed.sharded import MANIFEST, ShardedIndex
from axn_fast._validation import check_int
from axn_fast.search.batch import adaptive_search_batch
from axn_fast.search.budget import check_budget
from axn_fast.search.index import Index
from axn_fast.search.protocol import VectorIndex

__all__ = ["AXNDeployment", "axn_deployment", "open_index"]

IndexSource = Union[str, Path, VectorIndex]


def open_index(source: IndexSource, *, num_threads: int = 0,
               shard_actor_options: Optional[Dict[str, Any]] = None) -> VectorIndex:
    """An index object as is, or open a saved one: a directory written by :meth:`ShardedIndex.save`
    (its shards go to new actors) or by :meth:`Index.save` (memory-mapped)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if (path / MANIFEST).is_file():
            return ShardedIndex.load(path, num_threads=num_threads, actor_options=shard_actor_options)
        return Index.load(path, mmap=True, num_threads=num_threads)
    if not isinstance(source, VectorIndex):
        raise TypeError(f"index must be a VectorIndex (Index, ShardedIndex ...) or the path of a saved one, "
                        f"got {type(source).__name__}")
    return source


class AXNDeployment:
    """One Serve replica: an index, a cross-encoder and the AXN defaults (see the module docstring)."""

    def __init__(self, index: IndexSource, ce_factory: CEFactory, *, k: int = 10, budget: int = 100,
                 rounds: int = 5, seed: Optional[int] = 0, num_threads: int = 0,
                 shard_actor_options: Optional[Dict[str, Any]] = None, max_batch_size: int = 16,
                 batch_wait_timeout_s: float = 0.005) -> None:
        self.index = open_index(index, num_threads=num_threads, shard_actor_options=shard_actor_options)
        self.ce = ce_factory()
        self.seed = seed
        self.defaults = (k, budget, rounds)
        self._check()
        self._search_batch.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self._search_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]

    def _check(self, k: Optional[int] = None, budget: Optional[int] = None,
               rounds: Optional[int] = None) -> Dict[str, int]:
        """The request's numbers (the defaults where None), checked against the index."""
        dk, db, dr = self.defaults
        r = check_int(dr if rounds is None else rounds, "rounds", minimum=1)
        b, kk = check_budget(db if budget is None else budget, dk if k is None else k, self.index.n_items, rounds=r)
        return {"k": kk, "budget": b, "rounds": r}

    async def search(self, query: Any, k: Optional[int] = None, budget: Optional[int] = None,
                     rounds: Optional[int] = None) -> Dict[str, Any]:
        """AXN for one query (batched with the concurrent ones). Raises ValueError for numbers that do not fit."""
        result: Dict[str, Any] = await self._search_batch({"query": query, **self._check(k, budget, rounds)})
        return result

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _search_batch(self, requests: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        def run() -> List[Dict[str, Any]]:
            results = adaptive_search_batch(
                self.index, [r["query"] for r in requests], self.ce, [r["budget"] for r in requests],
                k=[r["k"] for r in requests], rounds=[r["rounds"] for r in requests], seed=self.seed)
            return [{"ids": res.ids.tolist(), "scores": res.scores.tolist(), "n_ce_calls": int(res.n_ce_calls),
                     "batch_size": len(requests)} for res in results]
        return await asyncio.to_thread(run)

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict) or "query" not in body:
                raise ValueError('the body must be a JSON object with a "query"')
            unknown = set(body) - {"query", "k", "budget", "rounds"}
            if unknown:
                raise ValueError(f"unknown fields {sorted(unknown)}; allowed: query, k, budget, rounds")
            args = {name: body.get(name) for name in ("k", "budget", "rounds")}
            for name, v in args.items():
                if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                    raise ValueError(f"{name} must be an integer, got {v!r}")
            settings = self._check(**args)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        try:
            out = await self._search_batch({"query": body["query"], **settings})
        except Exception as exc:  # the CE (or anything else) failed: the service keeps serving
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)
        return JSONResponse(out)


def axn_deployment(index: IndexSource, ce_factory: CEFactory, *, k: int = 10, budget: int = 100, rounds: int = 5,
                   seed: Optional[int] = 0, num_replicas: int = 1, max_batch_size: int = 16,
                   batch_wait_timeout_s: float = 0.005, num_threads: int = 0,
                   ray_actor_options: Optional[Dict[str, Any]] = None,
                   shard_actor_options: Optional[Dict[str, Any]] = None) -> Any:
    """A Serve application of AXN over ``index`` (``serve.run(app, route_prefix=...)`` starts it).

    index : an Index / ShardedIndex (pickled to every replica; a ShardedIndex's shard
        actors are shared) or the directory of a saved one (each replica opens it;
        a saved ShardedIndex gets new shard actors per replica).
    ce_factory : picklable zero-argument callable building the CE in each replica
        (e.g. :class:`~axn_fast.distributed.score_matrix.CESpec`).
    k, budget, rounds, seed : AXN defaults of a request (seed of the random first round).
    num_replicas : replicas of the deployment; ray_actor_options : their resources
        (e.g. ``{"num_gpus": 1}`` for a GPU CE).
    max_batch_size, batch_wait_timeout_s : ``@serve.batch`` settings.
    num_threads : scan threads of an index opened from a directory.
    """
    options: Dict[str, Any] = {"num_replicas": num_replicas,
                               "max_ongoing_requests": max(100, 2 * max_batch_size)}
    if ray_actor_options is not None:
        options["ray_actor_options"] = ray_actor_options
    deployment = serve.deployment(name="AXN", **options)(AXNDeployment)
    return deployment.bind(index, ce_factory, k=k, budget=budget, rounds=rounds, seed=seed,
                           num_threads=num_threads, shard_actor_options=shard_actor_options,
                           max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)
