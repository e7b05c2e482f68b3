"""The cluster shape beside TorchServe 0.12, in one run on one machine: nginx (deploy/nginx.conf, rendered by
deploy/render_nginx_conf.py for local ports) in front of 1, 2 and 3 serving processes, against TorchServe.

Ours: three `python -m app` processes on free ports, each SEQ2SEQ_WORKERS=1, SEQ2SEQ_JOB_WORKERS=0,
SEQ2SEQ_CACHE_SIZE=0, SEQ2SEQ_API_KEY=bench-management-key-0123456789abcdef, one shared SQLite database (SEQ2SEQ_DATABASE_URL) and a data
directory each. Three nginx instances run beside them (Debian's nginx, the shipped configuration with only the
upstream servers, the listen address and the runtime directory substituted): n1 in front of the first process,
n2 the first two, n3 all three. Only the one under load does any work.
TorchServe: bench/torchserve.py's setup with 1 worker (its better configuration in earlier runs), batch size
64, max batch delay 2 ms; measured direct (ts) and, for fairness, through a fourth nginx with TorchServe as its
one upstream (ts_nginx: POST /predictions/seq2seq goes through the config's `location /`).

Load: wrk c=32, 2 threads, 11,000 distinct 3-4 digit prefixes cycled from Lua (bench/load.py's script, as
bench/torchserve.py uses it). Each target gets --prewarm seconds first; then --rounds rounds, cases in
alternating order, each a --warmup then --seconds measured. Reported: medians of req/s and p99, non-2xx and
socket errors, the ratios against TorchServe, and how the requests spread over our processes (their /metrics).

  python bench/cluster.py [--seconds 10] [--warmup 3] [--rounds 2] [--connections 32] [--prewarm 15]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from common import ROOT, median, write
from load import free_port, lua_script, requests_for
from torchserve import CHECK_PREFIXES, MODEL, TS_VENV, Server, archive, ensure_venv, torchserve, wrk

_spec = importlib.util.spec_from_file_location("render_nginx_conf", ROOT / "deploy" / "render_nginx_conf.py")
render_nginx_conf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_nginx_conf)
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PROCESSES = 3


def ours(name: str, work: Path, database_url: str) -> Server:
    port = free_port()
    env = {**os.environ, "SEQ2SEQ_HOST": "127.0.0.1", "SEQ2SEQ_PORT": str(port), "SEQ2SEQ_CACHE_SIZE": "0",
           "SEQ2SEQ_API_KEY": "bench-management-key-0123456789abcdef", "SEQ2SEQ_WORKERS": "1", "SEQ2SEQ_JOB_WORKERS": "0",
           "SEQ2SEQ_DATABASE_URL": database_url, "SEQ2SEQ_DATA_DIR": str(work / name), "PYTHONPATH": str(ROOT)}
    return Server(name, [sys.executable, "-m", "app"], env, work, f"http://127.0.0.1:{port}", "/predict")


class Nginx(Server):
    """deploy/nginx.conf rendered for `upstreams`, on a free port, in its own runtime directory."""

    def __init__(self, name: str, upstreams: list[str], work: Path, path: str, behind: Server):
        runtime = work / name
        runtime.mkdir(parents=True)
        port = free_port()
        conf = runtime / "nginx.conf"
        conf.write_text(render_nginx_conf.render(upstreams, f"127.0.0.1:{port}", runtime))
        # The access log goes to stdout (as in compose); it is written to the log file, as a container's would be.
        # Ready once the upstream's own readiness check answers through it: listening and proxying.
        super().__init__(name, [NGINX, "-p", str(runtime), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
                         dict(os.environ), work, f"http://127.0.0.1:{port}", path, behind.ready_path, behind.ready)
        self.port, self.upstreams = port, upstreams


def predict_count(server: Server) -> float:
    """POST /predict answered 200 by one of our processes so far, from its /metrics."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if (line.startswith("seq2seq_requests_total{") and 'route="/predict"' in line and 'method="POST"' in line
                and 'status="200"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--prewarm", type=int, default=15, help="seconds of load on each target before the rounds")
    args = parser.parse_args()
    versions = ensure_venv()
    nginx_version = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    work = Path(tempfile.mkdtemp(prefix="seq2seq-cluster-"))
    store = work / "store"
    store.mkdir()
    archive(store)
    database_url = f"sqlite:///{work / 'shared.db'}"
    ts = torchserve("torchserve_w1", 1, work, store)
    backends = [ours(f"ours_{i + 1}", work, database_url) for i in range(PROCESSES)]
    started: list[Server] = [ts, *backends]
    try:
        ts.wait()
        for b in backends:  # one at a time: the first creates the shared database's schema
            b.wait()
        addresses = [b.url.removeprefix("http://") for b in backends]
        targets: dict[str, Server] = {"ts": ts, "ts_nginx": Nginx("ts_nginx", [ts.url.removeprefix("http://")], work,
                                                                  ts.path, ts)}
        for n in range(1, PROCESSES + 1):
            targets[f"n{n}"] = Nginx(f"n{n}", addresses[:n], work, "/predict", backends[0])
        started += [t for t in targets.values() if isinstance(t, Nginx)]
        for t in targets.values():
            t.wait()

        # Correctness: the same sequences (and scores) from TorchServe and through every nginx.
        checks, same = [], True
        for p in CHECK_PREFIXES:
            row = {"prefix": p}
            want = ts.predict(p)
            for name, t in targets.items():
                got = t.predict(p)
                row[name] = got["sequence"]
                same &= got["sequence"] == want["sequence"] and abs(got["score"] - want["score"]) < 1e-4
            checks.append(row)
        print("answers agree:", same, flush=True)

        items = requests_for("POST", "distinct")
        scripts = {name: lua_script("POST", t.path, items) for name, t in targets.items()}
        prewarm = {}
        for name, t in targets.items():
            prewarm[name] = wrk(t.url, scripts[name], args.prewarm, args.connections)
            print(f"prewarm {name:9s} {prewarm[name]['rps']:8.0f} req/s", flush=True)

        runs: dict[str, list[dict]] = {name: [] for name in targets}
        order = list(targets)
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):  # alternate: no case always first or last
                t = targets[name]
                wrk(t.url, scripts[name], args.warmup, args.connections)
                before = [predict_count(b) for b in backends]
                res = wrk(t.url, scripts[name], args.seconds, args.connections)
                after = [predict_count(b) for b in backends]
                served = [int(a - b) for a, b in zip(after, before)]
                if name.startswith("n"):
                    res["per_process"] = served
                elif any(served):
                    raise RuntimeError(f"our processes answered {served} during {name}")
                runs[name].append(res)
                spread = f" per process {served}" if name.startswith("n") else ""
                print(f"round {r + 1} {name:9s} {res['rps']:8.0f} req/s p50 {res['p50_ms']:7.2f} ms p99 "
                      f"{res['p99_ms']:7.2f} ms non-2xx {res['non_2xx']} socket errors {res['socket_errors']}{spread}",
                      flush=True)

        summary = {name: {"rps_median": median(x["rps"] for x in rs), "p50_ms_median": median(x["p50_ms"] for x in rs),
                          "p99_ms_median": median(x["p99_ms"] for x in rs),
                          "non_2xx": sum(x["non_2xx"] for x in rs), "socket_errors": sum(x["socket_errors"] for x in rs)}
                   for name, rs in runs.items()}
        for name, rs in runs.items():
            if name.startswith("n"):
                totals = [sum(x["per_process"][i] for x in rs) for i in range(PROCESSES)]
                summary[name]["requests_per_process"] = totals[:int(name[1:])]
        ratios = {}
        for name in targets:
            if not name.startswith("n"):
                continue
            ratios[name] = {f"vs_{ts_case}": {
                "throughput_ratio": round(summary[name]["rps_median"] / summary[ts_case]["rps_median"], 3),
                "p99_ratio": round(summary[name]["p99_ms_median"] / summary[ts_case]["p99_ms_median"], 3)}
                for ts_case in ("ts", "ts_nginx")}
        ratios["ts_nginx_vs_ts"] = {
            "throughput_ratio": round(summary["ts_nginx"]["rps_median"] / summary["ts"]["rps_median"], 3),
            "p99_ratio": round(summary["ts_nginx"]["p99_ms_median"] / summary["ts"]["p99_ms_median"], 3)}
        for name, row in ratios.items():
            print(f"{name}: {row}", flush=True)
        errors = sum(v["non_2xx"] + v["socket_errors"] for v in summary.values())
        report = {
            "what": "throughput and p99 through nginx (deploy/nginx.conf) with 1, 2 and 3 serving processes behind "
                    "it (n1, n2, n3: POST /predict, cache off), beside TorchServe direct (ts) and through the same "
                    "nginx with TorchServe as its one upstream (ts_nginx: POST /predictions/seq2seq); wrk -t2 on "
                    "127.0.0.1, distinct 3-4 digit prefixes",
            "note": "On 2 cores the load generator (wrk, 2 threads), nginx (2 worker processes) and all the serving "
                    "processes compete for the same two cores, beside other work on this shared machine; one "
                    "serving process already keeps about a core busy, so more processes cannot add throughput here "
                    "and mostly add scheduling and context switches. The point of n2 and n3 is that nginx + N "
                    "processes work under load (0 errors, requests spread over all of them) and what nginx and the "
                    "extra processes cost; scaling out needs cores (or machines) per process. Compare ratios of "
                    "cases in the same run, not absolute figures across runs.",
            "torchserve": versions + f" in {TS_VENV}; batchSize 64, maxBatchDelay 2 ms, 1 worker, 1 torch thread, "
                          "--ncs --disable-token-auth, model API off, default logging",
            "ours": f"{PROCESSES} x python -m app, SEQ2SEQ_WORKERS=1, SEQ2SEQ_JOB_WORKERS=0, SEQ2SEQ_CACHE_SIZE=0, "
                    "SEQ2SEQ_API_KEY=bench-management-key-0123456789abcdef, one shared SQLite database (SEQ2SEQ_DATABASE_URL), a data directory each, "
                    "defaults otherwise (1 torch thread, batch 64, 2 ms)",
            "nginx": f"{nginx_version}; deploy/nginx.conf rendered by deploy/render_nginx_conf.py (upstream servers, "
                     "listen address and runtime directory substituted; worker_processes auto, upstream keepalive 32, "
                     "access log on, written to a file); one nginx per case, all running, only the one under load busy",
            "seconds": args.seconds, "warmup_seconds": args.warmup, "rounds": args.rounds,
            "connections": args.connections, "distinct_requests": len(items), "model": MODEL,
            "answers_agree": same, "answer_checks": checks, "summary": summary, "ratios": ratios,
            "errors_total": errors, "runs": runs, "prewarm": {"seconds": args.prewarm, "runs": prewarm},
        }
        print("written to", write("cluster", report))
        return 0 if errors == 0 and same else 1
    finally:
        for s in reversed(started):
            s.stop()


if __name__ == "__main__":
    sys.exit(main())
