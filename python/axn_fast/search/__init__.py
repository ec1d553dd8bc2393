"""Budgeted k-NN search with a cross-encoder, over any index of item embeddings.

- :mod:`~axn_fast.search.protocol`: ``VectorIndex``, what AXN and every method need from an index
  (``n_items``, ``dim``, ``search(U, k, exclude=)``, ``vectors_of(ids)``).
- :mod:`~axn_fast.search.index`: ``Index``, the exact scan (C++ kernel), float32 or float16 storage.
- :mod:`~axn_fast.search.approximate`: ``FaissIndex``, an HNSW/IVF index behind the same protocol.
- :mod:`~axn_fast.search.shortlist`: ``ShortlistIndex`` / ``shortlist_search``, AXN inside a first-stage top-N.
- :mod:`~axn_fast.search.adaptive`: ``adaptive_search``, AXN (Algorithm 1 of the AXN paper).
- :mod:`~axn_fast.search.normalization`: ``ScoreNormalization``, the CE -> DE score map of AXN's targets.
- :mod:`~axn_fast.search.ledger`: ``ScoreLedger``, the pairs one search paid for (``.partial`` on failure).
- :mod:`~axn_fast.search.budget`: ``check_budget``, ``round_sizes``, ``first_round`` (what ``init`` means).
- :mod:`~axn_fast.search.topk`: ``top_ids``, top-n of a score vector through the C++ kernel.
- :mod:`~axn_fast.search.results`: ``SearchResult``, ``RoundInfo``.
"""
