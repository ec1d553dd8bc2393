"""AXN's per-query overhead (everything but the CE) versus the R scans it needs.

A free CE (scores from a precomputed low-rank model) isolates the search: the
target is overhead <= 1.2x the time of R plain top-k scans over the index.
"""
import numpy as np
import pytest

import axn_fast
from conftest import scaled

N, D, R, BUDGET, K = scaled(1_000_000), 768, 10, 100, 10


@pytest.fixture(scope="module")
def setup(item_matrices):
    V = item_matrices(N, D)
    rng = np.random.default_rng(2)
    q = rng.standard_normal(D).astype(np.float32)

    def free_ce(_, ids):  # a CE that costs (almost) nothing
        return V[ids] @ q

    return dict(index=axn_fast.Index(V), ce=free_ce, q=q)


def r_scans(index, q):
    for r in range(R):
        index.search(q, BUDGET // R, exclude=np.arange(r * (BUDGET // R)))


@pytest.mark.parametrize("method", ["axn_fast-adaptive_search", "axn_fast-R-plain-scans"])
def test_axn_overhead(benchmark, setup, method):
    benchmark.group = f"AXN overhead {N}x{D} R={R} budget={BUDGET}"
    index, q = setup["index"], setup["q"]
    if method == "axn_fast-adaptive_search":
        res = benchmark(index.adaptive_search, q, setup["ce"], BUDGET, k=K, rounds=R, u0=q)
        assert res.n_ce_calls == BUDGET
    else:
        benchmark(r_scans, index, q)
