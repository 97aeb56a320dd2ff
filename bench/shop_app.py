"""Second reference app for the overhead benchmark: a small shop API, shaped like an app.

Where ``bench/app.py`` calls one function per endpoint, this one goes through
what a Flask app usually has: a blueprint, ``before_request`` / ``after_request``
hooks, a service layer over an in-memory catalogue, and ``jsonify`` of lists of
dicts. Its CPU endpoint (~20 ms alone; 150-250 ms under ``bench/run.py``'s load,
four threads sharing one GIL) spends its time in list and dict comprehensions,
``json.dumps``/``loads``, a sort with a key function and string joins.

Endpoints (all under ``/api``):

* ``/api/health``: a tiny ``jsonify``: the fixed cost per request.
* ``/api/report``: the app-like CPU work, answered with the top rows as JSON.
* ``/api/wait``: 20 ms of sleep (an outgoing call, say), then a small JSON.

The ``wpm*`` configurations watch it with a 0.5 s threshold (:data:`WPM_OPTIONS`),
so the loaded CPU endpoint's tail, older than ``sample_after_fraction`` x 0.5 s,
is admitted and sampled at the full rate: where a cost of sampling would show.
Served like the first app, with ``BENCH_APP=bench.shop_app`` (``bench/run.py
--app shop`` does that)::

    BENCH_APP=bench.shop_app BENCH_CONFIG=wpm gunicorn -c bench/gunicorn_conf.py \\
        -w 1 -k gthread --threads 4 -b 127.0.0.1:8000 bench.shop_app:app
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request

from bench.app import add_bench_routes

#: Over bench/app.py's WPM_OPTIONS: a threshold that puts the loaded tail past sample_after.
WPM_OPTIONS: dict[str, Any] = {"threshold_seconds": 0.5}
#: Orders summarised by one ``/api/report``: ~20 ms on the 2-core benchmark machine.
REPORT_ORDERS = 5000
WAIT_SECONDS = 0.02
CATEGORIES = ("books", "garden", "kitchen", "music", "sports", "toys")

CATALOGUE: list[dict[str, Any]] = [
    {
        "sku": f"SKU-{n:05d}",
        "name": f"product {n}",
        "category": CATEGORIES[n % len(CATEGORIES)],
        "price_cents": 199 + (n * 7919) % 20_000,
    }
    for n in range(500)
]

api = Blueprint("api", __name__, url_prefix="/api")


# --- service layer -------------------------------------------------------------------


def load_orders(count: int, seed: int) -> list[dict[str, Any]]:
    """Orders as they would come back from a database driver: JSON text, parsed."""
    orders = [
        {
            "id": seed * count + i,
            "customer": f"customer-{(i * 31 + seed) % 997:03d}",
            "lines": [
                {"sku": CATALOGUE[(i * k + seed) % len(CATALOGUE)]["sku"], "qty": 1 + k % 3}
                for k in range(1, 1 + i % 4)
            ],
        }
        for i in range(count)
    ]
    return json.loads(json.dumps(orders))


def price_orders(orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    prices = {item["sku"]: item["price_cents"] for item in CATALOGUE}
    return [
        {**order, "total_cents": sum(prices[line["sku"]] * line["qty"] for line in order["lines"])}
        for order in orders
    ]


def top_customers(orders: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    spent: dict[str, int] = {}
    for order in orders:
        spent[order["customer"]] = spent.get(order["customer"], 0) + order["total_cents"]
    ranked = sorted(spent.items(), key=lambda item: (-item[1], item[0]))
    return [{"customer": name, "spent_cents": cents} for name, cents in ranked[:limit]]


def order_lines_text(orders: list[dict[str, Any]]) -> str:
    return "\n".join(
        ",".join([str(order["id"]), order["customer"], str(order["total_cents"])])
        for order in orders
    )


def sales_report(seed: int) -> dict[str, Any]:
    orders = price_orders(load_orders(REPORT_ORDERS, seed))
    return {
        "orders": len(orders),
        "top": top_customers(orders, 20),
        "csv_bytes": len(order_lines_text(orders)),
    }


# --- views ---------------------------------------------------------------------------


@api.before_request
def tag_request() -> None:
    g.request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex


@api.after_request
def add_request_id(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.request_id
    return response


@api.route("/health")
def health() -> Any:
    return jsonify(status="ok")


@api.route("/report")
def report() -> Any:
    return jsonify(sales_report(seed=int(request.args.get("seed", "7"))))


@api.route("/wait")
def wait() -> Any:
    time.sleep(WAIT_SECONDS)
    return jsonify(waited=WAIT_SECONDS, items=CATALOGUE[:5])


app = Flask(__name__)
app.register_blueprint(api)
add_bench_routes(app)
