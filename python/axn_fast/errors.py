"""Every exception that carries what was already paid for.

CE calls are expensive: when one fails part-way through a search or through
scoring the matrix G, the scores already obtained are attached to the
exception as ``partial`` (a :class:`~axn_fast.SearchResult` of everything
scored before the failure for a search, a :class:`~axn_fast.ScoreMatrix` for
G), so a caller can resume or at least keep them.

    PaidWorkInterrupted            (base: .partial)
    ├── SearchInterrupted          the CE raised during a search (RuntimeError)
    ├── CrossEncoderError          the CE returned something unusable (ValueError)
    └── ScoreMatrixInterrupted     the CE failed while G was being built (RuntimeError)
"""
from __future__ import annotations

from typing import Any, Optional


class PaidWorkInterrupted(Exception):
    """Base of every failure that keeps what the cross-encoder was already paid for in ``partial``."""

    def __init__(self, message: str, partial: Optional[Any] = None):
        super().__init__(message)
        self.partial = partial


class SearchInterrupted(PaidWorkInterrupted, RuntimeError):
    """The cross-encoder raised during a search; ``__cause__`` is its exception."""


class CrossEncoderError(PaidWorkInterrupted, ValueError):
    """The cross-encoder returned something unusable (wrong length, NaN, not numeric)."""


class ScoreMatrixInterrupted(PaidWorkInterrupted, RuntimeError):
    """The cross-encoder failed while G was being built.

    ``partial`` is a :class:`~axn_fast.ScoreMatrix` of every pair scored before
    the failure; with ``checkpoint_dir`` those pairs are also on disk and a
    re-run with the same arguments resumes.
    """
