"""Runs training jobs from the shared queue: claims them into this runner's slots, and sweeps expired leases.

The same runner serves a serving instance (`SEQ2SEQ_JOB_WORKERS` > 0) and a dedicated worker
(`python -m app.worker`), both built by factory.build_runner: it needs the database and a device, not the HTTP app.
Every runner also requeues jobs whose lease expired, so a worker that died (its machine included) costs the job an
attempt, not the job. Each claimed job is the supervisor's until it ends; stopping hands the jobs back.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .. import storage
from ..device import Device
from ..metrics import WorkerMetrics
from .launcher import Launcher
from .registration import Registration
from .supervisor import Limits, Supervisor

log = logging.getLogger("seq2seq.jobs")


class JobRunner:
    def __init__(self, store: storage.Storage, device: Device, *, slots: int, lease_s: float, threads: int = 1,
                 default_model: str = "default", standby: bool = False, limits: Limits | None = None,
                 on_activated: Callable[[str, int], None] | None = None, on_change: Callable[[], None] | None = None,
                 metrics: WorkerMetrics | None = None):
        """limits: the supervisor's deadlines and caps; its lease_s is `lease_s`. metrics: where its figures go (a
        registry nobody reads when not given)."""
        self.store = store
        self.slots = slots
        self.lease_s = lease_s
        limits = replace(limits or Limits(), lease_s=lease_s)
        self.on_change = on_change or (lambda: None)
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{secrets.token_hex(4)}"  # the lease's identity
        self._workdir = Path(tempfile.mkdtemp(prefix="seq2seq-runs-"))
        self._launcher = Launcher(standby)
        registration = Registration(store, default_model, limits.lock_wait_s, on_activated)
        self.metrics = metrics or WorkerMetrics()
        self._supervisor = Supervisor(store, self.owner, limits, self._launcher, self._workdir, device, threads,
                                      registration, self.on_change, self.metrics)
        self._running: dict[str, asyncio.Task[None]] = {}
        self.metrics.slots.set(slots)
        self.metrics.running.set_function(lambda: len(self._running))
        self._stopping = False
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._last_contact = time.monotonic()  # the last time this runner reached the database
        self._hold_until = 0.0  # no expired lease is requeued before this (after an outage)

    async def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._schedule(), name="job-runner")
        self._launcher.replenish()

    def wake(self) -> None:
        """Look at the queue now rather than at the next poll."""
        self._wake.set()

    @property
    def busy(self) -> int:
        return len(self._running)

    async def stop(self) -> None:
        """Hand running jobs back to the queue (their attempt is not counted, the hand-back is) and stop their
        processes."""
        self._stopping = True
        self.wake()
        if self._loop_task is not None:  # let it finish what it does: a claim in flight becomes a running job
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        await self._launcher.close()
        for path in self._workdir.iterdir():
            path.unlink(missing_ok=True)
        self._workdir.rmdir()

    async def _schedule(self) -> None:
        next_sweep = 0.0
        while not self._stopping:
            try:
                if time.monotonic() >= next_sweep:  # anyone's expired leases, this runner's included
                    next_sweep = time.monotonic() + max(self.lease_s / 4, 0.5)
                    swept = await self._sweep()
                    if any(swept.values()):
                        log.warning("expired leases: %s", swept)
                        self.on_change()
                while len(self._running) < self.slots and not self._stopping:
                    job = await asyncio.to_thread(self.store.jobs.claim, self.owner, self.host, os.getpid(),
                                                  self.lease_s)
                    if job is None:
                        break
                    self._last_contact = time.monotonic()
                    self.metrics.claimed.inc()
                    self._running[job.id] = asyncio.get_running_loop().create_task(self._run(job), name=job.id)
                    self.on_change()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: keep what runs, try again shortly
                log.warning("job runner cannot reach the database (%s); retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(1.0, self.lease_s / 4))
            self._wake.clear()

    async def _sweep(self) -> dict[str, list[str]]:
        """Requeue the jobs whose lease ran out, unless this runner was itself just cut off from the database (a
        paused or restarting database, or this process paused): every holder was then cut off too, so each gets
        one lease to renew before anyone's job is taken from it. Only leases still expired and unchanged since they
        were read are requeued (JobStore.expired_leases), so a holder that renews in between keeps its job."""
        started = time.monotonic()
        away = started - self._last_contact > self.lease_s / 2
        seen = await asyncio.to_thread(self.store.jobs.expired_leases)
        now = time.monotonic()
        if away or now - started > self.lease_s / 4:
            if now >= self._hold_until:
                log.warning("job runner was cut off from the database; expired leases wait %.0f s for their holders "
                            "to renew", self.lease_s)
            self._hold_until = now + self.lease_s
        self._last_contact = now
        if now < self._hold_until or not seen.tokens:
            return {}
        return await asyncio.to_thread(self.store.jobs.requeue_expired, seen=seen)

    async def _run(self, job: storage.JobRow) -> None:
        try:
            await self._supervisor.run(job)
        finally:
            self._running.pop(job.id, None)
            if not self._stopping:
                self._launcher.replenish()  # after the job, not beside it
            self.on_change()
            self.wake()
