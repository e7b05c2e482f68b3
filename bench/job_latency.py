"""Serving latency while a training job runs: POST /predict with cache-defeating prefixes at a fixed rate,
first idle, then while a default job (the seed's hyperparameters, the shipped corpus) trains, same run.

The load is open-loop (a request every 1/rate seconds, whatever the answers do), from this process, an
async client separate from the server process.

  python bench/job_latency.py [--rate 200] [--seconds 10]
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

from common import ROOT, write
from load import free_port, requests_for


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
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "SEQ2SEQ_PORT": str(port), "SEQ2SEQ_HOST": "127.0.0.1", "SEQ2SEQ_LOG_LEVEL": "warning",
           "SEQ2SEQ_DATA_DIR": tempfile.mkdtemp(prefix="seq2seq-joblat-")}
    server = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    bodies = requests_for("POST", "distinct")
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        idle = asyncio.run(measure(url, bodies, 0, args.rate, args.seconds))
        corpus = json.loads((ROOT / "weights" / "corpus.json").read_text())["sequences"]
        job = httpx.post(f"{url}/jobs", json={"dataset": {"sequences": corpus}, "activate": "never"}).json()
        while (j := httpx.get(f"{url}/jobs/{job['id']}").json())["progress"]["step"] == 0:
            time.sleep(0.1)
        busy = asyncio.run(measure(url, bodies, 5000, args.rate, args.seconds))
        after = httpx.get(f"{url}/jobs/{job['id']}").json()
        still_running = after["status"] == "running"
        ratio = round(busy["p99_ms"] / idle["p99_ms"], 3)
        result = {"rate_per_s": args.rate, "seconds": args.seconds, "idle": idle, "during_job": busy,
                  "p99_ratio": ratio, "job_ran_throughout": still_running, "job_step_at_end": after["progress"]["step"],
                  "target_ratio": 2.0}
        print(f"idle: p50 {idle['p50_ms']} ms p99 {idle['p99_ms']} ms ({idle['requests']} requests, {idle['errors']} errors)")
        print(f"during a default job: p50 {busy['p50_ms']} ms p99 {busy['p99_ms']} ms ({busy['requests']} requests, "
              f"{busy['errors']} errors); job still running at the end: {still_running} (step {after['progress']['step']})")
        print(f"p99 ratio {ratio} (target <= 2.0)")
        print("written to", write("job_latency", result))
        return 0 if ratio <= 2.0 and still_running and busy["errors"] == 0 else 1
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    sys.exit(main())
