"""`axn-fast eval`: Top-k-Recall@m of AXN and the baselines against the budget of CE calls.

Data, one of:
  * the shipped WordNet subset (default): texts, gold labels, splits and exact CE scores;
    dual-encoder embeddings from the bundled MiniLM, cached under --cache-dir;
  * ``--scores S.npy --train F --test F [--dev F]``: your dense score matrix (rows =
    queries, columns = items) and split files (.npy or text, one row id per line); add
    ``--item-emb/--query-emb`` (.npy) for RNR_DE, TOUR and AXN, ``--items/--queries``
    (text, one per line) for TF-IDF and BM25, ``--gold`` for downstream accuracy;
  * ``--synthetic``: a low-rank-plus-noise matrix with weak DE embeddings.

Writes results.csv, results.json, results.md and recall_vs_budget.png under --out. While
running it keeps a checkpoint (checkpoint.json) updated after every method: an interrupted
run, started again with the same settings, evaluates only the methods still missing.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HELP = "Top-k-Recall@m of AXN, ANNCUR, ADACUR, TOUR and retrieve-and-rerank versus the CE budget; table + plots."

METHODS = ("rnr-de", "rnr-tfidf", "rnr-bm25", "anncur-ref", "anncur", "adacur", "tour-ce", "tour-mse",
           "axn", "axn-dev")


def _csv(kind):
    def parse(text):
        try:
            vals = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise ValueError(f"expected comma-separated {kind.__name__}s, got {text!r}") from exc
        if not vals:
            raise ValueError(f"expected at least one value, got {text!r}")
        return vals
    parse.__name__ = f"{kind.__name__} list"
    return parse


def add_arguments(parser) -> None:
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
    d.add_argument("--ce-model", type=Path, default=None,
                   help="score --items/--queries live with this cross-encoder checkpoint directory instead of "
                        "--scores ('minilm': the bundled MiniLM); the rows of the splits are scored against every "
                        "item once (the ground truth and the CUR rows need them), checkpointed under --out")
    d.add_argument("--ce-head", default="emb-cos",
                   help="HFCrossEncoder head for --ce-model (default emb-cos, as the demo: far more "
                        "query-sensitive than emb-dot for the untrained MiniLM)")
    d.add_argument("--synthetic", action="store_true", help="use a synthetic low-rank-plus-noise matrix")
    d.add_argument("--synthetic-shape", default="2000x10000", help="NQxNI for --synthetic (default 2000x10000)")
    d.add_argument("--rank", type=int, default=32, help="rank of --synthetic (default 32)")
    d.add_argument("--noise", type=float, default=0.5, help="noise/signal std of --synthetic (default 0.5)")
    d.add_argument("--de-noise", type=float, default=1.0, help="DE embedding noise of --synthetic (default 1.0)")
    r = parser.add_argument_group("evaluation")
    r.add_argument("--methods", type=_csv(str), default=None,
                   help=f"comma-separated, from {','.join(METHODS)} (default: all the data allows)")
    r.add_argument("--ks", type=_csv(int), default=[1, 10, 100], help="k values (default 1,10,100)")
    r.add_argument("--budgets", type=_csv(int), default=[50, 100, 200, 500],
                   help="budgets m of CE calls per query (default 50,100,200,500)")
    r.add_argument("--rounds", type=int, default=5, help="rounds of AXN, ADACUR and TOUR (default 5)")
    r.add_argument("--lams", type=_csv(float), default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                   help="λ values tried on dev for 'axn-dev' (default 0,0.2,...,1)")
    r.add_argument("--max-test", type=int, default=None, help="evaluate on the first N test queries only")
    r.add_argument("--max-dev", type=int, default=None, help="tune on the first N dev queries only")
    r.add_argument("--no-normalize", action="store_true",
                   help="do not rescale CE scores to the DE's score distribution for AXN/TOUR (A.4)")
    r.add_argument("--seed", type=int, default=0, help="seed of ANNCUR anchors, random first rounds, synthetic data")
    o = parser.add_argument_group("output")
    o.add_argument("--out", type=Path, default=Path("axn_fast_eval"), help="output directory (default ./axn_fast_eval)")
    o.add_argument("--title", default=None, help="plot title")
    o.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "axn_fast",
                   help="where WordNet DE embeddings are cached (default ~/.cache/axn_fast)")


def _fail(msg: str) -> "SystemExit":
    return SystemExit(f"axn-fast eval: {msg}")


def _read_ids(path: Path, name: str):
    import numpy as np

    if not path.is_file():
        raise _fail(f"--{name} file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        try:
            arr = np.array([int(t) for t in path.read_text().split()], dtype=np.int64)
        except ValueError as exc:
            raise _fail(f"--{name} {str(path)!r} must hold integer ids, one per line: {exc}") from exc
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise _fail(f"--{name} {str(path)!r} must be a 1-D list of integers, got shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64)


def _read_lines(path: Path, name: str):
    if not path.is_file():
        raise _fail(f"--{name} file {str(path)!r} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines


def _load_npy(path: Path, name: str):
    import numpy as np

    if not path.is_file():
        raise _fail(f"--{name} file {str(path)!r} does not exist")
    return np.load(path, allow_pickle=False)


def _attach_embeddings(args, data) -> None:
    if (args.item_emb is None) != (args.query_emb is None):
        raise _fail("give both --item-emb and --query-emb, or neither")
    if args.item_emb is None:
        return
    scores = data.scores
    data.item_emb = _load_npy(args.item_emb, "item-emb")
    data.query_emb = _load_npy(args.query_emb, "query-emb")
    if data.item_emb.ndim != 2 or data.item_emb.shape[0] != scores.shape[1]:
        raise _fail(f"--item-emb must be ({scores.shape[1]}, d), got {data.item_emb.shape}")
    if data.query_emb.ndim != 2 or data.query_emb.shape != (scores.shape[0], data.item_emb.shape[1]):
        raise _fail(f"--query-emb must be ({scores.shape[0]}, {data.item_emb.shape[1]}), got {data.query_emb.shape}")


def _live_scores(args, items, queries, rows):
    """Score ``rows`` of ``queries`` against every item with the CE of --ce-model.

    Checkpointed under --out (live_scores.npy + live_done.npy), so an interrupted run
    resumes where it stopped. Rows outside the splits stay 0 and are never used.
    """
    import numpy as np
    from tqdm.auto import tqdm

    from axn_fast.encoders.cross_encoder import HFCrossEncoder

    model = args.ce_model
    if str(model) == "minilm":
        from axn_fast.encoders.models import minilm_path

        model = minilm_path()
    args.out.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha1(f"{Path(model).resolve()}|{args.ce_head}|{len(queries)}x{len(items)}".encode())
    for t in items + queries:
        h.update(t.encode("utf-8") + b"\n")
    f_scores, f_done, f_key = (args.out / "live_scores.npy", args.out / "live_done.npy", args.out / "live_key.txt")
    shape = (len(queries), len(items))
    if f_key.is_file() and f_key.read_text() == h.hexdigest() and f_scores.is_file() and f_done.is_file():
        S = np.lib.format.open_memmap(f_scores, mode="r+")
        done = np.load(f_done)
    else:
        S = np.lib.format.open_memmap(f_scores, mode="w+", dtype=np.float32, shape=shape)
        done = np.zeros(shape[0], dtype=bool)
        f_key.write_text(h.hexdigest())
    todo = [int(r) for r in rows if not done[r]]
    if todo:
        ce = HFCrossEncoder(model, items, head=args.ce_head)
        all_ids = np.arange(len(items), dtype=np.int64)
        for r in tqdm(todo, desc="CE rows", disable=args.no_progress or not sys.stderr.isatty()):
            S[r] = ce(queries[r], all_ids)
            done[r] = True
            S.flush()
            np.save(f_done, done)
    return np.array(S, dtype=np.float32)


class EvalData:
    """Everything a run needs; per-query arrays are indexed by score-matrix row."""

    def __init__(self, name, scores, train, dev, test, *, gold=None, item_emb=None, query_emb=None,
                 items=None, queries=None):
        self.name, self.scores, self.train, self.dev, self.test = name, scores, train, dev, test
        self.gold, self.item_emb, self.query_emb = gold, item_emb, query_emb
        self.items, self.queries = items, queries


def _cached_embeddings(texts, cache_dir: Path, tag: str, show_progress: bool):
    import numpy as np

    from axn_fast.encoders.dual_encoder import HFDualEncoder
    from axn_fast.encoders.models import minilm_path

    path = minilm_path()
    h = hashlib.sha1(str(path).encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\n")
    f = cache_dir / f"{tag}_{h.hexdigest()[:16]}.npy"
    if f.is_file():
        return np.load(f, allow_pickle=False)
    emb = HFDualEncoder(path, device="cpu", show_progress_bar=show_progress).encode(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    tmp.replace(f)
    return emb


def load_data(args) -> EvalData:
    import numpy as np

    if args.synthetic and args.scores is not None:
        raise _fail("give either --scores or --synthetic, not both")
    if args.synthetic:
        from axn_fast.datasets.synthetic import low_rank_scores

        try:
            nq, ni = (int(x) for x in args.synthetic_shape.lower().split("x"))
        except ValueError as exc:
            raise _fail(f"--synthetic-shape must look like 2000x10000, got {args.synthetic_shape!r}") from exc
        d = low_rank_scores(nq, ni, args.rank, args.noise, args.seed, de_noise=args.de_noise)
        perm = np.random.default_rng(args.seed).permutation(nq)
        n_train, n_dev = nq // 4, nq // 10
        return EvalData(f"synthetic {nq}x{ni} rank {args.rank} noise {args.noise:g}", d.scores,
                        np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_dev]),
                        np.sort(perm[n_train + n_dev:]), item_emb=d.item_emb, query_emb=d.query_emb)
    if args.ce_model is not None and args.scores is not None:
        raise _fail("give either --scores or --ce-model, not both")
    if args.ce_model is not None:
        if args.items is None or args.queries is None or args.train is None or args.test is None:
            raise _fail("--ce-model needs --items, --queries, --train and --test")
        items, queries = _read_lines(args.items, "items"), _read_lines(args.queries, "queries")
        train, test = _read_ids(args.train, "train"), _read_ids(args.test, "test")
        dev = None if args.dev is None else _read_ids(args.dev, "dev")
        rows = np.unique(np.concatenate([train, test] + ([] if dev is None else [dev])))
        if rows.max() >= len(queries):
            raise _fail(f"split files hold row {int(rows.max())} but --queries has {len(queries)} lines")
        scores = _live_scores(args, items, queries, rows)
        data = EvalData(f"{args.queries.name} x {args.items.name} ({args.ce_model.name})", scores, train, dev, test,
                        items=items, queries=queries)
        if args.gold is not None:
            data.gold = _read_ids(args.gold, "gold")
        if args.item_emb is not None or args.query_emb is not None:
            _attach_embeddings(args, data)
        return data
    if args.scores is not None:
        if args.train is None or args.test is None:
            raise _fail("--scores needs --train and --test split files (and --dev to tune λ and the ANNCUR split)")
        scores = _load_npy(args.scores, "scores")
        if scores.ndim != 2:
            raise _fail(f"--scores must hold a 2-D (n_queries, n_items) matrix, got shape {scores.shape}")
        data = EvalData(args.scores.name, scores, _read_ids(args.train, "train"),
                        None if args.dev is None else _read_ids(args.dev, "dev"), _read_ids(args.test, "test"))
        if args.gold is not None:
            data.gold = _read_ids(args.gold, "gold")
        _attach_embeddings(args, data)
        if (args.items is None) != (args.queries is None):
            raise _fail("give both --items and --queries, or neither")
        if args.items is not None:
            data.items, data.queries = _read_lines(args.items, "items"), _read_lines(args.queries, "queries")
            if (len(data.queries), len(data.items)) != scores.shape:
                raise _fail(f"--queries/--items have {len(data.queries)}/{len(data.items)} lines but --scores "
                            f"is {scores.shape[0]}x{scores.shape[1]}")
        return data
    from axn_fast.datasets import load_wordnet_subset

    ds = load_wordnet_subset()
    if ds.scores is None:
        raise _fail("the WordNet subset has no score matrix")
    show = not args.no_progress and sys.stderr.isatty()
    item_emb = _cached_embeddings(ds.items, args.cache_dir, "wordnet_items", show)
    query_emb = _cached_embeddings(ds.queries, args.cache_dir, "wordnet_queries", show)
    return EvalData(f"WordNet subset {ds.n_queries}x{ds.n_items}", ds.scores, ds.splits["train"],
                    ds.splits["dev"], ds.splits["test"], gold=ds.gold, item_emb=item_emb, query_emb=query_emb,
                    items=list(ds.items), queries=list(ds.queries))


def build_methods(data: EvalData, keys, *, budgets, rounds: int, lams, seed: int, normalize: bool):
    """The evaluator's methods for ``keys``; first rounds come from the DE when there is one."""
    import numpy as np

    import axn_fast
    from axn_fast.methods import baselines as B

    m_max = max(budgets)
    rows = np.unique(np.concatenate([data.test] + ([] if data.dev is None else [data.dev])))
    n_q = data.scores.shape[0]
    S_train = data.scores[data.train]
    have_de = data.item_emb is not None
    have_text = data.items is not None
    explicit = keys is not None
    keys = list(METHODS) if keys is None else keys
    bad = [k for k in keys if k not in METHODS]
    if bad:
        raise _fail(f"unknown method(s) {bad}; choose from {','.join(METHODS)}")

    def ranked_from(scores_fn):
        out = np.full((n_q, m_max), -1, dtype=np.int64)
        out[rows] = scores_fn(rows)
        return out

    de_ranked = norm = index = None
    if have_de:
        norm_index = None
        if normalize:
            from axn_fast.indexing.normalization import estimate_normalization

            sample = data.train[:100]
            norm = estimate_normalization(data.scores[sample].ravel(),
                                          (data.query_emb[sample] @ data.item_emb.T).ravel())
            norm_index = (norm.alpha, norm.beta)
        index = axn_fast.Index(data.item_emb, normalization=norm_index)
        de_ranked = ranked_from(lambda r: index.search(data.query_emb[r], m_max)[1])
    lex = {}
    if have_text and any(k in keys for k in ("rnr-tfidf", "rnr-bm25")):
        from axn_fast.methods.lexical import BM25Retriever, TfidfRetriever

        qtexts = data.queries
        if "rnr-tfidf" in keys:
            tf = TfidfRetriever(data.items)
            lex["rnr-tfidf"] = ranked_from(lambda r: tf.retrieve([qtexts[i] for i in r], m_max))
        if "rnr-bm25" in keys:
            bm = BM25Retriever(data.items)
            lex["rnr-bm25"] = ranked_from(lambda r: bm.retrieve([qtexts[i] for i in r], m_max))
    first = de_ranked if de_ranked is not None else lex.get("rnr-tfidf")

    methods, skipped = [], []
    for key in keys:
        need_de = key in ("rnr-de", "tour-ce", "tour-mse", "axn", "axn-dev")
        if (need_de and not have_de) or (key in ("rnr-tfidf", "rnr-bm25") and key not in lex):
            if explicit:
                raise _fail(f"method {key!r} needs " + ("DE embeddings (--item-emb/--query-emb)" if need_de
                                                        else "texts (--items/--queries)"))
            skipped.append(key)
            continue
        if key == "rnr-de":
            methods.append(B.RetrieveRerank("RNR (DE)", de_ranked))
        elif key == "rnr-tfidf":
            methods.append(B.RetrieveRerank("RNR (TF-IDF)", lex[key]))
        elif key == "rnr-bm25":
            methods.append(B.RetrieveRerank("RNR (BM25)", lex[key]))
        elif key in ("anncur-ref", "anncur"):
            variant = "reference" if key == "anncur-ref" else "improved"
            methods.append(B.ANNCURMethod(S_train, variant=variant, seed=seed))
        elif key == "adacur":
            methods.append(B.ADACURMethod(S_train, init=first, rounds=rounds, seed=seed))
        elif key in ("tour-ce", "tour-mse"):
            methods.append(B.TOURMethod(data.item_emb, data.query_emb, loss="kl" if key == "tour-ce" else "mse",
                                        rounds=rounds, init=de_ranked, normalization=norm))
        elif key == "axn":
            methods.append(B.AXNMethod(index, query_emb=data.query_emb, init=de_ranked, rounds=rounds,
                                       lams=(0.0,), seed=seed))
        elif key == "axn-dev":
            methods.append(B.AXNMethod(index, query_emb=data.query_emb, init=de_ranked, rounds=rounds,
                                       lams=lams, seed=seed))
    return methods, skipped


