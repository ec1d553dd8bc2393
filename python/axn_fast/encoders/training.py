"""Fine-tune a transformers encoder into a cross-encoder (CE) for one item set.

:func:`train_cross_encoder` follows ANNCUR (Yadav et al., 2022, §3.1 and
Appendix A.1): for each training query, the gold item and ``n_negatives``
negatives (the dual-encoder's top-scored non-gold items, or random ones) are
scored by the CE in one softmax, and the loss is the cross-entropy of the gold
item. Heads are those of :class:`~axn_fast.encoders.cross_encoder.HFCrossEncoder`:
``"emb-dot"`` (the [EMB]-CE: dot product of a query and an item vector after
joint encoding), ``"emb-cos"``, and ``"cls"`` (a linear head on the pooled
[CLS] vector). The emb heads take their two vectors by ``pooling``: ``"mean"``
(default: the mean of the query's and of the item's token vectors; works with
any tokenizer) or ``"markers"`` (ANNCUR's [EMB] tokens: the vectors at a
marker put before the query and one before the item, BERT's ``[unused0]`` /
``[unused1]``). With markers only the top layers train too: the markers' input
embeddings stay frozen (never trained in pre-training either), and the layers
above learn to gather the pair into those two positions. They learn more
slowly: in an untrained model the marker states hardly depend on the text, and
even in all-MiniLM-L6-v2 (top 2 layers trained) the first losses are large
(the two states' dot products are): on a toy colour-to-fruit task at lr 1e-4
markers reached 0.75 dev accuracy after ~140 steps, mean pooling after 24.
On the WordNet task mean pooling trained better at equal settings (dev
accuracy after 100 steps 43.8% vs 28.9% at lr 1e-4, 49.8% vs 47.8% at 3e-4;
bench/README.md, "[EMB] markers versus mean pooling"), so it is the default. The forward pass is
:func:`~axn_fast.encoders.cross_encoder.pair_scores`, the same function
inference uses, so a trained CE scores identically in both.

Only the top ``trainable_layers`` transformer layers (plus the head's own
parameters for ``"cls"``) are trained; the rest, embeddings included, stay
frozen, which keeps CPU training affordable and the saved model small: the
result is a *delta* (see :mod:`axn_fast.encoders.delta`) loaded with
:meth:`HFCrossEncoder.from_trained`.

A run may start from a trained delta of the same base (``init``) and draw its
hard negatives afresh every step from deeper in the DE's list (``hard_pool``):
the shipped WordNet CE is such a second stage (top 4 layers, negatives from the
DE's top 32) on a first one (top 3 layers, the DE's top 7), which lifted its
held-out re-rank accuracy from 39.2% to 45.0% (bench/README.md).

Everything is written under ``out_dir``:

- ``best/``: the delta with the best dev accuracy (the last one without a dev set);
- ``checkpoint/``: the resume state, written every ``checkpoint_every`` steps
  (trained parameters, AdamW moments as safetensors, step and dev curve as
  JSON; no pickle). Calling again with the same arguments and ``out_dir``
  resumes from it; data order and dropout are functions of (seed, step), so a
  resumed run ends with the same parameters as an uninterrupted one;
- ``negatives.npz``: the mined negatives (so a resumed run needs no DE);
- ``log.jsonl``: one line per dev evaluation.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from axn_fast._progress import progress
from axn_fast._validation import check_int
from axn_fast.encoders import _hf
from axn_fast.encoders.cross_encoder import (HEADS, check_pooling, encode_pairs, load_pair_model, marker_ids,
                                             model_inputs, pair_scores)
from axn_fast.encoders.delta import weights_sha256, write_delta

__all__ = ["train_cross_encoder", "mine_negatives", "random_negatives", "TrainResult", "evaluate_candidates"]

_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")


@dataclass
class TrainResult:
    """What :func:`train_cross_encoder` produced.

    path: the ``best/`` delta directory (load with ``HFCrossEncoder.from_trained``);
    dev_curve: one dict per dev evaluation (``step``, ``epoch``, ``train_loss``
    (mean since the previous evaluation), ``dev_accuracy``, ``seconds``);
    best_step / best_dev_accuracy: the kept checkpoint (None without a dev set);
    steps: optimiser steps run in total; seconds: wall time of this call;
    pairs_per_second: training pairs (query x candidate) per second in this call.
    """

    path: Path
    dev_curve: List[Dict[str, Any]] = field(default_factory=list)
    best_step: Optional[int] = None
    best_dev_accuracy: Optional[float] = None
    steps: int = 0
    seconds: float = 0.0
    pairs_per_second: float = 0.0


def mine_negatives(query_emb: np.ndarray, item_emb: np.ndarray, gold: np.ndarray, n_negatives: int,
                   *, chunk: int = 512) -> np.ndarray:
    """The DE's top-scored non-gold items per query: (n_queries, n_negatives) int64, best first.

    query_emb: (n_queries, d); item_emb: (n_items, d) float32 (scores are inner
    products); gold: (n_queries,) gold item ids.
    """
    q = np.asarray(query_emb, dtype=np.float32)
    it = np.asarray(item_emb, dtype=np.float32)
    gold = _check_gold(gold, q.shape[0], it.shape[0], "gold")
    n_negatives = check_int(n_negatives, "n_negatives", minimum=1)
    if n_negatives > it.shape[0] - 1:
        raise ValueError(f"n_negatives={n_negatives} but only {it.shape[0] - 1} non-gold items exist")
    k = n_negatives + 1
    out = np.zeros((q.shape[0], n_negatives), dtype=np.int64)
    for s in range(0, q.shape[0], chunk):
        sc = q[s:s + chunk] @ it.T
        top = np.argpartition(-sc, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sc, top, 1), axis=1, kind="stable"), 1)
        for r in range(top.shape[0]):
            row = top[r][top[r] != gold[s + r]][:n_negatives]
            out[s + r] = row
    return out


def random_negatives(n_items: int, gold: np.ndarray, n_negatives: int, seed: int = 0) -> np.ndarray:
    """``n_negatives`` distinct random non-gold items per query: (n_queries, n_negatives) int64."""
    n_items = check_int(n_items, "n_items", minimum=1)
    gold = _check_gold(gold, len(gold), n_items, "gold")
    n_negatives = check_int(n_negatives, "n_negatives", minimum=1)
    if n_negatives > n_items - 1:
        raise ValueError(f"n_negatives={n_negatives} but only {n_items - 1} non-gold items exist")
    rng = np.random.default_rng(seed)
    out = np.zeros((gold.shape[0], n_negatives), dtype=np.int64)
    for r, g in enumerate(gold.tolist()):
        pick = rng.choice(n_items - 1, size=n_negatives, replace=False)
        out[r] = pick + (pick >= g)  # skip the gold
    return out


def _extra_random(taken: np.ndarray, n_items: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct random item ids per row of ``taken`` (n_rows, c), none of them already in the row."""
    out = np.empty((taken.shape[0], n), dtype=np.int64)
    for r in range(taken.shape[0]):
        seen = set(taken[r].tolist())
        row: List[int] = []
        while len(row) < n:
            for j in rng.integers(0, n_items, size=2 * n).tolist():
                if j not in seen and len(row) < n:
                    seen.add(j)
                    row.append(j)
        out[r] = row
    return out


