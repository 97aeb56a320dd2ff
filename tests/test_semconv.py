"""The HTTP facts of a server span, under the old and the stable HTTP semantic conventions.

Attributes come from OpenTelemetry's own WSGI and ASGI instrumentations where they can make
them (``collect_request_attributes`` in each stability mode), and are written by hand for
the cases they do not produce (conflicting generations, other instrumentations).
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.instrumentation import asgi
from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.instrumentation.wsgi import collect_request_attributes
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from otel_wpm.capture.semconv import HttpFacts, http_facts, is_websocket, may_carry_body

OLD = _StabilityMode.DEFAULT
STABLE = _StabilityMode.HTTP
BOTH = _StabilityMode.HTTP_DUP  # OTEL_SEMCONV_STABILITY_OPT_IN=http/dup


def environ(method: str = "POST", path: str = "/cart/items", query: str = "page=2", **extra: str):
    """A request as werkzeug and gunicorn give it (they set ``RAW_URI``), on port 8080."""
    target = f"{path}?{query}" if query else path
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "RAW_URI": target,
        "REQUEST_URI": target,
        "HTTP_HOST": "shop.example.com:8080",
        "SERVER_NAME": "shop.example.com",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        **extra,
    }


def instrumented(mode: _StabilityMode, env: dict[str, Any], **added: Any) -> dict[str, Any]:
    """The attributes the WSGI instrumentation sets on the server span, plus ``added``."""
    return {**collect_request_attributes(env, mode), **added}


# --- what the WSGI instrumentation emits -----------------------------------------------


@pytest.mark.parametrize("mode", [OLD, STABLE, BOTH], ids=["old", "stable", "both"])
def test_every_generation_gives_the_same_facts(mode: _StabilityMode) -> None:
    status = {"http.status_code": 201} if mode is OLD else {"http.response.status_code": 201}
    attributes = instrumented(mode, environ(), **status, **{"http.route": "/cart/<part>"})

    assert http_facts(attributes) == HttpFacts(
        method="POST",
        path="/cart/items",
        query="page=2",
        url="http://shop.example.com:8080/cart/items?page=2",
        route="/cart/<part>",
        status=201,
    )


def test_old_generation_without_a_raw_target_reads_the_full_url() -> None:
    """wsgiref sets no RAW_URI/REQUEST_URI: the instrumentation writes ``http.url`` instead."""
    env = environ(query="a=1&b=2")
    del env["RAW_URI"], env["REQUEST_URI"]
    attributes = instrumented(OLD, env)
    assert "http.target" not in attributes

    facts = http_facts(attributes)
    assert (facts.path, facts.query) == ("/cart/items", "a=1&b=2")
    assert facts.url == attributes["http.url"] == "http://shop.example.com:8080/cart/items?a=1&b=2"


def test_the_default_port_is_left_out_of_the_url() -> None:
    env = environ(path="/", query="", HTTP_HOST="shop.example.com", SERVER_PORT="80")
    assert http_facts(instrumented(STABLE, env)).url == "http://shop.example.com/"


# --- both generations on one span ------------------------------------------------------


STABLE_AND_OLD_DISAGREE = {
    "http.request.method": "PUT",
    "http.method": "GET",
    "url.path": "/new",
    "url.query": "n=1",
    "http.target": "/old?o=1",
    "url.full": "https://new.example.com/new?n=1",
    "http.url": "http://old.example.com/old?o=1",
    "http.response.status_code": 204,
    "http.status_code": 500,
}
STABLE_LEFT_EMPTY = {
    "http.request.method": "",
    "http.method": "DELETE",
    "url.path": "",
    "http.target": "/items/3?force=1",
    "http.response.status_code": "",
    "http.status_code": 404,
}


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        (STABLE_AND_OLD_DISAGREE, ("PUT", "/new", "n=1", "https://new.example.com/new?n=1", 204)),
        (STABLE_LEFT_EMPTY, ("DELETE", "/items/3", "force=1", "/items/3?force=1", 404)),
    ],
    ids=["stable names win", "old names fill in empty stable ones"],
)
def test_both_generations_on_one_span(attributes: dict[str, Any], expected: tuple) -> None:
    facts = http_facts(attributes)
    assert (facts.method, facts.path, facts.query, facts.url, facts.status) == expected


def test_the_query_goes_with_the_path_it_came_with() -> None:
    """``url.query`` belongs to ``url.path``: a target's query is not mixed into it."""
    facts = http_facts({"url.path": "/search", "http.target": "/search?q=old"})
    assert (facts.path, facts.query) == ("/search", "")


