"""The learning API in process (ASGI client, real SQLite): the policy read and set with the key, validated in one
place (422 naming the field), cycles listed, and a session's feedback deleted on request."""
from __future__ import annotations


def feedback(client, session: str, start: int = 7) -> None:
    answer = client.get("/topk", params={"start": start, "k": 3}, headers={"X-Session-ID": session}).json()
    chosen = answer["suggestions"][0]["sequence"]
    r = client.post("/feedback", json={"impression": answer["impression"], "accepted": chosen, "typed": chosen})
    assert r.status_code == 202, r.text


def test_a_sessions_feedback_is_deleted_with_the_key_and_no_one_elses(client):
    for start in (1, 2, 3):
        feedback(client, "user-1", start)
    feedback(client, "user-2")
    assert client.delete("/feedback", params={"session": "user-1"}, headers={"Authorization": ""}).status_code == 401
    r = client.delete("/feedback", params={"session": "user-1"})
    assert r.status_code == 200 and r.json() == {"session": "user-1", "deleted": 3}
    assert client.delete("/feedback", params={"session": "user-1"}).json()["deleted"] == 0
    assert client.app.state.storage.feedback.count() == 1
    for params, field in (({}, "session"), ({"session": "a b"}, "session"), ({"session": "x", "k": "1"}, "k")):
        r = client.delete("/feedback", params=params)
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == field, r.text


def test_the_policy_is_off_until_enabled_and_reads_back_as_set(client):
    r = client.get("/learning")
    assert r.status_code == 200
    policy = r.json()
    assert (policy["alias"], policy["enabled"], policy["state"]["stored"]) == ("production", False, False)
    assert (policy["min_feedback"], policy["holdout_fraction"], policy["session_cap"]) == (1000, 0.1, 0.01)
    assert client.put("/learning", json={"enabled": True}, headers={"Authorization": ""}).status_code == 401
    r = client.put("/learning", json={"enabled": True, "min_feedback": 50, "gate": {"base_margin": 0.05},
                                      "rollout": {"steps": [20, 100], "min_requests": 10}})
    assert r.status_code == 200, r.text
    got = client.get("/learning").json()
    assert (got["enabled"], got["min_feedback"], got["gate"]["base_margin"], got["gate"]["confidence"]) == \
        (True, 50, 0.05, 0.95)
    assert got["rollout"] == {"steps": [20, 100], "min_requests": 10} and got["state"]["stored"]
    r = client.put("/learning", json={"enabled": False})  # a field left out keeps its value
    assert (r.json()["enabled"], r.json()["min_feedback"]) == (False, 50)


def test_a_bad_policy_is_a_422_naming_its_field_and_changes_nothing(client):
    client.put("/learning", json={"min_feedback": 50})
    for body, field in (({"min_feedback": 0}, "min_feedback"), ({"min_feedback": "x"}, "min_feedback"),
                        ({"holdout_fraction": 0.9}, "holdout_fraction"), ({"session_cap": 0}, "session_cap"),
                        ({"usage_weight": -1}, "usage_weight"), ({"max_interval_s": 0}, "max_interval_s"),
                        ({"gate": {"confidence": 1.5}}, "gate.confidence"), ({"gate": {"nope": 1}}, "gate.nope"),
                        ({"rollout": {"steps": [50, 10]}}, "rollout.steps"),
                        ({"rollout": {"guardrails": {"error_rate": 2}}}, "rollout.guardrails.error_rate"),
                        ({"training": {"steps": 0}}, "training.steps"), ({"alias": "Bad Name"}, "alias"),
                        ({"colour": "red"}, "colour"), ({"enabled": "yes"}, "enabled")):
        r = client.put("/learning", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["fields"][0]["field"] == field, (body, r.json())
    assert client.get("/learning").json()["min_feedback"] == 50
    assert client.get("/learning", params={"alias": "NO"}).json()["fields"][0]["field"] == "alias"


def test_a_cycle_by_hand_is_an_ordinary_job_that_says_it_is_learnings(make_client):
    client = make_client(job_workers=0)  # nothing trains here: the job stays queued
    for i in range(12):
        feedback(client, f"user-{i}", i % 3)
    r = client.post("/learning/run", json={})
    assert r.status_code == 202, r.text
    cycle = r.json()
    assert (cycle["number"], cycle["trigger"], cycle["status"], cycle["control"]) == (1, "manual", "training", "default")
    assert cycle["counts"]["events"] == 12 and cycle["counts"]["holdout_sessions"] == 2  # ceil(10% of 12)
    assert cycle["data"]["base_source"] == "weights/corpus.json"
    assert client.post("/learning/run", json={}).status_code == 409  # one open cycle per alias
    job = client.get(f"/jobs/{cycle['job_id']}").json()
    assert (job["trigger"], job["config"]["cycle"], job["model_id"]) == ("learning", cycle["id"], cycle["candidate"])
    assert job["config"]["dataset"]["sha256"] == cycle["data"]["training_sha256"]
    assert "learning" not in job["config"]  # the holdout and the corpus stay in the body, which /jobs never shows
    assert [c["id"] for c in client.get("/learning/cycles").json()] == [cycle["id"]]
    assert client.get(f"/learning/cycles/{cycle['id']}").json()["job"]["status"] == "queued"
    assert client.get("/learning/cycles/c-nothing").status_code == 404
    assert client.get("/learning").json()["state"]["open_cycle"] == cycle["id"]
    assert client.get("/learning/cycles", params={"limit": "0"}).status_code == 422
    assert client.post("/learning/run", json={"alias": "nowhere"}).status_code == 404
    assert client.get("/learning", params={"alias": "nowhere"}).json()["state"]["stored"] is False  # none was made
