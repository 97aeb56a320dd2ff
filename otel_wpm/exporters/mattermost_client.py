"""mattermostdriver's client, with every request ending by the current :class:`.Deadline`.

Usage::

    driver = Driver(driver_options, client_cls=DeadlineClient)
    with Deadline(10.0):                     # log in and post within 10 s together
        driver.login()
        driver.posts.create_post({"channel_id": channel_id, "message": "hi"})

The driver sends through plain ``requests`` calls, whose timeout bounds each
socket read; this client sends through :func:`.deadline_request` instead. A
refused request raises ``requests.HTTPError`` with the response, for the
caller to classify by status (the driver's own exceptions are not used).
"""

from __future__ import annotations

from typing import Any, Optional

import requests
from mattermostdriver import Client

from .deadline import deadline_request


class DeadlineClient(Client):
    def make_request(
        self,
        method: str,
        endpoint: str,
        options: Optional[Any] = None,
        params: Optional[dict[str, Any]] = None,
        data: Optional[Any] = None,
        files: Optional[Any] = None,
        basepath: Optional[str] = None,
    ) -> requests.Response:
        base = self.url
        if basepath:
            base = f"{self._scheme}://{self._options['url']}:{self._port}{basepath}"
        response = deadline_request(
            method.upper(),
            base + endpoint,
            headers=self.auth_header(),
            verify=self._verify,
            # As the driver does: a JSON body (``{}`` when none), unless data or files are sent.
            json=options if options is not None else {},
            params=params or {},
            data=data or {},
            files=files,
        )
        response.raise_for_status()
        return response
