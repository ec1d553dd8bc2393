"""`axn-fast train-ce`: fine-tune a cross-encoder on (query, gold item) pairs; resumable.

    axn-fast train-ce --data wordnet --out out/wordnet_ce          # WordNet nouns, the shipped subset left out
    axn-fast train-ce --items items.txt --queries q.txt --gold gold.txt --out run/   # your own data

The result is a delta (``OUT/best``) loaded with ``HFCrossEncoder.from_trained``
or ``load_cross_encoder(items, model=OUT/best)``. Re-run the same command to
resume an interrupted run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

if TYPE_CHECKING:
    import numpy as np

from axn_fast.cli._args import UsageError, float_range, int_range

HELP = "Fine-tune a cross-encoder (emb-dot / emb-cos / cls head) on your queries and gold items (resumable)."

BUNDLED = "bundled-minilm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data (either --data wordnet or the three files)")
    data.add_argument("--data", choices=("wordnet",), default=None,
                      help="WordNet 3.0 nouns (/usr/share/wordnet); the shipped subset's queries and the queries "
                      "of its items are left out, and an eval set is held out by gold synset")
    data.add_argument("--items", type=Path, help="text file, one item per line (ids are line numbers from 0)")
    data.add_argument("--queries", type=Path, help="text file, one training query per line")
    data.add_argument("--gold", type=Path, help="text file, the gold item id of each query, one per line")
    data.add_argument("--dev-queries", type=Path, help="text file of dev queries (optional)")
    data.add_argument("--dev-gold", type=Path, help="gold ids of --dev-queries")
    data.add_argument("--n-train", type=int_range(1), default=None, help="use the first N training queries "
                      "(after shuffling for --data wordnet)")
    data.add_argument("--n-dev", type=int_range(1), default=200, help="dev queries for --data wordnet (default 200)")
    data.add_argument("--n-eval", type=int_range(1), default=500,
                      help="held-out eval queries for --data wordnet (default 500; never trained on)")
    data.add_argument("--n-items", type=int_range(1), default=None,
                      help="for --data wordnet: restrict the items to the gold synsets, their same-lemma "
                      "confusers and random others up to N (default: all 82,115 noun synsets)")
    parser.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, best delta, log)")
    parser.add_argument("--base", default=BUNDLED, help="base checkpoint directory or hub id (default: the "
                        "bundled all-MiniLM-L6-v2)")
    parser.add_argument("--head", default="emb-dot", choices=("emb-dot", "emb-cos", "cls"))
    parser.add_argument("--pooling", default="mean", choices=("mean", "markers"),
                        help="how the emb heads take the query and item vectors: mean of their tokens (default) "
                        "or ANNCUR's [EMB] markers ([unused0]/[unused1] before the query and the item; BERT "
                        "vocabularies only); recorded in the delta")
    parser.add_argument("--negatives", default="de", choices=("de", "random"),
                        help="negatives: the DE's top non-gold items (default) or random ones")
    parser.add_argument("--n-negatives", type=int_range(1), default=15)
    parser.add_argument("--random-negatives", type=int_range(0), default=0, metavar="N",
                        help="extra random negatives per query, redrawn every step (they fix the score "
                        "scale across unrelated items; default 0)")
    parser.add_argument("--hard-pool", type=int_range(1), default=None, metavar="P",
                        help="draw the n-negatives hard negatives afresh every step from the DE's top P "
                        "non-gold items (default: always its top n-negatives)")
    parser.add_argument("--dev-negatives", type=int_range(1), default=None, metavar="K",
                        help="negatives per dev query (default: --n-negatives); 63 with --negatives de makes "
                        "the dev accuracy the re-rank protocol over the DE's top 64")
    parser.add_argument("--init", type=Path, default=None, metavar="DELTA",
                        help="start from this trained delta of the same base, head and pooling (a second "
                        "stage); --trainable-layers must cover its layers")
    parser.add_argument("--de-cache", type=Path, default=None,
                        help=".npz holding the DE's item embeddings (written on first use, reused when the "
                        "items and DE match)")
    parser.add_argument("--epochs", type=int_range(1), default=1)
    parser.add_argument("--lr", type=float_range(1e-8, 1.0), default=5e-5)
    parser.add_argument("--warmup", type=float_range(0.0, 0.99), default=0.1, help="warm-up fraction of the steps")
    parser.add_argument("--batch-size", type=int_range(1), default=2, help="queries per optimiser step "
                        "(each brings 1 + n-negatives + random-negatives pairs)")
    parser.add_argument("--max-length", type=int_range(8), default=64, help="tokens per pair")
    parser.add_argument("--trainable-layers", type=int_range(0), default=2, help="top transformer layers trained")
    parser.add_argument("--eval-every", type=int_range(1), default=100, help="steps between dev evaluations")
    parser.add_argument("--checkpoint-every", type=int_range(1), default=25, help="steps between checkpoints")
    parser.add_argument("--save-dtype", default=None, choices=("float32", "float16", "bfloat16"),
                        help="dtype of the saved delta (default: as trained)")
    parser.add_argument("--seed", type=int_range(0), default=0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--name", default=None, help="name recorded in the manifest (default: OUT's name)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _lines(path: Path, what: str) -> List[str]:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise OSError(f"cannot read the {what} file {str(path)!r}: {exc.strerror}") from None
    lines = [ln for ln in lines if ln]
    if not lines:
        raise ValueError(f"the {what} file {str(path)!r} has no non-empty line")
    return lines


def _ids(path: Path, what: str) -> "np.ndarray":
    import numpy as np

    out = []
    for n, ln in enumerate(_lines(path, what), 1):
        try:
            out.append(int(ln))
        except ValueError:
            raise ValueError(f"line {n} of the {what} file {str(path)!r} is not an integer item id: {ln!r}") from None
    return np.array(out, dtype=np.int64)


def _load_data(args: argparse.Namespace) -> Tuple[List[str], List[str], Any, Optional[List[str]], Any]:
    if args.data == "wordnet":
        if any(x is not None for x in (args.items, args.queries, args.gold, args.dev_queries, args.dev_gold)):
            raise UsageError("--data wordnet takes no --items/--queries/--gold/--dev-* files")
        from axn_fast.datasets.subset import load_wordnet_subset
        from axn_fast.datasets.wordnet import ce_training_split

        shipped = load_wordnet_subset()
        sp = ce_training_split(exclude_queries=shipped.queries, exclude_offsets=shipped.item_offsets,
                               n_eval=args.n_eval, n_dev=args.n_dev, n_train=args.n_train,
                               n_items=args.n_items, seed=args.seed)
        return sp.items, sp.train_queries, sp.train_gold, sp.dev_queries, sp.dev_gold
    if args.items is None or args.queries is None or args.gold is None:
        raise UsageError("give --data wordnet, or all of --items, --queries and --gold")
    if (args.dev_queries is None) != (args.dev_gold is None):
        raise UsageError("--dev-queries and --dev-gold go together")
    items = _lines(args.items, "items")
    queries = _lines(args.queries, "queries")
    gold = _ids(args.gold, "gold")
    if gold.shape[0] != len(queries):
        raise ValueError(f"--gold has {gold.shape[0]} ids for {len(queries)} queries in --queries")
    dq = dg = None
    if args.dev_queries is not None:
        dq, dg = _lines(args.dev_queries, "dev queries"), _ids(args.dev_gold, "dev gold")
        if dg.shape[0] != len(dq):
            raise ValueError(f"--dev-gold has {dg.shape[0]} ids for {len(dq)} queries in --dev-queries")
    if args.n_train is not None:
        queries, gold = queries[:args.n_train], gold[:args.n_train]
    return items, queries, gold, dq, dg


def _item_embeddings(args: argparse.Namespace, base: Any, items: List[str]) -> Tuple[Any, "np.ndarray"]:
    """The DE's item embeddings, cached in --de-cache keyed by the items and the DE."""
    import numpy as np

    from axn_fast.encoders.dual_encoder import HFDualEncoder

    de = HFDualEncoder(base, show_progress_bar=None if not args.no_progress else False)
    h = hashlib.sha256(str(base).encode())
    for t in items:
        h.update(t.encode("utf-8") + b"\0")
    key = h.hexdigest()
    if args.de_cache is not None and args.de_cache.is_file():
        with np.load(args.de_cache, allow_pickle=False) as z:
            if str(z["key"]) == key:
                return de, z["items"]
    emb = de.encode(items)
    if args.de_cache is not None:
        args.de_cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.de_cache, key=np.array(key), items=emb)
    return de, emb


