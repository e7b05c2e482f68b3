"""The fault benchmark (issue 15): the cluster shape on one machine, under steady load, while things break.

Three replicas (`python -m app`, SEQ2SEQ_JOB_WORKERS=0) behind nginx (deploy/nginx.conf rendered by
deploy/render_nginx_conf.py) on a real PostgreSQL (tests/postgres.py's throwaway server), and two dedicated
workers (`python -m app.worker`). Under steady inference load (threads with httpx, paced, over POST /predict and
GET /topk through nginx: most requests name no model, some name the model last seen active, some another model,
those with the key), a stream of small training jobs (never / if_better) and an operator thread that activates
and rolls back models and remembers its last explicit choice, in turn, with a recovery pause after each:

  1. SIGKILL a replica, restart it on its port;
  2. SIGKILL the worker holding a running job (its training process must die with it), restart it;
  3. SIGSTOP every PostgreSQL process for --pause-seconds (20), then SIGCONT;
  4. restart PostgreSQL (fast shutdown: pg_ctl stop -m fast, then start on the same port and data);
  5. the operator activates a weak model, an if_better job starts (compared with it), and while it trains the
     operator rolls back to an older model (the shipped default): the job must not undo the rollback.

Then the job stream stops, every job is waited for (bounded), and it reports: failed requests per phase and
which of them were on the active model (named none, or named the one last seen active), jobs lost (submitted and
not terminal at the end, or gone) or run twice (two live training processes for one job at once, sampled from
/proc every 0.2 s; more than one success logged by the workers), models lost (listed once, missing at the end),
the final pointer against the operator's last choice, and RSS growth of each replica and worker (/proc). Each
target is marked met or missed; one more, not the issue's, counts processes that exited unasked (the harness
restarts those, as an orchestrator would, and reports them with the end of their log). The exit status is 0 whenever the run completes (the report says what was
missed), non-zero only when the harness itself fails.

  python bench/chaos.py [--phase-seconds 20] [--rate 200] [--pause-seconds 20] [--lease-seconds 15] [--quick]

--quick: short phases, a lower rate, a 6 s pause and a 6 s lease for a smoke run (options given still win); it
writes bench/results/chaos_smoke.json (marked smoke), never chaos.json. --keep-logs keeps the processes' logs. Everything it starts (processes, temp dirs) is stopped and removed at the end,
on errors and Ctrl-C too.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime
from pathlib import Path

import httpx
from common import ROOT, wait_ready, write
from load import free_port

sys.path.insert(0, str(ROOT))
from tests.postgres import PostgresServer, pg_bin_dir  # bench may use the tests' real server

_spec = importlib.util.spec_from_file_location("render_nginx_conf", ROOT / "deploy" / "render_nginx_conf.py")
render_nginx_conf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_nginx_conf)
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
KEY = "chaos-bench-management-key-0123456789abcdef"  # keys are at least 32 characters
AUTH = {"Authorization": f"Bearer {KEY}"}
TERMINAL = ("succeeded", "failed", "cancelled")
# The phase-5 job's corpus (the README's example): a few hundred steps learn it; a 1-step model does not.
CORPUS = [[7, 2, 8, 4, 3], [7, 2, 8, 4, 3], [7, 6, 5, 2, 8], [6, 9, 4, 7, 1]]


def now() -> float:
    return time.time()


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


class Proc:
    """One process this benchmark started: its command, environment and log; restartable."""

    def __init__(self, name: str, cmd: list[str], env: dict, log: Path, url: str | None = None):
        self.name, self.cmd, self.env, self.log, self.url = name, cmd, env, log, url
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.lock = threading.RLock()
        self.expect_exit = False  # set when this benchmark kills or stops it; a start clears it
        self.rss_start: int | None = None  # sampled once it is warm (after the baseline, or after a restart)
        self.rss_start_pid: int | None = None

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.lock, self.log.open("ab") as out:
            out.write(f"\n=== start {self.starts + 1} at {datetime.now().isoformat()} ===\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            self.starts += 1
            self.expect_exit = False
        return self

    def died_unasked(self) -> int | None:
        """The exit status if it exited without this benchmark asking (None while it runs or was killed)."""
        with self.lock:
            if self.proc is None or self.expect_exit:
                return None
            return self.proc.poll()

    def wait_log(self, needle: str, timeout: float) -> bool:
        """Until its log (since its last start) says `needle`; False if it exits or the time runs out."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.running():
            text = self.log.read_text(errors="replace")
            if needle in text[text.rfind("=== start"):]:
                return True
            time.sleep(0.2)
        return False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 90) -> None:
        assert self.url is not None
        wait_ready(self.url, timeout, proc=self.proc, log=self.log)

    def signal(self, sig: int) -> None:
        with self.lock:
            if self.running():
                assert self.proc is not None
                self.expect_exit = True
                self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None:
            return
        self.expect_exit = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def sample_rss(self) -> None:
        if self.running():
            self.rss_start, self.rss_start_pid = rss_kb(self.pid), self.pid  # type: ignore[arg-type]


class Timeline:
    """The phase every request, job and action is counted under, and the PostgreSQL pause window."""

    def __init__(self):
        self.lock = threading.Lock()
        self.phase = "setup"
        self.pg_paused = False
        self.pause_flips = 0  # SIGSTOPs and SIGCONTs so far: a request that saw one overlapped the pause
        self.events: list[dict] = []
        self.t0 = now()

    def set(self, phase: str) -> None:
        with self.lock:
            self.phase = phase
        self.event(f"phase {phase}")

    def event(self, what: str, **details) -> None:
        row = {"t": round(now() - self.t0, 2), "what": what, **details}
        with self.lock:
            self.events.append(row)
        print(f"[{row['t']:7.1f}s] {what}{' ' + json.dumps(details) if details else ''}", flush=True)

    def where(self) -> tuple[str, bool, int]:
        with self.lock:
            return self.phase, self.pg_paused, self.pause_flips

    def paused(self, value: bool) -> None:
        with self.lock:
            self.pg_paused = value
            self.pause_flips += 1


