"""The registry's parts without HTTP: the LRU keeps the served model, a CUDA failure serves on the CPU, versions
only move forward, and a model deleted by another process is forgotten after the once-a-second recheck."""
from __future__ import annotations

import asyncio

import pytest
import torch

from app import storage
from app.device import Device
from app.registry import Registry, info_of
from model import checkpoint
from tests.conftest import WEIGHTS


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    opened = storage.open_storage(f"sqlite:///{tmp_path / 'registry.db'}")
    yield opened
    opened.close()


def make_registry(store: storage.Storage, weights_dir, device: Device | None = None, keep_loaded: int = 4) -> Registry:
    registry = Registry(store.models, weights_dir, device or Device("cpu", torch.device("cpu")), "default", keep_loaded)
    registry.sync_shipped()
    registry.load_active()
    return registry


def register_copy(store: storage.Storage, model_id: str) -> None:
    blob = (WEIGHTS / "default.pt").read_bytes()
    ckpt = checkpoint.load(WEIGHTS / "default.pt")
    store.models.register_trained(model_id, blob, storage.sha256_of(blob), ckpt.created_at, info_of(ckpt))


def test_the_lru_never_evicts_the_model_being_served(store, weights_copy):
    registry = make_registry(store, weights_copy, keep_loaded=1)
    served = registry.resolve(None)
    named = registry.resolve("alt")
    assert (served.id, named.id) == ("default", "alt")
    assert registry.loader.cached("default") is served and registry.loader.cached("alt") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CUDA device that fails: a host without CUDA")
def test_a_cuda_failure_serves_on_the_cpu_and_says_so(store, weights_copy):
    device = Device("cuda", torch.device("cuda"))
    registry = make_registry(store, weights_copy, device)
    assert registry.resolve(None).device.type == "cpu"
    assert device.granted.type == "cpu" and "failed" in (device.note or "")


def test_versions_only_move_forward_and_a_held_model_stays_the_same(store, weights_copy):
    registry = make_registry(store, weights_copy)
    held = registry.resolve(None)
    assert registry.activate("alt").active
    version = registry.active_version
    registry.follow("default", version - 1)  # a late callback for an older pointer
    assert registry.resolve(None).id == "alt" and held.id == "default"
    registry.follow("default", version + 1)
    assert registry.resolve(None).id == "default"


def test_a_model_deleted_elsewhere_is_forgotten_at_the_next_recheck(store, weights_copy):
    register_copy(store, "gone")
    registry = make_registry(store, weights_copy)
    registry.loader.clock = clock = Clock()
    forgotten: list[str] = []
    registry.on_forget.append(forgotten.append)
    loaded = asyncio.run(registry.resolve_async("gone"))
    store.models.delete("gone")  # as another process would
    assert asyncio.run(registry.resolve_async("gone")) is loaded  # seen less than a second ago: no query
    clock.now += 1.01
    with pytest.raises(storage.NotFound):
        asyncio.run(registry.resolve_async("gone"))
    assert forgotten == ["gone"] and registry.loader.cached("gone") is None
