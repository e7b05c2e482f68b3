"""Throughput beside TorchServe 0.12, in one run on one machine: /predict against /predictions/seq2seq.

TorchServe serves the shipped checkpoint with bench/torchserve_handler.py (our own model.checkpoint.load and
model.decoding.greedy on the batch TorchServe forms: batch size 64, max batch delay 2 ms, one worker and,
beside it, two, TorchServe's default on 2 cores; token auth and the model API off, no config snapshots).
Ours is `python -m app` with SEQ2SEQ_CACHE_SIZE=0 and SEQ2SEQ_WORKERS=1, then 2 (defaults otherwise).
All four servers run at once; wrk (c=32, 2 threads, 11,000 distinct 3-4 digit prefixes cycled from Lua)
loads one at a time, a short warm-up then --seconds measured, in alternating order for --rounds rounds.
Reported: medians of req/s and p99 per case, non-2xx and socket errors, and the ratios against the targets
(one process at least 1.4x the faster TorchServe, two at least 1.3x); beside them, the CPU time each server's
processes spent per request in the same runs (TorchServe's over ours: cpu_per_request_ratio), which this VM's
drift moves less than req/s, since one process of ours cannot use the second core however idle it is.

TorchServe lives in its own virtual environment (TS_VENV, default /tmp/ts-venv), created here when missing:
torchserve and torch-model-archiver 0.12, the project's torch version (CPU), pyyaml and numpy, which
TorchServe's Python worker imports.

Before the rounds each server gets --prewarm seconds of the same load (TorchServe's JVM kept speeding up for
several runs without it); after them py-spy samples ours_w1 under load for --profile seconds.

  python bench/torchserve.py [--seconds 10] [--warmup 3] [--rounds 3] [--connections 32] [--prewarm 20]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import torch
from common import ROOT, median, session_cpu_seconds, summarize_stacks, wait_ready, write
from load import free_port, lua_script, requests_for
from load import run_wrk as wrk

TS_VENV = Path(os.environ.get("TS_VENV", "/tmp/ts-venv"))
MODEL = "seq2seq"
TARGETS = {"ours_w2": 1.3, "ours_w1": 1.4}  # throughput ratio against TorchServe; ours_w2 also p99 no worse
CHECK_PREFIXES = [[7, 2], [1, 2, 3], [9, 9, 9, 9], [0, 5, 1], [3, 1, 4, 1], [4, 4, 0]]


def ensure_venv() -> str:
    if not (TS_VENV / "bin" / "torchserve").exists():
        print(f"creating {TS_VENV}", flush=True)
        subprocess.run(["python3", "-m", "venv", str(TS_VENV)], check=True)
        version = torch.__version__.split("+")[0]
        subprocess.run([str(TS_VENV / "bin" / "pip"), "install", "-q", "torchserve==0.12.*",
                        "torch-model-archiver==0.12.*", f"torch=={version}", "pyyaml", "numpy"], check=True)
    out = subprocess.run([str(TS_VENV / "bin" / "python"), "-c",
                          "import torch, importlib.metadata as m; print(torch.__version__, m.version('torchserve'))"],
                         capture_output=True, text=True, check=True).stdout.split()
    return f"torchserve {out[1]}, torch {out[0]}"


def archive(store: Path) -> None:
    subprocess.run([str(TS_VENV / "bin" / "torch-model-archiver"), "--model-name", MODEL, "--version", "1.0",
                    "--serialized-file", str(ROOT / "weights" / "default.pt"),
                    "--extra-files", str(ROOT / "weights" / "default.pt.sha256"),
                    "--handler", str(ROOT / "bench" / "torchserve_handler.py"),
                    "--export-path", str(store), "--force"], check=True)


def torchserve_healthy(r: httpx.Response) -> bool:
    """TorchServe's /ping names its state in the body, and some versions answer 200 while "Unhealthy"."""
    return r.status_code == 200 and r.json().get("status") == "Healthy"


class Server:
    def __init__(self, name: str, cmd: list[str], env: dict, cwd: Path, url: str, path: str,
                 ready_path: str = "/readyz", ready=None):
        self.name, self.url, self.path = name, url, path
        self.ready_path, self.ready = ready_path, ready
        self.log = cwd / f"{name}.log"
        # Its own process group, so that stopping it reaches TorchServe's Java frontend and Python workers,
        # or uvicorn's worker processes, and nothing else. The child keeps its own copy of the log's descriptor.
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def cpu(self) -> float:
        """CPU seconds of every process in the server's session (TorchServe's frontend and workers, uvicorn's
        processes; start_new_session made the launcher's pid its id), so a run's CPU per request counts all of
        it; wrk is not in it."""
        return session_cpu_seconds(self.proc.pid)

    def predict(self, prefix: list[int]) -> dict:
        r = httpx.post(self.url + self.path, json={"prefix": prefix}, timeout=10)
        r.raise_for_status()
        return r.json()

    def wait(self, timeout: float = 120) -> None:
        wait_ready(self.url, timeout, path=self.ready_path, ready=self.ready, proc=self.proc, log=self.log,
                   interval=0.25)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # TorchServe's frontend may outlive the launcher briefly
            os.killpg(self.proc.pid, signal.SIGKILL)


