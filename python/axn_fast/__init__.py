"""axn_fast: k-nearest-neighbour search with cross-encoders.

The core (``Index``, ``adaptive_search``) needs only numpy and the compiled
``_core`` extension. Modules that need torch/transformers (the ``ce`` extra)
are imported lazily, on first attribute access, so ``import axn_fast`` stays
light.
"""
from __future__ import annotations

import importlib

from axn_fast._core import __version__ as _core_version  # noqa: F401  (fails early if the build is broken)
from axn_fast.errors import CrossEncoderError, PaidWorkInterrupted, ScoreMatrixInterrupted, SearchInterrupted
from axn_fast.search.index import Index
from axn_fast.search.results import RoundInfo, SearchResult
from axn_fast.methods.rerank import retrieve_and_rerank
from axn_fast.evaluation.metrics import topk_recall
from axn_fast.encoders.dense import DenseScoreCE

__version__ = "0.1.0"

# Public names defined in modules that import heavy optional dependencies
# (torch, transformers, scikit-learn, ...): name -> module. Resolved lazily.
_LAZY = {
    # issue 3: cross-encoders, dual-encoder, models, datasets
    "HFCrossEncoder": ".encoders.cross_encoder",
    "SentenceTransformersCE": ".encoders.cross_encoder",
    "PairScoreCache": ".encoders.cross_encoder",
    "HFDualEncoder": ".encoders.dual_encoder",
    "minilm_path": ".encoders.models",
    "load_wordnet_subset": ".datasets",
    # issue 4: offline indexing
    "build_score_matrix": ".indexing.score_matrix",
    "ScoreMatrix": ".indexing.score_matrix",
    "factorize": ".indexing.factorize",
    "FactorizationHistory": ".indexing.factorize",
    "InductiveMF": ".indexing.inductive",
    "ScoreNormalization": ".indexing.normalization",
    "estimate_normalization": ".indexing.normalization",
    "normalization_from_score_matrix": ".indexing.normalization",
    "IndexFileError": ".io.persistence",
    # issue 5: baselines and evaluation
    "ANNCUR": ".methods.cur",
    "ADACUR": ".methods.cur",
    "TOUR": ".methods.tour",
    "TfidfRetriever": ".methods.lexical",
    "BM25Retriever": ".methods.lexical",
    "exact_search": ".methods.baselines",
    "evaluate": ".evaluation.evaluate",
    "EvalTable": ".evaluation.evaluate",
    "plot_recall_vs_budget": ".evaluation.plotting",
    "low_rank_scores": ".datasets.synthetic",
}

__all__ = [
    "Index",
    "SearchResult",
    "RoundInfo",
    "SearchInterrupted",
    "CrossEncoderError",
    "PaidWorkInterrupted",
    "ScoreMatrixInterrupted",
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
