"""Sessions, impressions and feedback against real servers: an impression minted by one replica is taken by
another (one key, in the database), recorded once however often it is sent; forged, expired and impossible
feedback is refused naming the field; impressions ride on cached answers without being cached."""
from __future__ import annotations

import base64
import re

import httpx
import pytest

from app import storage
from tests.conftest import poll


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    from tests.conftest import Server

    server = Server(tmp_path_factory.mktemp("feedback"), SEQ2SEQ_JOB_WORKERS="0").start()
    server.wait_ready()
    yield server
    server.stop()


def topk(url: str, **params) -> dict:
    headers = {"X-Session-ID": params.pop("header")} if "header" in params else {}
    r = httpx.get(f"{url}/topk", params={"k": 3, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def send(url: str, impression: str, accepted=None, typed=None) -> httpx.Response:
    return httpx.post(f"{url}/feedback", json={"impression": impression, "accepted": accepted, "typed": typed})


def field_of(r: httpx.Response) -> str:
    assert r.status_code == 422, r.text
    return r.json()["fields"][0]["field"]


def test_feedback_is_taken_by_any_replica_and_recorded_once(make_server, database_url, tmp_path):
    a = make_server(tmp_path / "a", SEQ2SEQ_DATABASE_URL=database_url, SEQ2SEQ_JOB_WORKERS="0").start()
    b = make_server(tmp_path / "b", SEQ2SEQ_DATABASE_URL=database_url, SEQ2SEQ_JOB_WORKERS="0",
                    SEQ2SEQ_IMPRESSIONS="false").start()
    a.wait_ready()
    b.wait_ready()
    answer = topk(a.url, prefix="7,2", header="user-42")
    assert "impression" not in topk(b.url, prefix="7,2")  # B mints none ...
    second = answer["suggestions"][1]["sequence"]
    first = send(b.url, answer["impression"], accepted=second, typed=second)  # ... but takes A's: one shared key
    assert first.status_code == 202, first.text
    again = send(a.url, answer["impression"], accepted=None)
    assert again.status_code == 200 and again.json() == {"impression_id": first.json()["impression_id"],
                                                         "duplicate": True}
    opened = storage.open_storage(database_url, run_migrations=False)
    try:
        assert opened.feedback.count() == 1
        row = opened.feedback.get(first.json()["impression_id"])
        assert (row.model_id, row.prefix, row.k, row.session) == ("default", (7, 2), 3, "user-42")
        assert (row.accepted, row.accepted_rank, row.typed_rank) == (tuple(second), 2, 2)
    finally:
        opened.close()


def test_forged_and_impossible_feedback_is_refused_naming_the_field(srv):
    answer = topk(srv.url, start=3)
    raw = bytearray(base64.urlsafe_b64decode(answer["impression"] + "=="))
    for position in (0, 5, len(raw) // 2, len(raw) - 1):  # the version, the time, the facts, the MAC
        forged = raw.copy()
        forged[position] ^= 0x04
        token = base64.urlsafe_b64encode(bytes(forged)).decode().rstrip("=")
        assert field_of(send(srv.url, token)) == "impression"
    assert field_of(send(srv.url, answer["impression"], accepted=[3, 1, 1, 1, 1])) == "accepted"
    assert field_of(send(srv.url, "x" * 5000)) == "impression"
    assert field_of(send(srv.url, answer["impression"], typed=[1] * 65)) == "typed"
    assert field_of(httpx.post(f"{srv.url}/feedback", json={"impression": answer["impression"], "rating": 5})) \
        == "rating"
    assert send(srv.url, answer["impression"], accepted=answer["suggestions"][2]["sequence"]).status_code == 202


def test_a_batch_answers_each_event_in_one_request(srv):
    answers = httpx.post(f"{srv.url}/topk/batch", json={"prefixes": [[1], [2], [1]], "k": 2}).json()["results"]
    tokens = [item["impression"] for item in answers]
    assert len(set(tokens)) == 3  # the repeated prefix gets an impression of its own
    done = send(srv.url, tokens[2])
    assert done.status_code == 202
    events = [{"impression": tokens[0], "accepted": answers[0]["suggestions"][0]["sequence"]},
              {"impression": tokens[1], "accepted": None, "typed": [2, 2, 2, 2, 2]},
              {"impression": tokens[2]},                                          # had feedback already
              {"impression": tokens[0]},                                          # earlier in this batch
              {"impression": tokens[1][:-4] + "AAAA"},                            # forged
              {"impression": tokens[1], "accepted": [9, 9, 9, 9, 9]},             # not shown
              {"accepted": [1]},                                                  # no impression
              "not an object"]
    r = httpx.post(f"{srv.url}/feedback/batch", json={"events": events})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [item["status"] for item in body["results"]] == [202, 202, 200, 200, 422, 422, 422, 422]
    assert [item.get("field") for item in body["results"][4:7]] == ["impression", "accepted", "impression"]
    assert body["results"][2]["impression_id"] == done.json()["impression_id"]
    assert (body["recorded"], body["duplicates"], body["rejected"]) == (2, 2, 4)
    assert field_of(httpx.post(f"{srv.url}/feedback/batch", json={"events": [{}] * 1001})) == "events"


@pytest.mark.parametrize("where", ["header", "query", "body"])
def test_a_session_is_at_most_64_printable_characters(srv, where):
    def ask(session: str) -> httpx.Response:
        if where == "header":
            return httpx.get(f"{srv.url}/topk", params={"start": 7}, headers={"X-Session-ID": session})
        if where == "query":
            return httpx.get(f"{srv.url}/topk", params={"start": 7, "session": session})
        return httpx.post(f"{srv.url}/topk/batch", json={"prefixes": [[7]], "session": session})

    assert ask("s" * 64).status_code == 200
    assert ask("a-Z_0.9:/=+@~!").status_code == 200
    for bad in ("s" * 65, "two words", "tab\there", ""):
        r = ask(bad)
        assert field_of(r) == "session", (bad, r.text)
    if where == "body":
        assert field_of(httpx.post(f"{srv.url}/predict", json={"start": 7, "session": "é"})) == "session"


def test_the_header_and_the_body_must_agree(srv):
    r = httpx.get(f"{srv.url}/topk", params={"start": 7, "session": "a"}, headers={"X-Session-ID": "b"})
    assert field_of(r) == "session"
    r = httpx.post(f"{srv.url}/predict", json={"start": 7, "session": "a"}, headers={"X-Session-ID": "a"})
    assert r.status_code == 200


def cache_hits(url: str) -> float:
    found = re.search(r'^seq2seq_cache_total\{result="hit"\} (\S+)$', httpx.get(f"{url}/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def test_each_answer_gets_its_own_impression_but_the_answer_comes_from_the_cache(srv):
    first = topk(srv.url, prefix="4,4,4", k=4, header="u1")
    hits = cache_hits(srv.url)
    again = [topk(srv.url, prefix="4,4,4", k=4, header=session) for session in ("u1", "u1", "u2")]
    assert cache_hits(srv.url) == hits + 3
    impressions = [first["impression"], *(a["impression"] for a in again)]
    assert len(set(impressions)) == 4
    for a in again:
        assert {k: v for k, v in a.items() if k != "impression"} == {k: v for k, v in first.items() if k != "impression"}
    # each impression says its own session: u2's feedback is recorded with u2
    assert send(srv.url, again[2]["impression"], accepted=again[2]["suggestions"][3]["sequence"]).status_code == 202
    opened = storage.open_storage(f"sqlite:///{srv.data_dir / 'seq2seq.db'}", run_migrations=False)
    try:
        token = again[2]["impression"]
        rows = [opened.feedback.get(r.json()["impression_id"]) for r in [send(srv.url, token)]]
        assert (rows[0].session, rows[0].accepted_rank) == ("u2", 4)
    finally:
        opened.close()


def test_an_expired_impression_is_refused(make_server, tmp_path):
    short = make_server(tmp_path / "short", SEQ2SEQ_IMPRESSION_TTL_S="0.001", SEQ2SEQ_JOB_WORKERS="0").start()
    short.wait_ready()
    token = topk(short.url, start=1)["impression"]

    def expired() -> bool:  # issued in whole seconds: within a second it is past a 1 ms TTL
        r = send(short.url, token)
        return r.status_code == 422 and "SEQ2SEQ_IMPRESSION_TTL_S" in r.json()["message"]

    poll(expired, 5, interval=0.2, message="the impression to expire")
    assert field_of(send(short.url, token)) == "impression"
