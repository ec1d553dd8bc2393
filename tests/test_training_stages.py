"""train_cross_encoder's second-stage options: hard negatives drawn per step from a deeper pool (hard_pool), and a
run started from a trained delta (init)."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the ce extra (torch)")
transformers = pytest.importorskip("transformers", reason="training needs the ce extra (transformers)")
pytest.importorskip("safetensors", reason="the delta format is safetensors")

import axn_fast.encoders.training as training  # noqa: E402
from axn_fast.encoders.cross_encoder import HFCrossEncoder  # noqa: E402
from axn_fast.encoders.training import train_cross_encoder  # noqa: E402

from _hf_models import tiny_bert  # noqa: E402
from _interrupt import Interrupted, interrupt_at  # noqa: E402
from test_training import ITEMS, TEMPLATES, task  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny_stages"), seed=1)


def _non_gold_shuffled(gold, seed):
    """(n_queries, n_items - 1): every query's non-gold items, in a seeded per-query order."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation([i for i in range(len(ITEMS)) if i != g]) for g in gold])


def _record_pairs(monkeypatch):
    """Wrap the training loop's encode_pairs; returns the list of (query, item) pairs it is asked to encode."""
    seen = []
    real = training.encode_pairs

    def spy(tok, queries, items, *args, **kwargs):
        seen.extend(zip(queries, items))
        return real(tok, queries, items, *args, **kwargs)

    monkeypatch.setattr(training, "encode_pairs", spy)
    return seen


def test_hard_pool_draws_fresh_negatives_from_the_pool_only(tiny, tmp_path, monkeypatch):
    qs, gold = task(TEMPLATES[:2])
    # every query's non-gold items, in a per-query order: the pool is the first 4, the 5th must never be drawn
    neg = _non_gold_shuffled(gold, seed=0)
    seen = _record_pairs(monkeypatch)
    train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "run", negatives=neg, n_negatives=2, hard_pool=4,
                        epochs=6, lr=1e-3, batch_size=4, trainable_layers=1, show_progress_bar=False)
    per_query = {q: set() for q in qs}
    for q, it in seen:
        per_query[q].add(ITEMS.index(it))
    for r, q in enumerate(qs):
        negs = per_query[q] - {int(gold[r])}
        assert int(gold[r]) in per_query[q]
        assert negs <= set(neg[r, :4].tolist()), "a negative outside the top hard_pool was drawn"
        assert int(neg[r, 4]) not in per_query[q]
    # 6 epochs x 2 draws from 4: the draw changes between steps (fixed negatives would show exactly 2)
    assert np.mean([len(per_query[q] - {int(g)}) for q, g in zip(qs, gold)]) > 2.5
    kept = np.load(tmp_path / "run" / "negatives.npz")["train"]
    assert kept.shape == (len(qs), 4)
    manifest = json.loads((tmp_path / "run" / "best" / "manifest.json").read_text())
    assert manifest["training"]["hard_pool"] == 4


def test_without_hard_pool_the_negatives_stay_the_top_ones(tiny, tmp_path, monkeypatch):
    qs, gold = task(TEMPLATES[:1])
    neg = _non_gold_shuffled(gold, seed=0)
    seen = _record_pairs(monkeypatch)
    train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "run", negatives=neg, n_negatives=2, epochs=4,
                        lr=1e-3, batch_size=3, trainable_layers=1, show_progress_bar=False)
    for r, q in enumerate(qs):
        assert {ITEMS.index(it) for qq, it in seen if qq == q} == {int(gold[r]), *neg[r, :2].tolist()}


