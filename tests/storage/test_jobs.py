"""JobStore on both engines: the queue limit, atomic claims, leases, requeue, no zombie writes, cancel, purge."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from app.storage import Conflict, Finished, IntegrityFailure, Lease, LeaseLost, NotFound, QueueFull, sha256_of
from app.storage.clock import db_now
from tests.postgres import poll
from tests.storage.helpers import new_job

ROOT = Path(__file__).resolve().parents[2]


def later(storage, seconds: float):
    """A moment `seconds` after the database's now: expiring a lease without waiting for it."""
    with storage.engine.connect() as conn:
        return db_now(conn) + timedelta(seconds=seconds)


def test_submit_get_list_counts(storage):
    first = storage.jobs.submit(new_job("j1"), queue_limit=10)
    storage.jobs.submit(new_job("j2", max_attempts=3), queue_limit=10)
    assert first.seq == 1 and first.status == "queued" and first.attempt == 0
    assert first.config == {"name": "j1"} and first.history == [] and first.max_attempts == 2
    assert storage.jobs.get("j2").max_attempts == 3
    assert storage.jobs.body("j1") == {"dataset": {"generator": "random"}}
    assert [j.id for j in storage.jobs.list()] == ["j2", "j1"]
    assert [j.id for j in storage.jobs.list(limit=1)] == ["j2"]
    assert storage.jobs.counts() == {"queued": 2, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    with pytest.raises(Conflict):
        storage.jobs.submit(new_job("j1"), queue_limit=10)
    with pytest.raises(NotFound):
        storage.jobs.get("nope")


def test_queue_limit_holds_under_concurrent_submissions(storage):
    n, limit = 12, 5
    barrier = threading.Barrier(n)
    accepted, refused = [], []

    def submit(i: int) -> None:
        barrier.wait()
        try:
            accepted.append(storage.jobs.submit(new_job(f"j{i}"), queue_limit=limit).seq)
        except QueueFull as exc:
            refused.append(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(accepted) == list(range(1, limit + 1))
    assert len(refused) == n - limit and all(e.limit == limit for e in refused)
    assert storage.jobs.counts()["queued"] == limit
    storage.jobs.claim("w", "host", 1, lease_s=30)  # one starts: room for one more
    storage.jobs.submit(new_job("late"), queue_limit=limit)
    with pytest.raises(QueueFull):
        storage.jobs.submit(new_job("later"), queue_limit=limit)


def test_each_job_is_claimed_once_by_concurrent_threads(storage):
    for i in range(20):
        storage.jobs.submit(new_job(f"j{i}"), queue_limit=100)
    claimed: dict[str, list[str]] = {}
    barrier = threading.Barrier(6)

    def worker(w: int) -> None:
        mine = claimed.setdefault(f"w{w}", [])
        barrier.wait()
        while (job := storage.jobs.claim(f"w{w}", "host", 1000 + w, lease_s=30)) is not None:
            assert job.lease_owner == f"w{w}" and job.status == "running" and job.attempt == 1
            mine.append(job.id)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [j for ids in claimed.values() for j in ids]
    assert sorted(everything) == sorted(f"j{i}" for i in range(20))  # all claimed, none twice
    assert storage.jobs.counts()["running"] == 20


CLAIMER = """
import json, sys
from app.storage import open_storage
storage = open_storage(sys.argv[1], run_migrations=False, verify=None)
ids = []
while (job := storage.jobs.claim(sys.argv[2], "host", 1, 30)) is not None:
    ids.append(job.id)
print(json.dumps(ids))
"""


def test_each_job_is_claimed_once_by_concurrent_processes(storage, storage_url):
    for i in range(30):
        storage.jobs.submit(new_job(f"j{i}"), queue_limit=100)
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, storage_url, f"p{w}"], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True) for w in range(2)]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    everything = [j for ids in results for j in ids]
    assert sorted(everything) == sorted(f"j{i}" for i in range(30))
    for owner, ids in zip(("p0", "p1"), results):
        assert all(storage.jobs.get(j).lease_owner == owner for j in ids)


