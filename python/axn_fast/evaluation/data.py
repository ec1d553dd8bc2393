"""What an evaluation runs on: a dense score matrix, query splits, and what the methods need.

:class:`EvalData` holds the exact CE scores (rows = queries, columns = items), the
train/dev/test query rows, and optionally gold labels, dual-encoder (DE) embeddings
and the texts. Four loaders fill it:

* :func:`load_score_files`: your own ``.npy`` score matrix and split files;
* :func:`load_live`: texts scored live by a cross-encoder (every item for every query
  row of a split, checkpointed so an interrupted run resumes);
* :func:`load_synthetic`: a low-rank-plus-noise matrix with weak DE embeddings;
* :func:`load_wordnet`: the shipped WordNet subset, with MiniLM DE embeddings cached on disk.

Every file error names the file and its role (``FileNotFoundError`` for a missing
file, ``ValueError`` for bad content).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from axn_fast._progress import progress
from axn_fast._validation import check_float, check_int

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class EvalData:
    """Everything an evaluation run needs; per-query arrays are indexed by score-matrix row.

    scores: (n_queries, n_items) float32 exact CE scores (rows outside the splits may be 0).
    train, dev, test: int64 query rows (dev may be None: nothing is tuned then).
    gold: (n_queries,) int64 gold item per query row, or None.
    item_emb: (n_items, d), query_emb: (n_queries, d) float32 DE embeddings, or None.
    items, queries: the texts (n_items and n_queries of them), or None.
    """

    name: str
    scores: np.ndarray
    train: np.ndarray
    dev: Optional[np.ndarray]
    test: np.ndarray
    gold: Optional[np.ndarray] = None
    item_emb: Optional[np.ndarray] = None
    query_emb: Optional[np.ndarray] = None
    items: Optional[List[str]] = None
    queries: Optional[List[str]] = None

    @property
    def n_queries(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.scores.shape[1])

    def truncated(self, max_test: Optional[int] = None, max_dev: Optional[int] = None) -> "EvalData":
        """A copy that keeps the first ``max_test`` test rows and the first ``max_dev`` dev rows."""
        test, dev = self.test, self.dev
        if max_test is not None:
            test = test[: check_int(max_test, "max_test", minimum=1)]
        if max_dev is not None and dev is not None:
            dev = dev[: check_int(max_dev, "max_dev", minimum=1)]
        return replace(self, test=test, dev=dev)

    def fingerprint(self) -> str:
        """sha256 hex digest of the content (scores, splits, gold, embeddings, texts), not of file names:
        two runs with the same fingerprint evaluate the same thing."""
        h = hashlib.sha256()
        for name, arr in (("scores", self.scores), ("train", self.train), ("dev", self.dev), ("test", self.test),
                          ("gold", self.gold), ("item_emb", self.item_emb), ("query_emb", self.query_emb)):
            h.update(name.encode())
            if arr is None:
                h.update(b"none")
                continue
            a = np.ascontiguousarray(arr)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.data)
        for name, texts in (("items", self.items), ("queries", self.queries)):
            h.update(name.encode())
            h.update(b"none" if texts is None else _text_digest(texts).encode())
        return h.hexdigest()


def _text_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\n")
    return h.hexdigest()


def _existing(path: PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {str(p)!r} does not exist" if not p.exists()
                                else f"{what} file {str(p)!r} is not a regular file")
    return p


def read_array(path: PathLike, what: str) -> np.ndarray:
    """A ``.npy`` array (never pickled objects); ``what`` names the file's role in errors."""
    p = _existing(path, what)
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{what} file {str(p)!r} is not a readable .npy array: {exc}") from exc


def read_ids(path: PathLike, what: str) -> np.ndarray:
    """(n,) int64 ids from a ``.npy`` file or a text file (one integer per line)."""
    p = _existing(path, what)
    if p.suffix == ".npy":
        arr = read_array(p, what)
    else:
        try:
            arr = np.array([int(t) for t in p.read_text(encoding="utf-8").split()], dtype=np.int64)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{what} file {str(p)!r} must hold integer ids, one per line: {exc}") from exc
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} file {str(p)!r} must hold a non-empty 1-D list of integers, "
                         f"got shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64)


