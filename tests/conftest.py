"""Shared fixtures: an in-process app (ASGI client, lifespan run), real uvicorn server processes and real training
workers (`python -m app.worker`)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights"
TEST_KEY = "test-management-key-0123456789abcdef"  # keys are at least 32 characters


def poll(predicate, timeout: float, interval: float = 0.05, message: str = ""):
    """Call predicate until it returns something truthy, and return that; fail the test at the deadline.
    The one way tests wait for something."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {message or getattr(predicate, '__name__', 'a condition')}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def same_answer(a, b, path=""):
    """Equal structure and integers; floats equal to float32 precision (batch size changes summation order)."""
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-5 * max(1.0, abs(a)), path
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return False, path
        return next(((ok, p) for k in a for ok, p in [same_answer(a[k], b[k], f"{path}.{k}")] if not ok), (True, path))
    if isinstance(a, list):
        if len(a) != len(b):
            return False, path
        return next(((ok, p) for i, (x, y) in enumerate(zip(a, b)) for ok, p in [same_answer(x, y, f"{path}[{i}]")]
                     if not ok), (True, path))
    return a == b, path


class Server:
    """A real `python -m app` process on a free loopback port; its client() carries the management key."""

    def __init__(self, data_dir: Path, weights_dir: Path = WEIGHTS, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.env = {**os.environ, "SEQ2SEQ_HOST": "127.0.0.1", "SEQ2SEQ_PORT": str(self.port),
                    "SEQ2SEQ_DATA_DIR": str(data_dir), "SEQ2SEQ_WEIGHTS_DIR": str(weights_dir),
                    "SEQ2SEQ_LOG_LEVEL": "warning", "SEQ2SEQ_DEVICE": "cpu", "SEQ2SEQ_API_KEY": TEST_KEY, **env}
        self.key = self.env["SEQ2SEQ_API_KEY"]
        self.proc: subprocess.Popen | None = None
        self.log = data_dir / "server.log"

    def start(self, timeout: float = 60) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=self.env,
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

        def listening() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                return True
            except httpx.HTTPError:
                return False

        poll(listening, timeout, interval=0.1, message=f"the server on {self.url} to listen")
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        poll(lambda: httpx.get(f"{self.url}/readyz").status_code == 200, timeout, interval=0.1,
             message=f"the server on {self.url} to be ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def client(self, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return httpx.Client(base_url=self.url, timeout=30, headers={**headers, **kw.pop("headers", {})}, **kw)


class Worker:
    """A real `python -m app.worker` process on the shared database."""

    def __init__(self, directory: Path, url: str, **env: str):
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "worker.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.worker"], cwd=ROOT, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            env={**os.environ, "SEQ2SEQ_DATABASE_URL": url, "SEQ2SEQ_DATA_DIR": str(directory),
                 "SEQ2SEQ_DEVICE": "cpu", "SEQ2SEQ_LOG_LEVEL": "info", **env})

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def workers(tmp_path):
    started: list[Worker] = []

    def make(url: str, **env) -> Worker:
        worker = Worker(tmp_path / f"worker{len(started)}", url, **env)
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One shared server for tests that only read."""
    srv = Server(tmp_path_factory.mktemp("shared-server")).start()
    srv.wait_ready()
    yield srv
    srv.stop()


@pytest.fixture
def weights_copy(tmp_path):
    """A private weights directory holding the default model and a second shipped copy named 'alt'."""
    target = tmp_path / "weights"
    target.mkdir()
    for name in ("default.pt", "default.pt.sha256"):
        shutil.copy(WEIGHTS / name, target / name)
    shutil.copy(WEIGHTS / "default.pt", target / "alt.pt")
    (target / "alt.pt.sha256").write_text((WEIGHTS / "default.pt.sha256").read_text().replace("default.pt", "alt.pt"))
    return target


@pytest.fixture
def make_server(tmp_path):
    started: list[Server] = []

    def make(data_dir: Path | None = None, **kw) -> Server:
        srv = Server(data_dir or tmp_path / f"data{len(started)}", **kw)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop(signal.SIGKILL)
