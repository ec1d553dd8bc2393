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

- ``"emb-dot"``: the [EMB]-CE of Yadav et al. (2022, §2.6): encode the pair
  with the tokenizer's own template (BERT's ``[CLS] query [SEP] item [SEP]``,
  RoBERTa's ``<s> query </s></s> item </s>``, ...) in one forward pass, take
  one contextualised vector for the query and one for the item, score = their
  dot product.
- ``"emb-cos"``: the same two vectors, score = their cosine.
- ``"cls"``: a sequence-classification checkpoint's single logit (the usual
  reranker format).

How the emb heads take the two vectors (``pooling=``):

- ``"mean"`` (default): mean-pool the final hidden states of the query's and
  of the item's content tokens (found with ``sequence_ids()``: special tokens
  and padding excluded). Works with every tokenizer and needs no token the
  model has not seen in pre-training.
- ``"markers"``: ANNCUR's [EMB] tokens. One marker is put at the start of the
  query segment and one at the start of the item segment (BERT:
  ``[CLS] [unused0] query [SEP] [unused1] item [SEP]``) and the two vectors are
  the final hidden states at those two positions. The markers are BERT's
  ``[unused0]`` / ``[unused1]`` vocabulary entries, so the vocabulary and the
  embedding table stay as they are; their ids are inserted after tokenisation
  (the text is never searched for them) and after truncation, so a marker is
  always one token and is never cut. A vocabulary without them is refused.
  An untrained model has never seen these tokens: markers are meant for a CE
  trained with them (:func:`axn_fast.encoders.training.train_cross_encoder`),
  where the layers above learn to gather the pair into the two positions.

Both poolings are the same :func:`pair_scores`: the masks of
:func:`encode_pairs` select the content tokens for "mean" and the single
marker position for "markers" (the mean over one position is that vector).

