"""``dvid-cloud serve --workers N`` (app/workers.py): workers forked from a supervisor,
replaced when they die, stopped with it however it ends. Linux: reads ``/proc``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from starlette.types import ASGIApp
from uvicorn.config import STARTUP_FAILURE

from app.workers import serve_workers
from tests import live_http as live
from tests.neuroglancer_support import wait_for
from tests.servers import wait_for_heartbeat
from tests.test_cli import CLI, free_port

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")

WAIT = 120  # seconds; a loaded machine may take long to start or stop processes


def children(pid: int) -> set[int]:
    """The live (not zombie) child processes of ``pid``."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return {c for c in found if alive(c)}


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextmanager
def workers_server(tmp_path: Path, workers: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A ``serve --workers N`` supervisor in its own session, answering; yields it and its
    URL. Whatever the test did, its whole process group is killed at the end."""
    port = free_port()
    command = [CLI, "serve", "--data-dir", str(tmp_path / "d"), "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--workers", str(workers), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for_heartbeat(url, proc, timeout=WAIT)
        wait_for(lambda: len(children(proc.pid)) == workers, WAIT, f"{workers} workers")
        yield proc, url
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT)


def test_workers_are_forks_replaced_when_they_die_and_stopped_by_sigterm(
    tmp_path: Path,
) -> None:
    with workers_server(tmp_path, 2) as (proc, url):
        first = children(proc.pid)
        for pid in first:  # forked: the supervisor's own command line, not a new interpreter
            assert (
                Path(f"/proc/{pid}/cmdline").read_bytes()
                == Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            )
        killed = min(first)
        os.kill(killed, signal.SIGKILL)

        def replaced_set() -> set[int] | None:
            now = children(proc.pid)
            return now if len(now) == 2 and killed not in now else None

        replaced = wait_for(replaced_set, WAIT, "a new worker in place of the killed one")
        assert max(first) in replaced
        assert live.get(f"{url}/api/heartbeat").text == "OK"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT) == 0
        assert not any(alive(pid) for pid in replaced)


def sockets_of(pid: int, port: int, state: str) -> set[int]:
    """Inodes of the TCP sockets on local ``port`` in ``state`` (``0A`` listening, ``01``
    established) that process ``pid`` holds."""
    rows = [
        row.split()
        for table in ("/proc/net/tcp", "/proc/net/tcp6")
        if Path(table).exists()
        for row in Path(table).read_text().splitlines()[1:]
    ]
    wanted = {int(r[9]) for r in rows if r[3] == state and int(r[1].rsplit(":", 1)[1], 16) == port}
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                held.add(int(target[len("socket:[") : -1]))
    return held & wanted


def test_each_worker_accepts_on_a_socket_of_its_own(tmp_path: Path) -> None:
    """The kernel spreads new connections over the workers' sockets (SO_REUSEPORT): on
    one shared socket, the first worker awake took every waiting connection."""
    with workers_server(tmp_path, 2) as (proc, url):
        port = int(url.rsplit(":", 1)[1])
        workers = sorted(children(proc.pid))
        listening = [sockets_of(pid, port, "0A") for pid in workers]
        assert [len(held) for held in listening] == [1, 1] and listening[0] != listening[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        try:  # all 32 on one worker: a chance of 2^-31 if spread at random
            wait_for(
                lambda: all(sockets_of(pid, port, "01") for pid in workers),
                WAIT,
                "connections accepted by both workers",
            )
        finally:
            for client in clients:
                client.close()


def test_sigint_stops_supervisor_and_workers(tmp_path: Path) -> None:
    with workers_server(tmp_path, 2) as (proc, _):
        workers = children(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=WAIT) == 0
        assert not any(alive(pid) for pid in workers)


def test_killed_supervisor_leaves_no_workers(tmp_path: Path) -> None:
    with workers_server(tmp_path, 2) as (proc, _):
        workers = children(proc.pid)
        proc.kill()
        proc.wait(timeout=WAIT)
        wait_for(lambda: not any(alive(pid) for pid in workers), WAIT, "the workers to stop")


def test_workers_that_cannot_start_stop_the_supervisor_with_uvicorns_code() -> None:
    """As a single server that cannot start, rather than starting workers forever."""

    def build() -> ASGIApp:
        raise RuntimeError("no application")

    options = {"host": "127.0.0.1", "port": free_port(), "log_config": None}
    assert serve_workers(build, 2, options) == STARTUP_FAILURE
