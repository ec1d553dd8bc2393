"""AXN as a LlamaIndex retriever (needs ``llama-index-core``: the ``integrations`` extra)."""
from __future__ import annotations

from typing import Any, List, Optional

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from axn_fast.integrations.ranker import Ranker

__all__ = ["AXNLlamaIndexRetriever"]


class AXNLlamaIndexRetriever(BaseRetriever):
    """The cross-encoder's top-``similarity_top_k`` items for a query, found by AXN with ``budget`` CE calls.

    ranker : a :class:`~axn_fast.integrations.ranker.Ranker` whose items are the nodes' texts.
    similarity_top_k, budget, rounds : results, CE calls and AXN rounds per query.

    Returns ``NodeWithScore(node=TextNode(id_=str(corpus_id), text=item text,
    metadata={"corpus_id"}), score=exact CE score)``, best first.
    """

    def __init__(self, ranker: Ranker, *, similarity_top_k: int = 4, budget: int = 100, rounds: int = 5,
                 callback_manager: Optional[Any] = None, verbose: bool = False) -> None:
        if not isinstance(ranker, Ranker):
            raise TypeError(f"ranker must be an axn_fast Ranker, got {type(ranker).__name__}")
        for name, v in (("similarity_top_k", similarity_top_k), ("budget", budget), ("rounds", rounds)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        super().__init__(callback_manager=callback_manager, verbose=verbose)
        self.ranker = ranker
        self.similarity_top_k = similarity_top_k
        self.budget = budget
        self.rounds = rounds

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        hits = self.ranker.rank(query_bundle.query_str, top_k=self.similarity_top_k, budget=self.budget,
                                rounds=self.rounds)
        return [NodeWithScore(node=TextNode(id_=str(h["corpus_id"]), text=h["text"] if h["text"] is not None else "",
                                            metadata={"corpus_id": h["corpus_id"]}),
                              score=h["score"]) for h in hits]
