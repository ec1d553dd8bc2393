"""axn_fast: k-nearest-neighbour search with cross-encoders.

The core (``Index``, ``adaptive_search``) needs only numpy and the compiled
``_core`` extension. Modules that need torch/transformers (the ``ce`` extra)
are imported lazily, on first attribute access, so ``import axn_fast`` stays
light.
"""
from __future__ import annotations

import importlib

from ._core import __version__ as _core_version  # noqa: F401  (fails early if the build is broken)
from .errors import CrossEncoderError, SearchInterrupted
from .index import Index
from .search_result import RoundInfo, SearchResult
from .rerank import retrieve_and_rerank
from .metrics import topk_recall
from .dense_ce import DenseScoreCE

__version__ = "0.1.0"

# Public names defined in modules that import heavy optional dependencies
# (torch, transformers, scikit-learn, ...): name -> module. Resolved lazily.
_LAZY = {
    # issue 3: cross-encoders, dual-encoder, models, datasets
    "HFCrossEncoder": ".cross_encoder",
    "SentenceTransformersCE": ".cross_encoder",
    "PairScoreCache": ".cross_encoder",
    "HFDualEncoder": ".dual_encoder",
    "minilm_path": ".models",
    "load_wordnet_subset": ".datasets",
    # issue 4: offline indexing
    "build_score_matrix": ".score_matrix",
    "ScoreMatrix": ".score_matrix",
    "ScoreMatrixInterrupted": ".score_matrix",
    "factorize": ".factorize",
    "FactorizationHistory": ".factorize",
    "InductiveMF": ".inductive",
    "ScoreNormalization": ".normalization",
    "estimate_normalization": ".normalization",
    "normalization_from_score_matrix": ".normalization",
    "IndexFileError": ".persistence",
    # issue 5: baselines and evaluation
    "ANNCUR": ".cur",
    "ADACUR": ".cur",
    "TOUR": ".tour",
    "TfidfRetriever": ".lexical",
    "BM25Retriever": ".lexical",
    "exact_search": ".baselines",
    "evaluate": ".evaluation",
    "EvalTable": ".evaluation",
    "plot_recall_vs_budget": ".plotting",
    "low_rank_scores": ".synthetic",
}

__all__ = [
    "Index",
    "SearchResult",
    "RoundInfo",
    "SearchInterrupted",
    "CrossEncoderError",
    "retrieve_and_rerank",
    "topk_recall",
    "DenseScoreCE",
    *sorted(_LAZY),
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'axn_fast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
