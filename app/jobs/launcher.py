"""Starts training processes (`python -m app.jobs.process`), optionally from a spare kept warm in advance, so a job
need not wait for torch to import."""
from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TrainingProcess:
    """A child process and its three pipes, which a training process always has."""

    proc: asyncio.subprocess.Process
    stdin: asyncio.StreamWriter
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL and reap, if it still runs."""
        if self.running:
            self.proc.kill()
            await self.proc.wait()


async def spawn(*args: str) -> TrainingProcess:
    # No preexec_fn, so the child is spawned rather than forked: forking a big process would stall the loop.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.jobs.process", *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)
    if proc.stdin is None or proc.stdout is None or proc.stderr is None:  # PIPE always gives all three
        raise RuntimeError("the training process was started without its pipes")
    idle(proc.pid)
    return TrainingProcess(proc, proc.stdin, proc.stdout, proc.stderr)


def idle(pid: int) -> None:
    """SCHED_IDLE (else the lowest nice) from the parent, at once: the child lowers itself too, but only after its
    imports, and importing torch took seconds of a core at full priority from serving (bench/learning.py measured
    /topk at 0.58x while a job started)."""
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):  # it is gone already, or this system refuses: the child still lowers itself
            os.setpriority(os.PRIO_PROCESS, pid, 19)


class Launcher:
    def __init__(self, standby: bool):
        self.standby = standby  # keep one warmed-up process waiting for the next job
        self._spare: TrainingProcess | None = None
        self._spare_task: asyncio.Task[None] | None = None

    def replenish(self) -> None:
        """Start warming a spare if there is none. Call it after a job, not beside one: warming up costs a core
        for seconds."""
        if self.standby and self._spare is None and self._spare_task is None:
            self._spare_task = asyncio.get_running_loop().create_task(self._start_spare())

    async def _start_spare(self) -> None:
        try:
            self._spare = await spawn("--standby", str(os.getpid()))
        finally:
            self._spare_task = None

    async def start(self, spec_path: Path) -> TrainingProcess:
        """A process training the spec file's job: the spare if one is ready (it reads the path on stdin)."""
        if self._spare_task is not None:
            await asyncio.shield(self._spare_task)
        spare, self._spare = self._spare, None
        if spare is not None and spare.running:
            spare.stdin.write(f"{spec_path}\n".encode())
            await spare.stdin.drain()
            spare.stdin.close()
            return spare
        return await spawn(str(spec_path))

    async def close(self) -> None:
        if self._spare_task is not None:
            await asyncio.gather(self._spare_task, return_exceptions=True)
        if self._spare is not None:
            await self._spare.kill()
