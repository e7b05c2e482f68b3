"""Worst case a job body allows for top-k, against a real server, beside a flood of the shipped model.

The hostile model is the shape that makes top-k dearest within the job limits: vocabulary 2, length 24,
embedding and hidden 512, attention (randomly initialised, seeded). It sits in a temporary weights directory
beside a copy of the shipped default. Each phase starts a fresh `python -m app` and floods it for --seconds
with --clients concurrent clients (in a separate process, so the probe below does not share their GIL):

  shipped:  GET /topk?model=default&prefix=P&k=50, every P distinct (prefixes of length 1 to 5, shuffled)
  hostile:  GET /topk?model=hostile&prefix=B&k=K, an 8-token binary B and K in 1..50, every pair distinct

and meanwhile measures the server process's resident memory (VmRSS sampled every 20 ms, and VmHWM after
resetting it through /proc/PID/clear_refs at the start of the flood; growth is over the idle RSS just before),
/healthz latency from a separate client probing every 20 ms, and every request's status and latency. The two
phases alternate --rounds times; figures are medians over rounds, except the worst-case request latency and
failures, which count every request.

Targets (the hostile-input issue): peak memory growth under 300 MB, /healthz p99 under 100 ms during the
flood, every worst-case request answered (200, or 503 with a reason) within 10 s.

  python bench/hostile.py [--seconds 15] [--rounds 2] [--clients 8]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, wait_ready, write

WEIGHTS = ROOT / "weights"
HOSTILE = dict(vocab_size=2, seq_length=24, embedding_dim=512, hidden_dim=512, attention=True)
PROBE_INTERVAL_S = 0.02
SAMPLE_INTERVAL_S = 0.02
TARGETS = {"peak_rss_growth_mb": 300, "healthz_p99_ms": 100, "worst_case_max_latency_s": 10}
MB = 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_weights(target: Path, seed: int = 0) -> Path:
    import torch

    from model import checkpoint
    from model.config import ModelConfig
    from model.network import Seq2Seq

    target.mkdir(parents=True, exist_ok=True)
    for name in ("default.pt", "default.pt.sha256"):
        shutil.copy(WEIGHTS / name, target / name)
    torch.manual_seed(seed)
    checkpoint.save(target / "hostile.pt", Seq2Seq(ModelConfig(**HOSTILE)), {}, {}, {}, [], name="hostile")
    return target


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


class Server:
    def __init__(self, weights_dir: Path, data_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / "server.log"
        env = {**os.environ, "SEQ2SEQ_HOST": "127.0.0.1", "SEQ2SEQ_PORT": str(self.port), "SEQ2SEQ_DATA_DIR": str(data_dir),
               "SEQ2SEQ_WEIGHTS_DIR": str(weights_dir), "SEQ2SEQ_API_KEY": "bench-management-key-0123456789abcdef", "SEQ2SEQ_LOG_LEVEL": "warning",
               # the flood names its models without the key, as any client may name a public one
               "SEQ2SEQ_PUBLIC_MODELS": "default,hostile"}
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        wait_ready(self.url, timeout, proc=self.proc, log=self.log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def queries(kind: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    if kind == "shipped":
        prefixes: list[list[int]] = [[]]
        every = []
        for _ in range(5):
            prefixes = [[*p, d] for p in prefixes for d in range(10)]
            every += prefixes
        rng.shuffle(every)
        return [f"model=default&prefix={','.join(map(str, p))}&k=50" for p in every]
    pairs = [(b, k) for b in range(256) for k in range(1, 51)]
    rng.shuffle(pairs)
    return [f"model=hostile&prefix={','.join(str((b >> (7 - i)) & 1) for i in range(8))}&k={k}" for b, k in pairs]


def flood(url: str, items: list[str], clients: int, start_at: float, seconds: float) -> list[tuple]:
    """In a child process: `clients` threads, each on its own keep-alive connection, from start_at (wall
    clock) for `seconds`. Returns (start offset s, latency s, status, reason) per request; status 0 is a
    client-side error."""
    results: list[tuple] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        mine = items[index::clients]
        with httpx.Client(base_url=url, timeout=60) as c:
            while time.time() < start_at:
                time.sleep(0.001)
            end = start_at + seconds
            i = 0
            while time.time() < end:
                q = mine[i % len(mine)]
                i += 1
                t0 = time.perf_counter()
                began = time.time() - start_at
                try:
                    r = c.get(f"/topk?{q}")
                    status, reason = r.status_code, ""
                    if r.status_code != 200:
                        try:
                            reason = str(r.json().get("message", ""))[:200]
                        except ValueError:
                            reason = r.text[:200]
                except httpx.HTTPError as exc:
                    status, reason = 0, f"{type(exc).__name__}: {exc}"[:200]
                with lock:
                    results.append((began, time.perf_counter() - t0, status, reason, q))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def run_phase(kind: str, weights_dir: Path, data_dir: Path, pool, seconds: float, clients: int, seed: int) -> dict:
    server = Server(weights_dir, data_dir)
    try:
        server.wait_ready()
        pid = server.proc.pid
        time.sleep(1.0)  # settle
        idle_kb = status_kb(pid, "VmRSS")
        start_at = time.time() + 2.0  # the flood process needs a moment to start
        future = pool.submit(flood, server.url, queries(kind, seed), clients, start_at, seconds)

        stop = threading.Event()
        rss: list[int] = []
        probes: list[tuple] = []

        def sample() -> None:
            while time.time() < start_at:
                time.sleep(0.001)
            try:  # reset VmHWM to the current RSS, so that it holds the peak during the flood only
                Path(f"/proc/{pid}/clear_refs").write_text("5")
                sample.hwm_reset = True
            except OSError:
                sample.hwm_reset = False
            while not stop.is_set():
                try:
                    rss.append(status_kb(pid, "VmRSS"))
                except (OSError, KeyError):
                    return
                time.sleep(SAMPLE_INTERVAL_S)

        def probe() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                c.get("/healthz")  # open the connection before the flood
                while time.time() < start_at:
                    time.sleep(0.001)
                next_at = time.perf_counter()
                while not stop.is_set():
                    t0 = time.perf_counter()
                    try:
                        status = c.get("/healthz").status_code
                    except httpx.HTTPError:
                        status = 0
                    probes.append((time.time() - start_at, time.perf_counter() - t0, status))
                    next_at += PROBE_INTERVAL_S
                    time.sleep(max(0.0, next_at - time.perf_counter()))

        sample.hwm_reset = False
        threads = [threading.Thread(target=sample), threading.Thread(target=probe)]
        for t in threads:
            t.start()
        requests = future.result()
        stop.set()
        for t in threads:
            t.join()
        hwm_kb = status_kb(pid, "VmHWM")
        if server.proc.poll() is not None:
            raise RuntimeError(f"server died during the {kind} flood: {server.log.read_text()[-2000:]}")
    finally:
        server.stop()

    during = [p for p in probes if 0 <= p[0] <= seconds]
    probe_ms = [p[1] * 1000 for p in during]
    statuses: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for _, _, status, reason, _ in requests:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if status != 200:
            reasons[reason] = reasons.get(reason, 0) + 1
    failures = [r for r in requests if not (r[2] == 200 or (r[2] == 503 and r[3]))]
    latencies = [r[1] for r in requests]
    peak_sampled_kb = max(rss) if rss else idle_kb
    peak_kb = max(peak_sampled_kb, hwm_kb) if sample.hwm_reset else peak_sampled_kb
    distinct = len({r[4] for r in requests})
    return {
        "kind": kind,
        "idle_rss_mb": round(idle_kb / 1024, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "peak_rss_growth_mb": round((peak_kb - idle_kb) / 1024, 1),
        "peak_rss_growth_sampled_mb": round((peak_sampled_kb - idle_kb) / 1024, 1),
        "hwm_reset_at_flood_start": sample.hwm_reset,
        "rss_samples": len(rss),
        "healthz": {"probes": len(probe_ms), "p50_ms": round(statistics.median(probe_ms), 2),
                    "p99_ms": round(percentile(probe_ms, 99), 2), "max_ms": round(max(probe_ms), 2),
                    "non_200": sum(1 for p in during if p[2] != 200)},
        "requests": {"count": len(requests), "distinct": distinct, "per_s": round(len(requests) / seconds, 1),
                     "statuses": statuses, "failures": len(failures),
                     "failure_examples": [{"status": r[2], "reason": r[3], "query": r[4]} for r in failures[:5]],
                     "non_200_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:5]),
                     "p50_s": round(statistics.median(latencies), 3), "p99_s": round(percentile(latencies, 99), 3),
                     "max_s": round(max(latencies), 3)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="seq2seq-hostile-"))
    try:
        weights_dir = build_weights(tmp / "weights")
        phases: dict[str, list[dict]] = {"shipped": [], "hostile": []}
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            pool.submit(time.sleep, 0).result()  # start the flood process before the first phase
            for rnd in range(args.rounds):
                for kind in ("shipped", "hostile"):
                    row = run_phase(kind, weights_dir, tmp / f"data-{kind}-{rnd}", pool, args.seconds, args.clients,
                                    seed=rnd)
                    phases[kind].append(row)
                    h, q = row["healthz"], row["requests"]
                    print(f"round {rnd} {kind:8s} rss +{row['peak_rss_growth_mb']:6.1f} MB (idle {row['idle_rss_mb']} MB) "
                          f"| healthz p50 {h['p50_ms']:6.2f} ms p99 {h['p99_ms']:7.2f} ms max {h['max_ms']:7.2f} ms "
                          f"| {q['count']} requests ({q['distinct']} distinct) {q['statuses']} p50 {q['p50_s']} s "
                          f"max {q['max_s']} s failures {q['failures']}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {}
    for kind, rows in phases.items():
        summary[kind] = {
            "peak_rss_growth_mb": statistics.median(r["peak_rss_growth_mb"] for r in rows),
            "healthz_p50_ms": statistics.median(r["healthz"]["p50_ms"] for r in rows),
            "healthz_p99_ms": statistics.median(r["healthz"]["p99_ms"] for r in rows),
            "requests_per_s": statistics.median(r["requests"]["per_s"] for r in rows),
            "request_max_latency_s": max(r["requests"]["max_s"] for r in rows),
            "request_failures": sum(r["requests"]["failures"] for r in rows),
            "requests": sum(r["requests"]["count"] for r in rows),
            "statuses": {s: sum(r["requests"]["statuses"].get(s, 0) for r in rows)
                         for s in sorted({s for r in rows for s in r["requests"]["statuses"]})},
        }
    worst = summary["hostile"]
    met = {
        "peak_rss_growth_mb": max(s["peak_rss_growth_mb"] for s in summary.values()) < TARGETS["peak_rss_growth_mb"],
        "healthz_p99_ms": max(s["healthz_p99_ms"] for s in summary.values()) < TARGETS["healthz_p99_ms"],
        "worst_case_max_latency_s": worst["request_max_latency_s"] < TARGETS["worst_case_max_latency_s"]
        and worst["request_failures"] == 0,
    }
    report = {
        "what": "top-k flood: the shipped model (k=50, distinct prefixes) against the worst model a job body "
                "allows (vocab 2, length 24, embedding and hidden 512, attention; 8-token binary prefixes, k in 1..50); "
                "fresh server per phase, phases alternated, medians over rounds",
        "hostile_model": HOSTILE,
        "settings": {"seconds": args.seconds, "rounds": args.rounds, "clients": args.clients,
                     "probe_interval_ms": PROBE_INTERVAL_S * 1000, "rss_sample_interval_ms": SAMPLE_INTERVAL_S * 1000,
                     "server": "python -m app, service defaults (SEQ2SEQ_DECODE_BUDGET 2e9, SEQ2SEQ_INLINE_BUDGET 2e7, "
                               "SEQ2SEQ_DECODE_TIMEOUT_S 10)"},
        "targets": TARGETS,
        "targets_met": met,
        "summary": summary,
        "phases": phases,
    }
    path = write("hostile", report)
    for kind, s in summary.items():
        print(f"{kind:8s} median peak RSS growth {s['peak_rss_growth_mb']} MB, /healthz p50 {s['healthz_p50_ms']} ms "
              f"p99 {s['healthz_p99_ms']} ms, {s['requests_per_s']} requests/s, max latency "
              f"{s['request_max_latency_s']} s, statuses {s['statuses']}, failures {s['request_failures']}")
    print("targets:", ", ".join(f"{k} < {TARGETS[k]}: {'met' if v else 'NOT met'}" for k, v in met.items()))
    print("written to", path)
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