# --- missing attributes ------------------------------------------------------------------


@pytest.mark.parametrize("attributes", [None, {}], ids=["none", "empty"])
def test_no_attributes_give_neutral_facts(attributes: Any) -> None:
    facts = http_facts(attributes)
    assert facts == HttpFacts(method="GET", path="/", query="", url="/", route=None, status=None)
    assert facts.route_key == "/"


def test_without_a_host_the_url_is_the_path_and_query() -> None:
    assert http_facts({"url.path": "/a", "url.query": "b=1"}).url == "/a?b=1"


def test_a_status_that_is_not_a_number_is_unknown() -> None:
    assert http_facts({"http.response.status_code": "teapot"}).status is None
    assert http_facts({"http.status_code": "418"}).status == 418


def test_route_key_prefers_the_route_then_no_route_then_the_normalised_path() -> None:
    assert http_facts({"url.path": "/users/42", "http.route": "/users/<id>"}).route_key == (
        "/users/<id>"
    )
    assert http_facts({"url.path": "/x1", "http.status_code": 404}).route_key == "(no route: 404)"
    assert http_facts({"url.path": "/users/42"}).route_key == "/users/{id}"


# --- the URL: as given, or built from the server's address ------------------------------


@pytest.mark.parametrize("name", ["url.full", "http.url"])
def test_a_full_url_is_used_as_given_and_gives_the_path(name: str) -> None:
    facts = http_facts({name: "https://shop.example.com/pay?step=2"})
    assert facts.url == "https://shop.example.com/pay?step=2"
    assert (facts.path, facts.query) == ("/pay", "step=2")


@pytest.mark.parametrize(
    ("server", "url"),
    [
        ({"url.scheme": "https", "server.address": "shop", "server.port": 443}, "https://shop/p"),
        ({"url.scheme": "https", "server.address": "shop", "server.port": 8443}, "https://shop:8443/p"),
        ({"server.address": "shop", "server.port": 80}, "http://shop/p"),
        ({"server.address": "shop"}, "http://shop/p"),
        ({"http.scheme": "https", "http.host": "shop:8443", "net.host.port": 8443}, "https://shop:8443/p"),
        ({"net.host.name": "shop", "net.host.port": 8080}, "http://shop:8080/p"),
        ({"http.server_name": "shop"}, "http://shop/p"),
    ],
    ids=["https default port", "https other port", "http default port", "no port",
         "host with its port", "old host name and port", "old server name"],
)  # fmt: skip
def test_the_url_is_built_from_the_servers_address(server: dict[str, Any], url: str) -> None:
    assert http_facts({**server, "url.path": "/p"}).url == url


def test_an_absolute_form_target_gives_only_its_path_and_query() -> None:
    """``GET http://user:pass@host/path HTTP/1.1``: the credentials are not the path."""
    facts = http_facts(
        {"http.target": "http://alice:pw@example.com/form?x=1", "http.host": "example.com"}
    )
    assert (facts.path, facts.query) == ("/form", "x=1")
    assert facts.url == "http://example.com/form?x=1"
    assert "alice" not in facts.url
    assert http_facts({"http.target": "http://example.com"}).path == "/"


def test_a_target_with_only_a_query_has_the_root_path() -> None:
    facts = http_facts({"http.target": "?q=1"})
    assert (facts.path, facts.query) == ("/", "q=1")


