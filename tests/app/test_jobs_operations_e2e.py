"""Jobs under operations (issue 15) against real server processes and real training runs: an operator's rollback
during an if_better job, two if_better jobs racing, a cancel after the training process exited, a registration
that meets a held database lock, hand-backs on SIGTERM and their cap, and the progress watchdog."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from app.storage import JobStore, default_url, make_engine, open_storage
from app.storage.engine import write
from tests.app.test_jobs_e2e import CORPUS, FAST, wait_for, workers_of
from tests.conftest import poll

IF_BETTER = {"dataset": {"sequences": CORPUS}, "training": FAST, "activate": "if_better"}


def training_pid(server_pid: int, job_id: str) -> int | None:
    """The training process of this job (started with its spec file, whose name holds the job id)."""
    for pid in workers_of(server_pid):
        try:
            if job_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


def training(c, srv, job_id: str) -> int:
    """Wait until the job's process trains (so its baseline was read), and return its pid."""
    poll(lambda: c.get(f"/jobs/{job_id}").json()["progress"]["step"] > 0, 60, message=f"{job_id} to train")
    return poll(lambda: training_pid(srv.proc.pid, job_id), 10, message=f"{job_id}'s training process")


def test_an_operators_rollback_during_an_if_better_job_stands(make_server, weights_copy):
    srv = make_server(weights_dir=weights_copy).start()
    srv.wait_ready()
    with srv.client() as c:
        job = c.post("/jobs", json=IF_BETTER).json()
        pid = training(c, srv, job["id"])  # scored against 'default', the active model when it started
        os.kill(pid, signal.SIGSTOP)  # so the rollback surely lands while it trains
        try:
            assert c.post("/models/alt/activate").status_code == 200
        finally:
            os.kill(pid, signal.SIGCONT)
        done = wait_for(c, job["id"])
        assert done["status"] == "succeeded" and done["activated"] is False
        reason = done["activation_reason"]
        assert "at least the active model 'default'" in reason  # it did beat what it was compared with
        assert "the active model changed while the job trained" in reason and "to 'alt'" in reason
        assert c.get("/models/active").json()["id"] == "alt"
        assert done["model_id"] in {m["id"] for m in c.get("/models").json()}  # kept for the operator


def test_of_two_if_better_jobs_the_last_finisher_does_not_override(make_server):
    srv = make_server(SEQ2SEQ_JOB_WORKERS="2").start()
    srv.wait_ready()
    with srv.client() as c:
        better = c.post("/jobs", json=IF_BETTER).json()
        worse = c.post("/jobs", json={**IF_BETTER, "training": {**FAST, "steps": 60}}).json()
        training(c, srv, better["id"])
        worse_pid = training(c, srv, worse["id"])  # both were scored against 'default'
        os.kill(worse_pid, signal.SIGSTOP)  # it finishes last
        try:
            first = wait_for(c, better["id"])
        finally:
            os.kill(worse_pid, signal.SIGCONT)
        assert first["activated"] is True
        last = wait_for(c, worse["id"])
        assert last["status"] == "succeeded" and last["activated"] is False
        assert last["progress"]["accuracy"] <= first["progress"]["accuracy"]
        assert f"to {first['model_id']!r}" in last["activation_reason"]
        assert c.get("/models/active").json()["id"] == first["model_id"]


def db_lock_then(srv, c, job_id: str, inside=None) -> None:
    """Hold the SQLite write lock from another connection while the job trains, until its registration has
    failed on it at least once; then run `inside(conn)` in that same transaction and commit."""
    engine = make_engine(default_url(srv.data_dir))
    try:
        training(c, srv, job_id)
        with write(engine) as conn:  # BEGIN IMMEDIATE
            poll(lambda: "its outcome was not written (OperationalError: database is locked)" in
                 srv.log.read_text(), 60, message="the registration to meet the lock")
            if inside is not None:
                inside(conn)
    finally:
        engine.dispose()


