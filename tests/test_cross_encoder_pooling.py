"""The emb heads' pooling: "mean" (content tokens, unchanged) and "markers" (ANNCUR's [EMB] tokens)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the cross-encoders need the ce extra (torch)")
transformers = pytest.importorskip("transformers", reason="the cross-encoders need the ce extra (transformers)")

from axn_fast.encoders.cross_encoder import (  # noqa: E402
    MARKER_TOKENS,
    HFCrossEncoder,
    PairScoreCache,
    encode_pairs,
    marker_ids,
)

from _hf_models import minilm_dir, tiny_bert  # noqa: E402

ITEMS = [
    "bank: sloping land (especially the slope beside a body of water)",
    "depository financial institution, bank, banking concern: a financial institution that accepts deposits "
    "and channels the money into lending activities",
    "bank: a long ridge or pile",
    "unit",
]
QUERY = "he cashed a check at the bank"
LONG_QUERY = " ".join(["river"] * 40)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny_pool"), seed=3)


@pytest.fixture(scope="module")
def tok(tiny):
    return transformers.AutoTokenizer.from_pretrained(str(tiny))


def test_bundled_minilm_has_the_markers_as_single_vocabulary_entries():
    t = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()))
    assert marker_ids(t) == (1, 2)
    assert t.convert_ids_to_tokens([1, 2]) == list(MARKER_TOKENS)
    # the text "[unused0]" is not one token to the tokenizer: the markers' ids are inserted, never tokenised
    assert len(t("[unused0]", add_special_tokens=False)["input_ids"]) > 1


@pytest.mark.parametrize("max_length", [12, 16, 64])
def test_markers_are_one_token_each_and_never_truncated(tok, max_length):
    queries = [QUERY, LONG_QUERY, LONG_QUERY, "unit", "he said [unused0] twice [unused1]"]
    items = [ITEMS[1] * 3, ITEMS[3], ITEMS[1] * 3, ITEMS[0], ITEMS[2]]
    mq, mi = marker_ids(tok)
    b = encode_pairs(tok, queries, items, max_length, pooling="markers")
    mean = encode_pairs(tok, queries, items, max_length - 2)  # the content the markers leave room for
    ids = b["input_ids"]
    assert ids.shape[1] <= max_length and ids.shape[1] == mean["input_ids"].shape[1] + 2
    for r in range(len(queries)):
        (qp,), (ip,) = np.flatnonzero(b["query_mask"][r]), np.flatnonzero(b["item_mask"][r])
        assert ids[r, qp] == mq and ids[r, ip] == mi
        assert (ids[r] == mq).sum() == 1 and (ids[r] == mi).sum() == 1  # the text's "[unused0]" is no marker
        # [CLS] [q-marker] query [SEP] [i-marker] item [SEP]: each marker opens its segment
        assert qp == 1 and ids[r, 0] == tok.cls_token_id and ids[r, ip - 1] == tok.sep_token_id
        assert b["token_type_ids"][r, qp] == 0 and b["token_type_ids"][r, ip] == 1
        assert b["attention_mask"][r, qp] == 1 and b["attention_mask"][r, ip] == 1
        # take the markers out and what is left is the mean encoding at max_length - 2, token for token
        keep = np.ones(ids.shape[1], dtype=bool)
        keep[[qp, ip]] = False
        for k in ("input_ids", "attention_mask", "token_type_ids"):
            np.testing.assert_array_equal(b[k][r, keep], mean[k][r], err_msg=k)
        assert b["attention_mask"][r].sum() <= max_length
    assert (b["query_mask"].sum(1) == 1).all() and (b["item_mask"].sum(1) == 1).all()


def hand_mean_batch_scores(path, query, items, head, max_length=128):
    """Mean pooling written out in the same float32 operations, on the same padded batch: must be bit-identical."""
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModel.from_pretrained(str(path)).eval()
    enc = tok([query] * len(items), list(items), truncation="only_second", max_length=max_length, padding=True,
              return_tensors="pt")
    qm = torch.tensor([[1.0 if s == 0 else 0.0 for s in enc.sequence_ids(b)] for b in range(len(items))])
    im = torch.tensor([[1.0 if s == 1 else 0.0 for s in enc.sequence_ids(b)] for b in range(len(items))])
    with torch.inference_mode():
        h = model(**enc).last_hidden_state.float()
    eq = (qm.unsqueeze(-1) * h).sum(1) / qm.sum(1, keepdim=True)
    ei = (im.unsqueeze(-1) * h).sum(1) / im.sum(1, keepdim=True)
    s = (eq * ei).sum(-1)
    if head == "emb-cos":
        s = s / (eq.norm(dim=-1) * ei.norm(dim=-1)).clamp_min(1e-12)
    return s.numpy()


@pytest.mark.parametrize("head", ["emb-dot", "emb-cos"])
def test_mean_pooling_is_unchanged_bit_for_bit(tiny, head):
    # one batch, longest item first (the CE's order), so the hand batch pads exactly like the CE's
    order = np.argsort([-len(t) for t in ITEMS], kind="stable")
    items = [ITEMS[i] for i in order]
    want = hand_mean_batch_scores(tiny, QUERY, items, head)
    for kwargs in ({}, {"pooling": "mean"}):
        ce = HFCrossEncoder(tiny, items, head=head, device="cpu", show_progress_bar=False, **kwargs)
        np.testing.assert_array_equal(ce(QUERY, np.arange(len(items))), want)
        assert "pooling" not in ce.config  # configs recorded before the setting still match
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny))
    assert sorted(encode_pairs(tok, [QUERY], [ITEMS[0]], 64)) == sorted(
        ["input_ids", "attention_mask", "token_type_ids", "query_mask", "item_mask"])


def hand_marker_scores(path, query, items, head):
    """[EMB]-CE with marker tokens, ids laid out by hand, one pair at a time (no padding)."""
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModel.from_pretrained(str(path)).eval()
    q = tok(query, add_special_tokens=False)["input_ids"]
    out = []
    for item in items:
        it = tok(item, add_special_tokens=False)["input_ids"]
        ids = [tok.cls_token_id, 1] + q + [tok.sep_token_id, 2] + it + [tok.sep_token_id]
        types = [0] * (len(q) + 3) + [1] * (len(it) + 2)
        with torch.no_grad():
            h = model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types])).last_hidden_state[0]
        eq, ei = h[1].double(), h[len(q) + 3].double()
        s = float(eq @ ei)
        if head == "emb-cos":
            s /= float(eq.norm() * ei.norm())
        out.append(s)
    return np.array(out)


@pytest.mark.parametrize("head", ["emb-dot", "emb-cos"])
def test_marker_score_is_the_dot_of_the_hidden_states_at_the_markers(tiny, head):
    ce = HFCrossEncoder(tiny, ITEMS, head=head, pooling="markers", batch_size=3, show_progress_bar=False)
    got = ce(QUERY, np.arange(len(ITEMS)))
    np.testing.assert_allclose(got, hand_marker_scores(tiny, QUERY, ITEMS, head), rtol=1e-4, atol=1e-5)
    mean = HFCrossEncoder(tiny, ITEMS, head=head, show_progress_bar=False)(QUERY, np.arange(len(ITEMS)))
    assert not np.allclose(got, mean, atol=1e-3)
    assert ce.config["pooling"] == "markers" and ce.pooling == "markers"


def test_poolings_never_share_cached_scores(tiny):
    cache = PairScoreCache()
    mean = HFCrossEncoder(tiny, ITEMS, cache=cache, show_progress_bar=False)
    markers = HFCrossEncoder(tiny, ITEMS, pooling="markers", cache=cache, show_progress_bar=False)
    a = mean(QUERY, [0, 1])
    b = markers(QUERY, [0, 1])
    assert markers.n_calls == 2 and len(cache) == 4 and not np.allclose(a, b)
    np.testing.assert_array_equal(markers.score_batch([QUERY], [np.array([1, 0])])[0], b[::-1])
    assert markers.n_calls == 2


def test_markers_need_a_vocabulary_that_has_them(tmp_path, tiny):
    from _hf_models import TINY

    rob = TINY["roberta"](tmp_path / "roberta")
    with pytest.raises(ValueError, match=r"needs a vocabulary holding the marker tokens .*no '\[unused0\]'"):
        HFCrossEncoder(rob, ITEMS, pooling="markers")
    rtok = transformers.AutoTokenizer.from_pretrained(str(rob))
    with pytest.raises(ValueError, match="marker tokens"):
        encode_pairs(rtok, [QUERY], [ITEMS[0]], 32, pooling="markers")
    with pytest.raises(ValueError, match=r"pooling must be one of \('mean', 'markers'\), got 'cls'"):
        HFCrossEncoder(tiny, ITEMS, pooling="cls")
    with pytest.raises(ValueError, match="head='cls' scores the classifier logit"):
        HFCrossEncoder(tiny_bert(tmp_path / "cls", classifier=True), ITEMS, head="cls", pooling="markers")
