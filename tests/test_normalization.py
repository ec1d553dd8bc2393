"""CE score normalisation beta (s - alpha) (AXN Appendix A.4)."""
import numpy as np
import pytest

import axn_fast
from axn_fast import DenseScoreCE, Index, ScoreMatrix, ScoreNormalization, estimate_normalization
from axn_fast.indexing.normalization import normalization_from_score_matrix


def test_moment_matching_recovers_a_planted_affine_map():
    rng = np.random.default_rng(0)
    de = rng.normal(loc=0.3, scale=0.2, size=5000)
    ce = de / 0.04 + 7.0  # CE = DE / beta + alpha with beta = 0.04, alpha = 7
    norm = estimate_normalization(ce, de)
    assert norm.beta == pytest.approx(0.04, rel=1e-5) and norm.alpha == pytest.approx(7.0, rel=1e-5)
    out = norm.apply(ce)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, de, atol=1e-4)
    np.testing.assert_allclose(norm.invert(out), ce, rtol=1e-5)


def test_matches_moments_and_keeps_rankings():
    rng = np.random.default_rng(1)
    de = rng.normal(size=800)
    ce = np.exp(rng.normal(size=800)) * 5 - 3  # a different, skewed distribution
    norm = estimate_normalization(ce, de)
    out = norm.apply(ce).astype(np.float64)
    assert out.mean() == pytest.approx(de.mean(), abs=1e-4) and out.std() == pytest.approx(de.std(), rel=1e-4)
    assert np.array_equal(np.argsort(out, kind="stable"), np.argsort(ce, kind="stable"))


def test_from_score_matrix_uses_n_queries_rows_and_applies_to_G():
    rng = np.random.default_rng(2)
    Q, I = rng.normal(size=(300, 4)), rng.normal(size=(40, 4))
    rows = np.repeat(np.arange(300), 5)
    cols = rng.integers(0, 40, size=1500)
    de = np.einsum("ij,ij->i", Q[rows], I[cols])
    G = ScoreMatrix(rows, cols, 3.0 * de + 10.0, (300, 40))
    norm = normalization_from_score_matrix(G, Q, I, n_queries=100)
    assert norm.beta == pytest.approx(1 / 3, rel=1e-4) and norm.alpha == pytest.approx(10.0, rel=1e-4)
    Gn = norm.apply(G)
    assert isinstance(Gn, ScoreMatrix) and np.array_equal(Gn.rows, G.rows)
    np.testing.assert_allclose(Gn.vals, de, atol=1e-4)


def test_index_with_normalization_finds_the_same_items_and_returns_raw_scores():
    rng = np.random.default_rng(3)
    V = rng.normal(size=(300, 8)).astype(np.float32)
    u = rng.normal(size=8).astype(np.float32)
    S = (V @ u)[None, :] * 50.0 + 1000.0  # CE in a very different range than the DE
    norm = ScoreNormalization(1000.0, 1 / 50.0)
    plain = Index(V).adaptive_search(0, DenseScoreCE(S), 60, k=5, seed=0)
    normed = Index(V).adaptive_search(0, DenseScoreCE(S), 60, k=5, seed=0, normalization=norm)
    assert np.array_equal(normed.ids, np.argsort(-S[0])[:5])
    np.testing.assert_allclose(normed.scores, S[0, normed.ids], rtol=1e-6)
    assert np.array_equal(plain.scored_ids[:12], normed.scored_ids[:12])  # same random first round
    assert normed.rounds[-1].fit_rmse < 1e-3  # fits beta (s - alpha) = V u exactly


def test_bad_input():
    with pytest.raises(ValueError, match="paired"):
        estimate_normalization(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="ce_scores are all equal"):
        estimate_normalization(np.ones(5), np.arange(5.0))
    with pytest.raises(ValueError, match="ce_scores must be finite"):
        estimate_normalization([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="beta finite and > 0"):
        ScoreNormalization(0.0, -1.0)
    assert axn_fast.ScoreNormalization is ScoreNormalization
