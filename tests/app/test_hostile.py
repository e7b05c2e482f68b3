"""An outsider against a real uvicorn process: every malformed input is a small 4xx naming its field, no
request can grow the metrics or hold the service, and management is locked unless opened on purpose."""
from __future__ import annotations

import concurrent.futures
import os
import random
import socket
import stat
import threading

import httpx
import pytest

from app import storage
from model import checkpoint
from model.config import ModelConfig
from model.network import Seq2Seq
from tests.conftest import WEIGHTS, poll

SMALL = 4096  # bytes: no error answer may be larger, whatever was sent


def _assert_clean_4xx(r: httpx.Response, field: str | None = None, status: int = 422) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert len(r.content) <= SMALL, len(r.content)
    body = r.json()
    assert body["request_id"] == r.headers["x-request-id"]
    if field is not None:
        assert body["fields"][0]["field"] == field, body
    assert "/work" not in r.text and "Traceback" not in r.text
    return body


TOPK_CASES = [
    ("start=--5", "start"), ("start=%C2%B2", "start"), ("start=%D9%A3", "start"), ("start=" + "9" * 4400, "start"),
    ("start=+7", "start"), ("start=%207", "start"), ("start=7%20", "start"), ("start=", "start"), ("start=0x7", "start"),
    ("start=7_0", "start"), ("prefix=--5", "prefix"), ("prefix=%C2%B2", "prefix"), ("prefix=" + "4" * 4400, "prefix"),
    ("prefix=7,,2", "prefix"), ("prefix=7,%202", "prefix"), ("prefix=,", "prefix"), ("prefix=" + "1," * 5000 + "1", "prefix"),
    ("start=7&k=-1", "k"), ("start=7&k=1e3", "k"), ("start=7&k=" + "9" * 4400, "k"), ("start=7&k=51", "k"),
    ("start=1&start=2", "start"), ("prefix=1&prefix=2", "prefix"), ("start=7&k=2&k=3", "k"), ("start=7&colour=red", "colour"),
    ("start=7&prefix=7", "start"), ("", "start"), ("k=3", "start"), ("start=99", "start"), ("prefix=1,2,3,4,5,6", "prefix"),
]


@pytest.mark.parametrize("query,field", TOPK_CASES)
def test_every_malformed_topk_parameter_is_a_small_422_naming_it(server, query, field):
    _assert_clean_4xx(httpx.get(f"{server.url}/topk?{query}"), field)


DEEP = '{"prefix": ' + "[" * 30_000 + "]" * 30_000 + "}"
PREDICT_CASES = [
    ('{"start": "7"}', "start"), ('{"start": true}', "start"), ('{"start": 7.0}', "start"), ('{"start": null}', "body"),
    ('{"start": -1}', "start"), ('{"start": ' + "9" * 5000 + "}", "body"), ('{"start": 1e400}', "start"),
    ('{"prefix": "7,2"}', "prefix"), ('{"prefix": [[7]]}', "prefix[0]"), ('{"prefix": [7, "2"]}', "prefix[1]"),
    ('{"prefix": []}', "prefix"), ('{"start": 7, "model": 7}', "model"), ('{"start": 7, "attention": "yes"}', "attention"),
    ('{"start": 7, "prefix": [7]}', "body"), ("{}", "body"), ("[]", "body"), ('"7"', "body"), ("{not json", "body"),
    (DEEP, "body"), ('{"start": 7, "model": "' + "x" * 5000 + '"}', None),
]


@pytest.mark.parametrize("text,field", PREDICT_CASES, ids=[c[0][:30] for c in PREDICT_CASES])
def test_every_malformed_predict_body_is_a_small_4xx_naming_the_field(server, text, field):
    r = httpx.post(f"{server.url}/predict", content=text, headers={"content-type": "application/json"})
    status = 403 if text.startswith('{"start": 7, "model": "x') else 422  # naming a model needs the key
    _assert_clean_4xx(r, field, status)