class Stats:
    """Inference requests by phase and by what they asked for; failures kept with their details (bounded)."""

    CATEGORIES = ("active", "named_active", "named_other")

    def __init__(self):
        self.lock = threading.Lock()
        self.sent: dict = collections.defaultdict(collections.Counter)
        self.failed: dict = collections.defaultdict(collections.Counter)
        self.failed_paused: dict = collections.defaultdict(collections.Counter)
        self.statuses: dict = collections.defaultdict(collections.Counter)
        self.samples: dict = collections.defaultdict(list)
        self.latency: dict = collections.defaultdict(list)
        self.answered_by: dict = collections.defaultdict(collections.Counter)

    def record(self, phase: str, paused: bool, category: str, route: str, model: str | None, outcome: str,
               ok: bool, seconds: float, answered: str | None, t: float, message: str | None = None) -> None:
        with self.lock:
            self.sent[phase][category] += 1
            self.latency[phase].append(seconds)
            if answered:
                self.answered_by[phase][answered] += 1
            if not ok:
                self.failed[phase][category] += 1
                if paused:
                    self.failed_paused[phase][category] += 1
                self.statuses[phase][outcome] += 1
                if len(self.samples[phase]) < 25:
                    self.samples[phase].append({"t": round(t, 2), "route": route, "category": category,
                                                "model": model, "outcome": outcome, "during_pg_pause": paused,
                                                "seconds": round(seconds, 3), "message": message})


