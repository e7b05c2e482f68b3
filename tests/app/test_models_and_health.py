"""The registry endpoints, readiness, metrics."""
import shutil

import pytest
import torch

from tests.conftest import WEIGHTS


def test_models_lists_the_shipped_model_as_active(client):
    models = client.get("/models").json()
    assert [m["id"] for m in models] == ["default"]
    m = models[0]
    assert m["active"] and m["source"] == "shipped" and m["created_at"]
    assert m["hyperparameters"]["attention"] is True and m["metrics"]["top1_agreement"] == 1.0
    assert client.get("/models/active").json() == m
    one = client.get("/models/default").json()
    assert one.pop("live")["requests"] >= 0 and m.pop("live") is None  # live metrics: GET /models/ID only
    assert one == m


def test_unknown_and_malformed_model_ids(client):
    assert client.get("/models/nope").status_code == 404
    assert client.get("/models/a%20b").status_code == 404
    assert client.post("/models/nope/activate").status_code == 404


def test_shipped_and_active_models_cannot_be_deleted(client):
    r = client.delete("/models/default")
    assert r.status_code == 409 and "shipped" in r.json()["message"]
    assert client.get("/models/active").json()["id"] == "default"


def test_activation_switches_what_requests_use_and_survives_a_restart(make_client, weights_copy, tmp_path):
    data = tmp_path / "shared-data"
    c = make_client(weights_dir=weights_copy, data_dir=data)
    assert c.post("/models/alt/activate").json()["active"] is True
    assert c.post("/predict", json={"start": 7}).json()["model"] == "alt"
    c.__exit__(None, None, None)
    again = make_client(weights_dir=weights_copy, data_dir=data)
    assert again.get("/readyz").json()["model"] == "alt"


def test_readyz_reports_the_model_and_device(client):
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready", "model": "default", "active_model": "default",
                                             "device": "cpu", "database": "ok"}
    assert client.get("/healthz").json() == {"status": "ok"}


def test_a_corrupt_active_model_makes_readyz_503_but_the_process_lives(make_client, tmp_path):
    weights = tmp_path / "w"
    weights.mkdir()
    shutil.copy(WEIGHTS / "default.pt.sha256", weights / "default.pt.sha256")
    (weights / "default.pt").write_bytes((WEIGHTS / "default.pt").read_bytes()[:5000])
    c = make_client(weights_dir=weights)
    r = c.get("/readyz")
    assert r.status_code == 503 and "default" in r.json()["reason"]
    assert c.get("/healthz").status_code == 200
    r = c.post("/predict", json={"start": 7})
    assert r.status_code == 503 and r.json()["error"] == "unavailable"


@pytest.mark.skipif(torch.cuda.is_available(), reason="about hosts without CUDA")
def test_cuda_asked_for_without_cuda_falls_back_to_cpu_and_says_so(make_client):
    body = make_client(device="cuda").get("/readyz").json()
    assert body["device"] == "cpu" and "CUDA is not available" in body["device_note"]


def test_metrics_expose_requests_latency_batches_cache_and_model(client):
    client.post("/predict", json={"start": 1})
    client.post("/predict", json={"start": 99})
    text = client.get("/metrics").text
    assert 'seq2seq_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'seq2seq_requests_total{method="POST",route="/predict",status="422"}' in text
    assert 'seq2seq_request_seconds_bucket{le="0.005",method="POST",route="/predict",status="200"}' in text
    assert "seq2seq_batch_size_count" in text and 'seq2seq_cache_total{result="miss"}' in text
    assert 'seq2seq_active_model{model="default"} 1.0' in text


def test_a_shipped_file_whose_name_is_not_a_model_id_is_skipped(make_client, weights_copy):
    shutil.copy(WEIGHTS / "default.pt", weights_copy / "bad name!.pt")
    c = make_client(weights_dir=weights_copy)
    assert sorted(m["id"] for m in c.get("/models").json()) == ["alt", "default"]
    assert c.get("/readyz").status_code == 200


def test_jobs_list_takes_a_limit(client):
    assert client.get("/jobs", params={"limit": 0}).status_code == 422
    assert client.get("/jobs", params={"limit": 5}).json() == []