def read_lines(path: PathLike, what: str) -> List[str]:
    """The lines of a UTF-8 text file (one item or query per line)."""
    p = _existing(path, what)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} file {str(p)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not lines:
        raise ValueError(f"{what} file {str(p)!r} is empty")
    return lines


def _check_scores(scores: np.ndarray, what: str) -> np.ndarray:
    if scores.ndim != 2 or min(scores.shape) == 0:
        raise ValueError(f"{what} must be a non-empty 2-D (n_queries, n_items) matrix, got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise ValueError(f"{what} must hold real numbers, got dtype {scores.dtype}")
    S = np.ascontiguousarray(scores, dtype=np.float32)
    bad = ~np.isfinite(S)
    if bad.any():
        r, c = (int(x) for x in np.argwhere(bad)[0])
        raise ValueError(f"{what} holds {int(bad.sum())} non-finite value(s) (NaN/inf), first at row {r}, "
                         f"column {c}, or values too large for float32")
    return S


def _check_rows(rows: np.ndarray, n_rows: int, what: str) -> np.ndarray:
    lo, hi = int(rows.min()), int(rows.max())
    if lo < 0 or hi >= n_rows:
        raise ValueError(f"{what} holds row {lo if lo < 0 else hi}, outside [0, {n_rows}) "
                         f"(the query rows of the score matrix)")
    if np.unique(rows).size != rows.size:
        raise ValueError(f"{what} lists a query row more than once")
    return rows


def _check_splits(train: np.ndarray, dev: Optional[np.ndarray], test: np.ndarray, n_rows: int,
                  names: Tuple[str, str, str]) -> None:
    _check_rows(train, n_rows, names[0])
    _check_rows(test, n_rows, names[2])
    if dev is not None:
        _check_rows(dev, n_rows, names[1])
        if np.intersect1d(dev, test).size:
            raise ValueError(f"{names[1]} and {names[2]} share query rows: tuning on test queries is not allowed")


def _check_gold(gold: np.ndarray, n_rows: int, n_items: int, what: str) -> np.ndarray:
    if gold.shape[0] != n_rows:
        raise ValueError(f"{what} must have one gold item per query row ({n_rows}), got {gold.shape[0]}")
    if gold.min() < 0 or gold.max() >= n_items:
        raise ValueError(f"{what} holds item ids outside [0, {n_items})")
    return gold


def _check_embeddings(item_emb: np.ndarray, query_emb: np.ndarray, n_queries: int, n_items: int,
                      names: Tuple[str, str]) -> Tuple[np.ndarray, np.ndarray]:
    if item_emb.ndim != 2 or item_emb.shape[0] != n_items:
        raise ValueError(f"{names[0]} must be ({n_items}, d) (one row per item), got {item_emb.shape}")
    if query_emb.ndim != 2 or query_emb.shape != (n_queries, item_emb.shape[1]):
        raise ValueError(f"{names[1]} must be ({n_queries}, {item_emb.shape[1]}) (one row per query, the items' "
                         f"dimension), got {query_emb.shape}")
    out = []
    for arr, name in zip((item_emb, query_emb), names):
        a = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(a).all():
            raise ValueError(f"{name} holds non-finite values (NaN/inf)")
        out.append(a)
    return out[0], out[1]


def load_score_files(scores: PathLike, train: PathLike, test: PathLike, *, dev: Optional[PathLike] = None,
                     gold: Optional[PathLike] = None, item_emb: Optional[PathLike] = None,
                     query_emb: Optional[PathLike] = None, items: Optional[PathLike] = None,
                     queries: Optional[PathLike] = None) -> EvalData:
    """EvalData from files: a dense ``.npy`` score matrix, split files (``.npy`` or text, one row
    id per line), optional gold labels, DE embeddings (``.npy``, both or neither) and texts
    (one per line, both or neither)."""
    if (item_emb is None) != (query_emb is None):
        raise ValueError("give both item_emb and query_emb, or neither")
    if (items is None) != (queries is None):
        raise ValueError("give both items and queries, or neither")
    S = _check_scores(read_array(scores, "scores"), f"scores file {str(scores)!r}")
    tr, te = read_ids(train, "train split"), read_ids(test, "test split")
    dv = None if dev is None else read_ids(dev, "dev split")
    _check_splits(tr, dv, te, S.shape[0], (f"train split {str(train)!r}", f"dev split {str(dev)!r}",
                                           f"test split {str(test)!r}"))
    data = EvalData(Path(scores).name, S, tr, dv, te)
    if gold is not None:
        data.gold = _check_gold(read_ids(gold, "gold"), S.shape[0], S.shape[1], f"gold file {str(gold)!r}")
    if item_emb is not None and query_emb is not None:
        data.item_emb, data.query_emb = _check_embeddings(
            read_array(item_emb, "item embeddings"), read_array(query_emb, "query embeddings"), S.shape[0],
            S.shape[1], (f"item embeddings {str(item_emb)!r}", f"query embeddings {str(query_emb)!r}"))
    if items is not None and queries is not None:
        data.items, data.queries = read_lines(items, "items"), read_lines(queries, "queries")
        if (len(data.queries), len(data.items)) != S.shape:
            raise ValueError(f"the queries/items files have {len(data.queries)}/{len(data.items)} lines but the "
                             f"score matrix {str(scores)!r} is {S.shape[0]}x{S.shape[1]}")
    return data


def load_synthetic(n_queries: int, n_items: int, *, rank: int = 32, noise: float = 0.5, de_noise: float = 1.0,
                   seed: int = 0) -> EvalData:
    """A low-rank-plus-noise score matrix (:func:`~axn_fast.datasets.synthetic.low_rank_scores`) with
    weak DE embeddings, split at random (seeded) into 25% train, 10% dev and the rest test."""
    from axn_fast.datasets.synthetic import low_rank_scores

    n_queries = check_int(n_queries, "n_queries", minimum=10)
    noise = check_float(noise, "noise", minimum=0.0)
    d = low_rank_scores(n_queries, n_items, rank, noise, seed, de_noise=de_noise)
    perm = np.random.default_rng(seed).permutation(n_queries)
    n_train, n_dev = n_queries // 4, n_queries // 10
    return EvalData(f"synthetic {n_queries}x{n_items} rank {rank} noise {noise:g}", d.scores,
                    np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_dev]),
                    np.sort(perm[n_train + n_dev:]), item_emb=d.item_emb, query_emb=d.query_emb)


