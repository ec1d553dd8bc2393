"""TF-IDF and BM25 retrieval on a toy corpus whose right answers are known."""
import numpy as np
import pytest

CORPUS = [
    "the bank of the river was muddy after the flood",
    "a bank is a financial institution that accepts deposits and lends money",
    "the cat chased the mouse around the kitchen",
    "a mouse is a small rodent with a long tail",
    "a computer mouse is a pointing device moved by hand",
    "volcanoes erupt molten lava and ash",
]
QUERIES = [
    "she deposits her money at the bank",  # 1
    "lava poured from the erupting volcanoes",  # 5
    "move the computer mouse pointing device",  # 4
    "rodent with a long tail",  # 3
]
EXPECTED_FIRST = [1, 5, 4, 3]


@pytest.fixture(params=["tfidf", "bm25"])
def retriever(request):
    if request.param == "tfidf":
        pytest.importorskip("sklearn", reason="TF-IDF needs scikit-learn (the eval extra)")
        from axn_fast.methods.lexical import TfidfRetriever

        return TfidfRetriever(CORPUS)
    pytest.importorskip("bm25s", reason="BM25 needs bm25s (the eval extra)")
    from axn_fast.methods.lexical import BM25Retriever

    return BM25Retriever(CORPUS)


def test_known_documents_ranked_first(retriever):
    ids = retriever.retrieve(QUERIES, 3)
    assert ids.shape == (4, 3) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids[:, 0], EXPECTED_FIRST)
    scores = retriever.scores(QUERIES)
    assert scores.shape == (4, len(CORPUS))
    np.testing.assert_array_equal(np.argmax(scores, axis=1), EXPECTED_FIRST)


def test_ties_are_broken_by_item_id(retriever):
    ids = retriever.retrieve(["zebra xylophone"], 4)  # no word in common with any item: all tie at 0
    np.testing.assert_array_equal(ids[0], [0, 1, 2, 3])


def test_tfidf_scores_are_cosines():
    pytest.importorskip("sklearn", reason="TF-IDF needs scikit-learn")
    from sklearn.feature_extraction.text import TfidfVectorizer

    from axn_fast.methods.lexical import TfidfRetriever

    vec = TfidfVectorizer().fit(CORPUS)
    X = vec.transform(CORPUS).toarray()
    Q = vec.transform(QUERIES).toarray()
    np.testing.assert_allclose(TfidfRetriever(CORPUS).scores(QUERIES), Q @ X.T, rtol=1e-6, atol=1e-7)


def test_bad_inputs(retriever):
    with pytest.raises(TypeError, match="queries must be a list of strings"):
        retriever.retrieve("just one string", 2)
    with pytest.raises(TypeError, match="entry 1"):
        retriever.retrieve(["ok", 3], 2)
    with pytest.raises(ValueError, match="m must be <= 6"):
        retriever.retrieve(QUERIES, 7)
    with pytest.raises(ValueError, match="items must not be empty"):
        type(retriever)([])
