"""The one CE boundary: check_scores, call_ce, call_ce_batch, the call counter, the protocols."""
import numpy as np
import pytest

import axn_fast
from axn_fast.encoders.boundary import (CallCounter, CountingCrossEncoder, call_ce, call_ce_batch,
                                        check_scores)
from axn_fast.encoders.protocol import BatchCrossEncoder, CrossEncoder
from axn_fast.errors import CrossEncoderError, SearchInterrupted

torch = pytest.importorskip("torch")


def test_accepts_lists_arrays_logits_and_tensors():
    want = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    for out in ([0.5, -1.0, 2], (0.5, -1.0, 2.0), want.astype(np.float64), want.reshape(3, 1),
                torch.tensor(want), torch.tensor(want, requires_grad=True) * 1.0,
                torch.tensor(want).to(torch.bfloat16), torch.tensor(want).reshape(3, 1).half()):
        got = check_scores(out, 3)
        assert got.dtype == np.float32 and got.shape == (3,) and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
    assert check_scores(np.array([3, 4], dtype=np.int64), 2).tolist() == [3.0, 4.0]
    assert check_scores([], 0).shape == (0,)


@pytest.mark.parametrize("out,match", [
    ([1.0, 2.0], r"shape \(2,\), for 3 items"),
    (np.zeros((3, 2)), r"shape \(3, 2\)"),
    (1.5, r"shape \(\)"),
    ([1.0, float("nan"), 2.0], r"1 non-finite .* item 11"),
    (torch.tensor([1.0, float("inf"), 0.0]), r"non-finite .*Tensor"),
    ([2 ** 1100, 1, 2], r"objects that are not floats .*OverflowError"),
    ([1e300, 0.0, 0.0], r"beyond float32's range"),
    (["a", "b", "c"], r"real numeric scores; got list .*dtype <U1"),
    (["1.0", "2", "3"], r"real numeric"),  # numeric strings are not scores either
    ([True, False, True], r"dtype bool"),
    ([1 + 2j, 0, 0], r"dtype complex"),
    (None, r"NoneType"),
    ({"scores": [1, 2, 3]}, r"dict"),
])
def test_rejects_unusable_output_naming_it(out, match):
    with pytest.raises(CrossEncoderError, match=match) as info:
        check_scores(out, 3, ids=np.array([10, 11, 12]))
    assert info.value.partial is None and isinstance(info.value, ValueError)


def test_call_ce_hands_a_read_only_copy():
    seen = []

    def ce(q, ids):
        seen.append(ids)
        assert ids.dtype == np.int64 and not ids.flags.writeable
        return np.zeros(len(ids))

    ids = np.array([5, 1, 3])
    call_ce(ce, "q", ids)
    assert seen[0] is not ids and not np.shares_memory(seen[0], ids)

    def sorting_ce(q, ids):
        ids.sort()  # reordering in place would attach scores to the wrong items
        return np.zeros(len(ids))

    with pytest.raises(SearchInterrupted, match="ValueError") as info:
        call_ce(sorting_ce, "q", ids)
    assert isinstance(info.value.__cause__, ValueError)
    assert ids.tolist() == [5, 1, 3]


def test_search_with_an_in_place_reordering_ce_keeps_what_was_paid():
    rng = np.random.default_rng(0)
    V = rng.standard_normal((200, 8)).astype(np.float32)
    S = rng.standard_normal((1, 200)).astype(np.float32)
    calls = []

    def ce(q, ids):
        calls.append(1)
        if len(calls) == 3:
            ids.sort()
        return S[q, ids]

    with pytest.raises(SearchInterrupted) as info:
        axn_fast.Index(V).adaptive_search(0, ce, 50, k=5, rounds=5)
    part = info.value.partial
    assert part.n_ce_calls == 20 and len(part.rounds) == 2
    np.testing.assert_array_equal(part.scored_scores, S[0, part.scored_ids])


def test_keyboard_interrupt_passes_through_with_the_partial_result():
    rng = np.random.default_rng(1)
    V = rng.standard_normal((300, 8)).astype(np.float32)
    S = rng.standard_normal((1, 300)).astype(np.float32)
    calls = []

    def slow_ce(q, ids):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return S[q, ids]

    with pytest.raises(KeyboardInterrupt) as info:
        axn_fast.Index(V).adaptive_search(0, slow_ce, 50, k=5, rounds=5)
    assert type(info.value) is KeyboardInterrupt
    part = info.value.partial
    assert part.n_ce_calls == 20 and len(part.rounds) == 2
    np.testing.assert_array_equal(part.scored_scores, S[0, part.scored_ids])


