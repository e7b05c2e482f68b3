"""Does the default recipe generalize? Models trained with the job defaults on samples from processes whose exact
distribution is known (bench/processes.py), against the best count baseline fitted on the same training split,
and against the truth.

Each job is a POST /jobs body run by `python -m model train --job` (parse_job, then the trainer the service's
training process runs), one thread, as the service trains. On 10,000 fresh samples per process it reports:
- held-out NLL, -log P(the rest | the first digit) in nats, of the model, of the best baseline (model/ngram.py,
  chosen on the job's own held-out part), of the true distribution on the same samples, and the true entropy;
- hit@1 and hit@3 (the sample among the first 1 or 3 suggestions for its first digit) of each, the truth's being
  its own top 3;
- keystroke savings of the model and the baseline; the job's wall time, and which teacher the job trained
  towards (the baseline or model/mixture.py's mixture; rows from before 2026-12-02 08:00 UTC do not say).

Targets (defaults): model NLL at most 1.02x the baseline's at every size, and below it at 3,000 and 30,000 on
most processes; at 30,000 within 3% of the true entropy; hit@3 at most 1 point below the baseline's; a
30,000-sequence job under 120 s.

  python bench/generalization.py [--sizes 300 3000 30000] [--seeds 0 1 2] [--processes markov1 ...]
  python bench/generalization.py --merge OLD.json NEW.json [--note "..."]   (a later file's rows replace)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, last_json_line, median, write
from processes import processes

sys.path.insert(0, str(ROOT))
from model import checkpoint, heldout, ngram, validation
from model.config import TrainConfig

TEST_SEED = 1_000_000
TARGET_RATIO = 1.02
TARGET_ENTROPY = 1.03
TARGET_HIT3_POINTS = 0.01
TARGET_WALL_30K = 120.0


def run_job(sequences: list[list[int]], seq_length: int, seed: int, tmp: Path) -> tuple[dict, float, Path]:
    body = {"dataset": {"sequences": sequences}, "model": {"seq_length": seq_length}, "training": {"seed": seed}}
    job, out = tmp / "job.json", tmp / "model.pt"
    job.write_text(json.dumps(body))
    t0 = time.perf_counter()
    summary = last_json_line([sys.executable, "-m", "model", "train", "--job", str(job), "--out", str(out)])
    return summary, time.perf_counter() - t0, out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 3000, 30000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--processes", nargs="+", default=None)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--out", default="generalization")
    parser.add_argument("--merge", nargs="+", metavar="FILE", help="combine earlier results files instead of training")
    parser.add_argument("--note", help="with --merge: what the merged result is made of")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.out, args.note)
    torch.set_num_threads(1)
    chosen = [p for p in processes() if args.processes is None or p.name in args.processes]
    fraction = TrainConfig().validation_fraction
    rows, summary = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for proc in chosen:
            test = proc.sample(args.test, TEST_SEED)
            entropy = proc.entropy_given_first()
            probs = proc.probs
            index = torch.tensor([sum(d * 10 ** (proc.seq_length - 1 - i) for i, d in enumerate(s)) for s in test])
            first = probs.view(10, -1).sum(1)
            true_nll = float(-(probs[index].log() - first[index // 10 ** (proc.seq_length - 1)].log()).mean())
            true_hit1, true_hit3 = proc.top3_hits(test)
            for size in args.sizes:
                for seed in args.seeds:
                    data = proc.sample(size, seed * 7919 + size)
                    job, wall, path = run_job(data, proc.seq_length, seed, Path(tmp))
                    model = checkpoint.load(path).model
                    mine = heldout.figures(heldout.Neural(model), test)
                    parts = validation.split(data, fraction, seed)
                    train, valid = (data, data) if parts is None else (parts.train, parts.valid)
                    base = ngram.fit_best(train, valid, 10, proc.seq_length)
                    theirs = heldout.figures(base, test)
                    row = {"process": proc.name, "size": size, "seed": seed, "wall_s": round(wall, 2),
                           "steps": job["steps"], "best_step": job.get("best_step"), "baseline": base.name,
                           "teacher": job.get("teacher_name"),
                           "model": mine, "baseline_figures": theirs, "true_nll": true_nll, "entropy": entropy,
                           "true_hit1": true_hit1, "true_hit3": true_hit3,
                           "ratio_baseline": mine["nll"] / theirs["nll"], "ratio_entropy": mine["nll"] / entropy}
                    rows.append(row)
                    print(f"{proc.name:9s} n={size:6d} seed {seed}: NLL {mine['nll']:.3f} baseline {theirs['nll']:.3f} "
                          f"({base.name}) truth {true_nll:.3f} H {entropy:.3f}; x{row['ratio_baseline']:.3f} of the "
                          f"baseline, x{row['ratio_entropy']:.3f} of H; hit@3 {mine['hit3']:.3f}/{theirs['hit3']:.3f}"
                          f"/{true_hit3:.3f}; {wall:.1f} s", flush=True)
                summary[f"{proc.name}/{size}"] = summarize([r for r in rows if r["process"] == proc.name
                                                            and r["size"] == size])
    return report(rows, summary, args.sizes, args.out)


def report(rows: list[dict], summary: dict, sizes: list[int], out: str, note: str | None = None) -> int:
    targets = judge(summary, sizes)
    for line in targets["lines"]:
        print(line)
    extra = {} if note is None else {"note": note}
    print("written to", write(out, {**extra, "rows": rows, "summary": summary, "targets": targets}))
    return 0 if targets["met"] else 1


def summarize(mine_rows: list[dict]) -> dict:
    """One process at one size, over its seeds."""
    first = mine_rows[0]
    return {
        "nll_model": median(r["model"]["nll"] for r in mine_rows),
        "nll_baseline": median(r["baseline_figures"]["nll"] for r in mine_rows),
        "nll_truth": first["true_nll"], "entropy": first["entropy"],
        "ratio_baseline_median": median(r["ratio_baseline"] for r in mine_rows),
        "ratio_baseline_max": max(r["ratio_baseline"] for r in mine_rows),
        "ratio_entropy_median": median(r["ratio_entropy"] for r in mine_rows),
        "hit1": [median(r["model"]["hit1"] for r in mine_rows),
                 median(r["baseline_figures"]["hit1"] for r in mine_rows), first["true_hit1"]],
        "hit3": [median(r["model"]["hit3"] for r in mine_rows),
                 median(r["baseline_figures"]["hit3"] for r in mine_rows), first["true_hit3"]],
        "keystroke_savings": [median(r["model"]["keystroke_savings"] for r in mine_rows),
                              median(r["baseline_figures"]["keystroke_savings"] for r in mine_rows)],
        "wall_s_median": median(r["wall_s"] for r in mine_rows),
        "wall_s_max": max(r["wall_s"] for r in mine_rows),
    }


def merge(paths: list[str], out: str, note: str | None) -> int:
    """Partial runs (a few processes or sizes each) as one result: a later file's rows replace an earlier's for
    the same process, size and seed; summaries and targets are computed again from the rows."""
    rows: dict[tuple, dict] = {}
    for path in paths:
        for row in json.loads(Path(path).read_text())["rows"]:
            rows[row["process"], row["size"], row["seed"]] = row
    merged = sorted(rows.values(), key=lambda r: ([p.name for p in processes()].index(r["process"]), r["size"],
                                                  r["seed"]))
    groups = dict.fromkeys((r["process"], r["size"]) for r in merged)
    summary = {f"{name}/{size}": summarize([r for r in merged if (r["process"], r["size"]) == (name, size)])
               for name, size in groups}
    return report(merged, summary, sorted({size for _, size in groups}), out, note)


def judge(summary: dict, sizes: list[int]) -> dict:
    lines, met = [], True
    for key, s in summary.items():
        ok = s["ratio_baseline_median"] <= TARGET_RATIO and s["hit3"][0] >= s["hit3"][1] - TARGET_HIT3_POINTS
        if key.endswith("/30000"):
            ok &= s["ratio_entropy_median"] <= TARGET_ENTROPY and s["wall_s_max"] < TARGET_WALL_30K
        met &= ok
        lines.append(f"{key:16s} x{s['ratio_baseline_median']:.3f} of the baseline (max x{s['ratio_baseline_max']:.3f}), "
                     f"x{s['ratio_entropy_median']:.3f} of H, hit@3 {s['hit3'][0]:.3f} vs {s['hit3'][1]:.3f}, "
                     f"wall {s['wall_s_median']:.1f} s: {'met' if ok else 'MISSED'}")
    for size in (3000, 30000):
        below = [s["ratio_baseline_median"] < 1 for k, s in summary.items() if k.endswith(f"/{size}")]
        if below:
            most = sum(below) > len(below) / 2
            met &= most
            lines.append(f"below the baseline at {size}: {sum(below)} of {len(below)} processes: "
                         f"{'met' if most else 'MISSED'}")
    return {"met": met, "lines": lines}


if __name__ == "__main__":
    sys.exit(main())
