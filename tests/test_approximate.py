"""FaissIndex (HNSW / IVF behind the VectorIndex protocol) and the shortlist view."""
import numpy as np
import pytest

import axn_fast
from axn_fast.search.adaptive import adaptive_search
from axn_fast.search.protocol import VectorIndex
from axn_fast.search.shortlist import ShortlistIndex, shortlist_search

faiss = pytest.importorskip("faiss")
from axn_fast.search.approximate import FaissIndex  # noqa: E402


def _data(n=3000, d=16, nq=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((nq, d)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.fixture(scope="module")
def exhaustive_ivf(data):
    V, _ = data
    ix = FaissIndex.ivf(V, nlist=32, nprobe=32)
    return ix


def test_satisfies_the_protocol(data, exhaustive_ivf):
    V, U = data
    hnsw = FaissIndex.hnsw(V, M=16, ef_search=32)
    for ix in (hnsw, exhaustive_ivf, axn_fast.Index(V)):
        assert isinstance(ix, VectorIndex) and ix.n_items == 3000 and ix.dim == 16
        s, i = ix.search(U[0], 7)
        assert s.shape == i.shape == (7,) and s.dtype == np.float32 and i.dtype == np.int64
        s, i = ix.search(U, 7, exclude=np.arange(100))
        assert s.shape == i.shape == (8, 7) and (i >= 100).all()
        assert (np.diff(s, axis=1) <= 0).all()  # best first
        lists = [np.arange(q * 10, q * 10 + 50) for q in range(8)]
        s, i = ix.search(U, 5, exclude=lists)
        assert all(not np.isin(i[q], lists[q]).any() for q in range(8))
        np.testing.assert_array_equal(ix.vectors_of([3, 0, 2999]), V[[3, 0, 2999]])
        s, i = ix.search(U[0], 0)
        assert s.shape == (0,)
    with pytest.raises(ValueError, match="exclude has 2 lists but there are 8 queries"):
        hnsw.search(U, 3, exclude=[[1], [2]])
    with pytest.raises(ValueError, match="U must have 16 columns"):
        hnsw.search(np.ones(3, np.float32), 3)


def test_exhaustive_ivf_equals_the_exact_index(data, exhaustive_ivf):
    V, U = data
    exact = axn_fast.Index(V)
    excl = [np.random.default_rng(q).choice(3000, 200, replace=False) for q in range(8)]
    for kwargs in ({}, {"exclude": np.arange(0, 3000, 3)}, {"exclude": excl}):
        s1, i1 = exact.search(U, 20, **kwargs)
        s2, i2 = exhaustive_ivf.search(U, 20, **kwargs)
        np.testing.assert_array_equal(i2, i1)
        np.testing.assert_allclose(s2, s1, rtol=1e-5, atol=1e-5)


def test_padding_and_ties_follow_index_conventions():
    V = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)  # items 0-2, 3-5, ... tie exactly
    ix = FaissIndex.ivf(V, nlist=2, nprobe=2)
    s, i = ix.search(np.array([0, 1, 0, 0], np.float32), 12, exclude=[4])
    np.testing.assert_array_equal(i[:2], [3, 5])  # the tie broken by the smaller id
    np.testing.assert_array_equal(i[-1], -1) and np.testing.assert_array_equal(s[-1], -np.inf)
    s2, i2 = axn_fast.Index(V).search(np.array([0, 1, 0, 0], np.float32), 12, exclude=[4])
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(s, s2)
    s, i = ix.search(np.array([0, 1, 0, 0], np.float32), 3, exclude=np.arange(12))
    assert (i == -1).all() and np.isneginf(s).all()


def test_a_starved_hnsw_search_is_widened_until_k_come_back():
    V, U = _data(n=2000, seed=3)
    ix = FaissIndex.hnsw(V, M=4, ef_search=1)
    exclude = axn_fast.Index(V).search(U[0], 1500)[1]  # the best 1500 are gone: the graph walk starves
    s, i = ix.search(U[0], 50, exclude=exclude)
    assert (i >= 0).all() and len(np.unique(i)) == 50 and not np.isin(i, exclude).any()


def test_hnsw_recall_and_axn_on_it(data):
    V, U = data
    ix = FaissIndex.hnsw(V, M=16, ef_search=128)
    exact = axn_fast.Index(V)
    _, i_exact = exact.search(U, 10)
    _, i_apx = ix.search(U, 10)
    recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(i_exact, i_apx)])
    assert recall >= 0.9
    S = U @ V.T  # a CE that is exactly low rank: AXN finds its top-10 through either index
    ce = axn_fast.DenseScoreCE(S)
    for q in range(4):
        res = adaptive_search(ix, q, ce, 100, k=10, rounds=5, seed=q)
        assert axn_fast.topk_recall(res.ids, np.argsort(-S[q])[:10], 10) >= 0.9
        assert res.n_ce_calls == 100 and len(np.unique(res.scored_ids)) == 100


