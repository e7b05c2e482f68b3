"""Bulk requests: POST /predict/batch with 1,024 prefixes a request, against the same 1,024 prefixes sent as
single POST /predict requests at 32 connections. Prefixes per second, cache off, one server, alternating.

Both go through wrk (2 threads) on loopback; the batch case uses 4 connections (a batch already fills a
core), the single case 32. Every prefix is a distinct 3-4 digit prefix, so nothing is answered twice.

  python bench/batch.py [--seconds 10] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

from common import ROOT, median, wait_ready, write
from load import free_port, lua_script, run_wrk

BATCH = 1024


def prefixes() -> list[list[int]]:
    items = [[a, b, c] for a in range(10) for b in range(10) for c in range(10)]
    items += [[*p, d] for p in items for d in range(10)]
    random.Random(0).shuffle(items)
    return items


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "SEQ2SEQ_PORT": str(port), "SEQ2SEQ_HOST": "127.0.0.1", "SEQ2SEQ_CACHE_SIZE": "0",
           "SEQ2SEQ_API_KEY": "bench-management-key-0123456789abcdef", "SEQ2SEQ_DATA_DIR": tempfile.mkdtemp(prefix="seq2seq-batch-"),
           "SEQ2SEQ_LOG_LEVEL": "warning"}
    server = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    items = prefixes()
    singles = [json.dumps({"prefix": p}) for p in items]
    batches = [json.dumps({"prefixes": items[i:i + BATCH]}) for i in range(0, len(items) - BATCH + 1, BATCH)]
    try:
        wait_ready(base, proc=server)
        rows = {"single": [], "batch": []}
        for _ in range(args.rounds):
            single = run_wrk(base, lua_script("POST", "/predict", singles), args.seconds, 32)
            batch = run_wrk(base, lua_script("POST", "/predict/batch", batches), args.seconds, 4)
            rows["single"].append({**single, "prefixes_per_s": single["rps"]})
            rows["batch"].append({**batch, "prefixes_per_s": batch["rps"] * BATCH})
            print(f"single {single['rps']:8.0f} prefixes/s p99 {single['p99_ms']:7.2f} ms errors {single['errors']} | "
                  f"batch {batch['rps'] * BATCH:9.0f} prefixes/s ({batch['rps']:.1f} req/s, p99 {batch['p99_ms']:.1f} ms) "
                  f"errors {batch['errors']}", flush=True)
        summary = {kind: {"median_prefixes_per_s": round(median(r["prefixes_per_s"] for r in runs)),
                          "errors": sum(r["errors"] for r in runs)} for kind, runs in rows.items()}
        summary["ratio"] = round(summary["batch"]["median_prefixes_per_s"] / summary["single"]["median_prefixes_per_s"], 2)
        print(json.dumps(summary))
        print("written to", write("batch", {"batch_size": BATCH, "seconds": args.seconds, "rounds": rows,
                                            "summary": summary}))
        return 0 if summary["batch"]["errors"] == summary["single"]["errors"] == 0 else 1
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    sys.exit(main())
