"""Approximate per-round retrieval (FaissIndex: HNSW, IVF) against the exact scan (Index), side by side.

What AXN does every round: the top items by <V[i], u> among those not yet scored
(k = budget / rounds = 20, 80 excluded). Each approximate setting reports its
recall@20 against the exact scan in ``extra_info``; the ``axn`` groups run
AXN end to end (budget 100, 5 rounds, a free low-rank CE) on each index and
report the recall of the CE's true top-10.

Data: 200K x 128 (AXN_BENCH_SCALE scales n) unit-norm embeddings of intrinsic
dimension 32 plus isotropic noise, the shape of a dual encoder's space;
queries from the same model.

Run: pytest bench/bench_approximate.py --benchmark-json=bench/results/approximate.json
then: python bench/report.py bench/results/approximate.json      (times and ratios)
and:  python bench/bench_approximate.py bench/results/approximate.json   (recall next to time)
"""
from __future__ import annotations

import json
import sys
from typing import Any, Dict

import numpy as np
import pytest

import axn_fast
from axn_fast.search.adaptive import adaptive_search

try:
    from conftest import scaled
except ImportError:  # run as a script to print the recall table
    scaled = None  # type: ignore[assignment]

faiss = pytest.importorskip("faiss", reason="the bench extra installs faiss-cpu")
from axn_fast.search.approximate import FaissIndex  # noqa: E402

N = scaled(200_000) if scaled is not None else 0
D, RANK, K, N_EXCLUDED, N_QUERIES = 128, 32, 20, 80, 32
SETTINGS = ["exact", "hnsw-ef32", "hnsw-ef64", "hnsw-ef128", "ivf-np4", "ivf-np16", "ivf-np64"]


def embeddings(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = np.random.default_rng(99).standard_normal((RANK, D)).astype(np.float32)
    X = np.empty((n, D), dtype=np.float32)
    for s in range(0, n, 65536):
        m = min(65536, n - s)
        block = rng.standard_normal((m, RANK), dtype=np.float32) @ A
        block += 0.3 * np.sqrt(RANK) * rng.standard_normal((m, D), dtype=np.float32)
        X[s:s + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return X


@pytest.fixture(scope="module")
def setup() -> Dict[str, Any]:
    V = embeddings(N, 0)
    U = embeddings(N_QUERIES, 1)
    exact = axn_fast.Index(V)
    hnsw = FaissIndex.hnsw(V, M=16, ef_construction=100)
    ivf = FaissIndex.ivf(V, nprobe=16)
    rng = np.random.default_rng(2)
    # AXN's exclusions are the items already scored, i.e. near the top: take them from the exact top 200
    top = exact.search(U, 200)[1]
    excl = [rng.choice(top[q], N_EXCLUDED, replace=False) for q in range(N_QUERIES)]
    return dict(V=V, U=U, exact=exact, hnsw=hnsw, ivf=ivf, excl=excl,
                truth=[exact.search(U[q], K, exclude=excl[q])[1] for q in range(N_QUERIES)])


def index_for(setup: Dict[str, Any], method: str) -> Any:
    if method == "exact":
        return setup["exact"]
    kind, knob = method.split("-")
    ix = setup[kind]
    if kind == "hnsw":
        ix.ef_search = int(knob[2:])
    else:
        ix.nprobe = int(knob[2:])
    return ix


@pytest.mark.parametrize("method", SETTINGS)
def test_round_retrieval(benchmark: Any, setup: Dict[str, Any], method: str) -> None:
    ix = index_for(setup, method)
    U, excl = setup["U"], setup["excl"]
    benchmark.group = f"one AXN round: top-{K} of {N}x{D}, {N_EXCLUDED} excluded, 1 query"
    state = {"q": 0}

    def one() -> np.ndarray:
        q = state["q"] = (state["q"] + 1) % N_QUERIES
        return ix.search(U[q], K, exclude=excl[q])[1]

    benchmark(one)
    recall = np.mean([len(np.intersect1d(ix.search(U[q], K, exclude=excl[q])[1], setup["truth"][q])) / K
                      for q in range(N_QUERIES)])
    benchmark.extra_info["recall"] = float(recall)
    if method == "exact":
        assert recall == 1.0
    else:
        assert 0.0 < recall <= 1.0, recall


@pytest.mark.parametrize("method", ["exact", "hnsw-ef64", "ivf-np16"])
def test_axn_end_to_end(benchmark: Any, setup: Dict[str, Any], method: str) -> None:
    ix = index_for(setup, method)
    V, U = setup["V"], setup["U"]
    noise = np.random.default_rng(3).standard_normal((8, V.shape[0]), dtype=np.float32) * 0.05

    def ce(q: int, ids: np.ndarray) -> np.ndarray:  # a free CE: low rank in V's space plus noise
        return V[ids] @ U[q] + noise[q, ids]

    truth = [np.argsort(-(V @ U[q] + noise[q]))[:10] for q in range(8)]
    benchmark.group = f"AXN end to end: {N}x{D}, budget 100, 5 rounds, free CE (per query)"
    state = {"q": 0}

    def one() -> axn_fast.SearchResult:
        q = state["q"] = (state["q"] + 1) % 8
        return adaptive_search(ix, q, ce, 100, k=10, rounds=5, seed=q)

    benchmark(one)
    recall = np.mean([axn_fast.topk_recall(adaptive_search(ix, q, ce, 100, k=10, rounds=5, seed=q).ids,
                                           truth[q], 10) for q in range(8)])
    benchmark.extra_info["recall"] = float(recall)


def main(path: str) -> None:
    """Print time and recall per setting, with the exact scan's time over each (speed-up)."""
    with open(path) as f:
        data = json.load(f)
    groups: Dict[str, Dict[str, Any]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(b["group"], {})[b["params"]["method"]] = b
    for group, rows in groups.items():
        base = rows["exact"]["stats"]["median"]
        print(f"### {group}\n\n| index | median | speed-up vs exact | recall |\n|---|---|---|---|")
        for name, b in sorted(rows.items(), key=lambda kv: kv[1]["stats"]["median"]):
            med = b["stats"]["median"]
            print(f"| {name} | {med * 1e3:.3f} ms | {base / med:.2f}x | {b['extra_info']['recall']:.3f} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
