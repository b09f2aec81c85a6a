"""The operations examples in deploy/ parse, have the shape their consumers expect, and only
name metrics that corral actually exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from corral import Corral
from corral.api import ApiSettings, create_api
from corral.models import RunSpec

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def load(relative: str) -> Any:
    return yaml.safe_load((DEPLOY / relative).read_text())


async def exported_metric_names(tmp_path: Path) -> set[str]:
    async with Corral(f"sqlite:///{tmp_path / 'corral.db'}") as app:
        await app.set_global_cap(10)
        await app.submit("echo", tenant="acme")
        for tick in (60.0, 120.0):  # a schedule seen, then a tick with its run
            await app.store.submit_scheduled("each-minute", tick, RunSpec("echo"))
        api = create_api(app, ApiSettings(public_metrics=True))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api), base_url="http://corral.test"
        ) as client:
            text = (await client.get("/metrics")).text
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def named_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\bcorral_[a-z_]+\b", expr))


async def test_the_alert_rules_watch_queue_age_per_tenant(tmp_path: Path) -> None:
    rules = load("prometheus/corral-alerts.yaml")
    (group,) = rules["groups"]
    by_name = {r["alert"]: r for r in group["rules"]}
    sla = by_name["CorralQueueAgeOverSLA"]
    assert "corral_oldest_queued_age_seconds" in sla["expr"]
    assert "by (tenant)" in sla["expr"]
    threshold = float(sla["expr"].rsplit(">", 1)[1])
    assert threshold == ApiSettings().age_target  # the alert and the scaling target agree
    assert re.fullmatch(r"\d+[smh]", sla["for"])
    assert "{{ $labels.tenant }}" in sla["annotations"]["summary"]
    exported = await exported_metric_names(tmp_path)
    for rule in group["rules"]:
        assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule), rule["alert"]
        assert named_metrics(rule["expr"]) <= exported, rule["alert"]


async def test_the_keda_scaledobject_scales_workers_on_depth_and_age(tmp_path: Path) -> None:
    scaled = load("keda/worker-scaledobject.yaml")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "corral-worker"
    assert 0 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    triggers = {t["name"]: t for t in spec["triggers"]}
    assert all(t["type"] == "prometheus" for t in triggers.values())
    queries = {name: t["metadata"]["query"] for name, t in triggers.items()}
    assert "corral_suggested_workers" in queries["suggested-workers"]
    assert "corral_queue_depth" in queries["queue-depth"]
    assert "corral_oldest_queued_age_seconds" in queries["oldest-queued-age"]
    assert triggers["oldest-queued-age"]["metricType"] == "Value"
    for t in triggers.values():
        float(t["metadata"]["threshold"])  # KEDA wants numbers as strings
        assert isinstance(t["metadata"]["threshold"], str)
        assert t["metadata"]["serverAddress"].startswith("http")
    exported = await exported_metric_names(tmp_path)
    for name, query in queries.items():
        assert named_metrics(query) <= exported, name


def test_the_scrape_config_sends_an_admin_key() -> None:
    (job,) = load("prometheus/scrape.yaml")["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
