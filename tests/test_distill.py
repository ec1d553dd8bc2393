"""DE_DSTL: distilling the CE's score distribution into a dual-encoder on a tiny random BERT."""
import numpy as np
import pytest

from _hf_models import tiny_bert
from _interrupt import Interrupted, interrupt_at

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from axn_fast.encoders.distill import (DELTA_DIR, distill_dual_encoder, distillation_loss_numpy,  # noqa: E402
                                       load_distilled_dual_encoder)
from axn_fast.indexing.score_matrix import ScoreMatrix  # noqa: E402

ITEMS = ["bank river water", "money bank deposit", "fire weapon enemy", "red green blue", "one two three",
         "ridge pile long", "water land slope", "category kind whole", "deposit check cash", "enemy attack gun"]
QUERIES = ["the river bank", "cash a check", "shoot the gun", "count one two", "colors red blue",
           "a pile of earth"]


def _task(seed: int = 0) -> ScoreMatrix:
    """A sparse G: 6 of the 10 items per query, CE scores that favour items sharing a word with the query."""
    rng = np.random.default_rng(seed)
    rows, cols, vals = [], [], []
    for q, text in enumerate(QUERIES):
        words = set(text.split())
        for i in np.sort(rng.choice(len(ITEMS), size=6, replace=False)).tolist():
            rows.append(q)
            cols.append(i)
            vals.append(3.0 * len(words & set(ITEMS[i].split())) + rng.normal(0, 0.3))
    return ScoreMatrix(np.array(rows, np.int64), np.array(cols, np.int64), np.array(vals, np.float32),
                       (len(QUERIES), len(ITEMS)))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


def _kl(de, G, t):
    return distillation_loss_numpy(de.encode(QUERIES), de.encode(ITEMS), G, teacher_temperature=t,
                                   student_temperature=0.05)["kl"]


def test_distillation_reduces_kl_to_the_ce(base, tmp_path):
    from axn_fast.encoders.dual_encoder import HFDualEncoder

    G = _task()
    t = float(np.std(G.vals))
    before = _kl(HFDualEncoder(base, device="cpu", show_progress_bar=False), G, t)
    res = distill_dual_encoder(base, ITEMS, QUERIES, G, tmp_path / "d", epochs=15, lr=3e-3, accumulate=2,
                               device="cpu", show_progress_bar=False)
    after = _kl(load_distilled_dual_encoder(res.path, device="cpu", show_progress_bar=False), G, t)
    assert res.steps == 15 * 3 and res.path == tmp_path / "d" / DELTA_DIR
    assert after < 0.5 * before, (before, after)
    assert res.losses[-1] < res.losses[0]
    # only the trained layers are saved, and the manifest says what the delta is
    from axn_fast.encoders.delta import read_delta

    manifest, tensors = read_delta(res.path)
    assert manifest["kind"] == "dual-encoder" and manifest["towers"] == "shared"
    assert tensors and all(n.startswith("encoder.layer.") for n in tensors)


def test_resume_equals_uninterrupted(base, tmp_path):
    G = _task(1)
    kw = dict(epochs=3, lr=1e-3, accumulate=2, device="cpu", show_progress_bar=False, checkpoint_every=2)
    full = distill_dual_encoder(base, ITEMS, QUERIES, G, tmp_path / "full", **kw)

    with pytest.raises(Interrupted):
        distill_dual_encoder(base, ITEMS, QUERIES, G, tmp_path / "cut", on_step=interrupt_at(5), **kw)
    resumed = distill_dual_encoder(base, ITEMS, QUERIES, G, tmp_path / "cut", **kw)
    from axn_fast.encoders.delta import read_delta

    _, a = read_delta(full.path)
    _, b = read_delta(resumed.path)
    assert sorted(a) == sorted(b)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=1e-6)
    # another G in the same directory is refused, not silently mixed in
    with pytest.raises(ValueError, match="other data or settings"):
        distill_dual_encoder(base, ITEMS, QUERIES, _task(2), tmp_path / "cut", **kw)


def test_bad_input(base, tmp_path):
    G = _task()
    with pytest.raises(ValueError, match="shape"):
        distill_dual_encoder(base, ITEMS[:5], QUERIES, G, tmp_path / "x", device="cpu")
    with pytest.raises(ValueError, match="lr"):
        distill_dual_encoder(base, ITEMS, QUERIES, G, tmp_path / "x", lr=0.0, device="cpu")
    empty = ScoreMatrix(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), G.shape)
    with pytest.raises(ValueError, match="nothing to distil"):
        distill_dual_encoder(base, ITEMS, QUERIES, empty, tmp_path / "x", device="cpu")


