"""A resumable evaluation run: :func:`axn_fast.evaluate` method by method, checkpointed in a directory.

The checkpoint is the package's one resumable format (:class:`axn_fast.io.checkpoint.Checkpoint`)
in ``eval-checkpoint/`` under the output directory: one unit per (method, k, m) row of the
table, recorded durably as soon as a method is done. Its configuration is the run's *content*
— the score matrix, the split lists, gold labels, embeddings and texts
(:meth:`EvalData.fingerprint`), the method configuration, ``ks``, ``budgets`` and the method
names — so a run started again on the same content evaluates only the methods still missing,
and anything else (another split of the same sizes, another matrix under the same file name,
another seed) discards the old checkpoint and starts afresh: a stale result is never reused.
When every method is done the results are written (results.csv, results.json, results.md)
and the checkpoint is removed. While a run is going the directory is locked: a second run on
the same output directory fails at once.
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

import axn_fast.evaluation.evaluate as _evaluate_module
from axn_fast.evaluation.data import EvalData, describe
from axn_fast.evaluation.evaluate import EvalTable, format_params
from axn_fast.io.checkpoint import Checkpoint, CheckpointCorrupt, CheckpointMismatch, config_digest
from axn_fast.methods.baselines import Method

CHECKPOINT_DIR = "eval-checkpoint"
CHECKPOINT_KIND = "eval_run"
#: per (method, k, m): recall, accuracy (NaN: no gold), ce_calls, seconds, index of the setting in grid(m)
_WIDTH = 5

PathLike = Union[str, "os.PathLike[str]"]


def _pairs(ks: Sequence[int], budgets: Sequence[int]) -> List[Tuple[int, int]]:
    """(k, m) in the order :func:`~axn_fast.evaluation.evaluate.evaluate` writes a method's rows."""
    return [(k, m) for m in sorted(set(int(b) for b in budgets)) for k in sorted(set(int(k) for k in ks)) if k <= m]


def run_key(data: EvalData, config: Mapping[str, Any], *, ks: Sequence[int], budgets: Sequence[int],
            method_names: Sequence[str]) -> Dict[str, Any]:
    """The checkpoint configuration identifying a run: the data's content digest, the method
    configuration (a JSON-able mapping), ks, budgets and the method names."""
    return {"data_sha256": data.fingerprint(), "methods_config": dict(config),
            "ks": sorted(set(int(k) for k in ks)), "budgets": sorted(set(int(b) for b in budgets)),
            "methods": list(method_names)}


def run_checkpoint(data: EvalData, methods: Sequence[Method], out_dir: PathLike, *, ks: Sequence[int],
                   budgets: Sequence[int], config: Mapping[str, Any]) -> Checkpoint:
    """The (unopened) checkpoint of this run under ``out_dir``; for tools and tests."""
    n_units = max(1, len(methods) * len(_pairs(ks, budgets)))
    return Checkpoint(Path(out_dir) / CHECKPOINT_DIR, kind=CHECKPOINT_KIND,
                      config=run_key(data, config, ks=ks, budgets=budgets, method_names=[m.name for m in methods]),
                      n_units=n_units, width=_WIDTH, dtype="float64", shard_units=n_units)


def _open(ckpt: Checkpoint, log: Optional[Callable[[str], None]]) -> Checkpoint:
    try:
        return ckpt.open()
    except (CheckpointMismatch, CheckpointCorrupt) as exc:
        # another run's checkpoint (or a damaged one) in our own subdirectory: its results
        # are not this run's, so they are dropped rather than reused
        if log is not None:
            log(f"discarding the checkpoint of another run: {exc}")
        shutil.rmtree(ckpt.dir)
        return ckpt.open()


def exact_rows(data: EvalData, ks: Sequence[int]) -> List[Dict[str, Any]]:
    """EXACT (brute force) rows: recall 1 at m = n_items; accuracy of the CE's own top-1."""
    top1 = np.argmax(data.scores[data.test], axis=1)
    acc = None if data.gold is None else float(np.mean(top1 == data.gold[data.test]))
    return [{"method": "EXACT", "params": "", "k": int(k), "m": data.n_items, "recall": 1.0, "accuracy": acc,
             "ce_calls": float(data.n_items), "seconds": 0.0, "n_queries": int(len(data.test))}
            for k in sorted(set(ks)) if k <= data.n_items]


