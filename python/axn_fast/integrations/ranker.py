"""AXN over text queries, the way retrieval libraries are used: ``Ranker.rank(query, top_k=, budget=)``.

:class:`Ranker` holds what a saved search needs (index, cross-encoder, item
texts, query embedder, normalisation) and answers text queries, one
(:meth:`Ranker.rank`, sentence-transformers' ``CrossEncoder.rank`` format:
``[{"corpus_id", "score", "text"}]``) or many in lockstep (:meth:`Ranker.rank_batch`,
:meth:`Ranker.search`: one :func:`~axn_fast.search.batch.adaptive_search_batch`
call). The HTTP service (:mod:`axn_fast.serve`) and the LangChain / LlamaIndex
retrievers are built on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import NDArray

from axn_fast.encoders.protocol import CrossEncoder
from axn_fast.indexing.bundle import IndexBundle
from axn_fast.search.batch import adaptive_search_batch
from axn_fast.search.normalization import NormalizationLike, as_normalization
from axn_fast.search.protocol import VectorIndex
from axn_fast.search.results import SearchResult

__all__ = ["Ranker", "SearchRequest", "QueryEmbedder", "Hit", "dual_encoder_embedder", "rank"]

QueryEmbedder = Callable[[List[str]], NDArray[np.float32]]
"""``embed(texts) -> (len(texts), d)`` float32 query embeddings ``u0`` (DE or MF_IND)."""

Hit = Dict[str, Any]
"""One ranked item: ``{"corpus_id": int, "score": float (exact CE score), "text": str or None}``."""


@dataclass(frozen=True)
class SearchRequest:
    """One query of a batch: its text and its k, budget (CE calls) and rounds."""

    query: str
    k: int
    budget: int
    rounds: int


def dual_encoder_embedder(bundle: IndexBundle, *, device: str = "auto") -> Optional[QueryEmbedder]:
    """The query embedder of a bundle with a dual-encoder (``de_model``): DE, then MF_IND when the bundle
    has one; None for a bundle without a DE (round 1 is then random, from the ranker's seed)."""
    if bundle.de_model is None:
        return None
    from axn_fast.encoders.dual_encoder import HFDualEncoder
    from axn_fast.encoders.models import minilm_path

    path = minilm_path() if bundle.de_model in ("minilm", "bundled-minilm") else Path(bundle.de_model)
    de_class: Any = HFDualEncoder  # not annotated by its owner yet
    de = de_class(path, device=device, show_progress_bar=False)

    def embed(texts: List[str]) -> NDArray[np.float32]:
        return np.ascontiguousarray(bundle.embed_queries(de.encode(texts, show_progress_bar=False)),
                                    dtype=np.float32)
    return embed


class Ranker:
    """AXN over ``index`` with ``ce`` for text queries, one or many at a time.

    index : the item index (any :class:`~axn_fast.search.protocol.VectorIndex`).
    ce : the cross-encoder, called with the query texts (``score_batch`` when it has it).
    items : item texts returned with the results, or None.
    embed : ``embed(texts) -> (n, d)`` u0 for round 1 and Eq. 7, or None (random round 1).
    normalization : CE score normalisation for the fits (see ``adaptive_search``).
    lam : Eq. 7's lambda (needs ``embed`` when > 0). seed : seed of a random round 1,
        the same for every query, so an answer does not depend on its batch.
    default_k, default_budget, default_rounds : used when a request leaves them out,
        capped at the number of items / the budget.
    """

    def __init__(self, index: VectorIndex, ce: CrossEncoder, *, items: Optional[Sequence[str]] = None,
                 embed: Optional[QueryEmbedder] = None, normalization: NormalizationLike = None, lam: float = 0.0,
                 seed: Optional[int] = 0, default_k: int = 10, default_budget: int = 100,
                 default_rounds: int = 5) -> None:
        if not callable(ce):
            raise TypeError(f"ce must be callable as ce(query, ids) -> scores, got {type(ce).__name__}")
        if items is not None and len(items) != index.n_items:
            raise ValueError(f"items has {len(items)} texts but the index has {index.n_items} items")
        if lam > 0 and embed is None:
            raise ValueError("lam > 0 needs a query embedder (embed=), the u0 of Eq. 7")
        for name, v in (("default_k", default_k), ("default_budget", default_budget),
                        ("default_rounds", default_rounds)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        self.index = index
        self.ce = ce
        self.items = None if items is None else list(items)
        self.embed = embed
        self.normalization = as_normalization(normalization)
        self.lam = float(lam)
        self.seed = seed
        self.default_k, self.default_budget, self.default_rounds = default_k, default_budget, default_rounds

    @classmethod
    def from_bundle(cls, bundle: IndexBundle, ce: Optional[CrossEncoder] = None, *, device: str = "auto",
                    embed: Optional[QueryEmbedder] = None, **kwargs: Any) -> "Ranker":
        """A ranker over a bundle: its index, items and normalisation; ``ce`` default: the bundle's
        (:meth:`IndexBundle.load_cross_encoder`); ``embed`` default: its dual-encoder (+ MF_IND)."""
        if ce is None:
            ce = bundle.load_cross_encoder(device=device, show_progress_bar=False)
        if embed is None:
            embed = dual_encoder_embedder(bundle, device=device)
        kwargs.setdefault("normalization", bundle.normalization)
        return cls(bundle.index, ce, items=bundle.items, embed=embed, **kwargs)

    @property
    def n_items(self) -> int:
        return int(self.index.n_items)

    def resolve(self, k: Optional[int], budget: Optional[int], rounds: Optional[int]
                ) -> Tuple[Optional[Tuple[str, str]], Tuple[int, int, int]]:
        """Fill in defaults and check a request's numbers against the index.

        Returns ``(error, (k, budget, rounds))`` where ``error`` is None or
        ``(field, message)`` naming the first bad field.
        """
        n = self.n_items
        b = min(self.default_budget, n) if budget is None else budget
        if b > n:
            return ("budget", f"budget must be <= the number of items ({n}), got {b}"), (0, 0, 0)
        r = min(self.default_rounds, b) if rounds is None else rounds
        if r > b:
            return ("rounds", f"rounds must be <= budget (one CE call per round at least), got {r} > {b}"), (0, 0, 0)
        kk = min(self.default_k, b) if k is None else k
        if kk > b:
            return ("k", f"k must be <= budget (the top-k is chosen among the items scored), got {kk} > {b}"), \
                (0, 0, 0)
        return None, (kk, b, r)

    def search(self, requests: Sequence[SearchRequest]) -> List[SearchResult]:
        """One :func:`adaptive_search_batch` call for all ``requests`` (each with its own k, budget, rounds)."""
        if not requests:
            return []
        texts = [r.query for r in requests]
        u0 = None
        if self.embed is not None:
            u0 = np.asarray(self.embed(texts), dtype=np.float32)
            if u0.shape != (len(texts), self.index.dim):
                raise ValueError(f"the query embedder returned shape {u0.shape} for {len(texts)} queries; "
                                 f"expected ({len(texts)}, {self.index.dim})")
        return adaptive_search_batch(self.index, texts, self.ce, [r.budget for r in requests],
                                     k=[r.k for r in requests], rounds=[r.rounds for r in requests], u0=u0,
                                     lam=self.lam if u0 is not None else 0.0, seed=self.seed,
                                     normalization=self.normalization)

    def answer(self, request: SearchRequest, result: SearchResult) -> Dict[str, Any]:
        """The JSON answer for one request: ids, items (texts or None), exact CE scores, CE calls, seconds."""
        ids = [int(i) for i in result.ids]
        return {"query": request.query, "ids": ids, "scores": [float(s) for s in result.scores],
                "items": None if self.items is None else [self.items[i] for i in ids],
                "ce_calls": int(result.n_ce_calls), "k": request.k, "budget": request.budget,
                "rounds": request.rounds, "seconds_ce": result.seconds_ce, "seconds_search": result.seconds_search}

    def rank_batch(self, queries: Sequence[str], *, top_k: Optional[int] = None, budget: Optional[int] = None,
                   rounds: Optional[int] = None) -> List[List[Hit]]:
        """:meth:`rank` for many queries in lockstep (one batched scan and one CE call per round)."""
        if isinstance(queries, (str, bytes)):
            raise TypeError("queries must be a list of query texts; for one query use rank()")
        error, (k, b, r) = self.resolve(top_k, budget, rounds)
        if error is not None:
            field, message = error  # the message starts with the field's name; rank() calls k top_k
            raise ValueError({"k": "top_k"}.get(field, field) + message[len(field):])
        requests = []
        for i, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                raise TypeError(f"queries[{i}] must be a non-empty str, got {q!r}")
            requests.append(SearchRequest(q, k, b, r))
        results = self.search(requests)
        return [[{"corpus_id": int(i), "score": float(s), "text": None if self.items is None else self.items[int(i)]}
                 for i, s in zip(res.ids, res.scores)] for res in results]

    def rank(self, query: str, *, top_k: Optional[int] = None, budget: Optional[int] = None,
             rounds: Optional[int] = None) -> List[Hit]:
        """The ``top_k`` items of ``query`` by exact CE score, found with ``budget`` CE calls (AXN).

        Returns ``[{"corpus_id", "score", "text"}, ...]``, best first, as
        sentence-transformers' ``CrossEncoder.rank`` does (``corpus_id`` is the
        item's id in the index, ``score`` the exact CE score, ``text`` the item
        text or None). Defaults: the ranker's ``default_k`` / ``default_budget`` /
        ``default_rounds``, capped at the number of items / the budget.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        return self.rank_batch([query], top_k=top_k, budget=budget, rounds=rounds)[0]


def rank(target: Union[Ranker, IndexBundle], query: str, *, top_k: int = 10, budget: int = 100,
         rounds: int = 5, ce: Optional[CrossEncoder] = None) -> List[Hit]:
    """sentence-transformers-style ``rank`` on a bundle (or a :class:`Ranker`): see :meth:`Ranker.rank`.

    A bundle builds its CE (or takes ``ce``) and dual-encoder on every call; keep a
    ``Ranker.from_bundle(bundle)`` to rank many queries. ``budget`` is capped at the
    number of items, ``top_k`` and ``rounds`` at the budget.
    """
    ranker = target if isinstance(target, Ranker) else Ranker.from_bundle(target, ce)
    b = min(budget, ranker.n_items)
    return ranker.rank(query, top_k=min(top_k, b), budget=b, rounds=min(rounds, b))
