"""Prometheus metrics: the service's (requests and latency per route and status and per model, batch sizes, cache
hits, the active model, jobs, rollouts) and a job runner's (WorkerMetrics: jobs running, steps, lease renewals,
outcomes), which a serving instance adds to its /metrics and a dedicated worker serves on its own port.
deploy/grafana-dashboard.json is drawn over these names; tests/test_monitoring.py checks it names no other."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # the *_created series double the output and nobody reads them

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("seq2seq_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram("seq2seq_request_seconds", "HTTP request latency", ["method", "route", "status"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("seq2seq_batch_size", "Requests decoded together",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.cache = Counter("seq2seq_cache", "Response cache lookups", ["result"], registry=r)
        self.decoded_alone = Counter("seq2seq_decoded_alone", "Costly requests decoded alone on the worker thread",
                                     registry=r)
        self.active_model = Gauge("seq2seq_active_model", "1 for the active model", ["model"], registry=r)
        self.jobs = Gauge("seq2seq_jobs", "Training jobs by status", ["status"], registry=r)
        self._series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        # Rollouts (issue 16): labels from closed sets only, arm in none/control/candidate/shadow (none: outside a
        # rollout); this process's counts (the database holds every replica's: GET /rollouts/ID).
        self.arm_requests = Counter("seq2seq_arm_requests", "Inference requests by rollout arm and status class",
                                    ["arm", "status"], registry=r)
        self.arm_latency = Histogram("seq2seq_arm_request_seconds", "Inference latency by rollout arm", ["arm"],
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.arm_feedback = Counter("seq2seq_arm_feedback", "Feedback events recorded here by rollout arm and "
                                    "outcome (accepted or not; the shadow's: typed among its first three)",
                                    ["arm", "outcome"], registry=r)
        self.shadow_dropped = Counter("seq2seq_shadow_dropped", "Shadow decodes dropped: the queue was full",
                                      registry=r)
        self.rollout_acceptance = Gauge("seq2seq_rollout_acceptance", "The running rollout's acceptance per arm, "
                                        "summed across replicas, as this replica's decider last read it", ["arm"],
                                        registry=r)
        self.rollout_percent = Gauge("seq2seq_rollout_percent", "The running rollout's share of traffic to the "
                                     "candidate", registry=r)
        self._arms: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        # Per model: the inference routes count a request under the model that answered it, never under a name a
        # client made up (an unknown model's 404 counts for none), so the models registered bound the labels.
        self.model_requests = Counter("seq2seq_model_requests", "Inference requests by the model that served them "
                                      "and status class", ["model", "status"], registry=r)
        self.model_latency = Histogram("seq2seq_model_request_seconds", "Inference latency by the model that served "
                                       "it", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self._models: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def observe_request(self, method: str, route: str, status: str, seconds: float) -> None:
        """Count a request. Its labels come from closed sets, so the children are kept: a labels() lookup per
        request costs as much as the rest of the accounting."""
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (self.requests.labels(*key), self.latency.labels(*key))
        series[0].inc()
        series[1].observe(seconds)

    def observe_arm(self, arm: str, status: int, seconds: float) -> None:
        key = (arm, f"{status // 100}xx")
        series = self._arms.get(key)
        if series is None:
            series = self._arms[key] = (self.arm_requests.labels(*key), self.arm_latency.labels(arm))
        series[0].inc()
        series[1].observe(seconds)

    def observe_model(self, model_id: str, status: int, seconds: float) -> None:
        key = (model_id, f"{status // 100}xx")
        series = self._models.get(key)
        if series is None:
            series = self._models[key] = (self.model_requests.labels(*key), self.model_latency.labels(model_id))
        series[0].inc()
        series[1].observe(seconds)

    def observe_arm_feedback(self, arm: str, accepted: bool) -> None:
        self.arm_feedback.labels(arm, "accepted" if accepted else "not_accepted").inc()

    def set_active(self, model_id: str | None) -> None:
        self.active_model.clear()
        if model_id is not None:
            self.active_model.labels(model_id).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class WorkerMetrics:
    """A job runner's figures. A serving instance that trains registers them beside its own (one /metrics); a
    dedicated worker (`python -m app.worker`) in a registry of its own, served on SEQ2SEQ_WORKER_METRICS_PORT.
    Every outcome's and renewal result's series exists from the start at 0, so a rate over them is never empty."""

    OUTCOMES = ("succeeded", "failed", "cancelled", "stalled", "lost", "unwritten", "handed_back")
    RENEWALS = ("renewed", "lost", "error")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.running = Gauge("seq2seq_worker_jobs_running", "Jobs this runner is training now", registry=r)
        self.slots = Gauge("seq2seq_worker_slots", "Jobs this runner trains at once (SEQ2SEQ_JOB_WORKERS)",
                           registry=r)
        self.claimed = Counter("seq2seq_worker_jobs_claimed", "Jobs this runner claimed from the queue", registry=r)
        self.steps = Counter("seq2seq_worker_steps", "Training steps its jobs reported (rate(): steps per second)",
                             registry=r)
        self.renewals = Counter("seq2seq_worker_lease_renewals", "Lease renewals by result: renewed; lost (the job "
                                "is no longer this runner's); error (the database did not answer)", ["result"],
                                registry=r)
        self.finished = Counter("seq2seq_worker_jobs_finished", "Jobs this runner ended, by outcome: succeeded, "
                                "failed, cancelled, stalled (no progress: retried or failed), lost (its lease), "
                                "unwritten (the database stayed away: the job runs again), handed_back (the runner "
                                "stopped)", ["outcome"], registry=r)
        for outcome in self.OUTCOMES:
            self.finished.labels(outcome)
        for result in self.RENEWALS:
            self.renewals.labels(result)

    def render(self) -> bytes:
        return generate_latest(self.registry)