def test_resume_with_hard_pool_gives_the_same_parameters(tiny, tmp_path):
    qs, gold = task(TEMPLATES[:3])
    neg = _non_gold_shuffled(gold, seed=1)
    kwargs = dict(negatives=neg, n_negatives=2, hard_pool=5, epochs=2, lr=1e-3, batch_size=3, trainable_layers=1,
                  checkpoint_every=3, seed=3, show_progress_bar=False)
    train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "full", **kwargs)

    with pytest.raises(Interrupted):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "cut", on_step=interrupt_at(8), **kwargs)
    train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "cut", **kwargs)
    from safetensors.numpy import load_file

    a = load_file(str(tmp_path / "full" / "checkpoint" / "params.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoint" / "params.safetensors"))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=k)
    with pytest.raises(ValueError, match="other data or settings"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "cut", **dict(kwargs, hard_pool=4))


def test_bad_hard_pool_is_named(tiny, tmp_path):
    qs, gold = task(TEMPLATES[:1])
    with pytest.raises(ValueError, match="hard_pool"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "a", negatives="random", n_negatives=2, hard_pool=1)
    with pytest.raises(ValueError, match="needs negatives='de' or an id array"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "b", negatives="random", n_negatives=2, hard_pool=3)
    with pytest.raises(ValueError, match="hard_pool=6 but only 5 non-gold"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "c", negatives="de", n_negatives=2, hard_pool=6)


@pytest.fixture(scope="module")
def stage1(tiny, tmp_path_factory):
    qs, gold = task(TEMPLATES[:4])
    dq, dg = task(TEMPLATES[4:])
    out = tmp_path_factory.mktemp("stage1") / "run"
    res = train_cross_encoder(tiny, ITEMS, qs, gold, out, negatives="random", n_negatives=5, dev_queries=dq,
                              dev_gold=dg, epochs=30, lr=5e-3, batch_size=4, trainable_layers=1, eval_every=6,
                              show_progress_bar=False)
    return res


def test_init_starts_from_the_delta_and_saves_relative_to_the_base(tiny, stage1, tmp_path):
    qs, gold = task(TEMPLATES[:4])
    dq, dg = task(TEMPLATES[4:])
    res = train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "run", negatives="random", n_negatives=5,
                              dev_queries=dq, dev_gold=dg, epochs=2, lr=1e-4, batch_size=4, trainable_layers=2,
                              eval_every=6, init=stage1.path, show_progress_bar=False)
    # before its first step the run scores exactly as the delta it starts from
    assert res.dev_curve[0]["dev_accuracy"] == pytest.approx(stage1.best_dev_accuracy)
    # ... which is not where the base starts, so the init did load
    assert stage1.best_dev_accuracy > stage1.dev_curve[0]["dev_accuracy"] + 0.2
    manifest = json.loads((res.path / "manifest.json").read_text())
    first = json.loads((stage1.path / "manifest.json").read_text())
    assert manifest["base"]["sha256"] == first["base"]["sha256"]  # still relative to the base model
    assert manifest["training"]["init"]["name"] == first["name"]
    assert {p.split(".")[2] for p in manifest["parameters"]} == {"0", "1"}  # both layers now
    # the saved delta loads onto the plain base and reproduces the run's dev accuracy
    ce = HFCrossEncoder.from_trained(res.path, ITEMS, base=tiny, show_progress_bar=False)
    acc = np.mean([np.argmax(ce(q, np.arange(len(ITEMS)))) == g for q, g in zip(dq, dg)])
    assert acc == pytest.approx(res.best_dev_accuracy)


def test_init_is_checked(tiny, stage1, tmp_path):
    qs, gold = task(TEMPLATES[:1])
    kw = dict(negatives="random", n_negatives=2, show_progress_bar=False)
    two = train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "two", trainable_layers=2, **kw)
    with pytest.raises(ValueError, match="raise trainable_layers"):  # its layer 0 would be frozen and dropped
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "a", init=two.path, trainable_layers=1, **kw)
    with pytest.raises(ValueError, match="trained with head 'emb-dot', this run uses 'cls'"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "b", init=stage1.path, head="cls",
                            trainable_layers=1, **kw)
    with pytest.raises(ValueError, match="pooling 'mean', this run uses 'markers'"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "c", init=stage1.path, pooling="markers",
                            trainable_layers=1, **kw)
    other = tiny_bert(tmp_path / "other", seed=5)
    with pytest.raises(ValueError, match="refusing to apply it to a different base"):
        train_cross_encoder(other, ITEMS, qs, gold, tmp_path / "d", init=stage1.path, trainable_layers=1, **kw)
    with pytest.raises(FileNotFoundError, match="not a trained-CE delta"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "e", init=tmp_path / "nowhere", trainable_layers=1,
                            **kw)


