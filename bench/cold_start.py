"""Cold start: from `make run` (already installed) to GET /readyz = 200, several times, median.

  python bench/cold_start.py [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

import httpx
from common import ROOT, median, write
from load import free_port


def once() -> float:
    port = free_port()
    env = {**os.environ, "SEQ2SEQ_DATA_DIR": tempfile.mkdtemp(prefix="seq2seq-cold-")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(["make", "run", f"PORT={port}", "HOST=127.0.0.1"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 60:
                raise RuntimeError("not ready after 60 s")
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = [once() for _ in range(args.runs)]
    result = {"runs_s": [round(t, 3) for t in times], "median_s": round(median(times), 3), "target_s": 10}
    print(f"make run -> /readyz 200: median {result['median_s']} s over {args.runs} runs {result['runs_s']}")
    print("written to", write("cold_start", result))
    return 0 if result["median_s"] < 10 else 1


if __name__ == "__main__":
    sys.exit(main())