def test_malformed_job_parameters_and_bodies_are_small_4xx(server):
    with server.client() as c:
        _assert_clean_4xx(c.get("/jobs?limit=%C2%B2"), "limit")
        _assert_clean_4xx(c.get("/jobs?limit=1&limit=2"), "limit")
        _assert_clean_4xx(c.get("/jobs?limit=0"), "limit")
        _assert_clean_4xx(c.get("/jobs/nope"), status=404)
        _assert_clean_4xx(c.post("/jobs", json={"dataset": {"sequences": "12345"}}), "dataset.sequences")
        _assert_clean_4xx(c.post("/jobs", json={"dataset": {"sequences": [[1, 2, 3, 4, True]]}}), "dataset.sequences[0][4]")
        _assert_clean_4xx(c.post("/jobs", json={"dataset": {"generator": "random"}, "model": {"hidden_dim": "32"}}),
                          "model.hidden_dim")
        _assert_clean_4xx(c.post("/jobs", content=b'{"dataset": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
                                 headers={"content-type": "application/json"}), "body")
        assert c.get("/jobs").json() == []


def test_an_error_answer_stays_small_whatever_the_body(server):
    with server.client() as c:
        # 20,000 sequences of empty strings: one short answer, not one entry per bad token
        bad = {"dataset": {"sequences": [["", "", "", "", ""]] * 20_000}}
        body = _assert_clean_4xx(c.post("/jobs", json=bad), "dataset.sequences[0][0]")
        assert len(body["fields"]) <= 20
        # an inner sequence longer than any model allows is refused by its length, before its items
        long = {"dataset": {"sequences": [[1, 2, 3, 4, 5], ["x"] * 200_000]}}
        body = _assert_clean_4xx(c.post("/jobs", json=long), "dataset.sequences[1]")
        assert "200000 tokens" in body["message"]
        # many independent errors are listed up to a bound, and counted beyond it
        many = {"dataset": {"generator": "random"}, "model": {k: "x" for k in ("hidden_dim", "embedding_dim", "vocab_size", "seq_length")},
                "training": {k: "x" for k in ("steps", "batch_size", "learning_rate", "teacher_forcing_ratio", "seed", "eval_every")},
                **{f"extra{i}": 1 for i in range(40)}}
        body = _assert_clean_4xx(c.post("/jobs", json=many))
        assert len(body["fields"]) == 20 and body["more_fields"] > 0


def test_random_methods_and_paths_cannot_grow_the_metrics(server):
    def lines() -> int:
        return len(httpx.get(f"{server.url}/metrics").text.splitlines())

    rng = random.Random(0)
    with httpx.Client(base_url=server.url) as c:
        c.request("FOO", "/no/such/path")  # the one label every unknown method shares
        c.get("/no/such/path")
        lines()  # /metrics counts itself too
        before = lines()
        methods = []
        for _i in range(60):
            method = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(6))
            methods.append(method)
            r = c.request(method, f"/{rng.randrange(10**9)}")
            assert 400 <= r.status_code < 500
            c.get(f"/x{rng.randrange(10**9)}")
    assert lines() == before
    text = httpx.get(f"{server.url}/metrics").text
    # httptools refuses unknown methods before the app sees them; h11 lets them through, labelled OTHER
    assert not [m for m in methods if f'method="{m}"' in text] and 'route="unmatched"' in text


