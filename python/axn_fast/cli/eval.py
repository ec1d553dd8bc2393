"""`axn-fast eval`: Top-k-Recall@m of AXN and the baselines against the budget of CE calls.

Data, one of:
  * the shipped WordNet subset (default): texts, gold labels, splits and exact CE scores;
    dual-encoder embeddings from the bundled MiniLM, cached under --cache-dir;
  * ``--scores S.npy --train F --test F [--dev F]``: your dense score matrix (rows =
    queries, columns = items) and split files (.npy or text, one row id per line); add
    ``--item-emb/--query-emb`` (.npy) for RNR_DE, TOUR and AXN, ``--items/--queries``
    (text, one per line) for TF-IDF and BM25, ``--gold`` for downstream accuracy;
  * ``--ce [NAME] --items F --queries F --train F --test F``: texts scored live by a named
    cross-encoder (default the trained ``minilm-wordnet``; the untrained heads are
    ``minilm-emb-cos`` / ``minilm-emb-dot``), or ``--ce-model DIR`` for a checkpoint or
    trained-delta directory;
  * ``--synthetic``: a low-rank-plus-noise matrix with weak DE embeddings.

Writes results.csv, results.json, results.md and recall_vs_budget.png under --out. While
running it keeps a checkpoint (checkpoint.json) updated after every method: an interrupted
run, started again on the same data and settings, evaluates only the methods still missing
(:mod:`axn_fast.evaluation.run`). The work is done by :mod:`axn_fast.evaluation`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from axn_fast.cli._args import UsageError, csv_choices, csv_list, float_range, int_range, shape

HELP = "Top-k-Recall@m of AXN, ANNCUR, ADACUR, TOUR and retrieve-and-rerank versus the CE budget; table + plots."

#: as axn_fast.encoders.models.DEFAULT_CE (a test keeps them equal; not imported: --help stays light)
DEFAULT_CE = "minilm-wordnet"

# the keys of axn_fast.evaluation.methods.METHODS (a test keeps them equal; not imported: --help stays light)
METHOD_KEYS = ("rnr-de", "rnr-tfidf", "rnr-bm25", "anncur-ref", "anncur", "adacur", "tour-ce", "tour-mse", "axn",
               "axn-dev", "rnr-de-dstl", "axn-de-dstl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = parser.add_argument_group("data (default: the shipped WordNet subset)")
    d.add_argument("--scores", type=Path, help="dense (n_queries, n_items) exact CE scores, .npy")
    d.add_argument("--train", type=Path, help="train query rows (.npy or text): CUR rows, normalisation")
    d.add_argument("--dev", type=Path, help="dev query rows: choose AXN's λ and ANNCUR's k_i/k_r split")
    d.add_argument("--test", type=Path, help="test query rows: reported")
    d.add_argument("--gold", type=Path, help="gold item per query row (.npy or text): downstream accuracy")
    d.add_argument("--item-emb", type=Path, help="(n_items, d) dual-encoder item embeddings, .npy")
    d.add_argument("--query-emb", type=Path, help="(n_queries, d) dual-encoder query embeddings, .npy")
    d.add_argument("--items", type=Path, help="item texts, one per line (TF-IDF, BM25)")
    d.add_argument("--queries", type=Path, help="query texts, one per line (TF-IDF, BM25)")
    d.add_argument("--ce", nargs="?", const=DEFAULT_CE, default=None, metavar="NAME",
                   help=f"score --items/--queries live with this named cross-encoder instead of --scores (--ce "
                        f"alone: {DEFAULT_CE}, all-MiniLM-L6-v2 trained on WordNet; the untrained heads stay "
                        "available as minilm-emb-cos / minilm-emb-dot); the rows of the splits are scored against "
                        "every item once (the ground truth and the CUR rows need them), checkpointed under --out")
    d.add_argument("--ce-model", type=Path, default=None, metavar="DIR",
                   help="as --ce, with a cross-encoder checkpoint directory ('minilm': the bundled MiniLM) or a "
                        "trained-CE delta directory (axn-fast train-ce)")
    d.add_argument("--ce-head", default=None, choices=("emb-dot", "emb-cos", "cls"),
                   help="head of --ce-model (default: emb-cos for a checkpoint, the trained head for a delta); a "
                        "named --ce has its own")
    d.add_argument("--synthetic", action="store_true", help="use a synthetic low-rank-plus-noise matrix")
    d.add_argument("--synthetic-shape", type=shape, default=[2000, 10000],
                   help="NQxNI for --synthetic (default 2000x10000; NQ >= 10)")
    d.add_argument("--rank", type=int_range(1), default=32, help="rank of --synthetic (default 32)")
    d.add_argument("--noise", type=float_range(0.0), default=0.5, help="noise/signal std of --synthetic (default 0.5)")
    d.add_argument("--de-noise", type=float_range(0.0), default=1.0,
                   help="DE embedding noise of --synthetic (default 1.0)")
    r = parser.add_argument_group("evaluation")
    r.add_argument("--methods", type=csv_choices(METHOD_KEYS), default=None,
                   help=f"comma-separated, from {','.join(METHOD_KEYS)} (default: all the data allows)")
    r.add_argument("--ks", type=csv_list(int_range(1)), default=[1, 10, 100], help="k values (default 1,10,100)")
    r.add_argument("--budgets", type=csv_list(int_range(1)), default=[50, 100, 200, 500],
                   help="budgets m of CE calls per query (default 50,100,200,500)")
    r.add_argument("--rounds", type=int_range(1), default=5, help="rounds of AXN, ADACUR and TOUR (default 5)")
    r.add_argument("--lams", type=csv_list(float_range(0.0, 1.0)), default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                   help="λ values in [0, 1] tried on dev for 'axn-dev' (default 0,0.2,...,1)")
    r.add_argument("--distilled-de", type=Path, default=None, help="delta dir of a distilled DE (distill_dual_encoder, "
                   "axn-fast index-cost): adds rnr-de-dstl and axn-de-dstl (needs texts)")
    r.add_argument("--max-test", type=int_range(1), default=None, help="evaluate on the first N test queries only")
    r.add_argument("--max-dev", type=int_range(1), default=None, help="tune on the first N dev queries only")
    r.add_argument("--no-normalize", action="store_true",
                   help="do not rescale CE scores to the DE's score distribution for AXN/TOUR (A.4)")
    r.add_argument("--seed", type=int_range(0), default=0,
                   help="seed of ANNCUR anchors, random first rounds, synthetic data")
    o = parser.add_argument_group("output")
    o.add_argument("--out", type=Path, default=Path("axn_fast_eval"), help="output directory (default ./axn_fast_eval)")
    o.add_argument("--title", default=None, help="plot title")
    o.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "axn_fast",
                   help="where WordNet DE embeddings are cached (default ~/.cache/axn_fast)")


def _check_sources(args: argparse.Namespace) -> str:
    """Which data source the flags select; refuses flags that do not go together."""
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {str(args.out)!r} exists and is not a directory")
    chosen = [f for f, on in (("--scores", args.scores is not None), ("--ce", args.ce is not None),
                              ("--ce-model", args.ce_model is not None), ("--synthetic", args.synthetic)) if on]
    if len(chosen) > 1:
        raise UsageError(f"give one of {' / '.join(chosen)}, not several")
    if args.ce_head is not None and args.ce_model is None:
        raise UsageError("--ce-head goes with --ce-model; a named CE has its own head")
    if args.ce is not None:
        from axn_fast.encoders.models import NAMED_CES

        if args.ce not in NAMED_CES:
            raise UsageError(f"--ce must be one of {', '.join(sorted(NAMED_CES))}; got {args.ce!r}")
    if (args.item_emb is None) != (args.query_emb is None):
        raise UsageError("give both --item-emb and --query-emb, or neither")
    if (args.items is None) != (args.queries is None):
        raise UsageError("give both --items and --queries, or neither")
    files = ("--train", "--dev", "--test", "--gold", "--item-emb", "--query-emb", "--items", "--queries")
    given = [f for f in files if getattr(args, f[2:].replace("-", "_")) is not None]
    source = chosen[0] if chosen else "wordnet"
    if source in ("--synthetic", "wordnet") and given:
        raise UsageError(f"{', '.join(given)} need --scores, --ce or --ce-model "
                         f"({'--synthetic makes its own' if source == '--synthetic' else 'the WordNet subset has its own'})")
    if source == "--scores" and (args.train is None or args.test is None):
        raise UsageError("--scores needs --train and --test split files (and --dev to tune λ and the ANNCUR split)")
    if source in ("--ce", "--ce-model") and (args.items is None or args.train is None or args.test is None):
        raise UsageError(f"{source} needs --items, --queries, --train and --test")
    return source


def run(args: argparse.Namespace) -> int:
    from axn_fast.evaluation import data as D
    from axn_fast.evaluation.methods import MethodConfig, build_methods, drop_untunable, missing_inputs
    from axn_fast.evaluation.run import run_evaluation

    source = _check_sources(args)
    show = False if args.no_progress else None
    if source == "--synthetic":
        nq, ni = args.synthetic_shape
        if nq < 10:
            raise UsageError(f"--synthetic-shape needs at least 10 queries (for the splits), got {nq}")
        data = D.load_synthetic(nq, ni, rank=args.rank, noise=args.noise, de_noise=args.de_noise, seed=args.seed)
    elif source == "--scores":
        data = D.load_score_files(args.scores, args.train, args.test, dev=args.dev, gold=args.gold,
                                  item_emb=args.item_emb, query_emb=args.query_emb, items=args.items,
                                  queries=args.queries)
    elif source in ("--ce", "--ce-model"):
        data = D.load_live(args.ce_model, args.items, args.queries, args.train, args.test, ce_head=args.ce_head,
                           ce_name=args.ce, checkpoint_dir=args.out, dev=args.dev, gold=args.gold,
                           item_emb=args.item_emb, query_emb=args.query_emb, show_progress_bar=show)
    else:
        data = D.load_wordnet(args.cache_dir, show_progress_bar=show)
    data = data.truncated(args.max_test, args.max_dev)
    if max(args.budgets) > data.n_items:
        raise UsageError(f"--budgets must be <= the number of items ({data.n_items}), got {max(args.budgets)}")
    if not any(k <= m for k in args.ks for m in args.budgets):
        raise UsageError(f"no (k, m) pair with k <= m: --ks {args.ks}, --budgets {args.budgets}")
    for key in args.methods or ():
        missing = missing_inputs(data, key)
        if missing is not None:
            flags = "--item-emb/--query-emb" if missing.startswith("DE") else "--items/--queries"
            raise UsageError(f"--methods: {key!r} needs {missing}: give {flags}")
    config = MethodConfig(keys=None if args.methods is None else tuple(args.methods), budgets=tuple(args.budgets),
                          rounds=args.rounds, lams=tuple(args.lams), seed=args.seed, normalize=not args.no_normalize,
                          distilled_de=None if args.distilled_de is None else str(args.distilled_de))
    methods, skipped = build_methods(data, config)
    if skipped:
        print(f"skipped (missing inputs): {', '.join(skipped)}", file=sys.stderr)
    methods, dropped = drop_untunable(methods, args.budgets, data.dev is not None)
    for m in dropped:
        print(f"skipped {m.name}: it is tuned on --dev queries, none given", file=sys.stderr)
    if not methods:
        raise UsageError("no method can run on this data (give DE embeddings, texts or a train split)")
    table = run_evaluation(data, methods, args.out, ks=args.ks, budgets=args.budgets, config=config.to_dict(),
                           meta={"argv": sys.argv[1:]}, show_progress_bar=show,
                           log=lambda line: print(line, file=sys.stderr))
    print(table.format())
    print()
    print(table.to_markdown())
    if not args.no_plot:
        from axn_fast.evaluation.plotting import plot_recall_vs_budget

        plot_recall_vs_budget(table, args.out / "recall_vs_budget.png", title=args.title or data.name)
        print(f"\nwrote {args.out}/results.csv, results.json, results.md, recall_vs_budget.png", file=sys.stderr)
    return 0
