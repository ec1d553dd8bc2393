"""Index construction, argument checks, thread safety, fork safety, GIL release."""
import multiprocessing
import os
import threading

import numpy as np
import pytest

import axn_fast


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((4000, 24)).astype(np.float32), rng.standard_normal((6, 24)).astype(np.float32)


def test_properties(data):
    V, _ = data
    index = axn_fast.Index(V, dtype="float16", num_threads=1)
    assert (index.n_items, index.dim, index.dtype, index.num_threads, len(index)) == (4000, 24, "float16", 1, 4000)
    assert index.vectors.dtype == np.float32 and not index.vectors.flags.writeable
    assert "n_items=4000" in repr(index)


def test_accepts_other_numeric_dtypes_and_layouts(data):
    V, U = data
    ref = axn_fast.Index(V).search(U, 5)
    for V2 in (V.astype(np.float64), np.asfortranarray(V)):
        s, i = axn_fast.Index(V2).search(U.astype(np.float64), 5)
        np.testing.assert_array_equal(i, ref[1])


@pytest.mark.parametrize("V,exc,match", [
    (np.zeros((3,), np.float32), ValueError, "V must be 2-D"),
    (np.zeros((0, 4), np.float32), ValueError, "at least one item"),
    (np.array([[1.0, np.nan]], np.float32), ValueError, "finite"),
    (np.array([[1.0, np.inf]], np.float32), ValueError, "finite"),
    (np.array([["a", "b"]]), TypeError, "numeric"),
])
def test_bad_V(V, exc, match):
    with pytest.raises(exc, match=match):
        axn_fast.Index(V)


def test_bad_construction_options():
    V = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match="dtype must be"):
        axn_fast.Index(V, dtype="int8")
    with pytest.raises(ValueError, match="num_threads"):
        axn_fast.Index(V, num_threads=-1)
    with pytest.raises(ValueError, match="float16's range"):
        axn_fast.Index(V * 1e6, dtype="float16")
    with pytest.raises(ValueError, match="beta > 0"):
        axn_fast.Index(V, normalization=(0.0, -1.0))


def test_bad_search_arguments(data):
    V, U = data
    index = axn_fast.Index(V)
    with pytest.raises(ValueError, match="U must have 24 columns"):
        index.search(np.ones(5, np.float32), 3)
    with pytest.raises(ValueError, match="U must be 1-D or 2-D"):
        index.search(np.ones((1, 1, 24), np.float32), 3)
    with pytest.raises(ValueError, match="finite"):
        index.search(np.full(24, np.nan, np.float32), 3)
    with pytest.raises(ValueError, match="k must be >= 0"):
        index.search(U, -1)
    with pytest.raises(TypeError, match="k must be an integer"):
        index.search(U, 2.5)
    with pytest.raises(ValueError, match="outside \\[0, 4000\\)"):
        index.search(U, 3, exclude=[0, 4000])
    with pytest.raises(ValueError, match="outside"):
        index.search(U, 3, exclude=[-1])
    with pytest.raises(ValueError, match="one list per query"):
        index.search(U, 3, exclude=[[1], [2]])
    with pytest.raises(TypeError, match="integer item ids"):
        index.search(U, 3, exclude=np.array([0.5]))


def test_concurrent_searches_equal_serial(data):
    V, U = data
    rng = np.random.default_rng(1)
    big = rng.standard_normal((60000, 32)).astype(np.float32)
    queries = rng.standard_normal((64, 32)).astype(np.float32)
    excl = [rng.choice(60000, 50, replace=False) for _ in range(64)]
    for dtype in ("float32", "float16"):
        index = axn_fast.Index(big, dtype=dtype, num_threads=2)
        serial = [index.search(queries[j], 20, exclude=excl[j]) for j in range(64)]
        results = [None] * 64
        errors = []

        def worker(t):
            try:
                for j in range(t, 64, 8):
                    results[j] = index.search(queries[j], 20, exclude=excl[j])
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        for (s, i), (s2, i2) in zip(serial, results):
            np.testing.assert_array_equal(i, i2)
            np.testing.assert_array_equal(s, s2)


def _child_search(conn_args):
    V, u = conn_args
    return axn_fast.Index(V, num_threads=2).search(u, 5)[1].tolist()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_forked_child_searches_without_hanging():
    rng = np.random.default_rng(2)
    V = rng.standard_normal((200000, 16)).astype(np.float32)
    u = rng.standard_normal(16).astype(np.float32)
    index = axn_fast.Index(V, num_threads=2)
    expected = index.search(u, 5)[1].tolist()  # the parent has run a multi-threaded scan
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        res = pool.map_async(_child_search, [(V, u)] * 2)
        got = res.get(timeout=60)  # a hang (as with GNU OpenMP) fails here
    assert got == [expected, expected]


def test_search_releases_the_gil():
    import time

    rng = np.random.default_rng(3)
    V = rng.standard_normal((400000, 64)).astype(np.float32)
    index = axn_fast.Index(V, num_threads=1)
    U = rng.standard_normal((48, 64)).astype(np.float32)
    done = threading.Event()
    span = []

    def search():
        t0 = time.perf_counter()
        index.search(U, 10)
        span.append(time.perf_counter() - t0)
        done.set()

    stamps = []
    th = threading.Thread(target=search)
    th.start()
    while not done.is_set():
        stamps.append(time.perf_counter())
    th.join()
    # If the GIL were held during the scan, this loop would stall for the whole scan.
    longest_stall = float(np.max(np.diff(stamps))) if len(stamps) > 1 else span[0]
    assert longest_stall < 0.5 * span[0], (longest_stall, span[0])


def test_score_helper(data):
    V, U = data
    index = axn_fast.Index(V)
    ids = np.array([3, 0, 17])
    np.testing.assert_allclose(index.score(U[0], ids), V[ids] @ U[0], rtol=1e-5, atol=1e-5)
