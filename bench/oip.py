"""The Open Inference Protocol beside MLServer 1.7, in one run on one machine, same protocol, same payloads.

MLServer (Seldon's server, OIP v2) serves the shipped checkpoint with bench/mlserver_runtime.py (our own
model.checkpoint.load and model.decoding.greedy), with parallel_workers 0 (its parallel pool fails to start on this
machine: "There is no current event loop") and adaptive batching 64 / 2 ms, debug off, defaults otherwise. Ours is
`python -m app`, one process, SEQ2SEQ_CACHE_SIZE=0 (MLServer keeps no cache), defaults otherwise (batch 64, 2 ms).

wrk (c=32, 2 threads) sends single-row infer requests, the same JSON bodies to both, one 4-digit prefix each from
10,000 distinct ones cycled from Lua (one length: MLServer's batcher concatenates requests along the first axis),
to MLServer's /v2/models/seq2seq/infer, our /v2/models/production/infer and, with the same prefixes, our /predict;
a warm-up then --seconds measured, one case at a time in alternating order for --rounds rounds. Reported: medians of
req/s and p99, non-2xx and socket errors, the ratios against the targets (ours /v2 at least 3x MLServer and at least
0.9x our /predict), and answers checked equal first.

Then tritonclient[http] against ours: --batches requests of 1,024 rows each (4-digit prefixes), binary tensors
(tritonclient's default) against JSON tensors, alternating, sequentially from one client; with the cache off
(decoding included) and on (answers from the cache: the encodings' cost alone). Reported: median and p90 latency,
rows/s, and the bytes each way.

MLServer lives in its own virtual environment (MLSERVER_VENV, default /tmp/mlserver-venv), created here when missing:
mlserver 1.7 and the project's torch version (CPU).

  python bench/oip.py [--seconds 10] [--warmup 3] [--rounds 3] [--connections 32] [--batches 40]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
import tritonclient.http as triton
from common import ROOT, median, write
from load import free_port, lua_script
from load import run_wrk as wrk
from torchserve import Server

MLSERVER_VENV = Path(os.environ.get("MLSERVER_VENV", "/tmp/mlserver-venv"))
MODEL = "seq2seq"
KEY = "bench-management-key-0123456789abcdef"
TARGETS = {"vs_mlserver": 3.0, "vs_ours_predict": 0.9}  # ours /v2 infer's throughput over each
CHECK_PREFIXES = [[7, 2, 8, 4], [1, 2, 3, 4], [9, 9, 9, 9], [0, 5, 1, 2], [3, 1, 4, 1], [4, 4, 0, 0]]
ROWS = 1024


def ensure_venv() -> str:
    if not (MLSERVER_VENV / "bin" / "mlserver").exists():
        print(f"creating {MLSERVER_VENV}", flush=True)
        subprocess.run(["python3", "-m", "venv", str(MLSERVER_VENV)], check=True)
        version = torch.__version__.split("+")[0]
        subprocess.run([str(MLSERVER_VENV / "bin" / "pip"), "install", "-q", "mlserver==1.7.*", f"torch=={version}"],
                       check=True)
    out = subprocess.run([str(MLSERVER_VENV / "bin" / "python"), "-c",
                          "import torch, importlib.metadata as m; print(torch.__version__, m.version('mlserver'))"],
                         capture_output=True, text=True, check=True).stdout.split()
    return f"mlserver {out[1]}, torch {out[0]}"


def oip_body(prefixes: list[list[int]]) -> str:
    return json.dumps({"inputs": [{"name": "prefix", "datatype": "INT64", "shape": [len(prefixes), len(prefixes[0])],
                                   "data": [t for p in prefixes for t in p]}]})


def distinct_prefixes() -> list[list[int]]:
    prefixes = [[a, b, c, d] for a in range(10) for b in range(10) for c in range(10) for d in range(10)]
    random.Random(0).shuffle(prefixes)
    return prefixes


def mlserver(work: Path) -> Server:
    home = work / "mlserver"
    (home / "model").mkdir(parents=True)
    ports = [free_port() for _ in range(3)]
    (home / "settings.json").write_text(json.dumps({
        "debug": False, "parallel_workers": 0, "host": "127.0.0.1", "http_port": ports[0], "grpc_port": ports[1],
        "metrics_port": ports[2]}))
    (home / "model" / "model-settings.json").write_text(json.dumps({
        "name": MODEL, "implementation": "mlserver_runtime.Seq2SeqRuntime", "max_batch_size": 64,
        "max_batch_time": 0.002, "parameters": {"uri": str(ROOT / "weights" / "default.pt"), "version": "default"}}))
    env = {**os.environ, "PATH": f"{MLSERVER_VENV / 'bin'}:{os.environ['PATH']}", "SEQ2SEQ_REPO": str(ROOT),
           "PYTHONPATH": f"{ROOT / 'bench'}:{ROOT}", "MLSERVER_TORCH_THREADS": "1"}
    return Server("mlserver", [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(home)], env, work,
                  f"http://127.0.0.1:{ports[0]}", f"/v2/models/{MODEL}/infer", f"/v2/models/{MODEL}/ready")


def ours(name: str, work: Path, cache: bool) -> Server:
    port = free_port()
    env = {**os.environ, "SEQ2SEQ_HOST": "127.0.0.1", "SEQ2SEQ_PORT": str(port), "SEQ2SEQ_API_KEY": KEY,
           "SEQ2SEQ_WORKERS": "1", "SEQ2SEQ_DATA_DIR": str(work / name), "SEQ2SEQ_LOG_LEVEL": "warning",
           "SEQ2SEQ_JOB_WORKERS": "0", "PYTHONPATH": str(ROOT), **({} if cache else {"SEQ2SEQ_CACHE_SIZE": "0"})}
    return Server(name, [sys.executable, "-m", "app"], env, work, f"http://127.0.0.1:{port}",
                  "/v2/models/production/infer")


def infer_json(url: str, path: str, prefix: list[int]) -> dict:
    r = httpx.post(url + path, content=oip_body([prefix]), headers={"content-type": "application/json"}, timeout=10)
    r.raise_for_status()
    outputs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    return {"sequence": outputs["sequence"], "probability": outputs["probability"][0]}


def check_answers(theirs: Server, ours_server: Server) -> tuple[bool, list[dict]]:
    """The same sequence and probability from MLServer's infer, our infer and our /predict."""
    checks = []
    for p in CHECK_PREFIXES:
        a, b = infer_json(theirs.url, theirs.path, p), infer_json(ours_server.url, ours_server.path, p)
        c = httpx.post(ours_server.url + "/predict", json={"prefix": p}, timeout=10).json()
        checks.append({"prefix": p, "mlserver": a["sequence"], "ours_v2": b["sequence"], "ours_predict": c["sequence"],
                       "same_sequence": a["sequence"] == b["sequence"] == c["sequence"],
                       "probability_diff": max(abs(a["probability"] - b["probability"]),
                                               abs(b["probability"] - c["probability"]))})
    return all(c["same_sequence"] and c["probability_diff"] < 1e-4 for c in checks), checks


