"""Load on loopback with wrk: our /predict and /topk against the ceiling, a bare ASGI app (bench/ceiling.py)
under the same uvicorn settings that reads each body and answers one of our own answers, byte for byte as long.

The ceiling bounds what our hot path can reach on this server stack. Beside it, the framework's floor (the same
answer from a lean route inside a FastAPI app, bench/ceiling.py CEILING_FRAMEWORK=fastapi) shows how much of the
gap a hot route kept inside the app's router pays before any work of ours. Every case loads ours, the ceiling and
the floor with the same wrk script in the same run (2 threads, --connections, a --warmup run then --seconds
measured, the three in rotating order for --rounds rounds) and reports medians of req/s and p99,
ratio_to_bare_asgi (ours over the ceiling), floor_ratio_to_bare_asgi and ratio_to_framework_floor. Ours is
`python -m app`, one process, the service's defaults, log level warning: with SEQ2SEQ_CACHE_SIZE=0 for distinct
3-4 digit prefixes (the measurement with a target: at least 0.4 of the ceiling), with the cache on for the
start-digit cases (answered from the cache; reported only).

  python bench/load.py [--seconds 10] [--warmup 2] [--rounds 3] [--connections 32] [--cases a,b]
  python bench/load.py --profile 10     # also: py-spy on ours under each targeted case's load -> load_profile.json

py-spy is not a project dependency: `.venv/bin/pip install py-spy` (it needs ptrace rights: root, or
kernel.yama.ptrace_scope 0); without it --profile says so and the rest runs.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from common import ROOT, median, py_spy, summarize_stacks, wait_ready, write

TARGET = 0.4  # ours / bare ASGI, one process, cache off, distinct prefixes
CASES = [
    # name, method, path, requests, served by the cache, target ratio to the bare ASGI app (None: reported only)
    ("predict_distinct_prefixes", "POST", "/predict", "distinct", False, TARGET),
    ("topk_k5_distinct_prefixes", "GET", "/topk", "distinct", False, TARGET),
    ("predict_start_digits", "POST", "/predict", "start", True, None),
    ("topk_k5_start_digits", "GET", "/topk", "start", True, None),
]
SAMPLE = 64  # answers of ours read to size the ceiling's body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests_for(method: str, kind: str) -> list[str]:
    if kind == "start":
        prefixes = [[d] for d in range(10)]
    else:  # every prefix of length 3 and 4, shuffled: 11,000 distinct, more than a 10 s run sends
        prefixes = [[a, b, c] for a in range(10) for b in range(10) for c in range(10)]
        prefixes += [[*p, d] for p in prefixes for d in range(10)]
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


def pinned(cpus: str | None) -> list[str]:
    """A command prefix that keeps a process on the given CPUs (taskset), or none."""
    return ["taskset", "-c", cpus] if cpus is not None else []


def run_wrk(url: str, script: str, seconds: int, connections: int, cpus: str | None = None) -> dict:
    """One wrk run: req/s, p50 and p99, the requests, and the errors (non-2xx and socket errors, also apart)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run([*pinned(cpus), "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", f.name, url],
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


def cache_counts(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return (metric(text, "seq2seq_cache_total", 'result="hit"'), metric(text, "seq2seq_cache_total", 'result="miss"'))


@contextlib.contextmanager
def serving(name: str, module: str, work: Path, extra: dict, cpus: str | None = None):
    """`python -m module` on a free port with the SEQ2SEQ_* settings both sides read, on the given CPUs or any;
    yields (url, process)."""
    port = free_port()
    env = {**os.environ, "SEQ2SEQ_HOST": "127.0.0.1", "SEQ2SEQ_PORT": str(port), "SEQ2SEQ_LOG_LEVEL": "warning",
           "SEQ2SEQ_WORKERS": "1", **extra}
    log = work / f"{name}.log"
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([*pinned(cpus), sys.executable, "-m", module], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 60, proc=proc, log=log)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ours_env(work: Path, name: str, cache: bool) -> dict:
    env = {"SEQ2SEQ_DATA_DIR": str(work / name), "SEQ2SEQ_API_KEY": "bench-management-key-0123456789abcdef"}
    if not cache:
        env["SEQ2SEQ_CACHE_SIZE"] = "0"
    return env


def sample_answer(url: str, method: str, path: str, items: list[str]) -> tuple[str, dict]:
    """One of ours' answers to this load, of the median length, for the ceiling to send back."""
    bodies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for item in items[:SAMPLE]:
            r = (client.post(path, content=item, headers={"content-type": "application/json"}) if method == "POST"
                 else client.get(f"{path}?{item}"))
            r.raise_for_status()
            bodies.append(r.text)
    sizes = sorted(len(b.encode()) for b in bodies)
    want = sizes[len(sizes) // 2]
    body = next(b for b in bodies if len(b.encode()) == want)
    return body, {"answers_read": len(sizes), "min": sizes[0], "median": want, "max": sizes[-1]}


def profile(pid: int, url: str, script: str, seconds: int, connections: int, top: int) -> dict:
    """py-spy record on our process while wrk loads it: where its CPU time goes. Skipped, with the reason,
    when py-spy is missing or may not attach."""
    spy = py_spy()
    if spy is None:
        return {"skipped": "py-spy not found: `.venv/bin/pip install py-spy` (a benchmark tool, not a dependency)"}
    raw = Path(tempfile.mkdtemp(prefix="seq2seq-load-spy-")) / "stacks.txt"
    rec = subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "200", "--format", "raw",
                            "-o", str(raw), "--nonblocking"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    load = run_wrk(url, script, seconds, connections)
    try:
        said, _ = rec.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        rec.kill()
        said, _ = rec.communicate()
    if rec.returncode != 0 or not raw.exists():
        return {"skipped": f"py-spy exited with {rec.returncode}: {said.strip()[:500]}", "load": load}
    return {"seconds": seconds, "rate_hz": 200, "load_while_sampled": load, "raw_stacks": str(raw),
            **summarize_stacks(raw, top),
            "note": "fractions of all samples of the process's active threads (py-spy --nonblocking, without "
                    "--idle); self time by line, inclusive time by function"}


def summary(runs: list[dict]) -> dict:
    return {"rps_median": median(x["rps"] for x in runs), "p50_ms_median": median(x["p50_ms"] for x in runs),
            "p99_ms_median": median(x["p99_ms"] for x in runs), "errors": sum(x["errors"] for x in runs),
            "rps_spread": [min(x["rps"] for x in runs), max(x["rps"] for x in runs)]}


def run_case(case: tuple, ours_url: str, work: Path, args) -> tuple[dict, str]:
    name, method, path, kind, cached, target = case
    items = requests_for(method, kind)
    body, sizes = sample_answer(ours_url, method, path, items)
    script = lua_script(method, path, items)
    hits0, misses0 = cache_counts(ours_url)
    runs: dict[str, list[dict]] = {"ours": [], "bare_asgi": [], "framework_floor": []}
    with serving(f"bare-{name}", "bench.ceiling", work, {"CEILING_BODY": body}) as (bare_url, _), \
            serving(f"floor-{name}", "bench.ceiling", work, {"CEILING_BODY": body, "CEILING_FRAMEWORK": "fastapi"}) \
            as (floor_url, _):
        urls = {"ours": ours_url, "bare_asgi": bare_url, "framework_floor": floor_url}
        order = list(urls)
        for r in range(args.rounds):
            for side in order[r % 3:] + order[:r % 3]:  # each side first in turn
                if args.warmup:
                    run_wrk(urls[side], script, args.warmup, args.connections)
                runs[side].append(run_wrk(urls[side], script, args.seconds, args.connections))
    hits1, misses1 = cache_counts(ours_url)
    hits, misses = hits1 - hits0, misses1 - misses0
    ours, bare, floor = summary(runs["ours"]), summary(runs["bare_asgi"]), summary(runs["framework_floor"])
    row = {"method": method, "path": path, "requests": kind, "distinct_requests": len(items),
           "ours_cache": "on (default size)" if cached else "off (SEQ2SEQ_CACHE_SIZE=0)", "answer_bytes": sizes,
           "ours": ours, "bare_asgi": bare, "framework_floor": floor,
           "ratio_to_bare_asgi": round(ours["rps_median"] / bare["rps_median"], 3),
           "ratio_to_bare_asgi_per_round": [round(o["rps"] / b["rps"], 3) for o, b in zip(runs["ours"], runs["bare_asgi"])],
           "floor_ratio_to_bare_asgi": round(floor["rps_median"] / bare["rps_median"], 3),
           "floor_ratio_to_bare_asgi_per_round": [round(f["rps"] / b["rps"], 3)
                                                  for f, b in zip(runs["framework_floor"], runs["bare_asgi"])],
           "ratio_to_framework_floor": round(ours["rps_median"] / floor["rps_median"], 3),
           "p99_ratio": round(ours["p99_ms_median"] / bare["p99_ms_median"], 3),
           "cache_hit_ratio": round(hits / max(hits + misses, 1), 3), "target_ratio": target, "runs": runs}
    if target is not None:
        row["meets_target"] = row["ratio_to_bare_asgi"] >= target and ours["errors"] == 0
    verdict = "" if target is None else f" target {target}: {'PASS' if row['meets_target'] else 'FAIL'}"
    line = (f"{name:27s} bare ASGI {bare['rps_median']:8.0f} req/s p99 {bare['p99_ms_median']:6.2f} ms | ours "
            f"{ours['rps_median']:8.0f} req/s p99 {ours['p99_ms_median']:6.2f} ms errors {ours['errors']} | "
            f"ratio_to_bare_asgi {row['ratio_to_bare_asgi']}{verdict} | framework floor {floor['rps_median']:8.0f} "
            f"req/s, {row['floor_ratio_to_bare_asgi']} of the bare app | cache hits {row['cache_hit_ratio']:.0%}")
    return row, line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2, help="seconds of the same load before each measured run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--cases", default=",".join(c[0] for c in CASES), help="comma-separated case names")
    parser.add_argument("--profile", type=int, default=0, help="seconds of py-spy on ours under each targeted "
                        "case's load, after the rounds (0: none)")
    parser.add_argument("--profile-top", type=int, default=25)
    args = parser.parse_args()
    chosen = args.cases.split(",")
    unknown = set(chosen) - {c[0] for c in CASES}
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {[c[0] for c in CASES]}")
    cases = [c for c in CASES if c[0] in chosen]
    work = Path(tempfile.mkdtemp(prefix="seq2seq-load-"))
    report = {
        "what": "wrk -t2 on 127.0.0.1: ours (python -m app, one process) against a bare ASGI app (bench/ceiling.py: "
                "reads the body, answers a fixed copy of one of ours' answers of the median length) and the "
                "framework's floor (the same answer from one lean route inside a FastAPI app) under the same "
                "uvicorn settings, same script, same run, rotating; medians over rounds",
        "server": {"uvicorn": "one process, access log off, log level warning, http and loop 'auto' as python -m app",
                   "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
                   "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"},
        "note": "2 cores shared by wrk, the server under load and other work on this machine: compare the ratios "
                "of one run, not absolute figures across runs",
        "seconds": args.seconds, "warmup_seconds": args.warmup, "rounds": args.rounds,
        "connections": args.connections, "target": f"ratio_to_bare_asgi >= {TARGET} for the cases with a target",
    }
    ok, profiles = True, {}
    for cached in sorted({c[4] for c in cases}):  # one of ours at a time, so an idle one takes no CPU from the other
        name = "ours-cache" if cached else "ours-nocache"
        with serving(name, "app", work, ours_env(work, name, cached)) as (url, proc):
            group = [c for c in cases if c[4] == cached]
            for case in group:
                row, line = run_case(case, url, work, args)
                ok &= row.get("meets_target", True)
                report[case[0]] = row
                print(line, flush=True)
            for case_name, method, path, kind, _, target in group if args.profile else []:
                if target is None:
                    continue
                script = lua_script(method, path, requests_for(method, kind))
                found = profiles[case_name] = profile(proc.pid, url, script, args.profile, args.connections,
                                                      args.profile_top)
                if "skipped" in found:
                    print(f"profile {case_name}: skipped: {found['skipped']}", flush=True)
                    continue
                print(f"profile {case_name}: self time by function, top 10 of {found['samples']} samples", flush=True)
                for fn, share in found["self_time_top"][:10]:
                    print(f"  {share:6.1%}  {fn}", flush=True)
    print("written to", write("load", report))
    if profiles:
        print("written to", write("load_profile", {"what": "py-spy record on ours (python -m app, one process) under "
                                                    "each targeted case's wrk load", "connections": args.connections,
                                                    **profiles}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
