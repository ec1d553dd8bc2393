"""`axn-fast build-subset`: build (or re-score) a WordNet subset with its dense exact CE score matrix."""
from __future__ import annotations

import argparse
from pathlib import Path

from axn_fast.cli._args import UsageError, csv_list, device, int_range

HELP = "Build a WordNet subset (or re-score one) with the dense exact scores of a cross-encoder (resumable)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="where to write the subset (default: the package's data directory)")
    parser.add_argument("--rescore", action="store_true",
                        help="keep the texts, gold ids and splits of the subset in --data (default: the shipped "
                             "one) and only re-score it with --ce")
    parser.add_argument("--data", type=Path, default=None, help="with --rescore: the subset to re-score")
    parser.add_argument("--ce", default=None, help="a named cross-encoder (default: the package's DEFAULT_CE)")
    parser.add_argument("--wordnet-dir", type=Path, default=None, help="Debian's WordNet files "
                                                                     "(default /usr/share/wordnet)")
    parser.add_argument("--n-items", type=int_range(2), default=1600, help="items (default 1600)")
    parser.add_argument("--n-queries", type=int_range(3), default=100, help="queries (default 100)")
    parser.add_argument("--splits", type=csv_list(int), default=[50, 10, 40],
                        help="train,dev,test query counts summing to --n-queries (default 50,10,40)")
    parser.add_argument("--seed", type=int_range(0), default=0, help="seed of the selection (default 0)")
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("out/subset-scores"),
                        help="the resumable scoring checkpoint (default out/subset-scores)")
    parser.add_argument("--batch-size", type=int_range(1), default=64, help="pairs per CE batch (default 64)")
    parser.add_argument("--device", type=device, default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from axn_fast.datasets.build_wordnet_subset import select_subset
    from axn_fast.datasets.subset import DATA_DIR, load_wordnet_subset, save_subset
    from axn_fast.datasets.wordnet import DEFAULT_WORDNET_DIR, wordnet
    from axn_fast.encoders.models import DEFAULT_CE
    from axn_fast.evaluation.data import score_wordnet_subset

    if args.data is not None and not args.rescore:
        raise UsageError("--data is the subset to re-score: give it with --rescore")
    ce_name = args.ce or DEFAULT_CE
    if args.rescore:
        ds = load_wordnet_subset(args.data)
    else:
        if len(args.splits) != 3 or sum(args.splits) != args.n_queries or min(args.splits) < 1:
            raise UsageError(f"--splits must be three positive counts summing to --n-queries ({args.n_queries}), "
                             f"got {args.splits}")
        ds = select_subset(wordnet(args.wordnet_dir or DEFAULT_WORDNET_DIR), n_items=args.n_items,
                           n_queries=args.n_queries, split_sizes=tuple(args.splits), seed=args.seed)
    score_wordnet_subset(ds, ce_name, args.checkpoint_dir, batch_size=args.batch_size, device=args.device,
                         show_progress_bar=False if args.no_progress else None)
    ds.meta["built_by"] = {"command": "axn-fast build-subset", "ce": ce_name, "rescore": bool(args.rescore),
                           **({} if args.rescore else {"n_items": args.n_items, "n_queries": args.n_queries,
                                                       "splits": list(args.splits), "seed": args.seed})}
    out = args.out_dir or DATA_DIR
    save_subset(ds, out)
    seconds = ds.meta["build_seconds"]
    print(f"wrote {ds.n_queries} queries x {ds.n_items} items scored by {ce_name} to {out} "
          f"({ds.n_queries * ds.n_items / max(seconds, 1e-9):.0f} pairs/s over {seconds:.0f} s)")
    return 0
