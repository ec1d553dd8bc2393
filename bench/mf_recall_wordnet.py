"""Recall of AXN with MF_TRNS / MF_IND item embeddings versus DE embeddings, on the shipped WordNet subset.

    python bench/mf_recall_wordnet.py [--k-d 100] [--budgets 50 100 200] [--out bench/results/mf/recall_wordnet.png]

G = the train queries' exact CE scores (ds.scores) at each train query's
DE-top-k_d items (built with axn_fast.build_score_matrix over the dense
matrix); CE scores normalised to the DE's distribution (Appendix A.4). Item
embeddings: DE (all-MiniLM-L6-v2, the bundled model), MF_TRNS
(axn_fast.indexing.factorize from the DE embeddings) and MF_IND (axn_fast.InductiveMF).
Test queries: u0 = DE embedding for DE and MF_TRNS (Appendix A.4), the MF_IND
query MLP's output for MF_IND. Top-k-Recall@m of AXN (5 rounds, lambda 0,
round 1 = top items by u0) and of retrieve-and-rerank with the same u0, against
the exact top-k of the dense CE scores. Prints a markdown table and saves a plot.
"""
import argparse
import time

import numpy as np

import axn_fast
from axn_fast import Index, build_score_matrix, factorize, topk_recall


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k-d", type=int, default=100)
    p.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--split", default="test")
    p.add_argument("--trns-epochs", type=int, default=30)
    p.add_argument("--trns-lr", type=float, default=0.02)
    p.add_argument("--ind-epochs", type=int, default=20)
    p.add_argument("--ind-lr", type=float, default=0.005)
    p.add_argument("--out", default="bench/results/mf/recall_wordnet.png")
    args = p.parse_args(argv)

    ds = axn_fast.load_wordnet_subset()
    S = ds.scores
    train, test = ds.splits["train"], ds.splits[args.split]
    n = ds.n_items
    print(f"WordNet subset: {n} items, {len(train)} train / {len(test)} {args.split} queries; CE {ds.ce_config}")
    t0 = time.perf_counter()
    de = axn_fast.HFDualEncoder(axn_fast.minilm_path(), device="cpu", show_progress_bar=False)
    I = de.encode(ds.items)
    Q = de.encode(ds.queries)
    print(f"DE embeddings: {time.perf_counter() - t0:.1f} s")

    k_d = min(args.k_d, n)
    t0 = time.perf_counter()
    G = build_score_matrix(lambda row, ids: S[train[row], ids], list(range(len(train))), n, strategy="de-topk",
                           k_d=k_d, de_query_emb=Q[train], de_item_emb=I, show_progress_bar=False)
    norm = axn_fast.normalization_from_score_matrix(G, Q[train], I, n_queries=100)
    Gn = norm.apply(G)
    print(f"G: {G.nnz} entries ({k_d} per train query), {len(np.unique(G.cols))} of {n} items scored; "
          f"normalisation alpha={norm.alpha:.4g} beta={norm.beta:.4g}")

    t0 = time.perf_counter()
    _, V_trns, hist = factorize(Gn, U0=Q[train], V0=I, epochs=args.trns_epochs, lr=args.trns_lr, reg=0.01,
                                seed=0, num_threads=1)
    t_trns = time.perf_counter() - t0
    t0 = time.perf_counter()
    ind = axn_fast.InductiveMF(I.shape[1], seed=0).fit(Gn, Q[train], I, epochs=args.ind_epochs, lr=args.ind_lr,
                                                      batch_size=1024, seed=0, num_threads=1)
    t_ind = time.perf_counter() - t0
    print(f"MF_TRNS: {t_trns:.2f} s (train RMSE {hist.train_rmse[0]:.3f} -> {hist.train_rmse[-1]:.3f}); "
          f"MF_IND: {t_ind:.2f} s (train RMSE {ind.history.train_rmse[0]:.3f} -> {ind.history.train_rmse[-1]:.3f})")

    setups = {
        "DE": (I, Q[test]),
        "MF_TRNS": (V_trns, Q[test]),
        "MF_IND": (ind.embed_items(I), ind.embed_queries(Q[test])),
    }
    true = np.argsort(-S[test], axis=1, kind="stable")
    rows = []
    for name, (V, U0) in setups.items():
        index = Index(V)
        for budget in args.budgets:
            budget = min(budget, n)
            found = {"AXN": [], "RNR": []}
            for j, q in enumerate(test):
                ce = lambda _q, ids, q=q: S[q, ids]  # noqa: E731
                res = index.adaptive_search(q, ce, budget, k=min(max(args.ks), budget), rounds=5, u0=U0[j],
                                            normalization=norm)
                found["AXN"].append(res.scored_ids)
                found["RNR"].append(index.search(U0[j], budget)[1])
            for method, f in found.items():
                rec = {k: float(np.mean(topk_recall(f, true, k))) if k <= budget else np.nan for k in args.ks}
                rows.append((name, method, budget, rec))

    print()
    print("| item embeddings | search | budget m | " + " | ".join(f"Top-{k}-Recall@m" for k in args.ks) + " |")
    print("|---|---|---|" + "---|" * len(args.ks))
    for name, method, budget, rec in rows:
        print(f"| {name} | {method} | {budget} | " + " | ".join("-" if np.isnan(rec[k]) else f"{100 * rec[k]:.1f}" for k in args.ks) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.ks), figsize=(5 * len(args.ks), 4), squeeze=False)
    for ax, k in zip(axes[0], args.ks):
        for name in setups:
            for method, style in (("AXN", "-o"), ("RNR", "--x")):
                pts = [(b, r[k]) for nm, m, b, r in rows if nm == name and m == method]
                ax.plot(*zip(*pts), style, label=f"{method} / {name}")
        ax.set_xlabel("CE calls per query (m)")
        ax.set_ylabel(f"Top-{k}-Recall@m")
        ax.set_title(f"WordNet subset ({n} items), k={k}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    from pathlib import Path

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
