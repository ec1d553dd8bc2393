"""`axn-fast search`: AXN search with the cross-encoder over an index saved by `axn-fast index`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

HELP = "Find the cross-encoder's top-k items for a query with AXN, from a saved index."


def add_arguments(parser) -> None:
    parser.add_argument("index", type=Path, help="directory written by `axn-fast index`")
    parser.add_argument("query", nargs="*", help="query text (or use --query-file)")
    parser.add_argument("--query-file", type=Path, default=None, help="text file, one query per line")
    parser.add_argument("--budget", type=int, default=100, help="cross-encoder calls per query (default 100)")
    parser.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="AXN rounds (default 5)")
    parser.add_argument("--lam", type=float, default=0.0, help="weight of the parametric query embedding (Eq. 7)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per query")


def run(args) -> int:
    import axn_fast
    from axn_fast.cli.index import read_lines, resolve_model, sha1_lines
    from axn_fast.encoders.cross_encoder import HFCrossEncoder
    from axn_fast.encoders.dual_encoder import HFDualEncoder

    queries = [" ".join(args.query)] if args.query else []
    if args.query_file is not None:
        queries += read_lines(args.query_file, "queries")
    if not queries or not all(q.strip() for q in queries):
        raise SystemExit("axn-fast: give a query text or --query-file")
    index = axn_fast.Index.load(args.index)
    meta = index.metadata
    if meta.get("created_by") != "axn-fast index":
        raise SystemExit(f"axn-fast: {str(args.index)!r} was not written by `axn-fast index` (no model or items "
                         "recorded); use the Python API for such indexes")
    items = read_lines(args.index / meta["items_file"], "items")
    if sha1_lines(items) != meta["items_sha1"] or len(items) != index.n_items:
        raise SystemExit(f"axn-fast: {meta['items_file']!r} in {str(args.index)!r} does not match the index "
                         "(edited after indexing?)")
    budget = min(args.budget, index.n_items)
    k = min(args.k, budget)
    rounds = min(args.rounds, budget)
    de = HFDualEncoder(resolve_model(meta["de_model"]), device=args.device, show_progress_bar=False)
    ce = HFCrossEncoder(resolve_model(meta["ce_model"]), items, head=meta["ce"]["head"],
                        max_length=meta["ce"]["max_length"], device=args.device, show_progress_bar=False)
    Q = de.encode(queries)
    enc = getattr(index, "query_encoder", None)
    U0 = enc.embed_queries(Q) if enc is not None else Q
    for q, u0 in zip(queries, U0):
        res = index.adaptive_search(q, ce, budget, k=k, rounds=rounds, u0=u0, lam=args.lam)
        if args.json:
            print(json.dumps({"query": q, "ids": res.ids.tolist(), "scores": [float(s) for s in res.scores],
                              "items": [items[i] for i in res.ids], "ce_calls": res.n_ce_calls}))
            continue
        print(f"query: {q}  ({res.n_ce_calls} CE calls, {1000 * res.seconds_ce:.0f} ms in the CE)")
        for rank, (i, s) in enumerate(zip(res.ids, res.scores), 1):
            print(f"{rank:>3}. {s:9.4f}  [{i}] {items[i]}")
    sys.stdout.flush()
    return 0
