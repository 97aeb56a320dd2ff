"""collector-config/: the files parse, use only attribute names otel-wpm emits, and link
to the report server in a way it answers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from wsgi_servers import serve_reports

from otel_wpm.capture import attributes
from otel_wpm.server import DEFAULT_PORT

CONFIG_DIR = Path(__file__).resolve().parent.parent / "collector-config"
OTELCOL = CONFIG_DIR / "otelcol.yaml"
JAEGER_UI = CONFIG_DIR / "jaeger-ui.json"
GRAFANA_TEMPO = CONFIG_DIR / "grafana" / "provisioning" / "datasources" / "tempo.yaml"
TEMPO = CONFIG_DIR / "tempo.yaml"
README = CONFIG_DIR / "README.md"
# Tempo's own config (tempo.yaml) is about storage and ports, not attributes.
NAMING_ATTRIBUTES = [OTELCOL, JAEGER_UI, GRAFANA_TEMPO, README]

EMITTED = set(attributes.ALL)
# "wpm." followed by dotted lower-case words, e.g. wpm.report.url
WPM_NAME = re.compile(r"\bwpm(?:\.[a-z_]+)+")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def load(path: Path) -> Any:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


@pytest.mark.parametrize("path", NAMING_ATTRIBUTES, ids=lambda p: p.name)
def test_files_name_attributes_and_only_ones_otel_wpm_emits(path: Path) -> None:
    names = set(WPM_NAME.findall(path.read_text()))

    assert names, f"{path.name} names no otel-wpm attribute"
    assert names <= EMITTED, f"{path.name} names attributes otel-wpm never sets"


@pytest.mark.parametrize("path", [OTELCOL, JAEGER_UI, GRAFANA_TEMPO, TEMPO], ids=lambda p: p.name)
def test_config_files_parse_to_a_mapping(path: Path) -> None:
    assert isinstance(load(path), dict)


@pytest.mark.parametrize("path", [OTELCOL, GRAFANA_TEMPO, TEMPO], ids=lambda p: p.name)
def test_yaml_files_are_commented(path: Path) -> None:
    assert path.read_text().startswith("#")


def test_collector_keeps_every_trace_marked_slow_and_samples_the_rest() -> None:
    config = load(OTELCOL)
    sampling = config["processors"]["tail_sampling"]

    by_type = {policy["type"]: policy for policy in sampling["policies"]}
    slow = by_type["boolean_attribute"]["boolean_attribute"]
    assert slow == {"key": attributes.SLOW, "value": True}
    assert 0 < by_type["probabilistic"]["probabilistic"]["sampling_percentage"] < 100


def test_collector_pipeline_order_and_exporters() -> None:
    config = load(OTELCOL)
    pipeline = config["service"]["pipelines"]["traces"]

    assert pipeline["receivers"] == ["otlp"]
    assert pipeline["processors"] == ["memory_limiter", "tail_sampling", "batch"]
    assert sorted(pipeline["exporters"]) == ["otlp/jaeger", "otlp/tempo"]
    for name in pipeline["processors"]:
        assert name in config["processors"]
    for name in pipeline["exporters"]:
        assert config["exporters"][name]["endpoint"].startswith("127.0.0.1:")
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "127.0.0.1:4317"
    assert protocols["http"]["endpoint"] == "127.0.0.1:4318"


def test_jaeger_links_the_report_url_tag_and_every_trace() -> None:
    patterns = load(JAEGER_UI)["linkPatterns"]
    by_type = {pattern["type"]: pattern for pattern in patterns}

    tags = by_type["tags"]
    assert tags["key"] == attributes.REPORT_URL
    assert tags["url"] == "#{" + attributes.REPORT_URL + "}"
    assert tags["text"] == "otel-wpm profile report"
    assert by_type["traces"]["url"].endswith("/trace/#{trace.traceID}")


def test_grafana_tempo_data_source_links_trace_ids_to_the_report_server() -> None:
    config = load(GRAFANA_TEMPO)
    [source] = config["datasources"]

    assert source["type"] == "tempo"
    [correlation] = source["correlations"]
    assert correlation["type"] == "external"
    assert correlation["config"]["field"] == "traceID"
    assert correlation["config"]["target"]["url"].endswith("/trace/${traceID}")


def test_tempo_listens_where_the_collector_and_grafana_send() -> None:
    tempo = load(TEMPO)
    [source] = load(GRAFANA_TEMPO)["datasources"]
    collector = load(OTELCOL)["exporters"]["otlp/tempo"]["endpoint"]

    api_port = tempo["server"]["http_listen_port"]
    assert source["url"] == f"http://127.0.0.1:{api_port}"
    grpc_port = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    grpc_port = grpc_port.rsplit(":", 1)[1]
    published = collector.rsplit(":", 1)[1]
    # README.md's `docker run` publishes Tempo's OTLP port where the collector sends
    assert f"-p 127.0.0.1:{published}:{grpc_port}" in README.read_text()


@pytest.fixture
def report_server(tmp_path: Path) -> Iterator[str]:
    with serve_reports(tmp_path) as url:
        yield url


def trace_links() -> list[str]:
    jaeger = {p["type"]: p for p in load(JAEGER_UI)["linkPatterns"]}["traces"]["url"]
    [source] = load(GRAFANA_TEMPO)["datasources"]
    grafana = source["correlations"][0]["config"]["target"]["url"]
    return [
        jaeger.replace("#{trace.traceID}", TRACE_ID),
        grafana.replace("${traceID}", TRACE_ID),
    ]


def test_trace_links_point_at_the_report_servers_default_address() -> None:
    for link in trace_links():
        assert link == f"http://localhost:{DEFAULT_PORT}/trace/{TRACE_ID}"


def test_trace_links_are_answered_by_the_report_server(report_server: str) -> None:
    for link in trace_links():
        url = link.replace(f"http://localhost:{DEFAULT_PORT}", report_server)
        response = requests.get(url, timeout=10)
        # no report for this trace: the page that says so, not a bare error
        assert response.status_code == 404
        assert f"no report for trace <code>{TRACE_ID}</code>" in response.text
