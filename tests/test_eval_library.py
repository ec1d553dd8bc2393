"""The evaluation library behind the CLI: data loaders, the method factory, λ tuning, the demo's
computation, the resumable run; and `axn-fast example` on the shared synthetic generator."""
import json
import re

import numpy as np
import pytest

import axn_fast
from axn_fast.cli.main import main
from axn_fast.datasets.synthetic import low_rank_scores
from axn_fast.evaluation import data as D
from axn_fast.evaluation.demo import compare_axn_rnr, demo_normalization
from axn_fast.evaluation.methods import METHODS, MethodConfig, build_methods, missing_inputs
from axn_fast.evaluation.run import CHECKPOINT_DIR, run_checkpoint, run_evaluation
from axn_fast.evaluation.tuning import best_setting, exact_top, tune_lambda
from axn_fast.search.normalization import ScoreNormalization


@pytest.fixture(scope="module")
def low_rank():
    return low_rank_scores(60, 200, 4, 0.3, seed=7)


def test_best_setting_takes_the_first_best_and_ignores_float_noise():
    assert best_setting([0.5, 0.7, 0.7]) == 1
    assert best_setting([0.7, 0.7 + 1e-12, 0.6]) == 0  # within the tie tolerance
    assert best_setting([0.1, 0.1 + 1e-6]) == 1
    with pytest.raises(ValueError, match="empty"):
        best_setting([])


def test_tune_lambda_matches_a_plain_loop(low_rank):
    d = low_rank
    index = axn_fast.Index(d.item_emb)
    U, S = d.query_emb[:30], d.scores[:30]
    norm = demo_normalization(U, d.item_emb, S)
    grid = (0.0, 0.3, 0.6, 0.9)
    ce = axn_fast.DenseScoreCE(S)
    true = np.argsort(-S, axis=1, kind="stable")[:, :10]
    mean = []
    for lam in grid:  # the demo's former loop, written out
        mean.append(np.mean([axn_fast.topk_recall(index.adaptive_search(
            r, ce, 20, k=10, rounds=3, init=index.search(U[r], 20)[1], u0=U[r], lam=lam,
            normalization=norm).scored_ids, true[r], 10) for r in range(30)]))
    want = grid[best_setting(mean)]
    assert tune_lambda(index, U, S, 20, rounds=3, k=10, grid=grid, normalization=norm) == want
    assert len(set(np.round(mean, 9))) > 1, "the grid must make a difference for this test to mean anything"


def test_demo_normalization_matches_the_moments(low_rank):
    d = low_rank
    norm = demo_normalization(d.query_emb, d.item_emb, d.scores)
    de = (d.query_emb @ d.item_emb.T).astype(np.float64)
    mapped = norm.beta * (d.scores.astype(np.float64) - norm.alpha)
    assert mapped.mean() == pytest.approx(de.mean(), abs=1e-5)
    assert mapped.std() == pytest.approx(de.std(), rel=1e-5)
    with pytest.raises(ValueError, match="scores must be"):
        demo_normalization(d.query_emb, d.item_emb, d.scores[:, :10])


def test_compare_axn_rnr_rows(low_rank):
    d = low_rank
    test = np.arange(40, 60)
    S = d.scores[test]
    ce = axn_fast.DenseScoreCE(d.scores)
    index = axn_fast.Index(d.item_emb)
    norm = ScoreNormalization(0.1, 2.0)
    true = exact_top(S, 10)
    gold = true[:, 0].copy()
    gold[:5] = 199  # five queries whose gold is not the CE's best item
    rows = compare_axn_rnr(index, ce, list(test), d.query_emb[test], true, gold, [20, 10], rounds=2, lam=0.5,
                           ks=[1, 10], normalization=norm, show_progress_bar=False)
    assert [(r.method, r.m) for r in rows] == [("RNR-DE", 10), ("AXN-DE", 10), ("RNR-DE", 20), ("AXN-DE", 20)]
    de_top = np.argsort(-(d.query_emb[test] @ d.item_emb.T), axis=1, kind="stable")
    for r in rows:
        assert r.ce_calls == len(test) * r.m
        if r.method == "RNR-DE":
            found = [de_top[j, :r.m] for j in range(len(test))]
        else:
            found = [index.adaptive_search(int(q), ce, r.m, k=10, rounds=2, init=index.search(d.query_emb[q], r.m)[1],
                                           u0=d.query_emb[q], lam=0.5, normalization=norm).scored_ids for q in test]
        for k in (1, 10):
            want = np.mean([len(set(f.tolist()) & set(true[j, :k].tolist())) / k for j, f in enumerate(found)])
            assert r.recall[k] == pytest.approx(want)
    assert all(r.link_acc <= 0.75 for r in rows)  # the five planted gold misses count
    with pytest.raises(ValueError, match="one entry per query"):
        compare_axn_rnr(index, ce, list(test), d.query_emb[test], true[:3], gold, [10], rounds=2, lam=0.0, ks=[1])


