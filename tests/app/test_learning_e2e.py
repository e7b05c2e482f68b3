"""The learning loop against real servers: users' feedback crosses the threshold, a cycle trains as an ordinary job,
the offline gate passes, the candidate is rolled out and its promotion ends the cycle; and a cycle whose worker is
SIGKILLed mid-training completes on another worker."""
from __future__ import annotations

import random
import signal

import httpx

from tests.conftest import Worker, poll

# Users who type 3 and 4 and want continuations the shipped corpus lacks; each event tells what they typed.
WANTED = {3: [[3, 0, 0, 1, 1], [3, 9, 9, 2, 2], [3, 4, 4, 4, 4]], 4: [[4, 0, 0, 1, 1], [4, 9, 9, 2, 2], [4, 4, 3, 2, 1]]}
POLICY = {"enabled": True, "min_feedback": 120, "session_cap": 0.05, "holdout_fraction": 0.1,
          "training": {"steps": 300}, "gate": {"resamples": 500},
          "rollout": {"steps": [50, 100], "min_requests": 5, "min_feedback": 5}}


def users(c: httpx.Client, sessions: range, per_session: int, seed: int) -> int:
    """Each user asks /topk for the first digit of what they mean, takes it if it is among the three shown, and
    says what they typed. Returns how many took a suggestion."""
    rng = random.Random(seed)
    taken = 0
    for s in sessions:
        for _ in range(per_session):
            digit = rng.choice([3, 4])
            meant = rng.choices(WANTED[digit], weights=[0.6, 0.3, 0.1])[0]
            answer = c.get("/topk", params={"start": digit, "k": 3}, headers={"X-Session-ID": f"user-{s}"}).json()
            shown = [x["sequence"] for x in answer["suggestions"]]
            accepted = meant if meant in shown else None
            taken += accepted is not None
            r = c.post("/feedback", json={"impression": answer["impression"], "accepted": accepted, "typed": meant})
            assert r.status_code == 202, r.text
    return taken


def cycle_past(c: httpx.Client, status: str, timeout: float) -> dict:
    def moved():
        cycles = c.get("/learning/cycles").json()
        return cycles[0] if cycles and cycles[0]["status"] != status else None

    return poll(moved, timeout, interval=0.2, message=f"the cycle to leave {status}")


def test_feedback_past_the_threshold_becomes_a_gated_rolled_out_promoted_model(make_server):
    srv = make_server(SEQ2SEQ_LEARNING_CHECK_S="0.2").start()
    srv.wait_ready()
    with srv.client() as c:
        assert c.put("/learning", json=POLICY).status_code == 200
        assert users(c, range(0, 59), 2, seed=1) == 0  # the shipped model never shows what they mean
        assert c.get("/learning/cycles").json() == []  # 118 events: below the threshold
        users(c, range(59, 60), 2, seed=2)  # the crossing
        cycle = poll(lambda: (cs := c.get("/learning/cycles").json()) and cs[0], 10, message="a cycle")
        assert (cycle["trigger"], cycle["control"], cycle["counts"]["new_events"]) == ("threshold", "default", 120)
        assert cycle["counts"]["holdout_sessions"] == 6 and cycle["data"]["touched"] == [3, 4]
        job = c.get(f"/jobs/{cycle['job_id']}").json()
        assert job["trigger"] == "learning" and job["config"]["dataset"]["sha256"] == cycle["data"]["training_sha256"]
        rolling = cycle_past(c, "training", 120)
        assert rolling["status"] == "rolling_out", rolling
        gate = rolling["gate"]
        assert gate["passed"] and gate["usage"]["n"] == 12 and gate["usage"]["control"]["hit3"] == 0.0
        assert gate["usage"]["difference"]["hit3"]["low"] > 0
        model = c.get(f"/models/{rolling['candidate']}").json()
        assert model["metrics"]["learning_gate"]["usage"] == gate["usage"]  # stored with the model too
        assert set(model["data"]) == {"kind", "sequences", "sha256", "frequencies"}  # the corpus kept is never shown
        assert "3, 0, 0, 1, 1" not in c.get("/models").text.replace(",", ", ")
        rollout = c.get(f"/rollouts/{rolling['rollout_id']}").json()
        assert (rollout["status"], rollout["candidate"], rollout["steps"]) == ("running", rolling["candidate"], [50, 100])
        assert c.post("/learning/run", json={}).status_code == 409  # one open cycle per alias
        # the users in the candidate's half now get what they mean
        assert users(c, range(100, 140), 1, seed=3) > 0
        assert c.post(f"/rollouts/{rolling['rollout_id']}/promote").status_code == 200
        ended = cycle_past(c, "rolling_out", 10)
        assert (ended["status"], ended["outcome"]) == ("ended", "promoted") and rolling["rollout_id"] in ended["reason"]
        assert c.get("/models/active").json()["id"] == rolling["candidate"]
        poll(lambda: c.get("/topk", params={"start": 3, "k": 3}).json()["model"] == rolling["candidate"], 5)
        shown = [x["sequence"] for x in c.get("/topk", params={"start": 3, "k": 3}).json()["suggestions"]]
        assert shown == WANTED[3]
        base = c.get("/topk", params={"start": 7, "k": 3}).json()["suggestions"]
        assert [x["sequence"] for x in base] == [[7, 2, 8, 4, 3], [7, 6, 5, 2, 8], [7, 9, 1, 2, 4]]  # untouched


def test_a_cycle_survives_a_worker_killed_mid_training(make_server, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared' / 'seq2seq.db'}"
    (tmp_path / "shared").mkdir()
    api = make_server(SEQ2SEQ_DATABASE_URL=url, SEQ2SEQ_JOB_WORKERS="0", SEQ2SEQ_LEARNING_CHECK_S="0.2").start()
    api.wait_ready()
    pool = [Worker(tmp_path / f"worker{i}", url, SEQ2SEQ_JOB_LEASE_S="2") for i in range(2)]
    try:
        with api.client() as c:
            c.put("/learning", json={**POLICY, "enabled": False, "training": {"steps": 800}})
            users(c, range(0, 60), 2, seed=1)
            cycle = c.post("/learning/run", json={}).json()
            running = poll(lambda: (j := c.get(f"/jobs/{cycle['job_id']}").json())["progress"]["step"] > 0 and j, 60,
                           message="the cycle's job to train")
            holder = next(w for w in pool if w.proc.pid == running["worker"]["pid"])
            holder.stop(signal.SIGKILL)
            after = cycle_past(c, "training", 240)
            job = c.get(f"/jobs/{cycle['job_id']}").json()
            assert job["status"] == "succeeded" and job["attempt"] == 2, job
            assert after["status"] == "rolling_out" and after["gate"]["passed"], after
            assert c.post(f"/rollouts/{after['rollout_id']}/abort").status_code == 200
            ended = cycle_past(c, "rolling_out", 10)
            assert (ended["outcome"], ended["number"]) == ("aborted", 1)
    finally:
        for w in pool:
            w.stop(signal.SIGKILL)
