"""Re-score the shipped WordNet subset's dense exact score matrix with a named cross-encoder (resumable).

    python bench/rescore_wordnet_subset.py --ce minilm-wordnet --checkpoint-dir out/rescore_ckpt

Keeps the subset's texts, gold ids and splits; replaces ``scores`` (same file format: float16 .npz)
and ``ce_config`` (which now names the CE, so ``load_cross_encoder(items, ce_config["name"])``
rebuilds it). Scoring goes through ``build_score_matrix(strategy="all")`` and its one resumable
checkpoint format: re-run the same command after an interruption. Writes into the package's data
directory unless ``--out-dir`` is given.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ce", default="minilm-wordnet", help="a name of NAMED_CES (default minilm-wordnet)")
    ap.add_argument("--checkpoint-dir", type=Path, default=Path("out/rescore_ckpt"))
    ap.add_argument("--out-dir", type=Path, default=None, help="default: the package's data directory")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    import torch

    from axn_fast.datasets.subset import DATA_DIR, load_wordnet_subset, save_subset
    from axn_fast.encoders.cross_encoder import PairScoreCache
    from axn_fast.encoders.models import load_cross_encoder
    from axn_fast.indexing.score_matrix import build_score_matrix

    ds = load_wordnet_subset()
    ce = load_cross_encoder(ds.items, args.ce, device=args.device, batch_size=args.batch_size,
                            show_progress_bar=False, cache=PairScoreCache(max_queries=1))
    ce_id = f"{args.ce}|{sorted(ce.config.items())}"
    t0 = time.perf_counter()
    sm = build_score_matrix(ce, ds.queries, ds.n_items, strategy="all", batch_size=args.batch_size * 4,
                            checkpoint_dir=args.checkpoint_dir, ce_id=ce_id)
    seconds = time.perf_counter() - t0
    ds.scores = sm.to_dense()
    ds.ce_config = dict(ce.config, name=args.ce, torch=torch.__version__, device=str(ce.device))
    ds.meta["build_seconds"] = round(seconds, 1)
    ds.meta["rescore_command"] = "python bench/rescore_wordnet_subset.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--out-dir"))
    out = args.out_dir or DATA_DIR
    save_subset(ds, out)
    print(f"re-scored {ds.n_queries} x {ds.n_items} pairs with {args.ce} into {out} "
          f"({sm.info.get('pairs_scored', 0)} scored now, {sm.info.get('pairs_resumed', 0)} resumed, {seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
