"""Edge cases of the Python API: ids that must be integers and distinct, an index that owns
its float16 vectors, a per-call CE timeout, and early errors that name the argument."""
import threading
import time

import numpy as np
import pytest

import axn_fast
from axn_fast import Index, SearchInterrupted, topk_recall
from axn_fast.encoders.boundary import call_ce, call_ce_batch
from axn_fast.search.adaptive import adaptive_search
from axn_fast.search.batch import adaptive_search_batch


@pytest.fixture
def V():
    return np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)


# ---------------------------------------------------------------- topk_recall ids
def test_topk_recall_refuses_duplicate_true_ids():
    with pytest.raises(ValueError, match="true_ids must hold distinct ids"):
        topk_recall([1, 2, 3], [1, 1, 2], 3)
    with pytest.raises(ValueError, match="true_ids.*query 1"):
        topk_recall([[1], [2]], np.array([[1, 2], [3, 3]]), 2)
    assert topk_recall([1, 2, 3], [1, 2, 2], 2) == 1.0  # only the first k must be distinct


@pytest.mark.parametrize("found, true", [(["1", "2"], [1, 2]), ([1.5, 2.0], [1, 2]), ([1.0, 2.0], [1, 2]),
                                         ([1, 2], ["1", "2"]), ([1, 2], [1.0, 2.0])])
def test_topk_recall_refuses_non_integer_ids(found, true):
    with pytest.raises(ValueError, match="found_ids|true_ids") as info:
        topk_recall(found, true, 2)
    assert "integer" in str(info.value)


# ---------------------------------------------------------------- Index(dtype="float16") owns its vectors
def test_float16_index_does_not_follow_later_changes_to_V(V):
    W = V.copy()
    idx = Index(W, dtype="float16")
    U = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    before = idx.search(U, 5)
    W[:] = -W  # the caller reuses its buffer
    after = idx.search(U, 5)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(after[1], Index(V).search(U, 5)[1])
    assert not np.shares_memory(idx.vectors, W)


def test_float32_index_is_still_kept_without_a_copy(V):
    assert np.shares_memory(Index(V).vectors, V)


def test_float16_overflow_check_without_abs_temporary(V):
    W = V.copy()
    W[3, 2] = -7e4  # beyond float16 by its negative side
    with pytest.raises(ValueError, match="magnitude 7e\\+04"):
        Index(W, dtype="float16")


# ---------------------------------------------------------------- CE timeout
class _SlowCE:
    """Scores V @ u, sleeping ``delay`` seconds from call number ``slow_from`` on."""

    def __init__(self, V, slow_from, delay=5.0):
        self.V, self.slow_from, self.delay = V, slow_from, delay
        self.calls = 0
        self.release = threading.Event()

    def __call__(self, q, ids):
        self.calls += 1
        if self.calls >= self.slow_from:
            self.release.wait(self.delay)
        return self.V[ids] @ np.ones(self.V.shape[1], np.float32)


def test_call_ce_timeout_raises_search_interrupted(V):
    ce = _SlowCE(V, slow_from=1)
    t0 = time.perf_counter()
    with pytest.raises(SearchInterrupted, match="did not answer within timeout=0.2 s"):
        call_ce(ce, 0, np.arange(3), timeout=0.2)
    assert time.perf_counter() - t0 < 3.0
    ce.release.set()
    fast = _SlowCE(V, slow_from=99)
    np.testing.assert_array_equal(call_ce(fast, 0, np.arange(3), timeout=5.0), call_ce(fast, 0, np.arange(3)))
    with pytest.raises(SearchInterrupted, match="raised ZeroDivisionError"):  # CE errors keep their form
        call_ce(lambda q, ids: 1 / 0, 0, np.arange(3), timeout=5.0)