def test_train_ce_cli_stage_flags(tiny, stage1, tmp_path):
    from axn_fast.cli.main import main

    qs, gold = task(TEMPLATES[:1])
    (tmp_path / "items.txt").write_text("\n".join(ITEMS))
    (tmp_path / "q.txt").write_text("\n".join(qs))
    (tmp_path / "gold.txt").write_text("\n".join(map(str, gold)))
    args = ["train-ce", "--items", str(tmp_path / "items.txt"), "--queries", str(tmp_path / "q.txt"),
            "--gold", str(tmp_path / "gold.txt"), "--base", str(tiny), "--negatives", "de", "--n-negatives", "2",
            "--de-cache", str(tmp_path / "de.npz"), "--trainable-layers", "1", "--no-progress"]
    assert main(args + ["--hard-pool", "4", "--init", str(stage1.path), "--dev-queries", str(tmp_path / "q.txt"),
                        "--dev-gold", str(tmp_path / "gold.txt"), "--dev-negatives", "5",
                        "--out", str(tmp_path / "run")]) == 0
    training_doc = json.loads((tmp_path / "run" / "best" / "manifest.json").read_text())["training"]
    assert training_doc["hard_pool"] == 4 and training_doc["init"]["sha256"] and training_doc["n_dev_negatives"] == 5
    kept = np.load(tmp_path / "run" / "negatives.npz")
    assert kept["train"].shape == (len(qs), 4) and kept["dev"].shape == (len(qs), 5)
    assert main(args + ["--hard-pool", "1", "--out", str(tmp_path / "x")]) == 1  # fewer than --n-negatives
    assert main(args + ["--init", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")]) == 1


def test_dev_negatives_set_the_dev_protocol(tiny, tmp_path):
    """n_dev_negatives widens the dev ranking independently of the training negatives: with every non-gold
    item as a dev negative the dev accuracy is the accuracy of ranking all items."""
    qs, gold = task(TEMPLATES[:4])
    dq, dg = task(TEMPLATES[4:])
    res = train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "run", negatives="random", n_negatives=2,
                              n_dev_negatives=5, dev_queries=dq, dev_gold=dg, epochs=8, lr=5e-3, batch_size=4,
                              trainable_layers=2, eval_every=6, show_progress_bar=False)
    dev_neg = np.load(tmp_path / "run" / "negatives.npz")["dev"]
    assert dev_neg.shape == (len(dq), 5)
    for r in range(len(dq)):
        assert sorted(dev_neg[r].tolist() + [int(dg[r])]) == list(range(len(ITEMS)))
    ce = HFCrossEncoder.from_trained(res.path, ITEMS, base=tiny, show_progress_bar=False)
    full = np.mean([np.argmax(ce(q, np.arange(len(ITEMS)))) == g for q, g in zip(dq, dg)])
    assert full == pytest.approx(res.best_dev_accuracy)
    assert json.loads((res.path / "manifest.json").read_text())["training"]["n_dev_negatives"] == 5
    with pytest.raises(ValueError, match="n_dev_negatives \\+ n_random_negatives = 6 but only 5"):
        train_cross_encoder(tiny, ITEMS, qs, gold, tmp_path / "x", negatives="random", n_negatives=2,
                            n_dev_negatives=6, dev_queries=dq, dev_gold=dg)