def test_claim_order_and_empty_queue(storage):
    assert storage.jobs.claim("w", "host", 1, lease_s=30) is None
    for i in range(3):
        storage.jobs.submit(new_job(f"j{i}"), queue_limit=10)
    order = [storage.jobs.claim("w", "host", 1, lease_s=30).id for _ in range(3)]
    assert order == ["j0", "j1", "j2"]
    job = storage.jobs.get("j0")
    assert (job.worker_host, job.worker_pid) == ("host", 1) and job.started_at is not None


def test_expired_leases_requeue_then_fail_as_worker_lost(storage):
    storage.jobs.submit(new_job("j"), queue_limit=10)
    storage.jobs.submit(new_job("other"), queue_limit=10)
    lease = storage.jobs.claim("w1", "host", 1, lease_s=30).lease
    storage.jobs.claim("w9", "host", 9, lease_s=3600)
    assert storage.jobs.requeue_expired() == {"requeued": [], "failed": [], "cancelled": []}  # nothing expired yet
    assert storage.jobs.renew(lease, lease_s=30)
    assert storage.jobs.requeue_expired(later(storage, 60)) == {"requeued": ["j"], "failed": [], "cancelled": []}
    job = storage.jobs.get("j")
    assert (job.status, job.attempt, job.lease_owner, job.finished_at) == ("queued", 1, None, None)
    second = storage.jobs.claim("w2", "host", 2, lease_s=30)
    assert (second.id, second.attempt) == ("j", 2)
    assert storage.jobs.requeue_expired(later(storage, 60)) == {"requeued": [], "failed": ["j"], "cancelled": []}
    job = storage.jobs.get("j")
    assert (job.status, job.error, job.attempt) == ("failed", "worker lost", 2)
    assert job.finished_at is not None
    assert storage.jobs.get("other").status == "running"  # its lease has an hour to go


def test_a_short_lease_expires_on_the_database_clock(storage):
    storage.jobs.submit(new_job("j"), queue_limit=10)
    storage.jobs.claim("w", "host", 1, lease_s=0.05)
    result = poll(lambda: storage.jobs.requeue_expired()["requeued"], timeout=10)
    assert result == ["j"]


def test_zombie_writes_are_refused(storage, checkpoints):
    storage.jobs.submit(new_job("j"), queue_limit=10)
    zombie = storage.jobs.claim("zombie", "host-a", 1, lease_s=30).lease
    storage.jobs.requeue_expired(later(storage, 60))
    heir = storage.jobs.claim("heir", "host-b", 2, lease_s=30).lease
    c = checkpoints[0]
    assert not storage.jobs.renew(zombie, lease_s=30)
    assert not storage.jobs.update_progress(zombie, {"step": 99}, [{"step": 99}])
    assert not storage.jobs.finish(zombie, "failed", {"error": "zombie"})
    with pytest.raises(LeaseLost):
        storage.jobs.finish_with_model(zombie, model_id="m-z", checkpoint=c.blob, sha256=c.sha256,
                                       created_at=c.created_at, info={}, activate=True)
    with pytest.raises(NotFound):
        storage.models.get("m-z")  # the model went with the refused transaction
    assert storage.models.active() == (None, 0)
    job = storage.jobs.get("j")
    assert (job.status, job.lease_owner, job.worker_host, job.progress) == (
        "running", "heir", "host-b", {"step": 0, "total_steps": 10})
    assert storage.jobs.update_progress(heir, {"step": 5}, [{"step": 5, "loss": 1.0}])
    assert storage.jobs.finish(heir, "failed", {"error": "boom"})
    assert not storage.jobs.finish(heir, "succeeded")  # ended: nobody holds it any more
    job = storage.jobs.get("j")
    assert (job.status, job.error, job.progress, job.history) == (
        "failed", "boom", {"step": 5}, [{"step": 5, "loss": 1.0}])


