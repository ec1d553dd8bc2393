"""Top-k-Recall@m of budgeted CE search methods, measured the way the papers measure it.

For every method and budget ``m`` (CE calls per query), each test query is searched
once; Top-k-Recall@m is the fraction of the CE's exact top-k found among the items
the method paid to score (``SearchResult.scored_ids``), for every k <= m. Methods
with something to tune (AXN's λ, ANNCUR's k_i/k_r split) are tuned per (k, m) on
*dev* queries only (:mod:`axn_fast.evaluation.tuning`, which the demo's λ shares),
then run on the test queries with the chosen setting.
"""
from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
from numpy.typing import ArrayLike

from axn_fast._progress import progress
from axn_fast._validation import as_float32_array, check_int
from axn_fast.encoders.boundary import CountingCrossEncoder
from axn_fast.encoders.dense import DenseScoreCE
from axn_fast.encoders.protocol import CrossEncoder
from axn_fast.evaluation.tuning import QueryRuns, run_queries, tune_on_queries
from axn_fast.methods.baselines import Method, exact_search
from axn_fast.search.topk import top_ids

PathLike = Union[str, "os.PathLike[str]"]

COLUMNS = ("method", "params", "k", "m", "recall", "accuracy", "ce_calls", "seconds", "n_queries")


@dataclass
class EvalTable:
    """A tidy table: one row (dict) per (method, k, m).

    Columns: method; params (the setting chosen on dev, "" when nothing was tuned);
    k; m (budget of CE calls per query); recall (mean Top-k-Recall@m over the test
    queries, in [0, 1]); accuracy (fraction of test queries whose top-1 is the gold
    item; None without gold labels); ce_calls (mean CE calls per query); seconds (mean
    wall time per query *outside* the CE); n_queries.
    """

    rows: List[Dict[str, Any]] = field(default_factory=list)
    meta: Dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return iter(self.rows)

    def methods(self) -> List[str]:
        return list(dict.fromkeys(r["method"] for r in self.rows))

    def get(self, method: str, k: int, m: int) -> Optional[Dict[str, Any]]:
        for r in self.rows:
            if r["method"] == method and r["k"] == k and r["m"] == m:
                return r
        return None

    def to_csv(self, path: PathLike) -> None:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            for r in self.rows:
                w.writerow({c: ("" if r[c] is None else r[c]) for c in COLUMNS})

    def to_json(self, path: PathLike) -> None:
        with open(path, "w") as f:
            json.dump({"meta": self.meta, "rows": self.rows}, f, indent=1)

    @staticmethod
    def from_json(path: PathLike) -> "EvalTable":
        with open(path) as f:
            d = json.load(f)
        return EvalTable(rows=d["rows"], meta=d.get("meta", {}))

    def format(self) -> str:
        """Aligned plain-text table (the long form)."""
        head = ["method", "params", "k", "m", "recall", "accuracy", "ce_calls", "ms/query"]
        lines = [head]
        for r in self.rows:
            lines.append([r["method"], r["params"], str(r["k"]), str(r["m"]), f"{r['recall']:.4f}",
                          "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}",
                          f"{r['ce_calls']:.1f}", f"{1e3 * r['seconds']:.2f}"])
        widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines)

    def __str__(self) -> str:
        return self.format()

    def to_markdown(self) -> str:
        """Wide Markdown table: one row per method, Top-k-Recall@m (%) for every (k, m),
        then the time per query outside the CE at the largest budget."""
        pairs = sorted({(r["k"], r["m"]) for r in self.rows if r["method"] != "EXACT"})
        m_max = max((m for _, m in pairs), default=None)
        head = ["method"] + [f"k={k} m={m}" for k, m in pairs] + [f"ms/query (m={m_max})"]
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in self.methods():
            if name == "EXACT":
                continue
            cells = [name]
            for k, m in pairs:
                r = self.get(name, k, m)
                cells.append("" if r is None else f"{100 * r['recall']:.1f}")
            secs = [r["seconds"] for r in self.rows if r["method"] == name and r["m"] == m_max]
            cells.append(f"{1e3 * secs[0]:.2f}" if secs else "")
            out.append("| " + " | ".join(cells) + " |")
        return "\n".join(out)