def test_an_ipv6_server_address_is_bracketed() -> None:
    facts = http_facts({"server.address": "::1", "server.port": 8080, "url.path": "/p"})
    assert facts.url == "http://[::1]:8080/p"


def test_a_port_that_is_not_a_number_is_left_out() -> None:
    facts = http_facts({"server.address": "shop", "server.port": "http", "url.path": "/p"})
    assert facts.url == "http://shop/p"


# --- which requests can carry a body: told by the span name first -------------------------


@pytest.mark.parametrize(
    ("name", "attributes", "expected"),
    [
        # the name answers when it starts with a method, as both conventions name spans
        ("GET /items", {"http.method": "GET"}, False),
        ("HEAD", {"http.request.method": "HEAD"}, False),
        ("OPTIONS /", {}, False),
        ("POST /login", {"http.method": "POST"}, True),
        ("PUT /items/<id>", {"http.request.method": "PUT", "http.method": "PUT"}, True),
        ("PATCH", {}, True),
        ("DELETE /items/1", {}, True),
        # the name wins over the attributes
        ("GET /items", {"http.method": "POST"}, False),
        ("POST /items", {"http.request.method": "GET"}, True),
        # otherwise the attributes do
        ("HTTP", {"http.request.method": "_OTHER"}, True),  # unknown to the instrumentation
        ("checkout", {"http.method": "GET"}, False),
        ("checkout", {"http.request.method": "HEAD"}, False),
        ("checkout", {"http.method": "POST"}, True),
        ("GETX /", {}, True),
        ("checkout", {}, True),
    ],
)
def test_only_methods_that_can_carry_a_body_get_a_recorder(
    name: str, attributes: dict[str, str], expected: bool
) -> None:
    span = (
        TracerProvider()
        .get_tracer("test")
        .start_span(name, kind=SpanKind.SERVER, attributes=attributes)
    )
    assert may_carry_body(span) is expected


def test_an_unknown_method_is_shown_as_the_client_sent_it() -> None:
    facts = http_facts(
        {"http.request.method": "_OTHER", "http.request.method_original": "PURGE", "url.path": "/"}
    )
    assert facts.method == "PURGE"


# --- WebSockets (ASGI) -----------------------------------------------------------------

# A WebSocket scope as uvicorn and hypercorn give it, and as daphne does: without the
# "scheme" key, which the ASGI spec makes optional (default "ws").
UVICORN_WEBSOCKET = {
    "type": "websocket",
    "scheme": "ws",
    "path": "/ws",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"upgrade", b"websocket")],
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
}
DAPHNE_WEBSOCKET = {key: value for key, value in UVICORN_WEBSOCKET.items() if key != "scheme"}
HTTP_REQUEST = {**UVICORN_WEBSOCKET, "type": "http", "scheme": "http", "method": "GET"}
HTTP_REQUEST_WITHOUT_SCHEME = {key: value for key, value in HTTP_REQUEST.items() if key != "scheme"}


@pytest.mark.parametrize("mode", [OLD, STABLE, BOTH], ids=["old", "stable", "both"])
@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (UVICORN_WEBSOCKET, True),
        (DAPHNE_WEBSOCKET, True),
        (HTTP_REQUEST, False),
        (HTTP_REQUEST_WITHOUT_SCHEME, False),
    ],
    ids=["websocket", "websocket without a scheme", "request", "request without a scheme"],
)
def test_a_websocket_is_told_from_a_request_by_the_asgi_instrumentations_attributes(
    mode: _StabilityMode, scope: dict[str, Any], expected: bool
) -> None:
    assert is_websocket(asgi.collect_request_attributes(scope, mode)) is expected


@pytest.mark.parametrize("attributes", [None, {}, {"rpc.method": "Checkout"}])
def test_a_span_without_http_attributes_is_no_websocket(attributes: Any) -> None:
    assert not is_websocket(attributes)
