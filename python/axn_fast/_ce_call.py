"""Calling a cross-encoder safely: one batched call, validated output, nothing lost on failure."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import CrossEncoderError, SearchInterrupted


def call_ce(ce: Callable, q, ids: np.ndarray, partial: Callable) -> np.ndarray:
    """Return ``ce(q, ids)`` as a (len(ids),) float32 array of finite scores.

    ``partial()`` builds the result of everything scored before this call; it
    is attached to the exception when the CE raises (:class:`SearchInterrupted`)
    or returns something unusable (:class:`CrossEncoderError`).
    """
    try:
        out = ce(q, ids)
    except Exception as exc:
        raise SearchInterrupted(
            f"the cross-encoder raised {type(exc).__name__} while scoring {len(ids)} items: {exc}; "
            "the scores obtained before this call are in .partial",
            partial=partial(),
        ) from exc
    try:
        scores = np.asarray(out, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise CrossEncoderError(
            f"the cross-encoder must return numeric scores, got {type(out).__name__}", partial=partial()
        ) from exc
    if scores.ndim == 2 and scores.shape[1] == 1:  # (m, 1) logits are common
        scores = scores[:, 0]
    if scores.shape != (len(ids),):
        raise CrossEncoderError(
            f"the cross-encoder returned scores of shape {scores.shape} for {len(ids)} items; "
            f"expected shape ({len(ids)},)",
            partial=partial(),
        )
    bad = ~np.isfinite(scores)
    if bad.any():
        raise CrossEncoderError(
            f"the cross-encoder returned {int(bad.sum())} non-finite scores (NaN or inf), "
            f"e.g. for item {int(ids[np.argmax(bad)])}",
            partial=partial(),
        )
    return np.ascontiguousarray(scores)
