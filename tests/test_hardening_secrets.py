"""Secrets sent with a request never reach anything otel-wpm writes.

The same secret-bearing inputs go through a real server, monitored with reports,
alerts.jsonl, Mattermost (the fake server) and DEBUG logging on. Then each sink
is searched for every secret value:

* query ``?api_key=``, form ``password=``, JSON ``{"token": ...}`` nested deep,
* headers ``Authorization``, ``Cookie``, ``X-Api-Key``,
* URL userinfo ``http://user:pass@host/...``, both as the absolute-form request
  target and as the ``Host`` header (and in a ``Referer`` with a ``?token=``),
* URLs inside values (``X-Original-URI: /login?token=``, ``next=/cb?access_token=``,
  ``redirect=%2Fcb%3Ftoken%3D``), names beyond the substring list (``sig``,
  ``code``, ``pw``, ``pin`` ...), secrets by their shape under harmless names (a
  JWT, ``Bearer ...``, a private key, an AWS key id, a card number), and GraphQL
  inline arguments in a JSON body and in the query string.

Sinks: report files, their names, the Mattermost post and its attachment,
``alerts.jsonl``, the de-dup store, every log record, the ``wpm.*`` attributes on
the exported spans, and ``otel-wpm config`` (given the same kind of secrets in
its settings).
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import pytest
from apps.hardening_app import (
    LogRecords,
    ParsedReport,
    make_app,
    raw_request,
    recording_logs,
)
from apps.helpers import clean_env
from apps.watched import Watched, served
from mattermost_server import FakeMattermostServer

from otel_wpm import Config
from otel_wpm.alerting.dispatch import DEDUP_FILE_NAME
from otel_wpm.masking import MASK

SECRETS = {
    "query api_key": "S3crQueryApiKey71",
    "form password": "S3crFormPassword72",
    "json token": "S3crJsonToken73",
    "Authorization": "S3crAuthHeader74",
    "Cookie": "S3crCookie75",
    "X-Api-Key": "S3crApiKeyHeader76",
    "userinfo in the target": "S3crUserinfoTarget77",
    "userinfo in Host": "S3crUserinfoHost78",
    "Referer userinfo": "S3crRefererPass79",
    "Referer token": "S3crRefererToken80",
    # URLs inside values
    "X-Original-URI token": "S3crOriginalUri86",
    "X-Forwarded-Uri code": "S3crForwardedUri87",
    "form next= access_token": "S3crNextAccess88",
    "percent-encoded redirect token": "S3crEncodedRedirect89",
    # names beyond the substring list
    "form sig": "S3crFormSig90",
    "form code": "S3crFormCode91",
    "form jwt": "S3crFormJwt92",
    "form pass": "S3crFormPass93",
    "form pw": "S3crFormPw94",
    "form otp": "S3crFormOtp95",
    "form pin": "S3crFormPin96",
    "form passphrase": "S3crFormPassphrase97",
    "form cvv": "S3crFormCvv98",
    # secrets by their shape, under harmless names
    "JWT in a JSON field": "S3crJwtSignature99",
    "Bearer in another header": "S3crBearerLike100",
    "private key in a JSON field": "S3crPrivateKeyBody101",
    "AWS access key id in a header": "AKIAS3CRAWSKEY000102",
    "card number in a form field": "4111111111111111",
    # GraphQL inline arguments
    "GraphQL password in a JSON body": "S3crGraphQlBody103",
    "GraphQL password in the query string": "S3crGraphQlQuery104",
    # a shape given by mask_value_patterns
    "mask_value_patterns match in a header": "ACME-S3cr105",
}


def _common_headers() -> list[str]:
    return [
        f"Authorization: Bearer {SECRETS['Authorization']}",
        f"Cookie: theme=dark; sessionid={SECRETS['Cookie']}",
        f"X-Api-Key: {SECRETS['X-Api-Key']}",
        f"Referer: https://carol:{SECRETS['Referer userinfo']}@shop.example.com/cart"
        f"?token={SECRETS['Referer token']}&step=2",
        "X-Slow: 0.15",
        "Connection: close",
    ]


def _request(target: str, host: str, content_type: str, body: bytes) -> bytes:
    lines = [f"POST {target} HTTP/1.1", f"Host: {host}", *_common_headers()]
    lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def secret_bearing_requests() -> list[bytes]:
    query = f"api_key={SECRETS['query api_key']}&page=2"
    form = f"user=ada&password={quote(SECRETS['form password'])}".encode()
    document = {"outer": {"list": [{"auth": {"token": SECRETS["json token"]}}]}, "visible": 1}
    userinfo_target = f"http://alice:{SECRETS['userinfo in the target']}@example.com/form?{query}"
    return [
        _request(userinfo_target, "example.com", "application/x-www-form-urlencoded", form),
        _request(
            f"/json?{query}",
            f"bob:{SECRETS['userinfo in Host']}@example.com",
            "application/json",
            json.dumps(document).encode(),
        ),
    ]


def _request_with_headers(target: str, content_type: str, body: bytes, headers: list[str]) -> bytes:
    lines = [f"POST {target} HTTP/1.1", "Host: example.com", *_common_headers(), *headers]
    lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def secrets_in_values_requests() -> list[bytes]:
    """Secrets under names the list does not reach, inside values, and by their shape."""
    headers = [
        f"X-Original-URI: /login?token={SECRETS['X-Original-URI token']}",
        f"X-Forwarded-Uri: /oauth/cb?state=1&code={SECRETS['X-Forwarded-Uri code']}",
        f"X-Upstream: Bearer {SECRETS['Bearer in another header']}",
        f"X-Amz-Id: {SECRETS['AWS access key id in a header']}",
        f"X-Licence: {SECRETS['mask_value_patterns match in a header']}",
    ]
    redirect = quote(f"/cb?token={SECRETS['percent-encoded redirect token']}", safe="")
    graphql_query = quote(
        f'mutation {{login(password: "{SECRETS["GraphQL password in the query string"]}")}}',
        safe="",
    )
    form_fields = {
        "next": f"/cb?access_token={SECRETS['form next= access_token']}",
        "sig": SECRETS["form sig"],
        "code": SECRETS["form code"],
        "jwt": SECRETS["form jwt"],
        "pass": SECRETS["form pass"],
        "pw": SECRETS["form pw"],
        "otp": SECRETS["form otp"],
        "pin": SECRETS["form pin"],
        "passphrase": SECRETS["form passphrase"],
        "cvv": SECRETS["form cvv"],
        "payment": SECRETS["card number in a form field"],
    }
    form = "&".join(f"{name}={quote(value, safe='')}" for name, value in form_fields.items())
    jwt = f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.{SECRETS['JWT in a JSON field']}"
    document = {
        "query": (
            'mutation { login(user: "ada", '
            f'password: "{SECRETS["GraphQL password in a JSON body"]}") {{ ok }} }}'
        ),
        "note": jwt,
        "certificate": "-----BEGIN PRIVATE KEY-----\n"
        f"{SECRETS['private key in a JSON field']}\n-----END PRIVATE KEY-----",
    }
    return [
        _request_with_headers(
            f"/signin?redirect={redirect}&query={graphql_query}&page=2",
            "application/x-www-form-urlencoded",
            form.encode(),
            headers,
        ),
        _request_with_headers(
            f"/graphql?redirect={redirect}&page=2",
            "application/json",
            json.dumps(document).encode(),
            headers,
        ),
    ]


@dataclass
class Sinks:
    watched: Watched
    output_dir: Path
    mattermost: FakeMattermostServer
    logs: LogRecords
    trace_ids: list[str]


@pytest.fixture(scope="module")
def sinks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sinks]:
    output_dir = tmp_path_factory.mktemp("secrets") / "reports"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    with FakeMattermostServer() as fake, recording_logs("") as logs:
        config = Config(
            threshold_seconds=0.1,
            local_output_dir=str(output_dir),
            enable_mattermost=True,
            mattermost_server_url=fake.url,
            mattermost_token=fake.token,
            mattermost_channel_id=fake.channel_id,
            log_level="DEBUG",
            alert_window_days=1,
            report_base_url="http://reports.example.com",
            trace_url_template="http://traces.example.com/trace/{trace_id}",
            mask_value_patterns=[r"\bACME-\w+"],
        )
        trace_ids = []
        with served(make_app(), config) as watched:
            for request in secret_bearing_requests() + secrets_in_values_requests():
                response = raw_request(watched.url, request)
                assert response is not None and response.status == 200, response
                trace_ids.append(response.headers["X-Trace-Id"])
                watched.settle(trace_ids[-1])
        yield Sinks(watched, output_dir, fake, logs, trace_ids)
    root.setLevel(level)


def _report_texts(sinks: Sinks) -> list[str]:
    texts = [p.read_text(encoding="utf-8") for p in sorted(sinks.output_dir.glob("*.html"))]
    assert len(texts) == len(sinks.trace_ids)
    return texts


def _alerts_jsonl(sinks: Sinks) -> list[str]:
    text = (sinks.output_dir / "alerts.jsonl").read_text(encoding="utf-8")
    assert len(text.splitlines()) == len(sinks.trace_ids)
    return [text]


def _mattermost_posts(sinks: Sinks) -> list[str]:
    assert len(sinks.mattermost.posts) == len(sinks.trace_ids)
    return [json.dumps(post) for post in sinks.mattermost.posts]


def _mattermost_attachments(sinks: Sinks) -> list[str]:
    assert len(sinks.mattermost.files) == len(sinks.trace_ids)
    return [f.data.decode("utf-8") + f.name for f in sinks.mattermost.files]


def _logs(sinks: Sinks) -> list[str]:
    # The werkzeug server's access log prints request lines: the server's, not ours.
    messages = [
        m for m, r in zip(sinks.logs.messages(), sinks.logs.records) if r.name != "werkzeug"
    ]
    assert messages, "DEBUG logging was on; something should have been logged"
    return messages


def _span_attributes(sinks: Sinks) -> list[str]:
    added = []
    for trace_id in sinks.trace_ids:
        span = sinks.watched.span_of(trace_id)
        ours = {k: v for k, v in (span.attributes or {}).items() if k.startswith("wpm.")}
        assert ours.get("wpm.slow") is True
        added.append(json.dumps(ours))
    return added


def _file_names_and_dedup(sinks: Sinks) -> list[str]:
    names = [p.name for p in sinks.output_dir.iterdir()]
    dedup = (sinks.output_dir / DEDUP_FILE_NAME).read_bytes().decode("latin-1")
    return [*names, dedup]


SINKS: dict[str, Callable[[Sinks], list[str]]] = {
    "report files": _report_texts,
    "alerts.jsonl": _alerts_jsonl,
    "Mattermost posts": _mattermost_posts,
    "Mattermost attachments": _mattermost_attachments,
    "log records (DEBUG, every logger)": _logs,
    "wpm.* span attributes": _span_attributes,
    "file names and de-dup store": _file_names_and_dedup,
}


@pytest.mark.parametrize("sink", list(SINKS))
@pytest.mark.parametrize("secret", list(SECRETS))
def test_no_secret_reaches_a_sink(sinks: Sinks, sink: str, secret: str) -> None:
    for text in SINKS[sink](sinks):
        assert SECRETS[secret] not in text


def test_reports_show_that_values_were_masked(sinks: Sinks) -> None:
    for text in _report_texts(sinks):
        page = ParsedReport(text)
        assert MASK in page.text
        assert "page" in page.text  # the harmless query parameter is kept
    alerts = [json.loads(line) for line in _alerts_jsonl(sinks)[0].splitlines()]
    assert all(MASK in alert["url"] for alert in alerts), [a["url"] for a in alerts]


def test_the_mattermost_token_is_in_no_sink(sinks: Sinks) -> None:
    token = sinks.mattermost.token
    for sink in SINKS.values():
        for text in sink(sinks):
            assert token not in text


# --- otel-wpm config ---------------------------------------------------------------------


def test_config_command_shows_no_secret(tmp_path: Path) -> None:
    secrets = {
        "token": "S3crConfigToken81",
        "mattermost userinfo": "S3crConfigMmPass82",
        "report server userinfo": "S3crConfigBasePass83",
        "redis password": "S3crConfigRedis84",
        "trace URL api_key": "S3crConfigTraceKey85",
    }
    env = clean_env(
        WPM_ENABLE_MATTERMOST="true",
        WPM_MATTERMOST_TOKEN=secrets["token"],
        WPM_MATTERMOST_CHANNEL_ID="town-square",
        WPM_MATTERMOST_SERVER_URL=f"https://bot:{secrets['mattermost userinfo']}@chat.example.com",
        WPM_REPORT_BASE_URL=f"https://ann:{secrets['report server userinfo']}@reports.example.com",
        WPM_DEDUP_REDIS_URL=f"redis://:{secrets['redis password']}@127.0.0.1:6379/0",
        WPM_TRACE_URL_TEMPLATE=(
            f"https://traces.example.com/t/{{trace_id}}?api_key={secrets['trace URL api_key']}"
        ),
        WPM_LOCAL_OUTPUT_DIR=str(tmp_path / "reports"),
    )
    done = subprocess.run(
        ["otel-wpm", "config"], env=env, capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    assert "mattermost_token" in output, output
    for name, secret in secrets.items():
        assert secret not in output, f"{name} shown by `otel-wpm config`"
