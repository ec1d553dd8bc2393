"""The HTTP service: ``POST /search``, ``GET /health``, ``GET /metrics``, with dynamic batching.

:func:`create_app` returns a FastAPI app; run it with uvicorn (``axn-fast serve``
does) or mount it in an existing app. Concurrent ``/search`` requests are
gathered by a :class:`~axn_fast.serve.batcher.DynamicBatcher` (``max_batch``,
``max_wait_ms``) into one :func:`~axn_fast.search.batch.adaptive_search_batch`
call, run in a worker thread off the event loop. Each answer equals what
``adaptive_search`` returns for that query alone.

Status codes: 200; 422 for a bad request (FastAPI's ``detail`` list, whose
``loc`` names the field, plus one ``error`` line); 503 with ``Retry-After``
when ``max_queue`` requests wait already or the service is shutting down; 504
when the request's deadline passes; 500 when the cross-encoder (or anything
else) fails, with the reason.
"""
from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence, Union

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from axn_fast.encoders.protocol import CrossEncoder
from axn_fast.errors import PaidWorkInterrupted
from axn_fast.indexing.bundle import IndexBundle
from axn_fast.integrations.ranker import QueryEmbedder, Ranker, SearchRequest
from axn_fast.search.normalization import NormalizationLike
from axn_fast.search.protocol import VectorIndex
from axn_fast.search.results import SearchResult
from axn_fast.serve.batcher import Closing, DeadlineExceeded, DynamicBatcher, QueueFull
from axn_fast.serve.metrics import ServiceMetrics

__all__ = ["create_app", "SearchBody"]

_CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"


