"""axn_fast.distributed on a local Ray cluster (2 CPUs): G throughput per actor count, sharded search latency.

* G: pairs/s of build_score_matrix_ray with 1 and 2 CE actors next to the local
  builder, for two stand-in CEs: "cpu" (numpy work per pair on one thread, like a
  CPU model, ~0.1 ms per pair) and "wait" (20 ms per call of 256 pairs, like a GPU
  or remote model that leaves the CPU free). Pairs ("cpu" / "wait"): 50K / 200K x
  AXN_BENCH_SCALE (at least 1000), 1000 items per query, batch 256, 16 calls per Ray task.
* Search: one query and 64 queries, top-100, over N = 1M x AXN_BENCH_SCALE items
  x 128 dims, one Index (1 thread) against ShardedIndex with 1 and 2 shards
  (1 thread each); "overhead" rows use 1000 items, where the scan is free, so
  they show the scatter-gather cost alone (object transfer, actor calls, merge).

    .venv/bin/python -m pytest bench/bench_distributed.py -q -p no:cacheprovider
"""
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs the ray extra")
pytest.importorskip("ray.data")

from axn_fast import Index, build_score_matrix  # noqa: E402
from conftest import scaled  # noqa: E402

PAIRS = scaled(50_000)
N, D, K, NQ = scaled(1_000_000), 128, 100, 64
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


class StandInCE:
    """Deterministic scores; "cpu": 12 layers of 256x256 numpy work per pair (one thread); "wait": 20 ms per call."""

    def __init__(self, kind):
        self.kind = kind
        rng = np.random.default_rng(0)
        self.W = rng.standard_normal((256, 256)).astype(np.float32)

    def __call__(self, q, ids):
        ids = np.asarray(ids)
        if self.kind == "wait":
            time.sleep(0.020)
            return np.sin(0.1 * ids + q).astype(np.float32)
        x = np.sin(np.outer(ids + q, np.arange(256, dtype=np.float32)) * 1e-3).astype(np.float32)
        for _ in range(12):
            x = np.tanh(x @ self.W * 0.1)
        return x.sum(axis=1).astype(np.float32)


class Factory:
    def __init__(self, kind):
        self.kind = kind

    def __call__(self):
        return StandInCE(self.kind)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    import sys
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


N_ITEMS_G = 1000


def _queries(kind):
    return list(range(max(1, (PAIRS if kind == "cpu" else 4 * PAIRS) // N_ITEMS_G)))


@pytest.mark.parametrize("kind", ["cpu", "wait"])
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_g_throughput(benchmark, kind, workers):
    from axn_fast.distributed import build_score_matrix_ray
    queries = _queries(kind)
    benchmark.group = f"G scoring: {len(queries) * N_ITEMS_G} pairs, CE '{kind}', batch 256"

    def local():
        from threadpoolctl import threadpool_limits
        with threadpool_limits(1):  # one core, as an actor with num_cpus=1 gets
            return build_score_matrix(StandInCE(kind), queries, N_ITEMS_G, strategy="all", show_progress_bar=False)

    def pool():
        return build_score_matrix_ray(Factory(kind), queries, N_ITEMS_G, strategy="all", num_workers=workers,
                                      num_cpus_per_worker=1, show_progress_bar=False)
    G = benchmark.pedantic(local if workers == 0 else pool, rounds=1, iterations=1)
    benchmark.extra_info["pairs_per_s"] = G.nnz / benchmark.stats.stats.mean if benchmark.stats else None
    benchmark.extra_info["backend"] = "local" if workers == 0 else f"ray x{workers}"
    assert G.nnz == len(queries) * N_ITEMS_G


@pytest.fixture(scope="module")
def indexes():
    from axn_fast.distributed import ShardedIndex
    rng = np.random.default_rng(0)
    V = rng.standard_normal((N, D), dtype=np.float32)
    small = V[:1000].copy()
    out = {"index": Index(V, num_threads=1), "small-index": Index(small, num_threads=1)}
    for s in (1, 2):
        out[f"sharded-{s}"] = ShardedIndex.from_arrays(V, s, num_threads=1, actor_options={"num_cpus": 0})
        out[f"small-sharded-{s}"] = ShardedIndex.from_arrays(small, s, num_threads=1,
                                                             actor_options={"num_cpus": 0})
    out["U"] = rng.standard_normal((NQ, D), dtype=np.float32)
    yield out
    for key, value in out.items():
        if key.startswith(("sharded", "small-sharded")):
            value.shutdown()


@pytest.mark.parametrize("nq", [1, NQ])
@pytest.mark.parametrize("which", ["index", "sharded-1", "sharded-2",
                                   "small-index", "small-sharded-1", "small-sharded-2"])
def test_search_latency(benchmark, indexes, which, nq):
    n = 1000 if which.startswith("small") else N
    benchmark.group = f"search top-{K}, {nq} quer{'y' if nq == 1 else 'ies'}, {n}x{D}"
    index, U = indexes[which], indexes["U"][:nq]
    S, ids = benchmark.pedantic(index.search, args=(U, K), rounds=20 if nq == 1 else 5, iterations=1,
                                warmup_rounds=1)
    ref = indexes["small-index" if which.startswith("small") else "index"].search(U, K)
    assert np.array_equal(ids, ref[1]) and np.array_equal(S, ref[0])
