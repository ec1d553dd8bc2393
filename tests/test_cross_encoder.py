"""HFCrossEncoder / SentenceTransformersCE / PairScoreCache against hand computations."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the cross-encoders need the ce extra (torch)")
transformers = pytest.importorskip("transformers", reason="the cross-encoders need the ce extra (transformers)")

from axn_fast.encoders.cross_encoder import HFCrossEncoder, PairScoreCache, SentenceTransformersCE  # noqa: E402

from _hf_models import minilm_dir, tiny_bert  # noqa: E402

ITEMS = [
    "bank: sloping land (especially the slope beside a body of water)",
    "depository financial institution, bank, banking concern: a financial institution that accepts deposits "
    "and channels the money into lending activities",
    "bank: a long ridge or pile",
    "fire, firing: the act of firing weapons or artillery at an enemy",
    "congener: a whole (a thing or person) of the same kind or category as another",
    "unit",
]
QUERY = "he cashed a check at the bank"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def hand_emb_scores(path, query, items, head, max_length=128):
    """[EMB]-CE written out with the tokenizer's own pair encoding (truncating the item only)."""
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModel.from_pretrained(str(path)).eval()
    out = []
    for item in items:
        enc = tok(query, item, truncation="only_second", max_length=max_length, return_tensors="pt")
        seq = enc.sequence_ids(0)
        if model.config.type_vocab_size < 2:
            enc.pop("token_type_ids", None)
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0].double()
        q_pos = [j for j, s in enumerate(seq) if s == 0]
        i_pos = [j for j, s in enumerate(seq) if s == 1]
        eq, ei = h[q_pos].mean(0), h[i_pos].mean(0)
        s = float(eq @ ei)
        if head == "emb-cos":
            s /= float(eq.norm() * ei.norm())
        out.append(s)
    return np.array(out)


def hand_cls_scores(path, query, items):
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    out = []
    with torch.no_grad():
        for it in items:
            enc = tok(query, it, return_tensors="pt")
            if model.config.type_vocab_size < 2:
                enc.pop("token_type_ids", None)
            out.append(float(model(**enc).logits[0, 0]))
    return np.array(out)


@pytest.mark.parametrize("arch", ["roberta", "deberta"])
@pytest.mark.parametrize("head", ["emb-dot", "emb-cos", "cls"])
def test_every_head_on_roberta_and_deberta(tmp_path, arch, head):
    """Other pair templates (RoBERTa's <s> q </s></s> i </s>, no token types; DeBERTa-v2) work for every head."""
    from _hf_models import TINY

    path = TINY[arch](tmp_path / arch, classifier=head == "cls")
    ce = HFCrossEncoder(path, ITEMS, head=head, batch_size=4, show_progress_bar=False)
    got = ce(QUERY, np.arange(len(ITEMS)))
    ref = hand_cls_scores(path, QUERY, ITEMS) if head == "cls" else hand_emb_scores(path, QUERY, ITEMS, head)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert np.ptp(got) > 0  # the items are told apart


def test_loaded_model_and_tokenizer_are_accepted(tiny):
    model = transformers.AutoModel.from_pretrained(str(tiny))
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny))
    got = HFCrossEncoder((model, tok), ITEMS, show_progress_bar=False)(QUERY, np.arange(len(ITEMS)))
    np.testing.assert_allclose(got, HFCrossEncoder(tiny, ITEMS, show_progress_bar=False)(QUERY, np.arange(len(ITEMS))),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="transformers model"):
        HFCrossEncoder((object(), tok), ITEMS)
    with pytest.raises(ValueError, match="sequence-classification"):
        HFCrossEncoder((model, tok), ITEMS, head="cls")


def test_hub_id_is_told_from_a_missing_directory(tmp_path):
    from axn_fast.encoders import _hf

    assert _hf.resolve_source("org/some-model") == "org/some-model"  # a hub id (loaded only where a hub is reachable)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        _hf.resolve_source(str(tmp_path / "missing" / "model"))


@pytest.mark.parametrize("head", ["emb-dot", "emb-cos"])
def test_emb_pooling_matches_hand_computation_tiny(tiny, head):
    ce = HFCrossEncoder(tiny, ITEMS, head=head, batch_size=4, show_progress_bar=False)
    got = ce(QUERY, np.arange(len(ITEMS)))
    assert got.dtype == np.float32 and got.shape == (len(ITEMS),)
    np.testing.assert_allclose(got, hand_emb_scores(tiny, QUERY, ITEMS, head), rtol=1e-4, atol=1e-5)