def encodings(server: Server, batches: int) -> dict:
    """tritonclient, 1,024-row requests, binary tensors against JSON tensors, alternating on one client."""
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"), connection_timeout=60,
                                          network_timeout=60)
    pool = np.array(distinct_prefixes(), dtype=np.int64)
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"binary": [], "json": []}
    sizes: dict[str, dict] = {}
    for i in range(batches + 2):  # the first two are a warm-up
        data = pool[rng.choice(len(pool), ROWS, replace=False)]
        for kind in (("binary", "json") if i % 2 == 0 else ("json", "binary")):
            binary = kind == "binary"
            tensor = triton.InferInput("prefix", [ROWS, 4], "INT64")
            tensor.set_data_from_numpy(data, binary_data=binary)
            outputs = [triton.InferRequestedOutput(o, binary_data=binary) for o in ("sequence", "probability")]
            start = time.perf_counter()
            result = client.infer("production", [tensor], outputs=outputs)
            result.as_numpy("sequence"), result.as_numpy("probability")
            elapsed = time.perf_counter() - start
            if i >= 2:
                times[kind].append(elapsed)
            if kind not in sizes:
                body, json_size = triton._utils._get_inference_request(  # what tritonclient sends, measured
                    [tensor], "", outputs, 0, False, False, 0, None, None)
                sizes[kind] = {"request_bytes": len(body), "json_head_bytes": json_size or len(body)}
                raw = httpx.post(server.url + "/v2/models/production/infer", content=body, timeout=60, headers=(
                    {"Inference-Header-Content-Length": str(json_size)} if json_size else {}))
                sizes[kind]["response_bytes"] = len(raw.content)
    client.close()
    out = {}
    for kind, values in times.items():
        ms = sorted(v * 1000 for v in values)
        out[kind] = {"median_ms": round(statistics.median(ms), 2), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 2),
                     "rows_per_s": round(ROWS / statistics.median(values)), **sizes[kind]}
    out["json_over_binary_latency"] = round(out["json"]["median_ms"] / out["binary"]["median_ms"], 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batches", type=int, default=40, help="1,024-row requests per encoding")
    args = parser.parse_args()
    versions = ensure_venv()
    work = Path(tempfile.mkdtemp(prefix="seq2seq-oip-"))
    theirs, ours_off, ours_on = mlserver(work), ours("ours", work, cache=False), ours("ours_cached", work, cache=True)
    servers = [theirs, ours_off, ours_on]
    try:
        for s in servers:
            s.wait()
        same, checks = check_answers(theirs, ours_off)
        print("answers agree:", same, flush=True)
        prefixes = distinct_prefixes()
        oip_items = [oip_body([p]) for p in prefixes]
        cases = {"mlserver_v2_infer": (theirs, theirs.path, oip_items),
                 "ours_v2_infer": (ours_off, ours_off.path, oip_items),
                 "ours_predict": (ours_off, "/predict", [json.dumps({"prefix": p}) for p in prefixes])}
        runs: dict[str, list[dict]] = {name: [] for name in cases}
        names = list(cases)
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                server, path, items = cases[name]
                script = lua_script("POST", path, items)
                wrk(server.url, script, args.warmup, args.connections)
                res = wrk(server.url, script, args.seconds, args.connections)
                runs[name].append(res)
                print(f"round {r + 1} {name:18s} {res['rps']:8.0f} req/s p50 {res['p50_ms']:7.2f} ms "
                      f"p99 {res['p99_ms']:7.2f} ms non-2xx {res['non_2xx']} socket errors {res['socket_errors']}",
                      flush=True)
        summary = {name: {"rps_median": median(x["rps"] for x in rs), "p50_ms_median": median(x["p50_ms"] for x in rs),
                          "p99_ms_median": median(x["p99_ms"] for x in rs),
                          "non_2xx": sum(x["non_2xx"] for x in rs), "socket_errors": sum(x["socket_errors"] for x in rs)}
                   for name, rs in runs.items()}
        errors = sum(v["non_2xx"] + v["socket_errors"] for v in summary.values())
        v2 = summary["ours_v2_infer"]["rps_median"]
        ratios = {"vs_mlserver": round(v2 / summary["mlserver_v2_infer"]["rps_median"], 3),
                  "vs_ours_predict": round(v2 / summary["ours_predict"]["rps_median"], 3)}
        targets = {name: {"target": target, "ratio": ratios[name], "met": ratios[name] >= target and errors == 0}
                   for name, target in TARGETS.items()}
        print("targets:", targets, flush=True)
        encoding = {"cache_off": encodings(ours_off, args.batches), "cache_on": encodings(ours_on, args.batches)}
        print("tritonclient, 1,024 rows:", json.dumps(encoding), flush=True)
        report = {
            "what": "single-row OIP infer: MLServer's /v2/models/seq2seq/infer (custom runtime on model.decoding.greedy) "
                    "against our /v2/models/production/infer and our /predict, same prefixes, wrk -t2 on 127.0.0.1; "
                    "then tritonclient binary against JSON tensors for 1,024-row requests",
            "note": "2 cores shared by the servers, wrk and other engineers' work on this machine: absolute figures "
                    "are noisy and the load generator takes CPU from the servers; compare the ratios of cases "
                    "measured in the same run.",
            "mlserver": versions + f" in {MLSERVER_VENV}; parallel_workers 0, adaptive batching max_batch_size 64, "
                                   "max_batch_time 2 ms, debug off, 1 torch thread, defaults otherwise",
            "ours": f"python -m app, one process, SEQ2SEQ_CACHE_SIZE=0, SEQ2SEQ_API_KEY={KEY}, SEQ2SEQ_JOB_WORKERS=0, "
                    "defaults otherwise (1 torch thread, batch 64, 2 ms)",
            "requests": "one 4-digit prefix a request, 10,000 distinct, cycled; JSON tensors "
                        "(MLServer does not take Triton's binary extension)",
            "seconds": args.seconds, "warmup_seconds": args.warmup, "rounds": args.rounds,
            "connections": args.connections, "distinct_requests": len(prefixes),
            "answers_agree": same, "answer_checks": checks, "summary": summary, "ratios": ratios, "targets": targets,
            "errors_total": errors, "all_targets_met": all(t["met"] for t in targets.values()) and same,
            "tritonclient_1024_rows": {"requests_per_encoding": args.batches, "rows": ROWS, **encoding},
            "runs": runs,
        }
        print("written to", write("oip", report))
        return 0 if report["all_targets_met"] else 1
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    sys.exit(main())
