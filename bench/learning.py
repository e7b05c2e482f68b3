"""The learning loop, whole, through HTTP on one instance, with simulated users (issue 18's "Must show").

The users type only the start digits 2, 5 and 8 (a third each). For each they mean one of three continuations the
shipped corpus does not have (with probabilities 0.5, 0.25, 0.15) or the corpus's most frequent one (0.1), so the
best any model can do is a hit@3 of 0.9. A user visit is a session of 1 to 9 events; an event is GET /topk (k=3)
for the digit, the intended sequence accepted when it is among the three shown, and POST /feedback with `typed`.

Parts (`--parts`):
- weights: the offline choice of `usage_weight` (no HTTP): the shipped model's corpus plus 1,000 users' events,
  built into a training set by the cycle's own rules at each weight and trained with the default recipe; for each,
  the users' hit@3 and, on the digits users never typed, the top-3 ranking and the mean total-variation distance
  to the shipped model. Also the training set's size and the training time.
- loop: `python -m app` with the defaults and `PUT /learning {"enabled": true}` (every policy field its default),
  then 3 cycles. Each: the users' events up to `min_feedback` new ones (the threshold crossing), the cycle's job,
  its gate, its rollout (driven by the users' traffic until it ends) and the promoted model serving; inference
  throughput (wrk, /topk, 32 connections) idle just before the crossing and while the cycle's job trains.
  Reported: users' hit@3 before and after each cycle (exact: the users' distribution against production's top 3),
  the untouched digits' top 3 and probabilities against the shipped model's (TV exact, over all 10,000
  continuations, from the checkpoints), the times from the crossing to the cycle, to its gate, to its rollout and
  to the promoted model serving, and the throughput ratio. Targets: hit@3 from below 0.2 to at least 0.8; the
  same ranking and mean TV at most 0.05 on untouched digits; throughput during a cycle at least 0.8x idle.

  python bench/learning.py [--parts weights,loop] [--cycles 3] [--concurrency 16] [--wrk-seconds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import torch
from common import ROOT, write
from load import lua_script, ours_env, run_wrk, serving

sys.path.insert(0, str(ROOT))

from app.learning import DEFAULTS
from app.learning.training_set import build
from model import checkpoint, decoding
from model.config import TrainConfig
from model.training import Dataset, train

KEY = "bench-management-key-0123456789abcdef"
DIGITS = (2, 5, 8)
WEIGHTS = (0.5, 0.25, 0.15)  # the three new continuations; the corpus's top one takes the rest (0.1)
CORPUS = json.loads((ROOT / "weights" / "corpus.json").read_text())["sequences"]
UNTOUCHED = [d for d in range(10) if d not in DIGITS]
HIT3_TARGET, TV_TARGET, THROUGHPUT_TARGET = 0.8, 0.05, 0.8


def corpus_top(digit: int) -> list[int]:
    counts: dict[tuple[int, ...], int] = {}
    for s in CORPUS:
        if s[0] == digit:
            counts[tuple(s)] = counts.get(tuple(s), 0) + 1
    return list(max(counts, key=lambda s: counts[s]))


def wanted(digit: int) -> list[tuple[list[int], float]]:
    """What users mean after `digit`: three continuations the corpus lacks, and its most frequent one."""
    new = [[digit, 0, 0, digit, 1], [digit, 9, 9, digit, 2], [digit, 4, 4, 4, 4]]
    assert not any(s in CORPUS for s in new)
    return [*zip(new, WEIGHTS), (corpus_top(digit), round(1 - sum(WEIGHTS), 6))]


USERS = {d: wanted(d) for d in DIGITS}


def users_hit3(top3: dict[int, list[list[int]]]) -> float:
    """The users' expected hit@3 against these suggestions (exact, over their distribution)."""
    return round(sum(w for d in DIGITS for s, w in USERS[d] if s in top3[d]) / len(DIGITS), 4)


