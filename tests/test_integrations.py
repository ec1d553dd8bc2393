"""rank() and the LangChain / LlamaIndex retrievers: the answers of adaptive_search, in each library's types."""
import numpy as np
import pytest

import axn_fast
from axn_fast.indexing.bundle import IndexBundle
from axn_fast.integrations import Ranker, rank
from axn_fast.search.adaptive import adaptive_search

N_ITEMS, DIM = 300, 10


class RowCE:
    """Query text "q<row>" -> that row of a dense score matrix (one call per query, or batched)."""

    def __init__(self, S):
        self.dense = axn_fast.DenseScoreCE(S)

    def __call__(self, q, ids):
        return self.dense(int(q[1:]), ids)

    def score_batch(self, queries, ids_per_query):
        return self.dense.score_batch([int(q[1:]) for q in queries], ids_per_query)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(3)
    Q = rng.standard_normal((20, DIM)).astype(np.float32)
    V = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    S = (Q @ V.T + 0.2 * rng.standard_normal((20, N_ITEMS))).astype(np.float32)
    items = [f"document {i}" for i in range(N_ITEMS)]
    bundle = IndexBundle(axn_fast.Index(V), items=items)
    return bundle, S, items


def expected(setup, query, budget, k, rounds):
    bundle, S, _ = setup
    return adaptive_search(bundle.index, int(query[1:]), axn_fast.DenseScoreCE(S), budget, k=k, rounds=rounds,
                           seed=0)


def test_rank_is_sentence_transformers_shaped_and_equals_adaptive_search(setup):
    bundle, S, items = setup
    ranker = Ranker.from_bundle(bundle, RowCE(S))
    hits = ranker.rank("q3", top_k=5, budget=60, rounds=3)
    want = expected(setup, "q3", 60, 5, 3)
    assert [h["corpus_id"] for h in hits] == want.ids.tolist()
    assert [h["score"] for h in hits] == [float(s) for s in want.scores]
    assert [h["text"] for h in hits] == [items[i] for i in want.ids]
    assert all(set(h) == {"corpus_id", "score", "text"} for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    # the function form on a bundle, with the defaults capped at the items
    assert rank(bundle, "q3", top_k=5, budget=60, rounds=3, ce=RowCE(S)) == hits
    assert rank(ranker, "q4", budget=10**6) == ranker.rank("q4", top_k=10, budget=N_ITEMS, rounds=5)


def test_rank_batch_runs_in_lockstep_and_equals_rank(setup):
    bundle, S, _ = setup
    ce = RowCE(S)
    ranker = Ranker.from_bundle(bundle, ce)
    before = ce.dense.n_batches
    many = ranker.rank_batch(["q1", "q2", "q7"], top_k=4, budget=40, rounds=4)
    assert ce.dense.n_batches - before == 4  # one CE call per round for the three queries
    for q, hits in zip(["q1", "q2", "q7"], many):
        assert hits == ranker.rank(q, top_k=4, budget=40, rounds=4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(top_k=11, budget=10), "top_k must be <= budget"),
    (dict(budget=N_ITEMS + 1), "budget must be <= the number of items"),
    (dict(budget=10, rounds=11), "rounds must be <= budget"),
])
def test_rank_bad_arguments(setup, kwargs, match):
    bundle, S, _ = setup
    with pytest.raises(ValueError, match=match):
        Ranker.from_bundle(bundle, RowCE(S)).rank("q1", **kwargs)
    with pytest.raises(TypeError, match="query must be a str"):
        Ranker.from_bundle(bundle, RowCE(S)).rank(3)


def test_langchain_retriever(setup):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from axn_fast.integrations.langchain import AXNRetriever

    bundle, S, items = setup
    retriever = AXNRetriever(ranker=Ranker.from_bundle(bundle, RowCE(S)), k=3, budget=50, rounds=5)
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("q5")
    want = expected(setup, "q5", 50, 3, 5)
    assert all(isinstance(d, Document) for d in docs)
    assert [d.page_content for d in docs] == [items[i] for i in want.ids]
    assert [d.metadata["corpus_id"] for d in docs] == want.ids.tolist()
    assert [d.metadata["score"] for d in docs] == [float(s) for s in want.scores]
    batched = retriever.batch(["q5", "q6"])  # one lockstep AXN run
    assert [[d.page_content for d in ds] for ds in batched] == \
        [[items[i] for i in expected(setup, q, 50, 3, 5).ids] for q in ("q5", "q6")]
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="k"):
        AXNRetriever(ranker=retriever.ranker, k=0)


def test_llama_index_retriever(setup):
    pytest.importorskip("llama_index.core")
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore

    from axn_fast.integrations.llama_index import AXNLlamaIndexRetriever

    bundle, S, items = setup
    retriever = AXNLlamaIndexRetriever(Ranker.from_bundle(bundle, RowCE(S)), similarity_top_k=4, budget=40,
                                       rounds=2)
    assert isinstance(retriever, BaseRetriever)
    nodes = retriever.retrieve("q9")
    want = expected(setup, "q9", 40, 4, 2)
    assert all(isinstance(n, NodeWithScore) for n in nodes)
    assert [n.node.get_content() for n in nodes] == [items[i] for i in want.ids]
    assert [n.node.node_id for n in nodes] == [str(i) for i in want.ids]
    assert [n.score for n in nodes] == [float(s) for s in want.scores]
    with pytest.raises(ValueError, match="similarity_top_k must be an integer >= 1"):
        AXNLlamaIndexRetriever(retriever.ranker, similarity_top_k=0)
