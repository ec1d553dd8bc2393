"""Exceptions that carry what was already paid for.

CE calls are expensive: when one fails part-way through a search, the scores
already obtained are attached to the exception as ``partial`` (a
:class:`~axn_fast.SearchResult` of everything scored before the failure), so a
caller can resume or at least keep them.
"""
from __future__ import annotations


class _CarriesPartial:
    partial = None  # SearchResult of everything scored before the failure


class SearchInterrupted(_CarriesPartial, RuntimeError):
    """The cross-encoder raised during a search; ``__cause__`` is its exception."""

    def __init__(self, message: str, partial=None):
        super().__init__(message)
        self.partial = partial


class CrossEncoderError(_CarriesPartial, ValueError):
    """The cross-encoder returned something unusable (wrong length, NaN, not numeric)."""

    def __init__(self, message: str, partial=None):
        super().__init__(message)
        self.partial = partial
