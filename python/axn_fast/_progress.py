"""The one progress-bar helper: tqdm, shown on a terminal unless turned off.

``show=None`` lets tqdm decide (``disable=None``: shown only when stderr is a
terminal), ``True``/``False`` force it. Every long loop in the package goes
through :func:`progress`, so ``show_progress_bar=False`` / ``--no-progress``
mean the same everywhere.
"""
from __future__ import annotations

from typing import Any, Iterable, NoReturn, Optional, TypeVar, overload

from tqdm.auto import tqdm

T = TypeVar("T")


@overload
def progress(iterable: Iterable[T], *, total: Optional[int] = None, desc: str = "", unit: str = "it",
             show: Optional[bool] = None, initial: int = 0) -> "tqdm[T]": ...


@overload
def progress(iterable: None = None, *, total: Optional[int] = None, desc: str = "", unit: str = "it",
             show: Optional[bool] = None, initial: int = 0) -> "tqdm[NoReturn]": ...


def progress(iterable: Optional[Iterable[Any]] = None, *, total: Optional[int] = None, desc: str = "",
             unit: str = "it", show: Optional[bool] = None, initial: int = 0) -> "tqdm[Any]":
    """A tqdm bar over ``iterable`` (or a manual one with ``total``, advanced by ``bar.update(n)``).

    ``total`` is the number of steps, ``initial`` the steps already done (a resumed job),
    ``unit`` the name of one step; ``show`` as in the module doc.
    """
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=False,
                disable=None if show is None else not show)