def _check_gold(gold: Any, n_queries: int, n_items: int, name: str) -> np.ndarray:
    g = np.asarray(gold)
    if g.ndim != 1 or g.shape[0] != n_queries:
        raise ValueError(f"{name} must hold one item id per query ({n_queries}), got shape {g.shape}")
    if g.size and not np.issubdtype(g.dtype, np.integer):
        raise TypeError(f"{name} must hold integer item ids, got dtype {g.dtype}")
    g = g.astype(np.int64)
    if g.size and (g.min() < 0 or g.max() >= n_items):
        bad = int(g[(g < 0) | (g >= n_items)][0])
        raise ValueError(f"{name} holds item id {bad}, outside [0, {n_items})")
    return g


def _check_texts(texts: Any, name: str) -> List[str]:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a sequence of str, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"{name}[{i}] must be a non-empty text, got {t!r}")
    return list(texts)


def _check_negatives(neg: Any, gold: np.ndarray, n_items: int, n_negatives: int, name: str) -> np.ndarray:
    neg = np.asarray(neg)
    if neg.ndim != 2 or neg.shape[0] != gold.shape[0] or neg.shape[1] < n_negatives:
        raise ValueError(f"{name} must have shape ({gold.shape[0]}, >= {n_negatives}), got {neg.shape}")
    neg = neg[:, :n_negatives].astype(np.int64)
    if neg.min() < 0 or neg.max() >= n_items:
        raise ValueError(f"{name} holds item ids outside [0, {n_items})")
    if (neg == gold[:, None]).any():
        raise ValueError(f"{name} holds a query's gold item among its negatives")
    return neg


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.dtype).encode() + str(p.shape).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def trainable_names(model: Any, head: str, trainable_layers: int) -> List[str]:
    """Names of the parameters training updates: the top ``trainable_layers`` layers (+ the cls head)."""
    base = model.base_model
    prefix = "" if base is model else model.base_model_prefix + "."
    layers: Dict[int, List[str]] = {}
    for n, _ in model.named_parameters():
        rel = n[len(prefix):] if n.startswith(prefix) else None
        m = _LAYER.match(rel) if rel is not None else None
        if m:
            layers.setdefault(int(m.group(1)), []).append(n)
    if not layers:
        raise ValueError(f"cannot find the transformer layers (encoder.layer.N) of {type(model).__name__}")
    n_layers = max(layers) + 1
    if trainable_layers > n_layers:
        raise ValueError(f"trainable_layers={trainable_layers} but the model has {n_layers} layers")
    names = [n for i in range(n_layers - trainable_layers, n_layers) for n in layers[i]]
    if head == "cls":
        names += [n for n, _ in model.named_parameters()
                  if not n.startswith(prefix) or n[len(prefix):].startswith("pooler.")] if prefix else []
    if not names:
        raise ValueError(f"nothing to train: trainable_layers=0 with head={head!r} (no head parameters)")
    return names