@pytest.fixture()
def files(tmp_path, low_rank):
    d = low_rank
    np.save(tmp_path / "S.npy", d.scores)
    np.save(tmp_path / "V.npy", d.item_emb)
    np.save(tmp_path / "Q.npy", d.query_emb)
    (tmp_path / "train.txt").write_text("\n".join(map(str, range(30))))
    (tmp_path / "dev.txt").write_text("\n".join(map(str, range(30, 40))))
    np.save(tmp_path / "test.npy", np.arange(40, 60))
    return tmp_path


def _load(p, **kw):
    args = dict(scores=p / "S.npy", train=p / "train.txt", test=p / "test.npy", dev=p / "dev.txt",
                item_emb=p / "V.npy", query_emb=p / "Q.npy")
    args.update(kw)
    return D.load_score_files(args.pop("scores"), args.pop("train"), args.pop("test"), **args)


def test_load_score_files_checks_content(files, tmp_path):
    data = _load(files)
    assert data.n_queries == 60 and data.n_items == 200 and data.dev is not None and len(data.dev) == 10
    (tmp_path / "dup.txt").write_text("40\n41\n40\n")
    with pytest.raises(ValueError, match="more than once"):
        _load(files, test=tmp_path / "dup.txt")
    (tmp_path / "overlap.txt").write_text("45\n")
    with pytest.raises(ValueError, match="share query rows"):
        _load(files, dev=tmp_path / "overlap.txt")
    (tmp_path / "floats.txt").write_text("1.5\n")
    with pytest.raises(ValueError, match="integer ids"):
        _load(files, train=tmp_path / "floats.txt")
    with pytest.raises(FileNotFoundError, match="dev split file"):
        _load(files, dev=tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="both item_emb and query_emb"):
        _load(files, query_emb=None)
    np.save(tmp_path / "V_inf.npy", np.full((200, 4), np.inf, dtype=np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        _load(files, item_emb=tmp_path / "V_inf.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a readable .npy"):
        _load(files, scores=tmp_path / "obj.npy")


def test_fingerprint_follows_content_only(files, tmp_path):
    a = _load(files)
    assert a.fingerprint() == _load(files).fingerprint()
    (tmp_path / "test2.txt").write_text("\n".join(str(i) for i in [29, *range(41, 60)]))  # same size, other rows
    b = _load(files, test=tmp_path / "test2.txt")
    assert len(b.test) == len(a.test) and b.fingerprint() != a.fingerprint()
    assert a.truncated(max_test=5).fingerprint() != a.fingerprint()


def test_method_factory(files):
    data = _load(files)
    methods, skipped = build_methods(data, MethodConfig(budgets=(10, 20), lams=(0.0, 0.5)))
    assert skipped == ["rnr-tfidf", "rnr-bm25"]  # no texts
    assert [m.name for m in methods] == ["RNR (DE)", "ANNCUR (reference)", "ANNCUR (improved)", "ADACUR",
                                         "TOUR-CE", "TOUR-MSE", "AXN (λ=0)", "AXN (dev λ)"]
    axn = methods[-1]
    assert axn.grid(10) == [{"lam": 0.0}, {"lam": 0.5}] and axn.normalization is not None
    no_norm, _ = build_methods(data, MethodConfig(keys=("axn",), budgets=(10,), normalize=False))
    assert no_norm[0].normalization is None
    assert missing_inputs(data, "rnr-bm25") == "texts (items and queries)" and missing_inputs(data, "axn") is None
    with pytest.raises(ValueError, match="needs texts"):
        build_methods(data, MethodConfig(keys=("rnr-tfidf",), budgets=(10,)))
    with pytest.raises(ValueError, match="unknown method"):
        MethodConfig(keys=("magic",))
    with pytest.raises(ValueError, match="lams must be <= 1"):
        MethodConfig(lams=(0.0, 2.0))
    with pytest.raises(ValueError, match="budgets must be <= the number of items"):
        build_methods(data, MethodConfig(budgets=(500,)))
    assert set(METHODS) >= {"axn", "axn-dev", "rnr-de"}


def test_run_evaluation_resumes_only_the_same_content(files, tmp_path, monkeypatch):
    import axn_fast.evaluation.evaluate as ev

    data = _load(files)
    config = MethodConfig(keys=("rnr-de", "anncur"), budgets=(10,))
    methods, _ = build_methods(data, config)
    out = tmp_path / "run"
    table = run_evaluation(data, methods, out, ks=[1, 5], budgets=[10], config=config.to_dict())
    assert not (out / CHECKPOINT_DIR).exists() and json.loads((out / "results.json").read_text())["rows"] == table.rows
    assert [r["method"] for r in table] == ["RNR (DE)", "RNR (DE)", "ANNCUR (improved)", "ANNCUR (improved)",
                                            "EXACT", "EXACT"]

    calls = []
    real = ev.evaluate

    def counting(methods, *a, **k):
        calls.append(methods[0].name)
        return real(methods, *a, **k)

    def plant():
        """A checkpoint of `data` with `config` whose RNR (DE) rows say recall 0.123."""
        ms = build_methods(data, config)[0]
        with run_checkpoint(data, ms, out, ks=[1, 5], budgets=[10], config=config.to_dict()) as ck:
            ck.record([0, 1], [[0.123, float("nan"), 10.0, 0.0, 0.0]] * 2)

    monkeypatch.setattr(ev, "evaluate", counting)
    other_scores = D.EvalData(**{**data.__dict__, "scores": data.scores * 2})
    seed3 = MethodConfig(keys=("rnr-de", "anncur"), budgets=(10,), seed=3)
    for variant, cfg, reused in ((data, config, True), (data.truncated(max_test=19), config, False),
                                 (other_scores, config, False), (data, seed3, False)):
        plant()
        calls.clear()
        t = run_evaluation(variant, build_methods(variant, cfg)[0], out, ks=[1, 5], budgets=[10],
                           config=cfg.to_dict())
        assert (t.rows[0]["recall"] == 0.123) == reused
        assert t.rows[0]["params"] == "" and t.rows[0]["accuracy"] is None
        assert calls == (["ANNCUR (improved)"] if reused else ["RNR (DE)", "ANNCUR (improved)"])
        assert not (out / CHECKPOINT_DIR).exists()


def test_live_scores_resume_pays_only_missing_pairs(tmp_path):
    S = np.arange(5 * 7, dtype=np.float32).reshape(5, 7)
    paid = []

    def ce(q, ids, fail_after=None):
        if fail_after is not None and len(paid) >= fail_after:
            raise RuntimeError("CE down")
        paid.append(len(ids))
        return S[q, ids]

    rows = np.array([4, 0, 2])
    with pytest.raises(axn_fast.ScoreMatrixInterrupted):
        D.live_scores(lambda q, ids: ce(q, ids, fail_after=1), 7, list(range(5)), rows, tmp_path, ce_id="dense-a",
                      show_progress_bar=False)
    assert sum(paid) == 7  # one query row scored before the failure
    paid.clear()
    got = D.live_scores(ce, 7, list(range(5)), rows, tmp_path, ce_id="dense-a", show_progress_bar=False)
    assert sum(paid) == 14  # only the two missing rows
    want = np.zeros_like(S)
    want[rows] = S[rows]
    np.testing.assert_array_equal(got, want)
    paid.clear()
    D.live_scores(ce, 7, list(range(5)), rows, tmp_path, ce_id="dense-b", show_progress_bar=False)
    assert sum(paid) == 21  # another CE never reuses these scores


def _example_rows(out):
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^\s*(\d+) (RNR-DE|AXN)\s+([\d.]+)\s+(\d+)\s+([\d.]+)$", line)
        if m:
            rows[(int(m.group(1)), m.group(2))] = (float(m.group(3)), int(m.group(4)))
    return rows


def test_example_uses_the_shared_synthetic_generator(capsys):
    assert main(["example", "--n-items", "500", "--dim", "8", "--queries", "6", "--budgets", "20", "40",
                 "--rounds", "2", "--k", "5", "--seed", "3"]) == 0
    rows = _example_rows(capsys.readouterr().out)
    assert set(rows) == {(b, n) for b in (20, 40) for n in ("RNR-DE", "AXN")}
    from axn_fast.cli.example import DE_ITEM_NOISE, DE_QUERY_NOISE

    d = low_rank_scores(6, 500, 8, 0.5, 3, de_noise=DE_QUERY_NOISE, item_de_noise=DE_ITEM_NOISE)
    de_top = np.argsort(-(d.query_emb @ d.item_emb.T), axis=1, kind="stable")
    exact = np.argsort(-d.scores, axis=1, kind="stable")[:, :5]
    for b in (20, 40):
        want = np.mean([len(set(de_top[q, :b]) & set(exact[q])) / 5 for q in range(6)])
        assert rows[(b, "RNR-DE")] == (pytest.approx(want, abs=5e-4), 6 * b)
        assert rows[(b, "AXN")][1] == 6 * b


def test_example_shows_the_setting_axn_is_made_for(capsys):
    """The example's DE sees the items well and the queries badly: AXN's refits must then beat
    re-ranking the DE's candidates (with equally noisy items and queries it did not, at any budget)."""
    assert main(["example", "--n-items", "20000", "--queries", "20", "--budgets", "100", "200"]) == 0
    rows = _example_rows(capsys.readouterr().out)
    for b in (100, 200):
        assert rows[(b, "AXN")][0] > rows[(b, "RNR-DE")][0] + 0.05


def test_item_de_noise_only_changes_the_item_embeddings():
    a = low_rank_scores(5, 40, 4, 0.5, 1, de_noise=1.0)
    b = low_rank_scores(5, 40, 4, 0.5, 1, de_noise=1.0, item_de_noise=0.0)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.query_emb, b.query_emb)
    assert not np.allclose(a.item_emb, b.item_emb)
    np.testing.assert_array_equal(low_rank_scores(5, 40, 4, 0.5, 1, de_noise=1.0, item_de_noise=1.0).item_emb,
                                  a.item_emb)


@pytest.mark.parametrize("argv, code, message", [
    (["--queries", "0"], 2, "argument --queries: must be >= 1, got 0"),  # was ZeroDivisionError
    (["--n-items", "100", "--budgets", "200"], 2, "every --budgets value must be in [max(--k, --rounds)=10, "
                                                   "--n-items=100], got 200"),  # was "negative id (-1)"
    (["--n-items", "100", "--budgets", "5"], 2, "got 5"),
    (["--k", "0"], 2, "argument --k: must be >= 1"),
    (["--dim", "-3"], 2, "argument --dim: must be >= 1"),
    (["--noise", "-1"], 2, "argument --noise: must be >= 0"),
    (["--seed", "x"], 2, "argument --seed: expected an integer, got 'x'"),
])
def test_example_rejects_bad_flags(capsys, argv, code, message):
    assert main(["example", *argv]) == code
    err = capsys.readouterr().err
    assert err.startswith("axn-fast example: error: ") and message in err and err.count("\n") == 1, err


def test_unknown_command_and_no_command(capsys):
    assert main(["frobnicate"]) == 2
    assert capsys.readouterr().err.startswith("axn-fast: error: argument COMMAND: invalid choice")
    assert main([]) == 2
    assert main(["--help"]) == 0
