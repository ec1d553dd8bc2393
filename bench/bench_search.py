"""Index.search against numpy and faiss-cpu IndexFlatIP, side by side in one run.

Run: pytest bench/bench_search.py --benchmark-json=bench/results/search.json
then: python bench/report.py bench/results/search.json
"""
import numpy as np
import pytest

import axn_fast
from conftest import scaled

faiss = pytest.importorskip("faiss", reason="the bench extra installs faiss-cpu")

K = 100
N_EXCLUDED = 500
SHAPES = [(scaled(1_000_000), 768), (scaled(1_000_000), 128)]


def numpy_topk(V, U, k, exclude):
    """What a user would write with numpy: one BLAS product, mask, argpartition, sort."""
    S = np.atleast_2d(U) @ V.T
    S[:, exclude] = -np.inf
    part = np.argpartition(-S, k, axis=1)[:, :k]
    rows = np.arange(S.shape[0])[:, None]
    order = np.argsort(-S[rows, part], axis=1)
    ids = part[rows, order]
    return S[rows, ids], ids


def faiss_index(V):
    index = faiss.IndexFlatIP(V.shape[1])
    index.add(V)
    return index


def faiss_topk(index, U, k, exclude):
    """faiss with an exclusion selector (its default search path)."""
    sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(exclude))
    return index.search(np.atleast_2d(U), k, params=faiss.SearchParameters(sel=sel))


def faiss_blas_topk(index, U, k, exclude):
    """faiss forced onto its BLAS path (selectors bypass it): search k + |exclude|, then drop excluded ids."""
    old = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 0
    try:
        D, I = index.search(np.atleast_2d(U), k + len(exclude))
    finally:
        faiss.cvar.distance_compute_blas_threshold = old
    keep = ~np.isin(I, exclude)
    rows = [(d[m][:k], i[m][:k]) for d, i, m in zip(D, I, keep)]
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def setup(request, item_matrices):
    n, d = request.param
    V = item_matrices(n, d)
    rng = np.random.default_rng(1)
    U = rng.standard_normal((16, d)).astype(np.float32)
    exclude = rng.choice(n, N_EXCLUDED, replace=False).astype(np.int64)
    return dict(V=V, U=U, exclude=exclude, name=f"{n}x{d}", idx32=axn_fast.Index(V),
                idx16=axn_fast.Index(V, dtype="float16"), faiss=faiss_index(V))


@pytest.mark.parametrize("nq", [1, 16])
@pytest.mark.parametrize("method", ["axn_fast-fp32", "axn_fast-fp16", "numpy", "faiss", "faiss-blas"])
def test_search(benchmark, setup, method, nq):
    U = setup["U"][0] if nq == 1 else setup["U"]
    ex = setup["exclude"]
    benchmark.group = f"search {setup['name']} nq={nq} k={K} excl={N_EXCLUDED}"
    if method == "axn_fast-fp32":
        ids = benchmark(setup["idx32"].search, U, K, exclude=ex)[1]
    elif method == "axn_fast-fp16":
        ids = benchmark(setup["idx16"].search, U, K, exclude=ex)[1]
    elif method == "numpy":
        ids = benchmark(numpy_topk, setup["V"], U, K, ex)[1]
    else:
        fn = faiss_blas_topk if method == "faiss-blas" else faiss_topk
        ids = benchmark(fn, setup["faiss"], U, K, ex)[1]
    ref = setup["idx32"].search(U, K, exclude=ex)[1]
    # same top-k (as sets, rounding may swap near-ties) for every method
    overlap = np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(np.atleast_2d(ids), np.atleast_2d(ref))])
    assert overlap > 0.99
