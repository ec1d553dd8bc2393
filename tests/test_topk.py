"""Index.search (the C++ top-k kernels) against plain numpy."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import axn_fast
from axn_fast import _core

from _reference import assert_topk_close, topk_reference


def int_data(rng, n, d, nq, lo=-3, hi=3):
    """Small integers: float arithmetic is exact, so ties are real and results must match exactly."""
    V = rng.integers(lo, hi + 1, size=(n, d)).astype(np.float32)
    U = rng.integers(lo, hi + 1, size=(nq, d)).astype(np.float32)
    return V, U


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("n,d,nq,k", [(1, 1, 1, 1), (7, 3, 2, 3), (300, 17, 1, 10), (1000, 64, 5, 50),
                                      (5000, 33, 16, 100), (2049, 8, 3, 2049)])
def test_matches_numpy_exactly_on_integer_data(dtype, n, d, nq, k):
    rng = np.random.default_rng(n + d + k)
    V, U = int_data(rng, n, d, nq)
    index = axn_fast.Index(V, dtype=dtype)
    scores, ids = index.search(U, k)
    ref_s, ref_i = topk_reference(V, U, k)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_array_equal(scores, ref_s.astype(np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_random_floats_tie_aware(dtype):
    rng = np.random.default_rng(1)
    V = rng.standard_normal((20000, 96)).astype(np.float32)
    U = rng.standard_normal((4, 96)).astype(np.float32)
    excl = rng.choice(20000, 300, replace=False)
    scores, ids = axn_fast.Index(V, dtype=dtype).search(U, 64, exclude=excl)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (4, 64)
    assert_topk_close(V, U, 64, scores, ids, [excl] * 4)


def test_single_query_shapes_and_equal_to_batched_row():
    rng = np.random.default_rng(2)
    V = rng.standard_normal((3000, 40)).astype(np.float32)
    U = rng.standard_normal((5, 40)).astype(np.float32)
    index = axn_fast.Index(V)
    bs, bi = index.search(U, 7)
    for q in range(5):
        s, i = index.search(U[q], 7)
        assert s.shape == (7,) and i.shape == (7,)
        np.testing.assert_array_equal(i, bi[q])
        np.testing.assert_array_equal(s, bs[q])  # bitwise: same accumulation order


def test_k_larger_than_n_pads():
    V = np.eye(3, dtype=np.float32)
    s, i = axn_fast.Index(V).search(np.array([1, 2, 3], np.float32), 5)
    np.testing.assert_array_equal(i, [2, 1, 0, -1, -1])
    np.testing.assert_array_equal(s, [3, 2, 1, -np.inf, -np.inf])


def test_k_zero():
    V = np.ones((4, 2), np.float32)
    s, i = axn_fast.Index(V).search(np.ones((3, 2), np.float32), 0)
    assert s.shape == (3, 0) and i.shape == (3, 0)


def test_all_items_excluded_pads_everything():
    V = np.arange(12, dtype=np.float32).reshape(6, 2)
    s, i = axn_fast.Index(V).search(np.ones(2, np.float32), 3, exclude=np.arange(6))
    np.testing.assert_array_equal(i, [-1, -1, -1])
    assert np.isneginf(s).all()


def test_duplicate_and_empty_exclusions():
    rng = np.random.default_rng(3)
    V, U = int_data(rng, 200, 5, 2)
    index = axn_fast.Index(V)
    dup = np.array([5, 5, 5, 9, 9, 0])
    s, i = index.search(U, 20, exclude=dup)
    ref_s, ref_i = topk_reference(V, U, 20, [dup, dup])
    np.testing.assert_array_equal(i, ref_i)
    s0, i0 = index.search(U, 20, exclude=np.array([], dtype=np.int64))
    np.testing.assert_array_equal(i0, topk_reference(V, U, 20)[1])


def test_per_query_exclusion_lists():
    rng = np.random.default_rng(4)
    V, U = int_data(rng, 500, 6, 3)
    lists = [np.array([1, 2, 3]), np.array([], dtype=np.int64), rng.choice(500, 400, replace=False)]
    s, i = axn_fast.Index(V).search(U, 30, exclude=lists)
    ref_s, ref_i = topk_reference(V, U, 30, lists)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(s, ref_s.astype(np.float32))


def test_all_scores_tied_returns_smallest_ids():
    V = np.ones((1000, 4), np.float32)
    s, i = axn_fast.Index(V, num_threads=2).search(np.ones(4, np.float32), 10, exclude=[0, 3])
    np.testing.assert_array_equal(i, [1, 2, 4, 5, 6, 7, 8, 9, 10, 11])
    assert (s == 4).all()


def test_float16_equals_float32_on_near_ties():
    """Items closer than float16 resolution: the fp16 scan alone would misorder them."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal(64).astype(np.float32)
    V = base + rng.standard_normal((20000, 64)).astype(np.float32) * 1e-4
    V[::7] = rng.standard_normal((len(V[::7]), 64)).astype(np.float32)
    U = np.stack([base, -base, rng.standard_normal(64).astype(np.float32)])
    s32, i32 = axn_fast.Index(V).search(U, 100, exclude=np.arange(0, 20000, 11))
    s16, i16 = axn_fast.Index(V, dtype="float16").search(U, 100, exclude=np.arange(0, 20000, 11))
    np.testing.assert_array_equal(i16, i32)
    np.testing.assert_array_equal(s16, s32)
    # and the fp16 scan on its own really would have got this wrong
    V16 = V.astype(np.float16).astype(np.float32)
    naive = np.argsort(-(V16 @ U[0]), kind="stable")
    naive = naive[~np.isin(naive, np.arange(0, 20000, 11))][:100]
    assert not np.array_equal(naive, i32[0])


