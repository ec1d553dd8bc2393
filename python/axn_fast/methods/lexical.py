"""Lexical first-stage retrievers on raw text: TF-IDF (scikit-learn) and BM25 (bm25s).

Both rank every item for a query; ``retrieve(queries, m)`` returns the top ``m``
ids per query, ties broken by the smaller item id so the candidate lists are
deterministic (many items score exactly 0 for short queries). Feed the rows
to :func:`axn_fast.retrieve_and_rerank` (RNR_TF-IDF, RNR_BM25) or use them as
AXN's / ADACUR's first round.
"""
from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np
from numpy.typing import NDArray

from axn_fast.search.topk import top_ids
from axn_fast._validation import check_int


def _texts(x: object, name: str) -> List[str]:
    if isinstance(x, str) or not isinstance(x, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(x).__name__}")
    bad = [i for i, t in enumerate(x) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must be a list of strings; entry {bad[0]} is {type(x[bad[0]]).__name__}")
    return list(x)


class _Retriever:
    n_items: int

    def scores(self, queries: Sequence[str]) -> NDArray[np.float32]:  # pragma: no cover - overridden
        raise NotImplementedError

    def retrieve(self, queries: Sequence[str], m: int, *, batch_size: int = 256) -> NDArray[np.int64]:
        """(n_queries, m) int64 ids of the top ``m`` items per query, best first."""
        queries = _texts(queries, "queries")
        m = check_int(m, "m", minimum=1, maximum=self.n_items)
        out = np.empty((len(queries), m), dtype=np.int64)
        for start in range(0, len(queries), batch_size):
            block = self.scores(queries[start:start + batch_size])
            for j, row in enumerate(block):
                out[start + j] = top_ids(row, m)
        return out


class TfidfRetriever(_Retriever):
    """TF-IDF retrieval: scikit-learn's ``TfidfVectorizer`` fitted on the item texts.

    Defaults follow ANNCUR/AXN on ZESHEL (scikit-learn's default parameters); keyword
    arguments go to ``TfidfVectorizer``. Score = dot product of the L2-normalised
    TF-IDF vectors (cosine similarity).
    """

    def __init__(self, items: Sequence[str], **vectorizer_kwargs: Any) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        items = _texts(items, "items")
        if not items:
            raise ValueError("items must not be empty")
        self.vectorizer = TfidfVectorizer(**vectorizer_kwargs)
        self.item_matrix = self.vectorizer.fit_transform(items)  # (n_items, vocab) sparse
        self.n_items = len(items)

    def scores(self, queries: Sequence[str]) -> NDArray[np.float32]:
        """(n_queries, n_items) float32 TF-IDF cosine similarities."""
        queries = _texts(queries, "queries")
        qm = self.vectorizer.transform(queries)
        return np.asarray((qm @ self.item_matrix.T).toarray(), dtype=np.float32)


class BM25Retriever(_Retriever):
    """Okapi BM25 with the ``bm25s`` package (Lucene variant, k1=1.5, b=0.75 by default).

    Text is lower-cased and split into words of two or more characters, English stop
    words removed (bm25s's defaults); keyword arguments go to ``bm25s.BM25``.
    """

    def __init__(self, items: Sequence[str], *, stopwords: str = "english", **bm25_kwargs: Any) -> None:
        import bm25s

        items = _texts(items, "items")
        if not items:
            raise ValueError("items must not be empty")
        self._bm25s = bm25s
        self._stopwords = stopwords
        self.model = bm25s.BM25(**bm25_kwargs)
        self.model.index(bm25s.tokenize(items, stopwords=stopwords, show_progress=False), show_progress=False)
        self.n_items = len(items)

    def scores(self, queries: Sequence[str]) -> NDArray[np.float32]:
        """(n_queries, n_items) float32 BM25 scores."""
        queries = _texts(queries, "queries")
        tokens = self._bm25s.tokenize(queries, stopwords=self._stopwords, return_ids=False, show_progress=False)
        out = np.zeros((len(queries), self.n_items), dtype=np.float32)
        for i, toks in enumerate(tokens):
            if toks:  # an empty query (all stop words) scores 0 everywhere
                out[i] = self.model.get_scores(toks)
        return out