class Users:
    """Visits of 1-9 events, each a session of its own; seeded."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.visit = itertools.count()
        self._left = 0
        self._session = ""

    def next(self) -> tuple[str, int, list[int]]:
        if self._left == 0:
            self._left = self.rng.randint(1, 9)
            self._session = f"v{next(self.visit)}"
        self._left -= 1
        digit = self.rng.choice(DIGITS)
        sequences, weights = zip(*USERS[digit])
        return self._session, digit, list(self.rng.choices(sequences, weights=weights)[0])


# -- part 1: usage_weight, offline -----------------------------------------------------------------------------
class Event:
    def __init__(self, seq: int, session: str, typed: list[int]):
        self.seq, self.session, self.typed, self.accepted = seq, session, tuple(typed), None


def exact_distribution(model, digit: int) -> dict[tuple[int, ...], float]:
    rest = list(itertools.product(range(10), repeat=4))
    sequences = [[digit, *r] for r in rest]
    logp = decoding.score(model, [[digit]] * len(sequences), sequences)
    return {tuple(s): math.exp(lp) for s, lp in zip(sequences, logp)}


def untouched_figures(model, base) -> dict:
    """On the digits users never typed: the top 3 of both, whether the ranking is the same, and the TV distance."""
    rows, tvs = {}, []
    for d in UNTOUCHED:
        p, q = exact_distribution(model, d), exact_distribution(base, d)
        tv = 0.5 * sum(abs(p[s] - q[s]) for s in p)
        top_p = sorted(p, key=p.get, reverse=True)[:3]
        top_q = sorted(q, key=q.get, reverse=True)[:3]
        rows[str(d)] = {"top3": [[list(s), round(p[s], 4)] for s in top_p],
                        "base_top3": [[list(s), round(q[s], 4)] for s in top_q], "same_ranking": top_p == top_q,
                        "tv": round(tv, 5)}
        tvs.append(tv)
    return {"digits": rows, "mean_tv": round(sum(tvs) / len(tvs), 5), "max_tv": round(max(tvs), 5),
            "rankings_same": sum(r["same_ranking"] for r in rows.values())}


def top3_of(model) -> dict[int, list[list[int]]]:
    return {d: [c.sequence for c in row] for d, row in zip(DIGITS, decoding.topk(model, [[d] for d in DIGITS], 3))}


def weights_part(args) -> dict:
    torch.set_num_threads(1)  # as a training job runs
    base = checkpoint.load(ROOT / "weights" / "default.pt")
    users = Users(seed=1)
    events = []
    for i in range(DEFAULTS.min_feedback):
        session, _, meant = users.next()
        events.append(Event(i, session, meant))
    rows = []
    for weight in args.weights:
        built = build(CORPUS, events, seq_length=5, vocab_size=10, holdout_fraction=DEFAULTS.holdout_fraction,
                      session_cap=DEFAULTS.session_cap, usage_weight=weight, max_usage_share=DEFAULTS.max_usage_share)
        started = time.monotonic()
        result = train(base.config, TrainConfig(seed=0), Dataset(base.config, built.sequences))
        seconds = time.monotonic() - started
        row = {"usage_weight": weight, "training_sequences": len(built.sequences),
               "usage_examples": len(built.usage), "train_seconds": round(seconds, 1),
               "users_hit3": users_hit3(top3_of(result.model)), "untouched": untouched_figures(result.model, base.model)}
        rows.append(row)
        print(f"usage_weight {weight:g}: users' hit@3 {row['users_hit3']}, untouched mean TV "
              f"{row['untouched']['mean_tv']} (max {row['untouched']['max_tv']}), rankings "
              f"{row['untouched']['rankings_same']}/{len(UNTOUCHED)}, {len(built.sequences)} sequences, "
              f"{seconds:.1f} s", flush=True)
    return {"events": len(events), "base_hit3": users_hit3(top3_of(base.model)), "rows": rows}


# -- part 2: the loop through HTTP -------------------------------------------------------------------------------
class Driver:
    """Simulated users against the server: `send(n)` n events, or `run()` until stopped."""

    def __init__(self, url: str, users: Users, concurrency: int):
        self.url, self.users, self.concurrency = url, users, concurrency
        self.sent = self.accepted = self.errors = 0
        self.stop = asyncio.Event()

    async def _one(self, client: httpx.AsyncClient) -> None:
        session, digit, meant = self.users.next()
        try:
            r = await client.get("/topk", params={"start": digit, "k": 3}, headers={"X-Session-ID": session})
            answer = r.json()
            shown = [s["sequence"] for s in answer["suggestions"]]
            accepted = meant if meant in shown else None
            f = await client.post("/feedback", json={"impression": answer["impression"], "accepted": accepted,
                                                     "typed": meant})
            if f.status_code != 202:
                raise RuntimeError(f"feedback {f.status_code}: {f.text[:200]}")
            self.sent += 1
            self.accepted += accepted is not None
        except (httpx.HTTPError, KeyError, RuntimeError, ValueError):
            self.errors += 1

    async def send(self, n: int) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            left = itertools.count()

            async def worker() -> None:
                while next(left) < n:
                    await self._one(client)

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            async def worker() -> None:
                while not self.stop.is_set():
                    await self._one(client)

            await asyncio.gather(*(worker() for _ in range(self.concurrency)))


def production_top3(c: httpx.Client, digits) -> tuple[str, dict[int, list[list[int]]]]:
    models, top = set(), {}
    for d in digits:
        answer = c.get("/topk", params={"start": d, "k": 3}).json()
        models.add(answer["model"])
        top[d] = [s["sequence"] for s in answer["suggestions"]]
    return "/".join(sorted(models)), top


def wait(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout} s waiting for {what}")


def throughput(url: str, seconds: int, model: str) -> dict:
    """wrk on /topk (distinct 3-digit prefixes, k=3, sessions) naming production's model by its id, so that no
    request joins a running rollout's arms (this load must not be what a rollout judges its candidate on)."""
    items = [f"prefix={a},{b},{c}&k=3&model={model}&session=t{(a * 100 + b * 10 + c) % 97}" for a in range(10)
             for b in range(10) for c in range(10)]
    random.Random(0).shuffle(items)
    return run_wrk(url, lua_script("GET", "/topk", items), seconds, 32)


