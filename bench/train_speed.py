"""Time to 99.9% greedy exact match on the seed's copy task: this project's trainer with its default recipe
(no flags but the model variant and the target) against the seed's reference, run alternately in the same
process tree on the same machine, several seeds each.

Both report total_seconds the same way (training plus evaluation, after setup); wall_seconds is the whole
process, interpreter start included, and is what the targets are about. The task, the model, the batch size
and the 10,000-sequence held-out exact-match are the same.

  python bench/train_speed.py [--seeds 0 1 2 3 4] [--reference-threads 1]

--reference-threads N runs the reference with N torch threads (OMP_NUM_THREADS) instead of torch's default
(one per core), as ours runs with one: on a loaded machine two threads contend and the reference slows by
far more than the difference in method; results go to train_speed_reference_threadsN.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from common import REFERENCE, last_json_line, median, write

RECIPES = {False: ["--no-attention"], True: ["--attention"]}  # the default recipe: no other flags
TARGETS = {False: 3.0, True: 2.0}


def timed(cmd: list[str], env: dict | None = None) -> dict:
    t0 = time.perf_counter()
    result = last_json_line(cmd, env)
    result["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--reference-threads", type=int, default=None)
    args = parser.parse_args()
    ref_env = None if args.reference_threads is None else {"OMP_NUM_THREADS": str(args.reference_threads)}
    report, ok = {}, True
    for attention in (False, True):
        ours, ref = [], []
        for seed in args.seeds:
            ref_cmd = [sys.executable, str(REFERENCE), "--target-accuracy", "0.999", "--seed", str(seed)]
            ref.append(timed(ref_cmd + (["--attention"] if attention else []), ref_env))
            ours.append(timed([sys.executable, "-m", "model", "train", "--data", "random", *RECIPES[attention],
                               "--target-accuracy", "0.999", "--seed", str(seed)]))
        name = "attention" if attention else "plain"
        row = {
            "seeds": args.seeds,
            "reference_total_s_median": median(r["total_seconds"] for r in ref),
            "ours_total_s_median": median(r["total_seconds"] for r in ours),
            "reference_wall_s_median": median(r["wall_seconds"] for r in ref),
            "ours_wall_s_median": median(r["wall_seconds"] for r in ours),
            "reference_steps": [r["steps"] for r in ref], "ours_steps": [r["steps"] for r in ours],
            "reference_seq_acc_min": min(r["seq_acc"] for r in ref), "ours_seq_acc_min": min(r["seq_acc"] for r in ours),
            "recipe": RECIPES[attention],
        }
        row["speedup_total"] = round(row["reference_total_s_median"] / row["ours_total_s_median"], 2)
        row["speedup_wall"] = round(row["reference_wall_s_median"] / row["ours_wall_s_median"], 2)
        row["target_speedup"] = TARGETS[attention]
        row["meets_target"] = row["speedup_wall"] >= TARGETS[attention] and row["ours_seq_acc_min"] >= 0.999
        ok &= row["meets_target"]
        report[name] = row
        print(f"{name:9s} reference {row['reference_total_s_median']:.2f}s (steps {row['reference_steps']})  "
              f"ours {row['ours_total_s_median']:.2f}s (steps {row['ours_steps']})  speedup {row['speedup_total']}x "
              f"(wall {row['speedup_wall']}x)  min seq_acc ours {row['ours_seq_acc_min']} ref {row['reference_seq_acc_min']}",
              flush=True)
    report["reference_threads"] = args.reference_threads or os.cpu_count()
    name = "train_speed" if args.reference_threads is None else f"train_speed_reference_threads{args.reference_threads}"
    print("written to", write(name, report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
