"""Argument types shared by the commands, and the one usage error.

Every numeric flag is parsed by one of these ``type=`` functions, so a value out of
range is refused by argparse itself (exit 2, ``axn-fast <command>: error: argument
--flag: ...``) instead of being replaced by a default or failing later.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, List, Optional, Sequence, TypeVar

T = TypeVar("T", int, float)


class UsageError(ValueError):
    """A flag value (or a combination of flags) that the command cannot accept: exit status 2.

    Raised by a command's ``run`` for checks argparse cannot make alone (a flag against
    the data, two flags together); the message names the flag(s).
    """


def _bounds(lo: Optional[float], hi: Optional[float]) -> str:
    if lo is not None and hi is not None:
        return f"in [{lo:g}, {hi:g}]"
    if lo is not None:
        return f">= {lo:g}"
    return f"<= {hi:g}"


def _number(kind: Callable[[str], T], lo: Optional[T], hi: Optional[T]) -> Callable[[str], T]:
    name = "an integer" if kind is int else "a number"

    def parse(text: str) -> T:
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {_bounds(lo, hi)}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def int_range(lo: Optional[int] = None, hi: Optional[int] = None) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer in ``[lo, hi]`` (either bound optional)."""
    return _number(int, lo, hi)


def float_range(lo: Optional[float] = None, hi: Optional[float] = None) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite float in ``[lo, hi]`` (either bound optional)."""
    return _number(float, lo, hi)


def csv_list(item: Callable[[str], T]) -> Callable[[str], List[T]]:
    """An argparse ``type=`` for a non-empty comma-separated list, each value parsed by ``item``
    (e.g. ``csv_list(int_range(1))``)."""

    def parse(text: str) -> List[T]:
        values = [item(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one comma-separated value, got {text!r}")
        return values

    parse.__name__ = "list"
    return parse


def csv_str(text: str) -> List[str]:
    """An argparse ``type=`` for a non-empty comma-separated list of names."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one comma-separated name, got {text!r}")
    return values


def csv_choices(choices: Sequence[str]) -> Callable[[str], List[str]]:
    """An argparse ``type=`` for a non-empty comma-separated list of names from ``choices``."""

    def parse(text: str) -> List[str]:
        values = csv_str(text)
        bad = [v for v in values if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown name(s) {', '.join(bad)}; choose from {','.join(choices)}")
        return values

    parse.__name__ = "list"
    return parse


def shape(text: str) -> List[int]:
    """An argparse ``type=`` for ``NxM`` with positive integers (e.g. ``2000x10000``)."""
    parts = text.lower().split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) != 2 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected NxM with positive integers (e.g. 2000x10000), got {text!r}")
    return dims


def device(text: str) -> str:
    """An argparse ``type=`` for a torch device name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``
    (whether CUDA is present is checked when the model loads)."""
    t = text.strip().lower()
    if t in ("auto", "cpu", "cuda") or (t.startswith("cuda:") and t[5:].isdigit()):
        return t
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
