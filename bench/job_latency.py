"""Serving latency while a training job runs: POST /predict with cache-defeating prefixes at a fixed rate,
idle and while a default job (the seed's hyperparameters, the shipped corpus) trains, alternating over
several rounds in the same run; the ratio is of the median p99s.

The load is open-loop (a request every 1/rate seconds, whatever the answers do), from this process, an
async client separate from the server process.

  python bench/job_latency.py [--rate 200] [--seconds 8] [--rounds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

import httpx
from common import ROOT, median, wait_ready, write
from load import free_port, requests_for

KEY = {"Authorization": "Bearer bench-management-key-0123456789abcdef"}  # /jobs needs the management key since the hardening


def job_started(r: httpx.Response) -> bool:
    return r.status_code == 200 and r.json()["progress"]["step"] > 0


async def measure(url: str, bodies: list[str], start: int, rate: float, seconds: float) -> dict:
    latencies, errors = [], 0
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_connections=256)) as client:
        async def one(body: str):
            nonlocal errors
            t0 = time.perf_counter()
            try:
                r = await client.post("/predict", content=body, headers={"content-type": "application/json"})
                if r.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - t0)

        tasks, t_start, i = [], time.perf_counter(), 0
        while (elapsed := time.perf_counter() - t_start) < seconds:
            due = i / rate
            if elapsed < due:
                await asyncio.sleep(due - elapsed)
            tasks.append(asyncio.create_task(one(bodies[(start + i) % len(bodies)])))
            i += 1
        await asyncio.gather(*tasks)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {"requests": len(latencies), "errors": errors, "p50_ms": round(pick(0.50), 2), "p99_ms": round(pick(0.99), 2)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=8, help="length of each idle and each busy phase")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "SEQ2SEQ_PORT": str(port), "SEQ2SEQ_HOST": "127.0.0.1", "SEQ2SEQ_LOG_LEVEL": "warning",
           "SEQ2SEQ_API_KEY": "bench-management-key-0123456789abcdef", "SEQ2SEQ_DATA_DIR": tempfile.mkdtemp(prefix="seq2seq-joblat-")}
    server = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    bodies = requests_for("POST", "distinct")
    try:
        wait_ready(url, proc=server)
        corpus = json.loads((ROOT / "weights" / "corpus.json").read_text())["sequences"]
        rounds = []
        for r in range(args.rounds):  # alternate idle and busy phases: the machine's own noise hits both
            idle = asyncio.run(measure(url, bodies, 3000 * r, args.rate, args.seconds))
            posted = httpx.post(f"{url}/jobs", json={"dataset": {"sequences": corpus}, "activate": "never"}, headers=KEY)
            posted.raise_for_status()
            job = posted.json()
            wait_ready(url, 60, path=f"/jobs/{job['id']}", headers=KEY, ready=job_started, proc=server)
            busy = asyncio.run(measure(url, bodies, 3000 * r + 1500, args.rate, args.seconds))
            after = httpx.post(f"{url}/jobs/{job['id']}/cancel", headers=KEY).json()  # still running, so it cancels
            rounds.append({"idle": idle, "during_job": busy, "job_was_running": after["status"] == "cancelled",
                           "job_step_at_end": after["progress"]["step"]})
            print(f"round {r + 1}: idle p50 {idle['p50_ms']} p99 {idle['p99_ms']} ms | during a default job p50 "
                  f"{busy['p50_ms']} p99 {busy['p99_ms']} ms, job at step {after['progress']['step']} | errors "
                  f"{idle['errors'] + busy['errors']}", flush=True)
        idle_p99 = median(r["idle"]["p99_ms"] for r in rounds)
        busy_p99 = median(r["during_job"]["p99_ms"] for r in rounds)
        ratio = round(busy_p99 / idle_p99, 3)
        errors = sum(r["idle"]["errors"] + r["during_job"]["errors"] for r in rounds)
        ran = all(r["job_was_running"] for r in rounds)
        result = {"rate_per_s": args.rate, "seconds_per_phase": args.seconds, "rounds": rounds,
                  "idle_p99_ms_median": idle_p99, "during_job_p99_ms_median": busy_p99, "p99_ratio": ratio,
                  "errors": errors, "job_ran_throughout": ran, "target_ratio": 2.0}
        print(f"median p99: idle {idle_p99} ms, during a job {busy_p99} ms: ratio {ratio} (target <= 2.0); "
              f"errors {errors}; the job ran through every busy phase: {ran}")
        print("written to", write("job_latency", result))
        return 0 if ratio <= 2.0 and ran and errors == 0 else 1
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    sys.exit(main())