@pytest.mark.parametrize("bad, err", [(0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                                      ("1", TypeError), (True, TypeError)])
def test_timeout_is_checked(V, bad, err):
    with pytest.raises(err, match="ce_timeout"):
        adaptive_search(Index(V), 0, lambda q, ids: V[ids, 0], 10, k=2, ce_timeout=bad)
    with pytest.raises(err, match="timeout"):
        call_ce(lambda q, ids: V[ids, 0], 0, [1], timeout=bad)


def test_adaptive_search_timeout_keeps_the_paid_rounds(V):
    ce = _SlowCE(V, slow_from=3)
    with pytest.raises(SearchInterrupted, match="timeout") as info:
        adaptive_search(Index(V), 0, ce, 20, k=2, rounds=4, seed=0, ce_timeout=0.3)
    ce.release.set()
    part = info.value.partial
    assert part is not None and part.n_ce_calls == 10 and len(part.rounds) == 2


def test_adaptive_search_batch_timeout_keeps_the_paid_rounds(V):
    ce = _SlowCE(V, slow_from=3)  # per-query calls: the second query's first round is call 2
    with pytest.raises(SearchInterrupted, match="timeout") as info:
        adaptive_search_batch(Index(V), [0, 1], ce, 20, k=2, rounds=4, seed=0, ce_timeout=0.3)
    ce.release.set()
    assert [p.n_ce_calls for p in info.value.partial] == [5, 5]

    class Batched:
        def __init__(self):
            self.inner = _SlowCE(V, slow_from=2)

        def __call__(self, q, ids):
            return self.inner(q, ids)

        def score_batch(self, queries, ids_per_query):
            self.inner.calls += 1
            if self.inner.calls >= 2:
                self.inner.release.wait(5.0)
            return [V[ids] @ np.ones(8, np.float32) for ids in ids_per_query]

    b = Batched()
    with pytest.raises(SearchInterrupted, match="timeout.*pairs of 2 queries") as info:
        adaptive_search_batch(Index(V), [0, 1], b, 20, k=2, rounds=4, seed=0, ce_timeout=0.3)
    b.inner.release.set()
    assert [p.n_ce_calls for p in info.value.partial] == [5, 5]


def test_batch_scoring_timeout(V):
    with pytest.raises(SearchInterrupted, match="timeout"):
        call_ce_batch(_SlowCE(V, slow_from=1, delay=2.0), [0], [np.arange(2)], timeout=0.1)


def test_no_timeout_runs_in_the_callers_thread(V):
    seen = []
    ce = lambda q, ids: (seen.append(threading.current_thread()), V[ids, 0])[1]  # noqa: E731
    adaptive_search(Index(V), 0, ce, 10, k=2, rounds=2, seed=0)
    assert seen == [threading.main_thread()] * 2


# ---------------------------------------------------------------- early errors naming the argument
@pytest.mark.parametrize("exclude, match", [
    ([[1], 2], "exclude mixes id lists and single ids"),
    (np.array([2**64 - 1], dtype=np.uint64), "id 18446744073709551615"),
    ([1e20], "id 1e\\+20"),
    ([-1e20], "id -1e\\+20"),
    ([2**70], "id 1180591620717411303424"),
    ([-1, 2**64 - 1], "id -1,"),
])
def test_bad_exclude_is_named(V, exclude, match):
    idx = Index(V)
    for U in (V[0], V[:1]):
        with pytest.raises(ValueError, match=match):
            idx.search(U, 3, exclude=exclude)


def test_normalization_string_is_refused(V):
    with pytest.raises(TypeError, match="normalization"):
        adaptive_search(Index(V), 0, lambda q, ids: V[ids, 0], 10, k=2, normalization="ab")


@pytest.mark.parametrize("seed, err", [(-1, ValueError), ("x", TypeError), (1.5, TypeError)])
def test_bad_seed_is_named(V, seed, err):
    ce = lambda q, ids: V[ids, 0]  # noqa: E731
    with pytest.raises(err, match="seed"):
        adaptive_search(Index(V), 0, ce, 10, k=2, seed=seed)
    with pytest.raises(err, match="seed"):
        adaptive_search_batch(Index(V), [0], ce, 10, k=2, seed=seed)


def test_hf_cross_encoder_max_length_beyond_the_models_positions(tmp_path):
    from _hf_models import tiny_bert

    path = tiny_bert(tmp_path / "bert")  # max_position_embeddings=128
    with pytest.raises(ValueError, match="max_length=100000.*max_position_embeddings=128"):
        axn_fast.HFCrossEncoder(path, ["a", "b"], max_length=100000)
    ce = axn_fast.HFCrossEncoder(path, ["a", "b"], max_length=128, show_progress_bar=False)
    assert ce(["x"][0], np.arange(2)).shape == (2,)


def test_timeout_reaches_rerank_and_the_index_methods(V):
    ce = _SlowCE(V, slow_from=1)
    with pytest.raises(SearchInterrupted, match="timeout") as info:
        axn_fast.retrieve_and_rerank(np.arange(10), 0, ce, 5, k=2, ce_timeout=0.2)
    assert info.value.partial.n_ce_calls == 0
    with pytest.raises(ValueError, match="ce_timeout"):
        axn_fast.retrieve_and_rerank(np.arange(10), 0, ce, 5, k=2, ce_timeout=0)
    with pytest.raises(SearchInterrupted, match="timeout"):
        Index(V).adaptive_search(0, ce, 10, k=2, ce_timeout=0.2)
    with pytest.raises(SearchInterrupted, match="timeout"):
        Index(V).adaptive_search_batch([0], ce, 10, k=2, ce_timeout=0.2)
    ce.release.set()