def test_call_ce_batch_uses_score_batch_or_falls_back():
    S = np.arange(12, dtype=np.float32).reshape(3, 4)
    dense = axn_fast.DenseScoreCE(S)
    got = call_ce_batch(dense, [0, 2], [[1, 3], [0]])
    assert [g.tolist() for g in got] == [[1.0, 3.0], [8.0]]
    assert dense.n_batches == 1 and dense.n_calls == 3  # one call for both queries

    plain = lambda q, ids: S[q, ids]  # noqa: E731
    got = call_ce_batch(plain, [1, 0], [np.array([2]), np.array([0, 1])])
    assert [g.tolist() for g in got] == [[6.0], [0.0, 1.0]]

    class Short:
        def __call__(self, q, ids):
            return S[q, ids]

        def score_batch(self, queries, ids_per_query):
            return [S[queries[0], ids_per_query[0]]]

    with pytest.raises(CrossEncoderError, match="1 score arrays for 2 queries"):
        call_ce_batch(Short(), [0, 1], [[0], [1]])
    with pytest.raises(ValueError, match="same length"):
        call_ce_batch(plain, [0], [[0], [1]])


def test_counting_wrapper_counts_pairs_calls_and_time():
    S = np.arange(12, dtype=np.float32).reshape(3, 4)
    counted = CountingCrossEncoder(lambda q, ids: S[q, ids])
    call_ce(counted, 1, [0, 1, 2])
    counted.score_batch([0, 2], [np.array([1]), np.array([2, 3])])
    assert (counted.n_calls, counted.n_batches) == (6, 3) and counted.seconds >= 0.0

    def failing(q, ids):
        raise RuntimeError("down")

    bad = CountingCrossEncoder(failing)
    with pytest.raises(SearchInterrupted):
        call_ce(bad, 0, [1, 2])
    assert bad.n_calls == 0  # a call that raised is not counted
    counted.reset()
    assert (counted.n_calls, counted.n_batches, counted.seconds) == (0, 0, 0.0)
    with pytest.raises(TypeError, match="callable"):
        CountingCrossEncoder(3)  # type: ignore[arg-type]

    shared = CallCounter()
    a, b = CountingCrossEncoder(counted, shared), CountingCrossEncoder(counted, shared)
    a(0, np.array([1])), b(0, np.array([1, 2]))
    assert shared.n_calls == 3 and shared.n_batches == 2


def test_protocols_are_structural():
    assert isinstance(lambda q, ids: ids, CrossEncoder)
    assert not isinstance(lambda q, ids: ids, BatchCrossEncoder)
    assert isinstance(axn_fast.DenseScoreCE(np.zeros((1, 2))), BatchCrossEncoder)
    assert isinstance(CountingCrossEncoder(lambda q, ids: ids), BatchCrossEncoder)


def test_dense_score_ce_refuses_an_empty_matrix():
    with pytest.raises(ValueError, match="at least one query row"):
        axn_fast.DenseScoreCE(np.zeros((0, 3)))


def test_scores_too_large_to_fit_keep_the_partial_result():
    rng = np.random.default_rng(2)
    V = 1e-3 * rng.standard_normal((200, 16)).astype(np.float32)  # small embeddings: u = scores / |v| grows
    S = rng.standard_normal((1, 200)).astype(np.float32)
    calls = []

    def huge(q, ids):
        calls.append(1)
        out = S[q, ids].copy()
        if len(calls) == 3:
            out[:] = 3e38  # finite float32, but the least-squares fit on it overflows
        return out

    with pytest.raises(CrossEncoderError, match="not finite") as info:
        axn_fast.Index(V).adaptive_search(0, huge, 50, k=5, rounds=5, seed=0)
    part = info.value.partial
    assert part.n_ce_calls == 30 and len(part.rounds) == 3  # the third round was paid for: it is kept
    np.testing.assert_array_equal(part.scored_scores[:20], S[0, part.scored_ids[:20]])
