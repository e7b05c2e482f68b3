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

from common import ROOT, median, wait_ready, write
from load import free_port


def once() -> float:
    port = free_port()
    env = {**os.environ, "SEQ2SEQ_DATA_DIR": tempfile.mkdtemp(prefix="seq2seq-cold-")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(["make", "run", f"PORT={port}", "HOST=127.0.0.1"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # a fine interval: the poll's resolution is part of the figure
        wait_ready(f"http://127.0.0.1:{port}", 60, proc=proc, interval=0.05)
        return time.perf_counter() - t0
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