def test_numpy_loss_is_zero_kl_when_the_de_matches():
    # a DE whose cosines / t_student equal the CE scores / t_teacher has KL 0
    Q = np.array([[1.0, 0.0]], np.float32)
    ang = np.array([0.1, 0.5, 1.0])
    V = np.stack([np.cos(ang), np.sin(ang)], 1).astype(np.float32)
    G = ScoreMatrix(np.zeros(3, np.int64), np.arange(3, dtype=np.int64), np.cos(ang).astype(np.float32), (1, 3))
    out = distillation_loss_numpy(Q, V, G, teacher_temperature=0.05, student_temperature=0.05)
    assert out["kl"] == pytest.approx(0.0, abs=1e-9)
    out2 = distillation_loss_numpy(Q, V[::-1], G, teacher_temperature=0.05, student_temperature=0.05)
    assert out2["kl"] > 0.1


def test_feature_tower_reduces_kl():
    from axn_fast.encoders.distill import distill_feature_tower

    rng = np.random.default_rng(0)
    Qt, It = rng.standard_normal((40, 8)), rng.standard_normal((60, 8))
    S = Qt @ It.T
    Qf = (Qt + 1.5 * rng.standard_normal(Qt.shape)).astype(np.float32)
    If = (It + 1.5 * rng.standard_normal(It.shape)).astype(np.float32)
    rows = np.repeat(np.arange(40), 15)
    cols = np.concatenate([np.sort(rng.choice(60, 15, replace=False)) for _ in range(40)])
    G = ScoreMatrix(rows, cols, S[rows, cols].astype(np.float32), (40, 60))
    t = float(np.std(G.vals))
    before = distillation_loss_numpy(Qf, If, G, teacher_temperature=t)["kl"]
    tower = distill_feature_tower(Qf, If, G, epochs=30, lr=3e-3, accumulate=4, show_progress_bar=False)
    after = distillation_loss_numpy(tower.encode(Qf), tower.encode(If), G, teacher_temperature=t)["kl"]
    assert after < 0.7 * before, (before, after)
    assert tower.losses[-1] < tower.losses[0]


def test_distilled_de_in_the_method_factory_and_evaluate(base, tmp_path):
    from axn_fast.evaluation.data import EvalData
    from axn_fast.evaluation.evaluate import evaluate
    from axn_fast.evaluation.index_cost import distilled_embeddings
    from axn_fast.evaluation.methods import MethodConfig, build_methods

    G = _task()
    res = distill_dual_encoder(base, ITEMS, QUERIES, G, tmp_path / "d", epochs=2, lr=1e-3, device="cpu",
                               show_progress_bar=False)
    S = np.random.default_rng(0).standard_normal((len(QUERIES), len(ITEMS))).astype(np.float32)
    data = EvalData("tiny", S, np.array([0, 1, 2]), np.array([3]), np.array([4, 5]), items=ITEMS, queries=QUERIES)
    # not asked for and no distilled DE: the keys are left out silently
    methods, skipped = build_methods(data, MethodConfig(keys=None, budgets=(3,)))
    assert all("DE_DSTL" not in m.name for m in methods) and "rnr-de-dstl" not in skipped
    with pytest.raises(ValueError, match="distilled DE"):
        build_methods(data, MethodConfig(keys=("rnr-de-dstl",), budgets=(3,)))
    cfg = MethodConfig(keys=("rnr-de-dstl", "axn-de-dstl"), budgets=(3, 6), rounds=2, distilled_de=str(res.path))
    methods, _ = build_methods(data, cfg)
    assert [m.name for m in methods] == ["RNR-DE_DSTL", "AXN over DE_DSTL"]
    V, Qe = distilled_embeddings(data, res.path, device="cpu")
    want = np.argsort(-(Qe[4] @ V.T), kind="stable")[:3]
    assert set(methods[0].ranked[4][:3].tolist()) == set(want.tolist())
    table = evaluate(methods, S, data.test, ks=(1,), budgets=(3, 6), dev_queries=data.dev, include_exact=False,
                     show_progress_bar=False)
    assert {r["method"] for r in table.rows} == {"RNR-DE_DSTL", "AXN over DE_DSTL"}
