"""Deployment files: no Docker engine runs here, so lint the Dockerfile and check what compose wires."""
import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    proc = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_installs_like_make_install_and_runs_unprivileged():
    text = (ROOT / "Dockerfile").read_text()
    make = (ROOT / "Makefile").read_text()
    assert "TORCH_SPEC ?= torch==2.13.0" in make and "ARG TORCH_SPEC=torch==2.13.0" in text
    torch_step, package_step = text.index('"${TORCH_SPEC}"'), text.index("RUN pip install .")
    assert torch_step < package_step  # torch first, then the package, as in `make install`
    assert "USER 10001" in text and "HEALTHCHECK" in text and "/readyz" in text
    assert 'VOLUME ["/data"]' in text and "COPY weights" in text and "ARG TORCH_INDEX" in text


def test_compose_serves_api_on_8000_with_a_volume_healthcheck_and_restart_policy():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api = compose["services"]["api"]
    assert "8000:8000" in api["ports"]
    assert "seq2seq-data:/data" in api["volumes"] and "seq2seq-data" in compose["volumes"]
    assert any("/readyz" in part for part in api["healthcheck"]["test"])
    assert api["restart"] == "unless-stopped"
    assert api["environment"]["SEQ2SEQ_API_KEY"] == "${SEQ2SEQ_API_KEY:-}"  # empty: a generated key in /data
    assert "SEQ2SEQ_AUTH" not in api["environment"]  # management stays locked
    assert api["environment"]["SEQ2SEQ_DATA_DIR"] == "/data"
    assert "deploy" not in api  # no GPU needed for `docker compose up`


def test_compose_api_is_hardened_and_bounded():
    api = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["api"]
    assert api["read_only"] is True and api["tmpfs"][0].startswith("/tmp")  # writes: the /data volume and /tmp
    assert api["cap_drop"] == ["ALL"] and "cap_add" not in api
    assert api["security_opt"] == ["no-new-privileges:true"]
    assert float(api["cpus"]) > 0 and api["mem_limit"] and api["pids_limit"] > 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert api["image"] == f"seq2seq-serve:{version}"
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["services"]["api"]
    assert gpu["image"] == f"seq2seq-serve:{version}-cuda"  # the CUDA build gets its own tag


def test_gpu_override_reserves_a_gpu_and_asks_for_cuda():
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["services"]["api"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["environment"]["SEQ2SEQ_DEVICE"] == "cuda"


def test_the_build_context_leaves_out_the_venv_and_the_data():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git"} <= set(ignored)
