"""Held-out WordNet noun accuracy of the DE, the untrained CE and the trained CE (issue: a CE worth searching for).

    python bench/ce_heldout_wordnet.py --delta python/axn_fast/encoders/data/wordnet-minilm-emb-dot \\
        --de-cache out/ce_train/de_cache20k.npz --work out/ce_eval --out bench/results/ce_heldout_wordnet.json

The eval queries are the ``n_eval`` held-out queries of ``ce_training_split`` (seed 0, the shipped
subset left out, split by gold synset: no eval query's sense was a training target), over the
same item set the CE was trained with (``--n-items``: 20,000 noun synsets = every gold synset of
a usable query, every synset sharing a lemma with one (the confusers), random others). Two protocols:

(a) re-rank: the DE retrieves its top-64 of those items; each scorer ranks those 64
    (ANNCUR's downstream protocol). Accuracy@1 counts a query whose gold is ranked first (0 when
    the gold is not in the DE's top-64).
(b) pool: every scorer scores all items of one fixed pool: the gold synsets of the first
    ``n_pool_queries`` eval queries plus random noun synsets up to ``pool_size`` (seeded), the
    same pool for every scorer. (All 82K synsets per query would be 41M CE pairs: impossible on
    a CPU.)

``--split dev`` scores train-ce's dev queries instead (``--n-dev`` as given to train-ce): the protocol
then picks between trained CEs without looking at the eval queries.

Scores are checkpointed under ``--work`` per scorer and protocol, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def scored(work: Path, scorers, queries, cands, every: int = 5, limit_s: float = 1e9):
    """Scores of every scorer on queries x candidates, query by query (all scorers and protocols for a
    query before the next, so a stopped run has equal counts everywhere), resumable from ``work``.

    cands: protocol -> (n_q, c) candidate ids (a protocol may cover only the first rows).
    Returns (scores: {(protocol, scorer): (n_q, c) array}, rows done).
    """
    S, f_done = {}, work / "rows_done.npy"
    for proto, cand in cands.items():
        for name in scorers:
            f = work / f"{proto}_{name}.npy"
            S[proto, name] = np.load(f) if f.is_file() else np.zeros(cand.shape, np.float32)
    done = int(np.load(f_done)) if f_done.is_file() else 0
    t = time.time()
    for r in range(done, len(queries)):
        if time.time() - t > limit_s:
            break
        for proto, cand in cands.items():
            if r < cand.shape[0]:
                for name, ce in scorers.items():
                    S[proto, name][r] = ce(queries[r], cand[r])
        done = r + 1
        if done % every == 0 or done == len(queries):
            for (proto, name), arr in S.items():
                np.save(work / f"{proto}_{name}.npy", arr)
            np.save(f_done, np.array(done))
            print(f"{done}/{len(queries)} queries ({time.time() - t:.0f} s this run)", flush=True)
    return S, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delta", type=Path, required=True, help="trained CE delta directory")
    ap.add_argument("--de-cache", type=Path, default=None, help=".npz of the DE's item embeddings (train-ce's)")
    ap.add_argument("--work", type=Path, default=Path("out/ce_eval"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/ce_heldout_wordnet.json"))
    ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--split", choices=("eval", "dev"), default="eval",
                    help="score the held-out eval queries (default) or train-ce's dev queries (model selection)")
    ap.add_argument("--n-dev", type=int, default=200, help="train-ce's --n-dev (fixes which queries are dev)")
    ap.add_argument("--n-items", type=int, default=20000, help="0: all noun synsets")
    ap.add_argument("--top", type=int, default=64)
    ap.add_argument("--n-pool-queries", type=int, default=100)
    ap.add_argument("--pool-size", type=int, default=200)
    ap.add_argument("--protocols", default="rerank,pool")
    ap.add_argument("--trained-head", default=None, help="score the trained CE with this head (default: its own)")
    ap.add_argument("--only-trained", action="store_true", help="score the trained CE only")
    ap.add_argument("--untrained-from", type=Path, default=None,
                    help="with --only-trained: report the untrained CE's scores kept in this earlier --work "
                         "directory (same eval queries, items and candidates) instead of scoring them again")
    ap.add_argument("--limit-s", type=float, default=1e9, help="stop scoring after this many seconds "
                    "(the figures then cover the queries scored so far; re-run to continue)")
    args = ap.parse_args()

    from axn_fast.datasets.subset import load_wordnet_subset
    from axn_fast.datasets.wordnet import ce_training_split
    from axn_fast.encoders.dual_encoder import HFDualEncoder
    from axn_fast.encoders.models import load_cross_encoder, minilm_path

    t0 = time.time()
    shipped = load_wordnet_subset()
    sp = ce_training_split(exclude_queries=shipped.queries, exclude_offsets=shipped.item_offsets,
                           n_eval=args.n_eval, n_dev=args.n_dev, n_items=args.n_items or None, seed=0)
    queries, gold = (sp.eval_queries, sp.eval_gold) if args.split == "eval" else (sp.dev_queries, sp.dev_gold)
    args.work.mkdir(parents=True, exist_ok=True)
    de = HFDualEncoder(minilm_path(), device="cpu", show_progress_bar=False)
    if args.de_cache is not None and args.de_cache.is_file():
        with np.load(args.de_cache, allow_pickle=False) as z:
            V = z["items"]
        if V.shape[0] != len(sp.items):
            raise SystemExit(f"{args.de_cache} holds {V.shape[0]} item embeddings, expected {len(sp.items)}")
    else:
        V = de.encode(sp.items)
    U = de.encode(queries)
    S_de = U @ V.T
    full_rank1 = float(np.mean(np.argmax(S_de, 1) == gold))
    top = np.argsort(-S_de, axis=1, kind="stable")[:, :args.top]
    in_top = (top == gold[:, None]).any(1)

    untrained = load_cross_encoder(sp.items, "minilm-emb-cos", device="cpu", show_progress_bar=False)
    trained = load_cross_encoder(sp.items, model=args.delta, head=args.trained_head, device="cpu",
                                 show_progress_bar=False)
    scorers = {"trained_ce": trained} if args.only_trained else {"untrained_ce": untrained, "trained_ce": trained}
    res = {"split": args.split, "n_eval_queries": len(queries), "n_items": len(sp.items),
           "de_full_accuracy_at_1": full_rank1,
           "delta": str(args.delta), "untrained_ce": untrained.config, "trained_ce": trained.config}
    protocols = args.protocols.split(",")
    cands = {}
    if "rerank" in protocols:
        cands["rerank"] = top
    if "pool" in protocols:
        n = args.n_pool_queries
        rng = np.random.default_rng(0)
        golds = np.unique(gold[:n])
        rest = np.setdiff1d(np.arange(len(sp.items)), golds)
        pool = np.sort(np.concatenate([golds, rng.choice(rest, args.pool_size - golds.size, replace=False)]))
        cands["pool"] = np.tile(pool, (n, 1))
    S, done = scored(args.work, scorers, queries, cands, limit_s=args.limit_s)
    names = list(scorers)
    if args.untrained_from is not None:
        kept = int(np.load(args.untrained_from / "rows_done.npy"))
        if kept < done:
            raise SystemExit(f"{args.untrained_from} holds {kept} scored queries, fewer than {done}")
        for proto, cand in cands.items():
            S[proto, "untrained_ce"] = np.load(args.untrained_from / f"{proto}_untrained_ce.npy")
            if S[proto, "untrained_ce"].shape != cand.shape:
                raise SystemExit(f"{args.untrained_from}: {proto} scores of another shape than {cand.shape}")
        names.append("untrained_ce")
        res["untrained_ce_scores_from"] = str(args.untrained_from)
    res["rows_scored"] = done
    if "rerank" in protocols:
        rr = {"top": args.top, "n_queries": done, "de_recall_at_top": float(in_top[:done].mean()),
              "de": float(np.mean(top[:done, 0] == gold[:done]))}
        for name in names:
            best = top[np.arange(done), np.argmax(S["rerank", name][:done], 1)]
            rr[name] = float(np.mean(best == gold[:done]))
        res["rerank_accuracy_at_1"] = rr
        print(json.dumps(rr), flush=True)
    if "pool" in protocols:
        m = min(done, args.n_pool_queries)
        pl = {"n_queries": m, "pool_size": int(pool.size), "n_gold_synsets_in_pool": int(golds.size),
              "de": float(np.mean(pool[np.argmax(S_de[:m][:, pool], 1)] == gold[:m]))}
        for name in names:
            pl[name] = float(np.mean(pool[np.argmax(S["pool", name][:m], 1)] == gold[:m]))
        res["pool_accuracy_at_1"] = pl
        print(json.dumps(pl), flush=True)
    res["seconds"] = round(time.time() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