def run(args) -> int:
    from axn_fast.evaluation.evaluate import EvalTable, evaluate

    data = load_data(args)
    if args.max_test is not None:
        data.test = data.test[: args.max_test]
    if args.max_dev is not None and data.dev is not None:
        data.dev = data.dev[: args.max_dev]
    methods, skipped = build_methods(data, args.methods, budgets=args.budgets, rounds=args.rounds,
                                     lams=args.lams, seed=args.seed, normalize=not args.no_normalize)
    if not methods:
        raise _fail("no method can run on this data (give DE embeddings, texts or a train split)")
    if skipped:
        print(f"skipped (missing inputs): {', '.join(skipped)}", file=sys.stderr)
    if data.dev is None:
        tuned = [m for m in methods if any(len(m.grid(b)) > 1 for b in args.budgets)]
        for m in tuned:
            print(f"skipped {m.name}: it is tuned on --dev queries, none given", file=sys.stderr)
        methods = [m for m in methods if m not in tuned]
    args.out.mkdir(parents=True, exist_ok=True)
    config = {"data": data.name, "ks": args.ks, "budgets": args.budgets, "rounds": args.rounds,
              "lams": args.lams, "seed": args.seed, "normalize": not args.no_normalize,
              "n_test": int(len(data.test)), "n_dev": 0 if data.dev is None else int(len(data.dev)),
              "n_train": int(len(data.train))}
    key = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()
    ckpt_path = args.out / "checkpoint.json"
    done = {}
    if ckpt_path.is_file():
        ckpt = json.loads(ckpt_path.read_text())
        if ckpt.get("key") == key:
            done = ckpt["methods"]
    show = None if not args.no_progress else False
    common = dict(ks=args.ks, budgets=args.budgets, dev_queries=data.dev, gold=data.gold, show_progress_bar=show)
    rows = []
    for m in methods:
        if m.name not in done:
            print(f"evaluating {m.name} ...", file=sys.stderr)
            t = evaluate([m], data.scores, data.test, include_exact=False, **common)
            done[m.name] = t.rows
            tmp = ckpt_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"key": key, "methods": done}))
            tmp.replace(ckpt_path)
        rows += done[m.name]
    table = EvalTable(rows=rows + _exact_rows(data, args.ks),
                      meta=dict(config, methods=[m.name for m in methods], argv=sys.argv[1:]))
    table.to_csv(args.out / "results.csv")
    table.to_json(args.out / "results.json")
    md = table.to_markdown()
    (args.out / "results.md").write_text(f"{data.name}: Top-k-Recall@m (%), {len(data.test)} test queries\n\n{md}\n")
    print(table.format())
    print()
    print(md)
    if not args.no_plot:
        from axn_fast.evaluation.plotting import plot_recall_vs_budget

        plot_recall_vs_budget(table, args.out / "recall_vs_budget.png", title=args.title or data.name)
        print(f"\nwrote {args.out}/results.csv, results.json, results.md, recall_vs_budget.png", file=sys.stderr)
    ckpt_path.unlink()  # complete: results.json holds everything
    return 0


def _exact_rows(data: EvalData, ks):
    """EXACT (brute force) rows: recall 1 at m = n_items; accuracy of the CE's own top-1."""
    import numpy as np

    n_items = data.scores.shape[1]
    top1 = np.argmax(data.scores[data.test], axis=1)
    acc = None if data.gold is None else float(np.mean(top1 == data.gold[data.test]))
    return [{"method": "EXACT", "params": "", "k": k, "m": n_items, "recall": 1.0, "accuracy": acc,
             "ce_calls": float(n_items), "seconds": 0.0, "n_queries": int(len(data.test))}
            for k in ks if k <= n_items]