def checkpoint_of(db_url: str, model_id: str):
    from app.storage import load_checkpoint, open_storage

    store = open_storage(db_url, run_migrations=False)
    try:
        return load_checkpoint(store.models.checkpoint_bytes(model_id)).model
    finally:
        store.close()


def rolled_out(c: httpx.Client, url: str, cycle: dict, users: Users, args) -> tuple[dict, float | None]:
    """Drive the users' traffic until the cycle's rollout ends; the cycle's end, and when the promoted model first
    served (monotonic), if it was promoted."""
    traffic = Driver(url, users, args.concurrency)

    async def drive_until_ended() -> None:
        task = asyncio.create_task(traffic.run())
        try:
            deadline = time.monotonic() + args.rollout_timeout
            async with httpx.AsyncClient(base_url=url, timeout=30) as probe:
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    if (await probe.get(f"/learning/cycles/{cycle['id']}")).json()["status"] == "ended":
                        return
        finally:
            traffic.stop.set()
            await task

    asyncio.run(drive_until_ended())
    ended = c.get(f"/learning/cycles/{cycle['id']}").json()
    serving_at = None
    if ended["outcome"] == "promoted":
        wait(lambda: c.get("/topk", params={"start": 2, "k": 3}).json()["model"] == cycle["candidate"], 30,
             "the promoted model to serve")
        serving_at = time.monotonic()
    rollout = c.get(f"/rollouts/{cycle['rollout_id']}").json()
    ended["rollout_traffic"] = {"events": traffic.sent, "accepted": traffic.accepted, "errors": traffic.errors}
    ended["rollout"] = {"id": rollout["id"], "status": rollout["status"], "reason": rollout["reason"],
                        "started_at": rollout["started_at"], "ended_at": rollout["ended_at"],
                        "decisions": [{k: d[k] for k in ("at", "action", "step", "percent", "reason")}
                                      for d in rollout["decisions"]]}
    return ended, serving_at


def seconds_between(start: str | None, end: float | None) -> float | None:
    """From a server timestamp (ISO, UTC) to a wall-clock time of this machine (the same clock)."""
    if start is None or end is None:
        return None
    return round(end - datetime.fromisoformat(start).timestamp(), 1)


