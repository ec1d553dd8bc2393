"""The one progress-bar helper: tqdm, shown on a terminal unless turned off.

``show=None`` lets tqdm decide (``disable=None``: shown only when stderr is a
terminal), ``True``/``False`` force it. Every long loop in the package goes
through :func:`progress`, so ``show_progress_bar=False`` / ``--no-progress``
mean the same everywhere.
"""
from __future__ import annotations

from typing import Iterable, Optional, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Optional[Iterable[T]] = None, *, total: Optional[int] = None, desc: str = "",
             unit: str = "it", show: Optional[bool] = None, initial: int = 0) -> "tqdm[T]":
    """A tqdm bar over ``iterable`` (or a manual one with ``total``); ``show`` as in the module doc."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=False,
                disable=None if show is None else not show)