def live_scores(ce: Any, n_items: int, queries: Sequence[Any], rows: ArrayLike, checkpoint_dir: PathLike,
                *, ce_id: str, show_progress_bar: Optional[bool] = None) -> np.ndarray:
    """Score query ``rows`` against every item with ``ce(query, ids)``, resumably.

    Returns (len(queries), n_items) float32; rows not in ``rows`` stay 0. The pairs go through
    :func:`~axn_fast.indexing.score_matrix.build_score_matrix` (``strategy="all"``) with its one
    checkpoint format, in a subdirectory of ``checkpoint_dir`` named after the job (``ce_id``,
    the rows and their texts): a run interrupted and started again scores only the pairs still
    missing, and another CE or other rows never reuse these scores.
    """
    from axn_fast.indexing.score_matrix import build_score_matrix

    n_items = check_int(n_items, "n_items", minimum=1)
    r = np.unique(np.asarray(rows, dtype=np.int64).ravel())
    if r.size == 0 or r[0] < 0 or r[-1] >= len(queries):
        raise ValueError(f"rows must be non-empty row numbers in [0, {len(queries)})")
    texts = [queries[int(i)] for i in r]
    job = hashlib.sha256(f"{ce_id}|{n_items}|{r.tolist()}|{_text_digest([str(t) for t in texts])}".encode())
    G = build_score_matrix(ce, texts, n_items, strategy="all", ce_id=ce_id,
                           checkpoint_dir=Path(checkpoint_dir) / f"live-scores-{job.hexdigest()[:16]}",
                           show_progress_bar=show_progress_bar)
    S = np.zeros((len(queries), n_items), dtype=np.float32)
    S[r] = G.to_dense()
    return S


