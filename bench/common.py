"""Shared by the benchmarks: where the seed's reference lives, the machine's description, result files, the one
readiness poll, and py-spy's stacks summarised."""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(os.environ.get("SEED_REFERENCE", ROOT.parent / "shared" / "reference" / "seed_reference.py"))
RESULTS = ROOT / "bench" / "results"


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": datetime.now(UTC).isoformat(timespec="seconds")}


def _stat(path: Path) -> list[str]:
    """A /proc/PID/stat line's fields after the command name (which may hold spaces): state is [0], session [3]."""
    return path.read_text().rsplit(")", 1)[1].split()


def _seconds(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, all its threads (Linux /proc)."""
    return _seconds(_stat(Path(f"/proc/{pid}/stat")))


def session_cpu_seconds(sid: int) -> float:
    """cpu_seconds of every process in session `sid` (a server started with start_new_session, its children too)."""
    total = 0.0
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = _stat(path)
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == sid:
            total += _seconds(fields)
    return total


def last_json_line(cmd: list[str], env: dict | None = None) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def median(values) -> float:
    return statistics.median(list(values))


def write(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    return path


def wait_ready(url: str, timeout: float = 30, *, path: str = "/readyz", proc: subprocess.Popen | None = None,
               log: str | Path | None = None, ready: Callable[[httpx.Response], bool] | None = None,
               headers: dict | None = None, interval: float = 0.1) -> float:
    """Poll GET url+path until it answers 200 (or `ready(response)` holds); returns the seconds it took.

    Bounded by `timeout`, so a server that never comes up fails the benchmark with the last answer seen instead of
    hanging it. With `proc`, a server that exits while starting fails at once with its exit status; `log` (a file
    the server writes) puts the end of what it said into either error.
    """
    start = time.monotonic()
    deadline = start + timeout
    last = "nothing"
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with status {proc.returncode} before {path} was ready"
                               f"{_tail(log)}")
        try:
            r = httpx.get(url + path, headers=headers, timeout=1)
            if ready(r) if ready is not None else r.status_code == 200:
                return time.monotonic() - start
            last = f"{r.status_code} {r.text[:200]!r}"
        except (httpx.HTTPError, ValueError) as exc:  # ValueError: a `ready` reading a body that is not JSON yet
            last = f"{type(exc).__name__}: {exc}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{url}{path} was not ready within {timeout} s; last answer: {last}{_tail(log)}")
        time.sleep(min(interval, remaining))


def _tail(log: str | Path | None, chars: int = 2000) -> str:
    if log is None:
        return ""
    try:
        return f"\n--- end of {log} ---\n{Path(log).read_text(errors='replace')[-chars:]}"
    except OSError as exc:
        return f" (log {log} unreadable: {exc})"


def py_spy() -> str | None:
    """py-spy beside this interpreter or on PATH; it is a tool for these benchmarks, never a project dependency."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def summarize_stacks(raw: Path, top: int = 25) -> dict:
    """py-spy's `--format raw` (collapsed stacks, one `frame;frame;... count` a line) as fractions of all samples:
    self time by the function on top of the stack (and by its line), inclusive time by every function on the
    stack, counted once a stack."""
    by_function: dict[str, int] = {}
    by_line: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r" \(.*/site-packages/", " (", f) for f in stack.split(";")]
        functions = [re.sub(r":\d+\)$", ")", f) for f in frames]
        by_line[frames[-1]] = by_line.get(frames[-1], 0) + n
        by_function[functions[-1]] = by_function.get(functions[-1], 0) + n
        for f in set(functions):
            inclusive[f] = inclusive.get(f, 0) + n

    def best(d: dict, k: int) -> list:
        return [[name, round(v / max(total, 1), 3)] for name, v in sorted(d.items(), key=lambda kv: -kv[1])[:k]]

    return {"samples": total, "self_time_top": best(by_function, top), "self_time_by_line_top": best(by_line, top),
            "inclusive_top": best(inclusive, top + 15)}
