"""`axn-fast index-cost`: recall versus offline indexing cost (the AXN paper's Fig. 1 and 2).

    axn-fast index-cost --out out/index_cost/wordnet                 # the shipped WordNet subset
    axn-fast index-cost --synthetic --out out/index_cost/synthetic   # a low-rank task (no texts)

Builds MF_TRNS, MF_IND and DE_DSTL over the same sparse G (n_train train queries x their
DE top-k_d items), ANNCUR/ADACUR over n_train dense CE rows, and the plain DE, for every
(n_train, k_d) of the grid; records each index's CE calls and seconds (calls x the live
CE's measured seconds per pair), DE encoding seconds and training seconds; evaluates AXN
and RNR on each. Writes index_cost.csv, index_cost.json (with the speed-ups), index_cost.md
and index_cost.png under --out. Re-run the same command to resume. The work is done by
:mod:`axn_fast.evaluation.index_cost`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from axn_fast.cli._args import UsageError, csv_choices, csv_list, device, float_range, int_range, shape

HELP = "Recall of AXN/RNR/ANNCUR/ADACUR versus offline indexing cost (MF_TRNS, MF_IND, DE_DSTL, CUR)."

# the keys of axn_fast.evaluation.index_cost.INDEXES (not imported: --help stays light)
INDEX_KEYS = ("de", "mf-trns", "mf-ind", "de-dstl", "anncur", "adacur")


def _pair(text: str) -> Tuple[int, int]:
    try:
        k, m = (int(x) for x in text.split("@"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K@M (e.g. 1@100), got {text!r}") from None
    if not 1 <= k <= m:
        raise argparse.ArgumentTypeError(f"expected 1 <= K <= M, got {text!r}")
    return k, m


def _scores_ce(recorded: Dict[str, Any], items: List[str]) -> Optional[str]:
    """The named CE whose ``config`` matches the one recorded with the subset's scores (model, head,
    max_length, dtype), or None."""
    from axn_fast.encoders.models import NAMED_CES, load_cross_encoder

    if "name" in recorded:
        return str(recorded["name"])
    keys = ("model", "head", "max_length", "dtype")
    for name in NAMED_CES:
        try:
            cfg = load_cross_encoder(items[:1], name, device="cpu", show_progress_bar=False).config
        except (OSError, ValueError, ImportError):
            continue  # a named CE whose files are missing cannot be the one
        if all(cfg.get(k) == recorded.get(k) for k in keys):
            return name
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = parser.add_argument_group("data (default: the shipped WordNet subset with MiniLM DE embeddings)")
    d.add_argument("--synthetic", action="store_true", help="a low-rank-plus-noise matrix with weak DE embeddings "
                   "(no texts: DE_DSTL is a distilled feature tower)")
    d.add_argument("--synthetic-shape", type=shape, default=[2000, 10000], help="NQxNI (default 2000x10000)")
    d.add_argument("--rank", type=int_range(1), default=32, help="rank of --synthetic (default 32)")
    d.add_argument("--noise", type=float_range(0.0), default=0.5, help="noise of --synthetic (default 0.5)")
    d.add_argument("--de-noise", type=float_range(0.0), default=1.0, help="DE noise of --synthetic (default 1.0)")
    d.add_argument("--max-test", type=int_range(1), default=None, help="evaluate on the first N test queries")
    d.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "axn_fast",
                   help="where WordNet DE embeddings are cached")
    c = parser.add_argument_group("cost")
    c.add_argument("--ce", default=None, help="named CE whose seconds per pair are measured live on the subset's "
                   "texts (default: the named CE whose config matches the one recorded with the subset's scores, "
                   "else axn_fast's DEFAULT_CE)")
    c.add_argument("--ce-pairs", type=int_range(10), default=300, help="pairs timed (default 300)")
    c.add_argument("--ce-seconds-per-pair", type=float_range(0.0), default=None,
                   help="use this instead of measuring")
    c.add_argument("--live-ce", action="store_true",
                   help="score G live with --ce (WordNet only; its CE seconds are then measured wall time) instead "
                   "of reading the subset's matrix; CUR's dense rows and the ground truth still come from the matrix")
    c.add_argument("--threads", type=int_range(1), default=1,
                   help="torch threads for the CE measurement, DE encoding and every builder (default 1)")
    g = parser.add_argument_group("grid and builders")
    g.add_argument("--n-train", type=csv_list(int_range(1)), default=[10, 25, 50], help="train queries (default 10,25,50)")
    g.add_argument("--k-d", type=csv_list(int_range(1)), default=[25, 100], help="DE top items per train query in G "
                   "(default 25,100)")
    g.add_argument("--indexes", type=csv_choices(INDEX_KEYS), default=list(INDEX_KEYS),
                   help=f"from {','.join(INDEX_KEYS)} (default all)")
    g.add_argument("--pairs", type=csv_list(_pair), default=[(1, 100), (100, 500)],
                   help="K@M of the plot and speed-ups (default 1@100,100@500; capped at the item count)")
    g.add_argument("--budgets", type=csv_list(int_range(1)), default=[50, 100, 200, 500],
                   help="budgets also recorded (default 50,100,200,500)")
    g.add_argument("--rounds", type=int_range(1), default=5, help="AXN/ADACUR rounds (default 5)")
    g.add_argument("--dstl-k-d", type=csv_list(int_range(1)), default=None,
                   help="build DE_DSTL only at these --k-d values (default: all; it is the slowest builder)")
    g.add_argument("--dstl-epochs", type=int_range(1), default=2, help="text DE distillation epochs (default 2)")
    g.add_argument("--dstl-lr", type=float_range(0.0), default=1e-5, help="distillation lr (default 1e-5)")
    g.add_argument("--dstl-accumulate", type=int_range(1), default=4, help="queries per optimiser step (default 4)")
    g.add_argument("--trainable-layers", type=int_range(1), default=2, help="top DE layers trained (default 2)")
    g.add_argument("--device", type=device, default="cpu", help="device of the distillation (default cpu)")
    g.add_argument("--seed", type=int_range(0), default=0, help="seed (default 0)")
    o = parser.add_argument_group("output")
    o.add_argument("--out", type=Path, default=Path("axn_fast_index_cost"), help="output directory")
    o.add_argument("--title", default=None, help="plot title")
    o.add_argument("--no-plot", action="store_true", help="skip the PNG")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import torch

    from axn_fast.datasets import load_wordnet_subset
    from axn_fast.encoders.models import DEFAULT_CE, NAMED_CES, load_cross_encoder, minilm_path
    from axn_fast.evaluation import data as D
    from axn_fast.evaluation.index_cost import (IndexCostConfig, measure_ce_seconds_per_pair,
                                                measure_de_seconds_per_text, plot_index_cost, run_index_cost)

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {str(args.out)!r} exists and is not a directory")
    if args.ce is not None and args.ce not in NAMED_CES:
        raise UsageError(f"--ce must be one of {sorted(NAMED_CES)}, got {args.ce!r}")
    show = False if args.no_progress else None
    torch.set_num_threads(args.threads)
    subset = load_wordnet_subset()
    ce_name = args.ce or _scores_ce(subset.ce_config, list(subset.items)) or DEFAULT_CE

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    # measurements are kept with the results: a resumed run keeps the same costs (and so its rows)
    mfile = args.out / "measured.json"
    measured: dict[str, Any] = {}
    if mfile.is_file():
        measured = json.loads(mfile.read_text())
        if measured.get("ce") != ce_name or measured.get("threads") != args.threads:
            measured = {}
    measured.update(ce=ce_name, threads=args.threads)
    meta: dict[str, Any] = {"argv": sys.argv[1:], "threads": args.threads}
    if args.synthetic and args.live_ce:
        raise UsageError("--live-ce needs texts: not with --synthetic")
    if args.synthetic:
        nq, ni = args.synthetic_shape
        data = D.load_synthetic(nq, ni, rank=args.rank, noise=args.noise, de_noise=args.de_noise, seed=args.seed)
        de_base = None
        de_s = 0.0  # the synthetic DE embeddings come free
    else:
        data = D.load_wordnet(args.cache_dir, show_progress_bar=show)
        de_base = minilm_path()
        meta["scores_ce"] = subset.ce_config
        from axn_fast.encoders.dual_encoder import HFDualEncoder

        de_s = measured.get("de_seconds_per_text") or measure_de_seconds_per_text(
            HFDualEncoder(de_base, device="cpu", show_progress_bar=False), list(subset.items))
        measured["de_seconds_per_text"] = de_s
        log(f"base DE (MiniLM, mean pooling): {1e3 * de_s:.2f} ms/text on {args.threads} thread(s)")
    data = data.truncated(args.max_test)
    if args.ce_seconds_per_pair is not None:
        ce_s = args.ce_seconds_per_pair
        meta["ce_seconds_per_pair_source"] = "given"
    elif measured.get("ce_seconds_per_pair"):
        ce_s = measured["ce_seconds_per_pair"]
        meta["ce_seconds_per_pair_source"] = measured["ce_seconds_per_pair_source"]
    else:
        ce = load_cross_encoder(list(subset.items), ce_name, device="cpu", show_progress_bar=False)
        ce_s = measure_ce_seconds_per_pair(ce, list(subset.queries), subset.n_items, n_pairs=args.ce_pairs,
                                           seed=args.seed)
        meta["ce_seconds_per_pair_source"] = f"measured: {ce_name}, {args.ce_pairs} pairs of the WordNet subset, " \
                                             f"{args.threads} thread(s), CPU"
        log(f"CE {ce_name}: {1e3 * ce_s:.2f} ms/pair on {args.threads} thread(s)")
        measured.update(ce_seconds_per_pair=ce_s, ce_seconds_per_pair_source=meta["ce_seconds_per_pair_source"])
    meta["ce"] = ce_name
    args.out.mkdir(parents=True, exist_ok=True)
    mfile.write_text(json.dumps(measured, indent=1))
    config = IndexCostConfig(n_train=tuple(args.n_train), k_d=tuple(args.k_d), indexes=tuple(args.indexes),
                             pairs=tuple(args.pairs), budgets=tuple(args.budgets), rounds=args.rounds,
                             seed=args.seed, dstl_epochs=args.dstl_epochs,
                             dstl_k_d=None if args.dstl_k_d is None else tuple(args.dstl_k_d), dstl_lr=args.dstl_lr,
                             dstl_accumulate=args.dstl_accumulate, dstl_trainable_layers=args.trainable_layers,
                             num_threads=args.threads)
    live = None
    if args.live_ce:
        live = load_cross_encoder(list(subset.items), ce_name, device="cpu", show_progress_bar=False)
        meta["g_scored_by"] = f"live {ce_name}"
    table = run_index_cost(data, args.out, config=config, ce_seconds_per_pair=ce_s, de_seconds_per_text=de_s,
                           de_base=de_base, device=args.device, ce=live, meta=meta, show_progress_bar=show, log=log)
    pairs: List[Tuple[int, int]] = [(int(k), int(m)) for k, m in table.meta["pairs"]]
    md = table.to_markdown(pairs)
    (args.out / "index_cost.md").write_text(md + "\n")
    print(md)
    print()
    print(json.dumps(table.meta["speedups"], indent=1))
    if not args.no_plot:
        plot_index_cost(table, args.out / "index_cost.png", pairs=pairs, title=args.title or data.name)
    log(f"wrote {args.out}/index_cost.csv, index_cost.json, index_cost.md" +
        ("" if args.no_plot else ", index_cost.png"))
    return 0
