"""The one boundary every cross-encoder call crosses.

* :func:`check_scores` is the only validation of what a CE returns: anything
  unusable (wrong length, NaN/inf, beyond float32, not numeric) becomes a
  :class:`~axn_fast.errors.CrossEncoderError` that says what was returned.
* :func:`call_ce` hands the CE a read-only copy of the ids, calls it and
  validates the result; an exception from the CE becomes
  :class:`~axn_fast.errors.SearchInterrupted` (``__cause__`` is the CE's
  exception). ``KeyboardInterrupt`` and ``SystemExit`` pass through as they
  are, so Ctrl-C still stops the program. With ``timeout=`` (for remote CEs)
  a call that does not answer in time becomes ``SearchInterrupted`` too.
* :class:`CallCounter` / :class:`CountingCrossEncoder` count pairs, calls and
  seconds, the one place where CE calls are counted.

The errors raised here carry ``partial=None``: the caller that knows what was
already paid for (the search's ledger, the score-matrix builder) attaches it.
"""
from __future__ import annotations

import numbers
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from axn_fast.encoders.protocol import CrossEncoder, Ids, Scores
from axn_fast.errors import CrossEncoderError, SearchInterrupted

__all__ = ["check_scores", "call_ce", "call_ce_batch", "check_timeout", "readonly_ids", "CallCounter",
           "CountingCrossEncoder"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _describe(out: object) -> str:
    """A short description of a returned object: its type, and dtype/shape/device when it has them."""
    parts = [type(out).__module__ + "." + type(out).__qualname__
             if type(out).__module__ not in ("builtins", "numpy") else type(out).__name__]
    for attr in ("dtype", "shape", "device"):
        value = getattr(out, attr, None)
        if value is not None and not callable(value):
            parts.append(f"{attr}={tuple(value) if attr == 'shape' else value}")
    if getattr(out, "requires_grad", False) is True:
        parts.append("requires_grad=True")
    return parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")


def _to_numpy(out: object) -> np.ndarray:
    """``out`` as a numpy array, converting tensors (torch or alike) without importing torch."""
    if isinstance(out, np.ndarray):
        return out
    if hasattr(out, "detach") and callable(getattr(out, "detach")):
        out = out.detach()  # requires_grad tensors refuse __array__
        if hasattr(out, "float") and callable(getattr(out, "float")):
            out = out.float()  # bf16/fp16 -> fp32 (numpy has no bf16)
        if hasattr(out, "cpu") and callable(getattr(out, "cpu")):
            out = out.cpu()
    return np.asarray(out)


def check_scores(out: object, n_ids: int, *, ids: Optional[Ids] = None) -> Scores:
    """Validate what a CE returned for ``n_ids`` items; return it as (n_ids,) float32.

    out : the CE's return value: a numpy array, a list/tuple of numbers, or a
        tensor (converted with ``.detach().float()``, whatever its dtype or
        ``requires_grad``); shape (n_ids,) or (n_ids, 1).
    n_ids : how many ids the CE was given.
    ids : the ids themselves, only to name the item of a bad score in the message.

    Raises :class:`CrossEncoderError` (``partial`` None) naming what was
    returned when it is not numeric, has another length, holds NaN/inf or
    values beyond float32's range (which would make every fit on them fail).
    """
    what = _describe(out)
    try:
        arr = _to_numpy(out)
    except Exception as exc:  # any failure to convert is the CE's output being unusable
        raise CrossEncoderError(f"the cross-encoder must return numeric scores; got {what}, "
                                f"which could not be converted to an array ({type(exc).__name__}: {exc})") from exc
    if arr.dtype.kind == "O":  # e.g. Python ints too big for any float, Decimals, None, nested objects
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CrossEncoderError(f"the cross-encoder must return numeric scores; got {what} holding "
                                    f"objects that are not floats ({type(exc).__name__}: {exc})") from exc
    if arr.dtype.kind not in "iuf":
        raise CrossEncoderError(f"the cross-encoder must return real numeric scores; got {what} "
                                f"of dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[1] == 1:  # (m, 1) logits are common
        arr = arr[:, 0]
    if arr.shape != (n_ids,):
        raise CrossEncoderError(f"the cross-encoder returned {what}, scores of shape {arr.shape}, for {n_ids} "
                                f"items; expected shape ({n_ids},) (or ({n_ids}, 1))")
    wide = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(wide)
    if bad.any():
        at = int(np.argmax(bad))
        where = f"item {int(ids[at])}" if ids is not None and len(ids) == n_ids else f"position {at}"
        raise CrossEncoderError(f"the cross-encoder returned {int(bad.sum())} non-finite scores (NaN or inf) "
                                f"in {what}, e.g. {wide[at]} for {where}")
    huge = np.abs(wide) > _FLOAT32_MAX
    if huge.any():
        at = int(np.argmax(huge))
        raise CrossEncoderError(f"the cross-encoder returned {int(huge.sum())} scores beyond float32's range "
                                f"(|s| > {_FLOAT32_MAX:.3g}) in {what}, e.g. {wide[at]:.3g}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def readonly_ids(ids: ArrayLike) -> Ids:
    """A read-only int64 copy of ``ids`` (1-D), the array a CE is handed."""
    out = np.array(ids, dtype=np.int64, copy=True).reshape(-1)
    out.flags.writeable = False
    return out


def check_timeout(timeout: object, name: str = "timeout") -> Optional[float]:
    """``timeout`` as a float number of seconds > 0, or None (no limit)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(timeout).__name__}")
    value = float(timeout)
    if not (value > 0 and np.isfinite(value)):
        raise ValueError(f"{name} must be a finite number of seconds > 0 (or None for no limit), got {timeout}")
    return value


class _TimedOut(Exception):
    """A CE call that did not answer in time (turned into SearchInterrupted by the callers)."""


def _within(timeout: Optional[float], call: Callable[[], Any], what: str) -> Any:
    """``call()``, or :class:`_TimedOut` when it has not returned after ``timeout`` seconds.

    With a timeout the call runs in a daemon worker thread and the caller stops
    waiting at the deadline. A Python thread cannot be killed: the CE's call
    goes on in the background until it returns by itself, and its late result
    (or exception) is discarded. Without a timeout, ``call()`` runs in the
    caller's thread (no thread, no cost).
    """
    if timeout is None:
        return call()
    box: Dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["out"] = call()
        except BaseException as exc:  # handed to the waiting thread below
            box["exc"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="axn_fast-ce-call", daemon=True).start()
    if not done.wait(timeout):
        raise _TimedOut(f"the cross-encoder did not answer within timeout={timeout:g} s while scoring "
                        f"{what} (its call goes on in a background thread; its result will be discarded)")
    if "exc" in box:
        raise box["exc"]
    return box["out"]


def call_ce(ce: CrossEncoder, query: Any, ids: ArrayLike, *, timeout: Optional[float] = None) -> Scores:
    """Return ``ce(query, ids)`` validated by :func:`check_scores`: (len(ids),) float32.

    The CE gets a read-only copy of ``ids`` (so reordering it in place cannot
    attach scores to the wrong items). An ``Exception`` raised by the CE becomes
    :class:`SearchInterrupted` (``partial`` None, ``__cause__`` the CE's
    exception); unusable output becomes :class:`CrossEncoderError`.
    ``KeyboardInterrupt``/``SystemExit`` propagate unchanged.

    timeout : seconds to wait for the CE (e.g. a remote one), None (default) to
        wait forever. When it expires, :class:`SearchInterrupted` is raised; the
        CE's call cannot be killed and runs on in a background thread, its
        result discarded (see :func:`_within`).
    """
    timeout = check_timeout(timeout)
    handed = readonly_ids(ids)
    try:
        out = _within(timeout, lambda: ce(query, handed), f"{handed.size} items")
    except _TimedOut as exc:
        raise SearchInterrupted(str(exc)) from None
    except Exception as exc:
        raise SearchInterrupted(
            f"the cross-encoder raised {type(exc).__name__} while scoring {handed.size} items: {exc}"
        ) from exc
    return check_scores(out, handed.size, ids=handed)


def call_ce_batch(ce: CrossEncoder, queries: Sequence[Any], ids_per_query: Sequence[ArrayLike], *,
                  timeout: Optional[float] = None) -> List[Scores]:
    """Scores of many queries: one ``ce.score_batch`` call when the CE has it, else one call per query.

    Returns one (len(ids_per_query[i]),) float32 array per query, each validated
    by :func:`check_scores`. Errors and ``timeout`` (per CE invocation) as in :func:`call_ce`.
    """
    timeout = check_timeout(timeout)
    if len(queries) != len(ids_per_query):
        raise ValueError(f"queries and ids_per_query must have the same length, "
                         f"got {len(queries)} and {len(ids_per_query)}")
    handed = [readonly_ids(ids) for ids in ids_per_query]
    score_batch = getattr(ce, "score_batch", None)
    if not callable(score_batch):
        return [call_ce(ce, q, ids, timeout=timeout) for q, ids in zip(queries, handed)]
    try:
        out = _within(timeout, lambda: score_batch(list(queries), handed),
                      f"{sum(h.size for h in handed)} pairs of {len(handed)} queries")
    except _TimedOut as exc:
        raise SearchInterrupted(str(exc)) from None
    except Exception as exc:
        raise SearchInterrupted(
            f"the cross-encoder's score_batch raised {type(exc).__name__} while scoring "
            f"{sum(h.size for h in handed)} pairs of {len(handed)} queries: {exc}") from exc
    try:
        n_out = len(out)
    except TypeError as exc:
        raise CrossEncoderError(f"score_batch must return one score array per query; got {_describe(out)}") from exc
    if n_out != len(handed):
        raise CrossEncoderError(f"score_batch returned {n_out} score arrays for {len(handed)} queries")
    return [check_scores(o, h.size, ids=h) for o, h in zip(out, handed)]


class CallCounter:
    """Thread-safe tally of CE work: ``n_calls`` pairs scored (the budget unit),
    ``n_batches`` invocations, ``seconds`` wall time inside the CE."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.n_calls = 0
        self.n_batches = 0
        self.seconds = 0.0

    def add(self, n_pairs: int, seconds: float = 0.0, n_batches: int = 1) -> None:
        """Record one invocation that scored ``n_pairs`` pairs in ``seconds``."""
        with self._lock:
            self.n_calls += int(n_pairs)
            self.n_batches += int(n_batches)
            self.seconds += float(seconds)

    def reset(self) -> None:
        with self._lock:
            self.n_calls = 0
            self.n_batches = 0
            self.seconds = 0.0

    def __repr__(self) -> str:
        return f"CallCounter(n_calls={self.n_calls}, n_batches={self.n_batches}, seconds={self.seconds:.3f})"


class CountingCrossEncoder:
    """Wraps a CE and counts what it is asked: pairs (``n_calls``), invocations
    (``n_batches``) and seconds spent inside it (``seconds``), in a :class:`CallCounter`.

    A call is counted when it returns (a call that raises paid for nothing
    usable). ``score_batch`` is offered in every case: it forwards to the
    wrapped CE's ``score_batch`` when there is one, else calls it per query.
    The wrapped CE's output is returned untouched (validation is
    :func:`call_ce`'s job). Thread-safe.
    """

    def __init__(self, ce: CrossEncoder, counter: Optional[CallCounter] = None) -> None:
        if not callable(ce):
            raise TypeError(f"ce must be callable as ce(query, ids) -> scores, got {type(ce).__name__}")
        self.ce = ce
        self.counter = CallCounter() if counter is None else counter

    @property
    def n_calls(self) -> int:
        """(query, item) pairs scored."""
        return self.counter.n_calls

    @property
    def n_batches(self) -> int:
        """Invocations of the wrapped CE (one per ``score_batch`` it implements, else one per query)."""
        return self.counter.n_batches

    @property
    def seconds(self) -> float:
        return self.counter.seconds

    def reset(self) -> None:
        self.counter.reset()

    def __call__(self, query: Any, ids: Ids) -> Any:
        t0 = time.perf_counter()
        out = self.ce(query, ids)
        self.counter.add(len(ids), time.perf_counter() - t0)
        return out

    def score_batch(self, queries: Sequence[Any], ids_per_query: Sequence[Ids]) -> List[Any]:
        inner = getattr(self.ce, "score_batch", None)
        t0 = time.perf_counter()
        if callable(inner):
            out, n_batches = list(inner(queries, ids_per_query)), 1
        else:
            out = [self.ce(q, ids) for q, ids in zip(queries, ids_per_query)]
            n_batches = len(out)
        self.counter.add(sum(len(ids) for ids in ids_per_query), time.perf_counter() - t0,
                         n_batches=n_batches)
        return out

    def __repr__(self) -> str:
        return f"CountingCrossEncoder({self.ce!r}, n_calls={self.n_calls}, n_batches={self.n_batches})"
