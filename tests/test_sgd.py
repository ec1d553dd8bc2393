"""The C++ sparse SGD kernel (csrc/core/sgd.cpp) against a plain numpy reference."""
import numpy as np
import pytest

from axn_fast import _core


def _planted(seed=0, nq=60, ni=80, nnz=1500, d=8):
    rng = np.random.default_rng(seed)
    flat = rng.choice(nq * ni, size=nnz, replace=False)
    rows, cols = (flat // ni).astype(np.int64), (flat % ni).astype(np.int64)
    vals = rng.normal(size=nnz).astype(np.float32)
    U = (0.3 * rng.normal(size=(nq, d))).astype(np.float32)
    V = (0.3 * rng.normal(size=(ni, d))).astype(np.float32)
    return rows, cols, vals, U, V


def test_one_step_matches_the_sgd_formula():
    # On a one-entry problem an epoch is exactly one regularised SGD step:
    # e = r - p.q;  p <- (1 - lr reg) p + lr e q;  q <- (1 - lr reg) q + lr e p.
    rows, cols, vals, U0, V0 = _planted(nnz=300, d=5)  # d=5: exercises the scalar tail
    lr, reg = 0.05, 0.1
    for e in range(5):
        one = _core.SparseSgd(rows[e:e + 1], cols[e:e + 1], vals[e:e + 1], 60, 80, 1, 0)
        Ua, Va = U0.copy(), V0.copy()
        one.epoch(Ua, Va, lr, reg, 1, 0)
        p, q = U0[rows[e]].astype(np.float64), V0[cols[e]].astype(np.float64)
        err = vals[e] - p @ q
        np.testing.assert_allclose(Ua[rows[e]], (1 - lr * reg) * p + lr * err * q, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(Va[cols[e]], (1 - lr * reg) * q + lr * err * p, rtol=1e-5, atol=1e-6)
        untouched = np.ones(60, bool)
        untouched[rows[e]] = False
        assert np.array_equal(Ua[untouched], U0[untouched])


def test_epoch_equals_numpy_replay_when_entries_share_no_row_or_column():
    # With all rows and all columns distinct the steps commute, so the kernel's
    # blocked, shuffled, multi-threaded pass must equal a plain numpy loop.
    rng = np.random.default_rng(3)
    n = 40
    rows = rng.permutation(n).astype(np.int64)
    cols = rng.permutation(n).astype(np.int64)
    vals = rng.normal(size=n).astype(np.float32)
    U0 = rng.normal(size=(n, 16)).astype(np.float32) * 0.5
    V0 = rng.normal(size=(n, 16)).astype(np.float32) * 0.5
    lr, reg = 0.1, 0.01
    U, V = U0.copy(), V0.copy()
    rmse = _core.SparseSgd(rows, cols, vals, n, n, 4, 1).epoch(U, V, lr, reg, 2, 0)
    Ur, Vr = U0.astype(np.float64), V0.astype(np.float64)
    errs = []
    for r, c, y in zip(rows, cols, vals):
        p, q = Ur[r].copy(), Vr[c].copy()
        e = y - p @ q
        errs.append(e)
        Ur[r] = (1 - lr * reg) * p + lr * e * q
        Vr[c] = (1 - lr * reg) * q + lr * e * p
    np.testing.assert_allclose(U, Ur, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(V, Vr, rtol=1e-5, atol=1e-6)
    assert rmse == pytest.approx(np.sqrt(np.mean(np.square(errs))), rel=1e-5)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_bit_identical_for_any_thread_count_and_repeat(threads):
    rows, cols, vals, U0, V0 = _planted(nnz=3000, d=16)
    out = []
    for t in (1, threads):
        sgd = _core.SparseSgd(rows, cols, vals, 60, 80, 8, 42)
        U, V = U0.copy(), V0.copy()
        for ep in range(3):
            sgd.epoch(U, V, 0.05, 0.01, t, ep)
        out.append((U, V))
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])


def test_different_seed_gives_different_result():
    rows, cols, vals, U0, V0 = _planted(nnz=3000, d=16)
    res = []
    for seed in (1, 2):
        U, V = U0.copy(), V0.copy()
        _core.SparseSgd(rows, cols, vals, 60, 80, 8, seed).epoch(U, V, 0.05, 0.01, 1, 0)
        res.append(U)
    assert not np.array_equal(res[0], res[1])


def test_sparse_rmse_matches_numpy():
    rows, cols, vals, U, V = _planted(nnz=4000, d=13)
    ref = np.sqrt(np.mean((vals - np.einsum("ij,ij->i", U[rows].astype(np.float64), V[cols])) ** 2))
    assert _core.sparse_rmse(rows, cols, vals, U, V, 2) == pytest.approx(ref, rel=1e-6)


def test_kernel_rejects_bad_ids_and_values():
    rows, cols, vals, U, V = _planted()
    bad = rows.copy()
    bad[3] = 60
    with pytest.raises(ValueError, match="row 60, outside"):
        _core.SparseSgd(bad, cols, vals, 60, 80, 4, 0)
    nan = vals.copy()
    nan[0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        _core.SparseSgd(rows, cols, nan, 60, 80, 4, 0)
    sgd = _core.SparseSgd(rows, cols, vals, 60, 80, 4, 0)
    with pytest.raises(ValueError, match="U must have 60 rows"):
        sgd.epoch(U[:10].copy(), V, 0.1, 0.0, 1, 0)
    with pytest.raises(ValueError, match="lr must be"):
        sgd.epoch(U, V, -1.0, 0.0, 1, 0)