def load_live(ce_model: Optional[PathLike], items: PathLike, queries: PathLike, train: PathLike, test: PathLike, *,
              checkpoint_dir: PathLike, ce_head: Optional[str] = None, ce_name: Optional[str] = None,
              dev: Optional[PathLike] = None, gold: Optional[PathLike] = None, item_emb: Optional[PathLike] = None,
              query_emb: Optional[PathLike] = None, show_progress_bar: Optional[bool] = None) -> EvalData:
    """EvalData from texts scored live by a cross-encoder.

    The CE: ``ce_model``, a checkpoint directory (``"minilm"``: the bundled one; ``ce_head``
    default "emb-cos") or a trained-delta directory (``ce_head`` default: the delta's own);
    or, with ``ce_model`` None, the named CE ``ce_name`` (a key of
    :data:`~axn_fast.encoders.models.NAMED_CES`, default ``DEFAULT_CE``; it has its own head,
    so ``ce_head`` must be None). Every query row of the splits is scored against every item
    once (the ground truth and the CUR rows need them), checkpointed under ``checkpoint_dir``
    (see :func:`live_scores`; another CE never reuses the rows); the dense result is also
    written there as ``live_scores.npy`` (rows outside the splits are 0), for later runs on
    the same scores.
    """
    from axn_fast.encoders.models import ce_identity, load_cross_encoder, minilm_path

    if (item_emb is None) != (query_emb is None):
        raise ValueError("give both item_emb and query_emb, or neither")
    if ce_model is not None and ce_name is not None:
        raise ValueError("give ce_model or ce_name, not both")
    if ce_model is None and ce_head is not None:
        raise ValueError("ce_head goes with ce_model; a named CE has its own head")
    model_path: Optional[Path] = None
    if ce_model is not None:
        model_path = minilm_path() if str(ce_model) == "minilm" else Path(ce_model)
        if not model_path.is_dir():
            raise FileNotFoundError(f"cross-encoder checkpoint directory {str(model_path)!r} does not exist")
    ident = ce_identity(ce_name, model=model_path, head=ce_head)  # checks ce_name before any file is read
    item_texts, query_texts = read_lines(items, "items"), read_lines(queries, "queries")
    tr, te = read_ids(train, "train split"), read_ids(test, "test split")
    dv = None if dev is None else read_ids(dev, "dev split")
    _check_splits(tr, dv, te, len(query_texts), (f"train split {str(train)!r}", f"dev split {str(dev)!r}",
                                                  f"test split {str(test)!r}"))
    rows = np.unique(np.concatenate([tr, te] + ([] if dv is None else [dv])))
    # everything that changes the scores: the model (and a delta's files), its head, the item texts
    if model_path is not None and "delta_sha256" not in ident:
        ce_head = "emb-cos" if ce_head is None else ce_head
        ce_id = f"{model_path.resolve()}|head={ce_head}|items={_text_digest(item_texts)}"  # as before: resumable
    else:
        ce_id = f"{json.dumps(ident, sort_keys=True)}|items={_text_digest(item_texts)}"

    class _Lazy:  # the model is loaded only when a row is still missing
        ce: Any = None

        def __call__(self, q: Any, ids: np.ndarray) -> Any:
            if self.ce is None:
                if model_path is None:
                    self.ce = load_cross_encoder(item_texts, str(ident["name"]), show_progress_bar=False)
                else:
                    self.ce = load_cross_encoder(item_texts, model=model_path, head=ce_head, show_progress_bar=False)
            return self.ce(q, ids)

    S = live_scores(_Lazy(), len(item_texts), query_texts, rows, checkpoint_dir, ce_id=ce_id,
                    show_progress_bar=show_progress_bar)
    np.save(Path(checkpoint_dir) / "live_scores.npy", S)  # reusable with --scores
    ce_label = Path(ce_model).name if ce_model is not None else str(ident["name"])
    data = EvalData(f"{Path(queries).name} x {Path(items).name} ({ce_label})", S, tr, dv, te,
                    items=item_texts, queries=query_texts)
    if gold is not None:
        data.gold = _check_gold(read_ids(gold, "gold"), S.shape[0], S.shape[1], f"gold file {str(gold)!r}")
    if item_emb is not None and query_emb is not None:
        data.item_emb, data.query_emb = _check_embeddings(
            read_array(item_emb, "item embeddings"), read_array(query_emb, "query embeddings"), S.shape[0],
            S.shape[1], (f"item embeddings {str(item_emb)!r}", f"query embeddings {str(query_emb)!r}"))
    return data


