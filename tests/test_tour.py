"""TOUR-CE / TOUR-MSE: gradients, the per-round update, and improvement over one round."""
import numpy as np
import pytest

from axn_fast.datasets.synthetic import low_rank_scores
from axn_fast.methods.tour import DEFAULT_LR, TOUR, tour_loss_and_grad


def _ce(S):
    return lambda q, ids: S[q, ids]


@pytest.mark.parametrize("loss", ["kl", "mse"])
def test_gradient_matches_finite_differences(loss):
    rng = np.random.default_rng(4)
    V = rng.standard_normal((25, 6))
    a = 3 * rng.standard_normal(25)
    u = rng.standard_normal(6)
    _, g = tour_loss_and_grad(u, V, a, loss)
    eps = 1e-6
    num = np.array([(tour_loss_and_grad(u + eps * e, V, a, loss)[0]
                     - tour_loss_and_grad(u - eps * e, V, a, loss)[0]) / (2 * eps) for e in np.eye(6)])
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7)


def test_kl_loss_value_by_hand():
    V = np.array([[1.0, 0.0], [0.0, 1.0]])
    a = np.array([0.0, np.log(3.0)])  # softmax(a) = [1/4, 3/4]
    u = np.zeros(2)  # softmax(s) = [1/2, 1/2]
    value, grad = tour_loss_and_grad(u, V, a, "kl")
    assert value == pytest.approx(0.25 * np.log(0.5) + 0.75 * np.log(1.5))
    np.testing.assert_allclose(grad, [0.25, -0.25])
    value, grad = tour_loss_and_grad(u, V, a, "mse")
    assert value == pytest.approx(0.5 * np.log(3.0) ** 2)
    np.testing.assert_allclose(grad, [0.0, -np.log(3.0)])


@pytest.mark.parametrize("loss", ["kl", "mse"])
def test_rounds_follow_the_update_rule(loss):
    d = low_rank_scores(20, 120, 4, 0.2, seed=2)
    S, V = d.scores, d.item_emb
    lr = 0.3 if loss == "kl" else 0.01
    q, u0 = 5, d.query_emb[5]
    res = TOUR(V, loss=loss, lr=lr).search(q, _ce(S), 30, u0=u0, k=5, rounds=3)
    # transcription: retrieve 10 under u, score, one gradient step on everything scored so far
    u = u0.astype(np.float64)
    seen = np.zeros(0, dtype=np.int64)
    for r in range(3):
        s = V @ u.astype(np.float32)
        s[seen] = -np.inf
        new = np.argsort(-s, kind="stable")[:10]
        np.testing.assert_array_equal(res.rounds[r].ids, new)
        seen = np.concatenate([seen, new])
        _, g = tour_loss_and_grad(u, V[seen], S[q, seen], loss)
        u = u - lr * g
    np.testing.assert_allclose(res.u, u.astype(np.float32), rtol=1e-5)
    assert res.n_ce_calls == 30


@pytest.mark.parametrize("loss,lr", [("kl", 0.5), ("mse", 1e-2)])
def test_tour_improves_over_first_round(loss, lr):
    d = low_rank_scores(100, 2000, 8, 0.3, seed=0)
    S = d.scores
    tour = TOUR(d.item_emb, loss=loss, lr=lr)
    rec = {}
    for rounds in (1, 5):
        vals = []
        for q in range(40, 100):
            res = tour.search(q, _ce(S), 100, u0=d.query_emb[q], k=10, rounds=rounds)
            truth = np.argsort(-S[q], kind="stable")[:10]
            vals.append(len(np.intersect1d(res.scored_ids, truth)) / 10)
        rec[rounds] = np.mean(vals)
    assert rec[5] > rec[1] + 0.05


def test_defaults_and_init():
    assert TOUR(np.eye(3)).lr == DEFAULT_LR["kl"] == 0.1
    assert TOUR(np.eye(3), loss="mse").lr == DEFAULT_LR["mse"] == 1e-3
    d = low_rank_scores(10, 50, 3, 0.1, seed=1)
    res = TOUR(d.item_emb).search(0, _ce(d.scores), 10, u0=d.query_emb[0], k=3, rounds=2,
                                  init=[7, 7, 3, 9, 1, 2, 4, 8])
    np.testing.assert_array_equal(res.rounds[0].ids, [7, 3, 9, 1, 2])
    # a short init is topped up with the best items under u0, as for AXN
    res = TOUR(d.item_emb).search(0, _ce(d.scores), 10, u0=d.query_emb[0], k=3, rounds=2, init=[7, 7, 3])
    s = d.item_emb @ d.query_emb[0]
    s[[7, 3]] = -np.inf
    np.testing.assert_array_equal(res.rounds[0].ids, [7, 3, *np.argsort(-s, kind="stable")[:3]])