def test_registration_survives_a_held_database_lock_and_a_late_cancel_is_honoured(make_server):
    # each try of the registration waits 0.3 s for the lock; the lease (60 s) outlasts the hold
    srv = make_server(SEQ2SEQ_JOB_LOCK_WAIT_S="0.3", SEQ2SEQ_JOB_LEASE_S="60").start()
    srv.wait_ready()
    with srv.client() as c:
        job = c.post("/jobs", json={**IF_BETTER, "activate": "always"}).json()
        db_lock_then(srv, c, job["id"])
        done = wait_for(c, job["id"])
        assert (done["status"], done["activated"], done["error"]) == ("succeeded", True, None)
        assert c.get("/models/active").json()["id"] == done["model_id"]
        assert not list(srv.data_dir.rglob("*.pt"))

        # a cancel that commits after the training process exited, before its registration did
        late = c.post("/jobs", json={**IF_BETTER, "activate": "always"}).json()
        srv.log.write_text("")
        db_lock_then(srv, c, late["id"], inside=lambda conn: JobStore.cancel_in(conn, late["id"]))
        ended = wait_for(c, late["id"])
        assert ended["status"] == "succeeded" and ended["activated"] is False
        assert "a cancel was asked for after training had ended" in ended["activation_reason"]
        assert c.get("/models/active").json()["id"] == done["model_id"]  # unmoved
        assert ended["model_id"] in {m["id"] for m in c.get("/models").json()}


def test_hand_backs_on_sigterm_are_counted_and_capped(make_server, tmp_path):
    data = tmp_path / "kept"
    env = {"SEQ2SEQ_JOB_MAX_HANDBACKS": "1"}
    long = None
    for handbacks in (1, 2):
        srv = make_server(data, **env).start()
        srv.wait_ready()
        with srv.client() as c:
            if long is None:
                long = c.post("/jobs", json={"dataset": {"generator": "random"},
                                             "training": {"steps": 1_000_000}}).json()
            running = wait_for(c, long["id"], ("running",))
            assert (running["attempt"], running["handbacks"]) == (1, handbacks - 1)
            training(c, srv, long["id"])
        assert srv.stop(signal.SIGTERM) == 0  # an evicted pod: the job is handed back
    store = open_storage(default_url(data), run_migrations=False)
    try:
        job = store.jobs.get(long["id"])
    finally:
        store.close()
    assert (job.status, job.handbacks, job.lease_owner) == ("failed", 2, None)
    assert "handed back to the queue 2 times" in job.error and "SEQ2SEQ_JOB_MAX_HANDBACKS" in job.error


def test_a_training_process_that_stops_reporting_is_killed_and_its_job_retried_then_failed(make_server):
    deadline = "6"  # seconds: longer than a training process takes to start and report, on a busy machine too
    srv = make_server(SEQ2SEQ_JOB_PROGRESS_TIMEOUT_S=deadline).start()
    srv.wait_ready()
    with srv.client() as c:
        job = c.post("/jobs", json={"dataset": {"generator": "random"}, "training": {"steps": 1_000_000},
                                    "max_attempts": 2}).json()
        first = training(c, srv, job["id"])
        os.kill(first, signal.SIGSTOP)  # hung: alive, holding its lease, silent
        again = poll(lambda: (j := c.get(f"/jobs/{job['id']}").json())["attempt"] == 2 and j, 60,
                     message="the second attempt")
        assert f"sent no progress for {deadline} s" in again["error"]
        second = training(c, srv, job["id"])
        assert second != first and not Path(f"/proc/{first}").exists()  # killed and reaped
        os.kill(second, signal.SIGSTOP)
        failed = wait_for(c, job["id"], ("failed",), timeout=60)
        assert "sent no progress" in failed["error"] and "SEQ2SEQ_JOB_PROGRESS_TIMEOUT_S" in failed["error"]
        assert failed["worker"] is None and not Path(f"/proc/{second}").exists()
    store = open_storage(default_url(srv.data_dir), run_migrations=False)
    try:
        assert store.jobs.get(job["id"]).lease_expires_at is None  # the lease is released, not left to expire
    finally:
        store.close()
