"""train_cross_encoder: learns a learnable task, resumes exactly, saves a delta that round-trips and refuses a wrong base."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the ce extra (torch)")
transformers = pytest.importorskip("transformers", reason="training needs the ce extra (transformers)")
pytest.importorskip("safetensors", reason="the delta format is safetensors")

from axn_fast.encoders.cross_encoder import HFCrossEncoder  # noqa: E402
from axn_fast.encoders.training import (  # noqa: E402
    evaluate_candidates,
    mine_negatives,
    random_negatives,
    train_cross_encoder,
)

from _hf_models import tiny_bert  # noqa: E402
from _interrupt import Interrupted, interrupt_at  # noqa: E402

# A task an untrained model cannot solve by word overlap: each query names a colour, its gold item a fruit.
COLOURS = ["red", "green", "blue", "yellow", "black", "white"]
FRUITS = ["apple", "pear", "plum", "lemon", "grape", "melon"]
ITEMS = [f"{f} fruit" for f in FRUITS]
TEMPLATES = ["the {} one", "i want {}", "something {}", "{} please", "a {} thing", "give me {}"]


def task(templates):
    qs, gold = [], []
    for t in templates:
        for i, c in enumerate(COLOURS):
            qs.append(t.format(c))
            gold.append(i)
    return qs, np.array(gold)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny_train"), seed=1)


def test_learns_a_task_above_chance(tiny, tmp_path):
    qs, gold = task(TEMPLATES[:4])
    dq, dg = task(TEMPLATES[4:])
    res = train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "run", head="emb-dot", negatives="random",
                              n_negatives=5, dev_queries=dq, dev_gold=dg, epochs=30, lr=5e-3, warmup=0.1,
                              batch_size=4, trainable_layers=2, eval_every=24, seed=0, show_progress_bar=False)
    before = res.dev_curve[0]["dev_accuracy"]
    # every dev query is scored against all 6 items (gold + 5 negatives): chance is 1/6
    assert before < 0.5
    assert res.best_dev_accuracy >= 0.75 and res.best_dev_accuracy > before + 0.3
    # the kept delta reproduces the best dev accuracy when loaded for inference
    ce = HFCrossEncoder.from_trained(res.path, ITEMS, base=tiny, show_progress_bar=False)
    acc = np.mean([np.argmax(ce(q, np.arange(len(ITEMS)))) == g for q, g in zip(dq, dg)])
    assert acc == pytest.approx(res.best_dev_accuracy)
    curve = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [c["step"] for c in res.dev_curve] and curve[0]["step"] == 0
    secs = [c["seconds"] for c in res.dev_curve]
    assert secs == sorted(secs) and secs[-1] <= res.seconds + 0.5  # wall time since the start, never counted twice


@pytest.mark.parametrize("head,n_random", [("emb-dot", 0), ("cls", 0), ("emb-dot", 2)])
def test_resume_gives_the_same_parameters(tiny, tmp_path, head, n_random):
    qs, gold = task(TEMPLATES[:3])
    kwargs = dict(head=head, negatives="random", n_negatives=3 - n_random // 2, n_random_negatives=n_random, epochs=2, lr=1e-3, batch_size=3, trainable_layers=1,
                  checkpoint_every=3, eval_every=100, seed=7, show_progress_bar=False)
    full = train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "full", **kwargs)

    with pytest.raises(Interrupted):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "cut", on_step=interrupt_at(7), **kwargs)
    state = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6  # the last checkpoint before the kill
    resumed = train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "cut", **kwargs)
    assert resumed.steps == full.steps == 12
    from safetensors.numpy import load_file

    a = load_file(str(tmp_path / "full" / "checkpoint" / "params.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoint" / "params.safetensors"))
    assert sorted(a) == sorted(b) and len(a) > 0
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=k)
    base = transformers.AutoModel.from_pretrained(str(tiny))
    sd = {k: v.numpy() for k, v in base.state_dict().items()}
    moved = max(float(np.abs(a[k] - sd[k.removeprefix("bert.")]).max()) for k in a if k.removeprefix("bert.") in sd)
    assert moved > 1e-4  # training did change the layers
    # another run in the same directory with other settings is refused, not silently mixed
    with pytest.raises(ValueError, match="other data or settings"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "cut", **dict(kwargs, lr=5e-4))


@pytest.mark.parametrize("save_dtype,tol", [(None, 1e-5), ("float16", 5e-2)])
def test_delta_round_trip(tiny, tmp_path, save_dtype, tol):
    qs, gold = task(TEMPLATES[:2])
    res = train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "run", head="emb-dot", negatives="random",
                              n_negatives=3, epochs=1, lr=1e-3, batch_size=4, trainable_layers=1,
                              save_dtype=save_dtype, show_progress_bar=False)
    from safetensors.torch import load_file

    delta = load_file(str(res.path / "delta.safetensors"))
    manifest = json.loads((res.path / "manifest.json").read_text())
    # only the trained layer is stored, under its name in the model
    assert delta and all(k.startswith("encoder.layer.1.") for k in delta)
    assert sorted(delta) == manifest["parameters"] and manifest["head"] == "emb-dot"
    assert {str(t.dtype) for t in delta.values()} == {"torch.float16" if save_dtype else "torch.float32"}
    # the trained model, rebuilt by hand from the training checkpoint (fp32), and the loaded delta score alike
    model = transformers.AutoModel.from_pretrained(str(tiny)).eval()
    state = load_file(str(tmp_path / "run" / "checkpoint" / "params.safetensors"))
    model.load_state_dict(state, strict=False)
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny))
    cand = np.tile(np.arange(len(ITEMS)), (3, 1))
    want = evaluate_candidates(model, tok, "emb-dot", qs[:3], ITEMS, cand, max_length=64, device=torch.device("cpu"),
                               show_progress_bar=False)
    ce = HFCrossEncoder.from_trained(res.path, ITEMS, base=tiny, show_progress_bar=False)
    got = np.stack([ce(q, np.arange(len(ITEMS))) for q in qs[:3]])
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    again = HFCrossEncoder.from_trained(res.path, ITEMS, base=tiny, show_progress_bar=False)
    np.testing.assert_array_equal(np.stack([again(q, np.arange(len(ITEMS))) for q in qs[:3]]), got)
    untrained = HFCrossEncoder(tiny, ITEMS, max_length=64, show_progress_bar=False)(qs[0], np.arange(len(ITEMS)))
    assert not np.allclose(untrained, got[0], atol=1e-4)
    assert ce.max_length == 64 and ce.head == "emb-dot"
    # the emb heads share their parameters: a delta trained with emb-dot may score with emb-cos, not with cls
    cos = HFCrossEncoder.from_trained(res.path, ITEMS, base=tiny, head="emb-cos", show_progress_bar=False)
    dot = got[0].astype(np.float64)
    assert cos.head == "emb-cos" and not np.allclose(cos(qs[0], np.arange(len(ITEMS))), dot)
    with pytest.raises(ValueError, match="trained with head 'emb-dot'"):
        HFCrossEncoder.from_trained(res.path, ITEMS, base=tiny, head="cls")


def test_wrong_base_is_refused(tiny, tmp_path):
    qs, gold = task(TEMPLATES[:1])
    res = train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "run", negatives="random", n_negatives=2,
                              trainable_layers=1, show_progress_bar=False)
    other = tiny_bert(tmp_path / "other", seed=5)  # same architecture, other weights
    with pytest.raises(ValueError, match="refusing to apply it to a different base"):
        HFCrossEncoder.from_trained(res.path, ITEMS, base=other)
    with pytest.raises(FileNotFoundError, match="not a trained-CE delta"):
        HFCrossEncoder.from_trained(tmp_path / "nowhere", ITEMS, base=tiny)


def test_bad_input_is_named(tiny, tmp_path):
    qs, gold = task(TEMPLATES[:1])
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"gold holds item id 6, outside \[0, 6\)"):
        train_cross_encoder(tiny, ITEMS, qs, np.r_[gold[:-1], 6], out, negatives="random")
    with pytest.raises(ValueError, match="gold must hold one item id per query"):
        train_cross_encoder(tiny, ITEMS, qs, gold[:2], out, negatives="random")
    with pytest.raises(ValueError, match=r"queries\[2\] must be a non-empty text"):
        train_cross_encoder(tiny, ITEMS, qs[:2] + ["  "] + qs[3:], gold, out, negatives="random")
    with pytest.raises(ValueError, match=r"items\[0\] must be a non-empty text"):
        train_cross_encoder(tiny, [""] + ITEMS[1:], qs, gold, out, negatives="random")
    with pytest.raises(ValueError, match="no negatives available"):
        train_cross_encoder(tiny, ITEMS, qs, gold, out, negatives="random", n_negatives=6)
    with pytest.raises(ValueError, match="holds a query's gold item among its negatives"):
        train_cross_encoder(tiny, ITEMS, qs, gold, out, negatives=np.tile(np.arange(3), (len(qs), 1)), n_negatives=3)
    with pytest.raises(ValueError, match="dev_queries and dev_gold go together"):
        train_cross_encoder(tiny, ITEMS, qs, gold, out, negatives="random", n_negatives=3, dev_queries=qs)
    with pytest.raises(ValueError, match="head must be one of"):
        train_cross_encoder(tiny, ITEMS, qs, gold, out, head="max", n_negatives=3)
    with pytest.raises(ValueError, match="trainable_layers=3 but the model has 2 layers"):
        train_cross_encoder(tiny, ITEMS, qs, gold, out, negatives="random", n_negatives=3, trainable_layers=3)
    with pytest.raises(ValueError, match="nothing to train"):
        train_cross_encoder(tiny, ITEMS, qs, gold, out, negatives="random", n_negatives=3, trainable_layers=0)
    with pytest.raises(ValueError, match="negatives must be"):
        train_cross_encoder(tiny, ITEMS, qs, gold, out, negatives="hard", n_negatives=3)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        train_cross_encoder(tiny, ITEMS, qs, gold, out, negatives="random", n_negatives=3, lr=0)


def test_mined_negatives_are_the_de_top_non_gold():
    rng = np.random.default_rng(0)
    q, it = rng.normal(size=(20, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32)
    gold = rng.integers(0, 50, 20)
    neg = mine_negatives(q, it, gold, 5, chunk=7)
    for r in range(20):
        order = [j for j in np.argsort(-(it @ q[r]), kind="stable") if j != gold[r]]
        assert neg[r].tolist() == order[:5]
    rn = random_negatives(50, gold, 49, seed=1)
    for r in range(20):
        assert sorted(rn[r].tolist()) == sorted(set(range(50)) - {int(gold[r])})
    with pytest.raises(ValueError, match="only 49 non-gold items"):
        mine_negatives(q, it, gold, 50)


def test_train_ce_cli_on_files(tiny, tmp_path):
    from axn_fast.cli.main import main

    qs, gold = task(TEMPLATES[:2])
    (tmp_path / "items.txt").write_text("\n".join(ITEMS))
    (tmp_path / "q.txt").write_text("\n".join(qs))
    (tmp_path / "gold.txt").write_text("\n".join(map(str, gold)))
    (tmp_path / "dq.txt").write_text("\n".join(qs[:4]))
    (tmp_path / "dg.txt").write_text("\n".join(map(str, gold[:4])))
    args = ["train-ce", "--items", str(tmp_path / "items.txt"), "--queries", str(tmp_path / "q.txt"),
            "--gold", str(tmp_path / "gold.txt"), "--dev-queries", str(tmp_path / "dq.txt"),
            "--dev-gold", str(tmp_path / "dg.txt"), "--base", str(tiny), "--negatives", "de", "--n-negatives", "3",
            "--de-cache", str(tmp_path / "de.npz"), "--trainable-layers", "1", "--save-dtype", "float16",
            "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 0
    assert (tmp_path / "run" / "best" / "manifest.json").is_file() and (tmp_path / "de.npz").is_file()
    neg = np.load(tmp_path / "run" / "negatives.npz")["train"]
    assert neg.shape == (len(qs), 3) and not (neg == gold[:, None]).any()
    (tmp_path / "bad_gold.txt").write_text("0\nx\n")
    bad = list(args)
    bad[bad.index(str(tmp_path / "gold.txt"))] = str(tmp_path / "bad_gold.txt")
    assert main(bad) == 1
    assert main(["train-ce", "--out", str(tmp_path / "x"), "--items", str(tmp_path / "items.txt")]) == 2


def test_extra_random_negatives_are_fresh_distinct_and_never_taken():
    from axn_fast.encoders.training import _extra_random

    taken = np.array([[0, 1, 2], [5, 6, 7], [3, 9, 4]])
    draws = [_extra_random(taken, 12, 6, np.random.default_rng([0, step, 1])) for step in range(20)]
    for d in draws:
        assert d.shape == (3, 6) and d.min() >= 0 and d.max() < 12
        for r in range(3):
            assert len(set(d[r].tolist())) == 6 and not set(d[r].tolist()) & set(taken[r].tolist())
    assert len({d.tobytes() for d in draws}) > 1  # redrawn every step, not fixed per query
    # every non-taken item comes up: the draw is not confined to a few items
    assert set(np.concatenate([d[0] for d in draws]).tolist()) == set(range(3, 12))


def test_random_negatives_are_counted_and_bounded(tiny, tmp_path):
    qs, gold = task(TEMPLATES[:1])
    with pytest.raises(ValueError, match="n_negatives \\+ n_random_negatives = 6 but only 5"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "a", negatives="random", n_negatives=3,
                            n_random_negatives=3, show_progress_bar=False)
    with pytest.raises(ValueError, match="n_random_negatives"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "b", negatives="random", n_negatives=3,
                            n_random_negatives=-1, show_progress_bar=False)
    res = train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "c", negatives="random", n_negatives=2,
                              n_random_negatives=2, epochs=1, batch_size=3, trainable_layers=1,
                              dev_queries=qs[:2], dev_gold=gold[:2], show_progress_bar=False)
    assert res.pairs_per_second > 0 and res.steps == 2
    manifest = json.loads((res.path / "manifest.json").read_text())
    assert manifest["training"]["n_random_negatives"] == 2


@pytest.fixture(scope="module")
def tiny_wide(tmp_path_factory):
    """A 2-layer, 64-wide random BERT without dropout, with the MiniLM tokenizer.

    The markers' final states in a random model hardly depend on the text (nothing is contextualised yet), so
    the dot of the two starts at a saddle (loss ln 6); the 32-wide ``tiny`` with dropout stays there, this
    one leaves it at every seed tried. A pretrained base contextualises from the start.
    """
    import shutil

    from _hf_models import TOKENIZER_FILES, minilm_dir

    out = tmp_path_factory.mktemp("tiny_wide")
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=128, max_position_embeddings=128, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    torch.manual_seed(1)
    transformers.BertModel(cfg).save_pretrained(str(out), safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, out / name)
    return out


def test_markers_pooling_learns_the_task_above_chance(tiny_wide, tmp_path):
    qs, gold = task(TEMPLATES[:4])
    dq, dg = task(TEMPLATES[4:])
    res = train_cross_encoder(tiny_wide, ITEMS, qs, gold, tmp_path / "run", head="emb-dot", pooling="markers",
                              negatives="random", n_negatives=5, dev_queries=dq, dev_gold=dg, epochs=60, lr=2e-3,
                              warmup=0.1, batch_size=4, trainable_layers=2, eval_every=60, seed=0,
                              show_progress_bar=False)
    before = res.dev_curve[0]["dev_accuracy"]
    assert before < 0.5  # chance is 1/6
    assert res.best_dev_accuracy >= 0.75 and res.best_dev_accuracy > before + 0.3
    # the markers' input embeddings were not trained: only transformer layers are in the delta
    from safetensors.torch import load_file

    assert all(k.startswith("encoder.layer.") for k in load_file(str(res.path / "delta.safetensors")))
    ce = HFCrossEncoder.from_trained(res.path, ITEMS, base=tiny_wide, show_progress_bar=False)
    assert ce.pooling == "markers"
    acc = np.mean([np.argmax(ce(q, np.arange(len(ITEMS)))) == g for q, g in zip(dq, dg)])
    assert acc == pytest.approx(res.best_dev_accuracy)


def test_markers_delta_round_trips_with_its_pooling(tiny, tmp_path):
    from safetensors.torch import load_file

    from axn_fast.encoders.models import load_cross_encoder

    qs, gold = task(TEMPLATES[:2])
    res = train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "run", head="emb-dot", pooling="markers",
                              negatives="random", n_negatives=3, epochs=1, lr=1e-3, batch_size=4,
                              trainable_layers=1, show_progress_bar=False)
    manifest = json.loads((res.path / "manifest.json").read_text())
    assert manifest["pooling"] == "markers" and manifest["training"]["pooling"] == "markers"
    # the trained model rebuilt by hand from the checkpoint, scored with markers, is what the loaded delta gives
    model = transformers.AutoModel.from_pretrained(str(tiny)).eval()
    model.load_state_dict(load_file(str(tmp_path / "run" / "checkpoint" / "params.safetensors")), strict=False)
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny))
    cand = np.tile(np.arange(len(ITEMS)), (3, 1))
    want = evaluate_candidates(model, tok, "emb-dot", qs[:3], ITEMS, cand, max_length=64,
                               device=torch.device("cpu"), show_progress_bar=False, pooling="markers")
    as_mean = evaluate_candidates(model, tok, "emb-dot", qs[:3], ITEMS, cand, max_length=64,
                                  device=torch.device("cpu"), show_progress_bar=False)
    assert not np.allclose(want, as_mean, atol=1e-3)
    ce = HFCrossEncoder.from_trained(res.path, ITEMS, base=tiny, show_progress_bar=False)
    got = np.stack([ce(q, np.arange(len(ITEMS))) for q in qs[:3]])
    assert ce.pooling == "markers" and ce.config["pooling"] == "markers"
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    named = load_cross_encoder(ITEMS, model=res.path, device="cpu", show_progress_bar=False)
    assert named.pooling == "markers"
    np.testing.assert_array_equal(np.stack([named(q, np.arange(len(ITEMS))) for q in qs[:3]]), got)
    with pytest.raises(ValueError, match="trained with pooling 'markers'; it cannot score with pooling='mean'"):
        HFCrossEncoder.from_trained(res.path, ITEMS, base=tiny, pooling="mean")
    with pytest.raises(ValueError, match="trained with pooling 'markers'"):
        load_cross_encoder(ITEMS, model=res.path, pooling="mean")


def test_mean_pooling_keeps_the_old_settings_and_old_manifests_load_as_mean(tiny, tmp_path):
    qs, gold = task(TEMPLATES[:1])
    res = train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "run", negatives="random", n_negatives=2,
                              trainable_layers=1, show_progress_bar=False)
    doc = json.loads((res.path / "manifest.json").read_text())
    # the settings (what keys a resumed run) of a mean-pooling run hold no pooling: older runs still resume
    assert doc["pooling"] == "mean" and "pooling" not in doc["training"]
    ref = HFCrossEncoder.from_trained(res.path, ITEMS, base=tiny, show_progress_bar=False)(qs[0], np.arange(6))
    del doc["pooling"]  # a delta written before the setting existed
    (res.path / "manifest.json").write_text(json.dumps(doc))
    old = HFCrossEncoder.from_trained(res.path, ITEMS, base=tiny, show_progress_bar=False)
    assert old.pooling == "mean"
    np.testing.assert_array_equal(old(qs[0], np.arange(6)), ref)
    with pytest.raises(ValueError, match="trained with pooling 'mean'"):
        HFCrossEncoder.from_trained(res.path, ITEMS, base=tiny, pooling="markers")


@pytest.mark.parametrize("first,second", [("markers", "mean"), ("mean", "markers")])
def test_resume_with_another_pooling_is_refused(tiny, tmp_path, first, second):
    qs, gold = task(TEMPLATES[:2])
    kwargs = dict(negatives="random", n_negatives=2, epochs=1, batch_size=3, trainable_layers=1,
                  checkpoint_every=1, show_progress_bar=False)

    with pytest.raises(Interrupted):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "run", pooling=first, on_step=interrupt_at(2),
                            **kwargs)
    with pytest.raises(ValueError, match="other data or settings"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "run", pooling=second, **kwargs)
    res = train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "run", pooling=first, **kwargs)  # same: resumes
    assert res.steps == 4 and json.loads((res.path / "manifest.json").read_text())["pooling"] == first


def test_bad_pooling_is_named(tiny, tmp_path):
    qs, gold = task(TEMPLATES[:1])
    with pytest.raises(ValueError, match=r"pooling must be one of \('mean', 'markers'\)"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "a", pooling="cls-token", negatives="random")
    with pytest.raises(ValueError, match="head='cls' scores the classifier logit"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "b", head="cls", pooling="markers",
                            negatives="random")


def test_train_ce_cli_pooling_flag(tiny, tmp_path):
    from axn_fast.cli.main import main

    qs, gold = task(TEMPLATES[:1])
    (tmp_path / "items.txt").write_text("\n".join(ITEMS))
    (tmp_path / "q.txt").write_text("\n".join(qs))
    (tmp_path / "gold.txt").write_text("\n".join(map(str, gold)))
    args = ["train-ce", "--items", str(tmp_path / "items.txt"), "--queries", str(tmp_path / "q.txt"),
            "--gold", str(tmp_path / "gold.txt"), "--base", str(tiny), "--negatives", "random",
            "--n-negatives", "2", "--trainable-layers", "1", "--no-progress"]
    assert main(args + ["--pooling", "markers", "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "best" / "manifest.json").read_text())["pooling"] == "markers"
    assert main(args + ["--out", str(tmp_path / "mean")]) == 0
    assert json.loads((tmp_path / "mean" / "best" / "manifest.json").read_text())["pooling"] == "mean"
    assert main(args + ["--pooling", "max", "--out", str(tmp_path / "x")]) == 2