def test_bad_inputs():
    V = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
    S = np.zeros((2, 30), dtype=np.float32)
    with pytest.raises(ValueError, match="loss"):
        TOUR(V, loss="hinge")
    with pytest.raises(ValueError, match="u0"):
        TOUR(V).search(0, _ce(S), 10, u0=np.zeros(5), k=2)
    with pytest.raises(ValueError, match="budget must be >= rounds"):
        TOUR(V).search(0, _ce(S), 3, u0=np.zeros(4), k=1, rounds=5)
    with pytest.raises(ValueError, match="k must be <= budget"):
        TOUR(V).search(0, _ce(S), 5, u0=np.zeros(4), k=6, rounds=1)
    with pytest.raises(ValueError, match="lr"):
        TOUR(V, lr=-1.0)
    with pytest.raises(ValueError, match="item_emb"):
        TOUR(V[0])


def test_normalization_rescales_the_targets():
    d = low_rank_scores(10, 60, 3, 0.1, seed=3)
    alpha, beta = 2.0, 0.5
    S_raw = (d.scores / beta + alpha).astype(np.float32)  # normalising S_raw gives back d.scores
    a = TOUR(d.item_emb, loss="mse", lr=0.01, normalization=(alpha, beta)).search(
        1, _ce(S_raw), 20, u0=d.query_emb[1], k=5, rounds=4)
    b = TOUR(d.item_emb, loss="mse", lr=0.01).search(1, _ce(d.scores), 20, u0=d.query_emb[1], k=5, rounds=4)
    np.testing.assert_array_equal(a.scored_ids, b.scored_ids)
    np.testing.assert_allclose(a.u, b.u, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(a.scores, S_raw[1, a.ids])  # returned scores stay raw
    with pytest.raises(ValueError, match="beta"):
        TOUR(d.item_emb, normalization=(0.0, -1.0))


def test_tour_learning_rate_is_tuned_on_dev_and_matters():
    from axn_fast.evaluation.data import EvalData
    from axn_fast.evaluation.methods import MethodConfig, build_methods
    from axn_fast.evaluation.tuning import run_queries, tune_on_queries
    from axn_fast.methods.baselines import TOURMethod
    from axn_fast.methods.tour import LR_GRID

    d = low_rank_scores(100, 2000, 8, 0.1, seed=1)
    S = d.scores
    dev, test = np.arange(0, 50), np.arange(50, 100)
    truth = {q: np.argsort(-S[q], kind="stable")[:10] for q in range(100)}
    asked = set()

    def ce(q, ids):
        asked.add(int(q))
        return S[q, ids]

    method = TOURMethod(d.item_emb, d.query_emb, loss="kl", lrs=LR_GRID["kl"])
    assert [p["lr"] for p in method.grid(100)] == [0.1, 0.5, 1.0]
    chosen = method.grid(100)[tune_on_queries(method, ce, dev, truth, 100, ks=[10])[10]]
    assert asked == set(dev.tolist())  # chosen on dev only
    assert chosen["lr"] != DEFAULT_LR["kl"]  # the paper's default barely moves the query here
    tuned = run_queries(method, ce, test, truth, 100, ks=[10], params=chosen).recall[10]
    default = run_queries(method, ce, test, truth, 100, ks=[10], params={"lr": DEFAULT_LR["kl"]}).recall[10]
    assert tuned > default + 0.05, (tuned, default)

    # the evaluator's factory tunes both TOURs when there is a dev split, and keeps the default without
    data = EvalData("lr", S, dev[:20], dev[20:], test, item_emb=d.item_emb, query_emb=d.query_emb)
    methods, _ = build_methods(data, MethodConfig(keys=("tour-ce", "tour-mse"), budgets=(100,), normalize=False))
    assert [len(m.grid(100)) for m in methods] == [3, 3]
    no_dev = EvalData("lr", S, dev[:20], None, test, item_emb=d.item_emb, query_emb=d.query_emb)
    methods, _ = build_methods(no_dev, MethodConfig(keys=("tour-ce", "tour-mse"), budgets=(100,), normalize=False))
    assert [m.grid(100) for m in methods] == [[{}], [{}]]
