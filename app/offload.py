"""Blocking work kept off the event loop and off asyncio's shared thread pool.

A database that stops answering holds every thread that waits for it. On asyncio's default pool (a few threads
on a small machine) those would be the threads that lease renewals, the readiness probe and model loads need
too. A Lane gives one kind of work its own few threads and a bound on how many calls may wait for them: past
it a call is refused at once with 503 and Retry-After, so waiters never pile up without bound.
"""
from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import Unavailable

T = TypeVar("T")
SWITCH_INTERVAL_S = 0.0005


def hand_back_promptly() -> float:
    """Let a lane's thread have the GIL back soon after each database call.

    Every driver call releases the GIL and must take it back; CPython hands it over only every switch interval
    (5 ms by default), so next to a busy event loop a feedback write of seven driver calls took 33 ms (median;
    p99 57 ms), and POST /feedback's p99 sat near 50-90 ms at 500 events/s. At 0.5 ms the same write took 5 ms
    (p99 9 ms), and inference throughput did not move (paired, same core, same run: 1.007-1.014x). The worker
    process is the same kind (an event loop and database lanes; training runs in child processes). Returns the
    interval it replaced, for a caller that hands the process back.
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return before


class Lane:
    """`await lane.run(fn, *args)`: fn on one of `threads` threads; at most `threads + waiting` calls at once.
    The count is kept on the event loop, so it needs no lock."""

    def __init__(self, name: str, threads: int, waiting: int, busy: str, retry_after: float = 2.0):
        self.name = name
        self.limit = threads + waiting
        self.busy = busy  # the 503's message: what is busy, and which setting bounds it
        self.retry_after = retry_after
        self.in_flight = 0
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self.in_flight >= self.limit:
            raise Unavailable(self.busy, retry_after=self.retry_after)
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))
        finally:
            self.in_flight -= 1

    def close(self) -> None:
        """Drop queued calls; a thread stuck on a database that went away is left to finish on its own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
