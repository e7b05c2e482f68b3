"""Monitoring with the real tools: Debian's Prometheus scrapes a live server and a dedicated training worker with
deploy/prometheus.yml (targets and intervals replaced), promtool lints both /metrics, and the Grafana dashboard in
deploy/ names only metrics that app/metrics.py exports, each expression one Prometheus accepts."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import Metrics, WorkerMetrics
from tests.conftest import ROOT, free_port, poll

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
               "offset", "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
               "topk", "quantile", "inf", "nan"}
# What the issue asks the dashboard to show: requests, errors and latency per route and per model, batch sizes,
# the cache, jobs (the queue and the workers).
DASHBOARD_MUST_SHOW = {"seq2seq_requests_total", "seq2seq_request_seconds_bucket", "seq2seq_model_requests_total",
                       "seq2seq_model_request_seconds_bucket", "seq2seq_batch_size_bucket", "seq2seq_cache_total",
                       "seq2seq_jobs", "seq2seq_worker_jobs_running", "seq2seq_worker_steps_total",
                       "seq2seq_worker_lease_renewals_total", "seq2seq_worker_jobs_finished_total"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label matchers, ranges, label lists,
    function calls, operators' keywords and aggregations are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", expr):
        word, called = match.groups()
        if not called and word.lower() not in NOT_METRICS:
            names.add(word)
    return names


def exported_names() -> set[str]:
    """Every sample name the service's and a worker's registries can expose (app/metrics.py)."""
    names = set()
    for registry in (Metrics().registry, WorkerMetrics().registry):
        for family in registry.collect():
            if family.type == "counter":
                names.add(family.name + "_total")
            elif family.type == "histogram":
                names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
            else:
                names.add(family.name)
    return names


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, expression) for every query of every panel, rows' nested panels included."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"] + [p for row in dashboard["panels"] for p in row.get("panels", [])]:
        found += [(panel["title"], target["expr"]) for target in panel.get("targets", [])]
    return found


def test_metric_names_reads_names_out_of_promql():
    assert metric_names('sum by (route, le) (rate(a_bucket{route=~"/x|y", le!="1"}[$__rate_interval]))') == {"a_bucket"}
    assert metric_names("sum by (model, status) (rate(b_total[5m])) / ignoring(status) group_left "
                        "sum by (model) (c_total) > 0.5 and on(model) max(d)") == {"b_total", "c_total", "d"}
    assert metric_names('histogram_quantile(0.99, e_bucket offset 1h) * 100 unless count(f{g="h(i)"})') == {
        "e_bucket", "f"}


def test_the_dashboard_is_grafana_json_over_metrics_the_service_exports():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == f"${{{variable['name']}}}", panel["title"]
            assert panel["targets"], panel["title"]
    exported, used = exported_names(), set()
    for title, expr in dashboard_expressions():
        names = metric_names(expr)
        assert names, f"{title}: {expr} reads no metric"
        assert names <= exported, f"{title}: {expr} names {sorted(names - exported)}, which app/metrics.py does not export"
        used |= names
    assert used >= DASHBOARD_MUST_SHOW, sorted(DASHBOARD_MUST_SHOW - used)


def test_the_scrape_config_passes_promtool():
    if PROMTOOL is None:
        pytest.skip("Debian's prometheus (promtool) is not installed (make test installs it)")
    checked = subprocess.run([PROMTOOL, "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


class Prometheus:
    """Debian's prometheus on a free loopback port, with deploy/prometheus.yml's jobs pointed at `targets`."""

    def __init__(self, directory: Path, targets: dict[str, list[str]]):
        config = yaml.safe_load(SCRAPE_CONFIG.read_text())
        assert {job["job_name"] for job in config["scrape_configs"]} == set(targets)
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        for job in config["scrape_configs"]:
            job["static_configs"] = [{"targets": targets[job["job_name"]]}]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "prometheus.log"
        assert PROMETHEUS is not None
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))

        def ready() -> bool:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        poll(ready, 30, 0.1, "Prometheus to be ready")

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The one series' value, None while there is none."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: {result}"
        return float(result[0]["value"][1]) if result else None

    def until(self, expr: str, want, timeout: float = 30) -> None:
        """Poll until the expression's one value equals want (or want(value) holds, for a callable)."""
        check = want if callable(want) else lambda value: value == want
        seen: list[float | None] = []

        def holds() -> bool:
            seen[:] = [self.value(expr)]
            return check(seen[0])

        try:
            poll(holds, timeout, 0.25, f"Prometheus to read {expr}: {want}")
        except pytest.fail.Exception as exc:
            raise AssertionError(f"{exc}; it read {seen}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def prometheus(tmp_path):
    if PROMETHEUS is None or PROMTOOL is None:
        pytest.skip("Debian's prometheus is not installed (make test installs it)")
    started: list[Prometheus] = []

    def start(targets: dict[str, list[str]]) -> Prometheus:
        started.append(Prometheus(tmp_path / "prometheus", targets))
        return started[-1]

    yield start
    for prom in started:
        prom.stop()


def promtool_check(text: str) -> None:
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_prometheus_scrapes_the_service_and_a_training_worker(make_server, workers, prometheus, tmp_path):
    url = f"sqlite:///{tmp_path / 'seq2seq.db'}"
    srv = make_server(SEQ2SEQ_DATABASE_URL=url, SEQ2SEQ_JOB_WORKERS="0").start()
    srv.wait_ready()
    worker_port = free_port()
    worker = workers(url, SEQ2SEQ_HOST="127.0.0.1", SEQ2SEQ_WORKER_METRICS_PORT=str(worker_port),
                     SEQ2SEQ_JOB_LEASE_S="4")
    worker_url = f"http://127.0.0.1:{worker_port}/metrics"

    def worker_answers() -> bool:
        assert worker.proc.poll() is None, worker.log.read_text()[-2000:]
        try:
            return httpx.get(worker_url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    poll(worker_answers, 60, 0.1, "the worker's metrics endpoint")
    prom = prometheus({"seq2seq-api": [f"127.0.0.1:{srv.port}"], "seq2seq-worker": [f"127.0.0.1:{worker_port}"]})
    for job in ("seq2seq-api", "seq2seq-worker"):
        prom.until(f'up{{job="{job}"}}', 1)

    with srv.client() as c:
        for start in (1, 2, 1):  # the second 1 is a cache hit
            assert c.post("/predict", json={"start": start}).status_code == 200
        assert c.get("/topk", params={"start": 4}).status_code == 200
        assert c.post("/predict", json={"prefix": [1, 99]}).status_code == 422
        assert c.post("/predict", json={"start": 1, "model": "no-such-model"}).status_code == 404
        job = c.post("/jobs", json={"dataset": {"generator": "random"}, "training": {"steps": 50_000}}).json()

    # The request counters and latency histograms of the routes just exercised, through Prometheus's API.
    expected = {'seq2seq_requests_total{route="/predict",status="200"}': 3,
                'seq2seq_requests_total{route="/predict",status="422"}': 1,
                'seq2seq_requests_total{route="/predict",status="404"}': 1,
                'seq2seq_requests_total{route="/topk",status="200"}': 1,
                'seq2seq_request_seconds_count{route="/predict",status="200"}': 3,
                'seq2seq_request_seconds_count{route="/topk",status="200"}': 1,
                'seq2seq_request_seconds_bucket{route="/predict",status="200",le="+Inf"}': 3,
                'seq2seq_model_requests_total{model="default",status="2xx"}': 4,
                'seq2seq_model_requests_total{model="default",status="4xx"}': 1,  # the 422; the 404 named no model
                'seq2seq_model_request_seconds_count{model="default"}': 5,
                'seq2seq_cache_total{result="hit"}': 1,
                'seq2seq_cache_total{result="miss"}': 3}
    for expr, want in expected.items():
        prom.until(expr, want)
    assert {series["metric"]["model"] for series in prom.query("seq2seq_model_requests_total")} == {"default"}
    median = prom.value('histogram_quantile(0.5, sum by (le) (seq2seq_request_seconds_bucket{route="/predict"}))')
    assert median is not None and 0 < median <= 5
    assert prom.value('seq2seq_request_seconds_sum{route="/topk",status="200"}') > 0
    assert prom.value("sum(seq2seq_batch_size_count)") >= 1

    # The worker trains: its figures move, and the API reports the queue from the database.
    prom.until('seq2seq_worker_jobs_running{job="seq2seq-worker"}', 1, timeout=60)
    prom.until('seq2seq_jobs{job="seq2seq-api",status="running"}', 1)
    prom.until("rate(seq2seq_worker_steps_total[5s])", lambda steps_per_s: (steps_per_s or 0) > 0, timeout=60)
    prom.until('seq2seq_worker_lease_renewals_total{result="renewed"}', lambda renewed: (renewed or 0) >= 2)
    assert prom.value('seq2seq_worker_slots{job="seq2seq-worker"}') == 1
    assert prom.value("seq2seq_worker_jobs_claimed_total") == 1
    assert prom.value('seq2seq_worker_jobs_finished_total{outcome="failed"}') == 0  # present before any failure

    with srv.client() as c:
        assert c.post(f"/jobs/{job['id']}/cancel").status_code == 200
        poll(lambda: c.get(f"/jobs/{job['id']}").json()["status"] == "cancelled", 30, 0.1, "the job to be cancelled")
        trained = c.get(f"/jobs/{job['id']}").json()["progress"]["step"]
    assert 0 < trained < 50_000
    prom.until('seq2seq_worker_jobs_finished_total{outcome="cancelled"}', 1)
    prom.until("seq2seq_worker_jobs_running", 0)
    prom.until("seq2seq_worker_steps_total", trained)  # every step the job reported, counted once

    # Both /metrics pass promtool's lint, and expose nothing app/metrics.py does not declare.
    exported = exported_names()
    api_text, worker_text = httpx.get(f"{srv.url}/metrics").text, httpx.get(worker_url).text
    for text in (api_text, worker_text):
        promtool_check(text)
        assert {name for name, _ in samples(text)} <= exported
    assert not any(name.startswith("seq2seq_worker_") for name, _ in samples(api_text))  # it trains nothing
    assert all(name.startswith("seq2seq_worker_") for name, _ in samples(worker_text))

    # Every dashboard expression is PromQL this Prometheus accepts; the request panels have data once the counters
    # have grown under its eyes (a series' first value is no increase to rate()).
    with srv.client() as c:
        for start in (5, 6, 7):
            assert c.post("/predict", json={"start": start}).status_code == 200
            assert c.get("/topk", params={"start": start}).status_code == 200
    prom.until('seq2seq_requests_total{route="/predict",status="200"}', 6)
    prom.until('seq2seq_requests_total{route="/topk",status="200"}', 4)
    for title, expr in dashboard_expressions():
        result = prom.query(expr.replace("$__rate_interval", "5m").replace("$__interval", "5m"))  # the whole test
        if title == "Request rate by route":
            assert {series["metric"].get("route") for series in result} >= {"/predict", "/topk"}
        if title.startswith("Latency by route"):
            timed = {series["metric"]["route"] for series in result if math.isfinite(float(series["value"][1]))}
            assert timed >= {"/predict", "/topk"}, result
    assert worker.stop() == 0


def test_a_serving_instance_that_trains_exports_its_runners_figures_in_its_own_metrics(make_server):
    """SEQ2SEQ_JOB_WORKERS > 0: no second port, the runner's series join /metrics; a job that succeeds is counted."""
    srv = make_server().start()
    srv.wait_ready()
    with srv.client() as c:
        job = c.post("/jobs", json={"dataset": {"generator": "random"}, "training": {"steps": 200}}).json()
        done = poll(lambda: (j := c.get(f"/jobs/{job['id']}").json())["status"] in ("succeeded", "failed") and j,
                    120, 0.2, "the job to end")
        assert done["status"] == "succeeded", done
        # The runner counts the job once the commit that made it succeeded has returned to it, a moment after a
        # reader can see the status.
        succeeded = ("seq2seq_worker_jobs_finished_total", frozenset({("outcome", "succeeded")}))

        def counted() -> tuple[str, dict] | None:
            text = c.get("/metrics").text
            figures = samples(text)
            return (text, figures) if figures.get(succeeded) == 1 else None

        text, figures = poll(counted, 10, 0.1, "the succeeded job to be counted")
    assert figures[succeeded] == 1
    assert figures[("seq2seq_worker_jobs_finished_total", frozenset({("outcome", "failed")}))] == 0
    assert figures[("seq2seq_worker_steps_total", frozenset())] == done["progress"]["step"] > 0
    assert figures[("seq2seq_worker_jobs_running", frozenset())] == 0
    assert figures[("seq2seq_worker_slots", frozenset())] == 1
    assert figures[("seq2seq_jobs", frozenset({("status", "succeeded")}))] == 1
    if PROMTOOL is not None:
        promtool_check(text)
