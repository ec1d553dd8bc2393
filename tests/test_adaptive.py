"""AXN adaptive_search against Algorithm 1 and Eq. 4-7 of the AXN paper."""
import time

import numpy as np
import pytest

import axn_fast
from axn_fast.search.adaptive import round_sizes


def low_rank(n_queries=20, n_items=3000, d=16, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    Q = rng.standard_normal((n_queries, d)).astype(np.float32)
    V = rng.standard_normal((n_items, d)).astype(np.float32)
    S = Q @ V.T + noise * rng.standard_normal((n_queries, n_items)).astype(np.float32)
    return Q, V, S


class RecordingCE(axn_fast.DenseScoreCE):
    def __init__(self, S):
        super().__init__(S)
        self.batches = []

    def __call__(self, q, ids):
        self.batches.append(np.array(ids))
        return super().__call__(q, ids)


def test_round_sizes():
    assert round_sizes(100, 5) == [20] * 5
    assert round_sizes(10, 3) == [3, 3, 4]
    assert round_sizes(7, 7) == [1] * 7
    assert sum(round_sizes(1001, 10)) == 1001 and round_sizes(1001, 10)[0] == 100


def test_recovers_exact_topk_of_a_low_rank_ce():
    Q, V, S = low_rank()
    index = axn_fast.Index(V)
    ce = axn_fast.DenseScoreCE(S)
    for q in range(len(Q)):
        res = index.adaptive_search(q, ce, budget=100, k=10, rounds=5, seed=q)
        true = np.argsort(-S[q])[:10]
        assert axn_fast.topk_recall(res.ids, true, 10) == 1.0
        np.testing.assert_allclose(res.u, Q[q], rtol=1e-3, atol=1e-3)  # Eq. 4 recovers the query


def test_budget_rounds_and_batching_contract():
    Q, V, S = low_rank(n_items=500)
    ce = RecordingCE(S)
    res = axn_fast.Index(V).adaptive_search(3, ce, budget=47, k=5, rounds=4, seed=1)
    assert res.n_ce_calls == 47 == ce.n_calls
    assert [len(b) for b in ce.batches] == round_sizes(47, 4) == [len(r.ids) for r in res.rounds]
    assert len(np.unique(res.scored_ids)) == 47  # nothing scored twice
    np.testing.assert_array_equal(res.scored_ids, np.concatenate(ce.batches))
    np.testing.assert_array_equal(res.scored_scores, S[3, res.scored_ids])
    order = np.argsort(-S[3, res.scored_ids], kind="stable")[:5]
    np.testing.assert_array_equal(res.ids, res.scored_ids[order])
    np.testing.assert_array_equal(res.scores, S[3, res.ids])
    assert res.ids.dtype == np.int64 and res.scores.dtype == np.float32 and res.u.dtype == np.float32


def test_timings_are_split_between_ce_and_search():
    Q, V, S = low_rank(n_items=500)
    dense = axn_fast.DenseScoreCE(S)

    def slow_ce(q, ids):
        time.sleep(0.05)
        return dense(q, ids)

    res = axn_fast.Index(V).adaptive_search(3, slow_ce, budget=40, k=5, rounds=4, seed=1)
    assert all(r.seconds_ce >= 0.05 for r in res.rounds)  # the sleep is inside the CE's time
    assert all(r.seconds_solve > 0 and r.seconds_search > 0 for r in res.rounds)
    assert res.seconds_ce == pytest.approx(sum(r.seconds_ce for r in res.rounds))
    assert res.seconds_search == pytest.approx(sum(r.seconds_search + r.seconds_solve for r in res.rounds))
    assert res.seconds_search < res.seconds_ce  # the sleeps are not counted as search time


def test_each_round_follows_eq4_and_eq5():
    """Replay the rounds with numpy: u = pinv(V_A^T V_A) V_A^T a, then the best unscored items by V @ u."""
    Q, V, S = low_rank(n_items=2000, d=24, noise=0.5, seed=3)
    index = axn_fast.Index(V)
    res = index.adaptive_search(0, axn_fast.DenseScoreCE(S), budget=120, k=10, rounds=6, seed=0)
    V64 = V.astype(np.float64)
    seen = []
    for r, info in enumerate(res.rounds):
        if r > 0:
            A = np.concatenate(seen)
            u = np.linalg.pinv(V64[A].T @ V64[A]) @ V64[A].T @ S[0, A].astype(np.float64)
            approx = V64 @ u
            approx[A] = -np.inf
            kth = np.sort(approx)[::-1][len(info.ids) - 1]
            # every retrieved item is among the best unscored ones (up to float rounding)
            assert (approx[info.ids] >= kth - 1e-3 * np.abs(kth)).all()
        seen.append(info.ids)
    A = np.concatenate(seen)
    u = np.linalg.pinv(V64[A].T @ V64[A]) @ V64[A].T @ S[0, A].astype(np.float64)
    np.testing.assert_allclose(res.u, u, rtol=1e-4, atol=1e-4)


def test_eq7_mixing_with_u0():
    Q, V, S = low_rank(n_items=1000, d=12, noise=0.3, seed=4)
    u0 = (Q[2] + np.random.default_rng(0).standard_normal(12)).astype(np.float32)
    res = axn_fast.Index(V).adaptive_search(2, axn_fast.DenseScoreCE(S), budget=40, k=5, rounds=4, u0=u0, lam=0.3)
    A = res.scored_ids
    u_ls = np.linalg.pinv(V[A].astype(np.float64)) @ S[2, A]
    np.testing.assert_allclose(res.u, 0.7 * u_ls + 0.3 * u0, rtol=1e-4, atol=1e-4)


def test_lam_one_is_retrieve_and_rerank_with_u0():
    Q, V, S = low_rank(n_items=800, noise=1.0, seed=5)
    u0 = Q[1] + 0.5
    res = axn_fast.Index(V).adaptive_search(1, axn_fast.DenseScoreCE(S), budget=60, k=10, rounds=3, u0=u0, lam=1.0)
    top_by_u0 = np.argsort(-(V @ u0))[:60]
    assert set(res.scored_ids.tolist()) == set(top_by_u0.tolist())
    rnr = axn_fast.retrieve_and_rerank(top_by_u0, 1, axn_fast.DenseScoreCE(S), 60, k=10)
    np.testing.assert_array_equal(np.sort(res.ids), np.sort(rnr.ids))


def test_first_round_sources():
    Q, V, S = low_rank(n_items=300)
    index = axn_fast.Index(V)
    ce = axn_fast.DenseScoreCE(S)
    init = np.array([5, 5, 7, 9, 11, 13, 2])  # duplicates are scored once
    res = index.adaptive_search(0, ce, budget=20, k=3, rounds=4, init=init)
    np.testing.assert_array_equal(res.rounds[0].ids, [5, 7, 9, 11, 13])
    res = index.adaptive_search(0, ce, budget=20, k=3, rounds=2, init=init)  # init too short: topped up
    assert res.rounds[0].ids[:6].tolist() == [5, 7, 9, 11, 13, 2] and len(res.rounds[0].ids) == 10
    u0 = Q[0]
    res = index.adaptive_search(0, ce, budget=20, k=3, rounds=4, u0=u0)
    np.testing.assert_array_equal(res.rounds[0].ids, np.argsort(-(V @ u0))[:5])
    a = index.adaptive_search(0, ce, budget=20, k=3, rounds=4, seed=7).rounds[0].ids
    b = index.adaptive_search(0, ce, budget=20, k=3, rounds=4, seed=7).rounds[0].ids
    c = index.adaptive_search(0, ce, budget=20, k=3, rounds=4, seed=8).rounds[0].ids
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and len(np.unique(a)) == 5


def test_beats_retrieve_and_rerank_with_a_weak_dual_encoder():
    """A noisy low-rank CE and a DE whose query embeddings are poor (the paper's setting)."""
    rng = np.random.default_rng(11)
    n_q, n, d = 40, 5000, 32
    Q = rng.standard_normal((n_q, d)).astype(np.float32)
    V = rng.standard_normal((n, d)).astype(np.float32)
    S = Q @ V.T + 0.5 * rng.standard_normal((n_q, n)).astype(np.float32)
    Q_de = Q + 1.5 * rng.standard_normal((n_q, d)).astype(np.float32)  # weak DE queries
    V_de = V + 0.2 * rng.standard_normal((n, d)).astype(np.float32)
    index = axn_fast.Index(V_de)
    ce = axn_fast.DenseScoreCE(S)
    axn, rnr = [], []
    for q in range(n_q):
        true = np.argsort(-S[q])[:10]
        cand = index.search(Q_de[q], 100)[1]
        rnr.append(axn_fast.topk_recall(axn_fast.retrieve_and_rerank(cand, q, ce, 100, k=10).ids, true, 10))
        res = index.adaptive_search(q, ce, 100, k=10, rounds=5, init=cand)
        axn.append(axn_fast.topk_recall(res.ids, true, 10))
    assert np.mean(axn) > np.mean(rnr) + 0.15, (np.mean(axn), np.mean(rnr))


def test_normalization_fits_normalised_scores_and_returns_raw_ones():
    Q, V, S = low_rank(n_items=400, d=8, noise=0.2, seed=6)
    alpha, beta = 1.5, 2.0
    res = axn_fast.Index(V).adaptive_search(0, axn_fast.DenseScoreCE(S), 40, k=5, rounds=2, seed=0,
                                            normalization=(alpha, beta))
    np.testing.assert_array_equal(res.scored_scores, S[0, res.scored_ids])
    A = res.scored_ids
    u = np.linalg.pinv(V[A].astype(np.float64)) @ (beta * (S[0, A].astype(np.float64) - alpha))
    np.testing.assert_allclose(res.u, u, rtol=1e-4, atol=1e-4)
    same = axn_fast.Index(V).adaptive_search(0, axn_fast.DenseScoreCE(S), 40, k=5, rounds=2, seed=0,
                                             normalization=axn_fast.ScoreNormalization(alpha, beta))
    np.testing.assert_array_equal(same.u, res.u)


def test_index_normalization_is_a_deprecated_forward():
    Q, V, S = low_rank(n_items=400, d=8, noise=0.2, seed=6)
    with pytest.warns(DeprecationWarning, match="pass normalization= to adaptive_search"):
        old = axn_fast.Index(V, normalization=(1.5, 2.0))
    assert old.normalization == (1.5, 2.0)
    new = axn_fast.Index(V).adaptive_search(0, axn_fast.DenseScoreCE(S), 40, k=5, rounds=2, seed=0,
                                            normalization=(1.5, 2.0))
    res = old.adaptive_search(0, axn_fast.DenseScoreCE(S), 40, k=5, rounds=2, seed=0)
    np.testing.assert_array_equal(res.u, new.u)
    np.testing.assert_array_equal(res.scored_ids, new.scored_ids)


@pytest.mark.parametrize("norm,exc,match", [
    ((0.0, 1e39), ValueError, "float32's range"),
    ((0.0, -1.0), ValueError, "beta finite and > 0"),
    ("ab", TypeError, "normalization must be"),
    ((1.0, 2.0, 3.0), ValueError, "must be \\(alpha, beta\\)"),
])
def test_bad_normalization_is_refused_before_any_ce_call(norm, exc, match):
    Q, V, S = low_rank(n_items=100, d=8)
    ce = axn_fast.DenseScoreCE(S)
    with pytest.raises(exc, match=match):
        axn_fast.Index(V).adaptive_search(0, ce, 20, k=5, normalization=norm)
    assert ce.n_calls == 0


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(budget=3, rounds=5), ValueError, "budget must be >= rounds.*budget=3 < rounds=5"),
    (dict(budget=10, k=11), ValueError, "k must be <= budget.*k=11 > budget=10"),
    (dict(budget=10**6), ValueError, "must be <= the number of items"),
    (dict(budget=0), ValueError, "budget must be >= 1"),
    (dict(budget=10, lam=0.5), ValueError, "lam > 0 needs u0"),
    (dict(budget=10, lam=1.5, u0=np.ones(16)), ValueError, "lam must be <= 1"),
    (dict(budget=10, u0=np.ones(3)), ValueError, "u0 must have 16 columns"),
    (dict(budget=10, init=[0, 10**6]), ValueError, "init contains id"),
    (dict(budget=10, rounds=2.0), TypeError, "rounds must be an integer"),
])
def test_bad_arguments(kwargs, exc, match):
    Q, V, S = low_rank(n_items=200)
    with pytest.raises(exc, match=match):
        axn_fast.Index(V).adaptive_search(0, axn_fast.DenseScoreCE(S), **kwargs)