class SearchBody(BaseModel):
    """The body of ``POST /search``. Numbers left out take the service's defaults
    (capped at the number of items / the budget); given ones must fit: k <= budget,
    rounds <= budget, budget <= number of items."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = Field(min_length=1, max_length=10_000, description="the query text")
    k: Optional[int] = Field(None, ge=1, description="results wanted")
    budget: Optional[int] = Field(None, ge=1, description="cross-encoder calls for this query")
    rounds: Optional[int] = Field(None, ge=1, description="AXN rounds")
    timeout_ms: Optional[float] = Field(None, gt=0, description="deadline of this request, milliseconds")


def _field_error(field: str, message: str) -> JSONResponse:
    detail = [{"type": "value_error", "loc": ["body", field], "msg": message}]
    return JSONResponse({"detail": detail, "error": f"{field}: {message}"}, status_code=422)


def create_app(target: Union[IndexBundle, Ranker, VectorIndex], ce: Optional[CrossEncoder] = None, *,
               items: Optional[Sequence[str]] = None, embed: Optional[QueryEmbedder] = None,
               normalization: NormalizationLike = None, lam: float = 0.0, seed: Optional[int] = 0,
               default_k: int = 10, default_budget: int = 100, default_rounds: int = 5,
               max_batch: int = 32, max_wait_ms: float = 5.0, max_queue: int = 256, timeout_s: float = 30.0,
               retry_after_s: int = 1, device: str = "auto") -> FastAPI:
    """A FastAPI app serving AXN search over ``target``.

    target : an :class:`~axn_fast.indexing.bundle.IndexBundle` (its items,
        normalisation, dual-encoder for ``u0`` and, when ``ce`` is None, its CE),
        a ready :class:`Ranker`, or a bare index (then ``ce`` is required).
    ce : the cross-encoder, called with query texts (``score_batch`` when it has it).
    items, embed, normalization, lam, seed, default_* : see :class:`Ranker`
        (ignored for a ready service; for a bundle, ``items``/``normalization``
        come from it).
    max_batch : most requests per ``adaptive_search_batch`` call (1: no batching).
    max_wait_ms : longest wait of the oldest queued request for others to join.
    max_queue : most requests waiting; beyond, 503 with ``Retry-After: retry_after_s``.
    timeout_s : deadline of every request (a request's ``timeout_ms`` may shorten it); 504 past it.
    device : for the bundle's CE and dual-encoder.

    The app's state holds ``service``, ``batcher`` and ``metrics``. Its lifespan
    drains the queue on shutdown; when mounted inside another app (whose
    lifespan does not reach it), call ``await app.state.batcher.close()`` there.
    """
    if isinstance(target, Ranker):
        service = target
    else:
        opts: Dict[str, Any] = dict(lam=lam, seed=seed, default_k=default_k, default_budget=default_budget,
                                    default_rounds=default_rounds)
        if isinstance(target, IndexBundle):
            service = Ranker.from_bundle(target, ce, device=device, embed=embed, **opts)
        else:
            if ce is None:
                raise TypeError("ce is required with a bare index (a bundle can build its own)")
            service = Ranker(target, ce, items=items, embed=embed, normalization=normalization, **opts)
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    metrics = ServiceMetrics()

    def run_batch(requests: List[SearchRequest]) -> List[SearchResult]:
        t0 = time.perf_counter()
        results = service.search(requests)
        metrics.record_batch(len(requests), time.perf_counter() - t0, sum(r.n_ce_calls for r in results),
                             sum(r.seconds_ce for r in results))
        return results

    batcher: DynamicBatcher[SearchRequest, SearchResult] = DynamicBatcher(
        run_batch, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue)
    metrics.queue_depth.set_function(lambda: batcher.depth)
    metrics.running.set_function(lambda: batcher.running)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await batcher.close()  # uvicorn has finished the open requests; finish what is queued

    app = FastAPI(title="axn_fast search", lifespan=lifespan,
                  description="Budgeted k-NN search with a cross-encoder (AXN), batched across requests.")
    app.state.service, app.state.batcher, app.state.metrics = service, batcher, metrics

    def done(status: int, t0: float, content: Any, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
        metrics.requests.labels(status=str(status)).inc()
        metrics.latency.observe(time.perf_counter() - t0)
        return JSONResponse(content, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors(), exclude={"input", "url", "ctx"})
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(x) for x in first.get("loc", []) if x != "body") or "body"
        metrics.requests.labels(status="422").inc()
        return JSONResponse({"detail": errors, "error": f"{where}: {first.get('msg')}"}, status_code=422)

    @app.post("/search")
    async def search(body: SearchBody) -> JSONResponse:
        """AXN search for one query; concurrent requests share batches."""
        t0 = time.perf_counter()
        error, (k, budget, rounds) = service.resolve(body.k, body.budget, body.rounds)
        if error is not None:
            metrics.requests.labels(status="422").inc()
            return _field_error(*error)
        request = SearchRequest(body.query, k, budget, rounds)
        timeout = timeout_s if body.timeout_ms is None else min(timeout_s, body.timeout_ms / 1000.0)
        retry = {"Retry-After": str(retry_after_s)}
        try:
            outcome = await batcher.submit(request, timeout)
        except QueueFull as exc:
            return done(503, t0, {"detail": f"overloaded: {exc}; retry later"}, retry)
        except Closing as exc:
            return done(503, t0, {"detail": str(exc)}, retry)
        except DeadlineExceeded as exc:
            return done(504, t0, {"detail": str(exc)})
        except PaidWorkInterrupted as exc:
            return done(500, t0, {"detail": f"the cross-encoder failed: {exc}"})
        except Exception as exc:  # reported, not hidden: the service keeps running
            return done(500, t0, {"detail": f"search failed: {type(exc).__name__}: {exc}"})
        answer = service.answer(request, outcome.result)
        answer["batch_size"] = outcome.batch_size
        answer["timings_ms"] = {"queued": 1000 * outcome.seconds_queued, "batch": 1000 * outcome.seconds_batch,
                                "total": 1000 * (time.perf_counter() - t0)}
        return done(200, t0, answer)

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 while serving, 503 while draining; sizes and queue state."""
        state = "draining" if batcher.closing else "ok"
        body = {"status": state, "n_items": service.n_items, "dim": int(service.index.dim),
                "queue_depth": batcher.depth, "batch_running": batcher.running, "max_batch": batcher.max_batch,
                "max_queue": batcher.max_queue, "items": service.items is not None,
                "query_embedder": service.embed is not None}
        return JSONResponse(body, status_code=200 if state == "ok" else 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        """Prometheus text format."""
        return Response(metrics.render(), media_type=_CONTENT_TYPE_METRICS)

    return app
