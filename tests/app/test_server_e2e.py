"""A real uvicorn process over HTTP: the contract, concurrency, persistence, graceful shutdown."""
import asyncio
import random
import signal
import threading

import httpx

from tests.conftest import poll, same_answer


def test_endpoints_answer_over_http(server):
    with server.client() as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").json()["model"] == "default"
        r = c.post("/predict", json={"start": 7}, headers={"X-Request-ID": "abc123"})
        assert r.status_code == 200 and r.json()["sequence"] == [7, 2, 8, 4, 3]
        assert r.headers["x-request-id"] == "abc123"
        top = c.get("/topk", params={"start": 7, "k": 3}).json()
        assert [s["sequence"] for s in top["suggestions"]] == [[7, 2, 8, 4, 3], [7, 6, 5, 2, 8], [7, 9, 1, 2, 4]]
        assert c.get("/models").json()[0]["id"] == "default"
        assert "seq2seq_requests_total" in c.get("/metrics").text


def test_bad_input_over_http_is_never_a_500(server):
    rng = random.Random(1)
    bodies = [b"", b"null", b"[]", b'{"start": 1e400}', b'{"start": 99999999999999999999999}', b'{"prefix": "7"}',
              b'{"prefix": [[1]]}', b'{"start": true}', bytes(rng.randrange(256) for _ in range(200))]
    with server.client() as c:
        for body in bodies:
            r = c.post("/predict", content=body, headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
            assert r.json()["message"]
        for query in ("start=1e3", "prefix=%00", "k=-5&start=1", "start=" + "9" * 40):
            r = c.get(f"/topk?{query}")
            assert r.status_code == 422, (query, r.text)
        assert c.post("/predict", content=b"x" * 200_000).status_code == 413




def test_concurrent_requests_get_the_answers_they_get_alone(make_server):
    srv = make_server(SEQ2SEQ_CACHE_SIZE="0").start()  # no cache: every answer below is decoded
    srv.wait_ready()
    rng = random.Random(0)
    requests = []
    for _ in range(300):
        prefix = [rng.randrange(10) for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.5:
            requests.append(("POST", "/predict", {"json": {"prefix": prefix, "attention": rng.random() < 0.3}}))
        else:
            requests.append(("GET", "/topk", {"params": {"prefix": ",".join(map(str, prefix)), "k": rng.randint(1, 8)}}))

    async def all_at_once():
        async with httpx.AsyncClient(base_url=srv.url, timeout=60, limits=httpx.Limits(max_connections=64)) as c:
            responses = await asyncio.gather(*(c.request(m, p, **kw) for m, p, kw in requests))
            return [r.json() for r in responses]

    together = asyncio.run(all_at_once())
    metrics = httpx.get(f"{srv.url}/metrics").text
    def series(name: str) -> float:
        return float(next(line for line in metrics.splitlines() if line.startswith(name)).split()[-1])

    batches, singles = series("seq2seq_batch_size_count"), series('seq2seq_batch_size_bucket{le="1.0"}')
    alone = series("seq2seq_decoded_alone_total")  # the costly ones (exact top-k of a start digit) run alone
    # identical requests in flight together are decoded once, so at most 300 decodings, some of them together
    assert 0 < series("seq2seq_batch_size_sum") + alone <= 300 and singles < batches
    with srv.client() as c:
        alone = [c.request(m, p, **kw).json() for m, p, kw in requests]
    for i, (a, b) in enumerate(zip(together, alone)):
        for answer in (a, b):
            answer.pop("impression", None)  # each answer's own, signed per request
        ok, where = same_answer(a, b)
        assert ok, (i, requests[i], where, a, b)


def test_sigterm_finishes_requests_in_flight_and_exits_0(make_server):
    srv = make_server().start()
    srv.wait_ready()
    results, stop = [], threading.Event()

    def hammer():
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = c.post("/predict", json={"prefix": [i % 10, (i // 10) % 10, (i // 100) % 10]})
                    results.append(r.status_code)
                except httpx.TransportError:
                    results.append("refused")
                    return

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    poll(lambda: len(results) >= 100, 30, message="100 answers under load")
    code = srv.stop(signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join()
    assert code == 0
    assert results.count(200) >= 100
    assert set(results) <= {200, "refused"}, set(results)


def test_the_active_model_survives_a_restart(make_server, weights_copy, tmp_path):
    data = tmp_path / "persistent"
    srv = make_server(data, weights_dir=weights_copy).start()
    srv.wait_ready()
    with srv.client() as c:
        assert c.post("/models/alt/activate").status_code == 200
    assert srv.stop() == 0
    again = make_server(data, weights_dir=weights_copy).start()
    again.wait_ready()
    with again.client() as c:
        assert c.get("/readyz").json()["model"] == "alt"
        assert c.get("/models/active").json()["id"] == "alt"
        assert c.post("/predict", json={"start": 7}).json()["model"] == "alt"
