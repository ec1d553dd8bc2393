"""`axn-fast demo`: AXN versus retrieve-and-rerank with a real cross-encoder on WordNet.

On the shipped WordNet subset (noun synsets as items, gloss example sentences
as queries) with the bundled all-MiniLM-L6-v2: the dual-encoder embeds items
and test queries, an :class:`~axn_fast.Index` holds the item embeddings, and
AXN and retrieve-and-rerank (RNR) run on every test query with live
cross-encoder calls at each budget. Recall is measured against the exact
ground truth (the shipped dense CE score matrix). Prints a table and writes a
recall-vs-budget plot.

AXN's two knobs come from the train/dev queries' shipped rows, never from the
test queries: the CE -> DE score normalisation ``s -> beta (s - alpha)`` of
the AXN paper's Appendix A.4 (matching the mean and spread of the DE's scores
on the train queries), and lambda of its Eq. 7, picked from a small grid by
Top-10-Recall on the train+dev queries.
"""
from __future__ import annotations

import sys
import time

HELP = "AXN vs retrieve-and-rerank with the bundled MiniLM cross-encoder on WordNet (needs the demo extra)."


def add_arguments(parser) -> None:
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 100],
                        help="CE calls per query, m (default: 50 100)")
    parser.add_argument("--rounds", type=int, default=5, help="AXN rounds R (default 5)")
    parser.add_argument("--n-test", type=int, default=None,
                        help="number of test queries (default: all of the subset's test split)")
    parser.add_argument("--n-items", type=int, default=None,
                        help="search only the first N items (default: all); the ground truth follows")
    parser.add_argument("--lam", type=float, default=None,
                        help="AXN's lambda (Eq. 7: weight of the DE query embedding); default: tuned on the "
                             "train+dev queries from {0, 0.25, 0.5, 0.75} with their shipped scores")
    parser.add_argument("--no-normalization", dest="normalization", action="store_false",
                        help="do not map CE scores onto the DE's score range (AXN paper, App. A.4)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda' (default auto)")
    parser.add_argument("--batch-size", type=int, default=64, help="CE pairs per forward pass (default 64)")
    parser.add_argument("--output", default="axn_demo_recall.png",
                        help="where to write the recall-vs-budget plot (default ./axn_demo_recall.png)")
    parser.add_argument("--data", default=None, help="a directory written by build_wordnet_subset "
                                                     "(default: the subset shipped with the package)")
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always show progress bars (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")


def _fail(msg: str) -> int:
    print(f"axn-fast demo: error: {msg}", file=sys.stderr)
    return 2


def run(args) -> int:
    import numpy as np

    try:
        from tqdm.auto import tqdm

        from axn_fast.encoders.cross_encoder import HFCrossEncoder, PairScoreCache
        from axn_fast.encoders.dual_encoder import HFDualEncoder
        from axn_fast.encoders.models import minilm_path
    except ImportError as exc:
        return _fail(f"{exc}\nthe demo needs the demo extra: pip install 'axn_fast[demo]'")
    import axn_fast
    from axn_fast.datasets import load_wordnet_subset

    t_start = time.perf_counter()
    ds = load_wordnet_subset(args.data)
    n_items = ds.n_items if args.n_items is None else args.n_items
    test_rows = ds.splits["test"]
    n_test = len(test_rows) if args.n_test is None else args.n_test
    head = ds.ce_config.get("head", "emb-cos")
    budgets = sorted(set(args.budgets))
    if not 1 <= n_items <= ds.n_items:
        return _fail(f"--n-items must be in [1, {ds.n_items}], got {n_items}")
    if not 1 <= n_test <= len(test_rows):
        return _fail(f"--n-test must be in [1, {len(test_rows)}], got {n_test}")
    if args.rounds < 1:
        return _fail(f"--rounds must be >= 1, got {args.rounds}")
    for m in budgets:
        if not args.rounds <= m <= n_items:
            return _fail(f"every budget must be in [rounds={args.rounds}, n_items={n_items}], got {m}")
    if args.lam is not None and not 0.0 <= args.lam <= 1.0:
        return _fail(f"--lam must be in [0, 1], got {args.lam}")
    ks = [k for k in (1, 10) if k <= min(budgets)]
    test_rows = test_rows[:n_test]
    fit_rows = np.concatenate([ds.splits["train"], ds.splits["dev"]])  # never the test queries
    items = ds.items[:n_items]
    queries = [ds.queries[r] for r in test_rows]
    show = args.progress

    print(f"WordNet subset: {n_items} noun synsets (items), {n_test} test queries (gloss examples)")
    try:
        model = minilm_path()
        de = HFDualEncoder(model, device=args.device, show_progress_bar=show)
        ce = HFCrossEncoder(model, items, head=head, device=args.device, batch_size=args.batch_size,
                            max_length=int(ds.ce_config.get("max_length", 128)), show_progress_bar=False)
    except ImportError as exc:
        return _fail(f"{exc}\nthe demo needs the demo extra: pip install 'axn_fast[demo]'")
    except ValueError as exc:  # a bad --device or --batch-size
        return _fail(str(exc))
    print(f"models: all-MiniLM-L6-v2 as DE and as [EMB]-CE (head {head}) on {ce.device} ({ce.config['dtype']})")

    t0 = time.perf_counter()
    V = de.encode(items, show_progress_bar=show)
    Uq = de.encode(queries, show_progress_bar=show)
    U_fit = de.encode([ds.queries[r] for r in fit_rows], show_progress_bar=show)
    t_de = time.perf_counter() - t0

    # Offline step, from the train/dev rows shipped with the subset (no live CE calls): the
    # CE -> DE score normalisation of the AXN paper (App. A.4) and AXN's lambda (Eq. 7).
    S_fit = ds.scores[fit_rows][:, :n_items]
    normalization = None
    if args.normalization:
        n_train = len(ds.splits["train"])
        de_s, ce_s = U_fit[:n_train] @ V.T, S_fit[:n_train]
        beta = float(de_s.std() / ce_s.std())
        normalization = (float(ce_s.mean() - de_s.mean() / beta), beta)
        print(f"CE score normalisation s -> beta (s - alpha) fitted on {n_train} train queries: "
              f"alpha={normalization[0]:.3f}, beta={normalization[1]:.3f}")
    index = axn_fast.Index(V, normalization=normalization)
    lam = args.lam
    if lam is None:
        lam = _tune_lam(index, U_fit, S_fit, budgets[0], args.rounds, max(ks))
        print(f"lambda={lam} chosen on {len(fit_rows)} train+dev queries at m={budgets[0]} (shipped scores)")

    S = ds.scores[test_rows][:, :n_items]
    truth = "the shipped exact CE score matrix"
    true_ids = np.argsort(-S, axis=1, kind="stable")[:, :max(ks)]
    gold = ds.gold[test_rows]

    rows = []
    for m in budgets:
        for method in ("RNR-DE", "AXN-DE"):
            ce.cache = PairScoreCache()  # a fresh cache per run: every CE call is paid for and timed
            calls0 = ce.n_calls
            found, top1, t_ce, t_search, n_ce = [], [], 0.0, 0.0, 0
            for j in tqdm(range(n_test), desc=f"{method} m={m}", unit="query", disable=show is False,
                          leave=False):
                t = time.perf_counter()
                cand = index.search(Uq[j], m)[1]
                if method == "RNR-DE":
                    res = axn_fast.retrieve_and_rerank(cand, queries[j], ce, m, k=min(10, m))
                else:
                    res = index.adaptive_search(queries[j], ce, m, k=min(10, m), rounds=args.rounds,
                                                init=cand, u0=Uq[j], lam=lam)
                t_search += time.perf_counter() - t - res.seconds_ce
                t_ce += res.seconds_ce
                n_ce += res.n_ce_calls
                found.append(res.scored_ids)
                top1.append(int(res.ids[0]))
            row = {"method": method, "m": m, "ce_calls": n_ce, "model_pairs": ce.n_calls - calls0,
                   "seconds_ce": t_ce, "seconds_search": t_search,
                   "link_acc": float(np.mean(np.array(top1) == gold))}
            for k in ks:
                row[f"recall@{k}"] = float(np.mean([axn_fast.topk_recall(f, t, k) for f, t in zip(found, true_ids)]))
            rows.append(row)

    print(f"\nTop-k-Recall@m over {n_test} test queries (exact top-k from {truth}); "
          f"DE encoding took {t_de:.1f} s")
    head_cols = "".join(f"{'Top-%d-Recall' % k:>14}" for k in ks)
    print(f"{'method':<8}{'m':>5}{head_cols}{'gold@1':>8}{'CE calls':>10}{'CE s':>8}{'search ms/q':>13}")
    for r in rows:
        rec = "".join(f"{r[f'recall@{k}']:>14.3f}" for k in ks)
        print(f"{r['method']:<8}{r['m']:>5}{rec}{r['link_acc']:>8.3f}{r['ce_calls']:>10}{r['seconds_ce']:>8.1f}"
              f"{1000 * r['seconds_search'] / n_test:>13.2f}")
    print("gold@1: fraction of queries whose top item by CE score is the gold synset (word-sense accuracy).")
    _plot(rows, ks, args.output, title=f"WordNet, {n_items} items, {n_test} test queries, CE {head}")
    print(f"plot written to {args.output}; total {time.perf_counter() - t_start:.0f} s")
    return 0


def _tune_lam(index, U, S, budget, rounds, k, grid=(0.0, 0.25, 0.5, 0.75)) -> float:
    """The lambda of Eq. 7 with the best mean Top-k-Recall on queries with known dense scores."""
    import numpy as np

    import axn_fast

    ce = axn_fast.DenseScoreCE(S)
    true = np.argsort(-S, axis=1, kind="stable")[:, :k]
    best, best_recall = grid[0], -1.0
    for lam in grid:
        recall = np.mean([axn_fast.topk_recall(
            index.adaptive_search(r, ce, budget, k=min(k, budget), rounds=rounds, init=index.search(U[r], budget)[1],
                                  u0=U[r], lam=lam).scored_ids, true[r], k) for r in range(len(U))])
        if recall > best_recall + 1e-9:
            best, best_recall = lam, recall
    return best


def _plot(rows, ks, path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 3.6), squeeze=False)
    for ax, k in zip(axes[0], ks):
        for method, style in (("AXN-DE", "o-"), ("RNR-DE", "s--")):
            pts = sorted((r["m"], r[f"recall@{k}"]) for r in rows if r["method"] == method)
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], style, label=method)
        ax.set_xlabel("m (CE calls per query)")
        ax.set_title(f"Top-{k}-Recall@m")
        ax.set_ylim(0, 102)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("recall (%)")
    axes[0][0].legend(loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