def evaluate_candidates(model: Any, tokenizer: Any, head: str, queries: Sequence[str], items: Sequence[str],
                        candidates: np.ndarray, *, max_length: int, device: Any,
                        item_lengths: Optional[np.ndarray] = None, batch_pairs: int = 128,
                        show_progress_bar: Optional[bool] = None, pooling: str = "mean") -> np.ndarray:
    """Scores of each query against its candidate items: (n_queries, n_candidates) float32.

    candidates: (n_queries, n_candidates) item ids; pooling: "mean" | "markers"
    (see :func:`~axn_fast.encoders.cross_encoder.encode_pairs`). Uses the
    training/inference forward pass.
    """
    import torch

    nq, nc = candidates.shape
    flat_q = np.repeat(np.arange(nq), nc)
    flat_i = candidates.reshape(-1)
    out = np.zeros(nq * nc, dtype=np.float32)
    lens = None if item_lengths is None else np.asarray(item_lengths)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), progress(total=out.shape[0], desc="dev pairs", unit="pair",
                                              show=show_progress_bar) as bar:
            for s in range(0, out.shape[0], batch_pairs):
                qi, ii = flat_q[s:s + batch_pairs], flat_i[s:s + batch_pairs]
                batch = encode_pairs(tokenizer, [queries[j] for j in qi.tolist()], [items[j] for j in ii.tolist()],
                                     max_length, item_lengths=None if lens is None else lens[ii],
                                     pooling=pooling)
                out[s:s + qi.shape[0]] = pair_scores(model, head, model_inputs(model, batch, device, torch)).float().cpu().numpy()
                bar.update(qi.shape[0])
    finally:
        model.train(was_training)
    return out.reshape(nq, nc)


def _lr_at(step: int, total: int, warmup: int, lr: float) -> float:
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    return lr * max(0.0, (total - step) / max(1, total - warmup))


