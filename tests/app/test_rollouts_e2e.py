"""Rollouts across two real instances on one database, on SQLite and PostgreSQL: both route a session to the same
arm (the split's accuracy and stickiness), both count into the same live counters, and both run the decider, yet
every step change is decided once (one decision row per step change)."""
from __future__ import annotations

import itertools

import httpx

from tests.conftest import poll

FAST = {"SEQ2SEQ_ROLLOUT_DECIDE_S": "0.1", "SEQ2SEQ_LIVE_FLUSH_S": "0.2"}


def test_two_instances_split_alike_count_together_and_decide_each_step_once(make_server, weights_copy, database_url,
                                                                           tmp_path):
    (tmp_path / "shared").mkdir(exist_ok=True)
    a, b = (make_server(tmp_path / name, weights_dir=weights_copy, SEQ2SEQ_DATABASE_URL=database_url,
                        SEQ2SEQ_JOB_WORKERS="0", **FAST).start() for name in ("a", "b"))
    a.wait_ready()
    b.wait_ready()
    with a.client() as ca, b.client() as cb:
        r = ca.post("/rollouts", json={"candidate": "alt", "steps": [20, 50, 100], "min_requests": 10,
                                       "min_feedback": 10, "guardrails": {"p99_ratio": None}})
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        assert cb.post("/rollouts", json={"candidate": "alt"}).status_code == 409  # one per alias, from any instance
        poll(lambda: (cb.get("/aliases/production").json()["rollout"] or {}).get("id") == rid, 5,
             message="B to follow the rollout")
        arms = {}
        for i in range(300):
            seen = {c.get("/topk", params={"start": 7, "session": f"u{i}"}).json()["arm"] for c in (ca, cb)}
            assert len(seen) == 1, i  # the same session lands on the same arm on both instances
            arms[i] = seen.pop()
        share = sum(arm == "candidate" for arm in arms.values()) / len(arms)
        assert 0.11 < share < 0.29, share  # 20% of 300 sessions: within 4 standard deviations
        rounds = itertools.count()

        def promoted():
            n = next(rounds)
            for i in range(n * 40, n * 40 + 40):  # users alternate instances; they accept only the candidate
                c = (ca, cb)[i % 2]
                answer = c.get("/topk", params={"start": i % 10, "session": f"v{i}"}).json()
                if answer.get("rollout") != rid:
                    continue
                accepted = answer["suggestions"][0]["sequence"] if answer["arm"] == "candidate" else None
                feedback = (cb, ca)[i % 2].post("/feedback", json={"impression": answer["impression"],
                                                                   "accepted": accepted})
                assert feedback.status_code == 202, feedback.text
            view = ca.get(f"/rollouts/{rid}").json()
            return view if view["status"] != "running" else None

        view = poll(promoted, 90, interval=0.1, message="the rollout to be promoted")
        assert view["status"] == "promoted", view["reason"]
        assert [(d["action"], d["step"]) for d in view["decisions"]] == [("start", 0), ("step_up", 1), ("promote", 1)]
        poll(lambda: httpx.get(f"{b.url}/topk", params={"start": 7}).json()["model"] == "alt", 5,
             message="B to serve the promoted candidate")
        both = view["arms"]["candidate"]
        assert both["requests"] >= 10 and both["acceptance_rate"] == 1.0