def run(args: argparse.Namespace) -> int:
    from axn_fast.encoders.models import minilm_path
    from axn_fast.encoders.training import train_cross_encoder

    items, queries, gold, dq, dg = _load_data(args)
    base = minilm_path() if args.base == BUNDLED else args.base
    de = emb = None
    if args.negatives == "de":
        de, emb = _item_embeddings(args, base, items)
    result = train_cross_encoder(
        base, items, queries, gold, args.out, head=args.head, pooling=args.pooling, negatives=args.negatives,
        n_negatives=args.n_negatives, n_random_negatives=args.random_negatives,
        hard_pool=args.hard_pool, n_dev_negatives=args.dev_negatives, init=args.init, dual_encoder=de,
        item_embeddings=emb, dev_queries=dq, dev_gold=dg,
        epochs=args.epochs, lr=args.lr, warmup=args.warmup, batch_size=args.batch_size,
        max_length=args.max_length, trainable_layers=args.trainable_layers, seed=args.seed,
        device=args.device, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
        save_dtype=args.save_dtype, name=args.name,
        base_name="all-MiniLM-L6-v2" if args.base == BUNDLED else None,
        show_progress_bar=False if args.no_progress else None)
    print(json.dumps({"delta": str(result.path), "best_step": result.best_step,
                      "best_dev_accuracy": result.best_dev_accuracy, "steps": result.steps,
                      "seconds": round(result.seconds, 1), "pairs_per_second": round(result.pairs_per_second, 2),
                      "dev_curve": result.dev_curve}, indent=1))
    return 0
