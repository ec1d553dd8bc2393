"""adaptive_search_batch: the rounds of many queries in lockstep, each query's result equal to adaptive_search's."""
import numpy as np
import pytest

import axn_fast
from axn_fast.search.adaptive import adaptive_search
from axn_fast.search.batch import adaptive_search_batch


def low_rank(n_queries=12, n_items=700, d=16, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    Q = rng.standard_normal((n_queries, d)).astype(np.float32)
    V = rng.standard_normal((n_items, d)).astype(np.float32)
    S = Q @ V.T + noise * rng.standard_normal((n_queries, n_items)).astype(np.float32)
    return Q, V, S


def tie_heavy(n_queries=10, n_items=600, d=6, seed=1):
    """Small-integer embeddings with many repeated rows and scores from 3 levels: ties everywhere,
    in the scans (equal V @ u) and in the CE scores."""
    rng = np.random.default_rng(seed)
    V = rng.integers(-1, 2, size=(n_items // 4, d)).astype(np.float32)
    V = np.concatenate([V, V, V, V])[rng.permutation(n_items)]
    S = rng.integers(0, 3, size=(n_queries, n_items)).astype(np.float32)
    return V, S


class PlainCE:
    """A CE without score_batch (called once per query and round), recording its calls."""

    def __init__(self, S):
        self.S = S
        self.calls = []

    def __call__(self, q, ids):
        self.calls.append((q, np.array(ids), ids.flags.writeable))
        return self.S[q, ids]


def assert_same(a, b):
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.scored_ids, b.scored_ids)
    np.testing.assert_array_equal(a.scored_scores, b.scored_scores)
    assert a.n_ce_calls == b.n_ce_calls
    assert (a.u is None) == (b.u is None)
    if a.u is not None:
        np.testing.assert_array_equal(a.u, b.u)
    assert len(a.rounds) == len(b.rounds)
    for ra, rb in zip(a.rounds, b.rounds):
        np.testing.assert_array_equal(ra.ids, rb.ids)
        np.testing.assert_array_equal(ra.scores, rb.scores)
        assert ra.fit_rmse == rb.fit_rmse or (np.isnan(ra.fit_rmse) and np.isnan(rb.fit_rmse))


def per_query_settings(nq, n, d, rng, Q=None):
    budgets = [int(b) for b in rng.integers(20, 80, size=nq)]
    rounds = [int(r) for r in rng.integers(1, 7, size=nq)]
    ks = [int(rng.integers(1, b + 1)) for b in budgets]
    inits = [None if i % 3 == 0 else rng.integers(0, n, size=int(rng.integers(1, 40))) for i in range(nq)]
    u0 = [None if i % 2 == 0 else rng.standard_normal(d).astype(np.float32) for i in range(nq)]
    lams = [0.0 if u is None else float(rng.uniform(0, 1)) for u in u0]
    seeds = [int(s) for s in rng.integers(0, 1000, size=nq)]
    return dict(budget=budgets, k=ks, rounds=rounds, init=inits, u0=u0, lam=lams, seed=seeds)


def sequential(index, queries, ce, settings, **common):
    out = []
    for i, q in enumerate(queries):
        kw = {name: (v[i] if isinstance(v, list) else v) for name, v in settings.items()}
        out.append(adaptive_search(index, q, ce, **kw, **common))
    return out


@pytest.mark.parametrize("data", ["random", "ties"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_equals_single_query_search_with_per_query_settings(data, dtype):
    if data == "random":
        Q, V, S = low_rank()
    else:
        V, S = tie_heavy()
    index = axn_fast.Index(V, dtype=dtype)
    rng = np.random.default_rng(7)
    queries = list(range(S.shape[0]))
    settings = per_query_settings(len(queries), index.n_items, index.dim, rng)
    batch_ce = axn_fast.DenseScoreCE(S)
    got = adaptive_search_batch(index, queries, batch_ce, **settings)
    want = sequential(index, queries, axn_fast.DenseScoreCE(S), settings)
    assert len(got) == len(want) == len(queries)
    for g, w in zip(got, want):
        assert_same(g, w)
    # one CE call per round for all the queries in it
    assert batch_ce.n_batches == max(settings["rounds"])
    assert batch_ce.n_calls == sum(settings["budget"])


def test_plain_callable_ce_is_called_per_query_and_gives_the_same_results():
    Q, V, S = low_rank(n_queries=5)
    index = axn_fast.Index(V)
    ce = PlainCE(S)
    got = adaptive_search_batch(index, [0, 1, 2, 3, 4], ce, 40, k=5, rounds=4, seed=3)
    want = [adaptive_search(index, q, axn_fast.DenseScoreCE(S), 40, k=5, rounds=4, seed=3) for q in range(5)]
    for g, w in zip(got, want):
        assert_same(g, w)
    assert [q for q, _, _ in ce.calls] == [0, 1, 2, 3, 4] * 4  # lockstep: round by round
    assert not any(writeable for _, _, writeable in ce.calls)  # the CE is handed read-only ids


def test_normalization_and_shared_scalars():
    Q, V, S = low_rank(n_queries=4, seed=5)
    index = axn_fast.Index(V)
    U0 = Q + 0.3
    got = adaptive_search_batch(index, [0, 1, 2, 3], axn_fast.DenseScoreCE(S), 30, k=4, rounds=3, u0=U0, lam=0.2,
                                normalization=(0.5, 2.0))
    for q in range(4):
        w = adaptive_search(index, q, axn_fast.DenseScoreCE(S), 30, k=4, rounds=3, u0=U0[q], lam=0.2,
                            normalization=(0.5, 2.0))
        assert_same(got[q], w)


def test_timings_add_up():
    Q, V, S = low_rank(n_queries=3)
    res = adaptive_search_batch(axn_fast.Index(V), [0, 1, 2], axn_fast.DenseScoreCE(S), 30, k=3, rounds=3, seed=0)
    for r in res:
        assert all(x.seconds_search > 0 and x.seconds_solve > 0 and x.seconds_ce >= 0 for x in r.rounds)


def test_empty_batch():
    Q, V, S = low_rank(n_queries=2)
    assert adaptive_search_batch(axn_fast.Index(V), [], axn_fast.DenseScoreCE(S), 10) == []


class FailingBatchCE(axn_fast.DenseScoreCE):
    """score_batch raises on its ``fail_at``-th call (0-based)."""

    def __init__(self, S, fail_at):
        super().__init__(S)
        self.fail_at = fail_at
        self.n = 0

    def score_batch(self, queries, ids_per_query):
        if self.n == self.fail_at:
            raise ConnectionError("GPU server went away")
        self.n += 1
        return super().score_batch(queries, ids_per_query)


def test_batch_ce_failing_mid_search_keeps_every_querys_partial():
    Q, V, S = low_rank(n_queries=4)
    index = axn_fast.Index(V)
    rounds = [5, 2, 4, 5]
    with pytest.raises(axn_fast.SearchInterrupted, match="ConnectionError.*list") as info:
        adaptive_search_batch(index, [0, 1, 2, 3], FailingBatchCE(S, fail_at=3), 50, k=5, rounds=rounds, seed=2)
    assert isinstance(info.value.__cause__, ConnectionError)
    partials = info.value.partial
    assert isinstance(partials, list) and len(partials) == 4
    for q, p in enumerate(partials):
        full = adaptive_search(index, q, axn_fast.DenseScoreCE(S), 50, k=5, rounds=rounds[q], seed=2)
        done = min(3, rounds[q])  # query 1 had finished its 2 rounds
        assert len(p.rounds) == done
        n = sum(len(r.ids) for r in full.rounds[:done])
        np.testing.assert_array_equal(p.scored_ids, full.scored_ids[:n])
        np.testing.assert_array_equal(p.scored_scores, S[q, p.scored_ids])
        if done == rounds[q]:
            assert_same(p, full)


def test_plain_ce_failing_keeps_the_queries_scored_before_it_in_that_round():
    Q, V, S = low_rank(n_queries=3)
    calls = []

    def flaky(q, ids):
        calls.append(q)
        if len(calls) == 5:  # round 2, query 1
            raise TimeoutError("slow")
        return S[q, ids]

    with pytest.raises(axn_fast.SearchInterrupted, match="TimeoutError") as info:
        adaptive_search_batch(axn_fast.Index(V), [0, 1, 2], flaky, 30, k=3, rounds=3, seed=0)
    assert [len(p.rounds) for p in info.value.partial] == [2, 1, 1]
    for q, p in enumerate(info.value.partial):
        np.testing.assert_array_equal(p.scored_scores, S[q, p.scored_ids])


def test_bad_scores_and_overflowing_fit_carry_the_partials():
    Q, V, S = low_rank(n_queries=3)

    class BadRound2(axn_fast.DenseScoreCE):
        n = 0

        def score_batch(self, queries, ids_per_query):
            out = super().score_batch(queries, ids_per_query)
            self.n += 1
            if self.n == 2:
                out[1] = out[1][:-1]
            return out

    with pytest.raises(axn_fast.CrossEncoderError, match="shape") as info:
        adaptive_search_batch(axn_fast.Index(V), [0, 1, 2], BadRound2(S), 30, k=3, rounds=3, seed=0)
    assert [len(p.rounds) for p in info.value.partial] == [1, 1, 1]

    S_big = S.copy()
    S_big[1] = np.where(S[1] > 0, 3e38, -3e38)  # within float32, but with small V the fit overflows
    with pytest.raises(axn_fast.CrossEncoderError, match="query 1: .*not finite") as info:
        adaptive_search_batch(axn_fast.Index(V * 1e-3), [0, 1, 2], axn_fast.DenseScoreCE(S_big), 30, k=3, rounds=3,
                              seed=0)
    assert len(info.value.partial) == 3 and len(info.value.partial[1].rounds) == 1


def test_keyboard_interrupt_gets_the_partials():
    Q, V, S = low_rank(n_queries=2)

    class Interrupting(axn_fast.DenseScoreCE):
        n = 0

        def score_batch(self, queries, ids_per_query):
            self.n += 1
            if self.n == 2:
                raise KeyboardInterrupt
            return super().score_batch(queries, ids_per_query)

    with pytest.raises(KeyboardInterrupt) as info:
        adaptive_search_batch(axn_fast.Index(V), [0, 1], Interrupting(S), 20, k=3, rounds=2, seed=0)
    assert [p.n_ce_calls for p in info.value.partial] == [10, 10]


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(budget=[10, 10]), ValueError, "budget has 2 entries but there are 3 queries"),
    (dict(budget=[10, 10, 10**6]), ValueError, "query 2: budget must be <= the number of items"),
    (dict(budget=10, k=[1, 11, 1]), ValueError, "query 1: k must be <= budget"),
    (dict(budget=10, rounds=2.0), TypeError, "query 0: rounds must be an integer"),
    (dict(budget=10, lam=[0.0, 0.5, 0.0]), ValueError, "query 1: lam > 0 needs u0"),
    (dict(budget=10, u0=np.ones((2, 16))), ValueError, "u0 has 2 rows but there are 3 queries"),
    (dict(budget=10, u0=[None, np.ones(3), None]), ValueError, "query 1: u0 must have 16 columns"),
    (dict(budget=10, init=[None, None, [0, 10**6]]), ValueError, "query 2: init contains id"),
    (dict(budget=10, init=[[1, 2]]), ValueError, "init has 1 entries"),
])
def test_bad_arguments_name_the_query_and_argument(kwargs, exc, match):
    Q, V, S = low_rank(n_queries=3, n_items=200)
    ce = axn_fast.DenseScoreCE(S)
    with pytest.raises(exc, match=match):
        adaptive_search_batch(axn_fast.Index(V), [0, 1, 2], ce, **kwargs)
    assert ce.n_calls == 0


def test_refuses_a_single_text_as_queries():
    Q, V, S = low_rank(n_queries=2)
    with pytest.raises(TypeError, match="sequence of queries"):
        adaptive_search_batch(axn_fast.Index(V), "a query", axn_fast.DenseScoreCE(S), 10)


def test_index_method_forwards():
    Q, V, S = low_rank(n_queries=3)
    index = axn_fast.Index(V)
    got = index.adaptive_search_batch([2, 0], axn_fast.DenseScoreCE(S), [20, 30], k=[2, 5], rounds=2, seed=4)
    for q, b, k, g in zip([2, 0], [20, 30], [2, 5], got):
        assert_same(g, index.adaptive_search(q, axn_fast.DenseScoreCE(S), b, k=k, rounds=2, seed=4))


ITEM_TEXTS = ["bank: sloping land beside a body of water", "a financial institution that accepts deposits",
              "bank: a long ridge or pile", "fire: the act of firing weapons at an enemy", "unit",
              "a whole of the same kind or category as another, a much longer item text than the others"]


@pytest.mark.parametrize("head", ["emb-dot", "cls"])
def test_hf_cross_encoder_score_batch_mixes_queries_and_matches_per_query_calls(tmp_path, head):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from _hf_models import tiny_bert

    from axn_fast.encoders.cross_encoder import HFCrossEncoder

    path = tiny_bert(tmp_path / "tiny", classifier=head == "cls")
    queries = ["he cashed a check at the bank", "the river bank", "he cashed a check at the bank"]
    ids = [np.array([0, 1, 5]), np.array([2, 3, 4, 0]), np.array([1, 2])]
    ce = HFCrossEncoder(path, ITEM_TEXTS, head=head, batch_size=4, show_progress_bar=False)
    batches = []
    forward = ce._forward
    ce._forward = lambda batch: batches.append(batch["input_ids"].shape[0]) or forward(batch)
    got = ce.score_batch(queries, ids)
    ref = HFCrossEncoder(path, ITEM_TEXTS, head=head, batch_size=4, show_progress_bar=False)
    for q, i, g in zip(queries, ids, got):
        assert g.dtype == np.float32 and g.shape == i.shape
        np.testing.assert_allclose(g, ref(q, i), rtol=1e-5, atol=1e-6)
    assert ce.n_calls == 8  # the repeated query's pair (q0, item 1) is scored once
    assert batches == [4, 4]  # the pairs of all queries share full model batches
    again = ce.score_batch(queries[:2], ids[:2])  # from the cache
    assert ce.n_calls == 8 and ce.n_cached == 1 + 7
    for a, g in zip(again, got):
        np.testing.assert_array_equal(a, g)


def test_sentence_transformers_ce_score_batch(tmp_path):
    pytest.importorskip("sentence_transformers")
    from _hf_models import tiny_bert
    from sentence_transformers import CrossEncoder

    from axn_fast.encoders.cross_encoder import SentenceTransformersCE

    path = tiny_bert(tmp_path / "tiny", classifier=True)
    model = CrossEncoder(str(path), num_labels=1, device="cpu")
    ce = SentenceTransformersCE(model, ITEM_TEXTS, batch_size=3)
    got = ce.score_batch(["q one", "q two"], [np.array([3, 1]), np.array([0, 1, 2, 5])])
    ref = SentenceTransformersCE(model, ITEM_TEXTS, batch_size=3)
    np.testing.assert_allclose(got[0], ref("q one", np.array([3, 1])), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], ref("q two", np.array([0, 1, 2, 5])), rtol=1e-5, atol=1e-6)
    assert ce.n_calls == 6


