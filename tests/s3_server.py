"""An S3-compatible server on 127.0.0.1 for tests: moto's standalone server, in a thread.

Usage::

    with S3Server() as s3:                    # a free port
        bucket = s3.create_bucket()           # a new bucket, e.g. "reports-3"
        s3.endpoint                           # "http://127.0.0.1:PORT"
        s3.stop()                             # down: connections are refused
        s3.start()                            # back on the same port, with the same objects
        s3.keys(bucket)                       # every key in the bucket

moto keeps buckets and objects in this process, so they outlive a stop and a
start: an outage, not a lost bucket. Any credentials are accepted; the tests set
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_REGION`` as a deployment
would (:data:`AWS_ENV`).
"""

from __future__ import annotations

import itertools
from types import TracebackType
from typing import Any, Optional

import boto3
from apps.helpers import free_port
from moto.server import ThreadedMotoServer

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test-key-id",
    "AWS_SECRET_ACCESS_KEY": "test-secret",
    "AWS_REGION": "us-east-1",
}
_buckets = itertools.count(1)


class S3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: Optional[ThreadedMotoServer] = None

    def start(self) -> S3Server:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop answering and close the port, so clients are refused at once."""
        if self._server is None:
            return
        self._server.stop()
        wsgi_server = self._server._server
        if wsgi_server is not None:
            wsgi_server.server_close()
        self._server = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        error: Optional[BaseException],
        trace: Optional[TracebackType],
    ) -> None:
        self.stop()

    def client(self) -> Any:
        """A boto3 client of this server (moto brings boto3): the tests' own view of S3."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=AWS_ENV["AWS_REGION"],
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self, name: Optional[str] = None) -> str:
        name = name or f"reports-{next(_buckets)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` under ``prefix``."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=body)