def test_item_is_truncated_first(tiny):
    # max_length 20: the 8-token query keeps all its tokens, the items are cut to 9 tokens
    ce = HFCrossEncoder(tiny, ITEMS, head="emb-dot", max_length=20, show_progress_bar=False)
    assert len(ce.tokenizer(QUERY, add_special_tokens=False)["input_ids"]) == 8
    got = ce(QUERY, np.arange(len(ITEMS)))
    np.testing.assert_allclose(got, hand_emb_scores(tiny, QUERY, ITEMS, "emb-dot", max_length=20),
                               rtol=1e-4, atol=1e-5)
    ce = HFCrossEncoder(tiny, ITEMS, head="emb-dot", max_length=16, show_progress_bar=False)
    # a query longer than the whole room keeps at most half of it; the item keeps the rest
    long_q = " ".join(["word"] * 40)
    batch = ce._batch_tensors(long_q, np.array([1]))
    qmask, imask = batch["query_mask"], batch["item_mask"]
    assert batch["input_ids"].shape[1] == 16 and qmask.sum() + imask.sum() == 13 and imask.sum() == 6


def test_real_minilm_pooling_on_a_few_pairs():
    path = minilm_dir()
    items = ITEMS[:3]
    for head in ("emb-dot", "emb-cos"):
        ce = HFCrossEncoder(path, items, head=head, show_progress_bar=False)
        np.testing.assert_allclose(ce(QUERY, [0, 1, 2]), hand_emb_scores(path, QUERY, items, head),
                                   rtol=1e-4, atol=1e-4)


def test_cls_head_is_the_classifier_logit(tmp_path):
    path = tiny_bert(tmp_path / "cls", classifier=True)
    ce = HFCrossEncoder(path, ITEMS, head="cls", show_progress_bar=False)
    ref = hand_cls_scores(path, QUERY, ITEMS)
    np.testing.assert_allclose(ce(QUERY, np.arange(len(ITEMS))), ref, rtol=1e-4, atol=1e-5)


def test_cls_head_on_a_plain_encoder_warns(tiny):
    with pytest.warns(UserWarning, match="randomly initialised"):
        HFCrossEncoder(tiny, ITEMS, head="cls", show_progress_bar=False)


def test_results_do_not_depend_on_batch_size(tiny):
    ids = np.array([5, 1, 3, 0, 2, 4, 1])
    ref = HFCrossEncoder(tiny, ITEMS, batch_size=64, show_progress_bar=False)(QUERY, ids)
    for bs in (1, 2, 5):
        got = HFCrossEncoder(tiny, ITEMS, batch_size=bs, show_progress_bar=False)(QUERY, ids)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert ref[1] == ref[6]  # the same pair, scored once


def _spy(ce, fail_on_batch=None):
    """Record the item ids of every model batch; optionally raise on one batch."""
    calls = []
    real = ce._forward

    def forward(batch):
        calls.append(int(batch["input_ids"].shape[0]))
        if fail_on_batch is not None and len(calls) == fail_on_batch:
            raise RuntimeError("simulated failure (e.g. out of memory)")
        return real(batch)

    ce._forward = forward
    return calls


def test_cache_hits_never_call_the_model(tiny):
    ce = HFCrossEncoder(tiny, ITEMS, batch_size=2, show_progress_bar=False)
    calls = _spy(ce)
    first = ce(QUERY, [0, 1, 2])
    assert sum(calls) == 3 and (ce.n_calls, ce.n_cached) == (3, 0)
    again = ce(QUERY, [2, 0, 1])
    np.testing.assert_array_equal(again, first[[2, 0, 1]])
    assert sum(calls) == 3 and (ce.n_calls, ce.n_cached) == (3, 3)
    mixed = ce(QUERY, [1, 4, 4, 5])  # 4 and 5 are new; the repeated 4 is scored once
    assert sum(calls) == 5 and (ce.n_calls, ce.n_cached) == (5, 5)
    assert mixed[1] == mixed[2] and mixed[0] == first[1]
    ce(QUERY + "!", [0])  # another query is another pair
    assert ce.n_calls == 6


