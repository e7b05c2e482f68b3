"""The registry's parts without HTTP: the LRU keeps the served model, a CUDA failure serves on the CPU, versions
only move forward, a model deleted by another process is forgotten after the once-a-second recheck, failed
loads are remembered, loads are bounded, and an unloadable active model leaves a fallback served and retried."""
from __future__ import annotations

import asyncio

import pytest
import torch

from app import storage
from app.device import Device
from app.errors import NotFound, Unavailable
from app.registry import Registry, info_of
from model import checkpoint
from model.config import ModelConfig
from model.network import Seq2Seq
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


def make_registry(store: storage.Storage, weights_dir, device: Device | None = None, keep_loaded: int = 4,
                  **kw) -> Registry:
    registry = Registry(store.models, weights_dir, device or Device("cpu", torch.device("cpu")), "default", keep_loaded,
                        **kw)
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


def test_a_running_rollouts_candidate_is_not_rechecked_while_it_is_held(store, weights_copy):
    register_copy(store, "held")
    registry = make_registry(store, weights_copy)
    registry.loader.clock = clock = Clock()
    loaded = asyncio.run(registry.resolve_async("held"))
    registry.hold(frozenset({"held"}))  # the database refuses its deletion while the rollout runs
    store.models.delete("held")  # stands for a row this process could not read in time
    clock.now += 5
    assert asyncio.run(registry.resolve_async("held")) is loaded  # no query on the request's path
    registry.hold(frozenset())  # the rollout ended: rechecked as any named model
    with pytest.raises(storage.NotFound):
        asyncio.run(registry.resolve_async("held"))


def corrupt(store: storage.Storage, model_id: str, blob: bytes) -> None:
    """Overwrite a trained model's stored bytes, as a bad disk or a tampered row would."""
    import sqlalchemy as sa

    from app.storage.schema import models
    with store.engine.begin() as conn:
        conn.execute(sa.update(models).where(models.c.id == model_id).values(checkpoint=blob))


GOOD = (WEIGHTS / "default.pt").read_bytes()


def test_a_failed_load_is_remembered_for_a_while_then_tried_again(store, weights_copy):
    register_copy(store, "flaky")
    corrupt(store, "flaky", GOOD[:-10])
    registry = make_registry(store, weights_copy)
    registry.loader.clock = clock = Clock()
    with pytest.raises(Unavailable, match="do not match the SHA-256"):
        asyncio.run(registry.resolve_async("flaky"))
    corrupt(store, "flaky", GOOD)  # mended, but the failure is still remembered: no read, no hash, no load
    with pytest.raises(Unavailable, match="do not match the SHA-256") as remembered:
        asyncio.run(registry.resolve_async("flaky"))
    assert remembered.value.retry_after == 30
    with pytest.raises((NotFound, storage.NotFound)):
        asyncio.run(registry.resolve_async("later"))
    register_copy(store, "later")
    with pytest.raises((NotFound, storage.NotFound)):  # unknown a moment ago: still unknown to this process until the memory lapses
        asyncio.run(registry.resolve_async("later"))
    clock.now += 30.01
    assert asyncio.run(registry.resolve_async("flaky")).id == "flaky"
    assert asyncio.run(registry.resolve_async("later")).id == "later"


def test_activation_tries_a_remembered_failure_again(store, weights_copy):
    register_copy(store, "mended")
    corrupt(store, "mended", GOOD[:-10])
    registry = make_registry(store, weights_copy)
    with pytest.raises(Unavailable):
        registry.resolve("mended")
    corrupt(store, "mended", GOOD)
    assert registry.activate("mended").active and registry.resolve(None).id == "mended"


def test_loads_are_bounded_and_one_per_model(store, weights_copy):
    for name in ("one", "two"):
        register_copy(store, name)
    registry = make_registry(store, weights_copy, model_loads=1, load_waiting=0)

    async def three_requests():
        return await asyncio.gather(registry.resolve_async("one"), registry.resolve_async("one"),
                                    registry.resolve_async("two"), return_exceptions=True)

    first, same, other = asyncio.run(three_requests())
    assert first is same and first.id == "one"  # the second request waited for the first one's load
    assert isinstance(other, Unavailable) and "SEQ2SEQ_MODEL_LOADS" in other.message and other.retry_after
    assert asyncio.run(registry.resolve_async("two")).id == "two"  # a slot is free again
    registry.close()


def test_loads_past_the_threads_wait_their_turn_up_to_a_bound(store, weights_copy):
    for name in ("one", "two", "three"):
        register_copy(store, name)
    registry = make_registry(store, weights_copy, model_loads=1, load_waiting=1)

    async def three_models():
        return await asyncio.gather(*(registry.resolve_async(m) for m in ("one", "two", "three")),
                                    return_exceptions=True)

    one, two, three = asyncio.run(three_models())
    assert (one.id, two.id) == ("one", "two")  # the second waited for the one load thread
    assert isinstance(three, Unavailable) and "1 more wait" in three.message  # the third found the queue full
    registry.close()


def test_an_unloadable_active_model_is_replaced_by_the_shipped_default_and_retried(store, weights_copy):
    register_copy(store, "trained")
    store.models.activate("trained")
    corrupt(store, "trained", GOOD[:-10])
    registry = Registry(store.models, weights_copy, Device("cpu", torch.device("cpu")), "default", 4,
                        retry_s=60, retry_max_s=60)  # the retry is driven by hand below
    registry.sync_shipped()
    registry.load_active()
    assert registry.resolve(None).id == "default" and registry.pointer_model == "trained"
    assert "'trained'" in registry.degraded and "shipped 'default'" in registry.degraded
    assert registry.follower.retry() is False and registry.degraded
    corrupt(store, "trained", GOOD)
    assert registry.follower.retry() is True
    assert registry.resolve(None).id == "trained" and registry.degraded is None
    registry.close()


def test_a_pointer_that_moves_to_an_unloadable_model_keeps_the_last_good_one(store, weights_copy):
    register_copy(store, "broken")
    corrupt(store, "broken", GOOD[:-10])
    registry = make_registry(store, weights_copy)
    assert registry.activate("alt").active
    version = store.models.activate("broken")  # another process moved it (its copy may have loaded)
    registry.follow("broken", version)
    assert registry.resolve(None).id == "alt" and registry.pointer_model == "broken"
    assert "last model that loaded" in registry.degraded
    registry.follow("default", version + 1)  # an operator activates a good model: tried at once
    assert registry.resolve(None).id == "default" and registry.degraded is None
    registry.close()


def test_a_shipped_file_is_checked_against_the_registry_hash(store, weights_copy, tmp_path):
    registry = make_registry(store, weights_copy)
    torch.manual_seed(1)
    checkpoint.save(weights_copy / "alt.pt", Seq2Seq(ModelConfig()), {})  # a valid file with its own manifest
    with pytest.raises(Unavailable, match="do not match the SHA-256 the registry recorded"):
        registry.activate("alt")
    assert registry.resolve(None).id == "default"
    registry.close()
