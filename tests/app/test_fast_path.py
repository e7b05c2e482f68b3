"""POST /predict and GET /topk are served straight from ASGI (app/http/fast.py). Every answer, errors
included, must be the one the FastAPI routes give: each case goes through both and is compared."""
import pytest

from app.http import fast

DEEP = b'{"prefix": ' + b"[" * 20000 + b"]" * 20000 + b"}"
PREDICT = [
    (b'{"start": 7}', "application/json"), (b'{"start": 7}', "text/plain"), (b'{"start": 7}', None),
    (b'{"start": 7}', "application/x-www-form-urlencoded"), (b"", "application/json"), (b'"x"', "application/json"),
    (DEEP, "application/json"), (b'{"start": ' + b"9" * 5000 + b"}", "application/json"), (b"{not json", "application/json"),
    (b'{"start": 7, "prefix": [7]}', "application/json"), (b'{"start": "7"}', "application/json"),
    (b'{"start": 7}', "application/vnd.api+json"), (b'{"start": 99}', "application/json"), (b"[1, 2]", "application/json"),
    (b'{"start": 7, "model": "nope"}', "application/json"), (b'{"start": 7}', "application/json; charset=utf-8"),
    (b'{"prefix": [7, 6], "attention": true}', "application/json"), (b'{"prefix": ' + b"[1," * 5000 + b"]}", "application/json"),
]
TOPK = ["start=7", "prefix=7,6&k=5", "start=--5", "start=%C2%B2", "prefix=7,,2", "start=1&start=2", "", "start=7&k=0",
        "start=7&colour=red", "start=7&model=nope", "prefix=1,2,3,4,5,6", "start=7&model=default&k=50"]


@pytest.fixture
def both(client, monkeypatch):
    """Send a request through the fast path, then through the FastAPI route; return both answers."""
    def send(method: str, path: str, **kw):
        fast_answer = client.request(method, path, **kw)
        with monkeypatch.context() as m:
            m.setattr(fast, "ROUTES", {})
            route_answer = client.request(method, path, **kw)
        return fast_answer, route_answer
    return send


def _same(a, b) -> None:
    assert a.status_code == b.status_code, (a.text[:300], b.text[:300])
    assert a.headers["content-type"] == b.headers["content-type"]
    assert a.headers.get("retry-after") == b.headers.get("retry-after")
    ja, jb = a.json(), b.json()
    if a.status_code >= 400:  # errors carry the request id, which differs between the two requests
        assert ja.pop("request_id") == a.headers["x-request-id"] and jb.pop("request_id") == b.headers["x-request-id"]
    assert ja == jb


@pytest.mark.parametrize("body,kind", PREDICT, ids=[f"{i}" for i in range(len(PREDICT))])
def test_predict_answers_as_the_fastapi_route_does(both, body, kind):
    _same(*both("POST", "/predict", content=body, headers={"content-type": kind} if kind else {}))


@pytest.mark.parametrize("query", TOPK)
def test_topk_answers_as_the_fastapi_route_does(both, query):
    _same(*both("GET", f"/topk?{query}"))


def test_the_fast_path_is_counted_under_the_route_templates(client):
    client.post("/predict", json={"start": 7})
    client.get("/topk", params={"start": 7})
    text = client.get("/metrics").text
    assert 'route="/predict",status="200"' in text and 'route="/topk",status="200"' in text
