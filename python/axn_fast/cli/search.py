"""`axn-fast search`: AXN search with the cross-encoder over an index saved by `axn-fast index`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from axn_fast.cli._args import UsageError, float_range, int_range

HELP = "Find the cross-encoder's top-k items for a query with AXN, from a saved index."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", type=Path, help="directory written by `axn-fast index`")
    parser.add_argument("query", nargs="*", help="query text (or use --query-file)")
    parser.add_argument("--query-file", type=Path, default=None, help="text file, one query per line")
    parser.add_argument("--budget", type=int_range(1), default=100,
                        help="cross-encoder calls per query, capped at the number of items (default 100)")
    parser.add_argument("--k", type=int_range(1), default=10, help="results per query, capped at the budget (default 10)")
    parser.add_argument("--rounds", type=int_range(1), default=5, help="AXN rounds, capped at the budget (default 5)")
    parser.add_argument("--lam", type=float_range(0.0), default=0.0,
                        help="weight of the parametric query embedding (Eq. 7), >= 0")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per query")


def run(args: argparse.Namespace) -> int:
    from axn_fast.cli.index import model_path, read_lines
    from axn_fast.encoders.dual_encoder import HFDualEncoder
    from axn_fast.indexing.bundle import IndexBundle

    queries = [" ".join(args.query)] if args.query else []
    if args.query_file is not None:
        queries += read_lines(args.query_file, "queries", "--query-file")
    if not queries or not all(q.strip() for q in queries):
        raise UsageError("give a query text or --query-file")
    bundle = IndexBundle.load(args.index, verify="full")
    if bundle.items is None or bundle.ce is None or bundle.de_model is None:
        raise ValueError(f"{str(args.index)!r} was not written by `axn-fast index` (it records no items, "
                         "cross-encoder or dual-encoder); use the Python API for it")
    budget = min(args.budget, bundle.index.n_items)
    k, rounds = min(args.k, budget), min(args.rounds, budget)
    items = bundle.items
    de = HFDualEncoder(model_path(bundle.de_model), device=args.device, show_progress_bar=False)
    ce = bundle.load_cross_encoder(device=args.device, show_progress_bar=False)
    U0 = bundle.embed_queries(de.encode(queries))
    for q, u0 in zip(queries, U0):
        res = bundle.index.adaptive_search(q, ce, budget, k=k, rounds=rounds, u0=u0, lam=args.lam,
                                           normalization=bundle.normalization)
        if args.json:
            print(json.dumps({"query": q, "ids": res.ids.tolist(), "scores": [float(s) for s in res.scores],
                              "items": [items[i] for i in res.ids], "ce_calls": res.n_ce_calls}))
            continue
        print(f"query: {q}  ({res.n_ce_calls} CE calls, {1000 * res.seconds_ce:.0f} ms in the CE)")
        for rank, (i, s) in enumerate(zip(res.ids, res.scores), 1):
            print(f"{rank:>3}. {s:9.4f}  [{i}] {items[i]}")
    sys.stdout.flush()
    return 0
