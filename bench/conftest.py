"""Shared data for the benchmarks, collected by `pytest bench` (bench_*.py, see pyproject).

Sizes follow the issues (1M items) unless AXN_BENCH_SCALE shrinks them, e.g.
AXN_BENCH_SCALE=0.01 for a quick smoke run.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Tuple

import numpy as np
import numpy.typing as npt
import pytest

SCALE = float(os.environ.get("AXN_BENCH_SCALE", "1"))


def scaled(n: int) -> int:
    """``n`` times AXN_BENCH_SCALE, at least 1000."""
    return max(1000, int(n * SCALE))


def pytest_report_header() -> List[str]:
    return [f"axn_fast benchmarks: AXN_BENCH_SCALE={SCALE:g} (1M items -> {scaled(1_000_000)})"]


@pytest.fixture(scope="session")
def item_matrices() -> Callable[..., npt.NDArray[np.float32]]:
    """``get(n, d, seed=0)``: (n, d) float32 item embeddings with unit-norm rows, like a DE's."""
    cache: Dict[Tuple[int, int], npt.NDArray[np.float32]] = {}

    def get(n: int, d: int, seed: int = 0) -> npt.NDArray[np.float32]:
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