def poll_for(predicate, seconds: float):
    """predicate's first truthy value within `seconds`, else None."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def training_now(c: httpx.Client) -> bool:
    return any(j["status"] == "running" for j in c.get("/jobs", params={"limit": 5}).json())


def one_cycle(c: httpx.Client, url: str, n: int, users: Users, args, db_url: str, base) -> dict:
    """One cycle: the users' events up to the threshold (none when the previous rollout's traffic crossed it
    already), the cycle's job (throughput measured while it trains), its gate, its rollout driven by the users'
    traffic, and the figures after it."""
    row: dict = {"cycle": n}
    idles = []
    control = c.get("/models/active").json()["id"]
    if not training_now(c):
        idles += [throughput(url, args.wrk_seconds, control) for _ in range(args.wrk_rounds)]
    def numbered():
        return next((x for x in c.get("/learning/cycles").json() if x["number"] == n), None)

    # Usage goes on during a rollout: by the time a cycle ends, its rollout's traffic may have crossed the threshold
    # again, and the loop starts the next cycle at its next look. Only when it did not do the users cross it here.
    started_already = n > 1 and poll_for(numbered, args.check_wait)
    policy = c.get("/learning").json()
    need = 0 if started_already else max(0, policy["min_feedback"] - (policy["state"]["new_events"] or 0))
    driver = Driver(url, users, args.concurrency)
    started = time.monotonic()
    asyncio.run(driver.send(need))
    crossed = time.time()
    row["events_to_cross"] = {"sent": driver.sent, "errors": driver.errors, "seconds": round(time.monotonic() - started, 1),
                              "crossed_by": "the previous cycle's rollout traffic" if started_already else "these events"}
    cycle = wait(numbered, 120, f"cycle {n}")
    job_id = cycle["job_id"]
    wait(lambda: c.get(f"/jobs/{job_id}").json()["status"] != "queued", 120, "the job to start")
    busy = []
    for _ in range(args.wrk_rounds):  # while the job trains (its gate included); a round it outlived is not counted
        if c.get(f"/jobs/{job_id}").json()["status"] != "running":
            break
        measured = throughput(url, args.wrk_seconds, control)
        if c.get(f"/jobs/{job_id}").json()["status"] == "running":
            busy.append(measured)
    gated = wait(lambda: (x := c.get(f"/learning/cycles/{cycle['id']}").json())["status"] != "training" and x,
                 900, "the gate")
    t_gate = time.time()
    row["gate"] = gated["gate"]
    if not training_now(c):  # the rollout waits for traffic: nothing trains now
        idles += [throughput(url, args.wrk_seconds, control) for _ in range(args.wrk_rounds)]
    idle_rps = statistics.median(x["rps"] for x in idles) if idles else None
    busy_rps = statistics.median(x["rps"] for x in busy) if busy else None
    row["throughput"] = {"idle": idles, "during_training": busy, "idle_rps_median": idle_rps,
                         "training_rps_median": busy_rps,
                         "ratio": round(busy_rps / idle_rps, 3) if idle_rps and busy_rps else None}
    t_serving = None
    if gated["status"] == "rolling_out":
        ended, serving_at = rolled_out(c, url, gated, users, args)
        t_serving = None if serving_at is None else time.time() - (time.monotonic() - serving_at)
        row["rollout_traffic"], row["rollout"] = ended["rollout_traffic"], ended["rollout"]
    final = c.get(f"/learning/cycles/{cycle['id']}").json()
    job = c.get(f"/jobs/{job_id}").json()
    row.update({"id": final["id"], "trigger": final["trigger"], "outcome": final["outcome"], "reason": final["reason"],
                "counts": final["counts"], "data": final["data"],
                "job": {k: job[k] for k in ("id", "status", "attempt", "created_at", "started_at", "finished_at")},
                "seconds": {
                    "crossing_to_cycle": round(_ts(final["created_at"]) - crossed, 1) if need else None,
                    "cycle_to_job_started": seconds_between(final["created_at"], _ts(job["started_at"])),
                    "job_training": seconds_between(job["started_at"], _ts(job["finished_at"])),
                    "cycle_to_gate": seconds_between(final["created_at"], t_gate),
                    "rollout": seconds_between(row.get("rollout", {}).get("started_at"),
                                               _ts(row.get("rollout", {}).get("ended_at"))),
                    "crossing_to_promoted_serving": None if t_serving is None or not need
                    else round(t_serving - crossed, 1),
                    "cycle_to_promoted_serving": seconds_between(final["created_at"], t_serving)}})
    model, top = production_top3(c, DIGITS)
    row["after"] = {"model": model, "users_hit3": users_hit3(top), "top3": top}
    row["untouched"] = untouched_figures(checkpoint_of(db_url, model.split("/")[0]), base)
    print(f"cycle {n}: {row['outcome']} ({(row['reason'] or '')[:160]}); users' hit@3 {row['after']['users_hit3']}; "
          f"untouched mean TV {row['untouched']['mean_tv']}, rankings {row['untouched']['rankings_same']}/"
          f"{len(UNTOUCHED)}; times {row['seconds']}; throughput during training / idle "
          f"{row['throughput']['ratio']}", flush=True)
    return row


def _ts(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso).timestamp()


def loop_part(args, work: Path) -> dict:
    env = {**ours_env(work, "learning", True)}
    db_url = f"sqlite:///{work / 'learning' / 'seq2seq.db'}"
    report: dict = {"policy": None, "cycles": []}
    base = checkpoint.load(ROOT / "weights" / "default.pt").model
    with serving("learning", "app", work, env) as (url, _), \
            httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}) as c:
        policy = c.put("/learning", json={"enabled": True}).json()
        report["policy"] = {k: v for k, v in policy.items() if k != "state"}
        model, top = production_top3(c, DIGITS)
        report["before"] = {"model": model, "users_hit3": users_hit3(top), "top3": top}
        print(f"before: production {model}, users' hit@3 {report['before']['users_hit3']}", flush=True)
        users = Users(seed=7)
        for n in range(1, args.cycles + 1):
            report["cycles"].append(one_cycle(c, url, n, users, args, db_url, base))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="weights,loop")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--wrk-seconds", type=int, default=3)
    parser.add_argument("--wrk-rounds", type=int, default=3)
    parser.add_argument("--rollout-timeout", type=float, default=900)
    parser.add_argument("--check-wait", type=float, default=12, help="how long to wait for the loop to start the next "
                        "cycle on its own (SEQ2SEQ_LEARNING_CHECK_S is 5 s) before the users cross the threshold")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    work = Path(tempfile.mkdtemp(prefix="seq2seq-learning-"))
    report: dict = {"what": "the learning loop through HTTP on one instance with simulated users (issue 18)",
                    "users": {str(d): USERS[d] for d in DIGITS},
                    "note": "2 cores shared by the server, its training process, wrk, the simulated users and "
                            "anything else running on the machine"}
    ok = True
    if "weights" in parts:
        report["weights"] = weights_part(args)
    if "loop" in parts:
        loop = loop_part(args, work)
        report["loop"] = loop
        last = loop["cycles"][-1] if loop["cycles"] else None
        ratios = [c["throughput"]["ratio"] for c in loop["cycles"] if c["throughput"]["ratio"] is not None]
        report["targets"] = {
            "hit3_before_below_0.2": loop["before"]["users_hit3"] < 0.2,
            "hit3_after_at_least_0.8": bool(last) and last["after"]["users_hit3"] >= HIT3_TARGET,
            "untouched_same_ranking": bool(last) and last["untouched"]["rankings_same"] == len(UNTOUCHED),
            "untouched_mean_tv_at_most_0.05": bool(last) and last["untouched"]["mean_tv"] <= TV_TARGET,
            "throughput_during_a_cycle_at_least_0.8": bool(ratios) and min(ratios) >= THROUGHPUT_TARGET}
        ok = all(report["targets"].values())
        print(json.dumps(report["targets"]), flush=True)
    print("written to", write("learning", report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
