"""Serving AXN over HTTP with dynamic batching (the ``serve`` extra: fastapi, uvicorn, prometheus-client).

``create_app(bundle_or_index, ce, ...)`` returns a FastAPI app (``POST /search``,
``GET /health``, ``GET /metrics``); ``axn-fast serve [IDX]`` runs one with uvicorn.
"""
from axn_fast.integrations.ranker import Ranker, SearchRequest
from axn_fast.serve.app import SearchBody, create_app
from axn_fast.serve.batcher import DynamicBatcher

__all__ = ["create_app", "SearchBody", "Ranker", "SearchRequest", "DynamicBatcher"]
