"""`axn-fast example`: AXN versus retrieve-and-rerank on a synthetic cross-encoder (no model, no data)."""
from __future__ import annotations

import argparse
import time
from typing import List

from axn_fast.cli._args import UsageError, float_range, int_range

HELP = "AXN vs retrieve-and-rerank on a built-in synthetic low-rank cross-encoder (needs only numpy)."

#: Noise of the dual-encoder's copies of the factors: the DE sees the items well but the queries badly,
#: the setting AXN is made for (its least squares refits the query against the CE's scores).
DE_QUERY_NOISE = 1.5
DE_ITEM_NOISE = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-items", type=int_range(1), default=100_000, help="number of items (default 100000)")
    parser.add_argument("--dim", type=int_range(1), default=64, help="rank of the scores = embedding dimension "
                                                                     "(default 64)")
    parser.add_argument("--queries", type=int_range(1), default=50, help="number of test queries (default 50)")
    parser.add_argument("--budgets", type=int_range(1), nargs="+", default=[50, 100, 200],
                        help="CE call budgets (each <= --n-items; default 50 100 200)")
    parser.add_argument("--rounds", type=int_range(1), default=5, help="AXN rounds (default 5)")
    parser.add_argument("--k", type=int_range(1), default=10, help="k of Top-k-Recall (default 10, <= every budget)")
    parser.add_argument("--noise", type=float_range(0.0), default=0.5,
                        help="noise-to-signal ratio of the CE scores (default 0.5)")
    parser.add_argument("--seed", type=int_range(0), default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from axn_fast.datasets.synthetic import low_rank_scores
    from axn_fast.encoders.dense import DenseScoreCE
    from axn_fast.evaluation.metrics import topk_recall
    from axn_fast.methods.rerank import retrieve_and_rerank
    from axn_fast.search.index import Index

    n, nq = args.n_items, args.queries
    for b in args.budgets:
        if not max(args.k, args.rounds) <= b <= n:
            raise UsageError(f"every --budgets value must be in [max(--k, --rounds)={max(args.k, args.rounds)}, "
                             f"--n-items={n}], got {b}")
    # A "cross-encoder" whose scores are low-rank plus noise, and a dual-encoder that sees noisy
    # copies of the same factors: the items well, the queries badly.
    d = low_rank_scores(nq, n, args.dim, args.noise, args.seed, de_noise=DE_QUERY_NOISE,
                        item_de_noise=DE_ITEM_NOISE)
    ce = DenseScoreCE(d.scores)
    index = Index(d.item_emb)
    true = np.argsort(-d.scores, axis=1, kind="stable")[:, : args.k]
    print(f"synthetic CE: {nq} queries x {n} items, rank {args.dim} + noise {args.noise:g}; "
          "DE item/query embeddings are noisy copies of the factors")
    print(f"{'budget':>7} {'method':<8} {'Top-%d-Recall' % args.k:>14} {'CE calls':>9} {'ms/query (outside CE)':>22}")
    for budget in args.budgets:
        for name in ("RNR-DE", "AXN"):
            recalls: List[float] = []
            calls, t_total = 0, 0.0
            for q in range(nq):
                t0 = time.perf_counter()
                cand = index.search(d.query_emb[q], budget)[1]
                if name == "RNR-DE":
                    res = retrieve_and_rerank(cand, q, ce, budget, k=args.k)
                else:
                    res = index.adaptive_search(q, ce, budget, k=args.k, rounds=args.rounds, init=cand)
                t_total += time.perf_counter() - t0 - res.seconds_ce
                recalls.append(float(topk_recall(res.ids, true[q], args.k)))
                calls += res.n_ce_calls
            print(f"{budget:>7} {name:<8} {np.mean(recalls):>14.3f} {calls:>9} {1000 * t_total / nq:>22.2f}")
    return 0
