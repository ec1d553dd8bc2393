"""MF_IND: the skip-gated MLPs of AXN Appendix A.2.2."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="MF_IND needs torch (the ce extra)")
pytest.importorskip("safetensors", reason="MF_IND weights are saved as safetensors")

from axn_fast import InductiveMF, ScoreMatrix  # noqa: E402


def _numpy_forward(state, prefix, x):
    W1, b1 = state[f"{prefix}.lin1.weight"].astype(np.float64), state[f"{prefix}.lin1.bias"]
    W2, b2 = state[f"{prefix}.lin2.weight"].astype(np.float64), state[f"{prefix}.lin2.bias"]
    h = x @ W1.T + b1
    h = 0.5 * h * (1 + np.vectorize(__import__("math").erf)(h / np.sqrt(2)))  # exact gelu
    g = 1 / (1 + np.exp(-float(state[f"{prefix}.w_skip"])))
    return g * (h @ W2.T + b2) + (1 - g) * x


def test_starts_next_to_the_identity_and_matches_the_formula():
    mf = InductiveMF(16, seed=0)
    assert mf.hidden == 32
    state = mf.state_dict()
    assert float(state["query.w_skip"]) == -5.0 and float(state["item.w_skip"]) == -5.0
    assert state["query.lin1.weight"].shape == (32, 16) and state["item.lin2.weight"].shape == (16, 32)
    x = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float32)
    out_q, out_i = mf.embed_queries(x), mf.embed_items(x)
    np.testing.assert_allclose(out_q, _numpy_forward(state, "query", x.astype(np.float64)), atol=1e-5)
    np.testing.assert_allclose(out_i, _numpy_forward(state, "item", x.astype(np.float64)), atol=1e-5)
    # sigmoid(-5) = 0.0067: the output is x up to under 1% of the MLP branch
    rel = np.linalg.norm(out_q - x, axis=1) / np.linalg.norm(x, axis=1)
    assert rel.max() < 0.02
    assert not np.array_equal(out_q, out_i)  # two separate MLPs


def _planted(n_q=400, n_i=300, d=8, seed=0):
    rng = np.random.default_rng(seed)
    Xq, Xi = rng.normal(size=(n_q, d)).astype(np.float32), rng.normal(size=(n_i, d)).astype(np.float32)
    M = rng.normal(size=(d, d)) / np.sqrt(d)
    S = Xq @ M @ Xi.T  # the "CE": a bilinear form the identity map cannot express
    return Xq, Xi, S.astype(np.float32)


def test_training_fits_G_and_generalises_to_unseen_queries_and_items():
    Xq, Xi, S = _planted()
    rng = np.random.default_rng(1)
    tq, ti = 300, 200  # train on the first 300 queries x 200 items only
    rows = np.repeat(np.arange(tq), 40)
    cols = np.concatenate([rng.choice(ti, 40, replace=False) for _ in range(tq)])
    G = ScoreMatrix(rows, cols, S[rows, cols], (tq, ti))
    mf = InductiveMF(8, seed=0)
    before = mf.rmse(G, Xq[:tq], Xi[:ti])
    mf.fit(G, Xq[:tq], Xi[:ti], epochs=30, lr=0.01, batch_size=1024, seed=0, num_threads=1)
    after = mf.rmse(G, Xq[:tq], Xi[:ti])
    assert after < 0.35 * before, (before, after, mf.history.train_rmse)
    # unseen queries against unseen items: embedded without refitting
    Uq, Vi = mf.embed_queries(Xq[tq:]), mf.embed_items(Xi[ti:])
    new_rmse = np.sqrt(np.mean((Uq @ Vi.T - S[tq:, ti:]) ** 2))
    base_rmse = np.sqrt(np.mean((Xq[tq:] @ Xi[ti:].T - S[tq:, ti:]) ** 2))
    assert new_rmse < 0.5 * base_rmse
    # an item embedded alone equals its row in a batch
    np.testing.assert_allclose(mf.embed_items(Xi[250]), mf.embed_items(Xi)[250], rtol=1e-5, atol=1e-6)


def test_save_load_round_trip_is_exact(tmp_path):
    Xq, Xi, S = _planted(n_q=50, n_i=40)
    rows = np.repeat(np.arange(50), 10)
    cols = np.tile(np.arange(10), 50)
    mf = InductiveMF(8, seed=3).fit(ScoreMatrix(rows, cols, S[rows, cols], (50, 40)), Xq, Xi, epochs=2)
    mf.save(tmp_path / "mf.safetensors")
    back = InductiveMF.load(tmp_path / "mf.safetensors")
    assert back.dim == 8 and back.hidden == 16
    assert np.array_equal(back.embed_queries(Xq), mf.embed_queries(Xq))
    assert np.array_equal(back.embed_items(Xi), mf.embed_items(Xi))
    (tmp_path / "bad.safetensors").write_bytes((tmp_path / "mf.safetensors").read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        InductiveMF.load(tmp_path / "bad.safetensors")


def test_bad_input():
    mf = InductiveMF(4)
    G = ScoreMatrix([0, 1], [0, 1], [1.0, 2.0], (2, 3))
    with pytest.raises(ValueError, match="query_emb must have 4 columns"):
        mf.fit(G, np.zeros((2, 5)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="G has shape"):
        mf.fit(G, np.zeros((3, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="X must be finite"):
        mf.embed_items(np.full((2, 4), np.nan))


def _tiny_G(seed=0, nq=12, ni=30, d=8):
    rng = np.random.default_rng(seed)
    Q = rng.normal(size=(nq, d)).astype(np.float32)
    I = rng.normal(size=(ni, d)).astype(np.float32)
    rows, cols = np.meshgrid(np.arange(nq), np.arange(ni), indexing="ij")
    return ScoreMatrix(rows.ravel(), cols.ravel(), (Q @ I.T).ravel(), (nq, ni)), Q, I


def test_fit_leaves_torchs_thread_count_as_it_was():
    G, Q, I = _tiny_G()
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    InductiveMF(8).fit(G, Q, I, epochs=1, num_threads=target)
    assert torch.get_num_threads() == before
    with pytest.raises(Exception):  # fails after the thread count was set (no such device)
        InductiveMF(8).fit(G, Q, I, epochs=1, num_threads=target, device="cuda:97")
    assert torch.get_num_threads() == before  # 0.1 left it at `target` for the whole process


def test_crafted_header_is_refused_before_building_a_model(tmp_path):
    from safetensors.numpy import save_file

    mf = InductiveMF(4, seed=0)
    state = {k: np.ascontiguousarray(v) for k, v in mf.state_dict().items()}
    for hidden in ("4000000", "1000000000"):  # 0.1 built 2.2 GB / tried 128 GB of MLP first
        save_file(state, str(tmp_path / "w.safetensors"),
                  metadata={"format": "axn_fast.inductive_mf", "dim": "4", "hidden": hidden})
        assert (tmp_path / "w.safetensors").stat().st_size < 2000
        with pytest.raises(ValueError, match=f"do not fit MLPs of dim 4, hidden {hidden}"):
            InductiveMF.load(tmp_path / "w.safetensors")
    state["query.lin1.bias"] = np.full_like(state["query.lin1.bias"], np.nan)
    save_file(state, str(tmp_path / "nan.safetensors"),
              metadata={"format": "axn_fast.inductive_mf", "dim": "4", "hidden": "8"})
    with pytest.raises(ValueError, match="must be finite float32"):
        InductiveMF.load(tmp_path / "nan.safetensors")
