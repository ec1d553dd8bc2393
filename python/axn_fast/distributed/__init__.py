"""Beyond one machine, on Ray (the optional ``ray`` extra: ``pip install 'axn_fast[ray]'``).

* :func:`~axn_fast.distributed.score_matrix.build_score_matrix_ray`: the score
  matrix G scored by a pool of cross-encoder actors (Ray Data ``map_batches``),
  the same pairs and checkpoint as :func:`axn_fast.build_score_matrix`.
* :class:`~axn_fast.distributed.sharded.ShardedIndex`: item embeddings split
  over Ray actors by contiguous id ranges; a
  :class:`~axn_fast.search.protocol.VectorIndex`, so AXN runs on it unchanged.
* :mod:`axn_fast.distributed.deployment`: a Ray Serve deployment of AXN.

Nothing else in axn_fast imports this package, and ``import axn_fast`` never
imports ray. The same code runs on a laptop (``ray.init()`` starts a local
cluster) and on many nodes (``ray.init(address="auto")`` after ``ray start``).
"""
from __future__ import annotations

from typing import Any

__all__ = ["build_score_matrix_ray", "CESpec", "ShardedIndex"]


def __getattr__(name: str) -> Any:
    # ray is imported only when a distributed name is used
    if name in ("build_score_matrix_ray", "CESpec"):
        from axn_fast.distributed import score_matrix
        return getattr(score_matrix, name)
    if name == "ShardedIndex":
        from axn_fast.distributed import sharded
        return sharded.ShardedIndex
    raise AttributeError(f"module 'axn_fast.distributed' has no attribute {name!r}")
