"""CE score normalisation s -> beta (s - alpha) (AXN paper, Appendix A.4): the one type.

A :class:`ScoreNormalization` is applied in one place at search time: to the
regression targets of the methods that fit a query embedding to CE scores
(``adaptive_search(..., normalization=)`` for AXN, ``TOUR(normalization=)``).
Returned scores are always the raw CE scores, and beta > 0 so no ranking
changes. It is estimated offline by :mod:`axn_fast.indexing.normalization`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["ScoreNormalization", "as_normalization", "NormalizationLike"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class ScoreNormalization:
    """s_final = beta * (s - alpha); alpha finite, beta > 0 (ranking preserved), both within float32's range."""

    alpha: float
    beta: float

    def __post_init__(self) -> None:
        try:
            alpha, beta = float(self.alpha), float(self.beta)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"alpha and beta must be real numbers, got {self.alpha!r} and {self.beta!r}") from exc
        if not (np.isfinite(alpha) and np.isfinite(beta) and beta > 0):
            raise ValueError(f"alpha must be finite and beta finite and > 0 (beta > 0 keeps rankings), got ({alpha}, {beta})")
        if abs(alpha) > _FLOAT32_MAX or beta > _FLOAT32_MAX:
            raise ValueError(f"alpha and beta must lie within float32's range (|x| <= {_FLOAT32_MAX:.3g}), "
                             f"got ({alpha}, {beta})")
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)

    def apply(self, scores: Any) -> Any:
        """Normalise raw CE scores: an array (returns float32 of the same shape), or a
        :class:`~axn_fast.indexing.score_matrix.ScoreMatrix` (returns a new one with normalised values)."""
        if hasattr(scores, "with_values") and hasattr(scores, "vals"):  # a ScoreMatrix (indexing layer)
            return scores.with_values(self.apply(scores.vals))
        s = np.asarray(scores, dtype=np.float64)
        return (self.beta * (s - self.alpha)).astype(np.float32)

    def targets(self, scores: ArrayLike, dtype: Any = np.float32) -> NDArray[Any]:
        """(m,) C-contiguous regression targets beta (s - alpha) of (m,) raw CE scores, computed in
        float64 and returned as ``dtype`` (float32 for AXN's solver, float64 for TOUR's gradient)."""
        return np.ascontiguousarray(self.beta * (np.asarray(scores, dtype=np.float64) - self.alpha), dtype=dtype)

    def invert(self, scores: ArrayLike) -> NDArray[np.float32]:
        """Raw CE scores from normalised ones."""
        return (np.asarray(scores, dtype=np.float64) / self.beta + self.alpha).astype(np.float32)

    def to_dict(self) -> Dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta}


NormalizationLike = Union[ScoreNormalization, Tuple[float, float], None]
"""What ``normalization=`` arguments accept (see :func:`as_normalization`)."""


def as_normalization(value: Any, name: str = "normalization") -> Optional[ScoreNormalization]:
    """``value`` as a :class:`ScoreNormalization` (or None): accepts one, an ``(alpha, beta)``
    pair, a ``{"alpha":, "beta":}`` mapping or any object with ``.alpha`` and ``.beta``."""
    if value is None or isinstance(value, ScoreNormalization):
        return value
    if isinstance(value, dict):
        pair: Any = (value.get("alpha"), value.get("beta"))
    elif hasattr(value, "alpha") and hasattr(value, "beta"):
        pair = (value.alpha, value.beta)
    elif isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be (alpha, beta) or a ScoreNormalization, got {value!r}")
    else:
        try:
            pair = tuple(value)
        except TypeError as exc:
            raise TypeError(f"{name} must be (alpha, beta) or a ScoreNormalization, "
                            f"got {type(value).__name__}") from exc
        if len(pair) != 2:
            raise ValueError(f"{name} must be (alpha, beta), got {len(pair)} values")
    try:
        return ScoreNormalization(*pair)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}") from exc
