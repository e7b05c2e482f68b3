"""Training jobs against a real server process: lifecycle, cancel, restarts, SIGKILL, hot swap, bad bodies, auth."""
import json
import signal
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import poll

# Each start digit has continuations seen 5, 2 and 1 times: the model must rank them in that order.
CORPUS = ([[7, 1, 1, 1, 1]] * 5 + [[7, 3, 3, 3, 3]] * 2 + [[7, 5, 5, 5, 5]] * 1 +
          [[4, 2, 6, 2, 6]] * 5 + [[4, 8, 8, 0, 0]] * 2 + [[4, 0, 4, 0, 4]] * 1)
FAST = {"steps": 500, "teacher_forcing_ratio": 1.0, "learning_rate": 0.01}


def wait_for(c: httpx.Client, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout=60) -> dict:
    def reached():
        job = c.get(f"/jobs/{job_id}").json()
        return job if job["status"] in statuses else None

    return poll(reached, timeout)


def workers_of(server_pid: int) -> list[int]:
    """Live training processes whose parent is the given server process."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if b"app.jobs.process" in cmdline and fields.get("PPid", "").strip() == str(server_pid) \
                and not fields.get("State", "").startswith("Z"):
            found.append(int(status.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return not (Path(f"/proc/{pid}/status").read_text().split("State:\t", 1)[1].startswith("Z"))
    except (OSError, IndexError):
        return False


def sse_events(c: httpx.Client, path: str) -> list[tuple[str, dict]]:
    events, kind = [], None
    with c.stream("GET", path, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    return events


def test_full_lifecycle_trains_registers_activates_and_predictions_change(make_server):
    srv = make_server(SEQ2SEQ_JOB_STANDBY="true").start()  # the job runs in the warmed-up spare
    srv.wait_ready()
    with srv.client() as c:
        before = c.post("/predict", json={"start": 7}).json()
        assert before["sequence"] == [7, 2, 8, 4, 3]
        r = c.post("/jobs", json={"dataset": {"sequences": CORPUS}, "training": FAST, "activate": "always",
                                  "name": "frequencies"})
        assert r.status_code == 202
        job = r.json()
        assert r.headers["location"] == f"/jobs/{job['id']}" and job["status"] in ("queued", "running")
        events = sse_events(c, f"/jobs/{job['id']}/events")
        kinds = [k for k, _ in events]
        assert kinds[-1] == "end" and kinds.count("end") == 1 and "progress" in kinds
        steps = [e["progress"]["step"] for _, e in events]
        assert steps == sorted(steps) and len(set(steps)) > 2
        final = events[-1][1]
        assert final["status"] == "succeeded" and final["activated"] is True
        assert final["progress"]["step"] == 500 and final["progress"]["fraction"] == 1.0
        assert final["history"] and final["history"][-1]["accuracy"] == 1.0
        assert "activate was 'always'" in final["activation_reason"]
        model_id = final["model_id"]
        assert c.get("/jobs").json()[0]["id"] == job["id"]
        assert c.get("/models/active").json()["id"] == model_id
        assert {m["id"] for m in c.get("/models").json()} == {"default", model_id}
        assert c.get(f"/models/{model_id}").json()["name"] == "frequencies"
        counts = Counter(map(tuple, CORPUS))
        for start in (7, 4):
            answer = c.post("/predict", json={"start": start}).json()
            expected = sorted((s for s in counts if s[0] == start), key=lambda s: -counts[s])
            assert answer["model"] == model_id and tuple(answer["sequence"]) == expected[0]
            top = c.get("/topk", params={"start": start, "k": 3}).json()["suggestions"]
            assert [tuple(s["sequence"]) for s in top] == expected
        # the previous model stays registered for rollback
        assert c.post("/models/default/activate").status_code == 200
        assert c.post("/predict", json={"start": 7}).json()["sequence"] == [7, 2, 8, 4, 3]
        refused = c.delete(f"/models/{model_id}")  # the rollback left it as `previous`
        assert refused.status_code == 409 and "previous" in refused.json()["message"]
        assert c.get("/aliases/previous").json()["model"] == model_id
        assert c.delete("/aliases/previous").status_code == 204
        assert c.delete(f"/models/{model_id}").status_code == 204
        assert c.get(f"/models/{model_id}").status_code == 404
        assert not list(srv.data_dir.rglob("*.pt"))  # checkpoints live in the database, beside their rows


def test_if_better_gate_refuses_a_worse_model_and_says_why(make_server):
    srv = make_server().start()
    srv.wait_ready()
    with srv.client() as c:
        corpus = json.loads((Path(srv.env["SEQ2SEQ_WEIGHTS_DIR"]) / "corpus.json").read_text())["sequences"]
        job = c.post("/jobs", json={"dataset": {"sequences": corpus}, "training": {"steps": 3},
                                    "activate": "if_better"}).json()
        done = wait_for(c, job["id"])
        assert done["status"] == "succeeded" and done["activated"] is False
        assert "below the active model 'default'" in done["activation_reason"]
        assert c.get("/models/active").json()["id"] == "default"
        assert done["model_id"] in {m["id"] for m in c.get("/models").json()}


def test_cancel_stops_a_running_job_within_two_seconds_and_a_queued_one_at_once(make_server):
    srv = make_server().start()
    srv.wait_ready()
    with srv.client() as c:
        running = c.post("/jobs", json={"dataset": {"generator": "random"}, "training": {"steps": 1_000_000}}).json()
        queued = c.post("/jobs", json={"dataset": {"generator": "random"}, "training": {"steps": 10}}).json()
        wait_for(c, running["id"], ("running",))
        poll(lambda: c.get(f"/jobs/{running['id']}").json()["progress"]["step"] > 0, 30)
        assert c.get(f"/jobs/{queued['id']}").json()["status"] == "queued"
        r = c.post(f"/jobs/{queued['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        r = c.post(f"/jobs/{running['id']}/cancel")  # the service answers once it ended, or after 1.9 s
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert c.post(f"/jobs/{running['id']}/cancel").status_code == 409
        assert [m["id"] for m in c.get("/models").json()] == ["default"]
        assert not list(srv.data_dir.rglob("*.pt"))


def test_restart_keeps_jobs_and_the_active_model_and_a_killed_services_job_runs_again(make_server, tmp_path):
    data = tmp_path / "kept"
    srv = make_server(data, SEQ2SEQ_JOB_STANDBY="true", SEQ2SEQ_JOB_LEASE_S="2").start()
    srv.wait_ready()
    with srv.client() as c:
        done = wait_for(c, c.post("/jobs", json={"dataset": {"sequences": CORPUS}, "training": {"steps": 50},
                                                 "activate": "always"}).json()["id"])
        model_id = done["model_id"]
    assert srv.stop(signal.SIGTERM) == 0
    srv = make_server(data, SEQ2SEQ_JOB_STANDBY="true", SEQ2SEQ_JOB_LEASE_S="2").start()
    srv.wait_ready()
    with srv.client() as c:
        assert c.get(f"/jobs/{done['id']}").json()["status"] == "succeeded"
        assert c.get("/readyz").json()["model"] == model_id
        long = c.post("/jobs", json={"dataset": {"generator": "random"}, "training": {"steps": 1_000_000}}).json()
        first = wait_for(c, long["id"], ("running",))
        assert first["attempt"] == 1 and first["worker"]["pid"] == srv.proc.pid
        poll(lambda: c.get(f"/jobs/{long['id']}").json()["progress"]["step"] > 0, 30)  # training, not importing
    workers = workers_of(srv.proc.pid)
    assert workers
    srv.stop(signal.SIGKILL)
    poll(lambda: not any(alive(pid) for pid in workers), 5)  # training processes die with the service
    srv = make_server(data, SEQ2SEQ_JOB_LEASE_S="2").start()
    srv.wait_ready()
    with srv.client() as c:
        # the dead service's lease expires, and the job runs again: a second attempt, by the new process
        again = poll(lambda: (j := c.get(f"/jobs/{long['id']}").json())["attempt"] == 2 and j["status"] == "running" and j, 30)
        assert again["worker"]["pid"] == srv.proc.pid
        assert c.get("/models/active").json()["id"] == model_id
        assert {m["id"] for m in c.get("/models").json()} == {"default", model_id}
        assert c.post("/predict", json={"start": 7}).json()["model"] == model_id
        assert [j["id"] for j in c.get("/jobs").json()] == [long["id"], done["id"]]
        assert c.post(f"/jobs/{long['id']}/cancel").json()["status"] == "cancelled"
    assert not list(data.rglob("*.pt"))


def test_activation_while_requests_flow_fails_no_request(make_server, weights_copy):
    srv = make_server(weights_dir=weights_copy).start()
    srv.wait_ready()
    answered: list[str] = []  # the model of every answer, in order
    broken: list[object] = []  # a failed request, or a traffic thread that died: either fails the test
    stop = threading.Event()

    def traffic(seed):
        try:
            with httpx.Client(base_url=srv.url, timeout=10) as c:
                i = seed
                while not stop.is_set():
                    i += 7
                    r = c.post("/predict", json={"prefix": [i % 10, (i // 10) % 10, (i // 100) % 10]})
                    if r.status_code == 200:
                        answered.append(r.json()["model"])
                    else:
                        broken.append((r.status_code, r.text))
        except Exception as exc:
            broken.append(repr(exc))

    threads = [threading.Thread(target=traffic, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    try:
        with srv.client() as c:
            for i in range(20):
                target, seen = ("alt" if i % 2 == 0 else "default"), len(answered)
                assert c.post(f"/models/{target}/activate").status_code == 200
                # the next activation waits for traffic to reach this one, however fast or slow the machine
                poll(lambda target=target, seen=seen: broken or target in answered[seen:], 30,
                     message=f"an answer from {target}")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert broken == []
    assert set(answered) == {"alt", "default"}


def test_openapi_documents_the_job_body_and_every_answer(server):
    api = httpx.get(f"{server.url}/openapi.json").json()
    schemas, paths = api["components"]["schemas"], api["paths"]
    assert schemas["TrainingSpec"]["properties"]["recipe"]["enum"] == ["default", "seed"]
    hidden = schemas["ModelSpec"]["properties"]["hidden_dim"]  # an integer, or null for the corpus's width
    assert [s["maximum"] for s in hidden["anyOf"] if s.get("type") == "integer"] == [512]
    assert {"type": "null"} in hidden["anyOf"] and "128" in hidden["description"]
    assert set(schemas["JobView"]["properties"]["status"]["enum"]) == {"queued", "running", "succeeded", "failed",
                                                                       "cancelled"}
    view = {"$ref": "#/components/schemas/JobView"}
    answer = {(path, method): spec["responses"] for path, methods in paths.items() if path.startswith("/jobs")
              for method, spec in methods.items()}
    assert answer["/jobs", "post"]["202"]["content"]["application/json"]["schema"] == view
    assert answer["/jobs", "get"]["200"]["content"]["application/json"]["schema"]["items"] == view
    assert answer["/jobs/{job_id}", "get"]["200"]["content"]["application/json"]["schema"] == view
    assert answer["/jobs/{job_id}/cancel", "post"]["200"]["content"]["application/json"]["schema"] == view
    assert "text/event-stream" in answer["/jobs/{job_id}/events", "get"]["200"]["content"]
    assert "content" not in answer["/jobs/{job_id}", "delete"]["204"]


@pytest.mark.parametrize("body,words", [
    ({}, "dataset: Field required"),
    ({"dataset": {"sequences": [[1, 2, 3]]}}, "dataset.sequences[0]: has 3 tokens; the model's seq_length is 5"),
    ({"dataset": {"sequences": [[1, 2, 3, 4, 5], [1, 2, 3, 4, 10]]}}, "dataset.sequences[1][4]: token 10 is outside"),
    ({"dataset": {"generator": "fibonacci"}}, "generator"),
    ({"dataset": {"generator": "random"}, "training": {"steps": 0}}, "training.steps"),
    ({"dataset": {"generator": "random"}, "training": {"steps": 1_000_001}}, "training.steps"),
    ({"dataset": {"generator": "random"}, "model": {"hidden_dim": 513}}, "model.hidden_dim"),
    ({"dataset": {"generator": "random"}, "training": {"batch_size": -1}}, "training.batch_size"),
    ({"dataset": {"generator": "random"}, "activate": "sometimes"}, "activate"),
    ({"dataset": {"generator": "random"}, "training": {"learning_rate": "fast"}}, "training.learning_rate"),
])
def test_invalid_job_bodies_get_a_clear_422_and_nothing_is_queued(server, body, words):
    with server.client() as c:
        before = len(c.get("/jobs").json())
        r = c.post("/jobs", json=body)
        assert r.status_code == 422 and words in r.json()["message"], r.text
        assert len(c.get("/jobs").json()) == before


def test_a_huge_job_body_is_413_and_a_full_queue_is_429(make_server):
    srv = make_server(SEQ2SEQ_JOB_QUEUE="1", SEQ2SEQ_MAX_JOB_BYTES="100000").start()
    srv.wait_ready()
    with srv.client() as c:
        big = {"dataset": {"sequences": [[1, 2, 3, 4, 5]] * 20_000}}
        assert c.post("/jobs", json=big).status_code == 413
        first = c.post("/jobs", json={"dataset": {"generator": "random"}, "training": {"steps": 1_000_000}}).json()
        wait_for(c, first["id"], ("running",))
        assert c.post("/jobs", json={"dataset": {"generator": "random"}}).status_code == 202
        r = c.post("/jobs", json={"dataset": {"generator": "random"}})
        assert r.status_code == 429 and "queue is full" in r.json()["message"]
        assert len(c.get("/jobs").json()) == 2


def test_an_api_key_guards_jobs_and_management_but_not_inference(make_server):
    srv = make_server(SEQ2SEQ_API_KEY="s3cret-management-key-0123456789abcdef").start()
    srv.wait_ready()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for method, path in (("GET", "/jobs"), ("POST", "/jobs"), ("POST", "/models/default/activate"),
                             ("DELETE", "/models/default"), ("GET", "/jobs/x/events")):
            r = c.request(method, path, json={"dataset": {"generator": "random"}})
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/jobs", headers={"Authorization": "Bearer s3cret-management-key-0123456789abcdef"}).status_code == 200
        assert c.post("/predict", json={"start": 7}).status_code == 200
        assert c.get("/topk", params={"start": 7}).status_code == 200
        assert c.get("/models").status_code == 200


def test_job_errors_name_the_field_the_way_it_was_sent(server):
    with server.client() as c:
        r = c.post("/jobs", json={"dataset": {"sequences": [[1, 2, 3, 4, "x"]]}})
        assert r.json()["fields"][0]["field"] == "dataset.sequences[0][4]"
        r = c.post("/jobs", json={"dataset": {"colours": ["red"]}})
        assert r.status_code == 422 and 'dataset must be {"sequences"' in r.json()["message"]