def test_axn_on_exhaustive_ivf_equals_axn_on_index(data, exhaustive_ivf):
    V, U = data
    S = U @ V.T + 0.3 * np.random.default_rng(1).standard_normal((8, 3000)).astype(np.float32)
    ce = axn_fast.DenseScoreCE(S)
    for q in range(3):
        a = adaptive_search(axn_fast.Index(V), q, ce, 60, k=5, rounds=4, seed=q)
        b = adaptive_search(exhaustive_ivf, q, ce, 60, k=5, rounds=4, seed=q)
        np.testing.assert_array_equal(b.scored_ids, a.scored_ids)
        np.testing.assert_allclose(b.u, a.u, rtol=1e-5, atol=1e-5)


def test_refuses_what_it_cannot_serve():
    V, _ = _data(n=50)
    with pytest.raises(ValueError, match="METRIC_INNER_PRODUCT"):
        FaissIndex(faiss.IndexHNSWFlat(16, 8))
    with pytest.raises(TypeError, match="IndexHNSW or IndexIVF"):
        flat = faiss.IndexFlatIP(16)
        flat.add(V)
        FaissIndex(flat)
    with pytest.raises(ValueError, match="no items"):
        FaissIndex(faiss.IndexHNSWFlat(16, 8, faiss.METRIC_INNER_PRODUCT))


# ---------------------------------------------------------------- shortlist

def test_shortlist_search_reports_full_ids_and_stays_inside():
    V, U = _data(n=2000, seed=5)
    S = U @ V.T
    index = axn_fast.Index(V)
    shortlist = index.search(U[2] + 0.5 * np.random.default_rng(0).standard_normal(16).astype(np.float32), 300)[1]
    asked = []

    def ce(q, ids):
        asked.append(np.array(ids))
        return S[q, ids]

    res = shortlist_search(index, shortlist, 2, ce, 60, k=5, rounds=3, seed=0)
    seen = np.concatenate(asked)
    np.testing.assert_array_equal(res.scored_ids, seen)  # the CE saw full-index ids
    assert np.isin(seen, shortlist).all() and len(np.unique(seen)) == 60
    np.testing.assert_array_equal(res.scored_scores, S[2, res.scored_ids])
    np.testing.assert_array_equal(res.ids, res.scored_ids[np.argsort(-res.scored_scores, kind="stable")[:5]])
    np.testing.assert_array_equal(np.concatenate([r.ids for r in res.rounds]), res.scored_ids)
    # the same search on the shortlisted rows alone, mapped back
    sub = adaptive_search(axn_fast.Index(V[shortlist]), 0, axn_fast.DenseScoreCE(S[2:3, shortlist]), 60,
                          k=5, rounds=3, seed=0)
    np.testing.assert_array_equal(res.scored_ids, shortlist[sub.scored_ids])
    # the best of the shortlist is found (the CE is exactly low rank)
    best = shortlist[np.argsort(-S[2, shortlist], kind="stable")[:5]]
    assert axn_fast.topk_recall(res.ids, best, 5) == 1.0


def test_shortlist_init_partial_and_errors():
    V, U = _data(n=500, seed=6)
    S = U @ V.T
    index = axn_fast.Index(V)
    view = ShortlistIndex(index, np.arange(100, 300))
    assert isinstance(view, VectorIndex) and view.n_items == 200
    res = shortlist_search(index, view, 0, axn_fast.DenseScoreCE(S), 40, k=3, rounds=4, init=[250, 120, 250])
    np.testing.assert_array_equal(res.rounds[0].ids[:2], [250, 120])
    with pytest.raises(ValueError, match="init contains id 5, which is not in the shortlist"):
        shortlist_search(index, view, 0, axn_fast.DenseScoreCE(S), 40, init=[5])
    with pytest.raises(ValueError, match="budget must be <= the number of items \\(200\\)"):
        shortlist_search(index, view, 0, axn_fast.DenseScoreCE(S), 201)
    with pytest.raises(ValueError, match="duplicate"):
        ShortlistIndex(index, [1, 1])
    with pytest.raises(ValueError, match="another index"):
        shortlist_search(axn_fast.Index(V), view, 0, axn_fast.DenseScoreCE(S), 10)
    calls = []

    def flaky(q, ids):
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionError("down")
        return S[q, ids]

    with pytest.raises(axn_fast.SearchInterrupted) as info:
        shortlist_search(index, view, 0, flaky, 40, k=3, rounds=4, seed=0)
    part = info.value.partial
    assert part.n_ce_calls == 10 and ((part.scored_ids >= 100) & (part.scored_ids < 300)).all()
    np.testing.assert_array_equal(part.scored_scores, S[0, part.scored_ids])
