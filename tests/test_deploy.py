"""The deployment files: docker-compose.yml against the Compose Specification, what it mounts, Prometheus and Grafana.

Where Docker is installed, ``docker compose config`` is the check; here the compose file is
validated against the Compose Specification's own JSON schema (``deploy/compose-spec/``), every
file it mounts or builds from must exist, and every metric the Grafana dashboard queries must be
one the service exports, read from a real scrape of ``/metrics`` (Dramatiq's own metrics, which
only a worker process has, are checked against a worker's scrape in
``rekindle/tests/test_ops_metrics.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "rekindle.json"
METRIC_NAME = re.compile(r"\b((?:rekindle|django|dramatiq)_[a-zA-Z0-9_]+)")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def dashboard_metric_names() -> set[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


def exported_names(text: str) -> set[str]:
    """Every sample name a scrape can hold, families declared without samples yet included."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def test_it_validates_the_compose_file_against_the_compose_specification() -> None:
    schema = json.loads((ROOT / "deploy" / "compose-spec" / "compose-spec.json").read_text())
    # The file names draft 2019-09 with a spelling jsonschema does not recognise ("...schema#").
    jsonschema.Draft201909Validator.check_schema(schema)
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda error: list(error.path))
    assert not errors, [f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors]
    # The schema must refuse what Compose refuses, or the check above proves nothing.
    broken = compose()
    broken["services"]["web"]["healthcheck"]["intervall"] = "5s"
    assert list(validator.iter_errors(broken))


def test_it_mounts_and_builds_only_files_that_exist() -> None:
    spec = compose()
    sources: list[str] = []
    for service in spec["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")):
                sources.append(source)
        build = service.get("build")
        if isinstance(build, str):
            sources.extend([build, f"{build}/Dockerfile"])
    sources.extend(secret["file"] for secret in spec.get("secrets", {}).values() if "file" in secret)
    assert sources, "the compose file mounts nothing?"
    missing = [source for source in sources if not (ROOT / source).exists()]
    assert not missing


def test_it_scrapes_the_web_with_the_token_and_the_workers_exposition_port() -> None:
    spec = compose()
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    web, worker = jobs["rekindle-web"], jobs["rekindle-worker"]
    assert web["static_configs"][0]["targets"] == ["web:8000"]
    # Prometheus and the web read one secret file: the token they compare is the same.
    assert web["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert "metrics_token" in spec["services"]["prometheus"]["secrets"]
    assert spec["x-app"]["environment"]["METRICS_TOKEN_FILE"] == "/run/secrets/metrics_token"
    worker_env = spec["services"]["worker"]["environment"]
    assert worker["static_configs"][0]["targets"] == [f"worker:{worker_env['DRAMATIQ_METRICS_PORT']}"]
    # Inside its container and not published: every interface of the container, on purpose.
    assert worker_env["DRAMATIQ_METRICS_HOST"] == "0.0.0.0"  # noqa: S104
    assert "ports" not in spec["services"]["worker"]
    assert "/healthz" in (ROOT / "Dockerfile").read_text().split("HEALTHCHECK", 1)[1].split('\nCMD ["gunicorn', 1)[0]
    assert "/readyz" in " ".join(spec["services"]["web"]["healthcheck"]["test"])


@pytest.mark.django_db
def test_it_charts_only_metrics_the_service_exports() -> None:
    import rekindle.engines.comfyui.metrics  # noqa: F401  (the fleet's, defined where the pool runs)

    # From 127.0.0.1, in METRICS_ALLOWED_IPS by default.
    response = Client().get("/metrics")
    assert response.status_code == 200
    exported = exported_names(response.content.decode())
    charted = dashboard_metric_names()
    assert {"rekindle_attempts_in_flight", "rekindle_attempt_transitions_total"} <= charted
    unknown = sorted(name for name in charted if not name.startswith("dramatiq_") and name not in exported)
    assert not unknown
    board = json.loads(DASHBOARD.read_text())
    datasources = {panel["datasource"]["uid"] for panel in board["panels"]}
    provisioned = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasources == {source["uid"] for source in provisioned["datasources"]}
