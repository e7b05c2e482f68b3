"""Dynamic batching: requests that arrive together are decoded together, one batch at a time.

Requests queue while a batch runs; the next batch takes all of them (up to a maximum), so the batch size
follows the load and throughput grows with it. A lone request waits at most `max_wait_s` for company.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass
class Work:
    group: tuple  # requests with the same group can share one decoder call
    payload: Any
    future: asyncio.Future[Any]


class Batcher:
    def __init__(self, run_batch: Callable[[list[Work]], list[Any]], max_batch: int, max_wait_s: float,
                 on_batch: Callable[[int], None] | None = None, thread_init: Callable[[], None] | None = None,
                 use_thread: bool = False):
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self._queue: asyncio.Queue[Work] | None = None
        self._task: asyncio.Task | None = None
        self._busy = False
        # Without a thread, a batch runs on the event loop: for a model this small that is faster (no GIL
        # hand-offs between two busy threads). thread_init runs on the inference thread: torch's thread
        # count is per OS thread, so it must be set there.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference",
                                            initializer=thread_init) if use_thread else None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def submit(self, group: tuple, payload: Any) -> Any:
        assert self._queue is not None, "the batcher is not running"
        work = Work(group, payload, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(work)
        return await work.future

    async def _collect(self) -> list[Work]:
        queue = self._queue
        assert queue is not None, "the batcher is not running"
        batch = [await queue.get()]
        # Let the event loop read whatever requests are already on the wire, and stop waiting as soon as a
        # pass brings nothing new: under load the batch fills at no idle cost, a lone request barely waits.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        seen = -1
        while seen != queue.qsize() < self.max_batch and loop.time() < deadline:
            seen = queue.qsize()
            await asyncio.sleep(0)
        while len(batch) < self.max_batch and not queue.empty():
            batch.append(queue.get_nowait())
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if self.on_batch is not None:
                self.on_batch(len(batch))
            self._busy = True
            try:
                if self._executor is None:
                    results = self.run_batch(batch)
                else:
                    results = await loop.run_in_executor(self._executor, self.run_batch, batch)
            except Exception as exc:  # run_batch reports per-item errors itself; this is a last resort
                results = [exc] * len(batch)
            for work, result in zip(batch, results):
                if work.future.done():
                    continue
                if isinstance(result, BaseException):
                    work.future.set_exception(result)
                else:
                    work.future.set_result(result)
            self._busy = False

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        while self._busy or (self._queue is not None and not self._queue.empty()):
            await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)
