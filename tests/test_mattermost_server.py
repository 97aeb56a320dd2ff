"""The fake Mattermost answers like the real one where mattermostdriver cares."""

from __future__ import annotations

from typing import Any

import requests
from mattermost_server import MAX_MESSAGE_CHARS, FakeMattermostServer


def auth(server: FakeMattermostServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def test_users_me_is_json_without_charset(mattermost_server: FakeMattermostServer) -> None:
    response = requests.get(
        f"{mattermost_server.url}/api/v4/users/me", headers=auth(mattermost_server), timeout=5
    )

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["id"] == mattermost_server.user_id


def test_wrong_or_missing_token_is_401_everywhere(mattermost_server: FakeMattermostServer) -> None:
    for path in ("/api/v4/users/me", "/api/v4/posts", "/api/v4/nowhere"):
        missing = requests.get(f"{mattermost_server.url}{path}", timeout=5)
        wrong = requests.get(
            f"{mattermost_server.url}{path}", headers={"Authorization": "Bearer nope"}, timeout=5
        )
        assert (missing.status_code, wrong.status_code) == (401, 401)
    body = missing.json()
    assert set(body) == {"id", "message", "detailed_error", "request_id", "status_code"}
    assert body["status_code"] == 401


def test_unknown_route_404_and_wrong_method_405(mattermost_server: FakeMattermostServer) -> None:
    base = f"{mattermost_server.url}/api/v4"
    headers = auth(mattermost_server)

    assert requests.get(f"{base}/nowhere", headers=headers, timeout=5).status_code == 404
    assert requests.get(f"{base}/posts", headers=headers, timeout=5).status_code == 405


def test_upload_routes_on_path_and_reads_channel_from_query(
    mattermost_server: FakeMattermostServer,
) -> None:
    response = requests.post(
        f"{mattermost_server.url}/api/v4/files?channel_id={mattermost_server.channel_id}",
        headers=auth(mattermost_server),
        files={"files": ("r.html", b"\x00<b>\r\n", "text/html")},
        timeout=5,
    )

    assert response.status_code == 201
    info = response.json()["file_infos"][0]
    assert (info["name"], info["size"], info["mime_type"]) == ("r.html", 6, "text/html")
    assert mattermost_server.files[0].data == b"\x00<b>\r\n"


def test_posts_validate_channel_and_file_ids(mattermost_server: FakeMattermostServer) -> None:
    url = f"{mattermost_server.url}/api/v4/posts"
    headers = auth(mattermost_server)

    def post(body: dict[str, Any]) -> int:
        return requests.post(url, headers=headers, json=body, timeout=5).status_code

    assert post({"message": "no channel"}) == 400
    assert (
        post({"channel_id": mattermost_server.channel_id, "message": "m", "file_ids": ["nope"]})
        == 400
    )
    assert post({"channel_id": "someone-elses", "message": "m"}) == 403
    assert post({"channel_id": mattermost_server.channel_id, "message": "m"}) == 201
    assert [p["message"] for p in mattermost_server.posts] == ["m"]


def test_injected_failures_come_in_order(mattermost_server: FakeMattermostServer) -> None:
    mattermost_server.fail_next(1, status=502)
    mattermost_server.rate_limit_next(1, retry_after=3)
    url = f"{mattermost_server.url}/api/v4/users/me"
    headers = auth(mattermost_server)

    first = requests.get(url, headers=headers, timeout=5)
    second = requests.get(url, headers=headers, timeout=5)
    third = requests.get(url, headers=headers, timeout=5)

    assert [first.status_code, second.status_code, third.status_code] == [502, 429, 200]
    assert second.headers["Retry-After"] == "3"
    assert [r.status for r in mattermost_server.requests] == [502, 429, 200]


def test_path_prefix() -> None:
    with FakeMattermostServer(path_prefix="/mattermost") as server:
        assert server.url.endswith("/mattermost")
        ok = requests.get(f"{server.url}/api/v4/users/me", headers=auth(server), timeout=5)
        assert ok.status_code == 200


def test_posts_longer_than_the_limit_are_refused(mattermost_server: FakeMattermostServer) -> None:
    url = f"{mattermost_server.url}/api/v4/posts"
    channel = mattermost_server.channel_id

    def post(message: str) -> int:
        body = {"channel_id": channel, "message": message}
        return requests.post(url, headers=auth(mattermost_server), json=body, timeout=5).status_code

    assert post("é" * MAX_MESSAGE_CHARS) == 201  # the limit counts characters, not bytes
    assert post("x" * (MAX_MESSAGE_CHARS + 1)) == 400


def test_trickled_and_delayed_answers_arrive_whole(
    mattermost_server: FakeMattermostServer,
) -> None:
    mattermost_server.trickle(0.001)
    mattermost_server.delay_answers(0.01)

    response = requests.get(
        f"{mattermost_server.url}/api/v4/users/me", headers=auth(mattermost_server), timeout=5
    )

    assert response.status_code == 200
    assert response.json()["id"] == mattermost_server.user_id