def test_failing_batch_keeps_the_cache_consistent(tiny):
    ids = np.arange(6)
    ref = HFCrossEncoder(tiny, ITEMS, batch_size=2, show_progress_bar=False)(QUERY, ids)
    ce = HFCrossEncoder(tiny, ITEMS, batch_size=2, show_progress_bar=False)
    _spy(ce, fail_on_batch=2)
    with pytest.raises(RuntimeError, match="simulated failure"):
        ce(QUERY, ids)
    # the first batch was paid for and kept; the failing one left nothing behind
    assert len(ce.cache) == 2 and ce.n_calls == 2
    scores, found = ce.cache.lookup(ce._namespace, QUERY, ids)
    assert found.sum() == 2
    np.testing.assert_allclose(scores[found], ref[found], rtol=1e-5, atol=1e-6)
    calls = _spy(ce)  # the model works again: only the 4 missing pairs are scored
    np.testing.assert_allclose(ce(QUERY, ids), ref, rtol=1e-5, atol=1e-6)
    assert sum(calls) == 4 and ce.n_calls == 6


def test_nan_from_the_model_is_not_cached(tiny):
    ce = HFCrossEncoder(tiny, ITEMS, batch_size=8, show_progress_bar=False)
    ce._forward = lambda batch: np.full(batch["input_ids"].shape[0], np.nan, np.float32)
    from axn_fast import CrossEncoderError

    with pytest.raises(CrossEncoderError, match="non-finite"):
        ce(QUERY, [0, 1])
    assert len(ce.cache) == 0 and ce.n_calls == 0


def test_shared_cache_keeps_ces_apart(tiny):
    cache = PairScoreCache()
    dot = HFCrossEncoder(tiny, ITEMS, head="emb-dot", cache=cache, show_progress_bar=False)
    cos = HFCrossEncoder(tiny, ITEMS, head="emb-cos", cache=cache, show_progress_bar=False)
    other_items = HFCrossEncoder(tiny, ITEMS[::-1], head="emb-dot", cache=cache, show_progress_bar=False)
    a, b, c = dot(QUERY, [0, 1]), cos(QUERY, [0, 1]), other_items(QUERY, [0, 1])
    assert len(cache) == 6 and cos.n_calls == 2 and other_items.n_calls == 2
    assert np.all(np.abs(b) <= 1.0 + 1e-6) and not np.allclose(a, b)
    np.testing.assert_allclose(c, dot(QUERY, [5, 4]), rtol=1e-5)  # reversed items: same texts, same scores
    assert dot.n_calls == 4


def test_cache_bounded_by_queries():
    cache = PairScoreCache(max_queries=2)
    for q in ("a", "b", "c"):
        cache.store("ns", q, np.array([0, 1]), np.array([1.0, 2.0]))
    assert len(cache) == 4
    assert not cache.lookup("ns", "a", np.array([0]))[1].any()
    assert cache.lookup("ns", "c", np.array([1, 0]))[0].tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="max_queries"):
        PairScoreCache(max_queries=0)


def test_bad_input(tiny, tmp_path):
    ce = HFCrossEncoder(tiny, ITEMS, show_progress_bar=False)
    with pytest.raises(ValueError, match="query must be a non-empty text"):
        ce("   ", [0])
    with pytest.raises(TypeError, match="query must be a str"):
        ce(3, [0])
    with pytest.raises(ValueError, match="outside \\[0, 6\\)"):
        ce(QUERY, [0, 6])
    with pytest.raises(ValueError, match="outside"):
        ce(QUERY, [-1])
    with pytest.raises(TypeError, match="integer item ids"):
        ce(QUERY, [0.5])
    with pytest.raises(ValueError, match=r"items\[1\] must be a non-empty text"):
        HFCrossEncoder(tiny, ["ok", ""], show_progress_bar=False)
    with pytest.raises(TypeError, match="items must be a sequence"):
        HFCrossEncoder(tiny, "one string", show_progress_bar=False)
    with pytest.raises(ValueError, match="head must be one of"):
        HFCrossEncoder(tiny, ITEMS, head="max")
    with pytest.raises(ValueError, match="device must be"):
        HFCrossEncoder(tiny, ITEMS, device="tpu!")
    with pytest.raises(ValueError, match="dtype must be"):
        HFCrossEncoder(tiny, ITEMS, dtype="int8")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        HFCrossEncoder(tmp_path / "nowhere", ITEMS)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="holds no weights"):
        HFCrossEncoder(no_weights, ITEMS)
    assert ce(QUERY, []).shape == (0,)


def test_tokenizer_model_mismatch(tmp_path):
    small = tiny_bert(tmp_path / "small_vocab", vocab_size=1000)
    with pytest.raises(ValueError, match="tokenizer/model mismatch"):
        HFCrossEncoder(small, ITEMS)


