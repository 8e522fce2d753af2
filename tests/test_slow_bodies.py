"""Slow ("slowloris") request bodies against a real server process.

A body must arrive within ``body_timeout_seconds`` plus one second per ``body_min_rate``
bytes received; here 1 s and 1,000 bytes/s. Forty connections each promise a 100 kB body
and trickle it a few bytes at a time. Every one of them must end in a 408 that names the
problem, none of them may have written anything, and meanwhile the server keeps answering
ordinary requests: slow clients hold neither its workers nor its memory.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tests import live_http as live
from tests.dvid_process import DvidServer

SLOW_CLIENTS = 40
PROMISED = 100_000


@pytest.fixture
def server(tmp_path: Path) -> DvidServer:
    env = {
        **os.environ,
        "DVID_CLOUD_BODY_TIMEOUT_SECONDS": "1",
        "DVID_CLOUD_BODY_MIN_RATE": "1000",
        "DVID_CLOUD_WORKERS": "1",
    }
    with DvidServer(tmp_path / "server.log", env, data_dir=tmp_path / "data") as running:
        yield running


def trickle(host: str, port: int, path: str, answers: list[bytes]) -> None:
    """Send a POST's headers and then 5 bytes of its body every 0.2 s (25 bytes/s, far
    below the minimum rate) until the server answers or closes; keep what it said."""
    with socket.create_connection((host, port), timeout=30) as conn:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {PROMISED}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        conn.sendall(head.encode())
        conn.settimeout(0.2)
        answer = b""
        for _ in range(200):  # at most 40 s of trickling
            try:
                conn.sendall(b"x" * 5)
            except OSError:  # the server answered and closed
                break
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                continue
            answer += chunk
            if not chunk or b"\r\n\r\n" in answer:
                break
        conn.settimeout(5)
        try:
            while chunk := conn.recv(4096):
                answer += chunk
        except OSError:
            pass
        answers.append(answer)


def test_trickling_bodies_get_408_and_the_server_keeps_answering(server: DvidServer) -> None:
    url = server.url
    root = live.post(f"{url}/api/repos", json={}).json()["root"]
    created = live.post(
        f"{url}/api/repo/{root}/instance", json={"typename": "keyvalue", "dataname": "kv"}
    )
    assert created.status_code == 200, created.text
    host, port = url.removeprefix("http://").split(":")
    answers: list[bytes] = []
    slow = [
        threading.Thread(
            target=trickle, args=(host, int(port), f"/api/node/{root}/kv/key/slow{i}", answers)
        )
        for i in range(SLOW_CLIENTS)
    ]
    for thread in slow:
        thread.start()
    try:
        time.sleep(0.5)  # all slow clients are mid-body now
        # Ordinary clients are served while the slow ones are still trickling.
        assert live.get(f"{url}/api/heartbeat").text == "OK"
        written = live.post(f"{url}/api/node/{root}/kv/key/fast", content=b"quick")
        assert written.status_code == 200, written.text
        assert live.get(f"{url}/api/node/{root}/kv/key/fast").content == b"quick"
    finally:
        for thread in slow:
            thread.join(timeout=60)
    assert len(answers) == SLOW_CLIENTS
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"request body too slow" in answer, answer[-300:]
    assert live.get(f"{url}/api/node/{root}/kv/keys").json() == ["fast"]
    assert live.get(f"{url}/api/heartbeat").text == "OK"