def test_batched_search_with_a_real_ce_equals_single_queries_given_the_same_scores(tmp_path):
    """AXN in lockstep over a tiny HF CE: one score_batch call per round; results equal per-query AXN
    fed by the scores the batched CE produced (the CE's cache makes the per-query runs reuse them)."""
    pytest.importorskip("torch")
    from _hf_models import tiny_bert

    from axn_fast.encoders.boundary import CountingCrossEncoder
    from axn_fast.encoders.cross_encoder import HFCrossEncoder

    items = [f"item {i} about {w}" for i, w in enumerate(["banks", "rivers", "money", "fire", "units"] * 8)]
    ce = HFCrossEncoder(tiny_bert(tmp_path / "tiny"), items, head="emb-cos", batch_size=16, show_progress_bar=False)
    V = np.random.default_rng(0).standard_normal((len(items), 8)).astype(np.float32)
    index = axn_fast.Index(V)
    queries = ["money in the bank", "a river bank", "fire"]
    counting = CountingCrossEncoder(ce)
    got = adaptive_search_batch(index, queries, counting, 12, k=3, rounds=3, seed=1)
    assert counting.n_batches == 3  # one CE call per round for the three queries
    n_model = ce.n_calls
    for q, g in zip(queries, got):
        assert_same(g, adaptive_search(index, q, ce, 12, k=3, rounds=3, seed=1))
    assert ce.n_calls == n_model  # the per-query runs asked for exactly the pairs already scored
