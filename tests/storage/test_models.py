"""ModelStore on both engines: verified registration, reads that re-check hashes, guarded delete and activate."""
from __future__ import annotations

import json
import random
import threading

import pytest
import sqlalchemy as sa

from app.storage import CheckpointInfo, Conflict, IntegrityFailure, ModelRow, NotFound, sha256_of
from app.storage.schema import active_model, models
from tests.storage.helpers import register

WEIGHTS = "weights/default.pt"


def test_register_get_list_and_bytes_round_trip(storage, checkpoints):
    c0, c1 = checkpoints[0], checkpoints[1]
    described = register(storage, "m-0", c0)
    register(storage, "m-1", c1)
    assert described == ModelRow(id="m-0", source="trained", path=None, sha256=c0.sha256, created_at=c0.created_at,
                                 info=CheckpointInfo.model_validate(c0.info), size=len(c0.blob), active=False)
    assert described.info.to_json() == json.dumps(c0.info, separators=(",", ":"))  # the row reads back as written
    assert [m.id for m in storage.models.list()] == ["m-1", "m-0"]  # newest first
    assert storage.models.checkpoint_bytes("m-1") == c1.blob
    assert storage.models.count_trained() == 2


def test_register_refuses_bad_bytes_and_duplicate_ids(storage, checkpoints):
    c0 = checkpoints[0]
    with pytest.raises(IntegrityFailure, match="SHA-256"):
        storage.models.register_trained("m-x", c0.blob, checkpoints[1].sha256, c0.created_at, {})
    junk = b"not a checkpoint"
    with pytest.raises(IntegrityFailure, match="does not load"):
        storage.models.register_trained("m-x", junk, sha256_of(junk), c0.created_at, {})
    truncated = c0.blob[: len(c0.blob) // 2]
    with pytest.raises(IntegrityFailure, match="does not load"):
        storage.models.register_trained("m-x", truncated, sha256_of(truncated), c0.created_at, {})
    assert storage.models.list() == []
    register(storage, "m-x", c0)
    with pytest.raises(Conflict):
        register(storage, "m-x", checkpoints[1])
    assert storage.models.checkpoint_bytes("m-x") == c0.blob


def test_checkpoint_bytes_detects_tampering(storage, checkpoints):
    register(storage, "m-0", checkpoints[0])
    with storage.engine.begin() as conn:
        conn.execute(sa.update(models).where(models.c.id == "m-0").values(checkpoint=checkpoints[0].blob[:-1] + b"x"))
    with pytest.raises(IntegrityFailure, match="SHA-256"):
        storage.models.checkpoint_bytes("m-0")
    with pytest.raises(NotFound):
        storage.models.checkpoint_bytes("nope")


def test_shipped_models_are_files_and_cannot_be_deleted(storage, checkpoints, tmp_path):
    path = tmp_path / "shipped.pt"
    path.write_bytes(checkpoints[2].blob)
    shipped = storage.models.upsert_shipped("default", path, checkpoints[2].sha256, "2025-01-01T00:00:00+00:00",
                                            {"name": "default"})
    assert (shipped.source, shipped.path, shipped.size) == ("shipped", str(path), None)
    assert storage.models.checkpoint_bytes("default") == checkpoints[2].blob
    again = storage.models.upsert_shipped("default", path, checkpoints[2].sha256, "2025-02-01T00:00:00+00:00",
                                          {"name": "refreshed"})
    assert (again.created_at, again.info) == ("2025-02-01T00:00:00+00:00", CheckpointInfo(name="refreshed"))
    with pytest.raises(Conflict, match="shipped"):
        storage.models.delete("default")
    register(storage, "m-0", checkpoints[0])
    with pytest.raises(Conflict, match="trained"):
        storage.models.upsert_shipped("m-0", path, checkpoints[2].sha256, "2025-01-01T00:00:00+00:00", {})
    path.write_bytes(checkpoints[1].blob)  # the file changed under the registry
    with pytest.raises(IntegrityFailure):
        storage.models.checkpoint_bytes("default")
    assert storage.models.count_trained() == 1


def test_activate_and_delete(storage, checkpoints):
    assert storage.models.active() == (None, 0)
    register(storage, "m-0", checkpoints[0])
    register(storage, "m-1", checkpoints[1])
    with pytest.raises(NotFound):
        storage.models.activate("nope")
    assert storage.models.active() == (None, 0)
    assert storage.models.activate("m-0") == 1
    assert storage.models.activate("m-0") == 2  # every activation bumps the version
    assert storage.models.active() == ("m-0", 2)
    assert storage.models.get("m-0").active and not storage.models.get("m-1").active
    with pytest.raises(Conflict, match="active"):
        storage.models.delete("m-0")
    assert storage.models.oldest_trained(10) == ["m-1"]
    assert storage.models.oldest_trained(10, exclude_active=False) == ["m-0", "m-1"]
    storage.models.delete("m-1")
    with pytest.raises(NotFound):
        storage.models.delete("m-1")
    with pytest.raises(NotFound):
        storage.models.get("m-1")
    assert [m.id for m in storage.models.list()] == ["m-0"]


def test_concurrent_activations_leave_one_winner(storage, checkpoints):
    ids = [f"m-{i}" for i in range(8)]
    for i, model_id in enumerate(ids):
        register(storage, model_id, checkpoints[i % len(checkpoints)])
    barrier = threading.Barrier(len(ids))
    versions: dict[str, int] = {}
    errors: list[BaseException] = []

    def activate(model_id: str) -> None:
        try:
            barrier.wait()
            versions[model_id] = storage.models.activate(model_id)
        except BaseException as exc:  # a thread that dies must fail the test, saying why
            errors.append(exc)

    threads = [threading.Thread(target=activate, args=(m,)) for m in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(versions.values()) == list(range(1, len(ids) + 1))  # serialized: each saw the previous one
    winner = max(versions, key=versions.get)
    assert storage.models.active() == (winner, len(ids))


def test_activate_delete_storm_keeps_the_registry_consistent(storage, checkpoints):
    ids = [f"m-{i}" for i in range(6)]
    for model_id in ids:
        register(storage, model_id, checkpoints[0])
    storage.models.activate(ids[0])
    activations = [1]
    lock = threading.Lock()
    unexpected: list[BaseException] = []
    dangling: list[tuple] = []
    stop = threading.Event()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            model_id = rng.choice(ids)
            try:
                if rng.random() < 0.5:
                    storage.models.activate(model_id)
                    with lock:
                        activations[0] += 1
                elif rng.random() < 0.7:
                    storage.models.delete(model_id)
                else:
                    register(storage, model_id, checkpoints[0])
            except (Conflict, NotFound):
                pass  # refused: active, shipped, gone or already there
            except BaseException as exc:
                unexpected.append(exc)

    def checker() -> None:  # the pointer must name a registered model at every instant
        while not stop.is_set():
            with storage.engine.connect() as conn:
                row = conn.execute(sa.select(active_model.c.model_id, models.c.id)
                                   .select_from(active_model.outerjoin(models, models.c.id == active_model.c.model_id))
                                   ).one()
            if row[0] is not None and row[1] is None:
                dangling.append(tuple(row))

    watcher = threading.Thread(target=checker)
    watcher.start()
    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert unexpected == [] and dangling == []
    active_id, version = storage.models.active()
    assert version == activations[0]
    assert active_id in {m.id for m in storage.models.list()}
