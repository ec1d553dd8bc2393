"""`axn-fast index`: score train queries x items with the cross-encoder (resumable) and save an index bundle."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

from axn_fast.cli._args import UsageError, float_range, int_range

HELP = "Score train queries x items with the cross-encoder (resumable) and fit a saved AXN index."

#: the bundled all-MiniLM-L6-v2 (the name load_cross_encoder also understands)
BUNDLED = "minilm"
_BUNDLED_ALIASES = ("minilm", "bundled-minilm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", required=True, type=Path, help="text file, one item per line")
    parser.add_argument("--queries", required=True, type=Path, help="text file, one train query per line")
    parser.add_argument("--out", required=True, type=Path, help="directory of the saved index (must not exist "
                        "or be empty)")
    parser.add_argument("--model", default=BUNDLED, help="dual-encoder checkpoint directory (default: the "
                        "bundled all-MiniLM-L6-v2)")
    parser.add_argument("--ce", default=None, metavar="NAME",
                        help="the cross-encoder by name (default: minilm-wordnet, all-MiniLM-L6-v2 trained on "
                             "WordNet; the untrained heads stay available as minilm-emb-cos / minilm-emb-dot)")
    parser.add_argument("--ce-model", default=None, metavar="DIR",
                        help="instead of --ce: a cross-encoder checkpoint directory ('minilm': the bundled "
                             "all-MiniLM-L6-v2) or a trained-CE delta directory (axn-fast train-ce)")
    parser.add_argument("--ce-head", default=None, choices=("emb-dot", "emb-cos", "cls"),
                        help="head of --ce-model (default: emb-cos for a checkpoint, the trained head for a delta); "
                             "a named --ce has its own")
    parser.add_argument("--max-length", type=int_range(8, 8192), default=None,
                        help="most tokens per (query, item) pair (default: the CE's own, i.e. a trained CE's "
                             "training length, else 128)")
    parser.add_argument("--method", default="ind", choices=("ind", "trns", "de"),
                        help="item embeddings: MF_IND MLPs (default), MF_TRNS SGD, or the DE's as they are")
    parser.add_argument("--strategy", default="de-topk", choices=("de-topk", "random", "per-item"),
                        help="which pairs G holds (default de-topk)")
    parser.add_argument("--k-d", type=int_range(1), default=100, help="items per train query (queries per item "
                        "for per-item); capped at the number of items (default 100)")
    parser.add_argument("--epochs", type=int_range(1, 100_000), default=None,
                        help="training epochs (default 20 for ind, 30 for trns)")
    parser.add_argument("--lr", type=float_range(1e-12, 100.0), default=None,
                        help="learning rate, > 0 (default 0.005 ind, 0.02 trns)")
    parser.add_argument("--reg", type=float_range(0.0), default=0.01, help="L2 weight of MF_TRNS (default 0.01)")
    parser.add_argument("--no-normalize", action="store_true",
                        help="do not rescale CE scores to the DE's score distribution (Appendix A.4)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="index scan precision")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="where G's checkpoint goes (default: OUT.ckpt next to OUT); re-run to resume")
    parser.add_argument("--batch-size", type=int_range(1, 1 << 20), default=64,
                        help="pairs per CE forward pass (default 64)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    parser.add_argument("--seed", type=int_range(0, 2 ** 63 - 1), default=0)
    parser.add_argument("--num-threads", type=int_range(0, 4096), default=0,
                        help="threads for SGD / search (0: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def read_lines(path: Path, what: str, flag: str) -> List[str]:
    """The non-empty, stripped lines of a UTF-8 text file; errors name the flag and the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{flag}: the {what} file {str(path)!r} is not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None
    except OSError as exc:
        raise OSError(exc.errno, f"{flag}: cannot read the {what} file {str(path)!r}: {exc.strerror}") from None
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"{flag}: the {what} file {str(path)!r} has no non-empty line")
    return lines


def model_path(name: str) -> Path:
    """A dual-encoder/CE checkpoint directory from a --model value ("minilm": the bundled one)."""
    from axn_fast.encoders.models import minilm_path

    return minilm_path() if name in _BUNDLED_ALIASES else Path(name)


def ce_choice(args: argparse.Namespace) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(ce_config, identity)`` of the CE the flags choose: ``ce_config`` is what the bundle records
    (``load_cross_encoder(items, **ce_config)`` rebuilds the CE), ``identity`` also pins a trained
    delta's files (:func:`~axn_fast.encoders.models.ce_identity`). UsageError for flags that do not go
    together or an unknown name."""
    from axn_fast.encoders.models import DEFAULT_CE, NAMED_CES, ce_identity

    config: Dict[str, Any]
    if args.ce_model is None:
        if args.ce_head is not None:
            raise UsageError("--ce-head goes with --ce-model; a named CE has its own head")
        name = DEFAULT_CE if args.ce is None else args.ce
        if name not in NAMED_CES:
            raise UsageError(f"--ce must be one of {', '.join(sorted(NAMED_CES))}; got {name!r}")
        config = {"name": name}
        identity = ce_identity(name, max_length=args.max_length)
    else:
        if args.ce is not None:
            raise UsageError("give --ce or --ce-model, not both")
        model = BUNDLED if args.ce_model in _BUNDLED_ALIASES else str(Path(args.ce_model).resolve())
        if model != BUNDLED and not Path(model).is_dir():
            raise FileNotFoundError(f"--ce-model: no such directory {model!r}")
        identity = ce_identity(model=model, head=args.ce_head, max_length=args.max_length)
        head = args.ce_head
        if head is None and "delta_sha256" not in identity:
            head = "emb-cos"  # far more query-sensitive than emb-dot for an untrained model
        config = {"model": model} if head is None else {"model": model, "head": head}
    if args.max_length is not None:
        config["max_length"] = args.max_length
    return config, identity


def run(args: argparse.Namespace) -> int:
    from axn_fast.encoders.dual_encoder import HFDualEncoder
    from axn_fast.encoders.models import load_cross_encoder
    from axn_fast.indexing.bundle import build_index_bundle

    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {str(out)!r} exists and is not an empty directory")
    ce_config, ce_ident = ce_choice(args)
    items = read_lines(args.items, "items", "--items")
    queries = read_lines(args.queries, "queries", "--queries")
    k_d = min(args.k_d, len(queries) if args.strategy == "per-item" else len(items))
    show = False if args.no_progress else None
    ckpt: Path = args.checkpoint_dir or out.with_name(out.name + ".ckpt")
    de_model = BUNDLED if args.model in _BUNDLED_ALIASES else str(Path(args.model).resolve())

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    de = HFDualEncoder(model_path(de_model), device=args.device, show_progress_bar=show)
    ce = load_cross_encoder(items, **ce_config, device=args.device, batch_size=args.batch_size,
                            show_progress_bar=False)
    bundle = build_index_bundle(items, queries, de=de, de_model=de_model, ce=ce, ce_config=ce_config, ce_identity=ce_ident,
                                method=args.method, strategy=args.strategy, k_d=k_d, epochs=args.epochs,
                                lr=args.lr, reg=args.reg, normalize=not args.no_normalize, dtype=args.dtype,
                                checkpoint_dir=ckpt, batch_size=args.batch_size, seed=args.seed,
                                num_threads=args.num_threads, show_progress_bar=show, log=log)
    bundle.metadata["ce_identity"] = ce_ident
    bundle.save(out)
    log(f"saved {args.method} index of {len(items)} items (dim {bundle.index.dim}) to {str(out)!r}")
    print(out)
    return 0
