"""One settings object, read once from SEQ2SEQ_* environment variables."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .feedback.impressions import MacName
from .storage.engine import Timeouts, default_url

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEQ2SEQ_", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8000
    data_dir: Path = Field(ROOT / "data", description="what this machine keeps: the SQLite database, the API key")
    database_url: str | None = Field(None, description="sqlite:///PATH or postgresql://user:pass@host:port/db; "
                                     "unset: a SQLite file in data_dir (storage.default_url)")
    workers: int = Field(1, ge=1, le=64, description="serving processes on one port")
    weights_dir: Path = Field(ROOT / "weights", description="shipped, read-only checkpoints")
    default_model: str = "default"  # active when none was chosen yet
    device: str = Field("auto", pattern="^(auto|cpu|cuda(:[0-9]+)?)$")
    threads: int = Field(1, ge=1, description="torch threads for inference; the event loop needs a core too")
    max_batch_size: int = Field(64, ge=1)
    max_batch_wait_ms: float = Field(2.0, ge=0, description="how long a lone request waits for company")
    opentelemetry: bool = Field(False, description="FastAPI's native OpenTelemetry (traces, metrics and logs to the "
                                "process's global providers, once something configures them); off, a request skips "
                                "its per-request provider checks. The service's own metrics are Prometheus (/metrics)")
    inference_thread: bool = Field(False, description="decode on a separate thread instead of the event loop; "
                                   "on a 2-core CPU the GIL makes that slower (1,727 vs 2,312 requests/s measured)")
    cache_size: int = Field(4096, ge=0)
    loaded_models: int = Field(4, ge=1, description="models kept in memory at once, the active one included")
    max_request_bytes: int = Field(64 * 1024, ge=1024, description="body limit for inference and management")
    max_job_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="body limit for POST /jobs")
    max_batch_bytes: int = Field(1024 * 1024, ge=1024, description="body limit for /predict/batch and /topk/batch")
    api_key: str | None = Field(None, description="the management key; unset or empty: generated into DATA_DIR/api-key")
    auth: str = Field("key", pattern="^(key|disabled)$", description="'disabled' opens training, activation and "
                      "deletion to anyone who can reach the service")
    job_workers: int = Field(1, ge=0, description="training processes this instance runs; 0: none (dedicated "
                             "workers, `python -m app.worker`, train the jobs)")
    job_lease_s: float = Field(15.0, ge=1, description="a running job's lease; renewed every quarter of it, and a job "
                               "whose lease expired goes back to the queue")
    job_queue: int = Field(16, ge=0, description="queued jobs beyond the running ones")
    job_threads: int = Field(1, ge=1, description="torch threads of each training process")
    job_standby: bool = Field(False, description="keep one warmed-up training process waiting: jobs start about 3 s "
                                                 "sooner, for ~300 MB and a few seconds of background CPU after each job")
    worker_metrics_port: int | None = Field(None, ge=1, le=65535, description="a dedicated worker (`python -m "
                                            "app.worker`) serves its Prometheus metrics on this port, on "
                                            "SEQ2SEQ_HOST; unset: none (a serving instance's runner is in its "
                                            "/metrics)")
    # Limits that keep one request, one job or one client from taking the service down.
    decode_budget: int = Field(2_000_000_000, ge=1_000_000, description="multiply-adds one prefix's top-k may cost "
                               "(0.1-0.4 s of one core, off the event loop); past it a narrower beam, or 422 if even "
                               "a beam of k is dearer")
    inline_budget: int = Field(10_000_000, ge=0, description="requests cheaper than this (multiply-adds) are batched "
                               "on the event loop; dearer ones run one at a time on a worker thread")
    decode_timeout_s: float = Field(10.0, gt=0, description="a request still waiting for decoding after this gets 503")
    max_trained_models: int = Field(200, ge=1, description="trained models kept; past it, jobs are refused")
    max_job_records: int = Field(2000, ge=1, description="job records kept; past it, delete finished jobs")
    max_event_streams: int = Field(64, ge=1, description="concurrent /jobs/{id}/events streams")
    max_job_work: int = Field(1 << 24, ge=1, description="a job's batch_size x seq_length x hidden_dim")
    log_level: str = "info"
    graceful_timeout_s: float = 10.0
    # Jobs under operations (issue 15)
    job_max_handbacks: int = Field(5, ge=0, description="times a running job may be handed back to the queue by a "
                                   "stopping worker (SIGTERM, an evicted pod); past it the job fails")
    job_progress_timeout_s: float = Field(300.0, gt=0, description="a training process that sends no progress for "
                                          "this long is killed, and its job retried or failed per max_attempts")
    job_lock_wait_s: float = Field(2.0, gt=0, description="how long each try of a job's finishing write waits for a "
                                   "database lock before it tries again (retries last up to 120 s while the lease "
                                   "holds); keep it well under job_lease_s")
    # Slow clients and answer bounds (issue 15)
    header_timeout_s: float = Field(10.0, gt=0, description="a request's line and headers must arrive within this "
                                    "(from the connection, or from the request's first byte); else the connection is "
                                    "closed")
    body_timeout_s: float = Field(30.0, gt=0, description="a request's body must arrive within this once its headers "
                                  "have; else 408 and the connection is closed")
    keep_alive_s: float = Field(5.0, gt=0, description="an idle keep-alive connection is closed after this")
    max_connections: int = Field(1000, ge=1, description="open connections (or requests in flight) per serving "
                                 "process; beyond it requests are answered 503 at once")
    max_batch_answer_bytes: int = Field(4 * 1024 * 1024, ge=64 * 1024, description="the most a batch answer may hold, "
                                        "estimated from the model before decoding (every item counted, repeats "
                                        "included); a batch past it is 422 naming prefixes and k")
    public_models: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), description="comma-separated model ids anyone may name on the inference routes; without the "
        "management key only these and the active model answer")

    @field_validator("public_models", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value
    # Database and migrations (issue 15)
    migrate: str = Field("auto", pattern="^(auto|check)$", description="at start, 'auto' migrates the schema "
                         "(one host); 'check' only checks that it fits this version and refuses to start otherwise "
                         "(the cluster files run `python -m app migrate` once, then start servers and workers so)")
    migrate_lock_timeout_s: float = Field(120.0, gt=0, description="how long a migration waits for another "
                                          "process's migration before it gives up with an error")
    db_connect_timeout_s: float = Field(10.0, gt=0, description="PostgreSQL: opening a connection (whole seconds, "
                                        "at least 2)")
    db_statement_timeout_s: float = Field(30.0, ge=0, description="PostgreSQL statement_timeout: a statement "
                                          "running longer is cancelled; 0 = none (migrations always run without)")
    db_lock_timeout_s: float = Field(10.0, gt=0, description="PostgreSQL lock_timeout and SQLite busy timeout: the "
                                     "longest wait for a lock another process holds")
    db_tcp_timeout_s: float = Field(20.0, ge=3, description="PostgreSQL: a connection whose server stays silent this "
                                    "long is dropped (TCP keepalives and tcp_user_timeout), e.g. after a failover")
    # Loading and degraded serving (issue 15)
    model_loads: int = Field(2, ge=1, description="models that requests name loaded at once (each a database read, "
                             "a hash and a torch.load, on threads of their own); a request past it gets 503 with "
                             "Retry-After instead of waiting")
    load_failure_ttl_s: float = Field(30.0, ge=0, description="how long a model that failed to load (unknown, bytes "
                                      "that do not verify, unloadable) is refused from memory before it is tried again")
    active_retry_s: float = Field(1.0, gt=0, description="first wait before the active model, when it cannot be "
                                  "loaded, is tried again; doubled after each failure")
    active_retry_max_s: float = Field(30.0, gt=0, description="the longest wait between tries of the active model")
    database_retry_s: float = Field(2.0, gt=0, description="how often a server that started without its database "
                                    "tries to reach it again")
    listen_probe_s: float = Field(5.0, gt=0, description="PostgreSQL: how often the LISTEN connection is probed; a "
                                  "dead one is noticed within this plus the probe's 2 s timeout")
    # Impressions and feedback (issue 16)
    impressions: bool = Field(True, description="every /topk answer (and /topk/batch item) carries a signed "
                              "impression that POST /feedback refers to; false: answers carry none (feedback on "
                              "impressions other replicas minted is still taken)")
    impression_key: str | None = Field(None, description="the key impressions are signed with, at least 32 "
                                       "characters; unset or empty: one is created in the database once and shared "
                                       "by every replica")
    impression_ttl_s: float = Field(86400.0, gt=0, description="feedback on an impression older than this is refused "
                                    "(422)")
    impression_mac: MacName = Field("blake2b", description="how new impressions are signed: blake2b (keyed BLAKE2b, "
                                    "formats 3 and 4) or hmac-sha256 (formats 1 and 2, the only ones replicas before "
                                    "2026-12-02 read: set it while such replicas still take feedback); every replica "
                                    "verifies both")
    # Rollouts and live metrics (issue 16)
    live_flush_s: float = Field(1.0, gt=0, le=1.0, description="how often each serving process adds its live "
                                "counters (requests, errors, latency, feedback per model and rollout arm) to the "
                                "database")
    rollout_decide_s: float = Field(1.0, gt=0, description="how often each serving process looks at the running "
                                    "rollouts and, when one should step up, promote or roll back, decides it under "
                                    "the database's lock (once, whichever process comes first)")
    # Learning from usage (issue 18)
    learning_check_s: float = Field(5.0, gt=0, description="how often each serving process looks at the learning "
                                    "policies (is a cycle due?) and the open cycles (has a job or rollout ended?); "
                                    "whichever process comes first starts or moves a cycle, once")

    @field_validator("impression_key", mode="before")
    @classmethod
    def _key_or_none(cls, value: object) -> object:
        if value == "":
            return None
        if isinstance(value, str) and len(value) < 32:
            raise ValueError(f"SEQ2SEQ_IMPRESSION_KEY has {len(value)} characters; use at least 32 "
                             "(openssl rand -hex 32), or leave it unset to keep the key in the database")
        return value

    @property
    def db_url(self) -> str:
        """The database to open: SEQ2SEQ_DATABASE_URL, or the default file in the data directory."""
        return self.database_url or default_url(self.data_dir)

    @property
    def db_timeouts(self) -> Timeouts:
        return Timeouts(connect_s=self.db_connect_timeout_s, statement_s=self.db_statement_timeout_s,
                        lock_s=self.db_lock_timeout_s, tcp_s=self.db_tcp_timeout_s)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
