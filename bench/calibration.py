"""Calibration and wall time of the default training recipe against today's 3,000-step corpus job (the seed's
recipe with teacher forcing 1.0, as the README used to prescribe), on two corpora of three continuations per
start digit, seen 6:3:1 and 12:5:2 times. Both run as whole `python -m model train` processes, alternately.

Reported per run: the mean and max total-variation distance between the model's distribution over complete
continuations and the corpus's frequencies, for start digits and for every prefix in the corpus; whether
all ten start digits rank their three continuations in the corpus's order; wall seconds.

  python bench/calibration.py [--seeds 0]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from common import last_json_line, median, write

RECIPES = {"default": [], "today_3000_steps": ["--recipe", "seed", "--teacher-forcing", "1.0", "--steps", "3000"]}
CORPORA = {"6:3:1": ((6, 3, 1), 1), "12:5:2": ((12, 5, 2), 2)}
TARGET_TV_START = 0.03


def make_corpus(counts: tuple[int, ...], seed: int) -> list[list[int]]:
    """For each start digit, len(counts) distinct random continuations of length 4, seen counts[i] times."""
    rng = random.Random(seed)
    sequences = []
    for digit in range(10):
        continuations: set[tuple[int, ...]] = set()
        while len(continuations) < len(counts):
            continuations.add(tuple(rng.randrange(10) for _ in range(4)))
        for continuation, n in zip(sorted(continuations), counts):
            sequences += [[digit, *continuation]] * n
    return sequences


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    report, ok = {"recipes": RECIPES}, True
    with tempfile.TemporaryDirectory() as tmp:
        for name, (counts, corpus_seed) in CORPORA.items():
            path = Path(tmp) / "corpus.json"
            # an exact table of frequencies, by construction: the model should reproduce it, not smooth it
            path.write_text(json.dumps({"sequences": make_corpus(counts, corpus_seed), "frequencies": "exact"}))
            runs: dict[str, list[dict]] = {r: [] for r in RECIPES}
            for seed in args.seeds:
                for recipe, flags in RECIPES.items():
                    t0 = time.perf_counter()
                    out = last_json_line([sys.executable, "-m", "model", "train", "--data", str(path), "--attention",
                                          "--seed", str(seed), *flags])
                    out["wall_seconds"] = round(time.perf_counter() - t0, 3)
                    runs[recipe].append({k: out[k] for k in (
                        "wall_seconds", "steps", "loss", "calibration_tv_start_mean", "calibration_tv_start_max",
                        "calibration_tv_mean", "calibration_tv_max", "calibration_ranked_start", "top1_agreement")})
                    r = runs[recipe][-1]
                    print(f"{name:7s} {recipe:17s} seed {seed}: start-digit TV mean {r['calibration_tv_start_mean']:.4f} "
                          f"max {r['calibration_tv_start_max']:.4f}, all prefixes {r['calibration_tv_mean']:.4f}, "
                          f"ranked {r['calibration_ranked_start']:.1f}, {r['wall_seconds']:.1f} s", flush=True)
            row = {"counts": counts, "runs": runs}
            for recipe in RECIPES:
                row[f"{recipe}_wall_s_median"] = median(r["wall_seconds"] for r in runs[recipe])
                row[f"{recipe}_tv_start_mean_median"] = median(r["calibration_tv_start_mean"] for r in runs[recipe])
            d = runs["default"]
            row["meets_target"] = (max(r["calibration_tv_start_mean"] for r in d) <= TARGET_TV_START
                                   and all(r["calibration_ranked_start"] == 1.0 for r in d)
                                   and row["default_wall_s_median"] <= row["today_3000_steps_wall_s_median"])
            ok &= row["meets_target"]
            report[name] = row
    print("written to", write("calibration", report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
