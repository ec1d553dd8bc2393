"""Where users already are: AXN behind the interfaces of retrieval libraries.

- :class:`~axn_fast.integrations.ranker.Ranker` and :func:`~axn_fast.integrations.ranker.rank`:
  sentence-transformers-style ``rank(query, top_k=, budget=)`` over an index bundle,
  returning ``[{"corpus_id", "score", "text"}]`` (no extra dependency);
- :class:`axn_fast.integrations.langchain.AXNRetriever`: a LangChain ``BaseRetriever``
  (``langchain-core``) returning ``Document`` objects;
- :class:`axn_fast.integrations.llama_index.AXNLlamaIndexRetriever`: a LlamaIndex
  retriever (``llama-index-core``) returning ``NodeWithScore`` objects.

The two framework adapters are imported from their own modules (the ``integrations``
extra installs both packages), so importing this package needs neither.
"""
from axn_fast.integrations.ranker import Hit, Ranker, SearchRequest, rank

__all__ = ["Ranker", "rank", "Hit", "SearchRequest"]