def cached_embeddings(texts: Sequence[str], cache_dir: PathLike, tag: str, *,
                      show_progress_bar: Optional[bool] = None) -> np.ndarray:
    """(len(texts), d) float32 MiniLM DE embeddings of ``texts``, cached in ``cache_dir``
    under a name from ``tag`` and a digest of the model path and the texts."""
    from axn_fast.encoders.dual_encoder import HFDualEncoder
    from axn_fast.encoders.models import minilm_path

    path = minilm_path()
    h = hashlib.sha1(str(path).encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\n")
    f = Path(cache_dir) / f"{tag}_{h.hexdigest()[:16]}.npy"
    if f.is_file():
        emb = np.load(f, allow_pickle=False)
        if emb.ndim == 2 and emb.shape[0] == len(texts):
            return emb
    de: Any = HFDualEncoder
    emb = de(path, device="cpu", show_progress_bar=show_progress_bar).encode(list(texts))
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(f".tmp-{os.getpid()}.npy")
    np.save(tmp, emb)
    tmp.replace(f)
    return emb


def load_wordnet(cache_dir: PathLike, *, path: Optional[PathLike] = None,
                 show_progress_bar: Optional[bool] = None) -> EvalData:
    """EvalData of the shipped WordNet subset (or one built into ``path``): texts, gold labels,
    splits, exact CE scores, and MiniLM DE embeddings (cached under ``cache_dir``)."""
    from axn_fast.datasets import load_wordnet_subset

    ds = load_wordnet_subset(path)
    if ds.scores is None:
        raise ValueError("the WordNet subset has no score matrix")
    item_emb = cached_embeddings(ds.items, cache_dir, "wordnet_items", show_progress_bar=show_progress_bar)
    query_emb = cached_embeddings(ds.queries, cache_dir, "wordnet_queries", show_progress_bar=show_progress_bar)
    return EvalData(f"WordNet subset {ds.n_queries}x{ds.n_items}", ds.scores, ds.splits["train"],
                    ds.splits["dev"], ds.splits["test"], gold=ds.gold, item_emb=item_emb, query_emb=query_emb,
                    items=list(ds.items), queries=list(ds.queries))


def describe(data: EvalData) -> Dict[str, Any]:
    """Sizes of ``data`` for a results file's metadata."""
    return {"data": data.name, "n_test": int(len(data.test)), "n_dev": 0 if data.dev is None else int(len(data.dev)),
            "n_train": int(len(data.train))}


def score_wordnet_subset(ds: Any, ce_name: str, checkpoint_dir: PathLike, *, batch_size: int = 64,
                         device: str = "auto", show_progress_bar: Optional[bool] = None) -> Any:
    """Fill ``ds.scores`` (a :class:`~axn_fast.datasets.subset.WordNetSubset`) with the dense exact
    scores of the named cross-encoder (a key of :data:`axn_fast.encoders.models.NAMED_CES`).

    Every (query, item) pair is scored once through :func:`live_scores`, so the job uses the one
    resumable checkpoint format under ``checkpoint_dir``: an interrupted run started again scores
    only the pairs still missing. ``ds.ce_config`` is set to the CE's configuration plus its
    ``name`` (``load_cross_encoder(ds.items, ds.ce_config["name"])`` rebuilds it), and
    ``ds.meta["build_seconds"]`` to the wall time of the scoring. Returns ``ds``.
    """
    import time

    from axn_fast.encoders.cross_encoder import PairScoreCache
    from axn_fast.encoders.models import load_cross_encoder

    batch_size = check_int(batch_size, "batch_size", minimum=1)
    ce = load_cross_encoder(ds.items, ce_name, device=device, batch_size=batch_size,
                            show_progress_bar=False, cache=PairScoreCache(max_queries=1))
    ce_id = f"{ce_name}|{sorted((k, str(v)) for k, v in ce.config.items())}"
    t0 = time.perf_counter()
    ds.scores = live_scores(ce, ds.n_items, ds.queries, np.arange(ds.n_queries), checkpoint_dir, ce_id=ce_id,
                            show_progress_bar=show_progress_bar)
    ds.meta["build_seconds"] = round(time.perf_counter() - t0, 1)
    ds.ce_config = dict(ce.config, name=ce_name, device=str(ce.device))
    return ds
