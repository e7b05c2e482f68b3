"""POST /predict and GET /topk through the ASGI app: the contract, and clear errors for bad input."""
import math

import pytest

from model import checkpoint, decoding
from tests.conftest import WEIGHTS

MODEL = checkpoint.load(WEIGHTS / "default.pt").model


def test_predict_from_a_start_digit_continues_it(client):
    r = client.post("/predict", json={"start": 7})
    assert r.status_code == 200
    body = r.json()
    expected = decoding.greedy(MODEL, [[7]])[0]
    assert body["model"] == "default" and body["prefix"] == [7]
    assert body["sequence"] == expected.sequence == [7, 2, 8, 4, 3]
    assert body["score"] == pytest.approx(expected.score, abs=1e-5)
    assert body["probability"] == pytest.approx(math.exp(body["score"]))
    assert [s["token"] for s in body["steps"]] == body["sequence"][1:]
    assert math.prod(s["probability"] for s in body["steps"]) == pytest.approx(body["probability"], rel=1e-4)
    assert "attention" not in body


def test_predict_from_a_prefix_keeps_it_and_can_show_attention(client):
    body = client.post("/predict", json={"prefix": [7, 6], "attention": True}).json()
    assert body["sequence"][:2] == [7, 6] and body["sequence"] == [7, 6, 5, 2, 8]
    assert len(body["steps"]) == 3
    assert len(body["attention"]) == 3 and all(len(row) == 2 for row in body["attention"])
    assert all(sum(row) == pytest.approx(1.0, abs=1e-4) for row in body["attention"])


def test_topk_is_exact_distinct_and_best_first(client):
    body = client.get("/topk", params={"start": 7, "k": 5}).json()
    expected = decoding.topk(MODEL, [[7]], 5)[0]
    assert body["k"] == 5 and body["prefix"] == [7]
    assert [s["sequence"] for s in body["suggestions"]] == [c.sequence for c in expected]
    assert body["suggestions"][0]["sequence"] == [7, 2, 8, 4, 3]
    probs = [s["probability"] for s in body["suggestions"]]
    assert probs == sorted(probs, reverse=True)
    assert len({tuple(s["sequence"]) for s in body["suggestions"]}) == 5
    two = client.get("/topk", params={"prefix": "7,6", "k": 2}).json()
    assert all(s["sequence"][:2] == [7, 6] for s in two["suggestions"])
    assert client.get("/topk", params={"start": 7}).json()["k"] == 3


def test_topk_returns_fewer_when_fewer_exist(client):
    body = client.get("/topk", params={"prefix": "1,2,3,4", "k": 50}).json()
    assert len(body["suggestions"]) == 10


@pytest.mark.parametrize("body,field,words", [
    ({"start": 10}, "start", "token 10 is outside the vocabulary 0..9 (model 'default')"),
    ({"start": -1}, "start", "greater than or equal to 0"),
    ({"start": 1000}, "start", "less than 1000"),  # past any model's vocabulary: refused before a model is chosen
    ({"prefix": [7, 12]}, "prefix", "token 12 is outside the vocabulary 0..9 (position 1) (model 'default')"),
    ({"prefix": [1, 2, 3, 4, 5, 6]}, "prefix", "1 to 5 tokens"),
    ({"prefix": []}, "prefix", "at least 1"),
    ({"start": 7, "prefix": [7]}, "body", "exactly one of start and prefix"),
    ({}, "body", "exactly one of start and prefix"),
    ({"start": "seven"}, "start", "valid integer"),
    ({"start": 7.5}, "start", "integer"),
    ({"start": 7, "attention": "maybe"}, "attention", "boolean"),
    ({"start": 7, "colour": "red"}, "colour", "Extra inputs"),
])
def test_bad_predict_bodies_get_422_naming_the_field(client, body, field, words):
    r = client.post("/predict", json=body)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["error"] == "invalid_input" and words in err["message"]
    assert err["fields"][0]["field"] == field
    assert err["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize("params,field", [
    ({"start": 7, "k": 0}, "k"), ({"start": 7, "k": 51}, "k"), ({"start": 7, "k": "x"}, "k"),
    ({"prefix": "7,,2"}, "prefix"), ({"prefix": "a"}, "prefix"), ({"start": 7, "prefix": "7"}, "start"),
    ({}, "start"), ({"start": 11}, "start"), ({"prefix": "1,2,3,4,5,6"}, "prefix"),
])
def test_bad_topk_queries_get_422_naming_the_field(client, params, field):
    r = client.get("/topk", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["fields"][0]["field"] == field


def test_malformed_json_is_a_422_not_a_500(client):
    r = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["message"]


def test_an_unknown_model_is_404_and_a_bad_id_is_refused(client):
    r = client.post("/predict", json={"start": 7, "model": "nope"})
    assert r.status_code == 404 and "'nope' is not registered" in r.json()["message"]
    r = client.get("/topk", params={"start": 7, "model": "../../etc/passwd"})
    assert r.status_code == 404 and "not valid" in r.json()["message"]


def test_a_model_can_be_named_explicitly(client):
    r = client.post("/predict", json={"start": 3, "model": "default"})
    assert r.status_code == 200 and r.json()["model"] == "default"


def test_an_oversized_body_is_413(client):
    r = client.post("/predict", content=b'{"prefix": [' + b"1," * 40_000 + b"1]}",
                    headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_repeated_requests_are_served_from_the_cache(client):
    first = client.post("/predict", json={"start": 4}).content
    hits_before = _metric(client, 'seq2seq_cache_total{result="hit"}')
    assert client.post("/predict", json={"start": 4}).content == first
    assert _metric(client, 'seq2seq_cache_total{result="hit"}') == hits_before + 1


def _metric(client, series: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def test_openapi_documents_every_body_with_examples(client):
    spec = client.get("/openapi.json").json()
    assert {"/predict", "/topk", "/models", "/models/active", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert schemas["PredictRequest"]["examples"] and schemas["PredictResponse"]["examples"]
    assert schemas["TopKResponse"]["examples"]
    assert client.get("/docs").status_code == 200


def test_an_unexpected_error_is_a_500_json_body_with_the_request_id_and_no_trace(make_client):
    from fastapi.testclient import TestClient

    c = make_client()
    registry = c.app.state.registry

    def broken(model_id):
        raise RuntimeError("secret internals")

    registry.resolve = broken
    quiet = TestClient(c.app, raise_server_exceptions=False)
    r = quiet.post("/predict", json={"start": 7}, headers={"X-Request-ID": "req-500"})
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "internal_error" and body["request_id"] == "req-500"
    assert "secret internals" not in r.text and "Traceback" not in r.text
