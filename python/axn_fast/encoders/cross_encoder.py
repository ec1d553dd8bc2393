"""Cross-encoders (CE) usable directly as the ``ce`` of :meth:`Index.adaptive_search`.

Every CE here is called as ``ce(query, ids) -> (len(ids),) float32``: ``query``
is the query text, ``ids`` are row numbers into the item texts given once at
construction. CE scores are expensive, so every CE goes through a
:class:`PairScoreCache`: a (query, item) pair is never scored twice, and
``n_calls`` (pairs the model scored) / ``n_cached`` (pairs answered from the
cache) say what was paid for. Pairs are scored batch by batch and each batch
is stored as soon as it is done, so a call that fails half-way keeps every
finished batch and the cache never holds a score that was not computed.

:class:`HFCrossEncoder` heads (``head=``):

- ``"emb-dot"``: the [EMB]-CE of Yadav et al. (2022, §2.6): encode
  ``[CLS] query [SEP] item [SEP]`` in one forward pass, mean-pool the
  contextualised vectors of the query tokens and of the item tokens separately
  (special tokens and padding excluded), score = their dot product.
- ``"emb-cos"``: the same two pooled vectors, score = their cosine.
- ``"cls"``: a sequence-classification checkpoint's single logit (the usual
  reranker format).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from axn_fast.encoders import _hf
from axn_fast._validation import as_ids, check_int
from axn_fast.errors import CrossEncoderError

HEADS = ("emb-dot", "emb-cos", "cls")


class PairScoreCache:
    """Exact CE scores already paid for, keyed by (CE namespace, query, item id).

    One cache may be shared by several CEs: each CE stores its pairs under its
    own namespace (model, head, precision and the item list), so different CEs
    never read each other's scores. ``max_queries`` bounds memory by keeping
    only the most recently used queries (``None``: unbounded). Thread-safe.
    """

    def __init__(self, max_queries: Optional[int] = None):
        if max_queries is not None:
            max_queries = check_int(max_queries, "max_queries", minimum=1)
        self.max_queries = max_queries
        self._rows: "OrderedDict[tuple, Dict[int, float]]" = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Number of cached pairs."""
        with self._lock:
            return sum(len(row) for row in self._rows.values())

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def lookup(self, namespace, query: str, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, found)``: (n,) float32 (NaN where absent) and (n,) bool."""
        scores = np.full(ids.shape[0], np.nan, dtype=np.float32)
        found = np.zeros(ids.shape[0], dtype=bool)
        with self._lock:
            row = self._rows.get((namespace, query))
            if row:
                self._rows.move_to_end((namespace, query))
                for j, i in enumerate(ids.tolist()):
                    s = row.get(i)
                    if s is not None:
                        scores[j] = s
                        found[j] = True
        return scores, found

    def store(self, namespace, query: str, ids: np.ndarray, scores: np.ndarray) -> None:
        key = (namespace, query)
        pairs = list(zip(ids.tolist(), np.asarray(scores, dtype=np.float32).tolist()))
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = {}
            else:
                self._rows.move_to_end(key)
            row.update(pairs)
            if self.max_queries is not None:
                while len(self._rows) > self.max_queries:
                    self._rows.popitem(last=False)


def _check_text(text, name: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{name} must be a non-empty text, got {text!r}")
    return text


def _check_items(items) -> List[str]:
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(f"items must be a sequence of item texts (list of str), got {type(items).__name__}")
    if len(items) == 0:
        raise ValueError("items must hold at least one item text")
    return [_check_text(t, f"items[{i}]") for i, t in enumerate(items)]


class CachedCrossEncoder:
    """Base class: argument checks, the pair cache and call counting.

    Subclasses implement ``_score_batches(query, ids)``: a generator yielding
    ``(batch_ids, batch_scores)`` pairs, one per model batch, in any order.
    """

    def __init__(self, items, *, cache: Optional[PairScoreCache] = None):
        self.items = _check_items(items)
        if cache is not None and not isinstance(cache, PairScoreCache):
            raise TypeError(f"cache must be a PairScoreCache or None, got {type(cache).__name__}")
        self.cache = PairScoreCache() if cache is None else cache
        self.n_calls = 0   # query-item pairs scored by the model (paid for)
        self.n_cached = 0  # pairs answered from the cache (free)
        self._count_lock = threading.Lock()
        digest = hashlib.sha1()
        for t in self.items:
            digest.update(t.encode("utf-8"))
            digest.update(b"\0")
        self._items_digest = digest.hexdigest()

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def _namespace(self):  # pragma: no cover - subclasses override
        raise NotImplementedError

    def _score_batches(self, query: str, ids: np.ndarray) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError  # pragma: no cover

    def reset_counts(self) -> None:
        with self._count_lock:
            self.n_calls = 0
            self.n_cached = 0

    def __call__(self, query, ids) -> np.ndarray:
        """Exact scores of ``query`` against items ``ids``: (len(ids),) float32.

        query: the query text (str); ids: 1-D int item ids in [0, n_items).
        Pairs already in the cache are not scored again.
        """
        query = _check_text(query, "query")
        ids = as_ids(ids, "ids", self.n_items)
        ns = self._namespace
        scores, found = self.cache.lookup(ns, query, ids)
        todo = np.unique(ids[~found])
        if todo.size:
            fresh_ids, fresh_scores = [], []
            for batch_ids, batch_scores in self._score_batches(query, todo):
                batch_scores = np.asarray(batch_scores, dtype=np.float32).reshape(-1)
                if batch_scores.shape[0] != batch_ids.shape[0]:
                    raise CrossEncoderError(
                        f"the model returned {batch_scores.shape[0]} scores for {batch_ids.shape[0]} pairs"
                    )
                if not np.isfinite(batch_scores).all():
                    raise CrossEncoderError("the model returned a non-finite score (NaN or inf)")
                self.cache.store(ns, query, batch_ids, batch_scores)  # kept even if a later batch fails
                with self._count_lock:
                    self.n_calls += int(batch_ids.shape[0])
                fresh_ids.append(batch_ids)
                fresh_scores.append(batch_scores)
            fresh_ids, fresh_scores = np.concatenate(fresh_ids), np.concatenate(fresh_scores)
            order = np.argsort(fresh_ids)
            pos = np.searchsorted(fresh_ids[order], ids[~found])
            scores[~found] = fresh_scores[order][pos]
        with self._count_lock:
            self.n_cached += int(ids.shape[0] - todo.size)
        return scores


class HFCrossEncoder(CachedCrossEncoder):
    """A transformers encoder from a local directory, scoring (query, item) pairs.

    model_path: directory with config.json, safetensors weights and a BERT-style
    tokenizer (with [CLS]/[SEP]); items: the item texts (ids index this list);
    head: "emb-dot" | "emb-cos" | "cls" (see the module docstring); device:
    "auto" (CUDA when present) | "cpu" | "cuda[:N]"; dtype: None (bf16/fp16 on
    GPU, fp32 on CPU) or "float32" | "float16" | "bfloat16"; batch_size: pairs
    per forward pass; max_length: tokens per pair including the 3 special
    tokens. When a pair is too long the item is cut first, but the query keeps
    at most half the room when the item needs it. Pairs of one call are sorted
    by length so each batch pads little.
    """

    def __init__(self, model_path, items, *, head: str = "emb-dot", device="auto", dtype=None,
                 batch_size: int = 64, max_length: int = 128, show_progress_bar=None,
                 cache: Optional[PairScoreCache] = None):
        super().__init__(items, cache=cache)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.head = head
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.max_length = check_int(max_length, "max_length", minimum=8)
        self.show_progress_bar = show_progress_bar
        path = _hf.check_model_dir(model_path)
        torch, transformers = _hf.import_torch_transformers("HFCrossEncoder")
        self._torch = torch
        self.device = _hf.resolve_device(device, torch)
        self.dtype = _hf.resolve_dtype(dtype, self.device, torch)
        self.model_path = path
        tok = _hf.load_tokenizer(path, transformers)
        if tok.cls_token_id is None or tok.sep_token_id is None:
            raise ValueError(f"the tokenizer in {str(path)!r} has no [CLS]/[SEP] tokens; "
                             "a BERT-style tokenizer is needed")
        self.tokenizer = tok
        if head == "cls":
            config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
            trained = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
            kwargs = {} if trained else {"num_labels": 1}
            model = transformers.AutoModelForSequenceClassification.from_pretrained(
                str(path), local_files_only=True, use_safetensors=True,
                **_hf.dtype_kwarg(transformers, self.dtype), **kwargs)
            if model.config.num_labels != 1:
                raise ValueError(f"head='cls' needs a checkpoint with one output logit, {str(path)!r} has "
                                 f"{model.config.num_labels}")
            if not trained:
                import warnings

                warnings.warn(f"{str(path)!r} is not a sequence-classification checkpoint: the 'cls' head "
                              "is randomly initialised and its scores are meaningless", UserWarning, stacklevel=2)
        else:
            model = transformers.AutoModel.from_pretrained(
                str(path), local_files_only=True, use_safetensors=True,
                **_hf.dtype_kwarg(transformers, self.dtype))
        _hf.check_vocab(tok, model, path)
        self.model = model.to(self.device).eval()
        self._token_types = _hf.accepts_token_type_ids(self.model)
        # items are tokenised once; a pair never holds more than max_length - 3 content tokens
        enc = tok(self.items, add_special_tokens=False, truncation=True, max_length=self.max_length)["input_ids"]
        for i, t in enumerate(enc):
            if not t:
                raise ValueError(f"items[{i}] ({self.items[i]!r}) has no tokens under this tokenizer")
        self._item_tokens = enc
        self._item_len = np.array([len(t) for t in enc], dtype=np.int64)
        self._query_tokens: "OrderedDict[str, List[int]]" = OrderedDict()

    @property
    def config(self) -> dict:
        """What determines the scores (recorded next to stored score matrices)."""
        return {"model": self.model_path.name if self.model_path.name != "model" else self.model_path.parent.name,
                "head": self.head, "max_length": self.max_length,
                "dtype": str(self.dtype).replace("torch.", ""),
                "truncation": "item first; query keeps at most half when the item needs it"}

    @property
    def _namespace(self):
        return ("hf", str(self.model_path), self.head, self.max_length, str(self.dtype), self._items_digest)

    def _query_ids(self, query: str) -> List[int]:
        toks = self._query_tokens.get(query)
        if toks is None:
            toks = self.tokenizer(query, add_special_tokens=False, truncation=True,
                                  max_length=self.max_length)["input_ids"]
            if not toks:
                raise ValueError(f"query {query!r} has no tokens under this tokenizer")
            self._query_tokens[query] = toks
            if len(self._query_tokens) > 256:
                self._query_tokens.popitem(last=False)
        return toks

    def _lengths(self, lq: int, li: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Token counts kept per pair: (query, item), item truncated first."""
        room = self.max_length - 3
        li_keep = np.minimum(li, np.maximum(room - lq, np.minimum(li, room // 2)))
        lq_keep = np.minimum(lq, room - li_keep)
        return lq_keep, li_keep

    def _batch_tensors(self, q: List[int], ids: np.ndarray):
        lq_keep, li_keep = self._lengths(len(q), self._item_len[ids])
        total = lq_keep + li_keep + 3
        B, L = ids.shape[0], int(total.max())
        input_ids = np.full((B, L), self.tokenizer.pad_token_id, dtype=np.int64)
        attn = np.zeros((B, L), dtype=np.int64)
        types = np.zeros((B, L), dtype=np.int64)
        qmask = np.zeros((B, L), dtype=np.float32)
        imask = np.zeros((B, L), dtype=np.float32)
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        for b, i in enumerate(ids.tolist()):
            a, c = int(lq_keep[b]), int(li_keep[b])
            row = [cls, *q[:a], sep, *self._item_tokens[i][:c], sep]
            input_ids[b, :len(row)] = row
            attn[b, :len(row)] = 1
            types[b, a + 2:len(row)] = 1
            qmask[b, 1:a + 1] = 1.0
            imask[b, a + 2:a + 2 + c] = 1.0
        return input_ids, attn, types, qmask, imask

    def _forward(self, input_ids, attn, types, qmask, imask) -> np.ndarray:
        torch = self._torch
        dev = self.device
        kwargs = {"input_ids": torch.from_numpy(input_ids).to(dev),
                  "attention_mask": torch.from_numpy(attn).to(dev)}
        if self._token_types:
            kwargs["token_type_ids"] = torch.from_numpy(types).to(dev)
        with torch.inference_mode():
            out = self.model(**kwargs)
            if self.head == "cls":
                return out.logits.float()[:, 0].cpu().numpy()
            h = out.last_hidden_state.float()
            qm = torch.from_numpy(qmask).to(dev)
            im = torch.from_numpy(imask).to(dev)
            eq = torch.einsum("bl,bld->bd", qm, h) / qm.sum(1, keepdim=True)
            ei = torch.einsum("bl,bld->bd", im, h) / im.sum(1, keepdim=True)
            s = (eq * ei).sum(-1)
            if self.head == "emb-cos":
                s = s / (eq.norm(dim=-1) * ei.norm(dim=-1)).clamp_min(1e-12)
            return s.cpu().numpy()

    def _score_batches(self, query, ids):
        q = self._query_ids(query)
        order = np.argsort(-self._item_len[ids], kind="stable")  # longest first: similar lengths share a batch
        ids = ids[order]
        starts = range(0, ids.shape[0], self.batch_size)
        bar = None
        if _hf.show_bar(self.show_progress_bar) and len(starts) > 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=ids.shape[0], desc="CE pairs", unit="pair", leave=False)
        try:
            for s in starts:
                b = ids[s:s + self.batch_size]
                yield b, self._forward(*self._batch_tensors(q, b))
                if bar is not None:
                    bar.update(b.shape[0])
        finally:
            if bar is not None:
                bar.close()


class SentenceTransformersCE(CachedCrossEncoder):
    """Adapter: a ``sentence_transformers.CrossEncoder`` as a cached ``ce(query, ids)``.

    cross_encoder: a loaded ``sentence_transformers.CrossEncoder`` with one
    output per pair; items: the item texts; batch_size: pairs per ``predict``
    call (each call's scores are cached as soon as it returns).
    """

    def __init__(self, cross_encoder, items, *, batch_size: int = 32,
                 cache: Optional[PairScoreCache] = None):
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:
            raise ImportError("SentenceTransformersCE needs the sentence-transformers package: "
                              "pip install sentence-transformers") from exc
        if not isinstance(cross_encoder, CrossEncoder):
            raise TypeError(f"cross_encoder must be a sentence_transformers.CrossEncoder, got "
                            f"{type(cross_encoder).__name__}")
        super().__init__(items, cache=cache)
        self.cross_encoder = cross_encoder
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)

    @property
    def _namespace(self):
        return ("sentence-transformers", id(self.cross_encoder), self._items_digest)

    def _score_batches(self, query, ids):
        for s in range(0, ids.shape[0], self.batch_size):
            b = ids[s:s + self.batch_size]
            pairs = [(query, self.items[i]) for i in b.tolist()]
            out = np.asarray(self.cross_encoder.predict(pairs, batch_size=self.batch_size,
                                                        show_progress_bar=False, convert_to_numpy=True))
            if out.ndim == 2 and out.shape[1] == 1:
                out = out[:, 0]
            if out.ndim != 1:
                raise CrossEncoderError(f"the CrossEncoder returned scores of shape {out.shape}; "
                                        "one score per pair is needed (num_labels=1)")
            yield b, out
