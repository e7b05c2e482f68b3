"""Load on loopback with wrk: /predict and /topk against do-nothing endpoints on the same server stack.

Each case runs for --seconds at --connections concurrency, the do-nothing endpoint right before the real
one, in the same run on the same server process (one uvicorn worker, the service's default settings).

  python bench/load.py [--seconds 10] [--connections 32]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile

import httpx
from common import ROOT, wait_ready, write

CASES = [
    # name, method, path, bodies or query strings, the endpoint to compare with, the ratio to meet
    ("predict_start_digits", "POST", "/predict", "start", "/noop", 0.8),
    ("predict_distinct_prefixes", "POST", "/predict", "distinct", "/noop", 0.5),
    ("topk_k5_start_digits", "GET", "/topk", "start", "/noop", 0.5),
    ("topk_k5_distinct_prefixes", "GET", "/topk", "distinct", "/noop", 0.5),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests_for(method: str, kind: str) -> list[str]:
    if kind == "start":
        prefixes = [[d] for d in range(10)]
    else:  # every prefix of length 3 and 4, shuffled: 11,000 distinct, more than a 10 s run sends
        prefixes = [[a, b, c] for a in range(10) for b in range(10) for c in range(10)]
        prefixes += [p + [d] for p in prefixes for d in range(10)]
        random.Random(0).shuffle(prefixes)
    if method == "POST":
        return [json.dumps({"prefix": p}) if len(p) > 1 else json.dumps({"start": p[0]}) for p in prefixes]
    return [f"prefix={','.join(map(str, p))}&k=5" for p in prefixes]


def lua_script(method: str, path: str, items: list[str]) -> str:
    quoted = ",".join(json.dumps(i) for i in items)
    return f"""
local items = {{{quoted}}}
local counter = 0
local offset = 0
function setup(thread) thread:set("offset", counter * math.floor(#items / 2)); counter = counter + 1 end
function init(args) offset = tonumber(wrk.thread:get("offset")) or 0 end
local i = 0
function request()
  i = i + 1
  local item = items[((i + offset) % #items) + 1]
  if "{method}" == "POST" then
    return wrk.format("POST", "{path}", {{["Content-Type"] = "application/json"}}, item)
  end
  return wrk.format("GET", "{path}?" .. item)
end
"""


def run_wrk(url: str, script: str, seconds: int, connections: int) -> dict:
    """One wrk run: req/s, p50 and p99, the requests, and the errors (non-2xx and socket errors, also apart)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", f.name, url],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def ms(label: str) -> float:
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = int(non2xx.group(1)) if non2xx else 0
    sockets = sum(map(int, socket_errors.groups())) if socket_errors else 0
    return {"rps": rps, "p50_ms": ms("50"), "p99_ms": ms("99"), "errors": non_2xx + sockets, "requests": total,
            "non_2xx": non_2xx, "socket_errors": sockets}


def metric(text: str, name: str, labels: str) -> float:
    m = re.search(rf"^{name}\{{{labels}\}} ([\d.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="seq2seq-bench-")
    env = {**os.environ, "SEQ2SEQ_PORT": str(port), "SEQ2SEQ_DATA_DIR": data_dir}
    server = subprocess.Popen([sys.executable, "bench/noop_server.py"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        report, ok = {"seconds": args.seconds, "connections": args.connections}, True
        for name, method, path, kind, noop, target in CASES:
            items = requests_for(method, kind)
            before = httpx.get(f"{base}/metrics").text
            baseline = run_wrk(base, lua_script(method, noop, items), args.seconds, args.connections)
            real = run_wrk(base, lua_script(method, path, items), args.seconds, args.connections)
            after = httpx.get(f"{base}/metrics").text
            hits = metric(after, "seq2seq_cache_total", 'result="hit"') - metric(before, "seq2seq_cache_total", 'result="hit"')
            misses = metric(after, "seq2seq_cache_total", 'result="miss"') - metric(before, "seq2seq_cache_total", 'result="miss"')
            row = {"noop": baseline, "real": real, "distinct_requests": len(items),
                   "throughput_ratio": round(real["rps"] / baseline["rps"], 3),
                   "p99_ratio": round(real["p99_ms"] / baseline["p99_ms"], 3),
                   "cache_hit_ratio": round(hits / max(hits + misses, 1), 3), "target_ratio": target}
            row["meets_target"] = row["throughput_ratio"] >= target and real["errors"] == 0 and (
                name != "predict_start_digits" or row["p99_ratio"] <= 1.5)
            ok &= row["meets_target"]
            report[name] = row
            print(f"{name:27s} noop {baseline['rps']:8.0f} rps p99 {baseline['p99_ms']:6.2f} ms | real {real['rps']:8.0f} rps "
                  f"p99 {real['p99_ms']:6.2f} ms errors {real['errors']} | ratio {row['throughput_ratio']} "
                  f"(target {target}) p99 ratio {row['p99_ratio']} cache hits {row['cache_hit_ratio']:.0%}", flush=True)
        print("written to", write("load", report))
        return 0 if ok else 1
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    sys.exit(main())