def test_float16_error_bound_holds():
    rng = np.random.default_rng(6)
    V = (rng.standard_normal((5000, 128)) * rng.uniform(0.01, 10, size=(5000, 1))).astype(np.float32)
    u = rng.standard_normal(128).astype(np.float32)
    s32 = _core.dot_rows(V, u[None])[:, 0].astype(np.float64)
    s16 = _core.dot_rows(V.astype(np.float16).astype(np.float32), u[None])[:, 0].astype(np.float64)
    bound = _core.fp16_score_error_bound(u, float(np.linalg.norm(V.astype(np.float64), axis=1).max()))
    assert np.abs(s16 - s32).max() <= bound
    assert bound < 0.1 * np.abs(s32).max()  # and is not vacuous


def test_thread_counts_agree():
    rng = np.random.default_rng(7)
    V = rng.standard_normal((50000, 32)).astype(np.float32)
    U = rng.standard_normal((3, 32)).astype(np.float32)
    results = [axn_fast.Index(V, num_threads=t).search(U, 25) for t in (1, 2, 3, 0)]
    for s, i in results[1:]:
        np.testing.assert_array_equal(i, results[0][1])
        np.testing.assert_array_equal(s, results[0][0])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 300), d=st.integers(1, 40), nq=st.integers(1, 5), extra_k=st.integers(-300, 5),
       n_excl=st.integers(0, 320), dtype=st.sampled_from(["float32", "float16"]), seed=st.integers(0, 2**31))
def test_hypothesis_shapes_and_edges(n, d, nq, extra_k, n_excl, dtype, seed):
    rng = np.random.default_rng(seed)
    k = max(0, n + extra_k)
    V, U = int_data(rng, n, d, nq, -2, 2)
    excl = rng.integers(0, n, size=n_excl)  # duplicates on purpose
    s, i = axn_fast.Index(V, dtype=dtype, num_threads=2).search(U, k, exclude=excl)
    ref_s, ref_i = topk_reference(V, U, k, [excl] * nq)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(s, ref_s.astype(np.float32))


def test_portable_kernels_match_numpy():
    """The non-AVX2 code path (forced by AXN_FAST_DISABLE_SIMD) on exact integer data."""
    code = textwrap.dedent("""
        import numpy as np, axn_fast, sys
        sys.path.insert(0, %r)
        from _reference import topk_reference
        assert not axn_fast._core.simd_available()
        rng = np.random.default_rng(0)
        V = rng.integers(-3, 4, size=(3001, 19)).astype(np.float32)
        U = rng.integers(-3, 4, size=(6, 19)).astype(np.float32)
        ex = rng.integers(0, 3001, 100)
        for dtype in ("float32", "float16"):
            s, i = axn_fast.Index(V, dtype=dtype).search(U, 77, exclude=ex)
            rs, ri = topk_reference(V, U, 77, [ex] * 6)
            assert (i == ri).all() and (s == rs.astype(np.float32)).all(), dtype
        print("ok")
    """) % os.path.dirname(__file__)
    env = dict(os.environ, AXN_FAST_DISABLE_SIMD="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_batched_tiled_kernel_equals_single_queries_on_near_ties(dtype):
    """The batch kernel sums in another order; re-scoring must make it bitwise equal to one-query scans."""
    rng = np.random.default_rng(9)
    base = rng.standard_normal(200).astype(np.float32)
    V = base + rng.standard_normal((30000, 200)).astype(np.float32) * 1e-6
    V[::5] = rng.standard_normal((6000, 200)).astype(np.float32)
    U = np.concatenate([np.stack([base, base * 2, -base]), rng.standard_normal((14, 200)).astype(np.float32)])
    index = axn_fast.Index(V, dtype=dtype)
    bs, bi = index.search(U, 50, exclude=np.arange(0, 30000, 13))
    for q in range(len(U)):
        s, i = index.search(U[q], 50, exclude=np.arange(0, 30000, 13))
        np.testing.assert_array_equal(bi[q], i)
        np.testing.assert_array_equal(bs[q], s)


def test_tiled_kernel_error_within_bound():
    rng = np.random.default_rng(10)
    V = (rng.standard_normal((3000, 300)) * rng.uniform(0.1, 5, (3000, 1))).astype(np.float32)
    U = rng.standard_normal((19, 300)).astype(np.float32)
    canon, tiled = _core.dot_rows(V, U), _core.gemm_rows(V, U)
    M = float(np.linalg.norm(V.astype(np.float64), axis=1).max())
    bounds = np.array([_core.gemm_order_error_bound(float(np.linalg.norm(u)), M, 300) for u in U])
    assert (np.abs(tiled.astype(np.float64) - canon) <= bounds).all()
    if _core.simd_available():
        assert (tiled != canon).any()  # another order really: re-scoring is needed
    # and the index's batch results carry canonical scores
    s, i = axn_fast.Index(V).search(U, 3000)
    for q in range(19):
        np.testing.assert_array_equal(s[q], canon[i[q], q])
