"""retrieve_and_rerank, topk_recall and DenseScoreCE."""
import threading

import numpy as np
import pytest

import axn_fast


@pytest.fixture()
def S():
    return np.random.default_rng(0).standard_normal((4, 50)).astype(np.float32)


def test_rerank_scores_the_first_budget_distinct_candidates(S):
    ce = axn_fast.DenseScoreCE(S)
    cand = np.array([3, 3, 10, 7, 44, 1, 2])
    res = axn_fast.retrieve_and_rerank(cand, 2, ce, budget=4, k=2)
    np.testing.assert_array_equal(res.scored_ids, [3, 10, 7, 44])
    assert ce.n_calls == 4 and ce.n_batches == 1 and res.n_ce_calls == 4 and res.u is None
    best = np.array([3, 10, 7, 44])[np.argsort(-S[2, [3, 10, 7, 44]])[:2]]
    np.testing.assert_array_equal(res.ids, best)
    np.testing.assert_array_equal(res.scores, S[2, best])


def test_rerank_with_fewer_candidates_than_budget(S):
    res = axn_fast.retrieve_and_rerank([5, 6], 0, axn_fast.DenseScoreCE(S), budget=10, k=5)
    assert res.n_ce_calls == 2 and len(res.ids) == 2


def test_rerank_bad_input(S):
    ce = axn_fast.DenseScoreCE(S)
    with pytest.raises(ValueError, match="k must be <= budget"):
        axn_fast.retrieve_and_rerank([1, 2, 3], 0, ce, 3, k=5)
    with pytest.raises(TypeError, match="integer item ids"):
        axn_fast.retrieve_and_rerank([1.5], 0, ce, 3, k=1)
    with pytest.raises(ValueError, match="negative"):
        axn_fast.retrieve_and_rerank([-1, 2], 0, ce, 3, k=1)
    with pytest.raises(TypeError, match="callable"):
        axn_fast.retrieve_and_rerank([1], 0, "not a ce", 3, k=1)
    with pytest.raises(axn_fast.SearchInterrupted, match="outside") as info:  # the CE itself checks ids
        axn_fast.retrieve_and_rerank([1, 99], 0, ce, 3, k=1)
    assert isinstance(info.value.__cause__, ValueError) and info.value.partial.n_ce_calls == 0


def test_topk_recall_by_hand():
    true = np.array([9, 8, 7, 6, 5])
    assert axn_fast.topk_recall(np.array([9, 1, 2]), true, 1) == 1.0
    assert axn_fast.topk_recall(np.array([1, 8, 2]), true, 1) == 0.0
    assert axn_fast.topk_recall(np.array([6, 7, 0, -1, -1]), true, 4) == 0.5
    assert axn_fast.topk_recall(np.array([], dtype=np.int64), true, 2) == 0.0
    got = axn_fast.topk_recall([np.array([9, 8]), np.array([7])], np.array([[9, 8, 7], [7, 9, 8]]), 2)
    np.testing.assert_array_equal(got, [1.0, 0.5])
    with pytest.raises(ValueError, match="fewer than k"):
        axn_fast.topk_recall([1], true, 6)
    with pytest.raises(ValueError, match="2 queries"):
        axn_fast.topk_recall([np.array([1]), np.array([2])], np.zeros((3, 4), np.int64), 2)


def test_dense_score_ce_counts_and_checks(S):
    ce = axn_fast.DenseScoreCE(S.astype(np.float16))
    np.testing.assert_allclose(ce(1, np.array([0, 3])), S[1, [0, 3]], rtol=1e-3, atol=1e-3)
    threads = [threading.Thread(target=ce, args=(0, np.arange(10))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ce.n_calls == 82 and ce.n_batches == 9
    ce.reset_counts()
    assert ce.n_calls == 0
    with pytest.raises(ValueError, match="row of the score matrix"):
        ce(4, [0])
    with pytest.raises(ValueError, match="outside"):
        ce(0, [50])
    with pytest.raises(ValueError, match="finite"):
        axn_fast.DenseScoreCE(np.array([[np.nan]]))


def test_rerank_refuses_an_empty_candidate_list_before_calling_the_ce():
    ce = axn_fast.DenseScoreCE(np.zeros((1, 5), np.float32))
    with pytest.raises(ValueError, match="candidates must hold at least one item id"):
        axn_fast.retrieve_and_rerank([], 0, ce, 5, k=1)
    assert ce.n_calls == 0 and ce.n_batches == 0