def _raw_request(port: int, head: bytes, body_prefix: bytes) -> bytes:
    """Send the head and a little of a body, then read the answer without sending the rest."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body_prefix)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def test_an_unauthenticated_10_mib_post_is_refused_before_its_body_is_read(server):
    head = (b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10485760\r\n\r\n")
    answer = _raw_request(server.port, head, b'{"dataset": {"sequences": [[1,2,3,4,5]')
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"Bearer" in answer and len(answer) < SMALL


def test_management_is_locked_by_default_with_a_generated_key_kept_across_restarts(make_server, tmp_path):
    data = tmp_path / "locked"
    srv = make_server(data, SEQ2SEQ_API_KEY="", SEQ2SEQ_LOG_LEVEL="info").start()
    srv.wait_ready()
    key_file = data / "api-key"
    key = key_file.read_text().strip()
    assert len(key) >= 32 and stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.post("/jobs", json={"dataset": {"generator": "random"}}).status_code == 401
        assert c.post("/models/default/activate").status_code == 401
        assert c.get("/jobs", headers={"Authorization": ("Bearer " + key[:-1] + "é").encode()}).status_code == 401
        assert c.get("/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert c.post("/predict", json={"start": 7}).status_code == 200 and c.get("/models").status_code == 200
        assert c.get("/info").json()["auth_required"] is True
    assert srv.stop() == 0
    log = srv.log.read_text()
    assert str(key_file) in log and key not in log
    again = make_server(data, SEQ2SEQ_API_KEY="").start()
    again.wait_ready()
    assert key_file.read_text().strip() == key
    assert httpx.get(f"{again.url}/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_opening_management_takes_an_explicit_setting_and_says_so(make_server):
    srv = make_server(SEQ2SEQ_API_KEY="", SEQ2SEQ_AUTH="disabled").start()
    srv.wait_ready()
    assert httpx.get(f"{srv.url}/jobs").status_code == 200
    assert httpx.get(f"{srv.url}/info").json()["auth_required"] is False
    assert not (srv.data_dir / "api-key").exists()
    assert "SEQ2SEQ_AUTH=disabled" in srv.log.read_text()


@pytest.fixture
def hostile_weights(tmp_path):
    """The shipped model beside the worst shape a job body allows for exact top-k: vocab 2, length 24, hidden 512."""
    target = tmp_path / "weights"
    target.mkdir()
    for name in ("default.pt", "default.pt.sha256"):
        (target / name).write_bytes((WEIGHTS / name).read_bytes())
    config = ModelConfig(vocab_size=2, seq_length=24, embedding_dim=512, hidden_dim=512, attention=True)
    import torch

    torch.manual_seed(0)
    checkpoint.save(target / "hostile.pt", Seq2Seq(config), {}, {}, {}, [], name="hostile")
    return target


def test_worst_case_top_k_is_bounded_and_the_service_keeps_answering(make_server, hostile_weights):
    srv = make_server(weights_dir=hostile_weights, SEQ2SEQ_PUBLIC_MODELS="hostile").start()  # anyone may name it
    srv.wait_ready()
    worst = f"{srv.url}/topk?model=hostile&prefix=1,0,1,1,0,1,0,1&k=50"
    health, stop = [], threading.Event()

    def probe():
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                health.append(c.get(f"{srv.url}/healthz").status_code)

    prober = threading.Thread(target=probe)
    prober.start()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: httpx.get(worst.replace("k=50", f"k={50 - i}"), timeout=60), range(8)))
    stop.set()
    prober.join()
    for r in answers:
        assert r.status_code in (200, 503), r.text[:300]
        assert len(r.content) < 64 * 1024
        if r.status_code == 503:
            assert "hostile" in r.json()["message"]
        else:
            body = r.json()
            assert body["model"] == "hostile" and 1 <= len(body["suggestions"]) <= body["k"]
            assert all(s["sequence"][:8] == [1, 0, 1, 1, 0, 1, 0, 1] for s in body["suggestions"])
    assert any(r.status_code == 200 for r in answers)
    assert health and set(health) == {200}
    # a budget that not even a beam of k fits is refused up front, naming the parameter
    tight = make_server(weights_dir=hostile_weights, SEQ2SEQ_DECODE_BUDGET="50000000",
                        SEQ2SEQ_PUBLIC_MODELS="hostile").start()
    tight.wait_ready()
    r = httpx.get(worst.replace(srv.url, tight.url))
    assert "costs more than this service allows" in _assert_clean_4xx(r, "prefix")["message"]
    assert httpx.get(f"{srv.url}/topk", params={"start": 7}).json()["model"] == "default"


def test_job_limits_quotas_and_streams(make_server):
    srv = make_server(SEQ2SEQ_JOB_QUEUE="2", SEQ2SEQ_MAX_TRAINED_MODELS="4", SEQ2SEQ_MAX_EVENT_STREAMS="1").start()
    srv.wait_ready()
    with srv.client() as c:
        r = c.post("/jobs", json={"dataset": {"generator": "random"}, "model": {"hidden_dim": 512, "seq_length": 64},
                                  "training": {"batch_size": 4096}})
        assert "at most" in _assert_clean_4xx(r, "training.batch_size")["message"]
        long = c.post("/jobs", json={"dataset": {"generator": "random"}, "training": {"steps": 1_000_000}}).json()
        poll(lambda: c.get(f"/jobs/{long['id']}").json()["status"] == "running", 30)

        def submit(_):
            return c.post("/jobs", json={"dataset": {"generator": "random"}, "training": {"steps": 5}}).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = sorted(pool.map(submit, range(8)))
        assert codes.count(202) == 2 and set(codes) <= {202, 409, 429}
        assert sum(j["status"] == "queued" for j in c.get("/jobs").json()) == 2
        r = c.post("/jobs", json={"dataset": {"generator": "random"}})
        assert r.status_code in (409, 429) and ("queue" in r.json()["message"] or "SEQ2SEQ_MAX" in r.json()["message"])
        with c.stream("GET", f"/jobs/{long['id']}/events") as first:
            assert first.status_code == 200
            r = c.get(f"/jobs/{long['id']}/events")
            assert r.status_code == 429 and "SEQ2SEQ_MAX_EVENT_STREAMS" in r.json()["message"]
        # the slot comes back once the first stream is closed
        poll(lambda: _stream_opens(c, long["id"]), 10)
        for job in c.get("/jobs").json():  # the queued ones first, so none starts when the long one stops
            if job["status"] == "queued":
                assert c.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
        assert c.post(f"/jobs/{long['id']}/cancel").json()["status"] == "cancelled"
        assert {j["status"] for j in c.get("/jobs").json()} == {"cancelled"}
        assert all(_body(srv, j["id"]) is None for j in c.get("/jobs").json())  # an ended job keeps no body
        assert c.delete(f"/jobs/{long['id']}").status_code == 204
        assert c.get(f"/jobs/{long['id']}").status_code == 404


def _body(srv, job_id: str):
    store = storage.open_storage(f"sqlite:///{srv.data_dir / 'seq2seq.db'}", run_migrations=False)
    try:
        return store.jobs.body(job_id)
    finally:
        store.close()


def _stream_opens(c: httpx.Client, job_id: str) -> bool:
    with c.stream("GET", f"/jobs/{job_id}/events") as r:
        return r.status_code == 200


def test_a_training_process_killed_from_outside_is_failed_not_cancelled(make_server):
    srv = make_server().start()
    srv.wait_ready()
    with srv.client() as c:
        job = c.post("/jobs", json={"dataset": {"generator": "random"}, "training": {"steps": 1_000_000}}).json()
        poll(lambda: c.get(f"/jobs/{job['id']}").json()["progress"]["step"] > 0, 30)
        children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == srv.proc.pid]
        assert children
        for pid in children:
            os.kill(pid, 9)
        done = poll(lambda: (j := c.get(f"/jobs/{job['id']}").json())["status"] in ("failed", "cancelled") and j, 20)
        assert done["status"] == "failed" and "SIGKILL" in done["error"], done
        assert _body(srv, job["id"]) is None


def _parent(pid: int) -> int | None:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_error_messages_never_show_file_paths(make_server, tmp_path):
    weights = tmp_path / "w"
    weights.mkdir()
    for name in ("default.pt", "default.pt.sha256"):
        (weights / name).write_bytes((WEIGHTS / name).read_bytes())
    (weights / "broken.pt").write_bytes((WEIGHTS / "default.pt").read_bytes())
    (weights / "broken.pt.sha256").write_text("0" * 64 + "  broken.pt\n")
    srv = make_server(weights_dir=weights).start()
    srv.wait_ready()
    with srv.client() as c:  # with the key: naming a model other than the active one needs it
        r = c.get("/topk", params={"start": 7, "model": "broken"})
    assert r.status_code in (404, 503)
    assert str(tmp_path) not in r.text and ".pt" not in r.text


def test_a_corpus_small_enough_for_full_batches_counts_its_whole_batch(client):
    corpus = [[i % 10, (i // 10) % 10, i // 100] + [0] * 13 for i in range(256)]  # 256 sequences x 16 prefix lengths
    body = {"dataset": {"sequences": corpus}, "model": {"hidden_dim": 512, "seq_length": 16}}
    r = client.post("/jobs", json=body)  # batch_size 64 would fit; the full batch of 4,096 examples does not
    assert "a step of 4096 examples" in _assert_clean_4xx(r, "training.batch_size")["message"]
    r = client.post("/jobs", json={**body, "training": {"full_batch": 0}})
    assert r.status_code == 202, r.text
