"""axn_fast.indexing.factorize (MF_TRNS, AXN Eq. 3)."""
import numpy as np
import pytest

from axn_fast import ScoreMatrix, factorize
from axn_fast.indexing.factorize import rmse

NOISE = 0.1


def _planted(seed=0, nq=300, ni=400, rank=3, nnz=30000, n_train=27000):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(nq, rank)) / rank ** 0.25
    B = rng.normal(size=(ni, rank)) / rank ** 0.25
    flat = rng.choice(nq * ni, size=nnz, replace=False)
    rows, cols = flat // ni, flat % ni
    vals = (np.einsum("ij,ij->i", A[rows], B[cols]) + NOISE * rng.normal(size=nnz)).astype(np.float32)
    G = ScoreMatrix(rows[:n_train], cols[:n_train], vals[:n_train], (nq, ni))
    held = (rows[n_train:], cols[n_train:], vals[n_train:])
    return G, held


def test_recovers_planted_low_rank_matrix_to_noise_level():
    G, held = _planted()
    U, V, hist = factorize(G, dim=8, epochs=40, lr=0.05, reg=0.02, seed=1, validation=held)
    assert U.shape == (300, 8) and V.shape == (400, 8) and U.dtype == V.dtype == np.float32
    held_rmse = rmse(ScoreMatrix(*held, G.shape), U, V)
    signal = float(np.sqrt(np.mean(held[2].astype(np.float64) ** 2)))
    assert signal > 0.9  # the problem is not trivial: predicting 0 is ~10x worse than the noise
    assert held_rmse < 1.25 * NOISE, hist.val_rmse
    assert hist.val_rmse[hist.best_epoch] == pytest.approx(held_rmse, rel=1e-6)
    assert hist.train_rmse[0] > 5 * hist.train_rmse[-1]


def test_bit_reproducible_with_a_seed_whatever_the_threads():
    G, _ = _planted(nnz=8000, n_train=8000)
    a = factorize(G, dim=8, epochs=3, lr=0.05, reg=0.02, seed=5, num_threads=1)
    b = factorize(G, dim=8, epochs=3, lr=0.05, reg=0.02, seed=5, num_threads=1)
    c = factorize(G, dim=8, epochs=3, lr=0.05, reg=0.02, seed=5, num_threads=2)
    d = factorize(G, dim=8, epochs=3, lr=0.05, reg=0.02, seed=6, num_threads=1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1])
    assert not np.array_equal(a[1], d[1])
    assert a[2].train_rmse == b[2].train_rmse


def test_unscored_items_and_queries_keep_their_initial_embedding():
    G, _ = _planted(nnz=5000, n_train=5000)
    keep = G.cols < 350  # items 350.. and query rows 290.. never scored
    keep &= G.rows < 290
    G2 = ScoreMatrix(G.rows[keep], G.cols[keep], G.vals[keep], G.shape)
    rng = np.random.default_rng(0)
    U0 = rng.normal(size=(300, 8)).astype(np.float32) * 0.1
    V0 = rng.normal(size=(400, 8)).astype(np.float32) * 0.1
    U0_copy, V0_copy = U0.copy(), V0.copy()
    U, V, _ = factorize(G2, U0=U0, V0=V0, epochs=3, lr=0.05, reg=0.02, seed=0)
    assert np.array_equal(V[350:], V0[350:]) and np.array_equal(U[290:], U0[290:])
    assert not np.allclose(V[:350], V0[:350])
    assert np.array_equal(U0, U0_copy) and np.array_equal(V0, V0_copy)  # inputs untouched


def test_accepts_scipy_and_tuples_and_keeps_explicit_zeros():
    sparse = pytest.importorskip("scipy.sparse", reason="scipy conversion")
    G, _ = _planted(nnz=3000, n_train=3000)
    vals = G.vals.copy()
    vals[:100] = 0.0  # exact zero CE scores are observations
    G0 = ScoreMatrix(G.rows, G.cols, vals, G.shape)
    a = factorize(G0, dim=4, epochs=2, seed=3)
    b = factorize((G.rows, G.cols, vals, G.shape), dim=4, epochs=2, seed=3)
    assert np.array_equal(a[0], b[0])
    S = G0.to_scipy()
    assert S.nnz == G0.nnz and isinstance(S, sparse.csr_matrix)


def test_early_stopping_restores_best_and_target_rmse_stops():
    G, held = _planted(nnz=6000, n_train=4000)  # few entries: overfits with a big dim
    U, V, hist = factorize(G, dim=32, epochs=200, lr=0.05, reg=0.0, seed=2, validation=held, patience=3)
    assert hist.stopped_early and len(hist.val_rmse) < 200
    assert hist.best_epoch == int(np.argmin(hist.val_rmse))
    assert rmse(ScoreMatrix(*held, G.shape), U, V) == pytest.approx(min(hist.val_rmse), rel=1e-6)
    G, held = _planted()
    _, _, hist = factorize(G, dim=8, epochs=100, lr=0.05, reg=0.02, seed=1, validation=held, target_rmse=0.3)
    assert hist.val_rmse[-1] <= 0.3 and all(v > 0.3 for v in hist.val_rmse[:-1]) and hist.stopped_early