def test_finish_with_model_registers_activates_and_finishes_in_one_transaction(storage, checkpoints):
    c0, c1 = checkpoints[0], checkpoints[1]
    storage.jobs.submit(new_job("j"), queue_limit=10)
    lease = storage.jobs.claim("w", "host", 1, lease_s=30).lease
    junk = b"junk"
    with pytest.raises(IntegrityFailure):
        storage.jobs.finish_with_model(lease, model_id="m-j", checkpoint=junk, sha256=sha256_of(junk),
                                       created_at=c0.created_at, info={})
    assert storage.jobs.get("j").status == "running" and storage.models.list() == []
    storage.models.register_trained("taken", c1.blob, c1.sha256, c1.created_at, {})
    with pytest.raises(Conflict):
        storage.jobs.finish_with_model(lease, model_id="taken", checkpoint=c0.blob, sha256=c0.sha256,
                                       created_at=c0.created_at, info={})
    assert storage.jobs.get("j").status == "running"
    finished = storage.jobs.finish_with_model(
        lease, model_id="m-j", checkpoint=c0.blob, sha256=c0.sha256, created_at=c0.created_at,
        info={"name": "j"}, activate=True, outcome={"activation_reason": "activated: always", "progress": {"step": 10}})
    assert finished == Finished(True, "activated: always", 1) and storage.models.active() == ("m-j", 1)
    job = storage.jobs.get("j")
    assert (job.status, job.model_id, job.activated, job.activation_reason, job.progress) == (
        "succeeded", "m-j", True, "activated: always", {"step": 10})
    assert storage.models.checkpoint_bytes("m-j") == c0.blob
    storage.jobs.submit(new_job("k"), queue_limit=10)
    lease = storage.jobs.claim("w", "host", 1, lease_s=30).lease
    assert storage.jobs.finish_with_model(lease, model_id="m-k", checkpoint=c1.blob, sha256=c1.sha256,
                                          created_at=c1.created_at, info={}).version is None
    assert storage.models.active() == ("m-j", 1) and storage.jobs.get("k").activated is False


def test_cancel(storage):
    for i in range(3):
        storage.jobs.submit(new_job(f"j{i}"), queue_limit=10)
    assert storage.jobs.request_cancel("j0").status == "cancelled"  # queued: ends at once
    with pytest.raises(Conflict, match="ended"):
        storage.jobs.request_cancel("j0")
    running = storage.jobs.claim("w", "host", 1, lease_s=30)
    assert running.id == "j1" and running.lease is not None  # the cancelled job is never claimed
    job = storage.jobs.request_cancel("j1")
    assert (job.status, job.cancel_requested) == ("running", True)
    assert storage.jobs.cancel_requested("j1")
    assert storage.jobs.finish(running.lease, "cancelled")
    storage.jobs.claim("w2", "host", 2, lease_s=30)
    storage.jobs.request_cancel("j2")
    assert storage.jobs.requeue_expired(later(storage, 60))["cancelled"] == ["j2"]  # its worker died: no retry
    assert storage.jobs.counts()["cancelled"] == 3
    with pytest.raises(ValueError):
        storage.jobs.finish(running.lease, "running")


def test_purge_finished_keeps_the_newest(storage):
    for i in range(5):
        storage.jobs.submit(new_job(f"j{i}"), queue_limit=10)
    for i in range(4):
        storage.jobs.request_cancel(f"j{i}")
    assert storage.jobs.count_finished() == 4
    assert storage.jobs.purge_finished(keep=2) == ["j1", "j0"]
    assert [j.id for j in storage.jobs.list()] == ["j4", "j3", "j2"]  # the queued one stays
    assert storage.jobs.purge_finished(keep=2) == []


def test_release_hands_a_job_back_without_counting_the_attempt(storage):
    storage.jobs.submit(new_job("j"), queue_limit=10)
    lease = storage.jobs.claim("w", "host", 1, lease_s=30).lease
    assert storage.jobs.release(Lease("j", "someone-else", lease.token)) is None
    assert storage.jobs.release(lease) == "queued"
    job = storage.jobs.get("j")
    assert (job.status, job.attempt, job.lease_owner, job.started_at, job.handbacks) == ("queued", 0, None, None, 1)
    assert storage.jobs.release(lease) is None  # no longer held
    assert storage.jobs.claim("w2", "host", 2, lease_s=30).attempt == 1


def test_delete_forgets_only_ended_jobs(storage):
    storage.jobs.submit(new_job("queued"), queue_limit=10)
    storage.jobs.submit(new_job("ended"), queue_limit=10)
    storage.jobs.request_cancel("ended")
    with pytest.raises(Conflict, match="queued"):
        storage.jobs.delete("queued")
    storage.jobs.delete("ended")
    with pytest.raises(NotFound):
        storage.jobs.delete("ended")
    assert [j.id for j in storage.jobs.list()] == ["queued"]