:func:`encode_pairs` (tokenisation) and :func:`pair_scores` (forward pass to
scores) are shared with :mod:`axn_fast.encoders.training`, so a CE scores the
same pairs identically while it is trained and once it is loaded.
"""
from __future__ import annotations

import hashlib
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from axn_fast._progress import progress
from axn_fast._validation import as_ids, check_int
from axn_fast.encoders import _hf
from axn_fast.encoders.boundary import check_scores
from axn_fast.encoders.delta import apply_delta, read_delta

HEADS = ("emb-dot", "emb-cos", "cls")
POOLINGS = ("mean", "markers")
#: The query's and the item's [EMB] marker tokens of ``pooling="markers"`` (BERT vocabularies).
MARKER_TOKENS = ("[unused0]", "[unused1]")


class PairScoreCache:
    """Exact CE scores already paid for, keyed by (CE namespace, query, item id).

    One cache may be shared by several CEs: each CE stores its pairs under its
    own namespace (model, head, precision and the item list), so different CEs
    never read each other's scores. ``max_queries`` bounds memory by keeping
    only the most recently used queries (``None``: unbounded). Thread-safe.
    """

    def __init__(self, max_queries: Optional[int] = None) -> None:
        if max_queries is not None:
            max_queries = check_int(max_queries, "max_queries", minimum=1)
        self.max_queries = max_queries
        self._rows: "OrderedDict[Tuple[Any, str], Dict[int, float]]" = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Number of cached pairs."""
        with self._lock:
            return sum(len(row) for row in self._rows.values())

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def lookup(self, namespace: Any, query: str, ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
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

    def store(self, namespace: Any, query: str, ids: np.ndarray, scores: np.ndarray) -> None:
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


def _check_text(text: Any, name: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{name} must be a non-empty text, got {text!r}")
    return text


def _check_items(items: Any) -> List[str]:
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

    def __init__(self, items: Sequence[str], *, cache: Optional[PairScoreCache] = None) -> None:
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
    def _namespace(self) -> Any:  # pragma: no cover - subclasses override
        raise NotImplementedError

    def _score_batches(self, query: str, ids: np.ndarray) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        raise NotImplementedError  # pragma: no cover

    def reset_counts(self) -> None:
        with self._count_lock:
            self.n_calls = 0
            self.n_cached = 0

    def __call__(self, query: str, ids: Any) -> np.ndarray:
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
                batch_scores = check_scores(batch_scores, batch_ids.shape[0], ids=batch_ids)
                self.cache.store(ns, query, batch_ids, batch_scores)  # kept even if a later batch fails
                with self._count_lock:
                    self.n_calls += int(batch_ids.shape[0])
                fresh_ids.append(batch_ids)
                fresh_scores.append(batch_scores)
            all_ids, all_scores = np.concatenate(fresh_ids), np.concatenate(fresh_scores)
            order = np.argsort(all_ids)
            pos = np.searchsorted(all_ids[order], ids[~found])
            scores[~found] = all_scores[order][pos]
        with self._count_lock:
            self.n_cached += int(ids.shape[0] - todo.size)
        return scores

    def _score_pairs(self, queries: List[str], pair_query: np.ndarray, pair_ids: np.ndarray
                     ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """Pairs of many queries: yields ``(positions, scores)`` per model batch, ``positions`` into
        ``pair_query`` (query numbers into ``queries``) / ``pair_ids``. Default: per query."""
        for j in np.unique(pair_query).tolist():
            pos = np.flatnonzero(pair_query == j)
            for batch_ids, batch_scores in self._score_batches(queries[j], pair_ids[pos]):
                at = np.searchsorted(pair_ids[pos], batch_ids)  # pair_ids are sorted within a query
                yield pos[at], batch_scores

    def score_batch(self, queries: Sequence[str], ids_per_query: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Scores of many queries at once: ``out[j]`` is ``self(queries[j], ids_per_query[j])``.

        Every pair not in the cache (each (query text, item) pair once, even when
        a text repeats) goes into one pool that is scored in model batches mixing
        the queries (for :class:`HFCrossEncoder`, sorted by length so each batch
        pads little), so a GPU sees full batches even when each query has few pairs.
        Scores match a per-query call up to floating-point noise (a pair's padding
        depends on its batch). Each batch is cached as soon as it is scored.
        """
        if len(queries) != len(ids_per_query):
            raise ValueError(f"queries and ids_per_query must have the same length, "
                             f"got {len(queries)} and {len(ids_per_query)}")
        texts = [_check_text(q, f"queries[{j}]") for j, q in enumerate(queries)]
        lists = [as_ids(ids, f"ids_per_query[{j}]", self.n_items) for j, ids in enumerate(ids_per_query)]
        ns = self._namespace
        uniq = list(dict.fromkeys(texts))
        text_no = {t: u for u, t in enumerate(uniq)}
        out, found, keys = [], [], []
        for t, ids in zip(texts, lists):
            scores, hit = self.cache.lookup(ns, t, ids)
            out.append(scores)
            found.append(hit)
            keys.append(text_no[t] * self.n_items + ids[~hit])
        todo = np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
        fresh = np.zeros(todo.shape[0], dtype=np.float32)
        if todo.size:
            pair_query, pair_ids = todo // self.n_items, todo % self.n_items
            for pos, batch_scores in self._score_pairs(uniq, pair_query, pair_ids):
                batch_scores = check_scores(batch_scores, pos.shape[0], ids=pair_ids[pos])
                for u in np.unique(pair_query[pos]).tolist():  # kept even if a later batch fails
                    mine = pos[pair_query[pos] == u]
                    self.cache.store(ns, uniq[u], pair_ids[mine], batch_scores[pair_query[pos] == u])
                fresh[pos] = batch_scores
                with self._count_lock:
                    self.n_calls += int(pos.shape[0])
        for j, key in enumerate(keys):
            out[j][~found[j]] = fresh[np.searchsorted(todo, key)]
        with self._count_lock:
            self.n_cached += int(sum(len(ids) for ids in lists) - todo.size)
        return out


def _special_pair_tokens(tokenizer: Any) -> int:
    n = int(tokenizer.num_special_tokens_to_add(pair=True))
    return n


def check_pooling(pooling: Any, head: Optional[str] = None) -> str:
    """``pooling`` checked against :data:`POOLINGS` (and the head: "cls" scores its own logit, "mean" only)."""
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if head == "cls" and pooling != "mean":
        raise ValueError(f"pooling={pooling!r} is for the emb heads; head='cls' scores the classifier logit "
                         "(leave pooling='mean')")
    return pooling


def marker_ids(tokenizer: Any) -> Tuple[int, int]:
    """Token ids of the query and item [EMB] markers (:data:`MARKER_TOKENS`): BERT's ``[unused0]``, ``[unused1]``.

    Raises ValueError when the tokenizer's vocabulary lacks them (e.g. RoBERTa, DeBERTa).
    """
    ids = []
    for t in MARKER_TOKENS:
        i = tokenizer.convert_tokens_to_ids(t)
        if not isinstance(i, int) or i == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(i) != t:
            raise ValueError(f"pooling='markers' needs a vocabulary holding the marker tokens {MARKER_TOKENS} "
                             f"(BERT's unused entries); this tokenizer ({type(tokenizer).__name__}) has no {t!r}. "
                             "Use pooling='mean'")
        ids.append(int(i))
    return ids[0], ids[1]


def _pair_overhead(tokenizer: Any, pooling: str) -> int:
    """Tokens a pair spends on other than its content: the template's special tokens (+ the two markers)."""
    return _special_pair_tokens(tokenizer) + (len(MARKER_TOKENS) if pooling == "markers" else 0)


def kept_lengths(lq: np.ndarray, li: np.ndarray, room: int) -> Tuple[np.ndarray, np.ndarray]:
    """Content tokens kept per pair, (query, item): the item is cut first, but the
    query keeps at most half of ``room`` when the item needs it.

    lq, li: (n,) token counts of the query and item texts alone; room: content
    tokens a pair may hold (max_length minus the template's special tokens).
    """
    lq = np.asarray(lq, dtype=np.int64)
    li = np.asarray(li, dtype=np.int64)
    li_keep = np.minimum(li, np.maximum(room - lq, np.minimum(li, room // 2)))
    lq_keep = np.minimum(lq, room - li_keep)
    return lq_keep, li_keep


# models whose position ids start after the padding index (positions 0..padding_idx are never used)
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text")


def _max_positions(config: Any) -> Optional[int]:
    """How many tokens a sequence may hold under ``config``'s learned positions, or None when unbounded."""
    n = getattr(config, "max_position_embeddings", None)
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return None
    if getattr(config, "position_biased_input", True) is False:  # DeBERTa: relative positions only
        return None
    if getattr(config, "model_type", None) in _OFFSET_POSITIONS:
        n -= int(getattr(config, "pad_token_id", None) or 0) + 1
    return n


def encode_pairs(tokenizer: Any, queries: Sequence[str], items: Sequence[str], max_length: int,
                 item_lengths: Optional[np.ndarray] = None, *, pooling: str = "mean") -> Dict[str, np.ndarray]:
    """Tokenise (query, item) pairs with the tokenizer's own pair template.

    queries, items: (B,) texts (pair b is ``(queries[b], items[b])``); max_length:
    tokens per pair including the template's special tokens (and the markers);
    item_lengths: optional (B,) token counts of the items alone (computed when
    absent); pooling: "mean" | "markers" (see the module docstring).
    Truncation follows :func:`kept_lengths`. Returns (B, L) int64 arrays
    ``input_ids``, ``attention_mask`` (and whatever else the tokenizer returns,
    e.g. ``token_type_ids``) plus float32 ``query_mask`` / ``item_mask``: for
    "mean" they mark the query's and the item's content tokens (found with
    ``sequence_ids()``: special tokens and padding excluded); for "markers"
    each marks one position, the query's / item's marker, inserted just before
    the segment's first token (with the segment's token type) once the
    content is truncated to the room left by the two markers.
    """
    if len(queries) != len(items):
        raise ValueError(f"queries and items must have the same length, got {len(queries)} and {len(items)}")
    pooling = check_pooling(pooling)
    markers = marker_ids(tokenizer) if pooling == "markers" else None
    n_markers = 0 if markers is None else len(markers)
    room = max_length - _pair_overhead(tokenizer, pooling)
    if room < 2:
        raise ValueError(f"max_length={max_length} leaves no room for content tokens")
    uniq = list(dict.fromkeys(queries))
    qenc = tokenizer(uniq, add_special_tokens=False, return_offsets_mapping=True)
    q_len = {q: len(ids) for q, ids in zip(uniq, qenc["input_ids"])}
    q_off = dict(zip(uniq, qenc["offset_mapping"]))
    for q in uniq:
        if q_len[q] == 0:
            raise ValueError(f"query {q!r} has no tokens under this tokenizer")
    if item_lengths is None:
        item_lengths = np.array([len(t) for t in tokenizer(list(items), add_special_tokens=False)["input_ids"]],
                                dtype=np.int64)
    lq = np.array([q_len[q] for q in queries], dtype=np.int64)
    lq_keep, _ = kept_lengths(lq, item_lengths, room)
    # a query longer than its share is cut at a token boundary of its own text
    cut = [q if k >= n else q[:int(q_off[q][k - 1][1])] for q, k, n in zip(queries, lq_keep.tolist(), lq.tolist())]
    enc = tokenizer(cut, list(items), truncation="only_second", max_length=max_length - n_markers, padding=True,
                    return_tensors="np")
    if markers is not None:
        return _insert_markers(enc, markers)
    B, L = enc["input_ids"].shape
    qmask = np.zeros((B, L), dtype=np.float32)
    imask = np.zeros((B, L), dtype=np.float32)
    for b in range(B):
        seq = enc.sequence_ids(b)
        for j, s in enumerate(seq):
            if s == 0:
                qmask[b, j] = 1.0
            elif s == 1:
                imask[b, j] = 1.0
    out = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()
           if k in ("input_ids", "attention_mask", "token_type_ids")}
    if not imask.sum(1).all():
        raise ValueError("a pair has no item tokens left after truncation; raise max_length")
    out["query_mask"] = qmask
    out["item_mask"] = imask
    return out


def _insert_markers(enc: Any, markers: Tuple[int, int]) -> Dict[str, np.ndarray]:
    """``encode_pairs``'s output for pooling="markers": ``markers`` inserted before the first query and the
    first item token of every pair of the (already truncated and padded) encoding ``enc``."""
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    B, L = ids.shape
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    out = {k: np.zeros((B, L + 2), dtype=np.int64) for k in keys}
    qmask = np.zeros((B, L + 2), dtype=np.float32)
    imask = np.zeros((B, L + 2), dtype=np.float32)
    for b in range(B):
        seq = enc.sequence_ids(b)
        if 1 not in seq:
            raise ValueError("a pair has no item tokens left after truncation; raise max_length")
        q0, i0 = seq.index(0), seq.index(1)
        at = [q0, i0]  # positions in the original row; the item's marker lands at i0 + 1
        for k in keys:
            row = np.asarray(enc[k][b], dtype=np.int64)
            fill = list(markers) if k == "input_ids" else [1, 1] if k == "attention_mask" else [row[q0], row[i0]]
            out[k][b] = np.insert(row, at, fill)
        qmask[b, q0] = 1.0
        imask[b, i0 + 1] = 1.0
    out["query_mask"] = qmask
    out["item_mask"] = imask
    return out


def pair_scores(model: Any, head: str, batch: Dict[str, Any]) -> Any:
    """The one forward pass from a tokenised pair batch to scores, for inference and training alike.

    model: a transformers encoder (``AutoModel``) for the ``emb-*`` heads, a
    sequence-classification model with one logit for ``"cls"``; batch: torch
    tensors as returned by :func:`encode_pairs` (moved to the model's device).
    The emb heads average the final hidden states under ``query_mask`` /
    ``item_mask``: the content tokens for pooling="mean", the one marker
    position (so that position's vector) for "markers".
    Returns a (B,) float32 torch tensor; gradients flow when called outside
    ``torch.inference_mode()``.
    """
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    out = model(**inputs)
    if head == "cls":
        return out.logits.float()[:, 0]
    h = out.last_hidden_state.float()
    qm, im = batch["query_mask"].to(h.dtype), batch["item_mask"].to(h.dtype)
    eq = (qm.unsqueeze(-1) * h).sum(1) / qm.sum(1, keepdim=True)
    ei = (im.unsqueeze(-1) * h).sum(1) / im.sum(1, keepdim=True)
    s = (eq * ei).sum(-1)
    if head == "emb-cos":
        s = s / (eq.norm(dim=-1) * ei.norm(dim=-1)).clamp_min(1e-12)
    return s


def model_inputs(model: Any, batch: Dict[str, np.ndarray], device: Any, torch: Any) -> Dict[str, Any]:
    """numpy pair batch -> torch tensors on ``device``, dropping token types the model cannot take."""
    out = {}
    for k, v in batch.items():
        if k == "token_type_ids" and not _hf.uses_token_types(model):
            continue
        out[k] = torch.from_numpy(v).to(device)
    return out


def load_pair_model(model: Any, head: str, transformers: Any, dtype: Any, *,
                    warn: bool = True) -> Tuple[Any, Any, str]:
    """The transformers model (+ tokenizer) a head needs, from a path, a hub id or (model, tokenizer).

    Returns ``(model, tokenizer, source)``, ``source`` a string naming where it came from.
    """
    if isinstance(model, tuple):
        if len(model) != 2:
            raise TypeError("model must be a path, a hub id or a (model, tokenizer) pair")
        mdl, tok = model
        _hf.check_loaded(mdl, tok)
        if head == "cls":
            if not hasattr(mdl, "classifier") and "ForSequenceClassification" not in type(mdl).__name__:
                raise ValueError("head='cls' needs a sequence-classification model with one logit, got "
                                 f"{type(mdl).__name__}")
            if int(getattr(mdl.config, "num_labels", 1)) != 1:
                raise ValueError(f"head='cls' needs a model with one output logit, this one has "
                                 f"{mdl.config.num_labels}")
        return mdl, tok, f"{type(mdl).__name__}:{getattr(mdl.config, '_name_or_path', '') or 'in-memory'}"
    src = _hf.resolve_source(model)
    tok = _hf.load_tokenizer(src, transformers)
    local = _hf.is_local(src)
    if head == "cls":
        config = transformers.AutoConfig.from_pretrained(str(src), local_files_only=local)
        trained = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
        kwargs = {} if trained else {"num_labels": 1}
        mdl = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(src), local_files_only=local, use_safetensors=True, **_hf.dtype_kwarg(transformers, dtype), **kwargs)
        if mdl.config.num_labels != 1:
            raise ValueError(f"head='cls' needs a checkpoint with one output logit, {str(src)!r} has "
                             f"{mdl.config.num_labels}")
        if not trained and warn:
            warnings.warn(f"{str(src)!r} is not a sequence-classification checkpoint: the 'cls' head "
                          "is randomly initialised and its scores are meaningless", UserWarning, stacklevel=3)
    else:
        mdl = transformers.AutoModel.from_pretrained(
            str(src), local_files_only=local, use_safetensors=True, **_hf.dtype_kwarg(transformers, dtype))
    _hf.check_vocab(tok, mdl, src)
    return mdl, tok, str(src)


class HFCrossEncoder(CachedCrossEncoder):
    """A transformers encoder scoring (query, item) pairs.

    model: a local checkpoint directory (config.json + safetensors weights +
    tokenizer), a hub id (only where a hub is reachable; local directories are
    never downloaded to), or an already-loaded ``(model, tokenizer)`` pair
    (``AutoModel`` for the ``emb-*`` heads, a one-logit sequence-classification
    model for ``"cls"``); items: the item texts (ids index this list); head:
    "emb-dot" | "emb-cos" | "cls" (see the module docstring); pooling: how
    the emb heads take the query and item vectors, "mean" (default) | "markers"
    (ANNCUR's [EMB] tokens; BERT vocabularies only; see the module
    docstring); device: "auto"
    (CUDA when present) | "cpu" | "cuda[:N]"; dtype: None (bf16/fp16 on GPU,
    fp32 on CPU) or "float32" | "float16" | "bfloat16"; batch_size: pairs per
    forward pass; max_length: tokens per pair including the template's special
    tokens (the markers included).

    Pairs are built with the tokenizer's own pair template (BERT's ``[CLS] q
    [SEP] i [SEP]``, RoBERTa's ``<s> q </s></s> i </s>``, ...) and the query's
    and item's tokens are found with ``sequence_ids()``. When a pair is too long
    the item is cut first, but the query keeps at most half the room when the
    item needs it. Pairs of one call are sorted by length so each batch pads
    little. :meth:`from_trained` loads a CE trained by
    :func:`axn_fast.encoders.training.train_cross_encoder`.
    """

    def __init__(self, model: Any, items: Sequence[str], *, head: str = "emb-dot", pooling: str = "mean",
                 device: Any = "auto", dtype: Any = None,
                 batch_size: int = 64, max_length: int = 128, show_progress_bar: Optional[bool] = None,
                 cache: Optional[PairScoreCache] = None, _name: Optional[str] = None) -> None:
        super().__init__(items, cache=cache)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.head = head
        self.pooling = check_pooling(pooling, head)
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.max_length = check_int(max_length, "max_length", minimum=8)
        self.show_progress_bar = show_progress_bar
        torch, transformers = _hf.import_torch_transformers("HFCrossEncoder")
        self._torch = torch
        self.device = _hf.resolve_device(device, torch)
        self.dtype = _hf.resolve_dtype(dtype, self.device, torch)
        mdl, tok, source = load_pair_model(model, head, transformers, self.dtype)
        if tok.pad_token_id is None:
            raise ValueError("the tokenizer has no padding token")
        if self.pooling == "markers":
            marker_ids(tok)  # refused here, before any pair is scored, when the vocabulary lacks them
        self.model_path = Path(source) if not isinstance(model, tuple) else None
        self._source = _name or source
        self.tokenizer = tok
        self.model = mdl.to(device=self.device, dtype=self.dtype).eval()
        self._model_id = id(self.model) if isinstance(model, tuple) else None  # a loaded model has no path
        positions = _max_positions(getattr(mdl, "config", None))
        if positions is not None and self.max_length > positions:
            raise ValueError(f"max_length={self.max_length} exceeds the {positions} token positions the model "
                             f"has (its config's max_position_embeddings="
                             f"{mdl.config.max_position_embeddings}); pass max_length <= {positions}")
        self._room = self.max_length - _pair_overhead(tok, self.pooling)
        if self._room < 2:
            raise ValueError(f"max_length={self.max_length} leaves no room for content tokens")
        # item token counts are computed once; they decide the truncation and the batching order
        enc = tok(self.items, add_special_tokens=False)["input_ids"]
        for i, t in enumerate(enc):
            if not t:
                raise ValueError(f"items[{i}] ({self.items[i]!r}) has no tokens under this tokenizer")
        self._item_len = np.array([len(t) for t in enc], dtype=np.int64)

    @classmethod
    def from_trained(cls, path: Union[str, Path], items: Sequence[str], *, base: Any = None, head: Optional[str] = None,
                     pooling: Optional[str] = None, device: Any = "auto", dtype: Any = None, batch_size: int = 64,
                     max_length: Optional[int] = None, show_progress_bar: Optional[bool] = None,
                     cache: Optional[PairScoreCache] = None) -> "HFCrossEncoder":
        """A CE trained by :func:`~axn_fast.encoders.training.train_cross_encoder` (saved as a delta).

        path: the directory holding ``delta.safetensors`` and ``manifest.json``;
        base: the base checkpoint (path, hub id or loaded ``(model, tokenizer)``;
        default: the path recorded in the manifest). The base's weights must
        hash to the manifest's SHA-256, else ValueError; the trained
        parameters then replace the base's. max_length: default the one it
        was trained with. head: default the trained head; "emb-dot" and "emb-cos" share their
        parameters, so one may score a CE trained with the other. pooling:
        default (and only accepted value) the one it was trained with: the
        manifest's ``pooling``, "mean" for deltas that predate the setting.
        """
        torch, transformers = _hf.import_torch_transformers("HFCrossEncoder.from_trained")
        manifest, delta = read_delta(path)
        trained_head = manifest["head"]
        if head is None:
            head = trained_head
        elif head != trained_head and {head, trained_head} != {"emb-dot", "emb-cos"}:
            raise ValueError(f"{str(path)!r} was trained with head {trained_head!r}; it can score with "
                             f"{sorted({trained_head} | ({'emb-dot', 'emb-cos'} if trained_head != 'cls' else set()))}, "
                             f"not head={head!r}")
        trained_pooling = manifest.get("pooling", "mean")
        if pooling is not None and pooling != trained_pooling:
            raise ValueError(f"{str(path)!r} was trained with pooling {trained_pooling!r}; it cannot score with "
                             f"pooling={pooling!r}")
        if base is None:
            base = manifest["base"].get("path")
            if not base:
                raise ValueError(f"{str(path)!r} records no base path; pass base=")
        mdl, tok, _ = load_pair_model(base, head, transformers, torch.float32, warn=False)
        apply_delta(mdl, manifest, delta)
        return cls((mdl, tok), items, head=head, pooling=trained_pooling, device=device, dtype=dtype, batch_size=batch_size,
                   max_length=int(manifest.get("max_length", 128)) if max_length is None else max_length,
                   show_progress_bar=show_progress_bar, cache=cache,
                   _name=f"{manifest['base'].get('name', 'model')}+{manifest.get('name', Path(path).name)}")

    @property
    def config(self) -> Dict[str, Any]:
        """What determines the scores (recorded next to stored score matrices)."""
        if self.model_path is not None and self._source == str(self.model_path):
            p = self.model_path
            name = p.name if p.name != "model" else p.parent.name
        else:
            name = self._source
        cfg: Dict[str, Any] = {"model": name, "head": self.head, "max_length": self.max_length,
                               "dtype": str(self.dtype).replace("torch.", ""),
                               "truncation": "item first; query keeps at most half when the item needs it"}
        if self.pooling != "mean":  # absent for "mean", so configs recorded before the setting still match
            cfg["pooling"] = self.pooling
        return cfg

    @property
    def _namespace(self) -> Any:
        return ("hf", self._source, self._model_id, self.head, self.pooling, self.max_length, str(self.dtype),
                self._items_digest)

    def _batch_tensors(self, query: str, ids: np.ndarray) -> Dict[str, np.ndarray]:
        return encode_pairs(self.tokenizer, [query] * ids.shape[0], [self.items[i] for i in ids.tolist()],
                            self.max_length, item_lengths=self._item_len[ids], pooling=self.pooling)

    def _forward(self, batch: Dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            return pair_scores(self.model, self.head, model_inputs(self.model, batch, self.device, torch)).cpu().numpy()

    def _score_pairs(self, queries: List[str], pair_query: np.ndarray, pair_ids: np.ndarray
                     ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        q_len = np.array([len(t) for t in self.tokenizer(queries, add_special_tokens=False)["input_ids"]],
                         dtype=np.int64)
        lq, li = kept_lengths(q_len[pair_query], self._item_len[pair_ids], self._room)
        order = np.argsort(-(lq + li), kind="stable")  # longest first: similar lengths share a batch
        starts = range(0, order.shape[0], self.batch_size)
        with progress(total=order.shape[0], desc="CE pairs", unit="pair",
                      show=self.show_progress_bar if len(starts) > 1 else False) as bar:
            for s in starts:
                pos = order[s:s + self.batch_size]
                batch = encode_pairs(self.tokenizer, [queries[j] for j in pair_query[pos].tolist()],
                                     [self.items[i] for i in pair_ids[pos].tolist()], self.max_length,
                                     item_lengths=self._item_len[pair_ids[pos]], pooling=self.pooling)
                yield pos, self._forward(batch)
                bar.update(pos.shape[0])

    def _score_batches(self, query: str, ids: np.ndarray) -> Iterator[Tuple[np.ndarray, Any]]:
        order = np.argsort(-self._item_len[ids], kind="stable")  # longest first: similar lengths share a batch
        ids = ids[order]
        starts = range(0, ids.shape[0], self.batch_size)
        with progress(total=ids.shape[0], desc="CE pairs", unit="pair",
                      show=self.show_progress_bar if len(starts) > 1 else False) as bar:
            for s in starts:
                b = ids[s:s + self.batch_size]
                yield b, self._forward(self._batch_tensors(query, b))
                bar.update(b.shape[0])


class SentenceTransformersCE(CachedCrossEncoder):
    """Adapter: a ``sentence_transformers.CrossEncoder`` as a cached ``ce(query, ids)``.

    cross_encoder: a loaded ``sentence_transformers.CrossEncoder`` with one
    output per pair; items: the item texts; batch_size: pairs per ``predict``
    call (each call's scores are cached as soon as it returns).

    Scores are the model's raw logits: ``predict`` is called with an identity
    activation (``activation_fn`` since sentence-transformers 3/4,
    ``activation_fct`` before), not the Sigmoid it applies by default to
    one-label models, so AXN fits the same numbers ``HFCrossEncoder(head="cls")``
    returns for the checkpoint (least squares on squashed scores is a
    different, worse problem).
    """

    def __init__(self, cross_encoder: Any, items: Sequence[str], *, batch_size: int = 32,
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
        import inspect

        import torch

        params = inspect.signature(cross_encoder.predict).parameters
        if "activation_fn" in params:
            self._raw = {"activation_fn": torch.nn.Identity()}
        elif "activation_fct" in params:
            self._raw = {"activation_fct": torch.nn.Identity()}
        else:
            raise ImportError("this sentence-transformers version's CrossEncoder.predict takes no activation "
                              "argument, so raw logits cannot be asked for; use sentence-transformers >= 2.2")

    @property
    def _namespace(self) -> Any:
        return ("sentence-transformers", id(self.cross_encoder), self._items_digest)

    def _score_pairs(self, queries: List[str], pair_query: np.ndarray, pair_ids: np.ndarray
                     ) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        for s in range(0, pair_ids.shape[0], self.batch_size):
            pos = np.arange(s, min(s + self.batch_size, pair_ids.shape[0]))
            pairs = [(queries[j], self.items[i]) for j, i in zip(pair_query[pos].tolist(), pair_ids[pos].tolist())]
            yield pos, self.cross_encoder.predict(pairs, batch_size=self.batch_size, show_progress_bar=False,
                                                  convert_to_numpy=True, **self._raw)

    def _score_batches(self, query: str, ids: np.ndarray) -> Iterator[Tuple[np.ndarray, Any]]:
        for s in range(0, ids.shape[0], self.batch_size):
            b = ids[s:s + self.batch_size]
            pairs = [(query, self.items[i]) for i in b.tolist()]
            # validated (one score per pair: num_labels=1) by CachedCrossEncoder through check_scores
            yield b, self.cross_encoder.predict(pairs, batch_size=self.batch_size, show_progress_bar=False,
                                                convert_to_numpy=True, **self._raw)
