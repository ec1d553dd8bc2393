"""Argument checks shared by every public entry point.

Each check raises ``TypeError`` (wrong kind of object / dtype) or ``ValueError``
(wrong shape, range or value) whose message names the argument and says what
was expected. Never ``assert``: checks must survive ``python -O``.
"""
from __future__ import annotations

import numbers
import os
from typing import Optional, Sequence

import numpy as np
import numpy.typing as npt


def as_float32_array(x: npt.ArrayLike, name: str, *, ndim: Sequence[int] = (2,), dim: Optional[int] = None,
                     allow_empty: bool = True, check_finite: bool = True) -> npt.NDArray[np.float32]:
    """Return ``x`` as a C-contiguous float32 array (no copy when it already is one).

    ndim: the accepted numbers of dimensions; dim: the required size of the last axis.
    """
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists, objects numpy refuses
            raise TypeError(f"{name} must be a numeric array, got {type(x).__name__}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating)
                                   or np.issubdtype(arr.dtype, np.integer)
                                   or arr.dtype == np.bool_):
        raise TypeError(f"{name} must be a numeric array (float32 preferred), got dtype {arr.dtype}")
    if arr.ndim not in ndim:
        want = " or ".join(f"{n}-D" for n in ndim)
        raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if dim is not None and arr.shape[-1] != dim:
        raise ValueError(f"{name} must have {dim} columns (the index dimension), got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if check_finite and out.size and not np.isfinite(out).all():
        bad = np.argwhere(~np.isfinite(out))[0]
        raise ValueError(f"{name} must be finite (no NaN or inf); first bad entry at index {tuple(int(i) for i in bad)}")
    return out


def as_ids(x: npt.ArrayLike, name: str, n_items: int, *, unique: bool = False) -> npt.NDArray[np.int64]:
    """Return ``x`` as a 1-D int64 array of item ids in ``[0, n_items)``."""
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nesting such as [[1], 2]
        raise ValueError(f"{name} must be a 1-D array of item ids, got a ragged {type(x).__name__} "
                         f"numpy cannot make an array of ({exc})") from exc
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == object and arr.ndim == 1:  # Python ints beyond int64/uint64 (e.g. 2**70) make object arrays
        values = arr.tolist()
        if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
            bad = next((int(v) for v in values if not 0 <= v < n_items), None)
            if bad is not None:
                raise ValueError(f"{name} contains id {bad}, outside [0, {n_items}) (the number of items)")
    if not (np.issubdtype(arr.dtype, np.integer)):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr))
                and np.all(arr == np.round(arr))):
            raise TypeError(f"{name} must be an array of integer item ids, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of item ids, got shape {arr.shape}")
    # the range is checked in the given dtype, before any cast can wrap (uint64) or saturate (1e20)
    lo, hi = arr.min().item(), arr.max().item()
    if lo < 0 or hi >= n_items:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} contains id {bad:g}, outside [0, {n_items}) (the number of items)"
                         if isinstance(bad, float) else
                         f"{name} contains id {bad}, outside [0, {n_items}) (the number of items)")
    arr = arr.astype(np.int64, copy=False)
    if unique and np.unique(arr).size != arr.size:
        raise ValueError(f"{name} must not contain duplicate ids")
    return np.ascontiguousarray(arr)


def check_int(value: object, name: str, *, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """Return ``value`` as an int, checking its type and range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_seed(seed: object, name: str = "seed") -> Optional[int]:
    """``seed`` for ``np.random.default_rng``: None or an int >= 0."""
    return None if seed is None else check_int(seed, name, minimum=0)


def check_float(value: object, name: str, *, minimum: Optional[float] = None, maximum: Optional[float] = None) -> float:
    """Return ``value`` as a finite float, checking its type and range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


#: The most threads one call may ask for (``axn_fast._core.MAX_THREADS``; checked by a test).
MAX_THREADS = 1024


def resolve_num_threads(num_threads: int) -> int:
    """``0`` means every core this process may run on; otherwise the given count (at most
    :data:`MAX_THREADS`, the C++ core's fixed bound, the same on every machine)."""
    num_threads = check_int(num_threads, "num_threads", minimum=0, maximum=MAX_THREADS)
    if num_threads == 0:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    return num_threads
