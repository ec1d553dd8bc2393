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
Top-10-Recall on the train+dev queries. The computation lives in
:mod:`axn_fast.evaluation.demo`; this module parses, checks and prints.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from axn_fast.cli._args import UsageError, device, float_range, int_range

HELP = "AXN vs retrieve-and-rerank with the bundled MiniLM cross-encoder on WordNet (needs the demo extra)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budgets", type=int_range(1), nargs="+", default=[50, 100],
                        help="CE calls per query, m (default: 50 100)")
    parser.add_argument("--rounds", type=int_range(1), default=5, help="AXN rounds R (default 5)")
    parser.add_argument("--n-test", type=int_range(1), default=None,
                        help="number of test queries (default: all of the subset's test split)")
    parser.add_argument("--n-items", type=int_range(1), default=None,
                        help="search only the first N items (default: all); the ground truth follows")
    parser.add_argument("--lam", type=float_range(0.0, 1.0), default=None,
                        help="AXN's lambda (Eq. 7: weight of the DE query embedding); default: tuned on the "
                             "train+dev queries from {0, 0.25, 0.5, 0.75} with their shipped scores")
    parser.add_argument("--no-normalization", dest="normalization", action="store_false",
                        help="do not map CE scores onto the DE's score range (AXN paper, App. A.4)")
    parser.add_argument("--device", type=device, default="auto",
                        help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N' (default auto)")
    parser.add_argument("--batch-size", type=int_range(1), default=64, help="CE pairs per forward pass (default 64)")
    parser.add_argument("--output", default="axn_demo_recall.png",
                        help="where to write the recall-vs-budget plot (default ./axn_demo_recall.png)")
    parser.add_argument("--data", default=None, help="a directory written by axn-fast build-subset "
                                                     "(default: the subset shipped with the package)")
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always show progress bars (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    try:
        from axn_fast.encoders.dual_encoder import HFDualEncoder
        from axn_fast.encoders.models import load_cross_encoder, minilm_path
        from axn_fast.evaluation.demo import compare_axn_rnr, demo_normalization
    except ImportError as exc:
        raise ImportError(f"{exc}; the demo needs the demo extra: pip install 'axn_fast[demo]'") from exc
    from axn_fast.datasets import load_wordnet_subset
    from axn_fast.evaluation.plotting import plot_axn_vs_rnr
    from axn_fast.evaluation.tuning import exact_top, tune_lambda
    from axn_fast.search.index import Index

    out_dir = Path(args.output).resolve().parent
    if not out_dir.is_dir():
        raise UsageError(f"--output {args.output!r}: directory {str(out_dir)!r} does not exist")
    t_start = time.perf_counter()
    ds = load_wordnet_subset(args.data)
    if ds.scores is None:
        raise ValueError(f"the WordNet subset in {args.data or 'the package'!r} has no score matrix")
    scores = ds.scores
    n_items = ds.n_items if args.n_items is None else args.n_items
    test_rows = ds.splits["test"]
    n_test = len(test_rows) if args.n_test is None else args.n_test
    head = ds.ce_config.get("head", "emb-cos")
    budgets = sorted(set(args.budgets))
    if n_items > ds.n_items:
        raise UsageError(f"--n-items must be in [1, {ds.n_items}] (the subset's items), got {n_items}")
    if n_test > len(test_rows):
        raise UsageError(f"--n-test must be in [1, {len(test_rows)}] (the subset's test queries), got {n_test}")
    for m in budgets:
        if not args.rounds <= m <= n_items:
            raise UsageError(f"every --budgets value must be in [--rounds={args.rounds}, --n-items={n_items}], "
                             f"got {m}")
    ks = [k for k in (1, 10) if k <= min(budgets)]
    test_rows = test_rows[:n_test]
    fit_rows = np.concatenate([ds.splits["train"], ds.splits["dev"]])  # never the test queries
    items = ds.items[:n_items]
    queries = [ds.queries[r] for r in test_rows]
    show = args.progress

    print(f"WordNet subset: {n_items} noun synsets (items), {n_test} test queries (gloss examples)")
    try:
        de_class: Any = HFDualEncoder  # not annotated by its owner yet
        de = de_class(minilm_path(), device=args.device, show_progress_bar=show)
        # the live CE must be the one that made the subset's scores
        ce = load_cross_encoder(items, **ds.ce_kwargs(), device=args.device, batch_size=args.batch_size,
                                show_progress_bar=False)
    except ImportError as exc:
        raise ImportError(f"{exc}; the demo needs the demo extra: pip install 'axn_fast[demo]'") from exc
    ce_name = ds.ce_config.get("name", f"all-MiniLM-L6-v2, head {head}")
    print(f"models: all-MiniLM-L6-v2 as DE; CE {ce_name} on {ce.device} ({ce.config['dtype']})"
          if "name" in ds.ce_config else
          f"models: all-MiniLM-L6-v2 as DE and as [EMB]-CE (head {head}) on {ce.device} ({ce.config['dtype']})")

    t0 = time.perf_counter()
    V = de.encode(items, show_progress_bar=show)
    Uq = de.encode(queries, show_progress_bar=show)
    U_fit = de.encode([ds.queries[r] for r in fit_rows], show_progress_bar=show)
    t_de = time.perf_counter() - t0

    # Offline step, from the train/dev rows shipped with the subset (no live CE calls).
    S_fit = scores[fit_rows][:, :n_items]
    norm = None
    if args.normalization:
        n_train = len(ds.splits["train"])
        norm = demo_normalization(U_fit[:n_train], V, S_fit[:n_train])
        print(f"CE score normalisation s -> beta (s - alpha) fitted on {n_train} train queries: "
              f"alpha={norm.alpha:.3f}, beta={norm.beta:.3f}")
    index = Index(V)
    lam = args.lam
    if lam is None:
        lam = tune_lambda(index, U_fit, S_fit, budgets[0], rounds=args.rounds, k=max(ks), normalization=norm)
        print(f"lambda={lam} chosen on {len(fit_rows)} train+dev queries at m={budgets[0]} (shipped scores)")

    S = scores[test_rows][:, :n_items]
    rows = compare_axn_rnr(index, ce, queries, Uq, exact_top(S, max(ks)), ds.gold[test_rows], budgets,
                           rounds=args.rounds, lam=lam, ks=ks, normalization=norm, show_progress_bar=show)

    print(f"\nTop-k-Recall@m over {n_test} test queries (exact top-k from the shipped exact CE score matrix); "
          f"DE encoding took {t_de:.1f} s")
    head_cols = "".join(f"{'Top-%d-Recall' % k:>14}" for k in ks)
    print(f"{'method':<8}{'m':>5}{head_cols}{'gold@1':>8}{'CE calls':>10}{'CE s':>8}{'search ms/q':>13}")
    for r in rows:
        rec = "".join(f"{r.recall[k]:>14.3f}" for k in ks)
        print(f"{r.method:<8}{r.m:>5}{rec}{r.link_acc:>8.3f}{r.ce_calls:>10}{r.seconds_ce:>8.1f}"
              f"{1000 * r.seconds_search / n_test:>13.2f}")
    print("gold@1: fraction of queries whose top item by CE score is the gold synset (word-sense accuracy).")
    plot_axn_vs_rnr(rows, ks, args.output, title=f"WordNet, {n_items} items, {n_test} test queries, CE {head}")
    print(f"plot written to {args.output}; total {time.perf_counter() - t_start:.0f} s")
    return 0
