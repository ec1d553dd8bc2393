"""The C++ core at its edges: thread-start failures, non-finite scores, integer arguments.

The ranking rule for scores that are not finite (float32 overflow: 3e38 * 2 is
inf, and inf - inf is NaN) is the same in every kernel path: +inf ranks before
every finite score, -inf after them, NaN after everything; ties (NaN included)
by smaller id; the reported score is the value itself, NaN as the one quiet NaN
0x7fc00000. Each path is checked against a numpy ranking of the kernel's own
float32 scores (``_core.dot_rows``) under that rule, bit for bit.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import axn_fast
from axn_fast import _core

_NO_EXCLUDE = np.zeros(0, dtype=np.int64)
_QUIET_NAN_BITS = 0x7FC00000
_PORTABLE = os.environ.get("AXN_FAST_DISABLE_SIMD", "") not in ("", "0")


# ---------------------------------------------------------------- reference
def rank_reference(S: np.ndarray, k: int, exclude=None):
    """Top-k of the float32 scores S (nq, n) under the rule above; -inf / -1 padding."""
    nq, n = S.shape
    scores = np.full((nq, k), -np.inf, dtype=np.float32)
    ids = np.full((nq, k), -1, dtype=np.int64)
    for q in range(nq):
        keep = np.ones(n, dtype=bool)
        if exclude is not None:
            keep[np.asarray(exclude, dtype=np.int64)] = False
        cand = np.flatnonzero(keep)
        s = S[q, cand]
        nan = np.isnan(s)
        order = np.lexsort((cand, np.where(nan, 0.0, -s.astype(np.float64)), nan))[:k]
        ids[q, :len(order)] = cand[order]
        scores[q, :len(order)] = s[order]
    return scores, ids


def exclude_args(exclude):
    if exclude is None:
        return _NO_EXCLUDE, _NO_EXCLUDE
    ex = np.asarray(exclude, dtype=np.int64)
    return ex, np.array([0, len(ex)], dtype=np.int64)


def max_row_norm(V: np.ndarray) -> float:
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.sqrt(np.einsum("ij,ij->i", V.astype(np.float64), V.astype(np.float64)).max()))


def assert_same_bits(got_s, got_i, want_s, want_i, what):
    np.testing.assert_array_equal(got_i, want_i, err_msg=f"{what}: ids")
    np.testing.assert_array_equal(got_s, want_s, err_msg=f"{what}: scores")  # NaN == NaN here
    bits = np.ascontiguousarray(got_s).view(np.uint32)
    assert (bits[np.isnan(got_s)] == _QUIET_NAN_BITS).all(), f"{what}: NaN reported with another bit pattern"


def check_every_path(V: np.ndarray, U: np.ndarray, k: int, exclude=None, num_threads: int = 2):
    """Single, batched (plain and tiled) and float16 scans all equal the reference, bit for bit."""
    with np.errstate(over="ignore", invalid="ignore"):
        S = _core.dot_rows(V, U).T  # the kernel's own float32 scores, (nq, n)
    want_s, want_i = rank_reference(S, k, exclude)
    ex_ids, ex_off = exclude_args(exclude)
    norm = max_row_norm(V)
    results = {}
    results["batch"] = _core.topk_ip(V, U, k, ex_ids, ex_off, num_threads, -1.0)
    if np.isfinite(norm):
        results["batch tiled"] = _core.topk_ip(V, U, k, ex_ids, ex_off, num_threads, norm)
    with np.errstate(over="ignore", invalid="ignore"):
        V16 = V.astype(np.float16)
    # the float16 scan's contract: V16 is V rounded (no overflow to inf), max_i ||V[i]|| known (inf allowed)
    if not np.isnan(norm) and (np.isfinite(V16) == np.isfinite(V)).all():
        results["float16"] = _core.topk_ip_f16(V16.view(np.uint16), V, norm, U, k, ex_ids, ex_off, num_threads)
    for name, (s, i) in results.items():
        assert_same_bits(s, i, want_s, want_i, name)
    for q in range(U.shape[0]):
        s, i = _core.topk_ip(V, U[q:q + 1], k, ex_ids, ex_off, num_threads, -1.0)
        assert_same_bits(s[0], i[0], want_s[q], want_i[q], f"single query {q}")


# ---------------------------------------------------------------- non-finite scores
def overflow_case():
    W = np.ones((4, 16), np.float32)
    W[0, :2] = 3e38
    u = np.ones(16, np.float32)
    u[:2] = [2, -2]
    return W, u


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_overflow_to_nan_ranks_last_and_batch_equals_single(dtype):
    W, u = overflow_case()
    if dtype == "float16":  # float16 rows must stay below 65504: let the query overflow instead
        W = np.ones((4, 16), np.float32)
        W[0, :2] = 60000.0
        u[:2] = [3e34, -3e34]
    index = axn_fast.Index(W, dtype=dtype)
    s, i = index.search(u, 4)
    assert i.tolist() == [1, 2, 3, 0]  # item 0 is kept (not dropped and padded), ranked last
    assert np.isfinite(s[:3]).all() and np.isnan(s[3])
    if dtype == "float32":
        assert s[:3].tolist() == [14.0, 14.0, 14.0]
    bs, bi = index.search(np.stack([u, u, np.ones(16, np.float32)]), 4)
    for q in range(2):
        assert_same_bits(bs[q], bi[q], s, i, f"batch row {q}")
    check_every_path(W, np.stack([u, u, np.ones(16, np.float32)]), 4)


def test_overflow_case_every_path_and_k():
    W, u = overflow_case()
    U = np.stack([u, -u, np.ones(16, np.float32), np.full(16, 3e38, np.float32)])
    for k in range(6):
        check_every_path(W, U, k)
    check_every_path(W, U, 3, exclude=[1])


def test_infinities_rank_around_finite_scores():
    V = np.array([[1.0], [np.inf], [-np.inf], [np.nan], [2.0], [np.inf]], np.float32)
    u = np.ones((1, 1), np.float32)
    s, i = _core.topk_ip(V, u, 7, _NO_EXCLUDE, _NO_EXCLUDE, 1, -1.0)
    assert i[0].tolist() == [1, 5, 4, 0, 2, 3, -1]
    assert s[0, :6].tolist()[:5] == [np.inf, np.inf, 2.0, 1.0, -np.inf] and np.isnan(s[0, 5])
    assert s[0, 6] == -np.inf


def test_mostly_nan_scores_every_k():
    """Mostly NaN, some inf: collectors that cut their buffers must keep the right items, for any k."""
    rng = np.random.default_rng(3)
    n, d = 20000, 8
    V = rng.standard_normal((n, d)).astype(np.float32)
    V[rng.random(n) < 0.9, 0] = np.nan
    V[rng.random(n) < 0.01, 1] = np.inf
    U = rng.standard_normal((5, d)).astype(np.float32)
    for k in (1, 7, 300, n):
        check_every_path(V, U, k, exclude=np.arange(0, n, 17), num_threads=2)


_SPECIAL = [0.0, -0.0, 1.0, -1.0, 2.5, 1e5, -1e5, 1e19, 3e38, -3e38, 1.7e38, np.inf, -np.inf]
_FLOAT16_RANGE = [0.0, -0.0, 1.0, -1.0, 2.5, 6e4, -6e4, 65504.0]


def _entries(specials):
    return st.one_of(st.sampled_from(specials), st.floats(-4, 4, width=32))


@st.composite
def _cases(draw, with_nan: bool, float16_rows: bool = False):
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 20))
    nq = draw(st.integers(1, 5))
    specials = _SPECIAL + ([np.nan] if with_nan else [])
    V = draw(hnp.arrays(np.float32, (n, d), elements=_entries(_FLOAT16_RANGE if float16_rows else specials)))
    U = draw(hnp.arrays(np.float32, (nq, d), elements=_entries(specials)))
    k = draw(st.integers(0, n + 3))
    exclude = draw(st.none() | st.lists(st.integers(0, n - 1), max_size=n))
    return V, U, k, exclude


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases(with_nan=False))
def test_hypothesis_huge_and_infinite_inputs_every_path(case):
    V, U, k, exclude = case
    check_every_path(V, U, k, exclude)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases(with_nan=False, float16_rows=True))
def test_hypothesis_float16_rows_huge_queries_every_path(case):
    """Rows a float16 copy can hold (so the float16 scan runs), queries that overflow the scores."""
    V, U, k, exclude = case
    check_every_path(V, U, k, exclude)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases(with_nan=True))
def test_hypothesis_nan_inputs_every_path(case):
    V, U, k, exclude = case
    check_every_path(V, U, k, exclude)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.sampled_from(["any", "nan", "float16 rows"]))
def test_hypothesis_long_scans_every_path(seed, kind):
    """Enough items (and a small k) that the collectors cut their buffers mid-scan."""
    rng = np.random.default_rng(seed)
    n, d, nq = int(rng.integers(300, 3000)), int(rng.integers(1, 24)), int(rng.integers(1, 6))
    k = int(rng.integers(1, 20))
    specials = np.array(_FLOAT16_RANGE if kind == "float16 rows" else _SPECIAL + ([np.nan] if kind == "nan" else []),
                        np.float32)
    V = rng.standard_normal((n, d)).astype(np.float32)
    U = rng.standard_normal((nq, d)).astype(np.float32)
    mask = rng.random((n, d)) < rng.choice([0.0, 0.001, 0.02, 0.3])
    V[mask] = rng.choice(specials, int(mask.sum()))
    uspecials = np.array(_SPECIAL + ([np.nan] if kind == "nan" else []), np.float32)
    mask = rng.random((nq, d)) < rng.choice([0.0, 0.05, 0.3])
    U[mask] = rng.choice(uspecials, int(mask.sum()))
    exclude = rng.integers(0, n, int(rng.integers(0, 50))) if rng.random() < 0.5 else None
    check_every_path(V, U, k, exclude)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.sampled_from(["float32", "float16"]))
def test_hypothesis_index_huge_finite_inputs(seed, dtype):
    """Through Index (finite inputs only): overflowing scores, batch == single bit for bit."""
    rng = np.random.default_rng(seed)
    n, d, nq = int(rng.integers(1, 300)), int(rng.integers(1, 24)), int(rng.integers(2, 6))
    V = rng.standard_normal((n, d)).astype(np.float32)
    U = rng.standard_normal((nq, d)).astype(np.float32)
    big = 3e38 if dtype == "float32" else 6e4
    V[rng.random((n, d)) < 0.1] = big * rng.choice([-1, 1])
    U[rng.random((nq, d)) < 0.2] = (3e38 if dtype == "float16" else 2.0) * rng.choice([-1, 1])
    k = int(rng.integers(0, n + 3))
    index = axn_fast.Index(V, dtype=dtype, num_threads=2)
    bs, bi = index.search(U, k)
    with np.errstate(over="ignore", invalid="ignore"):
        want_s, want_i = rank_reference(_core.dot_rows(V, U).T, k)
    for q in range(nq):
        s, i = index.search(U[q], k)
        assert_same_bits(s, i, want_s[q], want_i[q], f"single {q}")
        assert_same_bits(bs[q], bi[q], want_s[q], want_i[q], f"batch {q}")


def test_simd_switch_is_honoured():
    if _PORTABLE:
        assert not _core.simd_available()


@pytest.mark.skipif(_PORTABLE, reason="already the portable run")
def test_portable_kernels_follow_the_same_rule():
    """AXN_FAST_DISABLE_SIMD is read once, when _core loads: run this module again in a child."""
    env = dict(os.environ, AXN_FAST_DISABLE_SIMD="1", HYPOTHESIS_PROFILE="default")
    here = os.path.abspath(__file__)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", here, "-q", "-x", "-p", "no:cacheprovider",
         "-k", "not portable and not thread"],
        env=env, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(here)))
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


# ---------------------------------------------------------------- threads
_THREAD_LIMIT_CHILD = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from axn_fast.search.index import Index
    rng = np.random.default_rng(0)
    V = rng.standard_normal((50000, 64)).astype(np.float32)
    Q = rng.standard_normal((64, 64)).astype(np.float32)
    ref = Index(V, num_threads=1).search(Q, 10)
    index = Index(V, num_threads=int(sys.argv[1]))
    with open("/proc/self/status") as f:
        vm = int(next(l for l in f if l.startswith("VmSize")).split()[1]) * 1024
    limit = vm + int(sys.argv[2]) * 2**20  # room for the scan, not for hundreds of thread stacks
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        s, i = index.search(Q, 10)
    except MemoryError as exc:  # acceptable: a clean Python exception (many cores: much per-thread state)
        print("MemoryError:", exc)
    else:
        assert (i == ref[1]).all() and (s == ref[0]).all(), "wrong result on fewer threads"
        print("ok")
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
@pytest.mark.parametrize("headroom_mib", [40, 150, 400])
def test_thread_start_failure_does_not_kill_the_process(headroom_mib):
    """Under an address-space limit most threads cannot start: the search must finish (on fewer
    threads) and be right, or raise a Python exception; it used to abort (exit 134)."""
    out = subprocess.run([sys.executable, "-c", _THREAD_LIMIT_CHILD, "1024", str(headroom_mib)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr[-2000:])
    assert out.stdout.strip() == "ok" or out.stdout.startswith("MemoryError: out of memory during the top-k scan")


def test_num_threads_out_of_range_names_the_argument():
    V = np.ones((10, 4), np.float32)
    U = np.ones((2, 4), np.float32)
    assert _core.MAX_THREADS == 1024 and _core.MAX_PADDED_K == 2**20
    for bad in (2**31, 2**63, 1025, -1):
        with pytest.raises(ValueError, match=r"num_threads must be between 0 and 1024.*got " + str(bad)):
            _core.topk_ip(V, U, 3, _NO_EXCLUDE, _NO_EXCLUDE, bad, -1.0)
        with pytest.raises(ValueError, match="num_threads"):
            _core.topk_ip_f16(V.astype(np.float16).view(np.uint16), V, 2.0, U, 3, _NO_EXCLUDE, _NO_EXCLUDE, bad)
    with pytest.raises(TypeError, match="num_threads must be an integer"):
        _core.topk_ip(V, U, 3, _NO_EXCLUDE, _NO_EXCLUDE, 2.0, -1.0)
    # the most threads allowed still works, and trimming to the cores changes nothing
    s, i = _core.topk_ip(V, U, 3, _NO_EXCLUDE, _NO_EXCLUDE, np.int64(1024), -1.0)
    assert i.tolist() == [[0, 1, 2]] * 2
    with pytest.raises(ValueError, match="num_threads"):
        axn_fast.Index(V, num_threads=2**31).search(U, 3)


def test_sgd_integer_arguments_name_the_argument():
    rows = np.array([0, 1], np.int64)
    cols = np.array([1, 0], np.int64)
    vals = np.array([1.0, 2.0], np.float32)
    with pytest.raises(ValueError, match=r"seed must be between 0 and 18446744073709551615, got -1"):
        _core.SparseSgd(rows, cols, vals, 2, 2, 1, -1)
    with pytest.raises(ValueError, match="seed .*got 18446744073709551616"):
        _core.SparseSgd(rows, cols, vals, 2, 2, 1, 2**64)
    with pytest.raises(TypeError, match="seed must be an integer, got str"):
        _core.SparseSgd(rows, cols, vals, 2, 2, 1, "x")
    sgd = _core.SparseSgd(rows, cols, vals, 2, 2, 1, 2**64 - 1)
    U = np.ones((2, 3), np.float32)
    V = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="num_threads must be between 0 and 1024"):
        sgd.epoch(U, V, 0.1, 0.0, 2**31, 0)
    with pytest.raises(ValueError, match="num_threads must be between 0 and 1024"):
        _core.sparse_rmse(rows, cols, vals, U, V, 5000)


# ---------------------------------------------------------------- k
def test_k_out_of_range_names_the_argument():
    V = np.ones((50, 4), np.float32)
    index = axn_fast.Index(V)
    u = np.ones(4, np.float32)
    for bad in (2**63, 10**9, 2**20 + 1):
        with pytest.raises(ValueError, match=r"k must be .*1048576.*got " + str(bad)):
            index.search(u, bad)
        with pytest.raises(ValueError, match=r"k must be between 0 and 1048576 .*n_items=50.*got " + str(bad)):
            _core.topk_ip(V, u[None], bad, _NO_EXCLUDE, _NO_EXCLUDE, 1, -1.0)
    with pytest.raises(ValueError, match=r"k must be .*1048576"):
        axn_fast.Index(V, dtype="float16").search(u, 10**9)
    with pytest.raises(TypeError, match="k must be an integer"):
        _core.topk_ip(V, u[None], 2.0, _NO_EXCLUDE, _NO_EXCLUDE, 1, -1.0)
    s, i = index.search(u, 2**20)  # padding up to the bound is still allowed
    assert (i[:50] == np.arange(50)).all() and (i[50:] == -1).all() and np.isneginf(s[50:]).all()


def test_num_threads_is_refused_at_construction_with_the_core_bound():
    from axn_fast._validation import MAX_THREADS

    assert MAX_THREADS == _core.MAX_THREADS
    V = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match="num_threads"):
        axn_fast.Index(V, num_threads=MAX_THREADS + 1)
    axn_fast.Index(V, num_threads=MAX_THREADS)  # the bound itself is allowed