def torchserve(name: str, workers: int, work: Path, store: Path) -> Server:
    home = work / name
    (home / "tmp").mkdir(parents=True)  # TorchServe's pid file and worker sockets: one set per instance
    ports = [free_port() for _ in range(5)]
    models = {MODEL: {"1.0": {"defaultVersion": True, "marName": f"{MODEL}.mar", "minWorkers": workers,
                              "maxWorkers": workers, "batchSize": 64, "maxBatchDelay": 2, "responseTimeout": 120}}}
    (home / "config.properties").write_text("\n".join([
        f"inference_address=http://127.0.0.1:{ports[0]}", f"management_address=http://127.0.0.1:{ports[1]}",
        f"metrics_address=http://127.0.0.1:{ports[2]}", f"grpc_inference_port={ports[3]}",
        f"grpc_management_port={ports[4]}", "disable_token_authorization=true",
        "enable_model_api=false", f"model_store={store}", f"load_models={MODEL}.mar",
        f"models={json.dumps(models)}", ""]))
    env = {**os.environ, "PATH": f"{TS_VENV / 'bin'}:{os.environ['PATH']}", "SEQ2SEQ_REPO": str(ROOT),
           "PYTHONPATH": str(ROOT), "LOG_LOCATION": str(home / "logs"), "METRICS_LOCATION": str(home / "logs"),
           "TS_TORCH_THREADS": "1", "TEMP": str(home / "tmp"), "TMPDIR": str(home / "tmp")}
    cmd = [str(TS_VENV / "bin" / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
           "--ts-config", str(home / "config.properties"), "--model-store", str(store)]
    return Server(name, cmd, env, work, f"http://127.0.0.1:{ports[0]}", f"/predictions/{MODEL}", "/ping",
                  torchserve_healthy)


def ours(name: str, workers: int, work: Path) -> Server:
    port = free_port()
    env = {**os.environ, "SEQ2SEQ_HOST": "127.0.0.1", "SEQ2SEQ_PORT": str(port), "SEQ2SEQ_CACHE_SIZE": "0",
           "SEQ2SEQ_API_KEY": "bench-management-key-0123456789abcdef", "SEQ2SEQ_WORKERS": str(workers), "SEQ2SEQ_DATA_DIR": str(work / name),
           "PYTHONPATH": str(ROOT)}
    return Server(name, [sys.executable, "-m", "app"], env, work, f"http://127.0.0.1:{port}", "/predict")


def profile(server: Server, items: list[str], args) -> dict:
    """py-spy (from the TorchServe venv) on ours_w1's one process while wrk loads it: where the time goes."""
    spy = TS_VENV / "bin" / "py-spy"
    if not spy.exists():
        subprocess.run([str(TS_VENV / "bin" / "pip"), "install", "-q", "py-spy"], check=True)
    out = Path(tempfile.mkdtemp(prefix="seq2seq-spy-")) / "stacks.txt"
    rec = subprocess.Popen([str(spy), "record", "-p", str(server.proc.pid), "-d", str(args.profile), "-r", "200",
                            "--format", "raw", "-o", str(out), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load = wrk(server.url, lua_script("POST", server.path, items), args.profile, args.connections)
    rec.wait(timeout=60)
    return {"seconds": args.profile, "load": load, **summarize_stacks(out),
            "note": "fractions of all samples of the process's active threads (py-spy without --idle)"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--prewarm", type=int, default=20, help="seconds of load on each server before the rounds "
                        "(TorchServe's JVM keeps speeding up for a while)")
    parser.add_argument("--profile", type=int, default=10, help="seconds of py-spy on ours_w1 under load (0: none)")
    args = parser.parse_args()
    versions = ensure_venv()
    work = Path(tempfile.mkdtemp(prefix="seq2seq-ts-"))
    store = work / "store"
    store.mkdir()
    archive(store)
    servers = [torchserve("torchserve_w1", 1, work, store), torchserve("torchserve_w2", 2, work, store),
               ours("ours_w1", 1, work), ours("ours_w2", 2, work)]
    try:
        for s in servers:
            s.wait()
        # Correctness: the same sequences (and scores) from both, for a few prefixes.
        checks = []
        for p in CHECK_PREFIXES:
            a, b = servers[0].predict(p), servers[2].predict(p)
            checks.append({"prefix": p, "torchserve": a["sequence"], "ours": b["sequence"],
                           "same_sequence": a["sequence"] == b["sequence"],
                           "score_diff": abs(a["score"] - b["score"])})
        same = all(c["same_sequence"] and c["score_diff"] < 1e-4 for c in checks)
        print("answers agree:", same, flush=True)
        items = requests_for("POST", "distinct")
        runs: dict[str, list[dict]] = {s.name: [] for s in servers}
        prewarm = {}
        for s in servers:
            prewarm[s.name] = wrk(s.url, lua_script("POST", s.path, items), args.prewarm, args.connections)
            print(f"prewarm {s.name:14s} {prewarm[s.name]['rps']:8.0f} req/s", flush=True)
        for r in range(args.rounds):
            order = servers if r % 2 == 0 else servers[::-1]  # alternate, so no case always runs first or last
            for s in order:
                script = lua_script("POST", s.path, items)
                wrk(s.url, script, args.warmup, args.connections)
                cpu0 = s.cpu()
                res = wrk(s.url, script, args.seconds, args.connections)
                res["cpu_s"] = round(s.cpu() - cpu0, 2)
                res["cpu_us_per_request"] = round(res["cpu_s"] / max(res["requests"], 1) * 1e6, 1)
                runs[s.name].append(res)
                print(f"round {r + 1} {s.name:14s} {res['rps']:8.0f} req/s p50 {res['p50_ms']:7.2f} ms "
                      f"p99 {res['p99_ms']:7.2f} ms non-2xx {res['non_2xx']} socket errors {res['socket_errors']} "
                      f"CPU {res['cpu_us_per_request']:6.1f} us a request", flush=True)
        summary = {name: {"rps_median": median(x["rps"] for x in rs), "p99_ms_median": median(x["p99_ms"] for x in rs),
                          "p50_ms_median": median(x["p50_ms"] for x in rs),
                          "cpu_us_per_request_median": median(x["cpu_us_per_request"] for x in rs),
                          "non_2xx": sum(x["non_2xx"] for x in rs), "socket_errors": sum(x["socket_errors"] for x in rs)}
                   for name, rs in runs.items()}
        best_ts = max(("torchserve_w1", "torchserve_w2"), key=lambda n: summary[n]["rps_median"])
        errors = sum(v["non_2xx"] + v["socket_errors"] for v in summary.values())
        targets = {}
        for name, ratio in TARGETS.items():
            row = {"throughput_ratio_target": ratio}
            for ts in ("torchserve_w1", "torchserve_w2"):
                row[f"vs_{ts}"] = {"throughput_ratio": round(summary[name]["rps_median"] / summary[ts]["rps_median"], 3),
                                   "throughput_ratio_per_round": [round(a["rps"] / b["rps"], 3)
                                                                  for a, b in zip(runs[name], runs[ts])],
                                   "cpu_per_request_ratio": round(summary[ts]["cpu_us_per_request_median"]
                                                                  / summary[name]["cpu_us_per_request_median"], 3),
                                   "p99_ratio": round(summary[name]["p99_ms_median"] / summary[ts]["p99_ms_median"], 3)}
            against = row[f"vs_{best_ts}"]
            row["against"] = best_ts + " (the faster TorchServe configuration)"
            row["met"] = (against["throughput_ratio"] >= ratio and errors == 0
                          and (name != "ours_w2" or against["p99_ratio"] <= 1.0))
            targets[name] = row
        for name, row in targets.items():
            print(f"{name}: {row}", flush=True)
        report = {
            "what": "POST /predict (ours, cache off) vs POST /predictions/seq2seq (TorchServe, custom handler on "
                    "model.decoding.greedy), wrk -t2 on 127.0.0.1, distinct 3-4 digit prefixes",
            "note": "2 cores shared by the servers, wrk and other engineers' work on this machine: absolute "
                    "figures are noisy and the load generator takes CPU from the servers; compare the ratios "
                    "of cases measured in the same run.",
            "torchserve": versions + f" in {TS_VENV}; batchSize 64, maxBatchDelay 2 ms, workers 1 and 2, "
                          "1 torch thread per worker, --ncs --disable-token-auth, model API off, default logging",
            "ours": "python -m app, SEQ2SEQ_CACHE_SIZE=0, SEQ2SEQ_API_KEY=bench-management-key-0123456789abcdef, SEQ2SEQ_WORKERS 1 and 2, defaults "
                    "otherwise (1 torch thread, batch 64, 2 ms)",
            "seconds": args.seconds, "warmup_seconds": args.warmup, "rounds": args.rounds,
            "connections": args.connections, "distinct_requests": len(items),
            "answers_agree": same, "answer_checks": checks, "summary": summary, "targets": targets,
            "errors_total": errors, "all_targets_met": all(t["met"] for t in targets.values()) and same,
            "runs": runs,
        }
        report["prewarm"] = {"seconds": args.prewarm, "runs": prewarm}
        if args.profile:
            report["profile_ours_w1"] = profile(servers[2], items, args)
        print("written to", write("torchserve", report))
        return 0 if report["all_targets_met"] else 1
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    sys.exit(main())
