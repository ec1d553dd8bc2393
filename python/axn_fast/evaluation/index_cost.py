"""Recall versus offline indexing cost: the AXN paper's headline comparison (its Fig. 1 and 2).

:func:`run_index_cost` builds every index under a grid of offline budgets on one
:class:`~axn_fast.evaluation.data.EvalData` (a dense score matrix, base DE embeddings
and, for the text DE, the texts) and evaluates search on each:

* ``mf-trns`` / ``mf-ind``: MF_TRNS (:func:`~axn_fast.indexing.factorize.factorize` from the
  DE's embeddings) and MF_IND (:class:`~axn_fast.indexing.inductive.InductiveMF`) fitted on
  the sparse G of ``n_train`` train queries x their DE top-``k_d`` items, normalised to the
  DE's score scale (App. A.4); searched with AXN (and RNR for MF_IND, which has a query
  encoder);
* ``de-dstl``: the DE distilled on the same G (:func:`~axn_fast.encoders.distill.distill_dual_encoder`
  on the texts when ``de_base`` is given, else :func:`~axn_fast.encoders.distill.distill_feature_tower`
  on the DE embeddings as features); items re-encoded; searched with RNR and AXN;
* ``anncur`` / ``adacur``: CUR on the dense CE rows of the ``n_train`` train queries
  (``n_train x n_items`` CE calls);
* ``de``: the DE as it is (no CE call offline): the zero-cost reference.

Offline cost of each index: ``ce_calls`` (pairs scored: ``G.nnz`` or dense rows x items,
counted by the :class:`~axn_fast.encoders.dense.DenseScoreCE` that serves them),
``ce_seconds`` (= calls x ``ce_seconds_per_pair``, measured on the live CE with
:func:`measure_ce_seconds_per_pair`, since the scores come from a matrix), ``de_seconds``
(DE encoding of the items and train queries: texts x ``de_seconds_per_text`` for the base
DE, measured wall time for re-encoding the items with a distilled DE) and ``train_seconds``
(measured wall time of factorisation, MLP training, distillation, CUR set-up). Their sum
is the x-axis of :func:`plot_index_cost`.

The run is resumable: each finished index appends its rows to ``rows.jsonl`` under
``out_dir`` (keyed on the data's fingerprint and the settings; a run with other data or
settings starts afresh) and the text distillations keep their own checkpoints.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from axn_fast._validation import check_float, check_int
from axn_fast.encoders.dense import DenseScoreCE
from axn_fast.evaluation.data import EvalData
from axn_fast.evaluation.evaluate import evaluate
from axn_fast.indexing.factorize import factorize
from axn_fast.indexing.inductive import InductiveMF
from axn_fast.indexing.normalization import estimate_normalization, normalization_from_score_matrix
from axn_fast.indexing.score_matrix import ScoreMatrix, build_score_matrix
from axn_fast.methods.baselines import ADACURMethod, ANNCURMethod, AXNMethod, Method, RetrieveRerank
from axn_fast.search.index import Index
from axn_fast.search.normalization import ScoreNormalization

__all__ = ["INDEXES", "IndexCostConfig", "IndexCost", "IndexCostTable", "run_index_cost",
           "measure_ce_seconds_per_pair", "measure_de_seconds_per_text", "score_matrix_from_dense", "score_matrix_live",
           "plot_index_cost", "speedups", "de_dstl_methods", "distilled_embeddings"]

PathLike = Union[str, "os.PathLike[str]"]

INDEXES = ("de", "mf-trns", "mf-ind", "de-dstl", "anncur", "adacur")
COLUMNS = ("index", "method", "n_train", "k_d", "ce_calls", "ce_seconds", "de_seconds", "train_seconds",
           "total_seconds", "k", "m", "recall", "params")
ROWS_FILE = "rows.jsonl"


@dataclass(frozen=True)
class IndexCostConfig:
    """The grid and the settings of every index builder (part of the run's identity).

    n_train: numbers of train queries (each a prefix of one seeded permutation of the train
    split, so the grids nest); k_d: DE top-k items per train query in G; indexes: which of
    :data:`INDEXES`; pairs: the (k, m) of the plot and the speed-ups (Top-1-Recall@100 and
    Top-100-Recall@500, the paper's); ks / budgets: every Top-k-Recall@m (k <= m) recorded
    besides (k and m above n_items are capped at n_items); rounds: AXN/ADACUR rounds; trns_* / ind_*: MF_TRNS (SGD) and MF_IND
    (AdamW) epochs and learning rates; dstl_*: the distillation (text DE: lr, epochs,
    accumulate, trainable_layers, max_length; feature tower: dstl_feature_epochs/lr;
    dstl_k_d: the k_d values at which DE_DSTL is built, None: all of ``k_d`` — the text
    distillation is by far the slowest builder);
    num_threads: torch/SGD threads of the builders (timings depend on it).
    """

    n_train: Tuple[int, ...] = (10, 25, 50)
    k_d: Tuple[int, ...] = (25, 100)
    indexes: Tuple[str, ...] = INDEXES
    pairs: Tuple[Tuple[int, int], ...] = ((1, 100), (100, 500))
    ks: Tuple[int, ...] = (1, 10, 100)
    budgets: Tuple[int, ...] = (50, 100, 200, 500)
    rounds: int = 5
    seed: int = 0
    trns_epochs: int = 30
    trns_lr: float = 0.02
    ind_epochs: int = 20
    ind_lr: float = 0.005
    dstl_k_d: Optional[Tuple[int, ...]] = None
    dstl_epochs: int = 2
    dstl_lr: float = 1e-5
    dstl_accumulate: int = 4
    dstl_trainable_layers: int = 2
    dstl_max_length: int = 64
    dstl_feature_epochs: int = 20
    dstl_feature_lr: float = 1e-3
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.dstl_k_d is not None and not set(self.dstl_k_d) <= set(self.k_d):
            raise ValueError(f"dstl_k_d must be a subset of k_d {self.k_d}, got {self.dstl_k_d}")
        for name in ("n_train", "k_d", "ks", "budgets"):
            vals = getattr(self, name)
            if not vals:
                raise ValueError(f"{name} must not be empty")
            for v in vals:
                check_int(v, name, minimum=1)
        if not self.pairs or any(len(p) != 2 or check_int(p[0], "pairs", minimum=1) >
                                 check_int(p[1], "pairs", minimum=1) for p in self.pairs):
            raise ValueError(f"pairs must be non-empty (k, m) pairs with k <= m, got {self.pairs}")
        bad = [i for i in self.indexes if i not in INDEXES]
        if bad or not self.indexes:
            raise ValueError(f"indexes must be a non-empty subset of {INDEXES}, got {list(self.indexes)}")
        check_int(self.rounds, "rounds", minimum=1)
        check_int(self.num_threads, "num_threads", minimum=1)
        for name in ("trns_lr", "ind_lr", "dstl_lr", "dstl_feature_lr"):
            if not check_float(getattr(self, name), name, minimum=0.0) > 0:
                raise ValueError(f"{name} must be > 0")

    def to_dict(self) -> Dict[str, Any]:
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        d["pairs"] = [list(p) for p in self.pairs]
        return d

    def capped_pairs(self, n_items: int) -> List[Tuple[int, int]]:
        """:attr:`pairs` with k and m capped at ``n_items`` (duplicates dropped)."""
        return list(dict.fromkeys((min(k, n_items), min(m, n_items)) for k, m in self.pairs))


@dataclass
class IndexCost:
    """Offline cost of one index: CE calls and seconds (CE, DE encoding, training)."""

    ce_calls: int = 0
    ce_seconds: float = 0.0
    de_seconds: float = 0.0
    train_seconds: float = 0.0

    @property
    def total_seconds(self) -> float:
        return self.ce_seconds + self.de_seconds + self.train_seconds


@dataclass
class IndexCostTable:
    """One row (dict with :data:`COLUMNS`) per (index, n_train, k_d, search method, k, m); meta: the run."""

    rows: List[Dict[str, Any]] = field(default_factory=list)
    meta: Dict[str, Any] = field(default_factory=dict)

    def lines(self, k: int, m: int) -> Dict[str, List[Dict[str, Any]]]:
        """Rows of Top-k-Recall@m per search method (the plot's lines), cheapest first."""
        out: Dict[str, List[Dict[str, Any]]] = {}
        for r in self.rows:
            if r["k"] == k and r["m"] == m:
                out.setdefault(r["method"], []).append(r)
        return {n: sorted(v, key=lambda r: (r["total_seconds"], -r["recall"])) for n, v in out.items()}

    def to_csv(self, path: PathLike) -> None:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            for r in self.rows:
                w.writerow({c: r[c] for c in COLUMNS})

    def to_json(self, path: PathLike) -> None:
        with open(path, "w") as f:
            json.dump({"meta": self.meta, "rows": self.rows}, f, indent=1)

    def to_markdown(self, pairs: Sequence[Tuple[int, int]]) -> str:
        """One row per (method, n_train, k_d): CE calls, offline seconds, and recall (%) for each (k, m)."""
        head = ["method", "n_train", "k_d", "CE calls", "CE s", "DE s", "train s", "total s"] + \
            [f"Top-{k}-R@{m}" for k, m in pairs]
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        keyed: Dict[Tuple[str, int, int], Dict[Tuple[int, int], Dict[str, Any]]] = {}
        for r in self.rows:
            keyed.setdefault((r["method"], r["n_train"], r["k_d"]), {})[(r["k"], r["m"])] = r
        for (name, n, kd), by in keyed.items():
            any_row = next(iter(by.values()))
            cells = [name, str(n), str(kd) if kd else "-", f"{any_row['ce_calls']:,}",
                     f"{any_row['ce_seconds']:.1f}", f"{any_row['de_seconds']:.1f}",
                     f"{any_row['train_seconds']:.1f}", f"{any_row['total_seconds']:.1f}"]
            cells += [f"{100 * by[p]['recall']:.1f}" if p in by else "" for p in pairs]
            out.append("| " + " | ".join(cells) + " |")
        return "\n".join(out)


# ---------------------------------------------------------------------------- measurements
def measure_ce_seconds_per_pair(ce: Callable[[Any, np.ndarray], Any], queries: Sequence[Any], n_items: int, *,
                                n_pairs: int = 300, per_query: int = 50, seed: int = 0) -> float:
    """Wall seconds per (query, item) pair of a live CE: ``n_pairs`` random pairs in calls of ``per_query``.

    ce: ``ce(query, ids) -> scores`` (e.g. :func:`~axn_fast.encoders.models.load_cross_encoder`;
    a ``ce.cache`` with ``clear()`` is cleared before every timed call, so every pair is
    really scored); queries: the query texts to draw from. One untimed warm-up call first.
    """
    n_items = check_int(n_items, "n_items", minimum=1)
    n_pairs = check_int(n_pairs, "n_pairs", minimum=1)
    per_query = check_int(per_query, "per_query", minimum=1, maximum=n_items)
    if not len(queries):
        raise ValueError("queries must not be empty")
    rng = np.random.default_rng(seed)
    ce(queries[0], np.sort(rng.choice(n_items, size=min(8, n_items), replace=False)))
    done, secs, call = 0, 0.0, 0
    while done < n_pairs:
        q = queries[call % len(queries)]
        ids = np.sort(rng.choice(n_items, size=min(per_query, n_pairs - done), replace=False)).astype(np.int64)
        cache = getattr(ce, "cache", None)
        if cache is not None and hasattr(cache, "clear"):
            cache.clear()  # every timed pair is really scored
        t0 = time.perf_counter()
        ce(q, ids)
        secs += time.perf_counter() - t0
        done += ids.size
        call += 1
    return secs / done


def measure_de_seconds_per_text(de: Any, texts: Sequence[str]) -> float:
    """Wall seconds per text of ``de.encode(texts)`` (after one untimed warm-up batch)."""
    if not len(texts):
        raise ValueError("texts must not be empty")
    de.encode(list(texts[:8]))
    t0 = time.perf_counter()
    de.encode(list(texts))
    return (time.perf_counter() - t0) / len(texts)


def score_matrix_from_dense(S: np.ndarray, rows: np.ndarray, k_d: int, de_query_emb: np.ndarray,
                            de_item_emb: np.ndarray) -> Tuple[ScoreMatrix, int]:
    """G of the given score-matrix ``rows`` (n, n_items): each row's DE top-``k_d`` items, scored from ``S``.

    Returns ``(G, ce_calls)``: ``G`` has shape (len(rows), n_items), ``ce_calls`` the pairs the
    :class:`DenseScoreCE` served (what a live CE would have been paid for).
    """
    ce = DenseScoreCE(S)
    G = build_score_matrix(ce, [int(r) for r in rows], S.shape[1], strategy="de-topk", k_d=k_d,
                           de_query_emb=de_query_emb[rows], de_item_emb=de_item_emb, num_threads=1,
                           show_progress_bar=False)
    return G, int(ce.n_calls)


def score_matrix_live(ce: Any, queries: Sequence[str], n_items: int, k_d: int, de_query_emb: np.ndarray,
                      de_item_emb: np.ndarray) -> Tuple[ScoreMatrix, int, float]:
    """G scored by a live CE: each query's DE top-``k_d`` items. Returns ``(G, ce_calls, seconds)``.

    ``ce_calls`` is ``ce.n_calls``'s increase when the CE counts its pairs (as
    :class:`~axn_fast.encoders.cross_encoder.HFCrossEncoder` does), else G's entries;
    a ``ce.cache`` is cleared first so that pairs scored for an earlier grid point are paid again.
    """
    cache = getattr(ce, "cache", None)
    if cache is not None and hasattr(cache, "clear"):
        cache.clear()
    before = getattr(ce, "n_calls", None)
    t0 = time.perf_counter()
    G = build_score_matrix(ce, list(queries), n_items, strategy="de-topk", k_d=k_d, de_query_emb=de_query_emb,
                           de_item_emb=de_item_emb, num_threads=1, show_progress_bar=False)
    secs = time.perf_counter() - t0
    calls = G.nnz if not isinstance(before, int) else int(getattr(ce, "n_calls")) - before
    return G, calls, secs


# ---------------------------------------------------------------------------- methods on an index
def _ranked(item_emb: np.ndarray, query_emb: np.ndarray, rows: np.ndarray, n: int, m_max: int) -> np.ndarray:
    out = np.full((n, m_max), -1, dtype=np.int64)
    out[rows] = Index(item_emb).search(query_emb[rows], m_max)[1]
    return out


def distilled_embeddings(data: EvalData, path: PathLike, *, device: str = "auto",
                         show_progress_bar: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(item_emb, query_emb)`` of ``data``'s texts encoded by the distilled DE in ``path``
    (a ``delta/`` directory of :func:`~axn_fast.encoders.distill.distill_dual_encoder`):
    (n_items, d) and (n_queries, d) float32, L2-normalised."""
    from axn_fast.encoders.distill import load_distilled_dual_encoder

    if data.items is None or data.queries is None:
        raise ValueError("a distilled DE needs the texts (items and queries) of the data")
    de = load_distilled_dual_encoder(path, device=device, show_progress_bar=show_progress_bar)
    return de.encode(data.items), de.encode(data.queries)


def de_dstl_methods(data: EvalData, item_emb: np.ndarray, query_emb: np.ndarray, *, max_budget: int,
                    rounds: int = 5, seed: int = 0, normalization: Optional[ScoreNormalization] = None,
                    label: str = "DE_DSTL") -> List[Method]:
    """RNR-DE_DSTL and AXN over DE_DSTL embeddings, ready for :func:`~axn_fast.evaluation.evaluate.evaluate`.

    item_emb: (n_items, d) items encoded by the distilled DE; query_emb: (n_queries, d)
    queries encoded by it (rows of the score matrix); max_budget: the largest budget m;
    normalization: CE -> DE score map for AXN's targets (None: estimated on the train rows).
    """
    rows = np.unique(np.concatenate([data.test] + ([] if data.dev is None else [data.dev])))
    ranked = _ranked(item_emb, query_emb, rows, data.n_queries, max_budget)
    if normalization is None:
        tr = data.train[:100]
        normalization = estimate_normalization(data.scores[tr].ravel(), (query_emb[tr] @ item_emb.T).ravel())
    return [RetrieveRerank(f"RNR-{label}", ranked),
            AXNMethod(Index(item_emb), query_emb=query_emb, init=ranked, rounds=rounds, seed=seed,
                      normalization=normalization, name=f"AXN over {label}")]


# ---------------------------------------------------------------------------- the run
def _run_key(data: EvalData, config: IndexCostConfig, extra: Dict[str, Any]) -> str:
    h = hashlib.sha256(data.fingerprint().encode())
    h.update(json.dumps({"config": config.to_dict(), **extra}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _evaluate_rows(methods: List[Method], data: EvalData, ks: Sequence[int], budgets: Sequence[int],
                   index: str, n: int, k_d: int, cost: IndexCost) -> List[Dict[str, Any]]:
    table = evaluate(methods, data.scores, data.test, ks=ks, budgets=budgets, dev_queries=data.dev,
                     include_exact=False, show_progress_bar=False)
    out = []
    for r in table.rows:
        out.append({"index": index, "method": r["method"], "n_train": n, "k_d": k_d, "ce_calls": cost.ce_calls,
                    "ce_seconds": round(cost.ce_seconds, 3), "de_seconds": round(cost.de_seconds, 3),
                    "train_seconds": round(cost.train_seconds, 3), "total_seconds": round(cost.total_seconds, 3),
                    "k": r["k"], "m": r["m"], "recall": r["recall"], "params": r["params"]})
    return out


def run_index_cost(data: EvalData, out_dir: PathLike, *, config: IndexCostConfig = IndexCostConfig(),
                   ce_seconds_per_pair: float, de_seconds_per_text: float = 0.0,
                   de_base: Optional[PathLike] = None, device: str = "cpu", ce: Optional[Any] = None,
                   meta: Optional[Dict[str, Any]] = None,
                   show_progress_bar: Optional[bool] = None,
                   log: Callable[[str], None] = lambda line: None) -> IndexCostTable:
    """Build every index of ``config`` on ``data`` and measure recall against offline cost.

    data: dense scores, train/dev/test splits and base DE embeddings (``item_emb`` /
    ``query_emb``, required: they choose G's pairs and start MF); texts when ``de_base``.
    ce_seconds_per_pair: seconds per CE pair (see :func:`measure_ce_seconds_per_pair`);
    de_seconds_per_text: seconds per text of the base DE (0 when the embeddings come
    free, as in the synthetic task); de_base: the base DE checkpoint directory for the
    text distillation (None: the feature tower); device: of the text distillation.
    ce: a live cross-encoder ``ce(query_text, ids)`` over ``data.items``: G is then scored
    by it (its CE seconds are the measured wall time of that scoring, and its scores are
    the live ones; the dense rows of ANNCUR/ADACUR and the ground truth still come from
    ``data.scores``, at ``ce_seconds_per_pair``). Needs the texts.
    Writes ``rows.jsonl`` (incremental), ``index_cost.csv`` and ``index_cost.json`` under
    ``out_dir`` and returns the :class:`IndexCostTable`.
    """
    if data.item_emb is None or data.query_emb is None:
        raise ValueError("data needs base DE embeddings (item_emb and query_emb): they choose G's pairs")
    if (de_base is not None or ce is not None) and (data.items is None or data.queries is None):
        raise ValueError("de_base (text distillation) and a live ce need data with texts (items and queries)")
    ce_seconds_per_pair = check_float(ce_seconds_per_pair, "ce_seconds_per_pair", minimum=0.0)
    de_seconds_per_text = check_float(de_seconds_per_text, "de_seconds_per_text", minimum=0.0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_items = data.n_items
    pairs = config.capped_pairs(n_items)
    budgets = sorted({min(b, n_items) for b in config.budgets} | {m for _, m in pairs})
    ks = sorted({min(k, n_items) for k in config.ks} | {k for k, _ in pairs})
    m_max = max(budgets)
    I, Q = data.item_emb, data.query_emb
    order = np.random.default_rng(config.seed).permutation(data.train)
    grid_n = sorted({min(n, len(order)) for n in config.n_train})
    key = _run_key(data, config, {"ce_s": ce_seconds_per_pair, "de_s": de_seconds_per_text,
                                  "de_base": None if de_base is None else str(de_base),
                                  "live_ce": None if ce is None else repr(getattr(ce, "config", type(ce).__name__))})

    rows_file = out / ROWS_FILE
    done: Dict[str, List[Dict[str, Any]]] = {}
    if rows_file.is_file():
        for line in rows_file.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if rec.get("key") == key:
                done.setdefault(rec["unit"], []).append(rec["row"])
        if not done:
            rows_file.replace(out / (ROWS_FILE + ".stale"))
    table = IndexCostTable(meta={"data": data.name, "n_items": n_items, "n_train_split": int(len(data.train)),
                                 "n_test": int(len(data.test)), "n_dev": 0 if data.dev is None else int(len(data.dev)),
                                 "ce_seconds_per_pair": ce_seconds_per_pair,
                                 "de_seconds_per_text": de_seconds_per_text,
                                 "dstl": "text" if de_base is not None else "feature-tower",
                                 "config": config.to_dict(), **(meta or {})})

    def unit(name: str, build: Callable[[], Tuple[List[Method], IndexCost]], n: int, k_d: int) -> None:
        u = f"{name}|{n}|{k_d}"
        if u in done:
            table.rows.extend(done[u])
            return
        log(f"{name}: n_train={n} k_d={k_d}")
        methods, cost = build()
        rows = _evaluate_rows(methods, data, ks, budgets, name, n, k_d, cost)
        with open(rows_file, "a") as f:
            for r in rows:
                f.write(json.dumps({"key": key, "unit": u, "row": r}) + "\n")
        table.rows.extend(rows)

    de_item_s = n_items * de_seconds_per_text
    de_ranked = _ranked(I, Q, np.unique(np.concatenate([data.test] + ([] if data.dev is None else [data.dev]))),
                        data.n_queries, m_max)
    base_norm = estimate_normalization(data.scores[order[:100]].ravel(), (Q[order[:100]] @ I.T).ravel())

    if "mf-ind" in config.indexes or ("de-dstl" in config.indexes and de_base is None):
        # torch's first optimiser steps pay one-off set-up costs: keep them out of the first timing
        warm = ScoreMatrix(np.array([0, 1]), np.array([0, 1]), np.ones(2, np.float32), (2, 2))
        InductiveMF(2, seed=0).fit(warm, np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32), epochs=1,
                                   num_threads=config.num_threads, show_progress_bar=False)

    if "de" in config.indexes:
        def build_de() -> Tuple[List[Method], IndexCost]:
            return ([RetrieveRerank("RNR-DE", de_ranked),
                     AXNMethod(Index(I), query_emb=Q, init=de_ranked, rounds=config.rounds, seed=config.seed,
                               normalization=base_norm, name="AXN over DE")],
                    IndexCost(de_seconds=de_item_s))
        unit("de", build_de, 0, 0)

    for n in grid_n:
        rows = np.sort(order[:n])
        S_train = data.scores[rows]
        dense = IndexCost(ce_calls=n * n_items, ce_seconds=n * n_items * ce_seconds_per_pair)
        if "anncur" in config.indexes:
            def build_anncur() -> Tuple[List[Method], IndexCost]:
                t0 = time.perf_counter()
                m = ANNCURMethod(S_train, variant="improved", seed=config.seed, name="ANNCUR")
                return [m], IndexCost(dense.ce_calls, dense.ce_seconds, 0.0, time.perf_counter() - t0)
            unit("anncur", build_anncur, n, 0)
        if "adacur" in config.indexes:
            def build_adacur() -> Tuple[List[Method], IndexCost]:
                t0 = time.perf_counter()
                m = ADACURMethod(S_train, init=de_ranked, rounds=config.rounds, seed=config.seed, name="ADACUR")
                # round 1 comes from the DE: its item encoding is part of the index
                return [m], IndexCost(dense.ce_calls, dense.ce_seconds, de_item_s, time.perf_counter() - t0)
            unit("adacur", build_adacur, n, 0)
        for k_d_asked, k_d in zip(sorted(set(config.k_d)), [min(k, n_items) for k in sorted(set(config.k_d))]):
            sparse = [i for i in ("mf-trns", "mf-ind", "de-dstl") if i in config.indexes and
                      (i != "de-dstl" or config.dstl_k_d is None or k_d_asked in config.dstl_k_d)]
            if not sparse or all(f"{i}|{n}|{k_d}" in done for i in sparse):
                for i in sparse:
                    unit(i, lambda: ([], IndexCost()), n, k_d)  # replays the recorded rows
                continue
            if ce is None:
                G, calls = score_matrix_from_dense(data.scores, rows, k_d, Q, I)
                ce_s = calls * ce_seconds_per_pair
            else:
                assert data.queries is not None  # checked above
                G, calls, ce_s = score_matrix_live(ce, [data.queries[int(r)] for r in rows], n_items, k_d,
                                                   Q[rows], I)
            if calls != G.nnz:
                raise RuntimeError(f"CE accounting: {calls} pairs served but G holds {G.nnz}")
            Qtr = Q[rows]
            base = IndexCost(ce_calls=calls, ce_seconds=ce_s, de_seconds=de_item_s + n * de_seconds_per_text)
            norm = normalization_from_score_matrix(G, Qtr, I, n_queries=100, seed=config.seed)
            Gn = norm.apply(G)

            def build_trns() -> Tuple[List[Method], IndexCost]:
                t0 = time.perf_counter()
                _, V, _ = factorize(Gn, U0=Qtr, V0=I, epochs=config.trns_epochs, lr=config.trns_lr, reg=0.01,
                                    val_fraction=0.0, seed=config.seed, num_threads=config.num_threads, show_progress_bar=False)
                secs = time.perf_counter() - t0
                return ([AXNMethod(Index(V), query_emb=Q, init=de_ranked, rounds=config.rounds, seed=config.seed,
                                   normalization=norm, name="AXN over MF_TRNS")],
                        IndexCost(base.ce_calls, base.ce_seconds, base.de_seconds, secs))

            def build_ind() -> Tuple[List[Method], IndexCost]:
                t0 = time.perf_counter()
                mf = InductiveMF(Q.shape[1], seed=config.seed).fit(
                    Gn, Qtr, I, epochs=config.ind_epochs, lr=config.ind_lr, seed=config.seed,
                    num_threads=config.num_threads, show_progress_bar=False)
                V = mf.embed_items(I)
                secs = time.perf_counter() - t0
                Qe = mf.embed_queries(Q)
                return (de_dstl_methods(data, V, Qe, max_budget=m_max, rounds=config.rounds, seed=config.seed,
                                        normalization=norm, label="MF_IND"),
                        IndexCost(base.ce_calls, base.ce_seconds, base.de_seconds, secs))

            def build_dstl() -> Tuple[List[Method], IndexCost]:
                if de_base is not None:
                    from axn_fast.encoders.distill import distill_dual_encoder, load_distilled_dual_encoder

                    assert data.items is not None and data.queries is not None  # checked above
                    res = distill_dual_encoder(
                        de_base, data.items, [data.queries[int(r)] for r in rows], G,
                        out / "dstl" / f"n{n}_k{k_d}", epochs=config.dstl_epochs, lr=config.dstl_lr,
                        accumulate=config.dstl_accumulate, trainable_layers=config.dstl_trainable_layers,
                        max_length=config.dstl_max_length, seed=config.seed, device=device,
                        show_progress_bar=show_progress_bar)
                    de = load_distilled_dual_encoder(res.path, device=device, show_progress_bar=False)
                    t0 = time.perf_counter()
                    V = de.encode(data.items)
                    enc = time.perf_counter() - t0
                    Qe = de.encode(data.queries)  # online cost (test queries), and train rows for normalisation
                    train_s = res.train_seconds
                else:
                    from axn_fast.encoders.distill import distill_feature_tower

                    tower = distill_feature_tower(Qtr, I, G, epochs=config.dstl_feature_epochs,
                                                  lr=config.dstl_feature_lr, seed=config.seed,
                                                  num_threads=config.num_threads, show_progress_bar=False)
                    t0 = time.perf_counter()
                    V = tower.encode(I)
                    enc = time.perf_counter() - t0
                    Qe = tower.encode(Q)
                    train_s = tower.seconds
                de_norm = estimate_normalization(G.vals, np.einsum("ij,ij->i", Qe[rows][G.rows], V[G.cols]))
                return (de_dstl_methods(data, V, Qe, max_budget=m_max, rounds=config.rounds, seed=config.seed,
                                        normalization=de_norm),
                        IndexCost(base.ce_calls, base.ce_seconds, base.de_seconds + enc, train_s))

            for name, build in (("mf-trns", build_trns), ("mf-ind", build_ind), ("de-dstl", build_dstl)):
                if name in sparse:
                    unit(name, build, n, k_d)
    table.meta["pairs"] = [list(p) for p in pairs]
    table.meta["speedups"] = speedups(table, pairs)
    table.to_csv(out / "index_cost.csv")
    table.to_json(out / "index_cost.json")
    return table


# ---------------------------------------------------------------------------- summaries
MF_METHODS = ("AXN over MF_TRNS", "AXN over MF_IND", "RNR-MF_IND")
REFERENCES = ("ANNCUR", "ADACUR", "AXN over DE_DSTL", "RNR-DE_DSTL")


def speedups(table: IndexCostTable, pairs: Sequence[Tuple[int, int]], *, fast: Sequence[str] = MF_METHODS,
             references: Sequence[str] = REFERENCES) -> List[Dict[str, Any]]:
    """How much less indexing time the MF indices need to reach each reference's recall.

    For each (k, m) and reference method: its best-recall configuration (the cheapest
    among ties), and the cheapest configuration of any ``fast`` method whose recall is at
    least as high; ``speedup`` = reference seconds / MF seconds (None when no MF
    configuration reaches it). Also the largest speed-up over all reference
    configurations (``max_speedup``, at any recall level the reference reaches).
    """
    out: List[Dict[str, Any]] = []
    for k, m in pairs:
        lines = table.lines(k, m)
        mf = [r for name in fast for r in lines.get(name, [])]
        for ref in references:
            pts = lines.get(ref, [])
            if not pts:
                continue
            best = max(pts, key=lambda r: (r["recall"], -r["total_seconds"]))

            def cheapest(recall: float) -> Optional[Dict[str, Any]]:
                ok = [r for r in mf if r["recall"] >= recall - 1e-12]
                return min(ok, key=lambda r: r["total_seconds"]) if ok else None

            hit = cheapest(best["recall"])
            ratios = [(p["total_seconds"] / c["total_seconds"], p, c) for p in pts
                      for c in [cheapest(p["recall"])] if c is not None and c["total_seconds"] > 0]
            top = max(ratios, key=lambda t: t[0]) if ratios else None
            out.append({
                "k": k, "m": m, "reference": ref, "reference_recall": best["recall"],
                "reference_seconds": best["total_seconds"], "reference_n_train": best["n_train"],
                "mf_method": None if hit is None else hit["method"],
                "mf_recall": None if hit is None else hit["recall"],
                "mf_seconds": None if hit is None else hit["total_seconds"],
                "mf_config": None if hit is None else f"n_train={hit['n_train']},k_d={hit['k_d']}",
                "speedup": None if hit is None or hit["total_seconds"] <= 0 else
                best["total_seconds"] / hit["total_seconds"],
                "max_speedup": None if top is None else top[0],
                "max_speedup_at_recall": None if top is None else top[1]["recall"]})
    return out


def plot_index_cost(table: IndexCostTable, path: PathLike, *, pairs: Sequence[Tuple[int, int]],
                    title: Optional[str] = None) -> None:
    """Recall (%) against total indexing seconds (log x), one panel per (k, m), one line per method.

    Every configuration is a marker; the line joins each method's Pareto front (the best
    recall reached at or below each cost). A method with no offline cost (the plain DE)
    is a dotted horizontal line.
    """
    from axn_fast.evaluation.plotting import _pyplot

    plt = _pyplot()
    pairs = [p for p in pairs if table.lines(*p)]
    if not pairs:
        raise ValueError("table has no rows for the (k, m) pairs asked")
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.2), squeeze=False)
    markers = "os^vD<>pPX*h"
    names = list(dict.fromkeys(r["method"] for r in table.rows))
    for ax, (k, m) in zip(axes[0], pairs):
        lines = table.lines(k, m)
        for i, name in enumerate(names):
            pts = lines.get(name)
            if not pts:
                continue
            color = f"C{i % 10}"
            if all(r["total_seconds"] <= 0 for r in pts):  # no offline cost (the plain DE): a level
                ax.axhline(100 * max(r["recall"] for r in pts), color=color, linestyle=":", label=f"{name} (0 s)")
                continue
            xs = [max(r["total_seconds"], 1e-3) for r in pts]
            ys = [100 * r["recall"] for r in pts]
            ax.scatter(xs, ys, marker=markers[i % len(markers)], color=color, s=22, alpha=0.6)
            fx, fy, best = [], [], -1.0
            for x, y in zip(xs, ys):
                if y > best:
                    fx.append(x)
                    fy.append(y)
                    best = y
            ax.plot(fx, fy, marker=markers[i % len(markers)], color=color, label=name,
                    linestyle="--" if name.startswith("RNR") else "-")
        ax.set_xscale("log")
        ax.set_xlabel("total indexing time (s): CE + DE encoding + training")
        ax.set_title(f"Top-{k}-Recall@{m}")
        ax.set_ylim(0, 102)
        ax.grid(True, alpha=0.3, which="both")
    axes[0][0].set_ylabel("recall (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08 + 0.04 * ((len(labels) - 1) // 4), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