def test_bad_ce_outputs_carry_the_partial_result():
    Q, V, S = low_rank(n_items=200)
    index = axn_fast.Index(V)
    calls = []

    def ce_factory(bad):
        def ce(q, ids):
            calls.append(len(ids))
            return bad(ids) if len(calls) == 3 else S[q, ids]
        return ce

    for bad, match in [(lambda ids: S[0, ids][:-1], "shape"), (lambda ids: np.full(len(ids), np.nan), "non-finite"),
                       (lambda ids: ["x"] * len(ids), "numeric")]:
        calls.clear()
        with pytest.raises(axn_fast.CrossEncoderError, match=match) as info:
            index.adaptive_search(0, ce_factory(bad), budget=50, k=5, rounds=5)
        assert isinstance(info.value, ValueError)
        partial = info.value.partial
        assert partial.n_ce_calls == 20 and len(partial.rounds) == 2
        np.testing.assert_array_equal(partial.scored_scores, S[0, partial.scored_ids])


def test_ce_raising_mid_search_loses_nothing():
    Q, V, S = low_rank(n_items=300)
    paid = []

    def flaky(q, ids):
        if len(paid) == 3:
            raise ConnectionError("GPU server went away")
        paid.append(np.array(ids))
        return S[q, ids]

    with pytest.raises(axn_fast.SearchInterrupted, match="ConnectionError") as info:
        axn_fast.Index(V).adaptive_search(4, flaky, budget=50, k=5, rounds=5)
    assert isinstance(info.value.__cause__, ConnectionError)
    partial = info.value.partial
    np.testing.assert_array_equal(partial.scored_ids, np.concatenate(paid))
    np.testing.assert_array_equal(partial.scored_scores, S[4, partial.scored_ids])
    assert partial.ids[0] == partial.scored_ids[np.argmax(partial.scored_scores)]
    assert partial.u is not None and partial.u.shape == (16,)