def _encode(method: Method, rows: Sequence[Mapping[str, Any]], pairs: Sequence[Tuple[int, int]]) -> np.ndarray:
    got = [(r["k"], r["m"]) for r in rows]
    if got != list(pairs):
        raise RuntimeError(f"{method.name}: evaluate returned rows for {got}, expected {list(pairs)}")
    out = np.empty((len(rows), _WIDTH), dtype=np.float64)
    for i, r in enumerate(rows):
        names = [format_params(p) for p in method.grid(r["m"])]
        out[i] = (r["recall"], math.nan if r["accuracy"] is None else r["accuracy"], r["ce_calls"], r["seconds"],
                  names.index(r["params"]))
    return out


def _decode(method: Method, values: np.ndarray, pairs: Sequence[Tuple[int, int]],
            n_queries: int) -> List[Dict[str, Any]]:
    rows = []
    for (k, m), v in zip(pairs, values):
        rows.append({"method": method.name, "params": format_params(method.grid(m)[int(v[4])]), "k": k, "m": m,
                     "recall": float(v[0]), "accuracy": None if math.isnan(v[1]) else float(v[1]),
                     "ce_calls": float(v[2]), "seconds": float(v[3]), "n_queries": n_queries})
    return rows


def run_evaluation(data: EvalData, methods: Sequence[Method], out_dir: PathLike, *, ks: Sequence[int],
                   budgets: Sequence[int], config: Mapping[str, Any], meta: Optional[Mapping[str, Any]] = None,
                   show_progress_bar: Optional[bool] = None,
                   log: Optional[Callable[[str], None]] = None) -> EvalTable:
    """Evaluate ``methods`` on ``data``'s test queries (tuned on its dev queries), resumably.

    out_dir: where the checkpoint (``eval-checkpoint/``) and the results (results.csv,
        results.json, results.md) go; created if missing.
    config: the method configuration (JSON-able), part of the checkpoint's identity.
    meta: extra entries for the table's metadata (e.g. the command line).
    log: called with a line before each method is evaluated.
    Returns the table (every method's rows, then EXACT rows).
    """
    methods = list(methods)
    if not methods:
        raise ValueError("methods must hold at least one method")
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"methods must have distinct names, got {names}")
    pairs = _pairs(ks, budgets)
    if not pairs:
        raise ValueError(f"no (k, m) pair with k <= m: ks={list(ks)}, budgets={list(budgets)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output directory {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    ckpt = run_checkpoint(data, methods, out, ks=ks, budgets=budgets, config=config)
    rows: List[Dict[str, Any]] = []
    n_test = int(len(data.test))
    with _open(ckpt, log):
        for i, m in enumerate(methods):
            units = np.arange(i * len(pairs), (i + 1) * len(pairs))
            if not ckpt.done[units].all():
                if log is not None:
                    log(f"evaluating {m.name} ...")
                table = _evaluate_module.evaluate([m], data.scores, data.test, ks=ks, budgets=budgets,
                                                  dev_queries=data.dev, gold=data.gold, include_exact=False,
                                                  show_progress_bar=show_progress_bar)
                ckpt.record(units, _encode(m, table.rows, pairs))
            rows += _decode(m, ckpt.values[units], pairs, n_test)
    full_meta: Dict[str, Any] = dict(config)
    full_meta.update(describe(data))
    full_meta.update(ks=sorted(set(ks)), budgets=sorted(set(budgets)), methods=names,
                     run_sha256=config_digest(ckpt.config))
    full_meta.update(meta or {})
    table = EvalTable(rows=rows + exact_rows(data, ks), meta=full_meta)
    table.to_csv(out / "results.csv")
    table.to_json(out / "results.json")
    (out / "results.md").write_text(f"{data.name}: Top-k-Recall@m (%), {len(data.test)} test queries\n\n"
                                    f"{table.to_markdown()}\n", encoding="utf-8")
    shutil.rmtree(ckpt.dir)  # complete: results.json holds everything
    return table