def test_device_and_dtype_defaults(tiny):
    ce = HFCrossEncoder(tiny, ITEMS, show_progress_bar=False)
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert ce.device.type == want
    assert ce.dtype == (torch.float32 if want == "cpu" else ce.dtype)
    assert ce.config["head"] == "emb-dot" and ce.config["max_length"] == 128


def test_sentence_transformers_adapter_returns_raw_logits(tmp_path):
    st = pytest.importorskip("sentence_transformers", reason="the adapter wraps sentence-transformers")
    path = tiny_bert(tmp_path / "cls", classifier=True)
    model = st.CrossEncoder(str(path), device="cpu")
    ce = SentenceTransformersCE(model, ITEMS, batch_size=2)
    ids = np.array([3, 0, 5, 0])
    got = ce(QUERY, ids)
    # raw logits: the same numbers as HFCrossEncoder(head="cls") on the checkpoint, not predict's default sigmoid
    hf = HFCrossEncoder(path, ITEMS, head="cls", show_progress_bar=False)(QUERY, ids)
    np.testing.assert_allclose(got, hf, rtol=1e-4, atol=1e-5)
    squashed = model.predict([(QUERY, ITEMS[i]) for i in ids], show_progress_bar=False)
    np.testing.assert_allclose(squashed, 1 / (1 + np.exp(-hf)), rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, squashed)
    assert (ce.n_calls, ce.n_cached) == (3, 1)
    ce(QUERY, [5, 3])
    assert (ce.n_calls, ce.n_cached) == (3, 3)
    with pytest.raises(TypeError, match="sentence_transformers.CrossEncoder"):
        SentenceTransformersCE(object(), ITEMS)


def test_concurrent_calls_share_the_cache_consistently():
    """8 threads hitting one CE: correct scores, every pair counted once as scored or cached."""
    import threading

    from axn_fast.encoders.cross_encoder import CachedCrossEncoder

    class Toy(CachedCrossEncoder):
        _namespace = "toy"

        def _score_batches(self, query, ids):
            for s in range(0, len(ids), 3):
                b = ids[s:s + 3]
                yield b, (len(query) * 1000 + b).astype(np.float32)

    ce = Toy([f"item {i}" for i in range(50)], cache=PairScoreCache(max_queries=4))
    rng = np.random.default_rng(0)
    jobs = [(f"q{j % 6}", rng.integers(0, 50, 20)) for j in range(64)]
    errors = []

    def work(part):
        try:
            for query, ids in part:
                np.testing.assert_array_equal(ce(query, ids), len(query) * 1000 + ids)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(jobs[t::8],)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert ce.n_calls + ce.n_cached == sum(len(ids) for _, ids in jobs)
    assert len(ce.cache) <= 4 * 50


def test_roberta_cls_reranker_and_sentence_transformers_run_axn_end_to_end(tmp_path):
    """A RoBERTa-family `cls` reranker (no token types) and a sentence-transformers CrossEncoder over the
    same checkpoint both drive AXN: exactly `budget` pairs paid, the reported scores are the CE's own
    raw logits for the reported ids, and both CEs reach the same ranking."""
    st = pytest.importorskip("sentence_transformers", reason="the adapter wraps sentence-transformers")
    import axn_fast
    from _hf_models import tiny_roberta

    path = tiny_roberta(tmp_path / "roberta_cls", classifier=True)
    items = [f"{w}: {ITEMS[i % len(ITEMS)]}" for i, w in enumerate(
        "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split())]
    V = np.random.default_rng(0).standard_normal((len(items), 8)).astype(np.float32)
    index = axn_fast.Index(V)
    hf = HFCrossEncoder(path, items, head="cls", batch_size=4, show_progress_bar=False)
    sce = SentenceTransformersCE(st.CrossEncoder(str(path), device="cpu"), items, batch_size=4)
    results = []
    for ce in (hf, sce):
        res = index.adaptive_search(QUERY, ce, budget=10, k=3, rounds=2, seed=0)
        assert ce.n_calls == 10 and len(set(res.scored_ids.tolist())) == 10
        truth = hand_cls_scores(path, QUERY, [items[i] for i in res.ids])
        np.testing.assert_allclose(res.scores, truth, rtol=1e-4, atol=1e-5)
        results.append(res)
    np.testing.assert_array_equal(results[0].scored_ids[:5], results[1].scored_ids[:5])  # the same first round
    np.testing.assert_allclose(results[0].scores, results[1].scores, rtol=1e-4, atol=1e-5)
