"""Rollout statistics on the decision logic alone (no HTTP, no database), seeded and deterministic.

1. Split accuracy: the share of 20,000 sessions that a 10% step sends to the candidate, for several rollout ids,
   against the binomial expectation; stickiness from 10% to 50%; per-request draws without a session.
2. Simulated users. A user who sees a suggestion accepts it when what they meant is among the top 3; here that
   is one draw per impression: accepted with probability p_control (0.35) on the control and p_candidate on the
   candidate. Users come in sessions of 1-9 impressions (5 on average), routed by `app.rollouts.split` exactly as
   a replica would. Both arms fail 0.2% of requests with a 5xx (an answer without an impression) and share a p99
   of 20 ms, so the guardrails are evaluated but should never trip. Every request gets feedback. The decider is
   consulted every `--look-every` impressions, as a live system would on every counter flush, and its action is
   applied at once. Three scenarios, `--runs` rollouts each:
     worse  (p_candidate = 0.30): rolled back within 4,000 candidate impressions;
     same   (A/A, 0.35): rolled back in at most 5% of rollouts;
     better (0.38): promoted within 15,000 candidate impressions in at least 80% of rollouts.
   and, without a target, slightly_worse (0.33): how often a 2-point loss is caught before promotion.

  python bench/rollout_stats.py [--runs 100] [--more-runs 500] [--look-every 100]
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path

from common import write

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.rollouts import split
from app.rollouts.decision import Action, ArmStats, RolloutConfig, StepStats, decide

P_CONTROL = 0.35
SCENARIOS = {"worse": P_CONTROL - 0.05, "same": P_CONTROL, "better": P_CONTROL + 0.03,
             "slightly_worse": P_CONTROL - 0.02}  # no target: how often a small loss slips through
ERROR_RATE = 0.002
P99_MS = 20.0
REQUESTS_PER_SECOND = 200  # only to give the decider a time in the step
GIVE_UP = 60_000  # candidate impressions after which a run counts as undecided


def split_accuracy(sessions: int = 20_000, rollouts: int = 20, seed: int = 0) -> dict:
    rng = random.Random(seed)
    ids = [f"session-{rng.getrandbits(64):016x}" for _ in range(sessions)]
    expected_sd = (sessions * 0.1 * 0.9) ** 0.5 / sessions
    shares, sticky = [], True
    for r in range(rollouts):
        buckets = [split.bucket(f"rollout-{r}", s) for s in ids]
        at10 = [b < split.threshold(10) for b in buckets]
        at50 = [b < split.threshold(50) for b in buckets]
        sticky &= all(b for a, b in zip(at10, at50) if a)
        shares.append(sum(at10) / sessions)
    per_request = sum(split.choose_arm("r", 10, None, rng=rng) is split.Arm.CANDIDATE for _ in range(sessions))
    return {"sessions": sessions, "percent": 10, "rollout_ids": rollouts,
            "observed_percent_first_rollout": round(100 * shares[0], 3),
            "observed_percent_min_max": [round(100 * min(shares), 3), round(100 * max(shares), 3)],
            "binomial_expectation": f"10% +- {100 * expected_sd:.3f} points (1 sd); +-1 point is "
                                    f"{0.01 / expected_sd:.1f} sd",
            "within_1_point": all(abs(s - 0.1) <= 0.01 for s in shares),
            "sticky_10_to_50": sticky,
            "per_request_without_session_percent": round(100 * per_request / sessions, 3)}


def simulate(config: RolloutConfig, p_candidate: float, seed: int, look_every: int) -> dict:
    rng = random.Random(seed)
    rid = f"sim-{seed}"
    step, percent = 0, config.steps[0]
    cut = split.threshold(percent)
    counts = [[0, 0, 0, 0], [0, 0, 0, 0]]  # per arm: requests, errors, impressions, accepted (current step)
    history: list[StepStats] = []
    cand_total = impressions = session_left = session_bucket = sessions = 0
    decisions = 0
    while True:
        if session_left == 0:
            sessions += 1
            session_bucket = split.bucket(rid, f"user-{seed}-{sessions}")
            session_left = rng.randint(1, 9)
        session_left -= 1
        arm = 1 if session_bucket < cut else 0
        c = counts[arm]
        c[0] += 1
        if rng.random() < ERROR_RATE:
            c[1] += 1
            continue
        c[2] += 1
        impressions += 1
        cand_total += arm
        if rng.random() < (p_candidate if arm else P_CONTROL):
            c[3] += 1
        if impressions % look_every:
            continue
        now = StepStats(ArmStats(*counts[0], p99_ms=P99_MS), ArmStats(*counts[1], p99_ms=P99_MS))
        d = decide(config, [*history, now], (counts[0][0] + counts[1][0]) / REQUESTS_PER_SECOND)
        decisions += 1
        if d.action in (Action.ROLL_BACK, Action.PROMOTE):
            return {"outcome": "rolled_back" if d.action is Action.ROLL_BACK else "promoted",
                    "candidate_impressions": cand_total, "impressions": impressions, "step": step,
                    "looks": decisions, "reason": d.reason}
        if d.action is Action.STEP_UP:
            history.append(now)
            step, percent = d.step, d.percent
            cut = split.threshold(percent)
            counts = [[0, 0, 0, 0], [0, 0, 0, 0]]
        if cand_total >= GIVE_UP:
            return {"outcome": "undecided", "candidate_impressions": cand_total, "impressions": impressions,
                    "step": step, "looks": decisions, "reason": d.reason}


def summarise(runs: list[dict], outcome: str, within: int | None = None) -> dict:
    """The count of `outcome` (and of it within `within` candidate impressions), and for every outcome seen the
    candidate impressions it took: median, 95th percentile, max."""
    out: dict = {"runs": len(runs), outcome: sum(r["outcome"] == outcome for r in runs),
                 "outcomes": {o: sum(r["outcome"] == o for r in runs) for o in ("promoted", "rolled_back", "undecided")}}
    for o in out["outcomes"]:
        hits = sorted(r["candidate_impressions"] for r in runs if r["outcome"] == o)
        if hits:
            out["candidate_impressions_at_" + o] = {"median": statistics.median(hits),
                                                    "p95": hits[min(len(hits) - 1, round(0.95 * (len(hits) - 1)))],
                                                    "max": hits[-1]}
    if within is not None:
        out[f"{outcome}_within_{within}"] = sum(r["outcome"] == outcome and r["candidate_impressions"] <= within
                                                for r in runs)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--more-runs", type=int, default=500,
                        help="larger samples of the A/A and 5-points-worse cases, for tighter estimates")
    parser.add_argument("--look-every", type=int, default=100)
    args = parser.parse_args()
    config = RolloutConfig()
    t0 = time.perf_counter()
    report: dict = {"config": dataclasses.asdict(config), "p_control": P_CONTROL, "scenarios": SCENARIOS,
                    "error_rate_both_arms": ERROR_RATE, "look_every_impressions": args.look_every,
                    "split": split_accuracy()}
    runs = {name: [simulate(config, p, seed, args.look_every) for seed in range(args.runs)]
            for name, p in SCENARIOS.items()}
    worse = summarise(runs["worse"], "rolled_back", 4000)
    same = summarise(runs["same"], "rolled_back")
    better = summarise(runs["better"], "promoted", 15_000)
    more = {name: [simulate(config, SCENARIOS[name], 10_000 + seed, args.look_every) for seed in range(args.more_runs)]
            for name in ("worse", "same")}
    report["results"] = {"worse": worse, f"worse_{args.more_runs}_more_runs": summarise(more["worse"], "rolled_back", 4000),
                         "same": same, f"same_{args.more_runs}_more_runs": summarise(more["same"], "rolled_back"),
                         "better": better, "slightly_worse": summarise(runs["slightly_worse"], "rolled_back")}
    report["targets"] = {
        "split_10_plus_minus_1": report["split"]["within_1_point"],
        "worse_rolled_back_within_4000_all_runs": worse["rolled_back_within_4000"] == args.runs,
        "aa_rolled_back_at_most_5_percent": same["rolled_back"] <= 0.05 * args.runs,
        "better_promoted_within_15000_in_80_percent": better["promoted_within_15000"] >= 0.8 * args.runs}
    report["aa_rollback_reasons"] = [r["reason"] for r in runs["same"] if r["outcome"] == "rolled_back"]
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    path = write("rollout_stats", report)
    print({k: report[k] for k in ("split", "results", "targets", "wall_seconds")})
    print(f"wrote {path}")
    return 0 if all(report["targets"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
