"""The body contract of the lean inference routes (app.http.lean), stated once and the same on every one of
them: JSON content types only (415 otherwise), and every unreadable body a 422 that names `body`. Each answer
is the app's one error body, with the request id and the route's metrics label."""
from __future__ import annotations

import json

import pytest

LEAN = [("/predict", {"start": 7}), ("/predict/batch", {"prefixes": [[7]]}), ("/topk/batch", {"prefixes": [[7]]})]
DEEP = b'{"prefix": ' + b"[" * 20000 + b"]" * 20000 + b"}"


@pytest.mark.parametrize("path,body", LEAN)
@pytest.mark.parametrize("kind", ["application/json", "application/json; charset=utf-8", "Application/JSON",
                                  "application/vnd.api+json", None])
def test_json_content_types_are_read(client, path, body, kind):
    r = client.post(path, content=json.dumps(body), headers={"content-type": kind} if kind else {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"


@pytest.mark.parametrize("path,body", LEAN)
@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                  "application/jsonx", "json"])
def test_other_content_types_are_415_naming_the_type(client, path, body, kind):
    r = client.post(path, content=b'{"start": 7}', headers={"content-type": kind, "x-request-id": "abc"})
    assert r.status_code == 415, r.text
    err = r.json()
    assert err["error"] == "unsupported_media_type" and repr(kind) in err["message"]
    assert err["request_id"] == "abc" == r.headers["x-request-id"]


@pytest.mark.parametrize("raw,words", [
    (b"", "a JSON body is required"), (b"{not json", "not valid JSON"), (DEEP, "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"), (b"[1, 2]", "object"), (b'"x"', "object"),
])
def test_unreadable_bodies_are_422_naming_body(client, raw, words):
    r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["fields"][0]["field"] == "body" and words in err["message"]
    assert len(r.content) < 2000  # a 40 KB body does not come back


def test_absurd_numbers_are_refused_with_a_short_answer(client):
    r = client.post("/predict", content=b'{"start": ' + b"9" * 5000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "body"
    assert "number out of range" in r.json()["message"] and len(r.content) < 2000
    r = client.post("/predict", json={"start": 10 ** 30})  # read, then refused by the schema's bound
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "start"


def test_errors_on_lean_routes_are_counted_under_the_route_template(client):
    client.post("/predict", content=b"x", headers={"content-type": "text/plain"})
    client.post("/predict", json={"start": 7})
    client.get("/topk", params={"start": 70})
    text = client.get("/metrics").text
    assert 'seq2seq_requests_total{method="POST",route="/predict",status="415"} 1.0' in text
    assert 'seq2seq_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'seq2seq_requests_total{method="GET",route="/topk",status="422"} 1.0' in text


def test_the_app_exception_handlers_answer_for_lean_routes(client):
    """A domain error raised under a lean route is mapped by the app's handlers, as on every route."""
    r = client.post("/predict", json={"start": 7, "model": "no-such-model"})
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert r.json()["request_id"] == r.headers["x-request-id"]


def test_openapi_describes_the_lean_routes_fully(client):
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert predict["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictRequest")
    assert predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictResponse")
    assert {"415", "422"} <= set(predict["responses"])
    topk = spec["paths"]["/topk"]["get"]
    assert {p["name"] for p in topk["parameters"]} == {"start", "prefix", "k", "model", "session"}
    batch = spec["paths"]["/topk/batch"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert batch["$ref"].endswith("/TopKBatchResponse")
