"""HFDualEncoder: mean pooling against a hand computation and against sentence-transformers."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the dual-encoder needs the ce extra (torch)")
transformers = pytest.importorskip("transformers", reason="the dual-encoder needs the ce extra (transformers)")

from axn_fast.encoders.dual_encoder import HFDualEncoder  # noqa: E402

from _hf_models import minilm_dir, tiny_bert  # noqa: E402

TEXTS = [
    "he cashed a check at the bank",
    "bank: sloping land (especially the slope beside a body of water)",
    "unit",
    "they pulled the canoe up on the bank and sat down to watch the currents of the wide river",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny_bert_de"))


def hand_mean_pool(path, texts, normalize):
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModel.from_pretrained(str(path)).eval()
    out = []
    for t in texts:  # one text at a time: no padding at all
        enc = tok(t, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0].double()
        e = h.mean(0)  # every token, [CLS] and [SEP] included
        out.append((e / e.norm() if normalize else e).numpy())
    return np.array(out)


@pytest.mark.parametrize("normalize", [True, False])
def test_mean_pooling_matches_hand_computation(tiny, normalize):
    de = HFDualEncoder(tiny, show_progress_bar=False)
    got = de.encode(TEXTS, batch_size=3, normalize=normalize)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), 32) and de.dim == 32
    np.testing.assert_allclose(got, hand_mean_pool(tiny, TEXTS, normalize), rtol=1e-4, atol=1e-5)
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == normalize


def test_batch_size_and_order(tiny):
    de = HFDualEncoder(tiny, show_progress_bar=False)
    ref = de.encode(TEXTS, batch_size=64)
    for bs in (1, 2):
        np.testing.assert_allclose(de.encode(TEXTS, batch_size=bs), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(de.encode(TEXTS[::-1]), ref[::-1], rtol=1e-5, atol=1e-6)
    assert de.encode([]).shape == (0, 32)


def test_matches_sentence_transformers_on_minilm():
    st = pytest.importorskip("sentence_transformers", reason="reference implementation")
    path = minilm_dir()
    de = HFDualEncoder(path, device="cpu", show_progress_bar=False)
    assert de.max_length == 256  # from sentence_bert_config.json
    ref = st.SentenceTransformer(str(path), device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(de.encode(TEXTS, batch_size=2), ref, rtol=1e-4, atol=1e-5)


def test_bad_input(tiny, tmp_path):
    de = HFDualEncoder(tiny, show_progress_bar=False)
    with pytest.raises(ValueError, match=r"texts\[1\] must be a non-empty text"):
        de.encode(["ok", " "])
    with pytest.raises(TypeError, match=r"texts\[0\] must be a str"):
        de.encode([3])
    with pytest.raises(TypeError, match="texts must be a sequence"):
        de.encode("one string")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        de.encode(TEXTS, batch_size=0)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        HFDualEncoder(tmp_path / "missing")
    small = tiny_bert(tmp_path / "small_vocab", vocab_size=1000)
    with pytest.raises(ValueError, match="tokenizer/model mismatch"):
        HFDualEncoder(small)