def train_cross_encoder(base: Any, items: Sequence[str], queries: Sequence[str], gold: Any,
                        out_dir: Union[str, "os.PathLike[str]"], *,
                        head: str = "emb-dot", pooling: str = "mean", negatives: Union[str, np.ndarray] = "de",
                        n_negatives: int = 15, n_random_negatives: int = 0, hard_pool: Optional[int] = None,
                        dual_encoder: Any = None, item_embeddings: Optional[np.ndarray] = None,
                        dev_queries: Any = None, dev_gold: Any = None,
                        dev_negatives: Union[str, np.ndarray, None] = None,
                        n_dev_negatives: Optional[int] = None, epochs: int = 1, lr: float = 5e-5,
                        warmup: float = 0.1, batch_size: int = 2, max_length: int = 64, trainable_layers: int = 2,
                        seed: int = 0, device: Any = "auto", dtype: Any = None, eval_every: int = 100,
                        checkpoint_every: int = 25, save_dtype: Optional[str] = None, weight_decay: float = 0.01,
                        name: Optional[str] = None, base_name: Optional[str] = None,
                        init: Union[str, "os.PathLike[str]", None] = None,
                        show_progress_bar: Optional[bool] = None, on_step: Optional[Callable[[int, float], None]] = None
                        ) -> TrainResult:
    """Fine-tune ``base`` as a CE on (query, gold item) pairs and save the best delta under ``out_dir/best``.

    base: a checkpoint directory, a hub id, or a loaded ``(model, tokenizer)``
    (for ``"cls"`` a sequence-classification model; a plain encoder gets a new
    one-logit head); items: (n_items,) item texts; queries: (n_queries,) query
    texts; gold: (n_queries,) gold item ids; head: "emb-dot" | "emb-cos" | "cls";
    pooling: for the emb heads, "mean" (default) | "markers" ([EMB] marker
    tokens; BERT vocabularies only), recorded in the delta's manifest and part
    of the settings a resumed run must match.

    negatives: ``"de"`` (the top ``n_negatives`` non-gold items of
    ``dual_encoder``, an object with ``encode(texts) -> (n, d)`` whose inner
    products score; default: an :class:`HFDualEncoder` of ``base`` when it is
    a directory), ``"random"``, or a (n_queries, >= n_negatives) id array;
    item_embeddings: the DE's (n_items, d) item embeddings when already
    computed (only the queries are then encoded).
    n_random_negatives: extra random non-gold items per query, drawn afresh
    every step (a function of seed and step, so resumable) and added to the
    same softmax. Hard negatives alone teach the order among look-alikes but
    never the score of unrelated items, so an emb-dot CE trained on them can
    give a few items large norms ("hubs") that outrank everything when all
    items are scored; random ones fix the scale. The dev set gets the same
    number of random negatives, drawn once.
    Each training query contributes ``1 + n_negatives + n_random_negatives``
    pairs to one softmax.
    hard_pool: draw each step's ``n_negatives`` hard negatives afresh (a
    function of seed and step) from the top ``hard_pool`` mined ones (the
    first ``hard_pool`` columns of a given array) instead of always the same
    top ``n_negatives``: the CE then sees look-alikes from as deep in the DE's
    list as it will re-rank. Default None: the fixed top ``n_negatives``. The
    dev set keeps fixed negatives (``n_dev_negatives`` of them).
    init: a trained delta (of the same ``base``, ``head`` and ``pooling``) to
    start from instead of the base's own weights: a second stage with other
    negatives, more layers or a new learning-rate schedule. Its parameters
    must be among those trained here (``trainable_layers`` at least its
    layers); the saved delta is again relative to ``base``.
    dev_queries / dev_gold: an optional dev set, scored every ``eval_every``
    steps (and before the first) as the accuracy of ranking the gold first
    among itself and ``dev_negatives`` (default: mined like ``negatives``);
    the best one is kept. n_dev_negatives: how many of those per dev query
    (default ``n_negatives``): e.g. 63 DE-mined ones make the dev accuracy
    ANNCUR's re-rank protocol over the DE's top 64 (with the gold forced in).

    epochs, lr (peak AdamW learning rate; linear warm-up over ``warmup`` x the
    steps, then linear decay to 0), batch_size (queries per optimiser step),
    max_length (tokens per pair), trainable_layers (top transformer layers
    trained; the rest and the embeddings are frozen), seed, device ("auto":
    CUDA when present), dtype (None: bf16 autocast on CUDA, fp32 on CPU),
    checkpoint_every (steps between resume checkpoints), save_dtype (the
    delta's dtype, e.g. "float16"; default the training dtype), name (recorded
    in the manifest), base_name (the base's name in the manifest; default its
    directory name), on_step(step, loss) called after every step.
    Returns a :class:`TrainResult`.
    """
    t_start = time.time()
    torch, transformers = _hf.import_torch_transformers("train_cross_encoder")
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    pooling = check_pooling(pooling, head)
    items = _check_texts(items, "items")
    if not items:
        raise ValueError("items must hold at least one item text")
    queries = _check_texts(queries, "queries")
    if not queries:
        raise ValueError("queries must hold at least one training query")
    gold = _check_gold(gold, len(queries), len(items), "gold")
    n_negatives = check_int(n_negatives, "n_negatives", minimum=1)
    if n_negatives > len(items) - 1:
        raise ValueError(f"no negatives available: n_negatives={n_negatives} but only {len(items) - 1} "
                         "non-gold items exist")
    n_random_negatives = check_int(n_random_negatives, "n_random_negatives", minimum=0)
    if hard_pool is not None:
        hard_pool = check_int(hard_pool, "hard_pool", minimum=n_negatives)
        if isinstance(negatives, str) and negatives == "random":
            raise ValueError("hard_pool draws from mined hard negatives: it needs negatives='de' or an id array, "
                             "not 'random'")
        if hard_pool > len(items) - 1:
            raise ValueError(f"no negatives available: hard_pool={hard_pool} but only {len(items) - 1} "
                             "non-gold items exist")
    n_mined = n_negatives if hard_pool is None else hard_pool
    if n_dev_negatives is not None:
        n_dev_negatives = check_int(n_dev_negatives, "n_dev_negatives", minimum=1)
        if n_dev_negatives + n_random_negatives > len(items) - 1:
            raise ValueError(f"no negatives available: n_dev_negatives + n_random_negatives = "
                             f"{n_dev_negatives + n_random_negatives} but only {len(items) - 1} non-gold items exist")
    n_dev_neg = n_negatives if n_dev_negatives is None else n_dev_negatives
    if n_random_negatives and n_negatives + n_random_negatives > len(items) - 1:
        raise ValueError(f"no negatives available: n_negatives + n_random_negatives = "
                         f"{n_negatives + n_random_negatives} but only {len(items) - 1} non-gold items exist")
    epochs = check_int(epochs, "epochs", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    max_length = check_int(max_length, "max_length", minimum=8)
    trainable_layers = check_int(trainable_layers, "trainable_layers", minimum=0)
    eval_every = check_int(eval_every, "eval_every", minimum=1)
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not (isinstance(warmup, (int, float)) and 0 <= warmup < 1):
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup!r}")
    has_dev = dev_queries is not None
    if has_dev != (dev_gold is not None):
        raise ValueError("dev_queries and dev_gold go together: give both or neither")
    if has_dev:
        dev_queries = _check_texts(dev_queries, "dev_queries")
        dev_gold = _check_gold(dev_gold, len(dev_queries), len(items), "dev_gold")
        if not dev_queries:
            raise ValueError("dev_queries must hold at least one query")
    if isinstance(negatives, str) and negatives not in ("de", "random"):
        raise ValueError(f"negatives must be 'de', 'random' or an id array, got {negatives!r}")
    save_torch_dtype = None
    if save_dtype is not None:
        save_torch_dtype = _hf.resolve_dtype(save_dtype, torch.device("cpu"), torch)

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    dev, amp = _device_and_autocast(device, dtype, torch)

    # --- negatives (mined once, kept on disk so a resumed run needs no DE) -------------------------
    data_key = _digest(items, queries, gold, dev_queries, None if dev_gold is None else dev_gold,
                       negatives if isinstance(negatives, str) else np.asarray(negatives), n_negatives, seed,
                       None if dev_negatives is None or isinstance(dev_negatives, str) else np.asarray(dev_negatives),
                       *(() if hard_pool is None else (hard_pool,)),
                       *(() if n_dev_negatives is None else ("n_dev_negatives", n_dev_negatives)))
    neg_file = out / "negatives.npz"
    train_neg = dev_neg = None
    if neg_file.is_file():
        with np.load(neg_file, allow_pickle=False) as z:
            if str(z["key"]) == data_key:
                train_neg = z["train"]
                dev_neg = z["dev"] if has_dev else None
    if train_neg is None:
        train_neg, dev_neg = _negatives(base, items, queries, gold, dev_queries, dev_gold, negatives, dev_negatives,
                                        n_negatives, dual_encoder, seed, item_embeddings, n_mined, n_dev_neg)
        tmp = out / "negatives.tmp.npz"
        np.savez(tmp, key=np.array(data_key), train=train_neg,
                 dev=dev_neg if dev_neg is not None else np.zeros((0, n_dev_neg), np.int64))
        os.replace(tmp, neg_file)

    # --- model -----------------------------------------------------------------------------------------
    torch.manual_seed(seed)  # a new cls head is initialised from the seed
    model, tok, source = load_pair_model(base, head, transformers, torch.float32, warn=False)
    if pooling == "markers":
        marker_ids(tok)  # a vocabulary without the markers is refused before any training
    base_sha = weights_sha256(model)
    names = trainable_names(model, head, trainable_layers)
    init_desc = None if init is None else _apply_init(init, model, names, head, pooling)
    trained, opt, opt_order = _train_only(model, names, dev, lr, weight_decay, torch)

    item_len = np.array([len(t) for t in tok(items, add_special_tokens=False)["input_ids"]], dtype=np.int64)
    if (item_len == 0).any():
        i = int(np.flatnonzero(item_len == 0)[0])
        raise ValueError(f"items[{i}] ({items[i]!r}) has no tokens under this tokenizer")
    steps_per_epoch = math.ceil(len(queries) / batch_size)
    total = steps_per_epoch * epochs
    warm = int(round(warmup * total))
    if isinstance(base, tuple):
        base_desc = {"name": base_name or getattr(model.config, "_name_or_path", "") or "in-memory", "path": None}
    else:
        p = Path(source)
        base_desc = {"name": base_name or (p.name if p.name != "model" else p.parent.name),
                     "path": str(p) if _hf.is_local(source) else source}
    base_desc.update(sha256=base_sha, model_type=getattr(model.config, "model_type", None))
    settings = {"head": head, "n_negatives": n_negatives, "n_random_negatives": n_random_negatives, "negatives": negatives if isinstance(negatives, str)
                else "given", "epochs": epochs, "lr": lr, "warmup": warmup, "batch_size": batch_size,
                "max_length": max_length, "trainable_layers": trainable_layers, "seed": seed,
                "weight_decay": weight_decay, "n_train_queries": len(queries), "n_items": len(items),
                "n_dev_queries": len(dev_queries) if has_dev else 0, "eval_every": eval_every}
    if pooling != "mean":  # absent for "mean": the run key of a mean-pooling run is what it was before the setting
        settings["pooling"] = pooling
    if hard_pool is not None:  # absent when unused, for the same reason
        settings["hard_pool"] = hard_pool
    if init_desc is not None:
        settings["init"] = init_desc
    if n_dev_negatives is not None:
        settings["n_dev_negatives"] = n_dev_negatives
    run_key = _digest(data_key, settings, base_sha)

    # --- resume --------------------------------------------------------------------------------------
    ckpt = out / "checkpoint"
    state: Dict[str, Any] = {"step": 0, "dev_curve": [], "best_step": None, "best_dev_accuracy": None, "run_key": run_key,
             "seconds": 0.0}
    if (ckpt / "state.json").is_file():
        saved = json.loads((ckpt / "state.json").read_text())
        if saved.get("run_key") != run_key:
            raise ValueError(f"{str(out)!r} holds a checkpoint of a run with other data or settings; "
                             "use another out_dir (or delete its checkpoint/) to start afresh")
        state = saved
        _load_checkpoint(ckpt, model, opt, names, opt_order, torch)

    def manifest(step: Optional[int]) -> Dict[str, Any]:
        return {"name": name or out.name, "head": head, "pooling": pooling, "max_length": max_length,
                "base": base_desc,
                "training": dict(settings, step=step, dev_curve=state["dev_curve"],
                                 best_step=state["best_step"], best_dev_accuracy=state["best_dev_accuracy"],
                                 seconds=state["seconds"], torch=torch.__version__,
                                 transformers=transformers.__version__, device=str(dev),
                                 machine=platform.machine())}

    def dev_eval(step: int, loss: Optional[float]) -> None:
        if not has_dev:
            return
        cand = np.concatenate([dev_gold[:, None], dev_neg], axis=1)
        if n_random_negatives:
            cand = np.concatenate([cand, _extra_random(cand, len(items), n_random_negatives,
                                                       np.random.default_rng([seed, 1 << 30]))], axis=1)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            sc = evaluate_candidates(model, tok, head, dev_queries, items, cand, max_length=max_length,
                                     device=dev, item_lengths=item_len, show_progress_bar=show_progress_bar,
                                     pooling=pooling)
        acc = float(np.mean(np.argmax(sc, axis=1) == 0))
        entry = {"step": step, "epoch": round(step / steps_per_epoch, 4), "train_loss": loss,
                 "dev_accuracy": acc, "seconds": round(seconds_before + time.time() - t_start, 1)}
        state["dev_curve"].append(entry)
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        if state["best_dev_accuracy"] is None or acc > state["best_dev_accuracy"]:
            state["best_dev_accuracy"], state["best_step"] = acc, step
            write_delta(out / "best", model, names, manifest(step), dtype=save_torch_dtype)

    seconds_before = state["seconds"]
    step0 = state["step"]
    if step0 == 0 and not state["dev_curve"]:
        dev_eval(0, None)
    model.train()
    losses: List[float] = []
    pairs = 0
    with progress(total=total, initial=step0, desc="train CE", unit="step", show=show_progress_bar) as bar:
        for step in range(step0, total):
            epoch, i = divmod(step, steps_per_epoch)
            order = np.random.default_rng([seed, epoch]).permutation(len(queries))
            rows = order[i * batch_size:(i + 1) * batch_size]
            hard = train_neg[rows]
            if hard_pool is not None:
                pick = np.random.default_rng([seed, step, 2]).random(hard.shape).argsort(axis=1)[:, :n_negatives]
                hard = np.take_along_axis(hard, pick, axis=1)
            cand = np.concatenate([gold[rows][:, None], hard], axis=1)  # gold is candidate 0
            if n_random_negatives:
                cand = np.concatenate([cand, _extra_random(cand, len(items), n_random_negatives,
                                                           np.random.default_rng([seed, step, 1]))], axis=1)
            nc = cand.shape[1]
            batch = encode_pairs(tok, [queries[r] for r in rows.tolist() for _ in range(nc)],
                                 [items[j] for j in cand.reshape(-1).tolist()], max_length,
                                 item_lengths=item_len[cand.reshape(-1)], pooling=pooling)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, warm, lr)
            torch.manual_seed(seed * 1_000_003 + step)  # dropout is a function of (seed, step): resumable
            with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                scores = pair_scores(model, head, model_inputs(model, batch, dev, torch))
            logits = scores.float().view(len(rows), nc)
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(rows), dtype=torch.long, device=dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            opt.step()
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise FloatingPointError(f"the training loss became {lv} at step {step}; lower lr")
            losses.append(lv)
            pairs += len(rows) * nc
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            done = step + 1
            if done % eval_every == 0 or done == total:
                state["seconds"] = seconds_before + time.time() - t_start
                dev_eval(done, float(np.mean(losses)) if losses else None)
                losses = []
            if done % checkpoint_every == 0 or done == total:
                state["step"] = done
                state["seconds"] = seconds_before + time.time() - t_start
                _save_checkpoint(ckpt, model, opt, names, opt_order, state, torch)
            if on_step is not None:
                on_step(done, lv)
    if not has_dev:
        write_delta(out / "best", model, names, manifest(total), dtype=save_torch_dtype)
    else:  # refresh the manifest's curve/timing in the kept best delta
        from axn_fast.encoders.delta import MANIFEST_FILE

        doc = json.loads((out / "best" / MANIFEST_FILE).read_text())
        doc["training"] = manifest(state["best_step"])["training"]
        (out / "best" / MANIFEST_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True))
    secs = time.time() - t_start
    return TrainResult(path=out / "best", dev_curve=list(state["dev_curve"]), best_step=state["best_step"],
                       best_dev_accuracy=state["best_dev_accuracy"], steps=total, seconds=secs,
                       pairs_per_second=pairs / secs if secs > 0 else 0.0)


