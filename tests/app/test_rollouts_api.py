"""Rollouts over HTTP in one process on SQLite (two real instances on both engines: test_rollouts_e2e.py): starting
one and its refusals, the alias it holds, a rollout promoted or rolled back by what users accept, one rolled back
by its error guardrail (a candidate whose bytes were corrupted after registration fails every load), manual
promotion and abort, the live metrics of a model and of each arm, and a shadow scored on what users typed."""
from __future__ import annotations

import itertools
import random

import sqlalchemy as sa

from app.storage.schema import models
from tests.app.test_aliases_api import NO_KEY, register_copy
from tests.conftest import poll

FAST = {"rollout_decide_s": 0.1, "live_flush_s": 0.1}


def start(c, **body) -> dict:
    r = c.post("/rollouts", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def field_of(r) -> str:
    assert r.status_code == 422, r.text
    return r.json()["fields"][0]["field"]


def drive(c, rollout_id: str, accept: str | None, sessions: range, typed: str | None = None, **params) -> None:
    """Users with their own sessions ask /topk; `accept` takes the first suggestion on that arm only and none on
    the other; `typed`: what they then type (the first suggestion, or a sequence no model suggests)."""
    for i in sessions:
        r = c.get("/topk", params={"start": i % 10, "k": 3, "session": f"user-{i}", **params})
        assert r.status_code in (200, 503), r.text
        if r.status_code != 200 or r.json().get("rollout") != rollout_id:
            continue
        answer = r.json()
        first = answer["suggestions"][0]["sequence"]
        sent = {"impression": answer["impression"], "accepted": first if answer["arm"] == accept else None,
                "typed": None if typed is None else first if typed == "first" else [9, 9, 9, 9, 9]}
        assert c.post("/feedback", json=sent).status_code == 202


def batch(n: int, size: int) -> range:
    return range(n * size, (n + 1) * size)


def ended(c, rollout_id: str) -> dict | None:
    view = c.get(f"/rollouts/{rollout_id}").json()
    return view if view["status"] != "running" else None


def test_starting_a_rollout_its_refusals_and_the_alias_it_holds(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy)
    register_copy(c, "trained")
    assert c.post("/rollouts", json={"candidate": "alt"}, headers=NO_KEY).status_code == 401
    assert field_of(c.post("/rollouts", json={"candidate": "alt", "steps": [50, 10]})) == "steps"
    assert field_of(c.post("/rollouts", json={"candidate": "alt", "guardrails": {"error_rate": 2}})) == \
        "guardrails.error_rate"
    assert field_of(c.post("/rollouts", json={"candidate": "alt", "metric": "clicks"})) == "metric"
    assert field_of(c.post("/rollouts", json={"candidate": "alt", "bogus": 1})) == "bogus"
    assert field_of(c.post("/rollouts", json={"candidate": "alt", "alias": "Bad"})) == "name"
    assert c.post("/rollouts", json={"candidate": "nope"}).status_code == 404
    assert c.post("/rollouts", json={"candidate": "alt", "alias": "champion"}).status_code == 404
    assert c.post("/rollouts", json={"candidate": "default"}).status_code == 409  # production names it already
    rollout = start(c, candidate="alt")
    assert (rollout["status"], rollout["step"], rollout["percent"], rollout["control"]) == ("running", 0, 10, "default")
    assert rollout["steps"] == [10, 50, 100] and rollout["config"]["min_requests"] == 3000  # RolloutConfig's defaults
    assert c.post("/rollouts", json={"candidate": "trained"}).status_code == 409  # one running rollout per alias
    assert c.get("/aliases/production").json()["rollout"] == {
        "id": rollout["id"], "step": 0, "percent": 10.0, "candidate": "alt", "shadow": False}
    # production is held: a move is refused (not taken as an abort), and so is a job-like activation
    refused = c.put("/aliases/production", json={"model": "trained"})
    assert refused.status_code == 409 and rollout["id"] in refused.json()["message"]
    assert c.post("/models/trained/activate").status_code == 409
    assert c.delete("/models/alt").status_code == 409  # shipped anyway; a trained candidate is refused too
    # another alias: deleting it under its rollout is a 409, and the candidate cannot be deleted
    assert c.put("/aliases/champion", json={"model": "default"}).status_code == 200
    other = start(c, alias="champion", candidate="trained")
    assert c.delete("/aliases/champion").status_code == 409
    assert "candidate" in c.delete("/models/trained").json()["message"]
    aborted = c.post(f"/rollouts/{other['id']}/abort")
    assert aborted.status_code == 200 and aborted.json()["status"] == "aborted"
    assert c.post(f"/rollouts/{other['id']}/abort").status_code == 409  # ended already
    assert c.delete("/aliases/champion").status_code == 204
    assert [r["id"] for r in c.get("/rollouts").json()] == [other["id"], rollout["id"]]
    assert c.get("/rollouts/r-nope").status_code == 404


def test_a_candidate_users_accept_more_is_stepped_up_then_promoted(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy, **FAST)
    rollout = start(c, candidate="alt", steps=[20, 50, 100], min_requests=8, min_feedback=8,
                    guardrails={"p99_ratio": None})
    rid = rollout["id"]
    rounds = itertools.count()

    def promoted():
        n = next(rounds)
        drive(c, rid, "candidate", range(n * 40, n * 40 + 40))
        return ended(c, rid)

    view = poll(promoted, 60, interval=0.2, message="the rollout to end")
    assert view["status"] == "promoted", view["reason"]
    assert [(d["action"], d["step"]) for d in view["decisions"]] == [("start", 0), ("step_up", 1), ("promote", 1)]
    assert view["decisions"][-1]["figures"]["test"]["difference"] > 0
    assert c.get("/models/active").json()["id"] == "alt"
    move = c.get("/aliases/production/history").json()[0]
    assert (move["model"], move["actor"]) == ("alt", f"rollout {rid}")
    arms = view["arms"]
    assert arms["candidate"]["acceptance_rate"] == 1.0 and arms["control"]["acceptance_rate"] == 0.0
    assert arms["candidate"]["metric_ci"][0] > arms["control"]["metric_ci"][1]
    # the process follows the promotion like any move of production: within a second, not at once
    poll(lambda: "rollout" not in (after := c.get("/topk", params={"start": 7, "session": "user-1"}).json())
         and after["model"] == "alt", 5, message="the promoted candidate to serve everyone")
    live = poll(lambda: (lv := c.get("/models/alt").json()["live"])["requests"] >= arms["candidate"]["requests"] and lv,
                5, message="the model's live counters")
    assert live["accepted"] == live["impressions_with_feedback"] > 0 and live["p99_ms"] is not None
    metrics = c.get("/metrics").text
    assert 'seq2seq_arm_requests_total{arm="candidate",status="2xx"}' in metrics
    assert 'seq2seq_arm_feedback_total{arm="control",outcome="not_accepted"}' in metrics


def test_a_candidate_users_accept_less_is_rolled_back_on_acceptance(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy, **FAST)
    rid = start(c, candidate="alt", steps=[50, 100], min_requests=100_000, guardrails={"p99_ratio": None})["id"]
    rounds = itertools.count()
    view = poll(lambda: drive(c, rid, "control", batch(next(rounds), 40)) or ended(c, rid),
                60, interval=0.2, message="the roll back")
    assert (view["status"], view["cause"]) == ("rolled_back", "acceptance"), view["reason"]
    assert view["decisions"][-1]["figures"]["test"]["worse"] is True
    assert c.get("/models/active").json()["id"] == "default"
    poll(lambda: "rollout" not in c.get("/topk", params={"start": 7, "session": "user-1"}).json(), 5,
         message="traffic back to the control")


def test_a_candidate_that_fails_is_rolled_back_on_its_error_guardrail(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy, **FAST)
    register_copy(c, "broken")
    with c.app.state.storage.engine.begin() as conn:  # its stored bytes no longer match their hash: loads fail
        blob = conn.execute(sa.select(models.c.checkpoint).where(models.c.id == "broken")).scalar_one()
        conn.execute(sa.update(models).where(models.c.id == "broken").values(checkpoint=blob[:-100] + bytes(100)))
    rid = start(c, candidate="broken", steps=[50, 100], min_requests=100_000)["id"]
    rounds = itertools.count()
    view = poll(lambda: drive(c, rid, None, batch(next(rounds), 20)) or ended(c, rid),
                60, interval=0.2, message="the roll back")
    assert (view["status"], view["cause"]) == ("rolled_back", "error_rate"), view["reason"]
    candidate = view["arms"]["candidate"]
    assert candidate["errors"] == candidate["requests"] >= 5 and view["arms"]["control"]["errors"] == 0


def test_manual_promotion_and_the_split_within_one_process(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy, **FAST)
    rid = start(c, candidate="alt", steps=[30, 100], guardrails={"p99_ratio": None})["id"]
    arms = [c.get("/topk", params={"start": 7, "session": f"s{i}"}).json()["arm"] for i in range(400)]
    share = arms.count("candidate") / len(arms)
    assert 0.22 < share < 0.38, share  # 30% of sessions: 4 standard deviations either way
    again = [c.post("/predict", json={"start": 1, "session": f"s{i}"}).json()["arm"] for i in range(400)]
    assert again == arms  # sticky per session, whatever the route
    rng = random.Random(5)
    drawn = [c.get("/topk", params={"start": rng.randrange(10)}).json()["arm"] for _ in range(50)]
    assert set(drawn) <= {"control", "candidate"}  # without a session: drawn per request
    view = c.post(f"/rollouts/{rid}/promote")
    assert view.status_code == 200 and view.json()["status"] == "promoted"
    assert view.json()["decisions"][-1]["actor"] == "api"
    assert c.get("/aliases/production").json()["model"] == "alt"
    assert c.post(f"/rollouts/{rid}/promote").status_code == 409


def test_a_shadow_takes_no_traffic_and_is_scored_on_what_users_typed(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy, **FAST)
    rid = start(c, candidate="alt", shadow=True, sample=1.0)["id"]
    drive(c, rid, "control", range(60), typed="first")
    answers = {c.get("/topk", params={"start": 3, "session": f"x{i}"}).json()["model"] for i in range(20)}
    assert answers == {"default"}  # no traffic to the candidate

    def scored():
        shadow = c.get(f"/rollouts/{rid}").json()["arms"]["shadow"]
        return shadow["typed"] >= 60 and shadow["requests"] >= 60 and shadow

    shadow = poll(scored, 20, interval=0.2, message="the shadow's decodes and scores")
    assert shadow["hit_at_1"] == 1.0  # the same weights: what users typed was the shadow's first suggestion too
    view = c.get(f"/rollouts/{rid}").json()
    assert view["status"] == "running" and view["comparison"]["metric"] == "hit_at_3"
    assert view["arms"]["control"]["hit_at_1"] == 1.0