def format_params(params: Dict[str, Any]) -> str:
    """A method setting as the table's ``params`` column shows it, e.g. ``lam=0.5`` or ``n_anchors=20``."""
    return ",".join(f"{a}={v:g}" if isinstance(v, float) else f"{a}={v}" for a, v in params.items())


def _ints(x: Union[int, Sequence[int]], name: str) -> List[int]:
    if isinstance(x, (int, np.integer)):
        x = [x]
    vals = [check_int(v, name, minimum=1) for v in x]
    if not vals:
        raise ValueError(f"{name} must not be empty")
    return sorted(set(vals))


def _query_rows(x: ArrayLike, name: str, n_rows: Optional[int]) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-D array of integer query row ids, "
                         f"got shape {arr.shape} dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or (n_rows is not None and arr.max() >= n_rows):
        raise ValueError(f"{name} holds row ids outside [0, {n_rows}) (the rows of the score matrix)")
    return arr


def evaluate(methods: Iterable[Method], ce_or_score_matrix: Union[ArrayLike, CrossEncoder], test_queries: ArrayLike,
             *, ks: Sequence[int] = (1, 10, 100), budgets: Sequence[int] = (50, 100, 200, 500),
             dev_queries: Optional[ArrayLike] = None, gold: Optional[ArrayLike] = None,
             n_items: Optional[int] = None, include_exact: bool = True,
             show_progress_bar: Optional[bool] = None) -> EvalTable:
    """Top-k-Recall@m of each method on the test queries, for every k in ``ks`` and m in ``budgets`` with k <= m.

    Args:
        methods: :class:`axn_fast.methods.baselines.Method` objects (distinct names).
        ce_or_score_matrix: a dense (n_queries, n_items) matrix of exact CE scores (served
            through :class:`axn_fast.DenseScoreCE`), or a callable ``ce(q, ids)``; a callable
            needs ``n_items`` and the ground truth is then found by exact search (every item
            scored for every test and dev query).
        test_queries: (n_test,) query row ids to report on.
        dev_queries: (n_dev,) query row ids used only to choose each tunable method's
            setting (AXN's λ, ANNCUR's split), per (k, m); required when a method has more
            than one setting. Must not overlap the test queries.
        gold: (n_queries,) int gold item per query row; adds downstream accuracy (top-1 == gold).
        include_exact: add EXACT rows (brute force: m = n_items, recall 1).
    Returns:
        EvalTable (rows ordered by method, then m, then k).
    """
    methods = list(methods)
    if not methods:
        raise ValueError("methods must hold at least one method")
    names = [getattr(m, "name", None) for m in methods]
    if any(not isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"methods must have distinct string names, got {names}")
    ks = _ints(ks, "ks")
    budgets = _ints(budgets, "budgets")

    if callable(ce_or_score_matrix) and not isinstance(ce_or_score_matrix, np.ndarray):
        S = None
        ce = ce_or_score_matrix
        if n_items is None:
            raise ValueError("n_items is required when ce_or_score_matrix is a callable cross-encoder")
        n_items = check_int(n_items, "n_items", minimum=1)
        n_rows = None
    else:
        S = as_float32_array(ce_or_score_matrix, "ce_or_score_matrix", ndim=(2,), allow_empty=False)
        ce = DenseScoreCE(S)
        n_rows, n_items = S.shape
    test_queries = _query_rows(test_queries, "test_queries", n_rows)
    if dev_queries is not None:
        dev_queries = _query_rows(dev_queries, "dev_queries", n_rows)
        if np.intersect1d(dev_queries, test_queries).size:
            raise ValueError("dev_queries and test_queries overlap: tuning on test queries is not allowed")
    if gold is not None:
        gold = np.asarray(gold)
        if gold.ndim != 1 or not np.issubdtype(gold.dtype, np.integer):
            raise ValueError(f"gold must be a 1-D integer array (gold item per query row), got shape {gold.shape}")
        if n_rows is not None and gold.shape[0] != n_rows:
            raise ValueError(f"gold must have one entry per score-matrix row ({n_rows}), got {gold.shape[0]}")
        if gold.shape[0] <= int(test_queries.max()):
            raise ValueError(f"gold has {gold.shape[0]} entries but test_queries holds row {int(test_queries.max())}")
    if max(budgets) > n_items:
        raise ValueError(f"budgets must be <= the number of items ({n_items}), got {max(budgets)}")
    pairs = [(k, m) for m in budgets for k in ks if k <= m]
    if not pairs:
        raise ValueError(f"no (k, m) pair with k <= m: ks={ks}, budgets={budgets}")
    k_need = max(k for k, _ in pairs)

    # ground truth: the exact top-k_need of every test and dev query
    rows_needed = test_queries if dev_queries is None else np.concatenate([test_queries, dev_queries])
    counting = CountingCrossEncoder(ce)
    truth: Dict[int, np.ndarray] = {}
    exact_top1: Dict[int, int] = {}
    exact_secs: List[float] = []
    for q in rows_needed.tolist():
        if q in truth:
            continue
        counting.reset()
        t0 = time.perf_counter()
        if S is not None:
            truth[q] = top_ids(S[q], k_need)
        else:
            truth[q] = exact_search(q, counting, n_items, k=k_need).ids
        exact_secs.append(time.perf_counter() - t0 - counting.seconds)
        exact_top1[q] = int(truth[q][0])

    plan = []
    total = 0
    for method in methods:
        for m in budgets:
            ks_m = [k for k in ks if k <= m]
            if not ks_m:
                continue
            grid = method.grid(m)
            if len(grid) > 1 and dev_queries is None:
                raise ValueError(f"{method.name} has {len(grid)} settings to choose from at budget {m}: "
                                 f"pass dev_queries to tune it (never the test queries)")
            plan.append((method, m, ks_m, grid))
            n_dev = len(dev_queries) if dev_queries is not None and len(grid) > 1 else 0
            total += len(grid) * (n_dev + len(test_queries))

    table = EvalTable(meta={"n_items": n_items, "n_test": int(len(test_queries)),
                            "n_dev": 0 if dev_queries is None else int(len(dev_queries)),
                            "ks": ks, "budgets": budgets})
    with progress(total=total, desc="evaluate", show=show_progress_bar) as bar:
        for method, m, ks_m, grid in plan:
            if len(grid) > 1:
                assert dev_queries is not None  # checked while planning
                best = tune_on_queries(method, counting, dev_queries, truth, m, ks=ks_m, bar=bar)
            else:
                best = {k: 0 for k in ks_m}
            bar.total = (bar.total or 0) - (len(grid) - len(set(best.values()))) * len(test_queries)
            results: Dict[int, QueryRuns] = {}
            for gi in sorted(set(best.values())):
                results[gi] = run_queries(method, counting, test_queries, truth, m, ks=ks_m, params=grid[gi],
                                          bar=bar)
            for k in ks_m:
                gi = best[k]
                run = results[gi]
                acc = None
                if gold is not None:
                    acc = float(np.mean(np.asarray(run.top1) == gold[test_queries]))
                table.rows.append({"method": method.name, "params": format_params(grid[gi]), "k": k, "m": m,
                                   "recall": run.recall[k], "accuracy": acc, "ce_calls": run.ce_calls,
                                   "seconds": run.seconds, "n_queries": int(len(test_queries))})
    if include_exact:
        acc = None
        if gold is not None:
            acc = float(np.mean(np.asarray([exact_top1[q] for q in test_queries.tolist()]) == gold[test_queries]))
        secs = float(np.mean(exact_secs))
        for k in ks:
            if k <= n_items:
                table.rows.append({"method": "EXACT", "params": "", "k": k, "m": n_items, "recall": 1.0,
                                   "accuracy": acc, "ce_calls": float(n_items), "seconds": secs,
                                   "n_queries": int(len(test_queries))})
    return table
