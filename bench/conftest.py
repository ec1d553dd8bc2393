"""Shared data for the benchmarks.

Sizes follow the issues (1M items) unless AXN_BENCH_SCALE shrinks them, e.g.
AXN_BENCH_SCALE=0.01 for a quick smoke run.
"""
import os

import numpy as np
import pytest

SCALE = float(os.environ.get("AXN_BENCH_SCALE", "1"))


def scaled(n: int) -> int:
    return max(1000, int(n * SCALE))


@pytest.fixture(scope="session")
def item_matrices():
    """1M x 768 and 1M x 128 float32 item embeddings (unit-norm rows, like a DE's)."""
    cache = {}

    def get(n, d, seed=0):
        key = (n, d)
        if key not in cache:
            rng = np.random.default_rng(seed)
            V = np.empty((n, d), dtype=np.float32)
            for s in range(0, n, 65536):  # in chunks: no float64 temporary of the whole matrix
                block = rng.standard_normal((min(65536, n - s), d), dtype=np.float32)
                V[s:s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
            cache.clear()  # one large matrix at a time
            cache[key] = V
        return cache[key]

    return get