class Cluster:
    def __init__(self, work: Path, args):
        self.work, self.args = work, args
        self.pg: PostgresServer | None = None
        self.db_url = ""
        self.replicas: list[Proc] = []
        self.workers: list[Proc] = []
        self.nginx: Proc | None = None
        self.url = ""
        self.stopped_pg: list[int] = []  # PostgreSQL processes under SIGSTOP, continued in any case at the end
        self.unasked_exits: list[dict] = []
        self.supervisor: threading.Thread | None = None  # joined before teardown: it restarts nothing after

    def start(self, timeline: Timeline) -> None:
        bin_dir = pg_bin_dir()
        if bin_dir is None or not (bin_dir / "initdb").exists():
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed: run `make postgres`")
        self.pg = PostgresServer(bin_dir).start()
        self.db_url = self.pg.create_database("chaos")
        timeline.event("postgres started", port=self.pg.port)
        base = {**os.environ, "SEQ2SEQ_DATABASE_URL": self.db_url, "SEQ2SEQ_API_KEY": KEY, "SEQ2SEQ_DEVICE": "cpu",
                "SEQ2SEQ_LOG_LEVEL": "info", "PYTHONPATH": str(ROOT)}
        for i in range(3):
            port = free_port()
            env = {**base, "SEQ2SEQ_HOST": "127.0.0.1", "SEQ2SEQ_PORT": str(port), "SEQ2SEQ_WORKERS": "1",
                   "SEQ2SEQ_JOB_WORKERS": "0", "SEQ2SEQ_DATA_DIR": str(self.work / f"replica{i + 1}")}
            self.replicas.append(Proc(f"replica{i + 1}", [sys.executable, "-m", "app"], env,
                                      self.work / f"replica{i + 1}" / "server.log", f"http://127.0.0.1:{port}"))
        self.replicas[0].start().wait_ready()  # the first migrates the fresh database alone
        for r in self.replicas[1:]:
            r.start()
        for r in self.replicas[1:]:
            r.wait_ready()
        timeline.event("replicas ready", pids=[r.pid for r in self.replicas])
        for i in range(2):
            d = self.work / f"worker{i + 1}"
            (d / "tmp").mkdir(parents=True)
            env = {**base, "SEQ2SEQ_DATA_DIR": str(d), "SEQ2SEQ_JOB_LEASE_S": str(self.args.lease_seconds),
                   "TMPDIR": str(d / "tmp")}  # its runs' files (and so its training processes' arguments) in here
            self.workers.append(Proc(f"worker{i + 1}", [sys.executable, "-m", "app.worker"], env, d / "worker.log")
                                .start())
        runtime = self.work / "nginx"
        runtime.mkdir()
        port = free_port()
        conf = runtime / "nginx.conf"
        conf.write_text(render_nginx_conf.render([r.url.removeprefix("http://") for r in self.replicas],
                                                 f"127.0.0.1:{port}", runtime))
        self.url = f"http://127.0.0.1:{port}"
        self.nginx = Proc("nginx", [NGINX, "-p", str(runtime), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
                          dict(os.environ), runtime / "nginx.log", self.url).start()
        self.nginx.wait_ready(30)
        timeline.event("nginx and workers started", url=self.url, workers=[w.pid for w in self.workers])

    def pg_pids(self) -> list[int]:
        assert self.pg is not None
        try:
            postmaster = int((self.pg.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [postmaster, *children_of(postmaster)]

    def pg_stop_all(self) -> list[int]:
        pids = self.pg_pids()
        for pid in pids:  # the postmaster first, so it starts no new backend meanwhile
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        self.stopped_pg = pids
        # a backend forked between the listing and the postmaster's stop: stop it too
        for pid in self.pg_pids():
            if pid not in self.stopped_pg:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                self.stopped_pg.append(pid)
        return self.stopped_pg

    def pg_continue_all(self) -> None:
        for pid in reversed(self.stopped_pg):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.stopped_pg = []

    def processes(self) -> list[Proc]:
        return [*self.replicas, *self.workers]

    def supervise(self, stop: threading.Event, timeline: Timeline) -> None:
        """What an orchestrator does: a process that exits unasked is recorded (with the end of its log) and
        started again, so the rest of the run still has three replicas and two workers."""
        while not stop.wait(1.0):
            for p in [*self.processes(), self.nginx]:
                code = p.died_unasked() if p is not None else None
                if p is None or code is None or stop.is_set():
                    continue
                keep = len(self.unasked_exits) < 10  # the end of the log for the first few only
                tail = p.log.read_text(errors="replace")[-1500:] if keep and p.log.exists() else None
                self.unasked_exits.append({"name": p.name, "pid": p.pid, "status": code, "phase": timeline.where()[0],
                                           "t": round(now() - timeline.t0, 2), "log_tail": tail})
                timeline.event("exited unasked; started again", name=p.name, pid=p.pid, status=code)
                p.start()

    def teardown(self) -> None:
        if self.supervisor is not None:
            self.supervisor.join(timeout=30)
        self.pg_continue_all()
        procs = [p for p in [self.nginx, *self.replicas, *self.workers] if p is not None]
        for p in procs:
            p.signal(signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(Exception):
                p.stop(timeout=10)
        if self.pg is not None:
            self.pg.cleanup()


class Observer:
    """Background threads: the pointer (every 0.5 s), the model list and the job list (every 1 s) through nginx,
    and the training processes of this run's workers (/proc, every 0.2 s)."""

    def __init__(self, cluster: Cluster, timeline: Timeline, stop: threading.Event):
        self.cluster, self.timeline, self.stop = cluster, timeline, stop
        self.lock = threading.Lock()
        self.active: str | None = None
        self.models_seen: dict[str, float] = {}
        self.jobs: dict[str, dict] = {}  # last seen record of each job
        self.job_seen: dict[str, dict] = {}  # per job: first/last seen, statuses, worker pids, attempts
        self.vanished: dict[str, float] = {}
        self.read_failures: collections.Counter = collections.Counter()
        self.training: dict[str, dict[int, int]] = collections.defaultdict(dict)  # job -> {training pid: worker}
        self.concurrent: dict[str, dict] = {}  # job -> the most live training processes seen at once
        self.threads = [threading.Thread(target=self._pointer, daemon=True),
                        threading.Thread(target=self._lists, daemon=True),
                        threading.Thread(target=self._scan, daemon=True)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _pointer(self) -> None:
        with httpx.Client(base_url=self.cluster.url, timeout=10) as c:
            while not self.stop.is_set():
                try:
                    r = c.get("/models/active")
                    if r.status_code == 200:
                        with self.lock:
                            self.active = r.json()["id"]
                    else:
                        self.read_failures[f"GET /models/active {r.status_code}"] += 1
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    self.read_failures[f"GET /models/active {type(exc).__name__}"] += 1
                self.stop.wait(0.5)

    def read_lists(self, c: httpx.Client) -> None:
        r = c.get("/models")
        if r.status_code == 200:
            with self.lock:
                for m in r.json():
                    self.models_seen.setdefault(m["id"], now())
        else:
            self.read_failures[f"GET /models {r.status_code}"] += 1
        r = c.get("/jobs", params={"limit": 1000}, headers=AUTH)
        if r.status_code != 200:
            self.read_failures[f"GET /jobs {r.status_code}"] += 1
            return
        listed = {j["id"]: j for j in r.json()}
        t = now()
        with self.lock:
            for job_id in self.jobs:
                if job_id not in listed and job_id not in self.vanished:
                    self.vanished[job_id] = t
            for job_id, j in listed.items():
                self.jobs[job_id] = j
                self.vanished.pop(job_id, None)
                seen = self.job_seen.setdefault(job_id, {"first": t, "statuses": [], "worker_pids": [],
                                                         "attempts": []})
                seen["last"] = t
                if not seen["statuses"] or seen["statuses"][-1] != j["status"]:
                    seen["statuses"].append(j["status"])
                pid = (j.get("worker") or {}).get("pid")
                if pid and pid not in seen["worker_pids"]:
                    seen["worker_pids"].append(pid)
                if j["attempt"] not in seen["attempts"]:
                    seen["attempts"].append(j["attempt"])

    def _lists(self) -> None:
        with httpx.Client(base_url=self.cluster.url, timeout=10) as c:
            while not self.stop.is_set():
                try:
                    self.read_lists(c)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    self.read_failures[f"lists {type(exc).__name__}"] += 1
                self.stop.wait(1.0)

    def training_processes(self) -> dict[str, dict[int, int]]:
        """Live training processes of this run's workers, by job (their spec file is in the run's directory), each
        with its parent's pid."""
        work = str(self.cluster.work)
        found: dict[str, dict[int, int]] = collections.defaultdict(dict)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "app.jobs.process" not in args:
                continue
            for a in args:
                if a.startswith(work) and a.endswith(".run.json") and alive(int(entry.name)):
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                        found[Path(a).name.removesuffix(".run.json")][int(entry.name)] = ppid
        return found

    def _scan(self) -> None:
        while not self.stop.is_set():
            t = now()
            for job_id, pids in self.training_processes().items():
                with self.lock:
                    self.training[job_id].update(pids)
                    if len(pids) > 1 and len(pids) > self.concurrent.get(job_id, {}).get("count", 0):
                        self.concurrent[job_id] = {"count": len(pids), "pids": pids,
                                                   "t": round(t - self.timeline.t0, 2)}
            self.stop.wait(0.2)


class Load:
    """Paced inference through nginx: `rate` requests/s over `threads` threads, each with its own client."""

    def __init__(self, cluster: Cluster, timeline: Timeline, observer: Observer, stats: Stats, rate: float,
                 stop: threading.Event, threads: int = 16):
        self.cluster, self.timeline, self.observer, self.stats = cluster, timeline, observer, stats
        self.rate, self.stop, self.n = rate, stop, threads
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _run(self, index: int) -> None:
        rng = random.Random(1000 + index)
        interval = self.n / self.rate
        next_at = time.monotonic() + rng.random() * interval
        with httpx.Client(base_url=self.cluster.url, timeout=20) as c:
            while not self.stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.stop.wait(delay)
                elif delay < -1:  # behind after a slow answer: skip, do not burst
                    next_at = time.monotonic()
                next_at += interval
                self._one(c, rng)

    def _one(self, c: httpx.Client, rng: random.Random) -> None:
        with self.observer.lock:
            active = self.observer.active
            others = [m for m in self.observer.models_seen if m != active]
        roll = rng.random()
        model, headers = None, {}
        if roll < 0.15 and active:
            # a client that pins a model id carries the key (naming a model that is not active needs it), so a
            # pointer that moved since its last look does not turn its requests into 403s
            category, model, headers = "named_active", active, AUTH
        elif roll < 0.30 and others:
            category, model, headers = "named_other", rng.choice(others), AUTH  # the key: any model, not only active
        else:
            category = "active"
        prefix = [rng.randrange(10) for _ in range(rng.randint(1, 3))]
        phase, paused, flips = self.timeline.where()
        t = now()
        start = time.monotonic()
        answered = message = None
        try:
            if rng.random() < 0.5:
                route = "POST /predict"
                body = {"prefix": prefix, **({"model": model} if model else {})}
                r = c.post("/predict", json=body, headers=headers)
            else:
                route = "GET /topk"
                params = {"prefix": ",".join(map(str, prefix)), "k": 3, **({"model": model} if model else {})}
                r = c.get("/topk", params=params, headers=headers)
            ok = r.status_code == 200
            outcome = str(r.status_code)
            if ok:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    answered = r.json()["model"]
            else:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    outcome += f" {r.json()['error']}"
                    message = str(r.json()["message"])[:200]
        except httpx.HTTPError as exc:
            ok, outcome = False, type(exc).__name__
        paused = paused or self.timeline.where()[2] != flips  # sent before the pause and answered in it, or after
        self.stats.record(phase, paused, category, route, model, outcome, ok, time.monotonic() - start, answered,
                          t - self.timeline.t0, message)


class Operator:
    """Activations and rollbacks through nginx; its last explicit choice is the pointer it expects."""

    def __init__(self, cluster: Cluster, timeline: Timeline, observer: Observer):
        self.cluster, self.timeline, self.observer = cluster, timeline, observer
        self.lock = threading.Lock()
        self.last_choice: str | None = None
        self.last_choice_t: float | None = None
        self.actions: list[dict] = []
        self.client = httpx.Client(base_url=cluster.url, timeout=15, headers=AUTH)

    def activate(self, model_id: str, why: str, deadline_s: float = 45) -> bool:
        """Until a definite answer: 200 (the choice), or a 4xx (refused). A timeout or 5xx may or may not have
        moved the pointer, so it asks again."""
        with self.lock:
            end = time.monotonic() + deadline_s
            tries = []
            while True:
                phase = self.timeline.where()[0]
                t = now()
                try:
                    r = self.client.post(f"/models/{model_id}/activate")
                    outcome = r.status_code
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                tries.append(outcome)
                if outcome == 200 or (isinstance(outcome, int) and 400 <= outcome < 500):
                    break
                if time.monotonic() > end:
                    break
                time.sleep(1)
            ok = outcome == 200
            if ok:
                self.last_choice, self.last_choice_t = model_id, t
            elif not (isinstance(outcome, int) and outcome < 500):
                # never answered for sure: the pointer may or may not be there; say so rather than guess
                self.last_choice, self.last_choice_t = f"uncertain:{model_id}", t
            self.actions.append({"t": round(t - self.timeline.t0, 2), "phase": phase, "model": model_id, "why": why,
                                 "tries": tries, "chosen": ok})
            self.timeline.event(f"operator activates {model_id} ({why})", answers=tries)
            return ok

    def loop(self, stop: threading.Event, interval: float, protected: set[str]) -> None:
        """Alternate: activate the newest trained model, then roll back to an older one."""
        n = 0
        while not stop.wait(interval):
            with self.observer.lock:
                trained = [(j["finished_at"] or "", j["model_id"]) for j in self.observer.jobs.values()
                           if j["status"] == "succeeded" and j["model_id"] and j["model_id"] not in protected]
                active = self.observer.active
            trained.sort()
            n += 1
            if n % 2 and trained:
                target, why = trained[-1][1], "activate the newest"
            else:
                older = [m for _, m in trained[:-1] if m != active]
                target, why = (older[-1] if older else "default"), "roll back"
            if target == active:
                target, why = "default", "roll back"
            self.activate(target, why, deadline_s=20)


class Jobs:
    """The job stream: a small job every `interval` s through nginx (activate never or if_better)."""

    def __init__(self, cluster: Cluster, timeline: Timeline):
        self.cluster, self.timeline = cluster, timeline
        self.lock = threading.Lock()
        self.submitted: dict[str, dict] = {}  # id -> what was sent
        self.unknown: list[dict] = []  # submissions without a definite answer: looked for by name at the end
        self.refused: collections.Counter = collections.Counter()
        self.if_better = True
        self.n = 0
        self.client = httpx.Client(base_url=cluster.url, timeout=15, headers=AUTH)

    def body(self, activate: str, steps: int, corpus: list[list[int]] | None = None, **model) -> dict:
        rng = random.Random(self.n)
        sequences = corpus or [[rng.randrange(10) for _ in range(5)] for _ in range(6)]
        return {"dataset": {"sequences": sequences}, "model": {"embedding_dim": 8, "hidden_dim": 16, **model},
                "training": {"steps": steps, "seed": self.n}, "activate": activate}

    def submit(self, body: dict, role: str) -> str | None:
        with self.lock:
            self.n += 1
            name = f"chaos-{self.n}-{role}"
        body = {**body, "name": name}
        phase = self.timeline.where()[0]
        t = now()
        try:
            r = self.client.post("/jobs", json=body)
        except httpx.HTTPError as exc:
            with self.lock:
                self.unknown.append({"name": name, "phase": phase, "error": type(exc).__name__})
            return None
        if r.status_code == 202:
            job_id = r.json()["id"]
            with self.lock:
                self.submitted[job_id] = {"name": name, "role": role, "activate": body["activate"], "phase": phase,
                                          "t": round(t - self.timeline.t0, 2)}
            return job_id
        if r.status_code >= 500:
            with self.lock:
                self.unknown.append({"name": name, "phase": phase, "error": str(r.status_code)})
        else:
            try:
                why = r.json().get("message", "")[:100]
            except ValueError:
                why = r.text[:100]
            self.refused[f"{r.status_code} {why}"] += 1
        return None

    def loop(self, stop: threading.Event, interval: float, steps: int, observer: Observer, outstanding: int) -> None:
        """A job every `interval` s while fewer than `outstanding` of the stream's jobs are unfinished, so the queue
        stays short (the workers train on what CPU the load leaves) and every job can end within the run."""
        k = 0
        while not stop.wait(interval):
            with self.lock, observer.lock:
                unfinished = sum(1 for i, sent in self.submitted.items() if sent["role"] == "stream"
                                 and observer.jobs.get(i, {}).get("status") not in TERMINAL)
            if unfinished >= outstanding:
                continue
            k += 1
            activate = "if_better" if self.if_better and k % 2 else "never"
            self.submit(self.body(activate, steps), "stream")


def log_lines(path: Path, needle: str) -> list[str]:
    try:
        return [line for line in path.read_text(errors="replace").splitlines() if needle in line]
    except OSError:
        return []


def poll_until(predicate, timeout: float, interval: float = 0.2):
    """Call predicate until it returns something truthy (returned), or None at the deadline: the benchmark
    reports a missed wait instead of failing."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value or None
        time.sleep(interval)


def run(args, work: Path) -> dict:
    timeline = Timeline()
    cluster = Cluster(work, args)
    stop = threading.Event()
    stop_stream = threading.Event()
    stop_operator = threading.Event()
    try:
        cluster.start(timeline)
        observer = Observer(cluster, timeline, stop)
        stats = Stats()
        jobs = Jobs(cluster, timeline)
        operator = Operator(cluster, timeline, observer)
        admin = httpx.Client(base_url=cluster.url, timeout=15, headers=AUTH)
        observer.start()
        supervisor = cluster.supervisor = threading.Thread(target=cluster.supervise, args=(stop, timeline), daemon=True)
        supervisor.start()

        def job(job_id: str) -> dict | None:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = admin.get(f"/jobs/{job_id}")
                if r.status_code == 200:
                    return r.json()
            return None

        # A weak model (one step on the corpus), trained before the load starts: phase 5 compares with it.
        weak_id = jobs.submit(jobs.body("never", 1, CORPUS, embedding_dim=16, hidden_dim=32), "weak")
        if weak_id is None:
            raise RuntimeError("the weak model's job was not accepted")
        weak = poll_until(lambda: (j := job(weak_id)) and j["status"] in TERMINAL and j, 120)
        if not weak or weak["status"] != "succeeded":
            raise RuntimeError(f"the weak model's job did not succeed: {weak}")
        weak_model = weak["model_id"]
        timeline.event("weak model trained", model=weak_model)

        load = Load(cluster, timeline, observer, stats, args.rate, stop)
        load.start()
        threads = [threading.Thread(target=jobs.loop, args=(stop_stream, args.job_interval, args.job_steps, observer,
                                                            args.outstanding_jobs), daemon=True),
                   threading.Thread(target=operator.loop, args=(stop_operator, args.operator_interval, {weak_model}),
                                    daemon=True)]
        timeline.set("0_baseline")
        for t in threads:
            t.start()
        time.sleep(args.phase_seconds / 2)
        for p in cluster.processes():
            p.sample_rss()
        time.sleep(args.phase_seconds / 2)
        phases: dict[str, dict] = {}

        # 1. a replica dies, and comes back on its port
        timeline.set("1_replica_kill")
        victim = cluster.replicas[1]
        killed = victim.pid
        victim.signal(signal.SIGKILL)
        timeline.event("SIGKILL replica", name=victim.name, pid=killed)
        time.sleep(args.phase_seconds / 2)
        victim.start()
        try:
            victim.wait_ready()
            timeline.event("replica restarted and ready", name=victim.name, pid=victim.pid)
            phases["1_replica_kill"] = {"killed_pid": killed, "restarted_pid": victim.pid, "ready_again": True}
        except (TimeoutError, RuntimeError) as exc:
            timeline.event("replica did not come back", error=str(exc)[:300])
            phases["1_replica_kill"] = {"killed_pid": killed, "ready_again": False, "error": str(exc)[:500]}
        victim.sample_rss()
        time.sleep(args.recovery_seconds)

        # 2. the worker holding a running job dies mid-job
        timeline.set("2_worker_kill")
        ours = {w.pid: w for w in cluster.workers}
        # a job long enough to be caught running: wait until it trains, then read who holds it, fresh
        long_id = jobs.submit(jobs.body("never", args.long_steps), "worker-kill")
        target = long_id and poll_until(lambda: (j := job(long_id)) and j["status"] == "running"
                                        and j["progress"]["step"] > 0 and (j.get("worker") or {}).get("pid") in ours
                                        and j, 90)
        if not target:
            timeline.event("no running job on a worker to kill")
            phases["2_worker_kill"] = {"exercised": False}
        else:
            holder = ours[target["worker"]["pid"]]
            trainers = children_of(holder.pid)  # type: ignore[arg-type]
            holder.signal(signal.SIGKILL)
            timeline.event("SIGKILL worker mid-job", name=holder.name, pid=target["worker"]["pid"], job=target["id"],
                           step=target["progress"]["step"], training_pids=trainers)
            time.sleep(2)
            orphans = [pid for pid in trainers if alive(pid)]
            time.sleep(max(0.0, args.phase_seconds / 2 - 2))
            holder.start()
            up = holder.wait_log(" training on ", 60)
            timeline.event("worker restarted" if up else "the restarted worker did not come up", name=holder.name,
                           pid=holder.pid)
            phases["2_worker_kill"] = {"exercised": True, "job": target["id"], "killed_pid": target["worker"]["pid"],
                                       "step_at_kill": target["progress"]["step"], "its_training_pids": trainers,
                                       "training_pids_alive_2s_later": orphans, "restarted_pid": holder.pid}
        time.sleep(args.recovery_seconds)
        if target:
            holder.sample_rss()  # warm by now (a worker imports torch at start)

        # 3. PostgreSQL paused (every process: SIGSTOP), then continued
        timeline.set("3_pg_pause")
        timeline.paused(True)
        pids = cluster.pg_stop_all()
        timeline.event("SIGSTOP postgres", pids=pids)
        time.sleep(args.pause_seconds)
        cluster.pg_continue_all()
        timeline.paused(False)
        timeline.event("SIGCONT postgres")
        phases["3_pg_pause"] = {"pids": pids, "seconds": args.pause_seconds}
        time.sleep(args.recovery_seconds)

        # 4. PostgreSQL restarts (fast shutdown)
        timeline.set("4_pg_restart")
        assert cluster.pg is not None
        started = time.monotonic()
        cluster.pg.stop("fast")
        timeline.event("postgres stopped (fast)")
        cluster.pg.start()
        timeline.event("postgres started again", seconds=round(time.monotonic() - started, 2))
        phases["4_pg_restart"] = {"down_seconds": round(time.monotonic() - started, 2)}
        time.sleep(args.recovery_seconds + args.phase_seconds / 2)

        # 5. a rollback while an if_better job runs
        timeline.set("5_rollback")
        stop_operator.set()
        threads[1].join(timeout=60)
        jobs.if_better = False  # from now on the stream's jobs never activate: the operator's choice must hold

        def if_better_in_flight() -> bool:
            with observer.lock:
                return any(j["status"] not in TERMINAL for i, j in observer.jobs.items()
                           if jobs.submitted.get(i, {}).get("activate") == "if_better")

        drained = poll_until(lambda: not if_better_in_flight(), args.drain_seconds)
        timeline.event("earlier if_better jobs done" if drained else "earlier if_better jobs still running")
        operator.activate(weak_model, "make the weak model active before the job starts")
        racer = jobs.submit({**jobs.body("if_better", args.racer_steps, CORPUS, embedding_dim=16, hidden_dim=32),
                             "training": {"steps": args.racer_steps, "teacher_forcing_ratio": 1.0, "seed": 0}},
                            "racer")
        racing = racer and poll_until(lambda: (j := job(racer)) and j["status"] == "running"
                                      and j["progress"]["step"] > 0 and j, 90)
        if racing:
            timeline.event("if_better job training", job=racer, step=racing["progress"]["step"])
            operator.activate("default", "roll back while the if_better job trains")
        else:
            timeline.event("the if_better job was not seen training", job=racer, last=job(racer) if racer else None)
        racer_end = racer and poll_until(lambda: (j := job(racer)) and j["status"] in TERMINAL and j, 120)
        phases["5_rollback"] = {
            "weak_model": weak_model, "job": racer, "seen_training_at_rollback": bool(racing),
            "rollback_to": "default", "job_status": racer_end and racer_end["status"],
            "job_model": racer_end and racer_end["model_id"], "job_activated": racer_end and racer_end["activated"],
            "activation_reason": racer_end and racer_end["activation_reason"]}
        timeline.event("if_better job ended", **{k: v for k, v in phases["5_rollback"].items()
                                                 if k in ("job_status", "job_activated", "activation_reason")})
        time.sleep(args.recovery_seconds)

        # the end: no new jobs, every job waited for (bounded), then the last samples
        timeline.set("6_drain")
        stop_stream.set()
        threads[0].join(timeout=30)

        def all_terminal() -> bool:
            with observer.lock:
                return all(observer.jobs.get(i, {}).get("status") in TERMINAL for i in jobs.submitted)

        poll_until(all_terminal, args.drain_seconds, 0.5)
        time.sleep(1.5)  # one more round of the observer's lists
        rss_end = {p.name: (rss_kb(p.pid) if p.running() else None, p.pid)  # type: ignore[arg-type]
                   for p in cluster.processes()}
        stop.set()
        for t in [*load.threads, *observer.threads, supervisor]:
            t.join(timeout=30)
        with httpx.Client(base_url=cluster.url, timeout=15, headers=AUTH) as c:
            observer.read_lists(c)
            final_pointer = c.get("/models/active").json().get("id")
            models_now = {m["id"] for m in c.get("/models").json()}
            jobs_now = {j["id"]: j for j in c.get("/jobs", params={"limit": 1000}).json()}
        serving = {}
        for r in cluster.replicas:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                serving[r.name] = httpx.get(r.url + "/readyz", timeout=5).json()
        return report(args, timeline, cluster, observer, stats, jobs, operator, phases, rss_end,
                      final_pointer, models_now, jobs_now, serving)
    finally:
        stop.set()
        stop_stream.set()
        stop_operator.set()
        cluster.teardown()


def report(args, timeline, cluster, observer, stats, jobs, operator, phases, rss_end, final_pointer,
           models_now, jobs_now, serving) -> dict:
    # requests
    requests = {}
    outside_pause, on_active = 0, 0
    for phase in sorted(stats.sent):
        sent, failed = stats.sent[phase], stats.failed[phase]
        lat = sorted(stats.latency[phase])
        active_failed = failed["active"] + failed["named_active"]
        paused_failed = sum(stats.failed_paused[phase].values())
        outside_pause += sum(failed.values()) - paused_failed
        on_active += active_failed
        requests[phase] = {
            "sent": sum(sent.values()), "failed": sum(failed.values()), "sent_by_category": dict(sent),
            "failed_by_category": dict(failed), "failed_during_pg_pause": paused_failed,
            "failed_on_active_model": active_failed, "failures_by_outcome": dict(stats.statuses[phase]),
            "latency_ms": {"p50": round(lat[len(lat) // 2] * 1000, 1),
                           "p99": round(lat[int(len(lat) * 0.99)] * 1000, 1),
                           "max": round(lat[-1] * 1000, 1)} if lat else None,
            "answered_by": dict(stats.answered_by[phase]), "failure_samples": stats.samples[phase]}
    # jobs
    logs = [w.log for w in cluster.workers]
    successes: collections.Counter = collections.Counter()
    for path in logs:
        for line in log_lines(path, " succeeded: model "):
            successes[line.split("job ", 1)[1].split(" ", 1)[0]] += 1
    found_unknown = []
    for u in jobs.unknown:
        match = [i for i, j in jobs_now.items() if j.get("name") == u["name"]]
        found_unknown.append({**u, "created_as": match})
        for i in match:
            jobs.submitted.setdefault(i, {"name": u["name"], "role": "unknown-answer", "phase": u["phase"]})
    by_status: collections.Counter = collections.Counter()
    lost, run_twice, reran, failed = [], [], [], []
    for job_id, sent in jobs.submitted.items():
        j = jobs_now.get(job_id)
        status = j["status"] if j else "missing"
        by_status[status] += 1
        if j is None or status not in TERMINAL:
            lost.append({"id": job_id, **sent, "status": status, "seen": observer.job_seen.get(job_id)})
        twice = []
        if job_id in observer.concurrent:
            twice.append(f"{observer.concurrent[job_id]['count']} training processes at once "
                         f"(pids {observer.concurrent[job_id]['pids']}, t={observer.concurrent[job_id]['t']} s)")
        if successes[job_id] > 1:
            twice.append(f"{successes[job_id]} successes logged by the workers")
        if twice:
            run_twice.append({"id": job_id, **sent, "why": twice})
        if j and (j["attempt"] > 1 or len(observer.training.get(job_id, ())) > 1):
            reran.append({"id": job_id, "attempt": j["attempt"], "status": status, "error": j["error"],
                          "training_processes_seen": [{"pid": pid, "worker_pid": parent} for pid, parent
                                                      in sorted(observer.training.get(job_id, {}).items())]})
        if status == "failed":
            failed.append({"id": job_id, "phase": sent["phase"], "error": j["error"]})
    orphans = phases.get("2_worker_kill", {}).get("training_pids_alive_2s_later") or []
    if orphans:
        run_twice.append({"id": phases["2_worker_kill"]["job"], "why": [
            f"its training processes {orphans} outlived the SIGKILLed worker by 2 s"]})
    # models
    succeeded_models = {j["model_id"] for j in jobs_now.values() if j["status"] == "succeeded" and j["model_id"]}
    ever = set(observer.models_seen) | succeeded_models
    models_lost = sorted(ever - models_now)
    # the pointer: where the operator left it, and which activations by jobs came after an operator's choice
    # while the job had started before it (a rollback undone)
    overrides = []
    for job_id, j in jobs_now.items():
        compared = re.search(r"active model '([^']+)'", j["activation_reason"] or "")
        if not j["activated"] or not compared or not j["started_at"] or not j["finished_at"]:
            continue
        started, finished = (datetime.fromisoformat(j[k]).timestamp() for k in ("started_at", "finished_at"))
        during = [a for a in operator.actions if a["chosen"] and started < timeline.t0 + a["t"] < finished]
        if during and during[-1]["model"] != compared[1]:
            overrides.append({"job": job_id, "model": j["model_id"], "compared_with": compared[1],
                              "operator_chose": during[-1]["model"], "operator_t": during[-1]["t"],
                              "reason": j["activation_reason"]})
    # memory
    memory = {}
    for p in cluster.processes():
        start_kb, start_pid = p.rss_start, p.rss_start_pid
        end_kb, end_pid = rss_end.get(p.name, (None, None))
        same = start_kb and end_kb and start_pid == end_pid
        memory[p.name] = {"start_mb": start_kb and round(start_kb / 1024, 1),
                          "end_mb": end_kb and round(end_kb / 1024, 1),
                          "growth_mb": round((end_kb - start_kb) / 1024, 1) if same else None,
                          "pid": end_pid, "starts": p.starts,
                          "start_sampled": "after its restart" if p.starts > 1 else "half-way through the baseline"}
    # worker and replica logs: what they said went wrong
    log_notes = {p.name: {"tracebacks": len(log_lines(p.log, "Traceback")),
                          "lease_lost": len(log_lines(p.log, "lease lost")),
                          "errors": len(log_lines(p.log, " ERROR "))} for p in cluster.processes()}
    expected = operator.last_choice
    targets = {
        "jobs_lost": {"target": 0, "value": len(lost)},
        "jobs_run_twice": {"target": 0, "value": len(run_twice)},
        "models_lost": {"target": 0, "value": len(models_lost)},
        "pointer_where_the_operator_left_it": {"target": expected, "value": final_pointer},
        "inference_errors_outside_the_pg_pause": {"target": 0, "value": outside_pause},
        "inference_errors_on_the_active_model": {"target": 0, "value": on_active},
        # not one of the targets: a process that exits unasked (restarted by the harness, as an
        # orchestrator would) is a fault of its own
        "processes_exited_unasked": {"target": 0, "value": len(cluster.unasked_exits)},
    }
    for row in targets.values():
        row["met"] = row["value"] == row["target"]
    return {
        "what": "fault benchmark: 3 replicas behind nginx on PostgreSQL, 2 workers, steady inference load, a job "
                "stream, an operator; a replica SIGKILLed, a worker SIGKILLed mid-job, PostgreSQL SIGSTOPped, "
                "PostgreSQL restarted, a rollback during an if_better job",
        "smoke": bool(args.quick),
        "settings": {"phase_seconds": args.phase_seconds, "recovery_seconds": args.recovery_seconds,
                     "pause_seconds": args.pause_seconds, "rate_per_s": args.rate, "job_interval_s": args.job_interval,
                     "job_steps": args.job_steps,
                     "outstanding_jobs": args.outstanding_jobs, "operator_interval_s": args.operator_interval,
                     "worker_lease_s": args.lease_seconds, "replicas": len(cluster.replicas), "workers": len(cluster.workers),
                     "request_mix": "70% name no model (the active one), 15% name the model last seen active, 15% "
                                    "another registered model (with the key; once one exists); half POST /predict, "
                                    "half GET /topk k=3; prefixes of 1-3 digits"},
        "targets": targets,
        "all_met": all(row["met"] for row in targets.values()),
        "requests": requests,
        "jobs": {"submitted": len(jobs.submitted), "by_status": dict(by_status), "lost": lost,
                 "run_twice": run_twice, "ran_again": reran, "failed": failed,
                 "refused_at_submit": dict(jobs.refused), "submissions_without_answer": found_unknown,
                 "vanished_while_running": {k: round(v - timeline.t0, 2) for k, v in observer.vanished.items()}},
        "models": {"seen": len(ever), "lost": models_lost},
        "pointer": {"final": final_pointer, "operator_last_choice": expected,
                    "operator_actions": operator.actions, "job_activations_over_a_later_operator_choice": overrides,
                    "replicas_serving": serving},
        "memory": memory,
        "processes_exited_unasked": cluster.unasked_exits,
        "phases": phases,
        "observer_read_failures": dict(observer.read_failures),
        "log_notes": log_notes,
        "timeline": timeline.events,
    }


def print_summary(result: dict) -> None:
    print("\n== requests (failed / sent; on the active model; during the PostgreSQL pause) ==")
    for phase, row in result["requests"].items():
        print(f"{phase:15s} {row['failed']:6d} / {row['sent']:6d}; active {row['failed_on_active_model']:5d}; "
              f"paused {row['failed_during_pg_pause']:5d}; p99 {row['latency_ms'] and row['latency_ms']['p99']} ms; "
              f"{row['failures_by_outcome']}")
    j = result["jobs"]
    print(f"== jobs: submitted {j['submitted']}, {j['by_status']}; lost {len(j['lost'])}; run twice "
          f"{len(j['run_twice'])}; ran again {len(j['ran_again'])}; failed {len(j['failed'])}")
    for f in j["failed"]:
        print(f"   failed {f['id']} ({f['phase']}): {f['error']}")
    p = result["pointer"]
    print(f"== pointer: final {p['final']}, operator's last choice {p['operator_last_choice']}; job activations over "
          f"a later operator choice: {len(p['job_activations_over_a_later_operator_choice'])}")
    print(f"== models: seen {result['models']['seen']}, lost {result['models']['lost']}")
    for e in result["processes_exited_unasked"]:
        print(f"== {e['name']} (pid {e['pid']}) exited unasked with status {e['status']} in {e['phase']}; restarted")
    print("== memory (MB):", {k: (v["start_mb"], v["end_mb"]) for k, v in result["memory"].items()})
    print("== targets ==")
    for name, row in result["targets"].items():
        print(f"  {'met   ' if row['met'] else 'MISSED'} {name}: {row['value']} (target {row['target']})")


# (full run, --quick): what an option left out takes
DEFAULTS = {"phase_seconds": (20, 8), "pause_seconds": (20, 6), "rate": (200, 100), "lease_seconds": (15, 6),
            "operator_interval": (7, 5), "drain_seconds": (90, 60)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase-seconds", type=float, help="length of each fault phase (20; quick 8)")
    parser.add_argument("--recovery-seconds", type=float, help="pause after each fault (half a phase)")
    parser.add_argument("--pause-seconds", type=float, help="how long PostgreSQL stays stopped (20; quick 6)")
    parser.add_argument("--rate", type=float, help="inference requests per second, in total (200; quick 100)")
    parser.add_argument("--job-interval", type=float, default=4, help="seconds between the stream's jobs")
    parser.add_argument("--outstanding-jobs", type=int, default=2, help="the stream waits while this many of its "
                        "jobs are unfinished")
    parser.add_argument("--job-steps", type=int, default=60, help="training steps of the stream's jobs")
    parser.add_argument("--long-steps", type=int, default=1500, help="steps of the job killed mid-run in phase 2")
    parser.add_argument("--racer-steps", type=int, default=600, help="steps of phase 5's if_better job")
    parser.add_argument("--operator-interval", type=float, help="seconds between the operator's moves (7; quick 5)")
    parser.add_argument("--lease-seconds", type=float, help="the workers' SEQ2SEQ_JOB_LEASE_S (15, the service's "
                        "default; quick 6)")
    parser.add_argument("--drain-seconds", type=float, help="the longest wait for jobs to end (90; quick 60)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: short phases, a lower rate; writes "
                        "chaos_smoke.json, marked smoke")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (the path is printed)")
    args = parser.parse_args()
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.recovery_seconds is None:
        args.recovery_seconds = args.phase_seconds / 2
    work = Path(tempfile.mkdtemp(prefix="seq2seq-chaos-"))

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even where it was inherited ignored
    try:
        result = run(args, work)
    except BaseException:
        traceback.print_exc()
        print("the harness failed" + ("" if args.keep_logs else " (--keep-logs keeps the processes' logs)"),
              file=sys.stderr)
        return 2
    finally:
        if args.keep_logs:
            print("logs kept in", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_summary(result)
    path = write("chaos_smoke" if args.quick else "chaos", result)
    print("written to", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
