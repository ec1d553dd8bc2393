"""`axn-fast index`: build the sparse CE matrix G (resumable) and fit a saved index."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HELP = "Score train queries x items with the cross-encoder (resumable) and fit a saved AXN index."

BUNDLED = "bundled-minilm"


def add_arguments(parser) -> None:
    parser.add_argument("--items", required=True, type=Path, help="text file, one item per line")
    parser.add_argument("--queries", required=True, type=Path, help="text file, one train query per line")
    parser.add_argument("--out", required=True, type=Path, help="directory of the saved index (must not exist "
                        "or be empty)")
    parser.add_argument("--model", default=BUNDLED, help="dual-encoder checkpoint directory (default: the "
                        "bundled all-MiniLM-L6-v2)")
    parser.add_argument("--ce-model", default=None, help="cross-encoder checkpoint directory (default: --model)")
    parser.add_argument("--ce-head", default="emb-cos", choices=("emb-dot", "emb-cos", "cls"),
                        help="cross-encoder head (default emb-cos: far more query-sensitive than emb-dot for an untrained model)")
    parser.add_argument("--method", default="ind", choices=("ind", "trns", "de"),
                        help="item embeddings: MF_IND MLPs (default), MF_TRNS SGD, or the DE's as they are")
    parser.add_argument("--strategy", default="de-topk", choices=("de-topk", "random", "per-item"),
                        help="which pairs G holds (default de-topk)")
    parser.add_argument("--k-d", type=int, default=100, help="items per train query (queries per item for "
                        "per-item); capped at the number of items (default 100)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 20 for ind, 30 for trns)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default 0.005 ind, 0.02 trns)")
    parser.add_argument("--reg", type=float, default=0.01, help="L2 weight of MF_TRNS (default 0.01)")
    parser.add_argument("--no-normalize", action="store_true",
                        help="do not rescale CE scores to the DE's score distribution (Appendix A.4)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="index scan precision")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="where G's shards go (default: OUT.ckpt next to OUT); re-run to resume")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per CE forward pass (default 64)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-threads", type=int, default=0, help="threads for SGD / search (0: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def read_lines(path: Path, what: str):
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"axn-fast: cannot read the {what} file {str(path)!r}: {exc.strerror}")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise SystemExit(f"axn-fast: the {what} file {str(path)!r} has no non-empty line")
    return lines


def resolve_model(name: str) -> Path:
    if name == BUNDLED:
        from axn_fast.encoders.models import minilm_path

        return minilm_path()
    return Path(name)


def sha1_lines(lines) -> str:
    h = hashlib.sha1()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def run(args) -> int:
    import axn_fast
    from axn_fast.encoders.cross_encoder import HFCrossEncoder
    from axn_fast.encoders.dual_encoder import HFDualEncoder

    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SystemExit(f"axn-fast: --out {str(out)!r} exists and is not an empty directory")
    items = read_lines(args.items, "items")
    queries = read_lines(args.queries, "queries")
    k_d = min(args.k_d, len(queries) if args.strategy == "per-item" else len(items))
    if k_d < 1:
        raise SystemExit("axn-fast: --k-d must be >= 1")
    show = False if args.no_progress else None
    ckpt = args.checkpoint_dir or out.with_name(out.name + ".ckpt")
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731

    de_path, ce_path = resolve_model(args.model), resolve_model(args.ce_model or args.model)
    log(f"embedding {len(items)} items and {len(queries)} train queries with {de_path.name if de_path.name != 'model' else de_path.parent.name}")
    de = HFDualEncoder(de_path, device=args.device, show_progress_bar=show)
    I = de.encode(items)
    Q = de.encode(queries)
    ce = HFCrossEncoder(ce_path, items, head=args.ce_head, device=args.device, batch_size=args.batch_size,
                        show_progress_bar=False)
    log(f"scoring {k_d} pairs per {'item' if args.strategy == 'per-item' else 'query'} with the cross-encoder "
        f"(checkpoints in {str(ckpt)!r})")
    G = axn_fast.build_score_matrix(ce, queries, len(items), strategy=args.strategy, k_d=k_d, de_query_emb=Q,
                                    de_item_emb=I, seed=args.seed, batch_size=args.batch_size,
                                    checkpoint_dir=ckpt, num_threads=args.num_threads, show_progress_bar=show)
    norm = None
    if not args.no_normalize:
        norm = axn_fast.normalization_from_score_matrix(G, Q, I, n_queries=100, seed=args.seed)
        G = norm.apply(G)
        log(f"score normalisation: alpha={norm.alpha:.4g}, beta={norm.beta:.4g}")

    encoder = None
    fit = {"method": args.method}
    if args.method == "ind":
        epochs, lr = args.epochs or 20, args.lr or 0.005
        encoder = axn_fast.InductiveMF(Q.shape[1], seed=args.seed)
        encoder.fit(G, Q, I, epochs=epochs, lr=lr, seed=args.seed, show_progress_bar=show)
        V = encoder.embed_items(I)
        fit.update(epochs=epochs, lr=lr, train_rmse=encoder.history.train_rmse[-1])
    elif args.method == "trns":
        epochs, lr = args.epochs or 30, args.lr or 0.02
        _, V, hist = axn_fast.indexing.factorize(G, U0=Q, V0=I, epochs=epochs, lr=lr, reg=args.reg, seed=args.seed,
                                        num_threads=args.num_threads, show_progress_bar=show)
        fit.update(epochs=epochs, lr=lr, reg=args.reg, train_rmse=hist.train_rmse[-1])
    else:
        V = I
    index = axn_fast.Index(V, dtype=args.dtype, num_threads=args.num_threads, normalization=norm)
    index.query_encoder = encoder
    index.metadata = {
        "created_by": "axn-fast index",
        "de_model": args.model if args.model == BUNDLED else str(de_path.resolve()),
        "ce_model": (args.ce_model or args.model) if (args.ce_model or args.model) == BUNDLED
        else str(ce_path.resolve()),
        "ce": ce.config,
        "items_file": "items.txt",
        "items_sha1": sha1_lines(items),
        "n_train_queries": len(queries),
        "strategy": args.strategy,
        "k_d": k_d,
        "g_nnz": G.nnz,
        "seed": args.seed,
        "fit": fit,
    }
    index.save(out)
    (out / "items.txt").write_text("".join(t + "\n" for t in items), encoding="utf-8")
    log(f"saved {args.method} index of {len(items)} items (dim {index.dim}) to {str(out)!r}")
    print(out)
    return 0
