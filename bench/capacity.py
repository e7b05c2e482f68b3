"""How close can the network get to the true entropy at 30,000 sequences, and would serving it beside its teacher help?

bench/generalization.py's 3%-of-the-entropy target at 30,000 sequences is missed on noisy templates (1.048x of H
with the job defaults) while the chain-and-templates mixture the network is trained towards reaches about 1.025x.
This measures the two ways out:
- a wider network: POST /jobs bodies through `python -m model train --job`, as in generalization.py, with the
  default recipe and one thread, on the same samples, at hidden widths 128 to 512 without attention (attention at
  256 took 170 s a job against the 120 s target) beside the defaults;
- a blend: the default job's network and its teacher interpolated at every decoder step,
  P(d | prefix) = (1 - w) P_net + w P_teacher, w chosen on the job's held-out part.

Jobs run two at a time, one per core, so a job's wall time is measured beside another's.

  python bench/capacity.py [--processes templates mixture] [--size 30000] [--seed 0] [--widths 128 256 384 512]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from common import ROOT, last_json_line, write
from processes import processes

sys.path.insert(0, str(ROOT))
from model import checkpoint, heldout, validation
from model.config import TrainConfig

TEST_SEED = 1_000_000  # as bench/generalization.py
RATES = {128: 0.01, 256: 0.005, 384: 0.003, 512: 0.002}  # Adam's rate for a width (0.01 at 128 is the default's)
WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


def job(data: list[list[int]], seq_length: int, seed: int, model: dict, training: dict, out: Path) -> tuple[dict, float]:
    body = {"dataset": {"sequences": data}, "model": {"seq_length": seq_length, **model},
            "training": {"seed": seed, **training}}
    path = out.with_suffix(".json")
    path.write_text(json.dumps(body))
    t0 = time.perf_counter()
    summary = last_json_line([sys.executable, "-m", "model", "train", "--job", str(path), "--out", str(out)])
    return summary, time.perf_counter() - t0


def step_logps(model, teacher, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step log-probabilities of each sequence's digits after the first: the network's and the teacher's."""
    trg = torch.tensor(sequences)
    with torch.no_grad():
        net = torch.log_softmax(model(trg[:, :1], trg), 2).gather(2, trg[:, 1:, None]).squeeze(2).double()
    return net, teacher.next_digits(trg).double().gather(2, trg[:, 1:, None]).squeeze(2).log()


def blended_nll(net: torch.Tensor, taught: torch.Tensor, w: float) -> float:
    """Mean -log of the per-step blend (1 - w) P_net + w P_teacher, summed over each sequence's steps."""
    weight = torch.tensor(w, dtype=torch.float64)  # log(0) is -inf, which logaddexp passes over
    return float(-torch.logaddexp(net + torch.log1p(-weight), taught + weight.log()).sum(1).mean())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", nargs="+", default=["templates", "mixture"])
    parser.add_argument("--size", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256, 384, 512])
    args = parser.parse_args()
    torch.set_num_threads(1)
    chosen = [p for p in processes() if p.name in args.processes]
    fraction = TrainConfig().validation_fraction
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        plans = []
        for proc in chosen:
            data = proc.sample(args.size, args.seed * 7919 + args.size)  # generalization.py's sample
            plans.append((proc, data, "default", {}, {}))
            for width in args.widths:
                plans.append((proc, data, f"hidden {width}, no attention",
                              {"attention": False, "embedding_dim": 32, "hidden_dim": width},
                              {"learning_rate": RATES.get(width, 0.002), "batch_size": 128}))

        def run(i: int) -> tuple[dict, float, Path]:
            proc, data, _, model, training = plans[i]
            out = Path(tmp) / f"{i}.pt"
            summary, wall = job(data, proc.seq_length, args.seed, model, training, out)
            return summary, wall, out

        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(run, range(len(plans))))
        for (proc, data, label, model, training), (summary, wall, out) in zip(plans, done):
            test = proc.sample(10_000, TEST_SEED)
            H = proc.entropy_given_first()
            net = checkpoint.load(out).model
            row = {"process": proc.name, "size": args.size, "seed": args.seed, "network": label,
                   "model_fields": model, "training_fields": training, "wall_s": round(wall, 1),
                   "steps": summary["steps"], "best_step": summary.get("best_step"),
                   "teacher": summary.get("teacher_name"),
                   "ratio_entropy": heldout.figures(heldout.Neural(net), test)["nll"] / H}
            if label == "default":
                parts = validation.split(data, fraction, args.seed)
                base = validation.baseline(parts, net.config)
                teacher = validation.teacher(parts, net.config, base)
                valid = [blended_nll(*step_logps(net, teacher, parts.valid), w) for w in WEIGHTS]
                fresh = step_logps(net, teacher, test)
                chosen_w = WEIGHTS[min(range(len(WEIGHTS)), key=valid.__getitem__)]
                row["blend"] = {"teacher": teacher.name, "weights": WEIGHTS,
                                "heldout_part_nll": [round(v, 4) for v in valid],
                                "fresh_ratio_entropy": [round(blended_nll(*fresh, w) / H, 4) for w in WEIGHTS],
                                "chosen_weight": chosen_w}
            rows.append(row)
            blend = row.get("blend")
            extra = "" if blend is None else (f"; blend with {blend['teacher']}: w chosen {blend['chosen_weight']}, "
                                              f"x{blend['fresh_ratio_entropy'][WEIGHTS.index(blend['chosen_weight'])]} "
                                              "of H")
            print(f"{proc.name:9s} {label:26s} x{row['ratio_entropy']:.4f} of H, {wall:.0f} s, "
                  f"{row['steps']} steps{extra}", flush=True)
    print("written to", write("capacity", {"what": __doc__.split("\n\n")[0], "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