class _NumpyIndex:
    """A minimal VectorIndex written with numpy only: what a sharded or remote index must provide."""

    def __init__(self, V):
        self.V = V
        self.fetched = 0

    @property
    def n_items(self):
        return self.V.shape[0]

    @property
    def dim(self):
        return self.V.shape[1]

    def search(self, U, k, *, exclude=None):
        s = self.V.astype(np.float64) @ np.asarray(U, dtype=np.float64)
        if exclude is not None:
            s[np.asarray(exclude, dtype=np.int64)] = -np.inf
        ids = np.lexsort((np.arange(len(s)), -s))[:k]
        return s[ids].astype(np.float32), ids.astype(np.int64)

    def vectors_of(self, ids):
        self.fetched += len(ids)
        return np.ascontiguousarray(self.V[np.asarray(ids)])


def test_adaptive_search_needs_only_the_index_protocol():
    from axn_fast.search.adaptive import adaptive_search
    from axn_fast.search.protocol import VectorIndex

    Q, V, S = low_rank(n_items=600, d=8, noise=0.3, seed=8)
    mine = _NumpyIndex(V)
    assert isinstance(mine, VectorIndex)
    ce = axn_fast.DenseScoreCE(S)
    for q in range(3):
        a = adaptive_search(mine, q, ce, 50, k=5, rounds=5, seed=q)
        b = axn_fast.Index(V).adaptive_search(q, ce, 50, k=5, rounds=5, seed=q)
        np.testing.assert_array_equal(a.scored_ids, b.scored_ids)
        np.testing.assert_allclose(a.u, b.u, rtol=1e-5, atol=1e-5)
    assert mine.fetched == 3 * 50  # each scored item's row is fetched once, not once per round
