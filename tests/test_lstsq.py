"""The incremental least-squares solve of AXN's Eq. 4 against np.linalg.pinv."""
import numpy as np
import pytest

from axn_fast import _core


def paper_formula(A, a):
    A = A.astype(np.float64)
    return np.linalg.pinv(A.T @ A) @ A.T @ a.astype(np.float64)


def rel_err(x, ref):
    return np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30)


@pytest.mark.parametrize("d,batches", [
    (64, [10, 10, 10]),          # under-determined throughout
    (32, [10, 10, 10, 10]),      # crosses m = d inside a batch
    (16, [40, 3, 1, 50]),        # over-determined from the first batch, then rank-one updates
    (48, [48, 48]),              # exactly square, then over-determined by refactoring
    (768, [50] * 10),            # the benchmark's shape
])
def test_matches_pinv_round_by_round(d, batches):
    rng = np.random.default_rng(d)
    solver = _core.IncrementalLstsq(d)
    rows, targets = [], []
    for m in batches:
        B = rng.standard_normal((m, d)).astype(np.float32)
        t = rng.standard_normal(m).astype(np.float32)
        solver.add(B, t)
        rows.append(B)
        targets.append(t)
        A, a = np.concatenate(rows), np.concatenate(targets)
        u = solver.solve()
        assert u.dtype == np.float32 and u.shape == (d,)
        assert rel_err(u, np.linalg.lstsq(A.astype(np.float64), a, rcond=None)[0]) < 1e-4
    assert rel_err(u, paper_formula(A, a)) < 1e-4
    assert solver.n_rows == sum(batches)
    assert solver.over_determined == (sum(batches) > d)
    assert not solver.used_fallback


def test_under_determined_gives_the_minimum_norm_interpolant():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 20)).astype(np.float32)
    a = rng.standard_normal(5).astype(np.float32)
    solver = _core.IncrementalLstsq(20)
    solver.add(A, a)
    u = solver.solve()
    np.testing.assert_allclose(A @ u, a, rtol=1e-4, atol=1e-4)  # zero training error ...
    ref = np.linalg.pinv(A.astype(np.float64)) @ a
    assert rel_err(u, ref) < 1e-4  # ... and no component outside the row space


def test_rank_deficient_rows_stay_near_the_pseudo_inverse():
    rng = np.random.default_rng(2)
    basis = rng.standard_normal((3, 10))
    A = (rng.standard_normal((30, 3)) @ basis).astype(np.float32)  # rank 3, 30 rows
    A[10] = A[3]  # exact duplicate rows too
    a = rng.standard_normal(30).astype(np.float32)
    solver = _core.IncrementalLstsq(10)
    for chunk in np.array_split(np.arange(30), 4):
        solver.add(np.ascontiguousarray(A[chunk]), np.ascontiguousarray(a[chunk]))
    u = solver.solve()
    # float32 rounding leaves singular values ~1e-7 of the largest: a pseudo-inverse
    # that treats them as zero is the meaningful reference
    ref = np.linalg.pinv(A.astype(np.float64), rcond=1e-5) @ a
    assert np.all(np.isfinite(u))
    assert rel_err(u, ref) < 1e-2
    assert solver.used_fallback


def test_zero_rows_and_no_rows():
    solver = _core.IncrementalLstsq(4)
    np.testing.assert_array_equal(solver.solve(), np.zeros(4, np.float32))
    solver.add(np.zeros((2, 4), np.float32), np.ones(2, np.float32))
    assert np.all(np.isfinite(solver.solve()))


def test_bad_arguments():
    with pytest.raises(ValueError, match="dim must be >= 1"):
        _core.IncrementalLstsq(0)
    solver = _core.IncrementalLstsq(3)
    with pytest.raises(ValueError, match="rows must be 2-D"):
        solver.add(np.zeros((2, 4), np.float32), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="one value per row"):
        solver.add(np.zeros((2, 3), np.float32), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="finite"):
        solver.add(np.full((1, 3), np.nan, np.float32), np.zeros(1, np.float32))
    with pytest.raises(TypeError):
        solver.add(np.zeros((2, 3), np.float64), np.zeros(2, np.float32))