def test_bad_input_gives_clear_errors():
    G, held = _planted(nnz=2000, n_train=2000)
    with pytest.raises(ValueError, match="non-finite"):
        vals = G.vals.copy()
        vals[5] = np.nan
        factorize((G.rows, G.cols, vals, G.shape), dim=4)
    with pytest.raises(ValueError, match="cols must lie in"):
        factorize((G.rows, G.cols + 400, G.vals, G.shape), dim=4)
    with pytest.raises(ValueError, match=r"U0 must have shape \(300, 4\)"):
        factorize(G, U0=np.zeros((299, 4)), dim=4)
    with pytest.raises(ValueError, match="V0 has 5 columns but dim is 4"):
        factorize(G, dim=4, V0=np.zeros((400, 5)))
    with pytest.raises(ValueError, match="give dim"):
        factorize(G)
    with pytest.raises(ValueError, match="validation has shape"):
        factorize(G, dim=4, validation=ScoreMatrix(held[0], held[1], held[2], (301, 400)))
    with pytest.raises(ValueError, match="need validation"):
        factorize(G, dim=4, patience=2, val_fraction=0.0)
    with pytest.raises(ValueError, match="val_fraction"):
        factorize(G, dim=4, val_fraction=0.9)
    with pytest.raises(ValueError, match="reg"):
        factorize(G, dim=4, reg="strong")
    with pytest.raises(TypeError, match="G must be"):
        factorize(np.zeros((3, 3)), dim=4)
    with pytest.raises(ValueError, match="lr must be > 0"):
        factorize(G, dim=4, lr=0.0)
    with pytest.raises(FloatingPointError, match="diverged"):
        factorize(G, dim=4, lr=50.0, epochs=5, seed=0)


def test_learning_rate_schedule_is_inverse_time():
    G, _ = _planted(nnz=3000, n_train=3000)
    _, _, hist = factorize(G, dim=4, epochs=4, lr=0.04, lr_decay=0.5, seed=0)
    assert hist.lr == pytest.approx([0.04 / (1 + 0.5 * t) for t in range(4)])
    # the schedule is really used: a constant lr gives other embeddings
    a = factorize(G, dim=4, epochs=3, lr=0.04, lr_decay=0.5, seed=0)[1]
    b = factorize(G, dim=4, epochs=3, lr=0.04, lr_decay=0.0, seed=0)[1]
    assert not np.array_equal(a, b)


def _planted_sparse(n=2000, m=5000, per_row=57, rank=8, noise=0.05, seed=0):
    """A planted rank-8 matrix as sparse as a CE score matrix G (57 entries per row, 23 per
    column), values of unit std, and as many held-out entries as observed ones."""
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((n, rank)), rng.standard_normal((m, rank))
    nnz = n * per_row
    flat = rng.choice(n * m, size=2 * nnz, replace=False)
    r, c = flat // m, flat % m
    v = (np.einsum("ij,ij->i", A[r], B[c]) / np.sqrt(rank) + noise * rng.standard_normal(2 * nnz)).astype(np.float32)
    return (ScoreMatrix(r[:nnz], c[:nnz], v[:nnz], (n, m)), ScoreMatrix(r[nnz:], c[nnz:], v[nnz:], (n, m)),
            float(v.std()))


def test_defaults_do_not_overfit_a_sparse_matrix():
    G, held, std = _planted_sparse()
    U, V, hist = factorize(G, dim=16, seed=0, num_threads=1)
    err = rmse(held, U, V)
    assert err < 0.7 * std, (err, std)  # the former defaults gave ~1.03 x std: worse than predicting 0
    # the automatic hold-out: 5% of G, reported, early stopping on it, best epoch returned
    assert hist.held_out == round(0.05 * G.nnz) and len(hist.val_rmse) == len(hist.train_rmse)
    assert hist.val_rmse[hist.best_epoch] == min(hist.val_rmse)
    assert hist.reg == pytest.approx(0.15 * np.sqrt(np.mean(G.vals.astype(np.float64) ** 2)) * 16
                                     / min(0.95 * G.nnz / 2000, 0.95 * G.nnz / 5000), rel=0.05)
    # explicit settings are honoured as given: no hold-out with val_fraction=0 or a validation set
    _, _, h0 = factorize(G, dim=16, seed=0, num_threads=1, epochs=3, lr=0.01, reg=0.01, val_fraction=0.0)
    assert h0.held_out == 0 and h0.val_rmse == [] and (h0.lr0, h0.reg) == (0.01, 0.01)
    _, _, h1 = factorize(G, dim=16, seed=0, num_threads=1, epochs=3, validation=held)
    assert h1.held_out == 0 and len(h1.val_rmse) == 3
