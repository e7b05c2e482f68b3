"""On a host with CUDA: the service serves on the GPU and answers as it does on the CPU. Skipped without CUDA."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_the_service_serves_on_cuda_and_answers_as_on_the_cpu(make_client):
    gpu, cpu = make_client(device="cuda"), make_client(device="cpu")
    assert gpu.get("/readyz").json()["device"].startswith("cuda")
    for start in range(10):
        on_gpu = gpu.post("/predict", json={"start": start}).json()
        on_cpu = cpu.post("/predict", json={"start": start}).json()
        assert on_gpu["sequence"] == on_cpu["sequence"]
        assert on_gpu["score"] == pytest.approx(on_cpu["score"], abs=1e-4)
        top_gpu = gpu.get("/topk", params={"start": start, "k": 3}).json()["suggestions"]
        top_cpu = cpu.get("/topk", params={"start": start, "k": 3}).json()["suggestions"]
        assert [s["sequence"] for s in top_gpu] == [s["sequence"] for s in top_cpu]
    batch = gpu.post("/predict/batch", json={"prefixes": [[d] for d in range(10)]}).json()["results"]
    assert [r["sequence"] for r in batch] == [cpu.post("/predict", json={"start": d}).json()["sequence"] for d in range(10)]