def _negatives(base: Any, items: List[str], queries: List[str], gold: np.ndarray, dev_queries: Any,
               dev_gold: Any, negatives: Any, dev_negatives: Any, n_negatives: int,
               dual_encoder: Any, seed: int, item_embeddings: Optional[np.ndarray] = None,
               n_train: Optional[int] = None, n_dev: Optional[int] = None
               ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(train, dev) negative ids: (n_queries, n_train or n_negatives) and (n_dev_queries, n_dev or n_negatives)."""
    has_dev = dev_queries is not None
    dev_spec = negatives if dev_negatives is None else dev_negatives
    if isinstance(dev_spec, np.ndarray) and not isinstance(negatives, np.ndarray) and dev_negatives is None:
        dev_spec = "random"
    need_de = (isinstance(negatives, str) and negatives == "de") or \
        (has_dev and isinstance(dev_spec, str) and dev_spec == "de")
    item_emb: Any = None
    if need_de:
        if dual_encoder is None:
            if isinstance(base, tuple):
                raise ValueError("negatives='de' with a loaded base model needs dual_encoder=")
            from axn_fast.encoders.dual_encoder import HFDualEncoder

            dual_encoder = HFDualEncoder(_hf.resolve_source(base), show_progress_bar=False)
        if item_embeddings is not None:
            item_emb = np.asarray(item_embeddings, dtype=np.float32)
            if item_emb.ndim != 2 or item_emb.shape[0] != len(items):
                raise ValueError(f"item_embeddings must have shape ({len(items)}, d), got {item_emb.shape}")
        else:
            item_emb = np.asarray(dual_encoder.encode(items), dtype=np.float32)

    def make(spec: Any, qs: List[str], g: np.ndarray, what: str, s: int, n: int) -> np.ndarray:
        if isinstance(spec, str) and spec == "de":
            return mine_negatives(np.asarray(dual_encoder.encode(qs), dtype=np.float32), item_emb, g, n)
        if isinstance(spec, str):
            return random_negatives(len(items), g, n, seed=s)
        return _check_negatives(spec, g, len(items), n, what)

    train = make(negatives, queries, gold, "negatives", seed, n_train or n_negatives)
    dev = make(dev_spec, dev_queries, dev_gold, "dev_negatives", seed + 1, n_dev or n_negatives) if has_dev else None
    return train, dev


def _apply_init(init: Any, model: Any, names: List[str], head: str, pooling: str) -> Dict[str, Any]:
    """Load the trained delta ``init`` into ``model`` (its base verified by SHA-256) and return what the
    run key and manifest record of it; refuse a delta of another head or pooling, or one holding
    parameters this run would freeze (they would silently be lost from the saved delta)."""
    from axn_fast.encoders.delta import DELTA_FILE, apply_delta, read_delta

    d = Path(init).expanduser()
    manifest, tensors = read_delta(d)
    if manifest["head"] != head:
        raise ValueError(f"init: {str(d)!r} was trained with head {manifest['head']!r}, this run uses {head!r}")
    if manifest.get("pooling", "mean") != pooling:
        raise ValueError(f"init: {str(d)!r} was trained with pooling {manifest.get('pooling', 'mean')!r}, "
                         f"this run uses {pooling!r}")
    frozen = sorted(set(tensors) - set(names))
    if frozen:
        raise ValueError(f"init: {str(d)!r} holds {len(frozen)} parameters this run would not train (e.g. "
                         f"{frozen[0]!r}); raise trainable_layers to cover its layers")
    apply_delta(model, manifest, tensors)
    sha = hashlib.sha256((d / DELTA_FILE).read_bytes()).hexdigest()
    return {"name": manifest.get("name"), "sha256": sha}


def _device_and_autocast(device: Any, dtype: Any, torch: Any) -> Tuple[Any, Any]:
    """(torch device, autocast dtype or None): bf16 (else fp16) autocast on CUDA unless ``dtype`` says
    otherwise; full precision on the CPU."""
    dev = _hf.resolve_device(device, torch)
    if dtype is None:
        amp = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if dev.type == "cuda" else None
    else:
        amp = _hf.resolve_dtype(dtype, dev, torch)
        amp = None if amp == torch.float32 else amp
    return dev, amp


def _train_only(model: Any, names: List[str], dev: Any, lr: float, weight_decay: float,
                torch: Any) -> Tuple[List[Any], Any, List[str]]:
    """Freeze every parameter of ``model`` but ``names`` and move it to ``dev``; return the trained
    parameters (in ``names`` order), an AdamW over them (weight decay on matrices only) and the order of
    the optimizer's parameters (what the checkpoint's moments are keyed by)."""
    name_set = set(names)
    for n, p in model.named_parameters():
        p.requires_grad_(n in name_set)
    model.to(dev)
    params = dict(model.named_parameters())
    opt_order = [n for n in names if params[n].ndim >= 2] + [n for n in names if params[n].ndim < 2]
    opt = torch.optim.AdamW([{"params": [params[n] for n in names if params[n].ndim >= 2],
                              "weight_decay": weight_decay},
                             {"params": [params[n] for n in names if params[n].ndim < 2], "weight_decay": 0.0}],
                            lr=lr)
    return [params[n] for n in names], opt, opt_order


def _save_checkpoint(ckpt: Path, model: Any, opt: Any, names: List[str], opt_order: List[str],
                     state: Dict[str, Any], torch: Any) -> None:
    """Trained params + AdamW moments as safetensors, step/curve as JSON; the old one is replaced atomically."""
    from safetensors.torch import save_file

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    params = dict(model.named_parameters())
    save_file({n: params[n].detach().cpu().contiguous() for n in names}, str(tmp / "params.safetensors"))
    moments, steps = {}, {}
    for n in opt_order:
        st = opt.state.get(params[n], {})
        if st:
            moments[n + "::exp_avg"] = st["exp_avg"].detach().cpu().contiguous()
            moments[n + "::exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().contiguous()
            steps[n] = float(st["step"])
    save_file(moments or {"_empty": torch.zeros(1)}, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps(dict(state, optimizer_steps=steps), indent=1))
    old = ckpt.with_name(ckpt.name + ".old")
    if ckpt.exists():
        os.replace(ckpt, old)
    os.replace(tmp, ckpt)
    if old.exists():
        for f in old.iterdir():
            f.unlink()
        old.rmdir()


def _load_checkpoint(ckpt: Path, model: Any, opt: Any, names: List[str], opt_order: List[str], torch: Any) -> None:
    from safetensors.torch import load_file

    saved = load_file(str(ckpt / "params.safetensors"))
    if sorted(saved) != sorted(names):
        raise ValueError(f"{str(ckpt)!r} holds other parameters than this run trains")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].copy_(saved[n].to(params[n].device))
    moments = load_file(str(ckpt / "optimizer.safetensors"))
    steps = json.loads((ckpt / "state.json").read_text()).get("optimizer_steps", {})
    sd = opt.state_dict()
    state = {}
    for idx, n in enumerate(opt_order):
        if n in steps:
            dev = params[n].device
            state[idx] = {"step": torch.tensor(steps[n]), "exp_avg": moments[n + "::exp_avg"].to(dev),
                          "exp_avg_sq": moments[n + "::exp_avg_sq"].to(dev)}
    opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})
