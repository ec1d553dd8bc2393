"""AXN as a LangChain retriever (needs ``langchain-core``: the ``integrations`` extra)."""
from __future__ import annotations

from typing import Any, List

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from axn_fast.integrations.ranker import Hit, Ranker

__all__ = ["AXNRetriever"]


def _document(hit: Hit, ce_calls: int) -> Document:
    return Document(page_content=hit["text"] if hit["text"] is not None else "",
                    metadata={"corpus_id": hit["corpus_id"], "score": hit["score"], "ce_calls": ce_calls})


class AXNRetriever(BaseRetriever):
    """The cross-encoder's top-``k`` items for a query, found by AXN with ``budget`` CE calls.

    ranker : a :class:`~axn_fast.integrations.ranker.Ranker` (e.g.
        ``Ranker.from_bundle(IndexBundle.load(path))``), whose items are the documents.
    k, budget, rounds : results, CE calls and AXN rounds per query.

    Returns ``Document(page_content=item text, metadata={"corpus_id", "score", "ce_calls"})``,
    best first; ``score`` is the exact CE score. ``batch()`` of many queries runs them
    in lockstep (one batched scan and one CE call per AXN round).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    ranker: Ranker
    k: int = Field(default=4, ge=1)
    budget: int = Field(default=100, ge=1)
    rounds: int = Field(default=5, ge=1)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun
                                ) -> List[Document]:
        hits = self.ranker.rank(query, top_k=self.k, budget=self.budget, rounds=self.rounds)
        return [_document(h, self.budget) for h in hits]

    def batch(self, inputs: List[Any], config: Any = None, *, return_exceptions: bool = False,
              **kwargs: Any) -> List[Any]:
        """Many plain-text queries in one lockstep AXN run; anything else goes through LangChain's batch."""
        if config is not None or kwargs or not inputs or not all(isinstance(q, str) for q in inputs):
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        try:
            hits = self.ranker.rank_batch(inputs, top_k=self.k, budget=self.budget, rounds=self.rounds)
        except Exception as exc:
            if not return_exceptions:
                raise
            return [exc] * len(inputs)
        return [[_document(h, self.budget) for h in per_query] for per_query in hits]
