"""`axn-fast serve`: an HTTP search service over a saved index (default: the shipped WordNet subset)."""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any, Callable

from axn_fast.cli._args import UsageError, device, float_range, int_range

HELP = "Serve AXN search over HTTP (POST /search, GET /health, GET /metrics) with dynamic batching."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", type=Path, nargs="?", default=None,
                        help="directory written by `axn-fast index` (default: the shipped WordNet subset, "
                             "embedded with the bundled MiniLM at start-up)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int_range(0, 65535), default=8000, help="port (default 8000)")
    parser.add_argument("--max-batch", type=int_range(1), default=32,
                        help="most requests per batched search (default 32; 1 disables batching)")
    parser.add_argument("--max-wait-ms", type=float_range(0.0), default=5.0,
                        help="longest wait of a queued request for others to join its batch (default 5)")
    parser.add_argument("--max-queue", type=int_range(1), default=256,
                        help="most requests waiting; beyond, 503 with Retry-After (default 256)")
    parser.add_argument("--timeout-s", type=float_range(0.001), default=30.0,
                        help="deadline of every request in seconds; 504 past it (default 30)")
    parser.add_argument("--budget", type=int_range(1), default=100,
                        help="CE calls per query when a request gives none (default 100, capped at the items)")
    parser.add_argument("--k", type=int_range(1), default=10, help="results when a request gives none (default 10)")
    parser.add_argument("--rounds", type=int_range(1), default=5, help="AXN rounds when a request gives none (default 5)")
    parser.add_argument("--lam", type=float_range(0.0, 1.0), default=0.0,
                        help="weight of the dual-encoder's query embedding (Eq. 7), needs a dual-encoder")
    parser.add_argument("--seed", type=int_range(0), default=0, help="seed of a random first round (default 0)")
    parser.add_argument("--device", type=device, default="auto", help="auto | cpu | cuda[:N] (default auto)")
    parser.add_argument("--ce-factory", default=None, metavar="MODULE:FUNCTION",
                        help="build the cross-encoder by calling FUNCTION(bundle) from an importable MODULE "
                             "instead of the bundle's own CE configuration (your own model, a remote CE, ...)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn's log level (default info)")


def load_factory(spec: str) -> Callable[[Any], Any]:
    """``MODULE:FUNCTION`` -> the function (imported like uvicorn's app strings)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--ce-factory must be MODULE:FUNCTION, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--ce-factory: cannot import {module_name!r}: {exc}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UsageError(f"--ce-factory: {module_name!r} has no callable {attr!r}")
    return fn


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from axn_fast.serve.app import create_app
    except ImportError as exc:
        raise ImportError(f"{exc}; serving needs the serve extra: pip install 'axn_fast[serve]'") from exc
    from axn_fast.indexing.bundle import IndexBundle

    factory = None if args.ce_factory is None else load_factory(args.ce_factory)
    embed = None
    if args.index is None:
        from axn_fast.serve.defaults import wordnet_subset_bundle

        print("axn-fast serve: no index given: serving the shipped WordNet subset (embedding its items with "
              "the bundled MiniLM)", file=sys.stderr)
        bundle, embed = wordnet_subset_bundle(device=args.device)
    else:
        bundle = IndexBundle.load(args.index, verify="full")
    ce = factory(bundle) if factory is not None else None
    if ce is None and (bundle.ce is None or bundle.items is None):
        raise UsageError(f"{str(args.index)!r} records no cross-encoder and item texts; give --ce-factory")
    if args.lam > 0 and bundle.de_model is None and embed is None:
        raise UsageError("--lam > 0 needs a dual-encoder for the query embedding, and the index has none")
    app = create_app(bundle, ce, embed=embed, lam=args.lam, seed=args.seed, default_k=args.k,
                     default_budget=args.budget, default_rounds=args.rounds, max_batch=args.max_batch,
                     max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, timeout_s=args.timeout_s,
                     device=args.device)
    print(f"axn-fast serve: {bundle.index.n_items} items; POST http://{args.host}:{args.port}/search "
          f"{{\"query\": ...}}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
