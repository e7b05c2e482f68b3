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
