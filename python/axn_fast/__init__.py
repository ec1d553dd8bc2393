"""axn_fast: k-nearest-neighbour search with cross-encoders.

The core (``Index``, ``adaptive_search``) needs only numpy, tqdm and the
compiled ``_core`` extension. Modules that need torch/transformers (the ``ce``
extra) are imported lazily, on first attribute access, so ``import axn_fast``
stays light; type checkers see every name through the ``TYPE_CHECKING`` block.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from axn_fast._core import __version__ as _core_version  # noqa: F401  (fails early if the build is broken)
from axn_fast._version import __version__ as __version__  # "as": re-exported for type checkers
from axn_fast.errors import CrossEncoderError, PaidWorkInterrupted, ScoreMatrixInterrupted, SearchInterrupted
from axn_fast.search.index import Index
from axn_fast.search.results import RoundInfo, SearchResult
from axn_fast.methods.rerank import retrieve_and_rerank
from axn_fast.evaluation.metrics import topk_recall
from axn_fast.encoders.dense import DenseScoreCE


# Public names defined in modules that import heavy optional dependencies
# (torch, transformers, scikit-learn, ...): name -> module. Resolved lazily.
_LAZY: dict[str, str] = {
    # encoders and datasets
    "HFCrossEncoder": ".encoders.cross_encoder",
    "SentenceTransformersCE": ".encoders.cross_encoder",
    "PairScoreCache": ".encoders.cross_encoder",
    "HFDualEncoder": ".encoders.dual_encoder",
    "minilm_path": ".encoders.models",
    "load_cross_encoder": ".encoders.models",
    "load_wordnet_subset": ".datasets",
    # offline indexing and files
    "build_score_matrix": ".indexing.score_matrix",
    "ScoreMatrix": ".indexing.score_matrix",
    "factorize": ".indexing.factorize",
    "FactorizationHistory": ".indexing.factorize",
    "InductiveMF": ".indexing.inductive",
    "ScoreNormalization": ".indexing.normalization",
    "estimate_normalization": ".indexing.normalization",
    "normalization_from_score_matrix": ".indexing.normalization",
    "IndexFileError": ".io.persistence",
    "IndexBundle": ".indexing.bundle",
    # baselines and evaluation
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

if TYPE_CHECKING:  # the lazy names' real types, for type checkers (kept equal to _LAZY by tests/test_static.py)
    from axn_fast.encoders.cross_encoder import HFCrossEncoder, PairScoreCache, SentenceTransformersCE
    from axn_fast.encoders.dual_encoder import HFDualEncoder
    from axn_fast.encoders.models import load_cross_encoder, minilm_path
    from axn_fast.datasets import load_wordnet_subset
    from axn_fast.indexing.score_matrix import ScoreMatrix, build_score_matrix
    from axn_fast.indexing.factorize import FactorizationHistory, factorize
    from axn_fast.indexing.inductive import InductiveMF
    from axn_fast.indexing.normalization import (ScoreNormalization, estimate_normalization,
                                                 normalization_from_score_matrix)
    from axn_fast.io.persistence import IndexFileError
    from axn_fast.indexing.bundle import IndexBundle
    from axn_fast.methods.cur import ADACUR, ANNCUR
    from axn_fast.methods.tour import TOUR
    from axn_fast.methods.lexical import BM25Retriever, TfidfRetriever
    from axn_fast.methods.baselines import exact_search
    from axn_fast.evaluation.evaluate import EvalTable, evaluate
    from axn_fast.evaluation.plotting import plot_recall_vs_budget
    from axn_fast.datasets.synthetic import low_rank_scores

# Written out (not built from _LAZY) so type checkers see every re-export.
__all__ = [
    "Index", "SearchResult", "RoundInfo", "SearchInterrupted", "CrossEncoderError",
    "PaidWorkInterrupted", "ScoreMatrixInterrupted", "retrieve_and_rerank", "topk_recall",
    "DenseScoreCE", "ADACUR", "ANNCUR", "BM25Retriever", "EvalTable", "FactorizationHistory",
    "HFCrossEncoder", "HFDualEncoder", "IndexBundle", "IndexFileError", "InductiveMF", "PairScoreCache",
    "ScoreMatrix", "ScoreNormalization", "SentenceTransformersCE", "TOUR", "TfidfRetriever",
    "build_score_matrix", "estimate_normalization", "evaluate", "exact_search", "factorize",
    "load_cross_encoder", "load_wordnet_subset", "low_rank_scores", "minilm_path", "normalization_from_score_matrix",
    "plot_recall_vs_budget",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'axn_fast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
