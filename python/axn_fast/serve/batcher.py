"""Dynamic batching: concurrent requests gathered into one call run off the event loop.

A :class:`DynamicBatcher` keeps a bounded queue of submitted items. One worker
task takes up to ``max_batch`` of them, waiting at most ``max_wait_ms`` after
the oldest arrived for more to come, and hands the batch to ``fn`` in a
one-thread executor (so the event loop keeps accepting requests while a batch
runs, and batches run one at a time: a CE on one GPU is not shared). While a
batch runs, new requests queue up, so under load batches grow by themselves.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Generic, List, Optional, Sequence, TypeVar

__all__ = ["DynamicBatcher", "BatchOutcome", "QueueFull", "Closing", "DeadlineExceeded"]

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(Exception):
    """The queue holds ``max_queue`` requests already: the caller should retry later (HTTP 503)."""


class Closing(Exception):
    """The batcher is shutting down and takes no new requests (HTTP 503)."""


class DeadlineExceeded(Exception):
    """The request's deadline passed before its batch finished (HTTP 504)."""


@dataclass
class BatchOutcome(Generic[R]):
    """What one request gets back: ``fn``'s result for it and how its batch went.

    seconds_queued: from submission to the start of its batch; seconds_batch:
    wall time of the batch; batch_size: requests in it.
    """

    result: R
    seconds_queued: float
    seconds_batch: float
    batch_size: int


@dataclass
class _Job(Generic[T]):
    item: T
    future: "asyncio.Future[Any]"
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher(Generic[T, R]):
    """Gathers submitted items into batches for ``fn(items) -> results`` (one result per item, in order).

    max_batch : most items per call of ``fn`` (1 disables batching).
    max_wait_ms : how long the oldest queued item may wait for others to join its batch.
    max_queue : most items waiting (not counting the batch running); beyond it
        :meth:`submit` raises :class:`QueueFull` at once.
    on_batch : called (in the worker thread) after each batch with its size and seconds.

    Use from one event loop. :meth:`close` stops taking items and finishes every
    queued one (graceful drain).
    """

    def __init__(self, fn: Callable[[List[T]], Sequence[R]], *, max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 256, on_batch: Optional[Callable[[int, float], None]] = None) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be an integer >= 1, got {max_queue!r}")
        if not max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: Deque[_Job[T]] = deque()
        self._wakeup: Optional[asyncio.Event] = None
        self._task: Optional["asyncio.Task[None]"] = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="axn-batch")
        self._closing = False
        self.running = 0  # items in the batch being computed

    @property
    def depth(self) -> int:
        """Items waiting for a batch."""
        return len(self._queue)

    @property
    def closing(self) -> bool:
        return self._closing

    def _event(self) -> asyncio.Event:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        return self._wakeup

    async def submit(self, item: T, timeout: Optional[float] = None) -> BatchOutcome[R]:
        """Queue ``item``; return its :class:`BatchOutcome` once its batch ran.

        timeout : seconds until the deadline (None: none). A request whose deadline
            passes while queued is never computed; one whose batch is running
            gets :class:`DeadlineExceeded` and its result is dropped.
        Raises :class:`QueueFull`, :class:`Closing`, :class:`DeadlineExceeded`, or
        what ``fn`` raised for the batch.
        """
        if self._closing:
            raise Closing("the service is shutting down")
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"{len(self._queue)} requests are queued already (max_queue={self.max_queue})")
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        job: _Job[T] = _Job(item, loop.create_future())
        self._queue.append(job)
        self._event().set()
        try:
            out: BatchOutcome[R] = await asyncio.wait_for(asyncio.shield(job.future), timeout)
            return out
        except asyncio.TimeoutError:
            job.future.cancel()
            raise DeadlineExceeded(f"no answer within the deadline ({timeout:.3g} s)") from None
        except asyncio.CancelledError:  # the client went away: skip the job if it is still queued
            job.future.cancel()
            raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wakeup = self._event()
        while True:
            while not self._queue:
                if self._closing:
                    return
                wakeup.clear()
                await wakeup.wait()
            oldest = self._queue[0].enqueued
            while len(self._queue) < self.max_batch and not self._closing:
                remaining = oldest + self.max_wait - time.perf_counter()
                if remaining <= 0:
                    break
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch: List[_Job[T]] = []
            while self._queue and len(batch) < self.max_batch:
                job = self._queue.popleft()
                if not job.future.done():  # done: cancelled by its deadline or client
                    batch.append(job)
            if not batch:
                continue
            self.running = len(batch)
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._call, [j.item for j in batch])
            except Exception as exc:  # the batch failed: every request in it gets the error
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(exc)
            else:
                seconds = time.perf_counter() - t0
                for j, r in zip(batch, results):
                    if not j.future.done():
                        j.future.set_result(BatchOutcome(r, t0 - j.enqueued, seconds, len(batch)))
            finally:
                self.running = 0

    def _call(self, items: List[T]) -> Sequence[R]:
        t0 = time.perf_counter()
        results = self.fn(items)
        if len(results) != len(items):
            raise RuntimeError(f"the batch function returned {len(results)} results for {len(items)} items")
        if self.on_batch is not None:
            self.on_batch(len(items), time.perf_counter() - t0)
        return results

    async def close(self) -> None:
        """Take no new items, finish every queued one, then stop the worker and its thread."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)
