"""`axn-fast example`: AXN versus retrieve-and-rerank on a synthetic cross-encoder (no model, no data)."""
from __future__ import annotations

import time

HELP = "AXN vs retrieve-and-rerank on a built-in synthetic low-rank cross-encoder (needs only numpy)."


def add_arguments(parser) -> None:
    parser.add_argument("--n-items", type=int, default=100_000, help="number of items (default 100000)")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension (default 64)")
    parser.add_argument("--queries", type=int, default=50, help="number of test queries (default 50)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200], help="CE call budgets")
    parser.add_argument("--rounds", type=int, default=5, help="AXN rounds (default 5)")
    parser.add_argument("--k", type=int, default=10, help="k of Top-k-Recall (default 10)")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    import numpy as np

    import axn_fast

    rng = np.random.default_rng(args.seed)
    n, d, nq = args.n_items, args.dim, args.queries
    # A "cross-encoder" whose scores are low-rank plus noise, and a weak dual-encoder
    # that sees the items well but the queries badly (the setting AXN is made for).
    Q = rng.standard_normal((nq, d)).astype(np.float32)
    V = rng.standard_normal((n, d)).astype(np.float32)
    S = Q @ V.T + 0.5 * rng.standard_normal((nq, n)).astype(np.float32)
    Q_de = Q + 1.5 * rng.standard_normal((nq, d)).astype(np.float32)
    V_de = V + 0.2 * rng.standard_normal((n, d)).astype(np.float32)
    ce = axn_fast.DenseScoreCE(S)
    index = axn_fast.Index(V_de)
    true = np.argsort(-S, axis=1)[:, : args.k]
    print(f"synthetic CE: {nq} queries x {n} items, rank {d} + noise; DE item/query embeddings are noisy copies")
    print(f"{'budget':>7} {'method':<8} {'Top-%d-Recall' % args.k:>14} {'CE calls':>9} {'ms/query (outside CE)':>22}")
    for budget in args.budgets:
        for name in ("RNR-DE", "AXN"):
            recalls, calls, t_total = [], 0, 0.0
            for q in range(nq):
                t0 = time.perf_counter()
                cand = index.search(Q_de[q], budget)[1]
                if name == "RNR-DE":
                    res = axn_fast.retrieve_and_rerank(cand, q, ce, budget, k=args.k)
                else:
                    res = index.adaptive_search(q, ce, budget, k=args.k, rounds=args.rounds, init=cand)
                t_total += time.perf_counter() - t0 - res.seconds_ce
                recalls.append(axn_fast.topk_recall(res.ids, true[q], args.k))
                calls += res.n_ce_calls
            print(f"{budget:>7} {name:<8} {np.mean(recalls):>14.3f} {calls:>9} {1000 * t_total / nq:>22.2f}")
    return 0
